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
        // runc's own failure (as opposed to the command's exit code) goes to this log.
        let log = self
            .layout
            .run_dir(&c.id)
            .join(format!("exec-{}.log", &crate::names::new_id()[..12]));
        let mut cmd = self.runc.command();
        cmd.arg("--log").arg(&log).arg("--log-format").arg("json");
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
        // runc prints its own failure on stderr too: relay stderr, holding back a line that
        // looks like runc's, and replace it with one clear error.
        cmd.stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| EngineError::msg(format!("cannot run runc: {e}")))?;
        let relay = child.stderr.take().map(|pipe| {
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut held: Option<String> = None;
                let mut err = std::io::stderr();
                for line in std::io::BufReader::new(pipe)
                    .split(b'\n')
                    .map_while(Result::ok)
                {
                    if let Some(h) = held.take() {
                        let _ = writeln!(err, "{h}");
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if text.starts_with("exec failed: ") {
                        held = Some(text);
                    } else {
                        let _ = err.write_all(&line);
                        let _ = err.write_all(b"\n");
                    }
                }
                held
            })
        });
        let status = child
            .wait()
            .map_err(|e| EngineError::msg(format!("waiting for runc: {e}")))?;
        let held = relay.and_then(|h| h.join().ok()).flatten();
        let runc_log = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let code = exec_exit_code(status.code(), &runc_log);
        match runc_failure(&runc_log) {
            Some(msg) if code == 126 || code == 127 => Err(EngineError::ExecFailed {
                code,
                message: format!("container {}: {msg}", c.name),
            }),
            _ => {
                if let Some(h) = held {
                    eprintln!("{h}");
                }
                Ok(code)
            }
        }
    }
}

fn runc_failure(runc_log: &str) -> Option<String> {
    runc_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .filter_map(|v| v["msg"].as_str().map(String::from))
        .find(|m| m.contains("exec failed"))
}

/// The exit code of `exec`, with Podman's conventions when runc could not run the command:
/// 127 when it does not exist, 126 when it cannot be executed.
pub fn exec_exit_code(code: Option<i32>, runc_log: &str) -> i32 {
    match (code, runc_failure(runc_log)) {
        (_, Some(m)) if m.contains("no such file") || m.contains("not found") => 127,
        (_, Some(_)) => 126,
        (Some(c), None) => c,
        (None, None) => 126,
    }
}

#[cfg(test)]
mod tests {
    use super::exec_exit_code;

    #[test]
    fn maps_runc_failures_to_podman_codes() {
        let nf = r#"{"level":"error","msg":"exec failed: unable to start container process: exec: \"/x\": stat /x: no such file or directory"}"#;
        let perm = r#"{"level":"error","msg":"exec failed: unable to start container process: exec: \"/etc/motd\": permission denied"}"#;
        assert_eq!(exec_exit_code(Some(255), nf), 127);
        assert_eq!(exec_exit_code(Some(255), perm), 126);
        assert_eq!(exec_exit_code(Some(255), ""), 255);
        assert_eq!(exec_exit_code(Some(3), ""), 3);
    }
}
