//! `container cleanup`: what happens after a container's process ended — called by conmon's
//! exit command, and by any command that notices the exit first. Idempotent.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::container::mounts_and_networks::reuse_from_status;
use crate::db::{self, ContainerRecord, State};
use crate::runc::{CriuOpts, RuncError};
use crate::{mounts, netns, Engine, EngineError};

impl Engine {
    /// Entry point of conmon's exit command.
    pub fn cleanup(&self, key: &str) -> Result<(), EngineError> {
        let c = self.lookup(key)?;
        let lock = self.lock(&c.id)?;
        let c = self.refresh(&c.id)?;
        drop(lock);
        if c.state == State::Exited && c.config.auto_remove && !c.checkpointed {
            match self.remove(&c.id, true) {
                Ok(_) | Err(EngineError::NoSuchContainer(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `runc checkpoint` of a running container (caller holds the lock); returns runc's
    /// result and how long it ran. When the dump is to kill the container and nothing in it
    /// can notice (frozen, no inet socket: see [`crate::runc::Runc::checkpoint_beside`]), its
    /// networks are torn down while CRIU dumps rather than after: netavark's teardown (over
    /// 100 ms when the container was the last on its network) then costs no time of its own,
    /// and the network is released before the checkpoint returns. Should the dump fail, the
    /// container runs on and gets its networks again, with the same addresses.
    pub(crate) fn dump(
        &self,
        c: &ContainerRecord,
        images: &Path,
        work: &Path,
        leave_running: bool,
        opts: &CriuOpts,
    ) -> (Result<(), RuncError>, Duration) {
        let own_ns = !c.config.network_mode.starts_with("container:");
        let attach = self
            .attach_request(c, &BTreeMap::new())
            .filter(|_| own_ns && !leave_running);
        let networks = &self.networks;
        let beside = attach.map(|a| move || networks.teardown_if_attached(&a));
        let done = self
            .runc
            .checkpoint_beside(&c.id, images, work, leave_running, opts, beside);
        match (done.beside, &done.result) {
            (Some(Err(e)), Ok(())) => {
                // As when conmon's exit command releases it: not the checkpoint's failure.
                eprintln!(
                    "warning: releasing the network of checkpointed container {}: {e}",
                    c.name
                );
            }
            (Some(_), Err(_)) => {
                // The container runs on: its networks again, with the addresses it had.
                let reuse = self
                    .read_network_status(&c.id)
                    .map(|st| reuse_from_status(&st, true, true))
                    .unwrap_or_default();
                if let Err(e) = self.prepare_network(c, &reuse) {
                    eprintln!(
                        "warning: container {} runs on after its failed checkpoint, but setting up its network again failed: {e}",
                        c.name
                    );
                }
            }
            _ => {}
        }
        (done.result, done.runtime)
    }

    /// Records the exit (caller holds the lock) and tears down runtime resources: runc's
    /// container, the rootfs and shm mounts, the network namespace. Keeps going on errors and
    /// reports them all.
    pub(crate) fn finish(
        &self,
        mut c: ContainerRecord,
        code: Option<i32>,
    ) -> Result<ContainerRecord, EngineError> {
        let errors = self.teardown(&c);
        c.state = State::Exited;
        c.exit_code = Some(code.unwrap_or(if c.checkpointed { 137 } else { -1 }));
        c.pid = None;
        c.conmon_pid = None;
        c.finished_at = Some(crate::container::create::now());
        db::update(self.conn(), &c)?;
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(EngineError::msg(format!(
                "cleaning up container {}: {}",
                c.name,
                errors.join("; ")
            )))
        }
    }

    /// Releases everything a started container holds. Returns the errors met on the way.
    pub(crate) fn teardown(&self, c: &ContainerRecord) -> Vec<String> {
        let mut errors = Vec::new();
        // runc's state, the network and the mounts are independent: released side by side
        // (runc and netavark are processes of their own, tens of milliseconds each; the
        // overlay's unmount waits on the kernel for about 10 ms). The namespace netavark
        // works in is removed after.
        let attach = self.attach_request(c, &BTreeMap::new());
        let networks = &self.networks;
        let runc = &self.runc;
        let id = c.id.as_str();
        std::thread::scope(|s| {
            let deleted = s.spawn(move || runc.delete(id, true));
            let net = attach.map(|a| s.spawn(move || networks.teardown_if_attached(&a)));
            let mut unmounted = Vec::new();
            for p in [self.layout.merged(&c.id), self.layout.shm(&c.id)] {
                if let Err(e) = mounts::unmount(&p) {
                    unmounted.push(e.to_string());
                }
            }
            match deleted.join() {
                Ok(Err(e)) => errors.push(e.to_string()),
                Err(_) => errors.push("runc delete panicked".into()),
                Ok(Ok(())) => {}
            }
            match net.map(|h| h.join()) {
                Some(Ok(Err(e))) => errors.push(format!("network teardown: {e}")),
                Some(Err(_)) => errors.push("network teardown: panicked".into()),
                _ => {}
            }
            errors.extend(unmounted);
        });
        // A pod member's namespace is its infra container's: not ours to remove.
        let own_ns = !c.config.network_mode.starts_with("container:");
        if let (Some(ns), true) = (&c.config.netns, own_ns) {
            if let Err(e) = netns::remove(std::path::Path::new(ns)) {
                errors.push(format!("removing network namespace {ns}: {e}"));
            }
        }
        errors
    }
}
