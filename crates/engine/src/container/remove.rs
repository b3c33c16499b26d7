//! `rm`: a container, its storage and its row, leaving no mount, directory or row behind.

use std::time::Duration;

use crate::db::{self, State};
use crate::{Engine, EngineError};

impl Engine {
    /// Removes a container. A running one needs `force` (it is killed first).
    pub fn remove(&self, key: &str, force: bool) -> Result<String, EngineError> {
        let c = self.lookup(key)?;
        let _lock = self.lock(&c.id)?;
        let c = self.refresh(&c.id)?;
        if matches!(c.state, State::Running | State::Created) {
            if !force {
                return Err(EngineError::RemoveRunning(c.name));
            }
            let _ = self.runc.kill(&c.id, libc::SIGKILL, false);
            self.wait_exit_file(&c.id, Duration::from_secs(10));
        }
        let mut errors = self.teardown(&c);
        for dir in [self.layout.container_dir(&c.id), self.layout.run_dir(&c.id)] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
            }
        }
        if !errors.is_empty() {
            return Err(EngineError::msg(format!(
                "removing container {}: {} (run rm again to retry)",
                c.name,
                errors.join("; ")
            )));
        }
        let _ = std::fs::remove_file(self.layout.exit_file(&c.id));
        db::delete(self.conn(), &c.id)?;
        Ok(c.id)
    }
}
