//! Streaming reader and writer of whole checkpoint archives, on top of `stasis-tar`.
//!
//! **Reading** is one pass over the tar stream: the stream is parsed (with the `tar` crate) to
//! catch `config.dump` and `spec.dump` in memory as they pass (at most [`MAX_HEAD_BYTES`] each),
//! while every byte is forwarded to [`stasis_tar::unpack`], running on a helper thread, which
//! extracts all entries safely under the staging directory. As soon as both head files are
//! known, `on_head` is called; if it (or anything else) fails, extraction stops and the staging
//! directory is emptied. An archive without `config.dump`, `spec.dump` or
//! `checkpoint/inventory.img` is refused.
//!
//! **Writing** puts `config.dump` and `spec.dump` first (so a reader can validate from the
//! head), then `network.status`, `stats-dump`, `artifacts/`, `checkpoint/…`, `rootfs-diff.tar`,
//! `deleted.files`, `devshm-checkpoint.tar`, `volumes/<name>.tar`, `ctr.log`, with Podman's
//! names. Podman accepts any order.

use crate::config::{parse_spec_dump, ContainerConfig};
use crate::names::*;
use crate::network::NetworkStatus;
use crate::rootfs_diff::{deleted_files_json, Changes};
use crate::ArchiveError;
use serde_json::Value;
use stasis_tar::{Compression, Compressor, TarBuilder, TarError, UnpackOptions};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Largest `config.dump` / `spec.dump` accepted.
pub const MAX_HEAD_BYTES: u64 = 16 << 20;
/// Bytes forwarded to the extraction thread per message.
const CHUNK: usize = 256 << 10;

/// Errors of the archive reader and writer; they name the archive and the entry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveIoError {
    /// Extraction or tar building failed.
    #[error("archive {archive}: {source}")]
    Tar {
        /// Archive label.
        archive: String,
        /// The stasis-tar error (names the entry).
        #[source]
        source: TarError,
    },
    /// The tar stream could not be parsed.
    #[error("archive {archive}: cannot read the tar stream: {source}; the archive is truncated or damaged")]
    Stream {
        /// Archive label.
        archive: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A head file is too large.
    #[error("archive {archive}: {entry} is {size} bytes, more than the {max} allowed; the archive is damaged or not a checkpoint")]
    HeadTooLarge {
        /// Archive label.
        archive: String,
        /// `config.dump` or `spec.dump`.
        entry: &'static str,
        /// Size in the header.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// A head file appears more than once.
    #[error("archive {archive}: {entry} appears more than once; the archive is damaged or forged")]
    Duplicate {
        /// Archive label.
        archive: String,
        /// Entry name.
        entry: &'static str,
    },
    /// A mandatory entry is missing.
    #[error("archive {archive} has no {entry}: not a complete checkpoint")]
    Missing {
        /// Archive label.
        archive: String,
        /// Entry name.
        entry: &'static str,
    },
    /// The staging directory could not be emptied after a failure.
    #[error("cannot clean staging directory {path}: {source}; remove it by hand")]
    Cleanup {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The extraction thread could not be started or died.
    #[error("archive {archive}: extraction thread failed: {reason}")]
    Thread {
        /// Archive label.
        archive: String,
        /// What happened.
        reason: String,
    },
    /// A volume name that cannot be an entry name.
    #[error("volume name {0:?} cannot be stored as volumes/<name>.tar; volume names must not contain '/' or be '.' or '..'")]
    BadVolumeName(String),
    /// A file to archive could not be read or a temp file written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// What [`read_archive`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveContents {
    /// Decoded `config.dump`.
    pub config: ContainerConfig,
    /// Decoded `spec.dump`.
    pub spec: Value,
    /// Entry names in archive order (normalized: no `./` prefix, no trailing `/`).
    pub entries: Vec<String>,
}

impl ArchiveContents {
    /// The archive has an entry of that name.
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e == name)
    }
}

// ------------------------------------------------------------------------------------------
// A bounded in-process pipe: the parser thread writes, the extraction thread reads.

struct ChanWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChanWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        match &self.tx {
            Some(tx) if tx.send(chunk).is_ok() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "extraction stopped",
            )),
        }
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

struct ChanReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct Tee<'a, R> {
    inner: R,
    out: &'a mut ChanWriter,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn normalize(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut s: &str = &s;
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    s.trim_end_matches('/').to_string()
}

