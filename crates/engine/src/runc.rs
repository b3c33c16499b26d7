//! Thin driver for the runc binary: one method per runc verb, errors carrying runc's own words.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Errors of the runc driver.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("cannot run {bin}: {source} (install runc: scripts/install-deps.sh)")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("runc {verb} {id} failed: {message}")]
    Failed {
        verb: &'static str,
        id: String,
        message: String,
    },
    #[error("runc state {id}: unreadable output: {0}", id = .1)]
    BadState(serde_json::Error, String),
}

/// What `runc state` reports.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RuncState {
    pub status: String,
    pub pid: i32,
}

/// A runc binary and the state directory (`--root`) it keeps its containers in.
#[derive(Debug, Clone)]
pub struct Runc {
    pub bin: PathBuf,
    pub root: PathBuf,
}

/// Options shared by checkpoint and restore (passed through to CRIU by runc).
#[derive(Debug, Clone, Default)]
pub struct CriuOpts {
    pub tcp_established: bool,
    pub file_locks: bool,
    /// `ADDRESS:PORT` of a CRIU page server that receives the memory pages of a dump
    /// (checkpoint only).
    pub page_server: Option<String>,
}

/// Pulls the `msg=` text out of runc's logfmt lines, else returns stderr trimmed.
pub fn runc_message(stderr: &str) -> String {
    let msgs: Vec<String> = stderr
        .lines()
        .filter_map(|l| {
            let i = l.find("msg=")?;
            let rest = &l[i + 4..];
            Some(if let Some(q) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut esc = false;
                for c in q.chars() {
                    if esc {
                        match c {
                            'n' => out.push_str("; "),
                            't' => out.push(' '),
                            c => out.push(c),
                        }
                        esc = false;
                    } else if c == '\\' {
                        esc = true;
                    } else if c == '"' {
                        break;
                    } else {
                        out.push(c);
                    }
                }
                out
            } else {
                rest.split(' ').next().unwrap_or("").to_string()
            })
        })
        .collect();
    if msgs.is_empty() {
        stderr.trim().to_string()
    } else {
        msgs.join("; ")
    }
}

