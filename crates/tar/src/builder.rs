//! Streaming creation of tar archives in the layout Go's `archive/tar` (and so
//! Podman) produces: relative names without a `./` prefix, directories with a
//! trailing `/`, PAX records for long names and `SCHILY.xattr.*` xattrs.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tar::{EntryType, Header};

use crate::TarError;

/// Length of the ustar name field.
const NAME_LEN: usize = 100;

/// Writes a tar stream into `W`. Finish it with [`TarBuilder::finish`] (or
/// [`TarBuilder::into_inner`]) to write the end-of-archive marker.
pub struct TarBuilder<W: Write> {
    inner: tar::Builder<W>,
}

impl<W: Write> fmt::Debug for TarBuilder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarBuilder").finish_non_exhaustive()
    }
}

/// A reader that fails if its source ends before `remaining` bytes.
struct Exact<R> {
    inner: io::Take<R>,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("source ended {} bytes early", self.remaining),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Xattrs worth archiving: everything except SELinux labels (set by the
/// runtime), `system.*` (ACLs, handled elsewhere by other tools) and
/// overlayfs's private ones (`trusted.overlay.*`, `user.overlay.*`: file
/// handles and redirects that mean nothing outside the overlay they came from,
/// and binary values the `tar` crate cannot read back when they hold a newline).
fn keep_xattr(name: &[u8]) -> bool {
    !name.starts_with(b"system.")
        && name != b"security.selinux"
        && !name.starts_with(b"trusted.overlay.")
        && !name.starts_with(b"user.overlay.")
}

/// Reads the xattrs of `path` without following a final symlink.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>, TarError> {
    let ctx = || format!("reading xattrs of {path:?}");
    let mut out = Vec::new();
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(0) | Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Ok(n) => n,
        Err(e) => return Err(TarError::io(ctx(), e.into())),
    };
    let mut names = vec![0u8; size];
    let n =
        rustix::fs::llistxattr(path, &mut names[..]).map_err(|e| TarError::io(ctx(), e.into()))?;
    names.truncate(n);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !keep_xattr(name) {
            continue;
        }
        let Ok(key) = std::str::from_utf8(name) else {
            continue; // PAX keys must be UTF-8
        };
        let os = OsStr::from_bytes(name);
        let len = match rustix::fs::lgetxattr_query(path, os) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(TarError::io(ctx(), e.into())),
        };
        let mut value = vec![0u8; len];
        let n = rustix::fs::lgetxattr(path, os, &mut value[..])
            .map_err(|e| TarError::io(ctx(), e.into()))?;
        value.truncate(n);
        out.push((key.to_string(), value));
    }
    out.sort();
    Ok(out)
}

fn header_from(meta: &Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_size(0);
    h
}

fn plain_header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(now());
    h.set_size(size);
    h
}