fn empty_dir(path: &Path) -> Result<(), ArchiveIoError> {
    let err = |source| ArchiveIoError::Cleanup {
        path: path.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(path).map_err(err)? {
        let p = entry.map_err(err)?.path();
        let is_dir = fs::symlink_metadata(&p).map_err(err)?.is_dir();
        if is_dir {
            fs::remove_dir_all(&p).map_err(err)?;
        } else {
            fs::remove_file(&p).map_err(err)?;
        }
    }
    Ok(())
}

/// Decompresses (gzip, zstd or none, detected by magic) and reads a checkpoint archive; see
/// [`read_archive`].
pub fn read_compressed_archive<R: Read + Send + 'static>(
    reader: R,
    label: &str,
    staging: &Path,
    on_head: impl FnOnce(&ContainerConfig, &Value) -> Result<(), ArchiveError>,
) -> Result<(Compression, ArchiveContents), ArchiveError> {
    let (compression, stream) =
        stasis_tar::decompress(reader).map_err(|source| ArchiveIoError::Tar {
            archive: label.to_string(),
            source,
        })?;
    Ok((compression, read_archive(stream, label, staging, on_head)?))
}

/// Reads an (uncompressed) checkpoint tar stream in one pass, extracting it under `staging`
/// (an existing, empty directory). `label` names the archive in errors. `on_head` is called once
/// `config.dump` and `spec.dump` are both decoded; its error aborts the read. On any error the
/// staging directory is emptied.
pub fn read_archive<R: Read>(
    reader: R,
    label: &str,
    staging: &Path,
    on_head: impl FnOnce(&ContainerConfig, &Value) -> Result<(), ArchiveError>,
) -> Result<ArchiveContents, ArchiveError> {
    let (tx, rx) = sync_channel::<Vec<u8>>(8);
    let dest = staging.to_path_buf();
    let opts = UnpackOptions::default();
    let handle = std::thread::Builder::new()
        .name("stasis-unpack".into())
        .spawn(move || {
            let r = ChanReader {
                rx,
                cur: Vec::new(),
                pos: 0,
            };
            stasis_tar::unpack(r, &dest, &opts)
        })
        .map_err(|e| ArchiveIoError::Thread {
            archive: label.to_string(),
            reason: e.to_string(),
        })?;
    let mut writer = ChanWriter {
        tx: Some(tx),
        buf: Vec::with_capacity(CHUNK),
    };
    let parsed = parse_stream(reader, &mut writer, label, on_head);
    let parsed = match parsed {
        Ok(p) => writer.flush().map(|()| p).map_err(|source| {
            ArchiveError::from(ArchiveIoError::Stream {
                archive: label.to_string(),
                source,
            })
        }),
        Err(e) => {
            // Hand the extraction thread what was read, so that its account of a damaged
            // stream says where it ends (it names the last entry it saw).
            if matches!(e, ArchiveError::Archive(ArchiveIoError::Stream { .. })) {
                let _ = writer.flush();
            }
            Err(e)
        }
    };
    // Closing the pipe: the extraction thread sees the end of the stream (an error if the
    // archive was cut short by a failure above).
    writer.tx = None;
    let unpacked = handle.join();
    let result = match (parsed, unpacked) {
        (_, Err(_)) => Err(ArchiveIoError::Thread {
            archive: label.to_string(),
            reason: "panicked".into(),
        }
        .into()),
        // A failure of the extraction (e.g. an unsafe entry) explains a broken pipe.
        (Err(ArchiveError::Archive(ArchiveIoError::Stream { .. })), Ok(Err(source)))
        | (Ok(_), Ok(Err(source))) => Err(ArchiveIoError::Tar {
            archive: label.to_string(),
            source,
        }
        .into()),
        (Err(e), Ok(_)) => Err(e),
        (Ok(p), Ok(Ok(_))) => finish_read(p, label),
    };
    if result.is_err() {
        empty_dir(staging)?;
    }
    result
}

struct Parsed {
    head: Option<(ContainerConfig, Value)>,
    entries: Vec<String>,
}

fn finish_read(p: Parsed, label: &str) -> Result<ArchiveContents, ArchiveError> {
    let missing = |entry| {
        Err(ArchiveIoError::Missing {
            archive: label.to_string(),
            entry,
        }
        .into())
    };
    for name in [CONFIG_DUMP, SPEC_DUMP] {
        if !p.entries.iter().any(|e| e == name) {
            return missing(name);
        }
    }
    if !p.entries.iter().any(|e| e == CHECKPOINT_INVENTORY) {
        return missing(CHECKPOINT_INVENTORY);
    }
    let Some((config, spec)) = p.head else {
        return missing(CONFIG_DUMP);
    };
    Ok(ArchiveContents {
        config,
        spec,
        entries: p.entries,
    })
}

