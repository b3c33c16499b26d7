//! A container's root filesystem changes, read from its overlayfs **upper** directory (never the
//! merged mount), for `rootfs-diff.tar` and `deleted.files`.
//!
//! Overlay semantics:
//! * a character device 0/0 is a whiteout: the path was deleted;
//! * a directory with `trusted.overlay.opaque=y` (or `user.overlay.opaque=y` for `userxattr`
//!   mounts) hides everything below it in the lower layers;
//! * in a directory marked `opaque=x`, a regular file with `trusted.overlay.whiteout` is a
//!   whiteout too (kernel ≥ 6.7 "xwhiteouts");
//! * everything else in upper was added or modified, including every directory, since a directory
//!   in upper is new, copied up, or changed in owner/mode/times, and in each case its upper
//!   metadata is the current one. (Podman drops modified files whose path is missing on the host,
//!   and all directory metadata; this keeps both.)
//!
//! Paths in [`Changes::added_or_modified`] are relative (`etc/motd`), parents before children,
//! ready for the tar builder; paths in [`Changes::deleted`] are absolute in-container paths
//! (`/etc/motd`) as Podman writes `deleted.files`.
//!
//! An opaque directory `d` is reported as deleted (`/d`) **and** its content as added, which is
//! only right when deletions are applied *before* the diff tar. Podman applies them after, so
//! for archives Podman must restore, use [`changes_with_lowers`], which turns an opaque directory
//! into deletions of exactly the lower entries it hides.

use crate::names::DELETED_FILES;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Errors of this module; they name the directory or file.
#[derive(Debug, thiserror::Error)]
pub enum RootfsDiffError {
    /// Reading the upper (or a lower) directory failed.
    #[error("cannot read container layer {path}: {source}; is the container's storage still mounted and intact?")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A name that `deleted.files` (JSON) cannot carry.
    #[error("container layer {path}: file name is not UTF-8; it cannot be recorded in the checkpoint (rename it or use --ignore-rootfs)")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// `deleted.files` is malformed or unsafe.
    #[error("{file}: {reason}; the archive is damaged or forged (restore with --ignore-rootfs to skip it)", file = DELETED_FILES)]
    DeletedFiles {
        /// What is wrong.
        reason: String,
    },
}

/// Added/modified and deleted paths of a container layer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Relative paths (`etc/motd`), parents first: files, symlinks, directories, fifos, devices.
    pub added_or_modified: Vec<String>,
    /// Absolute in-container paths (`/etc/motd`).
    pub deleted: Vec<String>,
}

impl Changes {
    /// `true` when there is nothing to export.
    pub fn is_empty(&self) -> bool {
        self.added_or_modified.is_empty() && self.deleted.is_empty()
    }
}

/// Computes the changes in `upper`, skipping the in-container paths in `exclude` (mount
/// destinations such as `/etc/hosts`, `/dev`, `/proc`) and everything below them.
pub fn changes(upper: &Path, exclude: &[&str]) -> Result<Changes, RootfsDiffError> {
    walk(upper, &[], exclude)
}

/// Like [`changes`], but an opaque directory is expanded into the deletion of each entry of the
/// `lowers` (topmost first) that it hides, so the result is right whatever order a restorer
/// applies deletions and the diff tar in (Podman 4.3 applies the tar first).
pub fn changes_with_lowers(
    upper: &Path,
    lowers: &[&Path],
    exclude: &[&str],
) -> Result<Changes, RootfsDiffError> {
    walk(upper, lowers, exclude)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsDiffError + '_ {
    move |source| RootfsDiffError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn normalize_excludes(exclude: &[&str]) -> Vec<String> {
    exclude
        .iter()
        .map(|e| e.trim_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

fn is_excluded(rel: &str, excludes: &[String]) -> bool {
    excludes.iter().any(|e| {
        rel == e
            || (rel.len() > e.len()
                && rel.starts_with(e.as_str())
                && rel.as_bytes()[e.len()] == b'/')
    })
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 16];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n.min(buf.len())].to_vec()),
        Err(_) => None,
    }
}

fn opaque_value(path: &Path) -> Option<u8> {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .find_map(|n| xattr(path, n))
        .and_then(|v| v.first().copied())
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, RootfsDiffError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| RootfsDiffError::NotUtf8 { path: path.clone() })?;
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

fn join_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

struct Frame {
    rel: String,
    /// Inside an opaque directory that was already recorded as deleted (no whiteouts needed).
    covered: bool,
    /// `opaque=x`: regular files may be xwhiteouts.
    xwhiteouts: bool,
}

