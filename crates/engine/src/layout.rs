//! Where things live on disk: persistent data under `--root`, runtime files under `--runroot`.

use std::path::{Path, PathBuf};

/// The two directory trees of one store. Several stores can live side by side on one host.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Persistent data (default /var/lib/stasis): database, images, layers, containers.
    pub root: PathBuf,
    /// Volatile runtime data (default /run/stasis): runc state, exit files, locks, netns.
    pub runroot: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>, runroot: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            runroot: runroot.into(),
        }
    }

    /// Persistent per-container directory (holds `userdata/`, `upper/`, `work/`, `merged/`).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
    /// The OCI bundle (config.json, ctr.log, shm/, checkpoint/) — Podman's `userdata`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("userdata")
    }
    pub fn upper(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("upper")
    }
    pub fn work(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("work")
    }
    pub fn merged(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("merged")
    }
    pub fn shm(&self, id: &str) -> PathBuf {
        self.bundle(id).join("shm")
    }
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.bundle(id).join("ctr.log")
    }
    /// Volatile per-container directory: pid files, hosts, hostname, resolv.conf, .containerenv.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("containers").join(id)
    }
    pub fn pidfile(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("pidfile")
    }
    pub fn conmon_pidfile(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("conmon.pid")
    }
    pub fn runc_root(&self) -> PathBuf {
        self.runroot.join("runc")
    }
    pub fn exit_dir(&self) -> PathBuf {
        self.runroot.join("exits")
    }
    pub fn exit_file(&self, id: &str) -> PathBuf {
        self.exit_dir().join(id)
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.runroot.join("socket")
    }
    pub fn netns_dir(&self) -> PathBuf {
        self.runroot.join("netns")
    }
    /// The lock file guarding container `id`: one of 4096 files picked by the ID's first three
    /// hex digits. Lock files are never removed, so every process locks the same file for the
    /// same container (deleting them would let a racing process lock a fresh, different file).
    /// A process must never hold two container locks at once: two IDs may share a file.
    pub fn lock_path(&self, id: &str) -> PathBuf {
        let bucket: String = id.chars().take(3).collect();
        self.runroot.join("locks").join(format!("ctr-{bucket}"))
    }
    /// Lock serialising whole-store operations (image removal against container creation).
    pub fn store_lock(&self) -> PathBuf {
        self.root.join("store.lock")
    }
    /// Scratch space on the same filesystem as the containers (so renames are cheap).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// Every mount point of this process's mount namespace, from /proc/self/mountinfo, in mount
/// order (octal escapes undone).
pub fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect()
}

/// Returns whether `path` is a mount point (it appears in /proc/self/mountinfo).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let want = canon.to_string_lossy();
    mount_points().iter().any(|mp| *mp == want)
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo octal.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn root_is_a_mountpoint_and_a_file_is_not() {
        assert!(is_mountpoint(Path::new("/")));
        let d = tempfile::tempdir().unwrap();
        assert!(!is_mountpoint(d.path()));
    }
}
