//! What we ask CRIU directly (runc drives it for dumps and restores): its version, whether the
//! kernel tracks dirty memory, and the Error lines of its logs for messages.

use std::path::Path;
use std::process::{Command, Stdio};

/// CRIU's version as Podman numbers it (major*10000 + minor*100 + sub), or `None` if CRIU is
/// missing or unreadable.
pub fn version() -> Option<u32> {
    let out = Command::new("criu").arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `criu --version` output (`Version: 4.2.1`, `Version: 3.17`).
pub fn parse_version(text: &str) -> Option<u32> {
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))?
        .trim();
    let mut parts = v.split('.').map(|p| p.trim().parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let sub = parts.next().flatten().unwrap_or(0);
    Some(major * 10000 + minor * 100 + sub)
}

/// The CRIU configuration file runc hands CRIU for one dump or restore of ours (runc names
/// it from the container's `org.criu.config` annotation):
/// * `page-server` and `ps-socket FD` for a dump that sends its pages to us over the socket
///   `FD` it inherits;
/// * `network-lock skip` for a dump that carries no TCP connection out of a network namespace
///   of its own (`skip_lock`; `STASIS_CRIU_NETWORK_LOCK=keep` keeps the lock always). CRIU's
///   default locks the namespace with iptables around a dump and a restore, so that no packet
///   changes the connections it saves or recreates. CRIU records the dump's method in the
///   images and restores with it whatever the restore is told: the dump decides for both,
///   and an unlocked dump's restore skips the unlock too (about 50 ms of a small restore).
///   A pod member's dump keeps the lock: it leaves the pod's shared namespace locked, and
///   only a restore that locks (Podman's, into its pod) lifts that again.
pub fn config_file(skip_lock: bool, ps_socket: Option<std::os::fd::RawFd>) -> String {
    let mut conf = String::new();
    if skip_lock && std::env::var("STASIS_CRIU_NETWORK_LOCK").map_or(true, |v| v != "keep") {
        conf.push_str("network-lock skip\n");
    }
    if let Some(fd) = ps_socket {
        conf.push_str(&format!("page-server\nps-socket {fd}\n"));
    }
    conf
}

/// The CRIU configuration file for a restore from the images in `images`:
/// `manage-cgroups ignore` when the dump's tasks were all in the container's own cgroups
/// ([`stasis_pageserver::cgroup::cgroups_are_flat`]). runc has put CRIU into the new
/// container's cgroups by then, and the tasks stay where CRIU is: the same end as CRIU's
/// default mode, which mounts every cgroup hierarchy to get there (about 20 ms of a small
/// restore here). `STASIS_CRIU_CGROUPS=soft` keeps the default mode always.
pub fn restore_config_file(images: &Path) -> String {
    if std::env::var("STASIS_CRIU_CGROUPS").is_ok_and(|v| v == "soft") {
        return String::new();
    }
    let flat = std::fs::read(images.join("cgroup.img"))
        .ok()
        .and_then(|b| stasis_pageserver::cgroup::cgroups_are_flat(&b).ok());
    match flat {
        // (one word: CRIU reads an optional argument only when attached with "=")
        Some(true) => "manage-cgroups=ignore\n".into(),
        _ => String::new(),
    }
}

