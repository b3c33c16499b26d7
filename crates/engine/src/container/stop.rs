//! `stop` and `kill`.

use std::time::{Duration, Instant};

use crate::db::{ContainerRecord, State};
use crate::{Engine, EngineError};

impl Engine {
    /// Sends the stop signal, waits up to `timeout` seconds, then SIGKILL. Stopping a container
    /// that is not running does nothing.
    pub fn stop(&self, key: &str, timeout: Option<u32>) -> Result<ContainerRecord, EngineError> {
        let c = self.lookup(key)?;
        let _lock = self.lock(&c.id)?;
        let c = self.refresh(&c.id)?;
        if !matches!(c.state, State::Running | State::Created) {
            return Ok(c);
        }
        let timeout = timeout.unwrap_or(c.config.stop_timeout);
        if timeout > 0 {
            self.signal(&c, c.config.stop_signal)?;
            if self.wait_exit_file(&c.id, Duration::from_secs(timeout.into())) {
                return self.refresh(&c.id);
            }
        }
        self.signal(&c, libc::SIGKILL)?;
        self.wait_exit_file(&c.id, Duration::from_secs(10));
        self.refresh(&c.id)
    }

    /// Sends `signal` to the container's main process.
    pub fn kill(&self, key: &str, signal: i32) -> Result<ContainerRecord, EngineError> {
        let c = self.lookup(key)?;
        let _lock = self.lock(&c.id)?;
        let c = self.refresh(&c.id)?;
        if c.state != State::Running {
            return Err(EngineError::NotRunning {
                name: c.name.clone(),
                state: c.state.as_str().into(),
            });
        }
        self.signal(&c, signal)?;
        if signal == libc::SIGKILL {
            self.wait_exit_file(&c.id, Duration::from_secs(10));
            return self.refresh(&c.id);
        }
        Ok(c)
    }

    fn signal(&self, c: &ContainerRecord, signal: i32) -> Result<(), EngineError> {
        match self.runc.kill(&c.id, signal, false) {
            Ok(()) => Ok(()),
            // Already gone: the exit file tells the rest.
            Err(e)
                if e.to_string().contains("not running") || e.to_string().contains("not exist") =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Polls for conmon's exit file. Returns whether it appeared in time. Looks often at
    /// first (an exit is usually recorded within a few milliseconds), then every 20 ms.
    pub(crate) fn wait_exit_file(&self, id: &str, limit: Duration) -> bool {
        let start = Instant::now();
        let path = self.layout.exit_file(id);
        let mut nap = Duration::from_millis(1);
        loop {
            if path.exists() {
                return true;
            }
            let spent = start.elapsed();
            if spent >= limit {
                return false;
            }
            std::thread::sleep(nap.min(limit - spent));
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }
}
