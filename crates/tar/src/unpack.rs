//! Safe extraction of untrusted tar streams.
//!
//! Every entry is created relative to directory file descriptors obtained by
//! walking the entry's parent components one by one with `O_NOFOLLOW`, so a
//! symlink (made by the archive or already present) is never traversed by the
//! kernel. In `in_place` mode the parent path is first resolved inside the
//! destination with chroot semantics ([`crate::secure_join`]), so existing
//! symlinks are honoured without ever leaving the destination. The final
//! component is never followed: whatever exists there is replaced.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags, CWD};
use rustix::io::Errno;
use tar::EntryType;

use crate::error::lossy;
use crate::guard::Guard;
use crate::resolve::{resolve_in_root, ResolveError};
use crate::TarError;

/// Size of the copy buffer for regular file contents.
const COPY_BUF: usize = 1 << 20;

/// Whiteout prefix used by image layers.
const WH_PREFIX: &[u8] = b".wh.";
/// Prefix of whiteout metadata entries (opaque marker, aufs internals).
const WH_META_PREFIX: &[u8] = b".wh..wh.";
/// Marks its directory as opaque.
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
/// xattr that marks an overlayfs directory as opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How [`unpack`] treats the archive. `Default` is the strictest setting.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Image layers: `.wh.NAME` becomes an overlay whiteout (character device
    /// 0/0 named NAME) and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on
    /// its directory; other `.wh..wh.*` entries are skipped, and overlay
    /// xattrs (`trusted.overlay.*`, `user.overlay.*`) carried by the archive
    /// are ignored. When false, `.wh.` entries are ordinary files.
    pub overlay_whiteouts: bool,
    /// Applying onto an existing tree: symlinks in parent paths are resolved
    /// inside `dest` (chroot semantics). When false, an entry whose parent
    /// path contains a symlink is an error.
    pub in_place: bool,
    /// Allow character/block devices and fifos.
    pub allow_devices: bool,
    /// chown entries to their uid/gid and keep setuid/setgid bits.
    pub preserve_ownership: bool,
    /// Maximum number of entries (of any type).
    pub max_entries: Option<u64>,
    /// Maximum total number of regular-file bytes written.
    pub max_bytes: Option<u64>,
}

/// What [`unpack`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries processed (including skipped whiteout metadata).
    pub entries: u64,
    /// Regular-file bytes written.
    pub bytes: u64,
}

/// Unpacks a tar stream (already decompressed) into `dest`, which must exist.
///
/// The whole stream is consumed, up to its end (so that a compressed stream's
/// checksum is verified); a stream that ends before the end-of-archive marker
/// is an error. On error, entries extracted so far are left in place.
pub fn unpack<R: Read>(r: R, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, TarError> {
    let root = rustix::fs::openat(
        CWD,
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| TarError::io(format!("opening target directory {dest:?}"), e.into()))?;
    let eof = Cell::new(false);
    let mut archive = tar::Archive::new(Guard::new(r, &eof));
    let mut u = Unpacker {
        root: Rc::new(root),
        root_path: dest.to_path_buf(),
        opts,
        stats: UnpackStats::default(),
        files: HashSet::new(),
        dirs: Vec::new(),
        dir_index: HashMap::new(),
        cache: None,
        buf: vec![0u8; COPY_BUF],
        last: None,
    };
    {
        let entries = archive
            .entries()
            .map_err(|e| TarError::io("reading the archive", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| u.stream_error(e))?;
            u.entry(&mut entry)?;
        }
    }
    if eof.get() {
        return Err(TarError::Truncated {
            location: format!("{} (no end-of-archive marker)", u.location()),
        });
    }
    // Drain the rest (tar padding, compressed trailer) so that corruption or
    // truncation of the compressed stream is noticed.
    let mut rest = archive.into_inner().into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| u.stream_error(e))?;
    u.finish_dirs();
    Ok(u.stats)
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: rustix::fs::Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Unpacker<'o> {
    root: Rc<OwnedFd>,
    root_path: PathBuf,
    opts: &'o UnpackOptions,
    stats: UnpackStats,
    /// Normalised names of regular files extracted so far (hard link targets).
    files: HashSet<Vec<u8>>,
    /// Directories whose mtime is set at the end: resolved components + time.
    dirs: Vec<(Vec<Vec<u8>>, rustix::fs::Timespec)>,
    dir_index: HashMap<Vec<Vec<u8>>, usize>,
    /// Last parent directory opened: resolved components and its fd.
    cache: Option<(Vec<Vec<u8>>, Rc<OwnedFd>)>,
    buf: Vec<u8>,
    /// Name of the entry being (or last) processed, for messages.
    last: Option<String>,
}

