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

    /// `runc checkpoint`: dumps the container through CRIU into `image_path`, writing CRIU's
    /// log and stats into `work_path`.
    pub fn checkpoint(
        &self,
        id: &str,
        image_path: &Path,
        work_path: &Path,
        leave_running: bool,
        opts: &CriuOpts,
    ) -> Result<(), RuncError> {
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
        let frozen = Freezer::of(&self.root, id).filter(|f| f.freeze());
        let res = self.run("checkpoint", id, &args).map(drop);
        if let Some(f) = frozen {
            if res.is_err() || leave_running {
                // Never leave a container frozen that was running before.
                f.thaw();
            }
        }
        res
    }
}

/// A container's cgroup freezer, at the path runc recorded in its state (`cgroup_paths`): the
/// one runc hands to CRIU.
#[derive(Debug)]
struct Freezer {
    dir: PathBuf,
    /// cgroup v2 (`cgroup.freeze`/`cgroup.events`) rather than v1 (`freezer.state`).
    v2: bool,
}

impl Freezer {
    fn of(runc_root: &Path, id: &str) -> Option<Freezer> {
        #[derive(serde::Deserialize)]
        struct State {
            #[serde(default)]
            cgroup_paths: std::collections::HashMap<String, PathBuf>,
        }
        let bytes = std::fs::read(runc_root.join(id).join("state.json")).ok()?;
        let st: State = serde_json::from_slice(&bytes).ok()?;
        if let Some(dir) = st.cgroup_paths.get("freezer") {
            if dir.join("freezer.state").exists() {
                return Some(Freezer {
                    dir: dir.clone(),
                    v2: false,
                });
            }
        }
        let dir = st.cgroup_paths.get("")?;
        dir.join("cgroup.freeze").exists().then(|| Freezer {
            dir: dir.clone(),
            v2: true,
        })
    }

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
            nap = (nap * 2).min(std::time::Duration::from_millis(5));
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

    #[test]
    fn extracts_logfmt_messages() {
        let s = "time=\"2026-01-01T00:00:00Z\" level=error msg=\"container \\\"x\\\" does not exist\"\n";
        assert_eq!(runc_message(s), "container \"x\" does not exist");
        assert_eq!(runc_message("  plain failure \n"), "plain failure");
    }
}
