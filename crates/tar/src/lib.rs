//! Streaming compression and **safe** tar extraction for stasis.
//!
//! Archives handled here are untrusted input: container image layers and
//! checkpoint archives produced elsewhere. The crate offers:
//!
//! * [`detect`] / [`decompress`]: compression detection by magic bytes (never
//!   by file name) and a streaming decompressor for gzip and zstd;
//! * [`compress`]: a streaming gzip/zstd compressor (multi-threaded zstd);
//! * [`unpack`]: extraction that never writes outside the destination, with
//!   optional overlayfs whiteout conversion, `in_place` application onto an
//!   existing tree (symlinks resolved inside it), device policy and limits;
//! * [`secure_join`]: chroot-style resolution of an untrusted path inside a
//!   root, like Go's `securejoin.SecureJoin`;
//! * [`TarBuilder`]: streaming archive creation in the Go `archive/tar` layout
//!   used by Podman checkpoint archives.
//!
//! All errors are one [`TarError`] enum whose messages name the offending entry
//! or file.

mod builder;
mod compress;
mod error;
pub mod frames;
mod guard;
mod resolve;
mod unpack;

pub use builder::TarBuilder;
pub use compress::{compress, decompress, detect, Compression, Compressor, Detected};
pub use error::TarError;
pub use frames::{
    FrameInfo, FrameReader, FrameWriter, RawFrame, SeekTable, SeekableDecoder, DEFAULT_FRAME_SIZE,
};
pub use resolve::secure_join;
pub use unpack::{unpack, UnpackOptions, UnpackStats};

#[cfg(test)]
mod tests;