fn errno(e: Errno) -> io::Error {
    e.into()
}

fn join(comps: &[Vec<u8>]) -> String {
    let v: Vec<&[u8]> = comps.iter().map(Vec::as_slice).collect();
    lossy(&v.join(&b'/'))
}

/// Normalises an entry name: rejects empty names, NUL bytes, absolute paths
/// and `..`; drops `.` and empty components. An empty result is the target
/// directory itself.
fn normalize(raw: &[u8]) -> Result<Vec<Vec<u8>>, TarError> {
    let entry = lossy(raw);
    if raw.is_empty() {
        return Err(TarError::InvalidName {
            entry,
            reason: "the name is empty",
        });
    }
    if raw.contains(&0) {
        return Err(TarError::InvalidName {
            entry,
            reason: "the name contains a NUL byte",
        });
    }
    if raw.starts_with(b"/") {
        return Err(TarError::AbsolutePath { entry });
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(TarError::Escape { entry }),
            _ => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn timespec(secs: i64, nanos: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    }
}

/// Parses a PAX time like `1700000000.123456789` or `-12.5`.
fn parse_pax_time(v: &[u8]) -> Option<rustix::fs::Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    if neg {
        if nanos > 0 {
            Some(timespec(-secs - 1, 1_000_000_000 - nanos))
        } else {
            Some(timespec(-secs, 0))
        }
    } else {
        Some(timespec(secs, nanos))
    }
}

/// A numeric header field; an all-blank field counts as 0 (as Go reads it).
fn numeric(raw: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(e),
    }
}

