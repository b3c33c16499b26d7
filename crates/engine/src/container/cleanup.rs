//! `container cleanup`: what happens after a container's process ended — called by conmon's
//! exit command, and by any command that notices the exit first. Idempotent.

use crate::db::{self, ContainerRecord, State};
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
        // runc's state and the network are independent: released side by side (each is a
        // process of its own, tens of milliseconds).
        let (deleted, network) = std::thread::scope(|s| {
            let runc = &self.runc;
            let id = c.id.as_str();
            let runc = s.spawn(move || runc.delete(id, true).map_err(|e| e.to_string()));
            let network = self
                .network_teardown(c)
                .map_err(|e| format!("network teardown: {e}"));
            let deleted = runc
                .join()
                .unwrap_or_else(|_| Err("runc delete panicked".to_string()));
            (deleted, network)
        });
        errors.extend(deleted.err());
        errors.extend(network.err());
        for p in [self.layout.merged(&c.id), self.layout.shm(&c.id)] {
            if let Err(e) = mounts::unmount(&p) {
                errors.push(e.to_string());
            }
        }
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