impl Runc {
    pub fn new(bin: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            root: root.into(),
        }
    }

    /// `runc --root ROOT`, ready for a verb.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(&self.root);
        c
    }

    fn run(&self, verb: &'static str, id: &str, args: &[&str]) -> Result<String, RuncError> {
        self.run_around(verb, args, id, &[])
    }

    /// `runc VERB BEFORE... ID AFTER...`, stdout on success, runc's message on failure.
    fn run_around(
        &self,
        verb: &'static str,
        before: &[&str],
        id: &str,
        after: &[&str],
    ) -> Result<String, RuncError> {
        let out = self
            .command()
            .arg(verb)
            .args(before)
            .arg(id)
            .args(after)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuncError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(RuncError::Failed {
                verb,
                id: id.to_string(),
                message: runc_message(&String::from_utf8_lossy(&out.stderr)),
            })
        }
    }

    /// The container's runc state, or `None` when runc does not know it.
    pub fn state(&self, id: &str) -> Result<Option<RuncState>, RuncError> {
        match self.run("state", id, &[]) {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .map_err(|e| RuncError::BadState(e, id.to_string())),
            Err(RuncError::Failed { message, .. })
                if message.contains("does not exist") || message.contains("not exist") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn start(&self, id: &str) -> Result<(), RuncError> {
        self.run("start", id, &[]).map(drop)
    }

    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuncError> {
        let before: &[&str] = if all { &["--all"] } else { &[] };
        self.run_around("kill", before, id, &[&signal.to_string()])
            .map(drop)
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        // Nothing to delete when runc keeps no state for it (saves a runc run).
        if !self.root.join(id).exists() {
            return Ok(());
        }
        let args: &[&str] = if force { &["--force"] } else { &[] };
        match self.run("delete", id, args) {
            Err(RuncError::Failed { message, .. }) if message.contains("not exist") => Ok(()),
            r => r.map(drop),
        }
    }

    /// Freezes a running container until the returned guard is dropped: its files hold still
    /// while they are archived after a `--leave-running` dump. `None` when it cannot be frozen.
    pub fn freeze(&self, id: &str) -> Option<Frozen> {
        self.frozen_freezer(id).map(Frozen)
    }

    /// The container's freezer, once it has frozen the container; `None` when it cannot.
    fn frozen_freezer(&self, id: &str) -> Option<Freezer> {
        StateFile::read(&self.root, id)
            .as_ref()
            .and_then(StateFile::freezer)
            .filter(Freezer::freeze)
    }

    /// `runc checkpoint`: dumps the container through CRIU into `image_path`, writing CRIU's
    /// log and stats into `work_path`. Runs `beside` in a thread of its own while CRIU dumps,
    /// when the dump is to kill the container and nothing in it can notice: its cgroup is
    /// frozen and none of its processes holds an inet socket.
    pub fn checkpoint_beside<R: Send>(
        &self,
        id: &str,
        image_path: &Path,
        work_path: &Path,
        leave_running: bool,
        opts: &CriuOpts,
        beside: Option<impl FnOnce() -> R + Send>,
    ) -> Checkpointed<R> {
        let image = format!("--image-path={}", image_path.display());
        let work = format!("--work-path={}", work_path.display());
        let mut args = vec![image.as_str(), work.as_str()];
        if leave_running {
            args.push("--leave-running");
        }
        if opts.tcp_established {
            args.push("--tcp-established");
        }
        if opts.file_locks {
            args.push("--file-locks");
        }
        let ps;
        if let Some(addr) = &opts.page_server {
            ps = format!("--page-server={addr}");
            args.push(&ps);
        }
        // CRIU freezes the cgroup itself but, when its first look finds the freezer still
        // FREEZING (the usual case), it sleeps 100 ms before looking again. Frozen here first
        // (about a millisecond), CRIU finds it FROZEN and goes straight on; it thaws the cgroup
        // itself once it has seized the tasks.
        let frozen = self.frozen_freezer(id);
        // Frozen, and holding no inet socket, the container cannot tell its network going.
        let beside = beside.filter(|_| {
            !leave_running
                && !opts.tcp_established
                && frozen.as_ref().is_some_and(|f| !holds_inet_sockets(&f.dir))
        });
        let started = std::time::Instant::now();
        let (result, runtime, beside) = std::thread::scope(|s| {
            let beside = beside.map(|f| s.spawn(f));
            let result = self.run("checkpoint", id, &args).map(drop);
            let runtime = started.elapsed();
            (result, runtime, beside.and_then(|h| h.join().ok()))
        });
        if let Some(f) = frozen {
            if result.is_err() || leave_running {
                // Never leave a container frozen that was running before.
                f.thaw();
            }
        }
        Checkpointed {
            result,
            runtime,
            beside,
        }
    }
}

/// What [`Runc::checkpoint_beside`] did.
#[derive(Debug)]
pub struct Checkpointed<R> {
    /// runc's result.
    pub result: Result<(), RuncError>,
    /// How long runc ran (the freeze before it included).
    pub runtime: std::time::Duration,
    /// What the work done beside the dump returned, if it ran.
    pub beside: Option<R>,
}

/// What runc recorded of a running container (its `state.json`) that we use.
#[derive(Debug, serde::Deserialize)]
struct StateFile {
    #[serde(default)]
    cgroup_paths: std::collections::HashMap<String, PathBuf>,
}

impl StateFile {
    fn read(runc_root: &Path, id: &str) -> Option<StateFile> {
        let bytes = std::fs::read(runc_root.join(id).join("state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The container's cgroup freezer: the one runc hands to CRIU.
    fn freezer(&self) -> Option<Freezer> {
        if let Some(dir) = self.cgroup_paths.get("freezer") {
            if dir.join("freezer.state").exists() {
                return Some(Freezer {
                    dir: dir.clone(),
                    v2: false,
                });
            }
        }
        let dir = self.cgroup_paths.get("")?;
        dir.join("cgroup.freeze").exists().then(|| Freezer {
            dir: dir.clone(),
            v2: true,
        })
    }
}

/// A restore's wait for its container's network, set up meanwhile: a prestart hook of ours
/// in the restore's `config.json`. runc runs a restore's prestart hooks when CRIU reports
/// `setup-namespaces` (the root task exists in its namespaces, nothing of the container is
/// restored yet), and CRIU waits for runc's answer. The hook reads a line from a FIFO: `ok`
/// goes on, anything else (or end of file: stasis died) fails the restore. We hold the FIFO
/// open for writing meanwhile.
///
/// (A CRIU action script did this before; CRIU runs one for each of the seven actions of a
/// restore, about 2 ms each, where runc runs the hook once.)
#[derive(Debug)]
pub struct RestoreGate {
    fifo: PathBuf,
    script: PathBuf,
    writer: std::fs::File,
}

/// Where the gate's hook lives, under the runtime root: `criu/network-gate`.
const GATE_DIR: &str = "criu";
const GATE_SCRIPT: &str = "network-gate";

impl RestoreGate {
    /// A gate in directory `dir`; `None` when the script or FIFO cannot be made.
    pub fn new(dir: &Path, runc_root: &Path) -> Option<RestoreGate> {
        let criu_dir = runc_root.parent().unwrap_or(runc_root).join(GATE_DIR);
        let script = criu_dir.join(GATE_SCRIPT);
        let script_body = "#!/bin/sh\n\
             # written by stasis: a restore waits here (a runc prestart hook) until its network\n\
             # is set up; $1 is the FIFO stasis writes ok or fail to\n\
             read -r state < \"$1\" || exit 1\n\
             [ \"$state\" = ok ]\n";
        write_once(&criu_dir, &script, script_body, 0o755)?;
        let fifo = dir.join("network.gate");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).ok()?;
        // Read and write: opening does not wait for a reader, and the hook's read sees end of
        // file only once this (close-on-exec) descriptor is gone.
        let writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .ok();
        let Some(writer) = writer else {
            let _ = std::fs::remove_file(&fifo);
            return None;
        };
        Some(RestoreGate {
            fifo,
            script,
            writer,
        })
    }

    /// The hook (an OCI `hooks.prestart` entry) that makes the restore wait at this gate.
    pub fn hook(&self) -> serde_json::Value {
        let script = self.script.to_string_lossy();
        serde_json::json!({
            "path": script,
            "args": [script, self.fifo.to_string_lossy()],
        })
    }

    /// Whether `hook` (an OCI hook entry) is a gate's: those never leave this host.
    pub fn is_gate_hook(hook: &serde_json::Value) -> bool {
        hook["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("/{GATE_DIR}/{GATE_SCRIPT}")))
    }

    /// Lets the restore go on (`ok`) or fail.
    pub fn open(&self, ok: bool) {
        use std::io::Write;
        let line = if ok { "ok\n" } else { "fail\n" };
        let _ = (&self.writer).write_all(line.as_bytes());
    }
}

impl Drop for RestoreGate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.fifo);
    }
}

/// Writes `path` (mode `mode`) with `body` unless it holds that already; atomically.
fn write_once(dir: &Path, path: &Path, body: &str, mode: u32) -> Option<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read_to_string(path).is_ok_and(|b| b == body)
        && std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == mode)
    {
        return Some(());
    }
    std::fs::create_dir_all(dir).ok()?;
    let name = path.file_name()?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let written = std::fs::write(&tmp, body)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return None;
    }
    Some(())
}