fn join_name(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        name.to_vec()
    } else {
        let mut v = prefix.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

impl<W: Write> TarBuilder<W> {
    /// Starts an archive written into `w`.
    pub fn new(w: W) -> Self {
        TarBuilder {
            inner: tar::Builder::new(w),
        }
    }

    /// Writes one entry: PAX records when needed, then header and data.
    fn put(
        &mut self,
        name: &[u8],
        mut h: Header,
        link: Option<&[u8]>,
        xattrs: &[(String, Vec<u8>)],
        data: impl Read,
    ) -> Result<(), TarError> {
        let shown = String::from_utf8_lossy(name).into_owned();
        let ctx = || format!("adding {shown:?} to the archive");
        if name.is_empty() || name.contains(&0) || link.is_some_and(|l| l.contains(&0)) {
            return Err(TarError::InvalidName {
                entry: shown.clone(),
                reason: "names and link targets must be non-empty and contain no NUL byte",
            });
        }
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if name.len() > NAME_LEN {
            pax.push(("path".to_string(), name.to_vec()));
        }
        if let Some(l) = link {
            if l.len() > NAME_LEN {
                pax.push(("linkpath".to_string(), l.to_vec()));
            }
        }
        for (k, v) in xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        if !pax.is_empty() {
            self.inner
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| TarError::io(ctx(), e))?;
        }
        {
            let old = h.as_old_mut();
            let n = name.len().min(NAME_LEN);
            old.name = [0; NAME_LEN];
            old.name[..n].copy_from_slice(&name[..n]);
            if let Some(l) = link {
                let n = l.len().min(NAME_LEN);
                old.linkname = [0; NAME_LEN];
                old.linkname[..n].copy_from_slice(&l[..n]);
            }
        }
        h.set_cksum();
        self.inner
            .append(&h, data)
            .map_err(|e| TarError::io(ctx(), e))
    }

    /// Adds the regular file at `path` as `name`, with mode, mtime, uid, gid
    /// and xattrs from disk. The file is streamed, never held in memory.
    pub fn append_file(&mut self, name: &str, path: &Path) -> Result<(), TarError> {
        self.file_entry(name.as_bytes(), path)
    }

    fn file_entry(&mut self, name: &[u8], path: &Path) -> Result<(), TarError> {
        let file = File::open(path).map_err(|e| TarError::io(format!("opening {path:?}"), e))?;
        let meta = file
            .metadata()
            .map_err(|e| TarError::io(format!("inspecting {path:?}"), e))?;
        if !meta.is_file() {
            return Err(TarError::io(
                format!("adding {path:?} to the archive"),
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let xattrs = read_xattrs(path)?;
        let mut h = header_from(&meta, EntryType::Regular);
        h.set_size(meta.len());
        let data = Exact {
            inner: io::BufReader::with_capacity(1 << 20, file).take(meta.len()),
            remaining: meta.len(),
        };
        self.put(name, h, None, &xattrs, data).map_err(|e| match e {
            TarError::Io { source, .. } => {
                TarError::io(format!("adding {path:?} to the archive"), source)
            }
            other => other,
        })
    }

    /// Adds a regular file with the given contents (uid/gid 0, mtime now).
    pub fn append_bytes(&mut self, name: &str, data: &[u8], mode: u32) -> Result<(), TarError> {
        let h = plain_header(EntryType::Regular, mode, data.len() as u64);
        self.put(name.as_bytes(), h, None, &[], data)
    }

    /// Adds a directory entry (stored as `name/`; uid/gid 0, mtime now).
    pub fn append_dir(&mut self, name: &str, mode: u32) -> Result<(), TarError> {
        let h = plain_header(EntryType::Directory, mode, 0);
        let name = format!("{}/", name.trim_end_matches('/'));
        self.put(name.as_bytes(), h, None, &[], io::empty())
    }

    /// Adds a symlink entry `name -> target` (uid/gid 0, mtime now).
    pub fn append_symlink(&mut self, name: &str, target: &str) -> Result<(), TarError> {
        let h = plain_header(EntryType::Symlink, 0o777, 0);
        self.put(
            name.as_bytes(),
            h,
            Some(target.as_bytes()),
            &[],
            io::empty(),
        )
    }

    /// Streams `size` bytes of `reader` as a regular file (uid/gid 0, mtime
    /// now). Fails if the reader ends early; extra bytes are not read. After
    /// such an error the archive is unusable.
    pub fn append_reader<R: Read>(
        &mut self,
        name: &str,
        size: u64,
        reader: R,
        mode: u32,
    ) -> Result<(), TarError> {
        let h = plain_header(EntryType::Regular, mode, size);
        let data = Exact {
            inner: reader.take(size),
            remaining: size,
        };
        self.put(name.as_bytes(), h, None, &[], data)
    }

    /// Adds the tree under `dir` recursively, with names under `prefix`
    /// (`""` = at the archive root, without an entry for `dir` itself;
    /// otherwise `dir` is stored as `prefix/`). Directories, regular files,
    /// symlinks (as symlinks), fifos and device nodes are stored with their
    /// metadata and xattrs, in sorted name order; sockets are skipped. Hard
    /// links are not detected: each name is stored as a separate file.
    pub fn append_tree(&mut self, prefix: &str, dir: &Path) -> Result<(), TarError> {
        let prefix = prefix.trim_matches('/').as_bytes().to_vec();
        if !prefix.is_empty() {
            let meta = fs::symlink_metadata(dir)
                .map_err(|e| TarError::io(format!("inspecting {dir:?}"), e))?;
            self.node(&prefix, dir, &meta)?;
        } else {
            self.tree(&prefix, dir)?;
        }
        Ok(())
    }

    /// Adds what is under `dir` recursively with names under `prefix`, like
    /// [`TarBuilder::append_tree`] but without an entry for `dir` itself (for a
    /// directory whose entry was written earlier).
    pub fn append_tree_contents(&mut self, prefix: &str, dir: &Path) -> Result<(), TarError> {
        let prefix = prefix.trim_matches('/').as_bytes().to_vec();
        self.tree(&prefix, dir)
    }

    fn tree(&mut self, prefix: &[u8], dir: &Path) -> Result<(), TarError> {
        let mut names = Vec::new();
        for ent in fs::read_dir(dir).map_err(|e| TarError::io(format!("reading {dir:?}"), e))? {
            let ent = ent.map_err(|e| TarError::io(format!("reading {dir:?}"), e))?;
            names.push(ent.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            let path = dir.join(&n);
            let meta = fs::symlink_metadata(&path)
                .map_err(|e| TarError::io(format!("inspecting {path:?}"), e))?;
            self.node(&join_name(prefix, n.as_bytes()), &path, &meta)?;
        }
        Ok(())
    }

    fn node(&mut self, name: &[u8], path: &Path, meta: &Metadata) -> Result<(), TarError> {
        let ft = meta.file_type();
        if ft.is_dir() {
            let xattrs = read_xattrs(path)?;
            let h = header_from(meta, EntryType::Directory);
            let mut dname = name.to_vec();
            dname.push(b'/');
            self.put(&dname, h, None, &xattrs, io::empty())?;
            self.tree(name, path)
        } else if ft.is_file() {
            self.file_entry(name, path)
        } else if ft.is_symlink() {
            let target = fs::read_link(path)
                .map_err(|e| TarError::io(format!("reading symlink {path:?}"), e))?;
            let xattrs = read_xattrs(path)?;
            let h = header_from(meta, EntryType::Symlink);
            self.put(
                name,
                h,
                Some(target.as_os_str().as_bytes()),
                &xattrs,
                io::empty(),
            )
        } else if ft.is_socket() {
            Ok(())
        } else {
            let kind = if ft.is_fifo() {
                EntryType::Fifo
            } else if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            let mut h = header_from(meta, kind);
            let rdev = meta.rdev();
            if kind != EntryType::Fifo {
                let major = rustix::fs::major(rdev);
                let minor = rustix::fs::minor(rdev);
                h.set_device_major(major)
                    .and_then(|()| h.set_device_minor(minor))
                    .map_err(|e| TarError::io(format!("adding {path:?} to the archive"), e))?;
            }
            let xattrs = read_xattrs(path)?;
            self.put(name, h, None, &xattrs, io::empty())
        }
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn into_inner(self) -> Result<W, TarError> {
        self.inner
            .into_inner()
            .map_err(|e| TarError::io("finishing the archive", e))
    }

    /// Same as [`TarBuilder::into_inner`].
    pub fn finish(self) -> Result<W, TarError> {
        self.into_inner()
    }

    /// The underlying writer (e.g. to flush it).
    pub fn get_mut(&mut self) -> &mut W {
        self.inner.get_mut()
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::path::Path;

    /// The xattrs [`super::TarBuilder`] would archive for `path`.
    pub(crate) fn xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>, crate::TarError> {
        super::read_xattrs(path)
    }
}