fn walk(upper: &Path, lowers: &[&Path], exclude: &[&str]) -> Result<Changes, RootfsDiffError> {
    let excludes = normalize_excludes(exclude);
    let mut out = Changes::default();
    // Depth-first, pre-order, names sorted: parents before children. Explicit stack, so a deep
    // tree cannot overflow the thread's stack.
    let root = Frame {
        rel: String::new(),
        covered: false,
        xwhiteouts: opaque_value(upper) == Some(b'x'),
    };
    let entries = sorted_entries(upper)?;
    let mut stack = vec![(root, entries.into_iter())];
    while let Some((frame, iter)) = stack.last_mut() {
        let Some((name, path)) = iter.next() else {
            stack.pop();
            continue;
        };
        let rel = join_rel(&frame.rel, &name);
        if is_excluded(&rel, &excludes) {
            continue;
        }
        let md = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let ft = md.file_type();
        let whiteout = (ft.is_char_device() && md.rdev() == 0)
            || (frame.xwhiteouts
                && ft.is_file()
                && md.len() == 0
                && xattr(&path, "trusted.overlay.whiteout").is_some());
        if whiteout {
            if !frame.covered {
                out.deleted.push(format!("/{rel}"));
            }
            continue;
        }
        if ft.is_socket() {
            continue; // tar cannot carry sockets; the processes recreate them
        }
        out.added_or_modified.push(rel.clone());
        if ft.is_dir() {
            let opaque = opaque_value(&path);
            let mut covered = frame.covered;
            if opaque == Some(b'y') && !covered {
                if lowers.is_empty() {
                    out.deleted.push(format!("/{rel}"));
                    covered = true;
                } else {
                    hidden_lower_entries(&rel, &path, lowers, &excludes, &mut out.deleted)?;
                }
            }
            let entries = sorted_entries(&path)?;
            let child = Frame {
                rel,
                covered,
                xwhiteouts: opaque == Some(b'x'),
            };
            stack.push((child, entries.into_iter()));
        }
    }
    Ok(out)
}

/// For the opaque upper directory `rel` (at `upper_dir`), pushes `/rel/name` for every entry of
/// the lower layers that is not in upper, recursing where both have a directory.
fn hidden_lower_entries(
    rel: &str,
    upper_dir: &Path,
    lowers: &[&Path],
    excludes: &[String],
    deleted: &mut Vec<String>,
) -> Result<(), RootfsDiffError> {
    let mut names = std::collections::BTreeSet::new();
    for lower in lowers {
        let dir = lower.join(rel);
        match fs::symlink_metadata(&dir) {
            Ok(md) if md.is_dir() => {}
            _ => continue,
        }
        for (name, _) in sorted_entries(&dir)? {
            names.insert(name);
        }
    }
    for name in names {
        let child = join_rel(rel, &name);
        if is_excluded(&child, excludes) {
            continue;
        }
        let up = upper_dir.join(&name);
        match fs::symlink_metadata(&up) {
            Err(_) => deleted.push(format!("/{child}")),
            Ok(md) if md.is_dir() => {
                // The upper directory replaces the lower one entirely (its parent is opaque).
                hidden_lower_entries(&child, &up, lowers, excludes, deleted)?
            }
            Ok(_) => {} // replaced by the upper entry, which the diff tar carries
        }
    }
    Ok(())
}

/// Validates `deleted.files`: a JSON array (or `null`) of absolute, clean paths without `..`
/// components, not `/` itself.
pub fn parse_deleted_files(bytes: &[u8]) -> Result<Vec<String>, RootfsDiffError> {
    let list: Option<Vec<String>> =
        serde_json::from_slice(bytes).map_err(|e| RootfsDiffError::DeletedFiles {
            reason: format!(
                "{} (expected a JSON array of paths)",
                crate::json::JsonProblem::from_serde(&e)
            ),
        })?;
    let list = list.unwrap_or_default();
    for p in &list {
        let bad = |why: &str| RootfsDiffError::DeletedFiles {
            reason: format!("entry {p:?} {why}"),
        };
        if !p.starts_with('/') {
            return Err(bad("is not an absolute path"));
        }
        if p.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        if p.split('/').any(|c| c == "..") {
            return Err(bad("contains a '..' component"));
        }
        if p.trim_matches('/')
            .split('/')
            .all(|c| c.is_empty() || c == ".")
        {
            return Err(bad("names the root directory"));
        }
    }
    Ok(list)
}