fn parse_stream<R: Read>(
    reader: R,
    writer: &mut ChanWriter,
    label: &str,
    on_head: impl FnOnce(&ContainerConfig, &Value) -> Result<(), ArchiveError>,
) -> Result<Parsed, ArchiveError> {
    let stream = |source| ArchiveIoError::Stream {
        archive: label.to_string(),
        source,
    };
    let mut tee = Tee {
        inner: reader,
        out: writer,
    };
    let mut config_bytes: Option<Vec<u8>> = None;
    let mut spec_bytes: Option<Vec<u8>> = None;
    let mut on_head = Some(on_head);
    let mut parsed = Parsed {
        head: None,
        entries: Vec::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut tee);
        for entry in archive.entries().map_err(stream)? {
            let mut entry = entry.map_err(stream)?;
            let name = normalize(&entry.path_bytes());
            let slot = match name.as_str() {
                CONFIG_DUMP => Some((CONFIG_DUMP, &mut config_bytes)),
                SPEC_DUMP => Some((SPEC_DUMP, &mut spec_bytes)),
                _ => None,
            };
            if let Some((entry_name, slot)) = slot {
                if slot.is_some() {
                    return Err(ArchiveIoError::Duplicate {
                        archive: label.to_string(),
                        entry: entry_name,
                    }
                    .into());
                }
                let size = entry.header().size().map_err(stream)?;
                if size > MAX_HEAD_BYTES {
                    return Err(ArchiveIoError::HeadTooLarge {
                        archive: label.to_string(),
                        entry: entry_name,
                        size,
                        max: MAX_HEAD_BYTES,
                    }
                    .into());
                }
                let mut bytes = Vec::with_capacity(size as usize);
                (&mut entry)
                    .take(MAX_HEAD_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(stream)?;
                *slot = Some(bytes);
            }
            parsed.entries.push(name);
            if parsed.head.is_none() {
                if let (Some(c), Some(s)) = (&config_bytes, &spec_bytes) {
                    let config = ContainerConfig::from_json(c)?;
                    let spec = parse_spec_dump(s)?;
                    if let Some(f) = on_head.take() {
                        f(&config, &spec)?;
                    }
                    parsed.head = Some((config, spec));
                }
            }
        }
    }
    // The tar parser stops at the end-of-archive marker: forward the rest (padding) too.
    io::copy(&mut tee, &mut io::sink()).map_err(stream)?;
    Ok(parsed)
}

// ------------------------------------------------------------------------------------------
// Writing

fn tar_err(label: &str) -> impl FnOnce(TarError) -> ArchiveError + '_ {
    move |source| {
        ArchiveIoError::Tar {
            archive: label.to_string(),
            source,
        }
        .into()
    }
}

/// Writes a checkpoint archive entry by entry, `config.dump` and `spec.dump` first. Call the
/// methods in the order they are declared (each is optional) and then [`ArchiveWriter::finish`].
///
/// `S` is where the tar stream goes: a [`Compressor`] for an ordinary export
/// ([`ArchiveWriter::new`]), or any writer that compresses by itself
/// ([`ArchiveWriter::with_sink`], e.g. a seekable zstd frame writer).
pub struct ArchiveWriter<S: Write> {
    tar: TarBuilder<S>,
    label: String,
    volumes_dir: bool,
    checkpoint_dir: bool,
}

impl<S: Write> std::fmt::Debug for ArchiveWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send + 'static> ArchiveWriter<Compressor<W>> {
    /// Starts an archive into `w` (`label` names it in errors) and writes `config.dump` and
    /// `spec.dump` (mode 0600, two-space indented JSON like Podman's).
    pub fn new(
        w: W,
        label: &str,
        compression: Compression,
        level: Option<i32>,
        threads: u32,
        config: &ContainerConfig,
        spec: &Value,
    ) -> Result<Self, ArchiveError> {
        let c = stasis_tar::compress(w, compression, level, threads).map_err(tar_err(label))?;
        ArchiveWriter::with_sink(c, label, config, spec)
    }

    /// Writes the end-of-archive marker and the compression trailer; returns the writer.
    pub fn finish(self) -> Result<W, ArchiveError> {
        let label = self.label.clone();
        let c = self.finish_tar()?;
        c.finish().map_err(tar_err(&label))
    }
}