/// Whether a process of the (frozen) container in cgroup directory `cgroup` holds an inet
/// socket: a socket descriptor that is not a unix socket. Unreadable counts as yes. (Its fd
/// tables, not its network namespace's socket tables: reading /proc/net/tcp walks the host's
/// whole TCP hash, about 2 ms a read here.)
fn holds_inet_sockets(cgroup: &Path) -> bool {
    let Ok(procs) = std::fs::read_to_string(cgroup.join("cgroup.procs")) else {
        return true;
    };
    let mut sockets = std::collections::BTreeSet::new();
    let mut some_pid = None;
    for pid in procs.split_whitespace() {
        some_pid.get_or_insert(pid);
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return true;
        };
        for fd in fds {
            let Ok(fd) = fd else {
                return true;
            };
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue; // closed meanwhile
            };
            let target = target.to_string_lossy();
            if let Some(ino) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                sockets.insert(ino.to_string());
            }
        }
    }
    let Some(pid) = some_pid else {
        return true;
    };
    if sockets.is_empty() {
        return false;
    }
    // Unix sockets are harmless: /proc/PID/net/unix lists those of its namespace (inode is
    // the 7th column).
    let Ok(unix) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) else {
        return true;
    };
    let unix: std::collections::BTreeSet<&str> = unix
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6))
        .collect();
    !sockets.iter().all(|s| unix.contains(s.as_str()))
}

/// A container frozen by [`Runc::freeze`]; thawed when dropped.
#[derive(Debug)]
pub struct Frozen(Freezer);

