//! Resolution of untrusted paths inside a root directory, with chroot-like
//! semantics: `..` never climbs above the root and symlinks (absolute or
//! relative) are interpreted as if the root were `/`.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::TarError;

/// Most symlinks followed while resolving one path before giving up.
pub(crate) const MAX_SYMLINKS: u32 = 255;

/// Why [`resolve_in_root`] failed.
pub(crate) enum ResolveError {
    Loop,
    Io(PathBuf, io::Error),
}

/// Resolves the `/`-separated components of `path` inside `root`.
///
/// Every component is looked up with `lstat`; symlinks are replaced by their
/// target (absolute targets restart at `root`), `..` pops one resolved
/// component (never above `root`). Components that do not exist are kept
/// as they are. If `follow_last` is false the final component is not
/// resolved even if it is a symlink. Returns the resolved components, none of
/// which is `.`, `..` or empty.
pub(crate) fn resolve_in_root(
    root: &Path,
    path: &[u8],
    follow_last: bool,
) -> Result<Vec<Vec<u8>>, ResolveError> {
    let mut todo: VecDeque<Vec<u8>> = split(path).map(<[u8]>::to_vec).collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut current = root.to_path_buf();
    let mut links = 0u32;
    while let Some(comp) = todo.pop_front() {
        if comp == b".." {
            if out.pop().is_some() {
                current.pop();
            }
            continue;
        }
        let is_last = todo.is_empty();
        current.push(OsStr::from_bytes(&comp));
        out.push(comp);
        if is_last && !follow_last {
            break;
        }
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(m) => m,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
            {
                continue;
            }
            Err(e) => return Err(ResolveError::Io(current, e)),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(ResolveError::Loop);
        }
        let target =
            std::fs::read_link(&current).map_err(|e| ResolveError::Io(current.clone(), e))?;
        let target = target.as_os_str().as_bytes();
        out.pop();
        current.pop();
        if target.starts_with(b"/") {
            out.clear();
            current = root.to_path_buf();
        }
        for c in split(target).rev() {
            todo.push_front(c.to_vec());
        }
    }
    Ok(out)
}

/// Splits on `/`, dropping empty and `.` components (keeps `..`).
pub(crate) fn split(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Resolves `unsafe_path` to a path guaranteed to be inside `root`, like Go's
/// `securejoin.SecureJoin`: the path may be absolute or relative and contain
/// `..` and symlinks existing under `root`; `..` never climbs above `root` and
/// symlink targets are interpreted relative to `root` (absolute ones too).
/// Components that do not exist are appended lexically. The returned path is
/// `root` joined with the resolved components (at the time of the call: a
/// concurrent writer under `root` can still race with its use).
pub fn secure_join(root: &Path, unsafe_path: &str) -> Result<PathBuf, TarError> {
    match resolve_in_root(root, unsafe_path.as_bytes(), true) {
        Ok(comps) => {
            let mut p = root.to_path_buf();
            for c in comps {
                p.push(OsStr::from_bytes(&c));
            }
            Ok(p)
        }
        Err(ResolveError::Loop) => Err(TarError::SymlinkLoop {
            root: root.to_path_buf(),
            path: unsafe_path.to_string(),
        }),
        Err(ResolveError::Io(p, e)) => Err(TarError::io(
            format!("resolving {unsafe_path:?} inside {root:?}: inspecting {p:?}"),
            e,
        )),
    }
}
