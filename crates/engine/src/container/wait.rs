//! `wait`: block until a container exits and return its exit code.

use std::time::Duration;

use crate::db::State;
use crate::{Engine, EngineError};

impl Engine {
    pub fn wait(&self, key: &str) -> Result<i32, EngineError> {
        let c = self.lookup(key)?;
        loop {
            let cur = self.container(&c.id)?;
            match cur.state {
                State::Running | State::Created => {
                    self.wait_exit_file(&c.id, Duration::from_millis(500));
                }
                _ => return Ok(cur.exit_code.unwrap_or(-1)),
            }
        }
    }
}