impl<S: Write> ArchiveWriter<S> {
    /// Starts an archive into `sink`, which receives the plain tar stream, and writes
    /// `config.dump` and `spec.dump`.
    pub fn with_sink(
        sink: S,
        label: &str,
        config: &ContainerConfig,
        spec: &Value,
    ) -> Result<Self, ArchiveError> {
        let mut me = ArchiveWriter {
            tar: TarBuilder::new(sink),
            label: label.to_string(),
            volumes_dir: false,
            checkpoint_dir: false,
        };
        let config_json = config.to_json_pretty()?;
        let spec_json = serde_json::to_vec_pretty(spec).map_err(|e| ArchiveIoError::Io {
            context: format!("encoding {SPEC_DUMP}"),
            source: io::Error::other(e),
        })?;
        me.bytes(CONFIG_DUMP, &config_json, 0o600)?;
        me.bytes(SPEC_DUMP, &spec_json, 0o600)?;
        Ok(me)
    }

    /// The sink, to write whole entries of one's own between the methods' entries (the tar
    /// stream must stay block-aligned: header, data, padding to 512 bytes).
    pub fn sink_mut(&mut self) -> &mut S {
        self.tar.get_mut()
    }

    /// The `checkpoint/` directory entry, before entries written straight into the sink
    /// (memory pages streamed during the dump); [`ArchiveWriter::checkpoint_dir`] then adds
    /// only the directory's contents.
    pub fn checkpoint_dir_entry(&mut self, mode: u32) -> Result<(), ArchiveError> {
        if !self.checkpoint_dir {
            self.tar
                .append_dir(CHECKPOINT_DIR, mode)
                .map_err(tar_err(&self.label))?;
            self.checkpoint_dir = true;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker; returns the sink (not finished).
    pub fn finish_tar(self) -> Result<S, ArchiveError> {
        self.tar.finish().map_err(tar_err(&self.label))
    }

    fn bytes(&mut self, name: &str, data: &[u8], mode: u32) -> Result<(), ArchiveError> {
        self.tar
            .append_bytes(name, data, mode)
            .map_err(tar_err(&self.label))
    }

    /// `network.status` (mode 0600).
    pub fn network_status(&mut self, status: &NetworkStatus) -> Result<(), ArchiveError> {
        let json = crate::network::to_json_pretty(status)?;
        self.bytes(NETWORK_STATUS, &json, 0o600)
    }

    /// Adds the regular file at `path` as `name` (`stats-dump`, `rootfs-diff.tar`,
    /// `devshm-checkpoint.tar`, `ctr.log`, ...), streamed.
    pub fn file(&mut self, name: &str, path: &Path) -> Result<(), ArchiveError> {
        self.tar
            .append_file(name, path)
            .map_err(tar_err(&self.label))
    }

    /// The (empty) `artifacts/` directory Podman always lists.
    pub fn artifacts(&mut self) -> Result<(), ArchiveError> {
        self.tar
            .append_dir(ARTIFACTS_DIR, 0o755)
            .map_err(tar_err(&self.label))
    }

    /// The CRIU image directory, stored as `checkpoint/…`.
    pub fn checkpoint_dir(&mut self, dir: &Path) -> Result<(), ArchiveError> {
        if self.checkpoint_dir {
            return self
                .tar
                .append_tree_contents(CHECKPOINT_DIR, dir)
                .map_err(tar_err(&self.label));
        }
        self.checkpoint_dir = true;
        self.tar
            .append_tree(CHECKPOINT_DIR, dir)
            .map_err(tar_err(&self.label))
    }

    /// `deleted.files` (mode 0600); nothing is written for an empty list, like Podman.
    pub fn deleted_files(&mut self, deleted: &[String]) -> Result<(), ArchiveError> {
        if deleted.is_empty() {
            return Ok(());
        }
        self.bytes(DELETED_FILES, &deleted_files_json(deleted), 0o600)
    }

    /// `volumes/<name>.tar` from the prepared tar at `path` (adds `volumes/` before the first).
    pub fn volume_tar(&mut self, name: &str, path: &Path) -> Result<(), ArchiveError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ArchiveIoError::BadVolumeName(name.to_string()).into());
        }
        if !self.volumes_dir {
            self.tar
                .append_dir(VOLUMES_DIR, 0o755)
                .map_err(tar_err(&self.label))?;
            self.volumes_dir = true;
        }
        self.file(&volume_tar(name), path)
    }
}

