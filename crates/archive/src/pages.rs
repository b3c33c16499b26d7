//! Memory pages (`checkpoint/pages-N.img`) as stasis streams them: written into the archive
//! while CRIU dumps, and left in the archive on import, to be served from there.
//!
//! * On export the size of a pages image is known only once CRIU has sent its last page, so
//!   its tar header is written first with size 0 and rewritten afterwards
//!   ([`pages_header`]); the archive stays an ordinary tar.
//! * On import of a seekable archive, [`PagesSkipper`] sits between the decompressed stream
//!   and the tar reader: it passes every entry through except the pages images, whose header
//!   it rewrites to size 0 (so the extractor makes an empty file) and whose data it seeks
//!   over, recording where it is ([`PagesLocation`]).

use std::io::{self, Read, Seek, SeekFrom};

/// Tar block size.
const BLOCK: u64 = 512;

/// The file name (`pages-N.img`) when `entry` is `checkpoint/pages-N.img` (N decimal).
pub fn pages_file_name(entry: &str) -> Option<&str> {
    let name = entry.strip_prefix("checkpoint/")?;
    let digits = name.strip_prefix("pages-")?.strip_suffix(".img")?;
    (!digits.is_empty() && digits.len() <= 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(name)
}

/// A ustar header for the regular file `entry` (at most 100 bytes) of `size` bytes, mode
/// 0600, owned by root, modified now: the header of a pages image.
pub fn pages_header(entry: &str, size: u64) -> io::Result<[u8; 512]> {
    if entry.len() > 100 || entry.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar entry name {entry:?} must be 1 to 100 bytes"),
        ));
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path(entry)?;
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    h.set_size(size);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// Padding after `size` bytes of entry data, to the next tar block.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Where a pages image's data is in the decompressed archive stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagesLocation {
    /// `pages-N.img`.
    pub name: String,
    /// Offset of its first byte in the decompressed stream.
    pub offset: u64,
    /// Its size.
    pub size: u64,
}

/// A tar stream filter that skips the data of `checkpoint/pages-N.img` entries by seeking;
/// see the module documentation.
#[derive(Debug)]
pub struct PagesSkipper<R> {
    inner: R,
    /// Decompressed offset of the next byte read from `inner`.
    pos: u64,
    /// Bytes of the current entry (data and padding) still to pass through unchanged.
    passthrough: u64,
    /// A header block being assembled, and how much of it is filled.
    block: [u8; 512],
    filled: usize,
    /// Bytes of `block` already handed out (after it was complete and processed).
    out: usize,
    /// The previous header was an extended header (PAX or GNU long name), which may rename
    /// the next entry: that entry is never skipped.
    extended: bool,
    found: Vec<PagesLocation>,
}

impl<R: Read + Seek> PagesSkipper<R> {
    /// Filters `inner`, whose position is the start of the tar stream (offset 0).
    pub fn new(inner: R) -> Self {
        PagesSkipper {
            inner,
            pos: 0,
            passthrough: 0,
            block: [0; 512],
            filled: 0,
            out: 512,
            extended: false,
            found: Vec::new(),
        }
    }

    /// The pages images skipped so far.
    pub fn locations(&self) -> &[PagesLocation] {
        &self.found
    }

    /// Gives back the inner reader and the locations.
    pub fn into_parts(self) -> (R, Vec<PagesLocation>) {
        (self.inner, self.found)
    }

    /// Looks at a complete header block; rewrites it and seeks over the data for a pages
    /// image, else sets up the pass-through of its data.
    fn process_header(&mut self) -> io::Result<()> {
        let b = &self.block;
        if b.iter().all(|&x| x == 0) {
            // End-of-archive blocks: nothing follows that matters.
            self.extended = false;
            return Ok(());
        }
        let size = parse_size(&b[124..136]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "bad size field in the tar header at offset {}",
                    self.pos - 512
                ),
            )
        })?;
        let kind = b[156];
        let extended_next = matches!(kind, b'x' | b'L' | b'K');
        let name_end = b[..100].iter().position(|&c| c == 0).unwrap_or(100);
        let ustar_prefix = &b[257..263] == b"ustar\0" && b[345] != 0;
        let skip = !self.extended
            && !ustar_prefix
            && matches!(kind, b'0' | 0)
            && std::str::from_utf8(&b[..name_end])
                .ok()
                .and_then(pages_file_name)
                .is_some();
        self.extended = extended_next;
        if skip {
            let entry = std::str::from_utf8(&b[..name_end]).unwrap_or_default();
            let name = pages_file_name(entry).unwrap_or_default().to_string();
            self.found.push(PagesLocation {
                name,
                offset: self.pos,
                size,
            });
            // The extractor sees an empty file.
            let mut h = tar::Header::new_old();
            h.as_mut_bytes().copy_from_slice(&self.block);
            h.set_size(0);
            h.set_cksum();
            self.block.copy_from_slice(h.as_bytes());
            let jump = size
                .checked_add(padding(size))
                .and_then(|j| i64::try_from(j).ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "entry too large"))?;
            self.inner.seek(SeekFrom::Current(jump))?;
            self.pos += jump as u64;
        } else {
            self.passthrough = size.saturating_add(padding(size));
        }
        Ok(())
    }
}

