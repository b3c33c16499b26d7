//! `exec`: run a further process in a running container (`runc exec`), stdio inherited.

use std::process::Stdio;

use crate::db::State;
use crate::{Engine, EngineError};

/// `stasis exec` options.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub interactive: bool,
    pub detach: bool,
}

impl Engine {
    /// Runs the command and returns its exit code (Podman's 126/127 conventions for a command
    /// that cannot be run).
    pub fn exec(&self, key: &str, req: &ExecRequest) -> Result<i32, EngineError> {
        let c = self.container(key)?;
        if c.state != State::Running {
            return Err(EngineError::NotRunning {
                name: c.name.clone(),
                state: c.state.as_str().into(),
            });
        }
        if req.args.is_empty() {
            return Err(EngineError::msg("exec needs a command to run"));
        }
        let mut cmd = self.runc.command();
        cmd.arg("exec");
        for e in &req.env {
            cmd.arg("--env").arg(e);
        }
        if let Some(w) = &req.workdir {
            cmd.arg("--cwd").arg(w);
        }
        if let Some(u) = &req.user {
            cmd.arg("--user").arg(u);
        }
        if req.detach {
            cmd.arg("--detach");
        }
        cmd.arg(&c.id).args(&req.args);
        if !req.interactive {
            cmd.stdin(Stdio::null());
        }
        let status = cmd
            .status()
            .map_err(|e| EngineError::msg(format!("cannot run runc: {e}")))?;
        Ok(status.code().unwrap_or(126))
    }
}