/// Whether the kernel lets CRIU track dirty memory (needed for pre-dumps).
pub fn memory_tracking() -> bool {
    Command::new("criu")
        .args(["check", "--feature", "mem_dirty_track"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether CRIU can restore memory lazily here (userfaultfd, non-cooperative mode).
pub fn lazy_pages_supported() -> bool {
    Command::new("criu")
        .args(["check", "--feature", "uffd-noncoop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts CRIU's lazy-pages daemon for a restore (without waiting for it: see
/// [`LazyStart::wait_ready`]): it serves the memory pages of `images` to
/// the restored process on demand and in the background, so the process runs again before
/// its memory is all copied. It listens on `work_dir/lazy-pages.socket` (where runc's CRIU
/// looks for it), outlives the caller, removes `remove_after` once every page is delivered,
/// and writes its pid to `pidfile`.
///
/// With `page_server`, the daemon reads the lazy pages from that socket (CRIU's page-server
/// protocol; the other end is our feeder, see `pagestream`) instead of the image directory.
pub fn spawn_lazy_pages(
    images: &Path,
    work_dir: &Path,
    remove_after: &Path,
    pidfile: &Path,
    page_server: Option<std::os::fd::OwnedFd>,
) -> std::io::Result<LazyStart> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let socket = work_dir.join("lazy-pages.socket");
    let _ = std::fs::remove_file(&socket);
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let remote = page_server
        .as_ref()
        .map(|fd| format!(" --page-server --ps-socket {}", fd.as_raw_fd()))
        .unwrap_or_default();
    let script = format!(
        "echo $$ > {pid}; criu lazy-pages --images-dir {img} --work-dir {work}{remote} -o lazy-pages.log; rm -rf {rm} {pid}",
        pid = q(pidfile),
        img = q(images),
        work = q(work_dir),
        rm = q(remove_after),
    );
    let mut cmd = Command::new("setsid");
    cmd.args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(fd) = &page_server {
        let raw = fd.as_raw_fd();
        // SAFETY: only an fcntl between fork and exec (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || crate::pagestream::set_inheritable(raw));
        }
    }
    let child = cmd.spawn()?;
    drop(page_server);
    // setsid execs the shell in place (we are not a group leader): its pid leads the group
    // that `stop_lazy_pages` kills. Written here too, so that a failure right after this
    // call finds it.
    std::fs::write(pidfile, format!("{}\n", child.id()))?;
    Ok(LazyStart {
        socket,
        pidfile: pidfile.to_path_buf(),
    })
}

/// A lazy-pages daemon on its way up (see [`spawn_lazy_pages`]).
#[derive(Debug)]
pub struct LazyStart {
    socket: std::path::PathBuf,
    pidfile: std::path::PathBuf,
}

impl LazyStart {
    /// Waits until the daemon listens (where the restore looks for it), or fails if it ended.
    pub fn wait_ready(self) -> std::io::Result<()> {
        let mut seen_pid = false;
        for _ in 0..2000 {
            if self.socket.exists() {
                return Ok(());
            }
            // The wrapper removes its pidfile when the daemon has ended (failed): stop waiting.
            match (self.pidfile.exists(), seen_pid) {
                (true, _) => seen_pid = true,
                (false, true) => break,
                (false, false) => {}
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Err(std::io::Error::other(
            "CRIU's lazy-pages daemon did not come up",
        ))
    }
}

/// Waits (up to `limit`) for a lazy-pages daemon recorded in `pidfile` to finish delivering
/// pages. A process still being filled must not be checkpointed again.
pub fn wait_lazy_pages(pidfile: &Path, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        let pid = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let alive = pid
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        if !alive {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Stops a lazy-pages daemon (its whole process group) after a failed restore.
pub fn stop_lazy_pages(pidfile: &Path) {
    if let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Whether runc accepts `restore --lsm-mount-context` (what Podman checks before a pod restore).
pub fn runtime_supports_pod_restore(runc: &Path) -> bool {
    Command::new(runc)
        .args(["restore", "--lsm-mount-context"])
        .output()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stderr).into_owned()
                + &String::from_utf8_lossy(&o.stdout);
            t.contains("flag needs an argument") || t.contains("requires an argument")
        })
        .unwrap_or(false)
}

/// The lines of a CRIU log that report errors (at most `max`), for a one-screen message.
pub fn log_errors(log: &Path, max: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    let errs: Vec<String> = text
        .lines()
        .filter(|l| l.contains("Error") || l.contains("error"))
        .map(|l| l.trim().to_string())
        .collect();
    let skip = errs.len().saturating_sub(max);
    errs.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files() {
        if std::env::var_os("STASIS_CRIU_NETWORK_LOCK").is_none() {
            assert_eq!(config_file(true, None), "network-lock skip\n");
            assert_eq!(
                config_file(true, Some(7)),
                "network-lock skip\npage-server\nps-socket 7\n"
            );
        }
        assert_eq!(config_file(false, None), "");
        assert_eq!(config_file(false, Some(7)), "page-server\nps-socket 7\n");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("Version: 4.2.1\n"), Some(40201));
        assert_eq!(parse_version("Version: 3.17\nGitID: x"), Some(31700));
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn picks_error_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dump.log");
        std::fs::write(
            &p,
            "(0.1) ok\n(0.2) Error (criu/x.c:1): bad thing\n(0.3) fine\n",
        )
        .unwrap();
        assert_eq!(
            log_errors(&p, 5),
            vec!["(0.2) Error (criu/x.c:1): bad thing"]
        );
        assert!(log_errors(&d.path().join("missing"), 5).is_empty());
    }
}
