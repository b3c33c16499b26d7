//! Compression detection (by magic bytes), streaming decompression and
//! streaming compression (gzip, zstd with optional worker threads).

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::str::FromStr;

use crate::TarError;

/// Buffer size for reading plain (uncompressed) input.
const PLAIN_BUF: usize = 256 * 1024;

/// A compression format this crate can write and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed tar.
    None,
    /// gzip (RFC 1952); multi-member streams are read completely.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = TarError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(TarError::UnknownCompression(s.to_string())),
        }
    }
}

/// What the first bytes of a stream look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// No known compression magic: taken as an uncompressed tar.
    Plain,
    /// `1F 8B 08`
    Gzip,
    /// `28 B5 2F FD`
    Zstd,
    /// `42 5A 68` ("BZh")
    Bzip2,
    /// `FD 37 7A 58 5A 00`
    Xz,
}

/// Detects the compression of a stream from its first bytes (6 are enough).
/// Never looks at file names.
pub fn detect(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1F, 0x8B, 0x08]) {
        Detected::Gzip
    } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Detected::Zstd
    } else if head.starts_with(&[0x42, 0x5A, 0x68]) {
        Detected::Bzip2
    } else if head.starts_with(&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) {
        Detected::Xz
    } else {
        Detected::Plain
    }
}

/// Peeks at the magic bytes of `r` and returns the detected compression and
/// a reader of the decompressed stream. bzip2 and xz input is refused with
/// [`TarError::UnsupportedCompression`].
///
/// Decompression errors (corrupt or truncated streams) surface as I/O errors
/// from the returned reader; truncation is reported as
/// [`io::ErrorKind::UnexpectedEof`].
pub fn decompress<R: Read + Send + 'static>(
    mut r: R,
) -> Result<(Compression, Box<dyn Read + Send>), TarError> {
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TarError::io("reading the start of the archive", e)),
        }
    }
    let detected = detect(&head[..n]);
    let input = io::Cursor::new(head[..n].to_vec()).chain(r);
    match detected {
        Detected::Plain => Ok((
            Compression::None,
            Box::new(BufReader::with_capacity(PLAIN_BUF, input)),
        )),
        Detected::Gzip => Ok((
            Compression::Gzip,
            Box::new(flate2::read::MultiGzDecoder::new(input)),
        )),
        Detected::Zstd => {
            let dec = zstd::stream::read::Decoder::new(input)
                .map_err(|e| TarError::io("initialising the zstd decoder", e))?;
            Ok((Compression::Zstd, Box::new(ZstdReader(dec))))
        }
        Detected::Bzip2 => Err(TarError::UnsupportedCompression("bzip2")),
        Detected::Xz => Err(TarError::UnsupportedCompression("xz")),
    }
}

/// Wraps the zstd decoder so that a stream ending in the middle of a frame is
/// reported as `UnexpectedEof` regardless of how the zstd crate phrases it.
struct ZstdReader<R: io::BufRead>(zstd::stream::read::Decoder<'static, R>);

impl<R: io::BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() != io::ErrorKind::UnexpectedEof
                && e.to_string().to_ascii_lowercase().contains("incomplete")
            {
                io::Error::new(io::ErrorKind::UnexpectedEof, e)
            } else {
                e
            }
        })
    }
}

enum Inner<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// A writer that compresses into an inner writer. It must be finished with
/// [`Compressor::finish`]; dropping it leaves a truncated stream.
pub struct Compressor<W: Write> {
    inner: Inner<W>,
}

impl<W: Write> fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Plain(_) => Compression::None,
            Inner::Gzip(_) => Compression::Gzip,
            Inner::Zstd(_) => Compression::Zstd,
        };
        f.debug_struct("Compressor")
            .field("compression", &kind)
            .finish()
    }
}

/// Returns a writer compressing into `w` with `c`.
///
/// `level`: `None` is the format's default (gzip 6, zstd 3); gzip accepts
/// 0..=9, zstd its library range. `threads`: zstd worker threads (0 =
/// compress on the calling thread); ignored for gzip and none.
pub fn compress<W: Write + Send + 'static>(
    w: W,
    c: Compression,
    level: Option<i32>,
    threads: u32,
) -> Result<Compressor<W>, TarError> {
    let inner = match c {
        Compression::None => Inner::Plain(w),
        Compression::Gzip => {
            let level = match level {
                None => flate2::Compression::default(),
                Some(l) if (0..=9).contains(&l) => flate2::Compression::new(l.unsigned_abs()),
                Some(l) => {
                    return Err(TarError::InvalidLevel {
                        compression: c,
                        level: l,
                        min: 0,
                        max: 9,
                    })
                }
            };
            Inner::Gzip(flate2::write::GzEncoder::new(w, level))
        }
        Compression::Zstd => {
            let range = zstd::compression_level_range();
            let level = level.unwrap_or(zstd::DEFAULT_COMPRESSION_LEVEL);
            if !range.contains(&level) {
                return Err(TarError::InvalidLevel {
                    compression: c,
                    level,
                    min: *range.start(),
                    max: *range.end(),
                });
            }
            let mut enc = zstd::stream::write::Encoder::new(w, level)
                .map_err(|e| TarError::io("initialising the zstd encoder", e))?;
            enc.include_checksum(true)
                .map_err(|e| TarError::io("configuring the zstd encoder", e))?;
            if threads > 0 {
                enc.multithread(threads)
                    .map_err(|e| TarError::io("enabling zstd worker threads", e))?;
            }
            Inner::Zstd(enc)
        }
    };
    Ok(Compressor { inner })
}

impl<W: Write> Compressor<W> {
    /// Flushes the compressed stream, writes its trailer and returns the inner
    /// writer (itself flushed).
    pub fn finish(self) -> Result<W, TarError> {
        let mut w = match self.inner {
            Inner::Plain(w) => w,
            Inner::Gzip(g) => g
                .finish()
                .map_err(|e| TarError::io("finishing the gzip stream", e))?,
            Inner::Zstd(z) => z
                .finish()
                .map_err(|e| TarError::io("finishing the zstd stream", e))?,
        };
        w.flush()
            .map_err(|e| TarError::io("flushing the compressed stream", e))?;
        Ok(w)
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(w) => w.write(buf),
            Inner::Gzip(g) => g.write(buf),
            Inner::Zstd(z) => z.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.write_all(buf),
            Inner::Gzip(g) => g.write_all(buf),
            Inner::Zstd(z) => z.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(g) => g.flush(),
            Inner::Zstd(z) => z.flush(),
        }
    }
}
