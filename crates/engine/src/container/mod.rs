//! Container verbs, one file each. Every verb that changes a container holds the container's
//! file lock for its whole run, so concurrent `stasis` processes (and conmon's exit callback)
//! see each other's work whole.

mod checkpoint;
mod cleanup;
pub(crate) mod create;
mod exec;
mod inspect;
mod list;
mod logs;
pub mod mounts_and_networks;
mod remove;
mod restore;
pub(crate) mod start;
mod stop;
mod wait;

pub use checkpoint::{CheckpointOptions, CheckpointReport, ExportTarget};
pub use create::{parse_signal, CreateRequest};
pub use exec::ExecRequest;
pub use inspect::inspect_json;
pub use list::{ago, ports_line, ps_json, status_line};
pub use restore::{ImportSource, RestoreOptions, RestoreReport};

use stasis_state::FileLock;

use crate::db::{self, ContainerRecord, State};
use crate::{Engine, EngineError};

impl Engine {
    /// Finds a container by name, ID or unique ID prefix (no state refresh).
    pub fn lookup(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        match db::lookup(self.conn(), key)? {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(EngineError::NoSuchContainer(key.to_string())),
            Err(n) => Err(EngineError::Ambiguous(key.to_string(), n)),
        }
    }

    /// Finds a container and brings its recorded state up to date with reality.
    pub fn container(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        let c = self.lookup(key)?;
        if matches!(c.state, State::Running | State::Created) {
            let _lock = self.lock(&c.id)?;
            return self.refresh(&c.id);
        }
        Ok(c)
    }

    /// All containers, states refreshed.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, EngineError> {
        let all = db::all(self.conn())?;
        let mut out = Vec::with_capacity(all.len());
        for c in all {
            if matches!(c.state, State::Running | State::Created) {
                let _lock = self.lock(&c.id)?;
                match self.refresh(&c.id) {
                    Ok(c) => out.push(c),
                    Err(EngineError::NoSuchContainer(_)) => {}
                    Err(e) => return Err(e),
                }
            } else {
                out.push(c);
            }
        }
        if let Err(e) = self.reap_stale_network() {
            eprintln!("warning: releasing stale network leases: {e}");
        }
        Ok(out)
    }

    /// Releases network leases that outlived their container (a crash between a container's
    /// exit and its cleanup, or a removed row): rows gone → released; exited containers → torn
    /// down under their lock, so a concurrent start is never robbed of its address.
    pub(crate) fn reap_stale_network(&self) -> Result<(), EngineError> {
        let holders: std::collections::BTreeSet<String> = self
            .networks
            .leases()?
            .into_iter()
            .map(|l| l.container_id)
            .collect();
        let mut gone = Vec::new();
        for id in &holders {
            match db::get(self.conn(), id)? {
                None => gone.push(id.clone()),
                Some(c) if c.state == State::Exited => {
                    let _lock = self.lock(id)?;
                    if let Some(c) = db::get(self.conn(), id)? {
                        if c.state == State::Exited {
                            self.network_teardown(&c)?;
                        }
                    }
                }
                Some(_) => {}
            }
        }
        if !gone.is_empty() {
            let alive: Vec<String> = holders.into_iter().filter(|h| !gone.contains(h)).collect();
            self.networks.release_stale(&alive)?;
        }
        Ok(())
    }

    pub(crate) fn lock(&self, id: &str) -> Result<FileLock, EngineError> {
        Ok(FileLock::exclusive(&self.layout.lock_path(id))?)
    }

    /// Re-reads the row (caller holds the lock) and, if the container's process is gone,
    /// records its exit and releases its resources.
    pub(crate) fn refresh(&self, id: &str) -> Result<ContainerRecord, EngineError> {
        let c = db::get(self.conn(), id)?.ok_or_else(|| EngineError::NoSuchContainer(id.into()))?;
        if !matches!(c.state, State::Running | State::Created) {
            return Ok(c);
        }
        if let Some(code) = self.read_exit_file(id) {
            return self.finish(c, Some(code));
        }
        // conmon watches the container and writes the exit file when it ends: while conmon
        // lives, the container does (no need to ask runc, a process spawn per container).
        if self.conmon_alive(&c) {
            return Ok(c);
        }
        let alive = match self.runc.state(id)? {
            Some(s) => s.status != "stopped",
            None => false,
        };
        if alive {
            return Ok(c);
        }
        // runc says it is gone; conmon may still be about to write the exit file.
        for _ in 0..20 {
            if let Some(code) = self.read_exit_file(id) {
                return self.finish(c, Some(code));
            }
            if !self.conmon_alive(&c) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let code = self.read_exit_file(id);
        self.finish(c, code)
    }

    pub(crate) fn read_exit_file(&self, id: &str) -> Option<i32> {
        std::fs::read_to_string(self.layout.exit_file(id))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Whether the container's conmon still runs (checked by name too: a pid recorded before
    /// a reboot may belong to another process now).
    fn conmon_alive(&self, c: &ContainerRecord) -> bool {
        c.conmon_pid.is_some_and(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "conmon")
        })
    }
}
