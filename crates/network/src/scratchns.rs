//! A throwaway network namespace, alive while the value lives, for running `netavark teardown`
//! on behalf of a container whose own namespace is gone (after a crash).
//!
//! A helper thread unshares its network namespace (which changes that thread only) and parks;
//! netavark is given `/proc/PID/task/TID/ns/net`. Interfaces (veth pairs) named like the container's
//! interfaces are created inside first, so netavark's "delete the container veth" step succeeds
//! and it goes on to its complete teardown (bridge and network firewall chains) when the
//! container was the last one on its network.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The namespace; dropped = the helper thread ends and the namespace goes with it.
#[derive(Debug)]
pub struct ScratchNetns {
    path: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ScratchNetns {
    /// Creates the namespace with interfaces `ifnames` (best effort: a missing `ip` binary
    /// only makes netavark's teardown less complete).
    pub fn new(ifnames: Vec<String>) -> io::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<PathBuf>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("stasis-scratch-netns".into())
            .spawn(move || {
                // SAFETY: unshare(CLONE_NEWNET) changes the namespace of this thread only; the
                // thread does nothing but create interfaces and wait.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    let _ = ready_tx.send(Err(io::Error::last_os_error()));
                    return;
                }
                for (i, name) in ifnames.iter().enumerate() {
                    // Children forked from this thread start in its namespace. A veth pair
                    // (always there: netavark needs it) rather than a dummy (often a module
                    // that is not built).
                    let peer = format!("stasisscratch{i}");
                    let _ = Command::new("ip")
                        .args(["link", "add", name, "type", "veth", "peer", "name", &peer])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let path = PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id()));
                let _ = ready_tx.send(Ok(path));
                let _ = stop_rx.recv();
            })?;
        let path = ready_rx
            .recv()
            .map_err(|_| io::Error::other("scratch netns thread ended early"))??;
        Ok(ScratchNetns {
            path,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Path of the namespace, valid while `self` lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