impl<R: Read + Seek> Read for PagesSkipper<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out < 512 {
                let n = buf.len().min(512 - self.out);
                buf[..n].copy_from_slice(&self.block[self.out..self.out + n]);
                self.out += n;
                return Ok(n);
            }
            if self.passthrough > 0 {
                let want = buf
                    .len()
                    .min(usize::try_from(self.passthrough).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                self.pos += n as u64;
                self.passthrough -= n as u64;
                return Ok(n);
            }
            // Assemble the next header block.
            while self.filled < 512 {
                let n = self.inner.read(&mut self.block[self.filled..])?;
                if n == 0 {
                    if self.filled == 0 {
                        return Ok(0);
                    }
                    // A partial block: hand it on and let the tar reader report it.
                    let partial = self.filled;
                    self.filled = 0;
                    let n = buf.len().min(partial);
                    buf[..n].copy_from_slice(&self.block[..n]);
                    if n < partial {
                        self.block.copy_within(n..partial, 0);
                        self.filled = partial - n;
                    }
                    return Ok(n);
                }
                self.filled += n;
                self.pos += n as u64;
            }
            self.filled = 0;
            self.process_header()?;
            self.out = 0;
        }
    }
}

/// A tar numeric field: octal (NUL/space terminated) or GNU base-256.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s = field
        .iter()
        .copied()
        .skip_while(|&c| c == b' ' || c == 0)
        .take_while(|&c| c != 0 && c != b' ')
        .collect::<Vec<u8>>();
    if s.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&s).ok()?;
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tar_with(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(
            pages_file_name("checkpoint/pages-65537.img"),
            Some("pages-65537.img")
        );
        assert_eq!(pages_file_name("checkpoint/pagemap-1.img"), None);
        assert_eq!(pages_file_name("checkpoint/pages-.img"), None);
        assert_eq!(pages_file_name("checkpoint/pages-1x.img"), None);
        assert_eq!(pages_file_name("other/pages-1.img"), None);
        assert_eq!(pages_file_name("checkpoint/sub/pages-1.img"), None);
    }

    #[test]
    fn skips_pages_and_keeps_the_rest() {
        let pages: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let raw = tar_with(&[
            ("config.dump", b"{}".to_vec()),
            ("checkpoint/pages-65537.img", pages.clone()),
            ("checkpoint/pagemap-1.img", vec![7; 10]),
        ]);
        let mut f = PagesSkipper::new(Cursor::new(raw.clone()));
        let mut out = Vec::new();
        // Odd read sizes exercise the block assembly.
        let mut buf = [0u8; 97];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let locs = f.locations().to_vec();
        assert_eq!(locs.len(), 1);
        assert_eq!(locs[0].name, "pages-65537.img");
        assert_eq!(locs[0].size, 3000);
        let off = locs[0].offset as usize;
        assert_eq!(&raw[off..off + 3000], pages.as_slice());

        let mut a = tar::Archive::new(Cursor::new(out));
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((name, data));
        }
        assert_eq!(
            seen,
            vec![
                ("config.dump".to_string(), b"{}".to_vec()),
                ("checkpoint/pages-65537.img".to_string(), Vec::new()),
                ("checkpoint/pagemap-1.img".to_string(), vec![7; 10]),
            ]
        );
    }

    #[test]
    fn long_names_are_never_skipped() {
        let long = format!("checkpoint/{}/../pages-1.img", "d".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o600);
        b.append_data(&mut h, &long, &b"abcd"[..]).unwrap();
        let raw = b.into_inner().unwrap();
        let mut f = PagesSkipper::new(Cursor::new(raw.clone()));
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        assert!(f.locations().is_empty());
        assert_eq!(out, raw);
    }

    #[test]
    fn header_round_trips() {
        let h = pages_header("checkpoint/pages-65537.img", 123 << 20).unwrap();
        let mut raw = h.to_vec();
        raw.extend(std::iter::repeat_n(0u8, 1024));
        let mut a = tar::Archive::new(Cursor::new(raw));
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().size().unwrap(), 123 << 20);
        assert_eq!(
            e.path().unwrap().to_string_lossy(),
            "checkpoint/pages-65537.img"
        );
        assert!(pages_header(&"x".repeat(101), 1).is_err());
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(4096), 0);
    }

    #[test]
    fn bad_size_is_an_error() {
        let mut raw = tar_with(&[("checkpoint/pages-1.img", vec![1; 10])]);
        raw[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
        let mut f = PagesSkipper::new(Cursor::new(raw));
        let mut out = Vec::new();
        assert!(f.read_to_end(&mut out).is_err());
    }
}
