//! Thin driver for conmon, the container monitor: it runs `runc create` (or `runc restore`),
//! keeps the container's stdio on pipes, writes the log, records the exit code in the exit
//! directory and calls our exit command, and outlives the `stasis` process that started it.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Errors of the conmon driver.
#[derive(Debug, thiserror::Error)]
pub enum ConmonError {
    #[error("cannot run conmon: {0} (install it: scripts/install-deps.sh)")]
    Spawn(#[source] std::io::Error),
    #[error("conmon for container {id}: {message}")]
    Runtime { id: String, message: String },
    #[error("conmon for container {id} exited without reporting the container's pid: {detail}")]
    NoPid { id: String, detail: String },
}

/// Everything conmon needs for one container.
#[derive(Debug, Clone)]
pub struct ConmonArgs {
    pub conmon: PathBuf,
    pub id: String,
    pub name: String,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub bundle: PathBuf,
    pub pidfile: PathBuf,
    pub conmon_pidfile: PathBuf,
    pub log_path: PathBuf,
    pub exit_dir: PathBuf,
    pub socket_dir: PathBuf,
    /// argv of the exit command (program first).
    pub exit_command: Vec<String>,
    /// `Some(checkpoint dir)` to run `runc restore` instead of `runc create`.
    pub restore: Option<PathBuf>,
    /// Extra options for `runc restore` (`--tcp-established`, `--file-locks`, ...).
    pub runtime_opts: Vec<String>,
}

impl ConmonArgs {
    /// conmon's command line, Podman's shape.
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["--api-version".into(), "1".into()];
        let mut push = |k: &str, v: &str| {
            a.push(k.to_string());
            a.push(v.to_string());
        };
        let s = |p: &PathBuf| p.to_string_lossy().into_owned();
        push("-c", &self.id);
        push("-u", &self.id);
        push("-r", &s(&self.runtime));
        push("-b", &s(&self.bundle));
        push("-p", &s(&self.pidfile));
        push("-n", &self.name);
        push("--exit-dir", &s(&self.exit_dir));
        push("--socket-dir-path", &s(&self.socket_dir));
        push("-l", &format!("k8s-file:{}", s(&self.log_path)));
        push("--log-level", "warning");
        push("--runtime-arg", "--root");
        push("--runtime-arg", &s(&self.runtime_root));
        push("--conmon-pidfile", &s(&self.conmon_pidfile));
        if let Some((prog, args)) = self.exit_command.split_first() {
            push("--exit-command", prog);
            for x in args {
                push("--exit-command-arg", x);
            }
        }
        if let Some(r) = &self.restore {
            push("--restore", &s(r));
            for o in &self.runtime_opts {
                push("--runtime-opt", o);
            }
        }
        a
    }
}

#[derive(serde::Deserialize)]
struct SyncMessage {
    data: i64,
    #[serde(default)]
    message: Option<String>,
}

/// Starts conmon and waits until it reports the container's pid (after `runc create` or
/// `runc restore` finished). Returns that pid.
pub fn spawn(args: &ConmonArgs) -> Result<i32, ConmonError> {
    let (read_end, write_end) = pipe().map_err(ConmonError::Spawn)?;
    let write_raw = write_end.as_raw_fd();
    // conmon's daemonised child may keep stderr open for its whole life: use a file, not a pipe.
    let err_path = args.pidfile.with_file_name("conmon.err");
    let err_file = std::fs::File::create(&err_path).map_err(ConmonError::Spawn)?;
    let mut cmd = Command::new(&args.conmon);
    cmd.args(args.argv())
        .env("_OCI_SYNCPIPE", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file);
    // SAFETY: only async-signal-safe calls (dup2, setsid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(write_raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(ConmonError::Spawn)?;
    drop(write_end);
    let mut sync = std::fs::File::from(read_end);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let pid = loop {
        let n = sync.read(&mut chunk).map_err(ConmonError::Spawn)?;
        if n == 0 {
            break None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut de = serde_json::Deserializer::from_slice(&buf).into_iter::<SyncMessage>();
        if let Some(Ok(m)) = de.next() {
            break Some(m);
        }
    };
    // The first conmon process exits once it has daemonised; reap it.
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    match pid {
        Some(m) if m.data > 0 => Ok(m.data as i32),
        Some(m) => Err(ConmonError::Runtime {
            id: args.id.clone(),
            message: clean_runtime_message(m.message.as_deref().unwrap_or("unknown error")),
        }),
        None => Err(ConmonError::NoPid {
            id: args.id.clone(),
            detail: if stderr.trim().is_empty() {
                "no output".into()
            } else {
                stderr.trim().to_string()
            },
        }),
    }
}

/// Shortens the runc error conmon relays (which embeds runc's logfmt line) to its message.
fn clean_runtime_message(m: &str) -> String {
    let inner = crate::runc::runc_message(m);
    if inner.is_empty() {
        m.trim().to_string()
    } else {
        inner
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array we pass.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_has_restore_and_exit_command() {
        let a = ConmonArgs {
            conmon: "/usr/bin/conmon".into(),
            id: "abc".into(),
            name: "n".into(),
            runtime: "/usr/bin/runc".into(),
            runtime_root: "/run/s/runc".into(),
            bundle: "/b".into(),
            pidfile: "/r/pidfile".into(),
            conmon_pidfile: "/r/conmon.pid".into(),
            log_path: "/b/ctr.log".into(),
            exit_dir: "/r/exits".into(),
            socket_dir: "/r/socket".into(),
            exit_command: vec!["/bin/stasis".into(), "container".into(), "cleanup".into()],
            restore: Some("/b/checkpoint".into()),
            runtime_opts: vec!["--tcp-established".into()],
        };
        let v = a.argv();
        let j = v.join(" ");
        assert!(j.contains("-l k8s-file:/b/ctr.log"));
        assert!(j.contains("--runtime-arg --root --runtime-arg /run/s/runc"));
        assert!(j.contains(
            "--exit-command /bin/stasis --exit-command-arg container --exit-command-arg cleanup"
        ));
        assert!(j.ends_with("--restore /b/checkpoint --runtime-opt --tcp-established"));
    }
}