impl Drop for Frozen {
    fn drop(&mut self) {
        self.0.thaw();
    }
}

/// A container's cgroup freezer.
#[derive(Debug)]
struct Freezer {
    dir: PathBuf,
    /// cgroup v2 (`cgroup.freeze`/`cgroup.events`) rather than v1 (`freezer.state`).
    v2: bool,
}

impl Freezer {
    /// `Some(true)` frozen, `Some(false)` thawed, `None` in transition or unreadable.
    fn state(&self) -> Option<bool> {
        if self.v2 {
            let want = std::fs::read_to_string(self.dir.join("cgroup.freeze")).ok()?;
            let events = std::fs::read_to_string(self.dir.join("cgroup.events")).ok()?;
            let frozen = events.lines().any(|l| l.trim() == "frozen 1");
            match (want.trim(), frozen) {
                ("1", true) => Some(true),
                ("0", false) => Some(false),
                _ => None,
            }
        } else {
            match std::fs::read_to_string(self.dir.join("freezer.state"))
                .ok()?
                .trim()
            {
                "FROZEN" => Some(true),
                "THAWED" => Some(false),
                _ => None,
            }
        }
    }

    fn write(&self, freeze: bool) -> bool {
        let (file, value) = match (self.v2, freeze) {
            (true, f) => ("cgroup.freeze", if f { "1" } else { "0" }),
            (false, true) => ("freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED"),
        };
        std::fs::write(self.dir.join(file), value).is_ok()
    }

    /// Freezes a running (thawed) cgroup and waits until it is frozen: true when it is. A
    /// cgroup that is not thawed (paused by someone) is left alone; one that does not freeze
    /// within a second is thawed again (CRIU then freezes it the slow way).
    fn freeze(&self) -> bool {
        if self.state() != Some(false) || !self.write(true) {
            return false;
        }
        let start = std::time::Instant::now();
        let mut nap = std::time::Duration::from_micros(100);
        for i in 0u32.. {
            if self.state() == Some(true) {
                return true;
            }
            if start.elapsed() > std::time::Duration::from_secs(1) {
                break;
            }
            // v1 freezing can stall while tasks fork: asking again helps (runc does the same).
            if i % 8 == 7 {
                self.write(true);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(std::time::Duration::from_millis(1));
        }
        self.thaw();
        false
    }

    fn thaw(&self) {
        if self.dir.exists() {
            self.write(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the gate's hook as runc would; the child.
    fn run_gate_hook(gate: &RestoreGate) -> std::process::Child {
        let hook = gate.hook();
        let args: Vec<String> = hook["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        Command::new(hook["path"].as_str().unwrap())
            .args(&args[1..])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn restore_gate_holds_the_restore_until_opened() {
        let d = tempfile::tempdir().unwrap();
        let runc_root = d.path().join("runc");

        // The hook waits for the network, then lets the restore go on.
        let gate = RestoreGate::new(d.path(), &runc_root).unwrap();
        assert!(RestoreGate::is_gate_hook(&gate.hook()));
        let mut waiting = run_gate_hook(&gate);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            waiting.try_wait().unwrap().is_none(),
            "must wait for the network"
        );
        gate.open(true);
        assert!(waiting.wait().unwrap().success());
        drop(gate);

        // A failed setup fails the restore.
        let gate = RestoreGate::new(d.path(), &runc_root).unwrap();
        gate.open(false);
        assert!(!run_gate_hook(&gate).wait().unwrap().success());

        // So does the end of the stasis process that holds the gate (end of file).
        let gate = RestoreGate::new(d.path(), &runc_root).unwrap();
        let waiting = run_gate_hook(&gate);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let fifo = gate.fifo.clone();
        drop(gate);
        assert!(!fifo.exists());
        assert!(!waiting.wait_with_output().unwrap().status.success());

        // Other hooks are not ours.
        assert!(!RestoreGate::is_gate_hook(
            &serde_json::json!({"path": "/usr/bin/oci-hook"})
        ));
    }

    #[test]
    fn extracts_logfmt_messages() {
        let s = "time=\"2026-01-01T00:00:00Z\" level=error msg=\"container \\\"x\\\" does not exist\"\n";
        assert_eq!(runc_message(s), "container \"x\" does not exist");
        assert_eq!(runc_message("  plain failure \n"), "plain failure");
    }
}