/// Encodes `deleted.files` as Podman does (two-space indented JSON array).
pub fn deleted_files_json(deleted: &[String]) -> Vec<u8> {
    serde_json::to_vec_pretty(deleted).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{lsetxattr, makedev, mknodat, FileType, Mode, XattrFlags, CWD};

    fn whiteout(p: &Path) {
        mknodat(
            CWD,
            p,
            FileType::CharacterDevice,
            Mode::empty(),
            makedev(0, 0),
        )
        .unwrap();
    }
    fn opaque(p: &Path) {
        lsetxattr(p, "trusted.overlay.opaque", b"y", XattrFlags::empty()).unwrap();
    }
    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    /// upper: etc/ (modified motd, new file, whiteout of issue), var/cache (opaque, with new),
    /// new dir with a symlink, mount points to exclude, a socket.
    fn build_upper(up: &Path) {
        write(&up.join("etc/motd"), "modified");
        write(&up.join("etc/newfile"), "new");
        whiteout(&up.join("etc/issue"));
        write(&up.join("etc/hosts"), "");
        write(&up.join("etc/hostname"), "");
        fs::create_dir_all(up.join("dev/pts")).unwrap();
        write(&up.join("run/.containerenv"), "");
        fs::create_dir_all(up.join("var/cache")).unwrap();
        opaque(&up.join("var/cache"));
        write(&up.join("var/cache/fresh"), "x");
        whiteout(&up.join("var/cache/gone-anyway"));
        fs::create_dir_all(up.join("srv/data")).unwrap();
        std::os::unix::fs::symlink("../etc/motd", up.join("srv/link")).unwrap();
        whiteout(&up.join("tmpdir"));
        std::os::unix::net::UnixListener::bind(up.join("srv/sock")).unwrap();
    }

    const EXCLUDES: &[&str] = &[
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/run/.containerenv",
        "/dev/",
        "/proc",
        "/sys",
    ];

    #[test]
    fn whiteouts_opaque_and_modified() {
        let t = tempfile::tempdir().unwrap();
        build_upper(t.path());
        let c = changes(t.path(), EXCLUDES).unwrap();
        assert_eq!(
            c.added_or_modified,
            vec![
                "etc",
                "etc/motd",
                "etc/newfile",
                "run",
                "srv",
                "srv/data",
                "srv/link",
                "var",
                "var/cache",
                "var/cache/fresh"
            ]
        );
        assert_eq!(c.deleted, vec!["/etc/issue", "/tmpdir", "/var/cache"]);
        assert!(!c.is_empty());
    }

    #[test]
    fn opaque_expanded_against_lowers() {
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("upper");
        let low = t.path().join("lower");
        build_upper(&up);
        write(&low.join("var/cache/old1"), "");
        write(&low.join("var/cache/fresh"), "old version");
        write(&low.join("var/cache/sub/deep"), "");
        write(&low.join("var/other"), "");
        // An upper directory inside the opaque one hides the lower directory of that name.
        write(&up.join("var/cache/sub/kept"), "");
        write(&low.join("var/cache/sub/kept"), "");
        let c = changes_with_lowers(&up, &[&low], EXCLUDES).unwrap();
        // The whiteout inside the opaque directory is kept (listed once): harmless if the
        // lower has no such entry, needed if it has.
        assert_eq!(
            c.deleted,
            vec![
                "/etc/issue",
                "/tmpdir",
                "/var/cache/old1",
                "/var/cache/sub/deep",
                "/var/cache/gone-anyway"
            ]
        );
        assert!(c
            .added_or_modified
            .contains(&"var/cache/sub/kept".to_string()));
        assert!(!c.deleted.contains(&"/var/cache".to_string()));
        assert!(!c.deleted.contains(&"/var/other".to_string()));
    }

    #[test]
    fn empty_upper_and_missing_dir() {
        let t = tempfile::tempdir().unwrap();
        assert!(changes(t.path(), &[]).unwrap().is_empty());
        let e = changes(&t.path().join("nope"), &[]).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read container layer "),
            "{e}"
        );
        assert!(e.to_string().contains("/nope: "), "{e}");
    }

    #[test]
    fn exclude_is_component_wise() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("devices/x"), "");
        write(&t.path().join("dev/null"), "");
        let c = changes(t.path(), &["/dev"]).unwrap();
        assert_eq!(c.added_or_modified, vec!["devices", "devices/x"]);
    }

    #[test]
    fn deleted_files_validation() {
        assert_eq!(
            parse_deleted_files(include_bytes!("../tests/fixtures/deleted.files")).unwrap(),
            vec!["/etc/motd"]
        );
        assert!(parse_deleted_files(b"null").unwrap().is_empty());
        let cases: [(&[u8], &str); 6] = [
            (b"{\"a\":1}", "unexpected value at line 1 column 0"),
            (b"[\"/a\",", "invalid JSON at line 1"),
            (b"[\"etc/motd\"]", "\"etc/motd\" is not an absolute path"),
            (b"[\"/etc/../../host\"]", "contains a '..' component"),
            (b"[\"/\"]", "names the root directory"),
            (b"[\"/./\"]", "names the root directory"),
        ];
        for (bytes, want) in cases {
            let e = parse_deleted_files(bytes).unwrap_err().to_string();
            assert!(e.starts_with("deleted.files: "), "{e}");
            assert!(e.contains(want), "{want} / {e}");
            assert!(e.contains("--ignore-rootfs"), "{e}");
        }
        let list = vec!["/a".to_string(), "/b c".to_string()];
        assert_eq!(
            parse_deleted_files(&deleted_files_json(&list)).unwrap(),
            list
        );
    }
}