/// The parts of an export, each optional except the head and the checkpoint directory.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveParts<'a> {
    /// `config.dump`.
    pub config: &'a ContainerConfig,
    /// `spec.dump`.
    pub spec: &'a Value,
    /// `network.status`.
    pub network_status: Option<&'a NetworkStatus>,
    /// `stats-dump` file.
    pub stats_dump: Option<&'a Path>,
    /// CRIU images directory.
    pub checkpoint_dir: &'a Path,
    /// Prepared `rootfs-diff.tar` (see [`write_rootfs_diff_tar`]).
    pub rootfs_diff_tar: Option<&'a Path>,
    /// Deleted paths.
    pub deleted_files: &'a [String],
    /// Prepared `devshm-checkpoint.tar`.
    pub devshm_tar: Option<&'a Path>,
    /// Prepared volume tars: (volume name, tar path).
    pub volumes: &'a [(String, PathBuf)],
    /// Container log.
    pub ctr_log: Option<&'a Path>,
}

/// Writes a whole archive in stasis's order; returns the writer.
pub fn write_archive<W: Write + Send + 'static>(
    w: W,
    label: &str,
    compression: Compression,
    level: Option<i32>,
    threads: u32,
    parts: &ArchiveParts<'_>,
) -> Result<W, ArchiveError> {
    let mut a = ArchiveWriter::new(
        w,
        label,
        compression,
        level,
        threads,
        parts.config,
        parts.spec,
    )?;
    write_parts(&mut a, parts)?;
    a.finish()
}

/// Writes every part after the head (`config.dump`, `spec.dump`), in stasis's order:
/// network.status, stats-dump, artifacts/, checkpoint/, rootfs-diff.tar, deleted.files,
/// devshm-checkpoint.tar, volumes/, ctr.log.
pub fn write_parts<S: Write>(
    a: &mut ArchiveWriter<S>,
    parts: &ArchiveParts<'_>,
) -> Result<(), ArchiveError> {
    if let Some(s) = parts.network_status {
        a.network_status(s)?;
    }
    if let Some(p) = parts.stats_dump {
        a.file(STATS_DUMP, p)?;
    }
    a.artifacts()?;
    a.checkpoint_dir(parts.checkpoint_dir)?;
    if let Some(p) = parts.rootfs_diff_tar {
        a.file(ROOTFS_DIFF_TAR, p)?;
    }
    a.deleted_files(parts.deleted_files)?;
    if let Some(p) = parts.devshm_tar {
        a.file(DEVSHM_CHECKPOINT_TAR, p)?;
    }
    for (name, p) in parts.volumes {
        a.volume_tar(name, p)?;
    }
    if let Some(p) = parts.ctr_log {
        a.file(CTR_LOG, p)?;
    }
    Ok(())
}

/// Builds the (uncompressed) `rootfs-diff.tar` from the upper directory: each path of
/// `changes.added_or_modified`, relative names as Podman writes them. Regular files keep mode,
/// owner, times and xattrs; directories keep their mode only and symlinks their target (the
/// limits of `stasis_tar::TarBuilder`'s single-entry methods); fifos and devices are skipped.
pub fn write_rootfs_diff_tar<W: Write>(
    upper: &Path,
    changes: &Changes,
    w: W,
) -> Result<W, ArchiveError> {
    let label = ROOTFS_DIFF_TAR;
    let mut t = TarBuilder::new(w);
    for rel in &changes.added_or_modified {
        let path = upper.join(rel);
        let md = fs::symlink_metadata(&path).map_err(|source| ArchiveIoError::Io {
            context: format!("building {ROOTFS_DIFF_TAR}: inspecting {}", path.display()),
            source,
        })?;
        let ft = md.file_type();
        if ft.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            t.append_dir(rel, md.permissions().mode())
                .map_err(tar_err(label))?;
        } else if ft.is_file() {
            t.append_file(rel, &path).map_err(tar_err(label))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|source| ArchiveIoError::Io {
                context: format!(
                    "building {ROOTFS_DIFF_TAR}: reading link {}",
                    path.display()
                ),
                source,
            })?;
            t.append_symlink(rel, &target.to_string_lossy())
                .map_err(tar_err(label))?;
        }
    }
    t.finish().map_err(tar_err(label))
}