/// overlayfs metadata xattrs. In image layers (`overlay_whiteouts`) they are
/// dropped: overlay metadata must only come from whiteout conversion, never
/// from the archive (a crafted `redirect`/`metacopy`/`origin` would steer
/// overlayfs lookups).
fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn parse_pax_id(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

impl Unpacker<'_> {
    fn entry_name(&self) -> String {
        self.last.clone().unwrap_or_default()
    }

    fn location(&self) -> String {
        match &self.last {
            Some(name) => format!("after entry {name:?}"),
            None => "before the first entry".to_string(),
        }
    }

    /// Maps an error from reading headers / skipping data.
    fn stream_error(&self, e: io::Error) -> TarError {
        let msg = e.to_string();
        if e.kind() == io::ErrorKind::UnexpectedEof
            || msg.contains("unexpected EOF")
            || msg.contains("failed to read entire block")
        {
            TarError::Truncated {
                location: self.location(),
            }
        } else {
            TarError::Corrupt {
                location: self.location(),
                source: e,
            }
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> TarError {
        TarError::InvalidHeader {
            entry: self.entry_name(),
            reason: reason.into(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), TarError> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let name = lossy(&raw);
        self.last = Some(name.clone());
        self.stats.entries += 1;
        if let Some(limit) = self.opts.max_entries {
            if self.stats.entries > limit {
                return Err(TarError::TooManyEntries { limit, entry: name });
            }
        }
        let comps = normalize(&raw)?;
        let meta = self.meta(entry)?;

        if self.opts.overlay_whiteouts {
            if let Some(base) = comps.last() {
                if base.starts_with(WH_PREFIX) {
                    return self.whiteout(&comps, &meta);
                }
            }
        }

        let is_dir = kind == EntryType::Directory
            || ((kind == EntryType::Regular || kind.as_byte() == 0) && raw.ends_with(b"/"));
        if is_dir {
            return self.directory(&comps, &meta);
        }
        if comps.is_empty() {
            return Err(TarError::InvalidName {
                entry: name,
                reason: "a non-directory cannot replace the target directory",
            });
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(entry, &comps, &meta)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.symlink(&comps, &target, &meta)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hardlink(&comps, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let what = match kind {
                    EntryType::Char => "a character device",
                    EntryType::Block => "a block device",
                    _ => "a fifo",
                };
                if !self.opts.allow_devices {
                    return Err(TarError::DeviceNotAllowed {
                        entry: name,
                        kind: what,
                    });
                }
                let major = entry
                    .header()
                    .device_major()
                    .map_err(|e| self.invalid(format!("device major: {e}")))?
                    .unwrap_or(0);
                let minor = entry
                    .header()
                    .device_minor()
                    .map_err(|e| self.invalid(format!("device minor: {e}")))?
                    .unwrap_or(0);
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.node(&comps, ft, rustix::fs::makedev(major, minor), &meta)
            }
            other => Err(TarError::UnsupportedType {
                entry: name,
                kind: format!("type flag {:?}", char::from(other.as_byte())),
            }),
        }
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, TarError> {
        let h = entry.header();
        let mut mode = h.mode().map_err(|e| self.invalid(format!("mode: {e}")))? & 0o7777;
        if !self.opts.preserve_ownership {
            mode &= !0o6000;
        }
        let old = h.as_old();
        let mut uid = numeric(&old.uid, h.uid()).map_err(|e| self.invalid(format!("uid: {e}")))?;
        let mut gid = numeric(&old.gid, h.gid()).map_err(|e| self.invalid(format!("gid: {e}")))?;
        let secs =
            numeric(&old.mtime, h.mtime()).map_err(|e| self.invalid(format!("mtime: {e}")))?;
        let mut mtime = timespec(i64::try_from(secs).unwrap_or(i64::MAX), 0);
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|e| self.invalid(format!("pax records: {e}")))?;
        if let Some(pax) = pax {
            for rec in pax {
                let rec = rec.map_err(|e| self.invalid(format!("pax record: {e}")))?;
                let key = rec.key_bytes();
                let value = rec.value_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if name.is_empty() || name.contains(&0) {
                        return Err(self.invalid(format!("bad xattr name {:?}", lossy(name))));
                    }
                    if self.opts.overlay_whiteouts && is_overlay_xattr(name) {
                        continue;
                    }
                    xattrs.push((name.to_vec(), value.to_vec()));
                } else if key == b"mtime" {
                    mtime = parse_pax_time(value)
                        .ok_or_else(|| self.invalid(format!("pax mtime {:?}", lossy(value))))?;
                } else if key == b"uid" {
                    uid = parse_pax_id(value)
                        .ok_or_else(|| self.invalid(format!("pax uid {:?}", lossy(value))))?;
                } else if key == b"gid" {
                    gid = parse_pax_id(value)
                        .ok_or_else(|| self.invalid(format!("pax gid {:?}", lossy(value))))?;
                }
            }
        }
        // -1 means "unchanged" to chown(2); refuse it and anything wider.
        let uid = u32::try_from(uid)
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| self.invalid(format!("uid {uid} out of range")))?;
        let gid = u32::try_from(gid)
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| self.invalid(format!("gid {gid} out of range")))?;
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// Resolves (in `in_place` mode) and opens the directory `parent`,
    /// creating missing components (mode 0755) when `create`. Returns the
    /// resolved components and the directory fd.
    fn open_parent(
        &mut self,
        parent: &[Vec<u8>],
        create: bool,
    ) -> Result<(Vec<Vec<u8>>, Rc<OwnedFd>), TarError> {
        let resolved = if self.opts.in_place && !parent.is_empty() {
            let joined: Vec<&[u8]> = parent.iter().map(Vec::as_slice).collect();
            match resolve_in_root(&self.root_path, &joined.join(&b'/'), true) {
                Ok(r) => r,
                Err(ResolveError::Loop) => {
                    return Err(TarError::SymlinkLoop {
                        root: self.root_path.clone(),
                        path: self.entry_name(),
                    })
                }
                Err(ResolveError::Io(p, e)) => {
                    return Err(TarError::io(
                        format!("archive entry {:?}: inspecting {p:?}", self.entry_name()),
                        e,
                    ))
                }
            }
        } else {
            parent.to_vec()
        };
        if let Some((key, fd)) = &self.cache {
            if *key == resolved {
                return Ok((resolved, Rc::clone(fd)));
            }
        }
        let mut cur = Rc::clone(&self.root);
        for (i, comp) in resolved.iter().enumerate() {
            let name = OsStr::from_bytes(comp);
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = match rustix::fs::openat(&*cur, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&*cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(TarError::io(
                                format!(
                                    "archive entry {:?}: creating directory {:?}",
                                    self.entry_name(),
                                    join(&resolved[..=i])
                                ),
                                errno(e),
                            ))
                        }
                    }
                    rustix::fs::openat(&*cur, name, flags, Mode::empty())
                        .map_err(|e| self.walk_error(&cur, &resolved[..=i], e))?
                }
                Err(e) => return Err(self.walk_error(&cur, &resolved[..=i], e)),
            };
            cur = Rc::new(fd);
        }
        self.cache = Some((resolved.clone(), Rc::clone(&cur)));
        Ok((resolved, cur))
    }

    fn walk_error(&self, dir: &OwnedFd, comps: &[Vec<u8>], e: Errno) -> TarError {
        let entry = self.entry_name();
        let rel = join(comps);
        if matches!(e, Errno::LOOP | Errno::NOTDIR | Errno::NOENT) {
            let last = comps.last().map(Vec::as_slice).unwrap_or(b".");
            match rustix::fs::statat(dir, OsStr::from_bytes(last), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    return TarError::ThroughSymlink { entry, link: rel }
                }
                Ok(_) if e != Errno::NOENT => {
                    return TarError::NotADirectory { entry, parent: rel }
                }
                _ => {}
            }
        }
        TarError::io(
            format!("archive entry {entry:?}: opening directory {rel:?}"),
            errno(e),
        )
    }

    /// Removes whatever exists at `name` in `dir`, except a directory when
    /// `keep_dir`. Returns true if a directory was kept.
    fn clear(
        &mut self,
        dir: &OwnedFd,
        resolved_parent: &[Vec<u8>],
        name: &[u8],
        keep_dir: bool,
    ) -> Result<bool, TarError> {
        let os = OsStr::from_bytes(name);
        let st = match rustix::fs::statat(dir, os, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => {
                return Err(TarError::io(
                    format!(
                        "archive entry {:?}: inspecting existing file",
                        self.entry_name()
                    ),
                    errno(e),
                ))
            }
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            // The parent components were just walked without following
            // symlinks, and remove_dir_all never follows symlinks.
            let mut path = self.root_path.clone();
            for c in resolved_parent {
                path.push(OsStr::from_bytes(c));
            }
            path.push(os);
            self.cache = None;
            std::fs::remove_dir_all(&path).map_err(|e| {
                TarError::io(
                    format!(
                        "archive entry {:?}: removing existing directory",
                        self.entry_name()
                    ),
                    e,
                )
            })?;
        } else {
            rustix::fs::unlinkat(dir, os, AtFlags::empty()).map_err(|e| {
                TarError::io(
                    format!(
                        "archive entry {:?}: removing existing file",
                        self.entry_name()
                    ),
                    errno(e),
                )
            })?;
        }
        Ok(false)
    }

    fn key(comps: &[Vec<u8>]) -> Vec<u8> {
        let v: Vec<&[u8]> = comps.iter().map(Vec::as_slice).collect();
        v.join(&b'/')
    }

    fn ctx(&self, what: &str) -> String {
        format!("archive entry {:?}: {what}", self.entry_name())
    }

    /// chown (if preserving), chmod, xattrs on an open fd.
    fn apply_fd(&self, fd: &OwnedFd, meta: &Meta) -> Result<(), TarError> {
        if self.opts.preserve_ownership {
            rustix::fs::fchown(
                fd,
                Some(Uid::from_raw_unchecked(meta.uid)),
                Some(Gid::from_raw_unchecked(meta.gid)),
            )
            .map_err(|e| TarError::io(self.ctx("changing owner"), errno(e)))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| TarError::io(self.ctx("changing mode"), errno(e)))?;
        for (k, v) in &meta.xattrs {
            match rustix::fs::fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty()) {
                Ok(()) | Err(Errno::NOTSUP) => {}
                Err(e) => {
                    return Err(TarError::io(
                        self.ctx(&format!("setting xattr {:?}", lossy(k))),
                        errno(e),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Metadata for entries that cannot be opened (symlinks, devices).
    fn apply_at(
        &self,
        dir: &OwnedFd,
        resolved_parent: &[Vec<u8>],
        name: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), TarError> {
        let os = OsStr::from_bytes(name);
        if self.opts.preserve_ownership {
            rustix::fs::chownat(
                dir,
                os,
                Some(Uid::from_raw_unchecked(meta.uid)),
                Some(Gid::from_raw_unchecked(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| TarError::io(self.ctx("changing owner"), errno(e)))?;
        }
        if chmod {
            rustix::fs::chmodat(dir, os, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|e| TarError::io(self.ctx("changing mode"), errno(e)))?;
        }
        if !meta.xattrs.is_empty() {
            let mut path = self.root_path.clone();
            for c in resolved_parent {
                path.push(OsStr::from_bytes(c));
            }
            path.push(os);
            for (k, v) in &meta.xattrs {
                match rustix::fs::lsetxattr(&path, OsStr::from_bytes(k), v, XattrFlags::empty()) {
                    Ok(()) | Err(Errno::NOTSUP) => {}
                    Err(e) => {
                        return Err(TarError::io(
                            self.ctx(&format!("setting xattr {:?}", lossy(k))),
                            errno(e),
                        ))
                    }
                }
            }
        }
        let ts = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        rustix::fs::utimensat(dir, os, &ts, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| TarError::io(self.ctx("setting times"), errno(e)))?;
        Ok(())
    }

    fn split_last(comps: &[Vec<u8>]) -> (&[Vec<u8>], &[u8]) {
        match comps.split_last() {
            Some((last, parent)) => (parent, last.as_slice()),
            None => (&[], b""),
        }
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        comps: &[Vec<u8>],
        meta: &Meta,
    ) -> Result<(), TarError> {
        // For GNU sparse files the tar crate reports the logical size (holes
        // included), which is what gets written and counted.
        let size = entry.size();
        if let Some(limit) = self.opts.max_bytes {
            if self.stats.bytes.saturating_add(size) > limit {
                return Err(TarError::TooLarge {
                    limit,
                    entry: self.entry_name(),
                });
            }
        }
        let (parent, name) = Self::split_last(comps);
        let (resolved, dir) = self.open_parent(parent, true)?;
        self.clear(&dir, &resolved, name, false)?;
        let fd = rustix::fs::openat(
            &*dir,
            OsStr::from_bytes(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| TarError::io(self.ctx("creating file"), errno(e)))?;
        let mut file = File::from(fd);
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(TarError::Truncated {
                        location: format!("in entry {:?}", self.entry_name()),
                    })
                }
                Err(e) => {
                    return Err(TarError::Corrupt {
                        location: format!("in entry {:?}", self.entry_name()),
                        source: e,
                    })
                }
            };
            if let Some(limit) = self.opts.max_bytes {
                if self.stats.bytes + written + n as u64 > limit {
                    return Err(TarError::TooLarge {
                        limit,
                        entry: self.entry_name(),
                    });
                }
            }
            let chunk = self.buf.get(..n).unwrap_or_default();
            file.write_all(chunk)
                .map_err(|e| TarError::io(self.ctx("writing file"), e))?;
            written += n as u64;
        }
        if written < size {
            return Err(TarError::Truncated {
                location: format!(
                    "in entry {:?} ({written} of {size} bytes)",
                    self.entry_name()
                ),
            });
        }
        self.stats.bytes += written;
        let fd = OwnedFd::from(file);
        self.apply_fd(&fd, meta)?;
        let ts = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        rustix::fs::futimens(&fd, &ts)
            .map_err(|e| TarError::io(self.ctx("setting times"), errno(e)))?;
        self.files.insert(Self::key(comps));
        Ok(())
    }

    fn directory(&mut self, comps: &[Vec<u8>], meta: &Meta) -> Result<(), TarError> {
        let (fd, resolved) = if comps.is_empty() {
            (Rc::clone(&self.root), Vec::new())
        } else {
            let (parent, name) = Self::split_last(comps);
            let (resolved_parent, dir) = self.open_parent(parent, true)?;
            let os = OsStr::from_bytes(name);
            if !self.clear(&dir, &resolved_parent, name, true)? {
                rustix::fs::mkdirat(&*dir, os, Mode::from_raw_mode(0o700))
                    .map_err(|e| TarError::io(self.ctx("creating directory"), errno(e)))?;
            }
            let fd = rustix::fs::openat(
                &*dir,
                os,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| TarError::io(self.ctx("opening directory"), errno(e)))?;
            let mut resolved = resolved_parent;
            resolved.push(name.to_vec());
            (Rc::new(fd), resolved)
        };
        self.apply_fd(&fd, meta)?;
        self.files.remove(&Self::key(comps));
        match self.dir_index.get(&resolved) {
            Some(&i) => {
                if let Some(slot) = self.dirs.get_mut(i) {
                    slot.1 = meta.mtime;
                }
            }
            None => {
                self.dir_index.insert(resolved.clone(), self.dirs.len());
                self.dirs.push((resolved, meta.mtime));
            }
        }
        Ok(())
    }

    fn symlink(&mut self, comps: &[Vec<u8>], target: &[u8], meta: &Meta) -> Result<(), TarError> {
        if target.is_empty() || target.contains(&0) {
            return Err(self.invalid("symlink target is empty or contains a NUL byte"));
        }
        let (parent, name) = Self::split_last(comps);
        let (resolved, dir) = self.open_parent(parent, true)?;
        self.clear(&dir, &resolved, name, false)?;
        rustix::fs::symlinkat(OsStr::from_bytes(target), &*dir, OsStr::from_bytes(name))
            .map_err(|e| TarError::io(self.ctx("creating symlink"), errno(e)))?;
        self.files.remove(&Self::key(comps));
        self.apply_at(&dir, &resolved, name, meta, false)
    }

    fn hardlink(&mut self, comps: &[Vec<u8>], target: &[u8]) -> Result<(), TarError> {
        let entry = self.entry_name();
        let shown = lossy(target);
        let tcomps = match normalize(target) {
            Ok(c) => c,
            Err(TarError::AbsolutePath { .. }) | Err(TarError::Escape { .. }) => {
                return Err(TarError::HardLinkOutside {
                    entry,
                    target: shown,
                })
            }
            Err(_) => {
                return Err(TarError::HardLinkTarget {
                    entry,
                    target: shown,
                })
            }
        };
        if tcomps.is_empty() || !self.files.contains(&Self::key(&tcomps)) {
            return Err(TarError::HardLinkTarget {
                entry,
                target: shown,
            });
        }
        let (tparent, tname) = Self::split_last(&tcomps);
        let (_, tdir) = match self.open_parent(tparent, false) {
            Ok(found) => found,
            Err(TarError::Io { .. }) => {
                return Err(TarError::HardLinkTarget {
                    entry,
                    target: shown,
                })
            }
            Err(e) => return Err(e),
        };
        let tos = OsStr::from_bytes(tname);
        match rustix::fs::statat(&*tdir, tos, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
            _ => {
                return Err(TarError::HardLinkTarget {
                    entry,
                    target: shown,
                })
            }
        }
        let (parent, name) = Self::split_last(comps);
        let (resolved, dir) = self.open_parent(parent, true)?;
        if tcomps.as_slice() == comps {
            return Ok(()); // a link to itself: nothing to do
        }
        self.clear(&dir, &resolved, name, false)?;
        rustix::fs::linkat(
            &*tdir,
            tos,
            &*dir,
            OsStr::from_bytes(name),
            AtFlags::empty(),
        )
        .map_err(|e| TarError::io(self.ctx(&format!("linking to {shown:?}")), errno(e)))?;
        self.files.insert(Self::key(comps));
        Ok(())
    }

    fn node(
        &mut self,
        comps: &[Vec<u8>],
        ft: FileType,
        dev: rustix::fs::Dev,
        meta: &Meta,
    ) -> Result<(), TarError> {
        let (parent, name) = Self::split_last(comps);
        let (resolved, dir) = self.open_parent(parent, true)?;
        self.clear(&dir, &resolved, name, false)?;
        rustix::fs::mknodat(
            &*dir,
            OsStr::from_bytes(name),
            ft,
            Mode::from_raw_mode(0o600),
            dev,
        )
        .map_err(|e| TarError::io(self.ctx("creating device node"), errno(e)))?;
        self.files.remove(&Self::key(comps));
        self.apply_at(&dir, &resolved, name, meta, true)
    }

    fn whiteout(&mut self, comps: &[Vec<u8>], meta: &Meta) -> Result<(), TarError> {
        let (parent, base) = Self::split_last(comps);
        if base == WH_OPAQUE {
            let (_, dir) = self.open_parent(parent, true)?;
            return rustix::fs::fsetxattr(&*dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| TarError::io(self.ctx("marking directory opaque"), errno(e)));
        }
        if base.starts_with(WH_META_PREFIX) {
            return Ok(()); // aufs metadata: meaningless for overlay
        }
        let target = base.get(WH_PREFIX.len()..).unwrap_or_default();
        if target.is_empty() || target == b"." || target == b".." {
            return Err(TarError::InvalidName {
                entry: self.entry_name(),
                reason: "whiteout without a valid target name",
            });
        }
        let (resolved, dir) = self.open_parent(parent, true)?;
        self.clear(&dir, &resolved, target, false)?;
        let os = OsStr::from_bytes(target);
        rustix::fs::mknodat(
            &*dir,
            os,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| TarError::io(self.ctx("creating whiteout"), errno(e)))?;
        let mut tcomps = parent.to_vec();
        tcomps.push(target.to_vec());
        self.files.remove(&Self::key(&tcomps));
        if self.opts.preserve_ownership {
            rustix::fs::chownat(
                &*dir,
                os,
                Some(Uid::from_raw_unchecked(meta.uid)),
                Some(Gid::from_raw_unchecked(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| TarError::io(self.ctx("changing owner of whiteout"), errno(e)))?;
        }
        Ok(())
    }

    /// Sets directory mtimes, deepest-last-created first, re-walking each path
    /// without following symlinks (a directory may have been replaced later).
    fn finish_dirs(&mut self) {
        for (comps, mtime) in self.dirs.iter().rev() {
            let mut cur: Option<OwnedFd> = None;
            let mut ok = true;
            for c in comps {
                let base = match &cur {
                    Some(fd) => fd.as_fd(),
                    None => self.root.as_fd(),
                };
                match rustix::fs::openat(
                    base,
                    OsStr::from_bytes(c),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => cur = Some(fd),
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                continue;
            }
            let ts = Timestamps {
                last_access: *mtime,
                last_modification: *mtime,
            };
            let fd = match &cur {
                Some(fd) => fd.as_fd(),
                None => self.root.as_fd(),
            };
            // Best effort: a failure here leaves a correct tree with a newer mtime.
            let _ = rustix::fs::futimens(fd, &ts);
        }
    }
}
