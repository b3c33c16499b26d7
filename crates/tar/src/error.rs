//! The single error type of this crate.

use std::io;
use std::path::PathBuf;

use crate::Compression;

/// Everything that can go wrong while compressing, decompressing, packing or
/// unpacking. Messages are lower-case, have no trailing period and name the
/// offending archive entry or file whenever there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// A compression name that is not one of `none`, `gzip`, `zstd`.
    #[error(
        "selected compression algorithm ({0:?}) not supported. Please select one from: gzip, none, zstd"
    )]
    UnknownCompression(String),

    /// The input is compressed with a format this crate cannot read.
    #[error(
        "archive is {0}-compressed, which is not supported (supported: gzip, zstd, uncompressed)"
    )]
    UnsupportedCompression(&'static str),

    /// A compression level outside the range of the format.
    #[error("compression level {level} is out of range for {compression} ({min}..={max})")]
    InvalidLevel {
        /// The format.
        compression: Compression,
        /// The requested level.
        level: i32,
        /// Smallest accepted level.
        min: i32,
        /// Largest accepted level.
        max: i32,
    },

    /// An I/O error; `context` names the file or entry being worked on.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file or entry.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An entry name (or hard link target) with a `..` component.
    #[error("archive entry {entry:?} escapes the target directory")]
    Escape {
        /// The raw entry name.
        entry: String,
    },

    /// An entry name starting with `/`.
    #[error("archive entry {entry:?} has an absolute path")]
    AbsolutePath {
        /// The raw entry name.
        entry: String,
    },

    /// An empty name, a name with a NUL byte, or a non-directory naming the
    /// target directory itself.
    #[error("archive entry {entry:?} has an invalid name: {reason}")]
    InvalidName {
        /// The raw entry name.
        entry: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// Writing the entry would go through a symlink (outside `in_place` mode).
    #[error("archive entry {entry:?} would be written through the symlink {link:?}")]
    ThroughSymlink {
        /// The raw entry name.
        entry: String,
        /// The symlink, relative to the target directory.
        link: String,
    },

    /// A parent of the entry exists and is not a directory.
    #[error("archive entry {entry:?} cannot be created: {parent:?} is not a directory")]
    NotADirectory {
        /// The raw entry name.
        entry: String,
        /// The offending parent, relative to the target directory.
        parent: String,
    },

    /// A hard link whose target is absolute or climbs out with `..`.
    #[error("archive entry {entry:?} is a hard link to {target:?} outside the archive")]
    HardLinkOutside {
        /// The raw entry name.
        entry: String,
        /// The raw link target.
        target: String,
    },

    /// A hard link whose target is not a regular file extracted earlier.
    #[error(
        "archive entry {entry:?} is a hard link to {target:?}, which is not a regular file extracted earlier from the archive"
    )]
    HardLinkTarget {
        /// The raw entry name.
        entry: String,
        /// The raw link target.
        target: String,
    },

    /// A device node or fifo while `allow_devices` is off.
    #[error("archive entry {entry:?} is {kind}: device nodes are not allowed")]
    DeviceNotAllowed {
        /// The raw entry name.
        entry: String,
        /// "a block device", "a character device" or "a fifo".
        kind: &'static str,
    },

    /// An entry type this crate does not extract.
    #[error("archive entry {entry:?} has an unsupported type ({kind})")]
    UnsupportedType {
        /// The raw entry name.
        entry: String,
        /// The tar type flag.
        kind: String,
    },

    /// A header field that cannot be used (bad number, missing link target...).
    #[error("archive entry {entry:?} has an invalid header: {reason}")]
    InvalidHeader {
        /// The raw entry name.
        entry: String,
        /// What is wrong.
        reason: String,
    },

    /// `max_entries` exceeded.
    #[error("archive exceeds the limit of {limit} entries at entry {entry:?}")]
    TooManyEntries {
        /// The limit.
        limit: u64,
        /// The first entry over the limit.
        entry: String,
    },

    /// `max_bytes` exceeded.
    #[error("archive exceeds the size limit of {limit} bytes at entry {entry:?}")]
    TooLarge {
        /// The limit.
        limit: u64,
        /// The entry that would cross the limit.
        entry: String,
    },

    /// The stream ended early: in the middle of an entry, a header, or before
    /// the end-of-archive marker.
    #[error("unexpected end of archive (truncated?) {location}")]
    Truncated {
        /// Where, e.g. `in entry "a"` or `after entry "b"`.
        location: String,
    },

    /// The archive (or its compressed stream) is corrupt.
    #[error("corrupt archive {location}: {source}")]
    Corrupt {
        /// Where, e.g. `after entry "b"`.
        location: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A zstd frame size outside `1..=max` bytes.
    #[error("zstd frame size {size} is out of range (1..={max})")]
    FrameSize {
        /// The requested frame size.
        size: usize,
        /// The largest accepted frame size.
        max: usize,
    },

    /// The stream ends with a zstd seek table (its footer magic is there) but
    /// the table is malformed.
    #[error("invalid zstd seek table: {reason}")]
    SeekTable {
        /// What is wrong.
        reason: String,
    },

    /// Symlink resolution inside a root did not terminate.
    #[error("resolving {path:?} inside {root:?}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The root directory.
        root: PathBuf,
        /// The path (or entry name) being resolved.
        path: String,
    },
}

impl TarError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        TarError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Formats raw bytes of an entry name for messages.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
