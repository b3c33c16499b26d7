//! A pass-through reader that follows the tar framing of the bytes the `tar`
//! crate reads, to bound what that crate would otherwise buffer in memory
//! without limit: PAX extended headers and GNU long name/link records. Like
//! Go's `archive/tar`, those are limited to 1 MiB.
//!
//! It mirrors the crate's framing (header, PAX `size` override, GNU sparse
//! extension blocks, 512-byte padding). If it cannot make sense of a header
//! (bad checksum, end of archive) it stops watching rather than guessing, so
//! it never rejects an archive the `tar` crate would accept except for an
//! oversized extension header. It also records whether the stream hit EOF.

use std::cell::Cell;
use std::io::{self, Read};

use tar::{EntryType, Header};

/// Largest PAX / GNU long-name record accepted.
pub(crate) const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: u64 = 512;

enum Want {
    /// The 512-byte header starting at `at`.
    Header,
    /// `len` bytes of PAX records starting at `at`.
    Pax { len: u64 },
    /// A GNU sparse extension block at `at`; `data` bytes follow the last one.
    SparseExt { data: u64 },
    /// Not watching any more.
    Off,
}

pub(crate) struct Guard<'a, R> {
    inner: R,
    eof: &'a Cell<bool>,
    /// Stream position of the next byte read.
    pos: u64,
    /// Start of the structure being collected.
    at: u64,
    want: Want,
    block: Vec<u8>,
    /// PAX `size` for the next non-extension entry.
    pending_size: Option<u64>,
}

impl<'a, R: Read> Guard<'a, R> {
    pub(crate) fn new(inner: R, eof: &'a Cell<bool>) -> Self {
        Guard {
            inner,
            eof,
            pos: 0,
            at: 0,
            want: Want::Header,
            block: Vec::with_capacity(BLOCK as usize),
            pending_size: None,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        let mut pos = self.pos;
        self.pos += data.len() as u64;
        while !data.is_empty() {
            let need = match self.want {
                Want::Off => return Ok(()),
                Want::Header | Want::SparseExt { .. } => BLOCK,
                Want::Pax { len } => len,
            };
            if pos < self.at {
                let skip = usize::try_from(self.at - pos)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                data = data.get(skip..).unwrap_or_default();
                pos += skip as u64;
                continue;
            }
            let missing = usize::try_from(need - self.block.len() as u64).unwrap_or(usize::MAX);
            let take = missing.min(data.len());
            self.block
                .extend_from_slice(data.get(..take).unwrap_or_default());
            data = data.get(take..).unwrap_or_default();
            pos += take as u64;
            if self.block.len() as u64 == need {
                self.complete()?;
            }
        }
        Ok(())
    }

    /// Moves on to a header `skip` bytes (plus padding) after `from`.
    fn header_after(&mut self, from: u64, skip: u64) {
        match skip
            .checked_add(BLOCK - 1)
            .map(|s| s & !(BLOCK - 1))
            .and_then(|s| from.checked_add(s))
        {
            Some(at) => {
                self.at = at;
                self.want = Want::Header;
            }
            None => self.want = Want::Off,
        }
        self.block.clear();
    }

    fn complete(&mut self) -> io::Result<()> {
        let body = self.at + BLOCK;
        match self.want {
            Want::Header => {
                let block = std::mem::take(&mut self.block);
                self.header(&block, body)?;
                if matches!(self.want, Want::Pax { len: 0 }) {
                    self.pending_size = None;
                    self.header_after(body, 0);
                }
                self.block = block;
                self.block.clear();
            }
            Want::Pax { len } => {
                self.pending_size = pax_size(&self.block);
                self.header_after(self.at, len);
            }
            Want::SparseExt { data } => {
                if self.block.get(504).copied().unwrap_or(0) != 0 {
                    self.at = body;
                    self.block.clear();
                } else {
                    self.header_after(body, data);
                }
            }
            Want::Off => {}
        }
        Ok(())
    }

    fn header(&mut self, block: &[u8], body: u64) -> io::Result<()> {
        if block.iter().all(|b| *b == 0) {
            self.want = Want::Off;
            return Ok(());
        }
        let h = Header::from_byte_slice(block);
        let sum = block
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum::<u32>();
        if h.cksum().ok() != Some(sum) {
            self.want = Want::Off;
            return Ok(());
        }
        let ty = h.entry_type();
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let buffered = recognized
            && (ty.is_pax_local_extensions() || ty.is_gnu_longname() || ty.is_gnu_longlink());
        let is_extension = ty.is_pax_local_extensions()
            || ty.is_pax_global_extensions()
            || ty.is_gnu_longname()
            || ty.is_gnu_longlink();
        let Ok(mut size) = h.entry_size() else {
            self.want = Want::Off;
            return Ok(());
        };
        if !is_extension {
            if let Some(p) = self.pending_size.take() {
                size = p;
            }
        }
        if buffered && size > MAX_EXTENSION {
            let what = if ty.is_pax_local_extensions() {
                "pax extended header"
            } else {
                "gnu long name record"
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what} of {size} bytes exceeds the limit of {MAX_EXTENSION} bytes"),
            ));
        }
        if recognized && ty.is_pax_local_extensions() {
            self.at = body;
            self.want = Want::Pax { len: size };
        } else if ty == EntryType::GNUSparse && h.as_gnu().is_some_and(|g| g.is_extended()) {
            self.at = body;
            self.want = Want::SparseExt { data: size };
        } else {
            self.header_after(body, size);
        }
        Ok(())
    }
}

/// The PAX `size` record, read the way the `tar` crate reads it.
fn pax_size(records: &[u8]) -> Option<u64> {
    for rec in tar::PaxExtensions::new(records) {
        let rec = rec.ok()?;
        if rec.key() != Ok("size") {
            continue;
        }
        return rec.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for Guard<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        self.observe(buf.get(..n).unwrap_or_default())?;
        Ok(n)
    }
}
