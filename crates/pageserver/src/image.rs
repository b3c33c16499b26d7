//! CRIU pagemap images (`pagemap-<pid>.img`, `pagemap-shmem-<shmid>.img`) and the layout of the
//! pages files they describe.
//!
//! Layout (CRIU 4.2, `criu/image.c`, `criu/protobuf.c`, `images/pagemap.proto`): native-endian
//! `u32` `IMG_COMMON_MAGIC` (0x54564319), `u32` `PAGEMAP_MAGIC` (0x56084025), then records of a
//! native-endian `u32` length and a protobuf message: one `pagemap_head { required uint32 pages_id
//! = 1; }`, then `pagemap_entry { required uint64 vaddr = 1; required uint32 compat_nr_pages = 2;
//! optional bool in_parent = 3; optional uint32 flags = 4; optional uint64 nr_pages = 5; }`.
//!
//! CRIU 4.2 writes every entry as `vaddr`, `compat_nr_pages = 0`, `flags`, `nr_pages`
//! (`write_pagemap_loc` sets `has_flags` and `has_nr_pages`, never `compat_nr_pages` or
//! `in_parent`); older images carry the count in field 2, and `in_parent` instead of `PE_PARENT`.
//! [`Pagemap::parse`] reads both the way `init_compat_pagemap_entry` does; [`Pagemap::to_bytes`]
//! writes the 4.2 layout, so a 4.2 image round-trips byte for byte.
//!
//! `pages-<pages_id>.img` is raw page data without a header: the pages of the `PE_PRESENT`
//! entries, in entry order (`PE_LAZY|PE_PRESENT` ones included; `skip_pagemap_pages` advances the
//! file offset only for present entries).

use crate::error::{Error, Result};
use crate::proto::{pages_name, PAGE_SIZE};

/// First word of every CRIU image but the inventory.
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Second word of a pagemap image (task and shmem pagemaps alike).
pub const PAGEMAP_MAGIC: u32 = 0x5608_4025;

/// The pages are in the parent snapshot (a pre-dump hole); no data in this pages file.
pub const PE_PARENT: u32 = 1 << 0;
/// The pages may be restored lazily (through userfaultfd).
pub const PE_LAZY: u32 = 1 << 1;
/// The pages are in the pages file.
pub const PE_PRESENT: u32 = 1 << 2;
/// All flags this crate knows.
pub const PE_KNOWN: u32 = PE_PARENT | PE_LAZY | PE_PRESENT;

/// Largest pagemap image [`Pagemap::parse`] accepts (about 4 million entries).
pub const MAX_PAGEMAP_IMAGE: usize = 64 << 20;
/// Largest record in a pagemap image (a 4.2 entry is at most 36 bytes).
const MAX_RECORD: usize = 1024;
/// End of the largest address space (5-level paging user space is 2^56).
pub const MAX_VADDR: u64 = 1 << 57;

/// One `pagemap_entry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagemapEntry {
    /// Start address (page aligned).
    pub vaddr: u64,
    /// Length in pages.
    pub nr_pages: u64,
    /// `PE_*` flags.
    pub flags: u32,
}

impl PagemapEntry {
    /// Whether the pages are in the pages file.
    pub fn is_present(&self) -> bool {
        self.flags & PE_PRESENT != 0
    }

    /// Whether the pages may be restored lazily.
    pub fn is_lazy(&self) -> bool {
        self.flags & PE_LAZY != 0
    }

    /// Whether the pages are in the parent snapshot.
    pub fn in_parent(&self) -> bool {
        self.flags & PE_PARENT != 0
    }

    /// Length in bytes (saturating for entries built by hand).
    pub fn len_bytes(&self) -> u64 {
        self.nr_pages.saturating_mul(PAGE_SIZE)
    }

    /// End address, exclusive (saturating for entries built by hand).
    pub fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.len_bytes())
    }
}

/// A present entry with its place in the pages file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentRange {
    /// Start address.
    pub vaddr: u64,
    /// Length in pages.
    pub nr_pages: u64,
    /// `PE_*` flags (always with `PE_PRESENT`).
    pub flags: u32,
    /// Byte offset of the first page in `pages-<pages_id>.img`.
    pub offset: u64,
}

impl PresentRange {
    /// End address, exclusive.
    pub fn end(&self) -> u64 {
        self.vaddr
            .saturating_add(self.nr_pages.saturating_mul(PAGE_SIZE))
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.nr_pages.saturating_mul(PAGE_SIZE)
    }
}

/// Where a run of requested pages is in the pages file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Byte offset in `pages-<pages_id>.img` of the page at the requested address.
    pub offset: u64,
    /// Pages available from there, contiguous both in memory and in the file; at least 1 and at
    /// most the number requested.
    pub nr_pages: u64,
}

/// A pagemap image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pagemap {
    /// The `pages_id` of `pages-<pages_id>.img`.
    pub pages_id: u32,
    /// The entries, in file order.
    pub entries: Vec<PagemapEntry>,
}

impl Pagemap {
    /// Parses a pagemap image. Rejects unknown magics, truncated or oversized records, unknown
    /// protobuf fields (a newer CRIU could change what the pages file holds), unknown flags,
    /// unaligned or out-of-range entries.
    pub fn parse(bytes: &[u8]) -> Result<Pagemap> {
        if bytes.len() > MAX_PAGEMAP_IMAGE {
            return Err(bad(format!(
                "{} bytes is larger than the {MAX_PAGEMAP_IMAGE} bytes accepted",
                bytes.len()
            )));
        }
        let mut r = Records::new(bytes, MAX_RECORD);
        let magic = r
            .u32()
            .ok_or_else(|| bad("shorter than its magic".into()))?;
        if magic != IMG_COMMON_MAGIC {
            return Err(bad(format!("unknown image magic {magic:#010x}")));
        }
        let magic = r
            .u32()
            .ok_or_else(|| bad("shorter than its magic".into()))?;
        if magic != PAGEMAP_MAGIC {
            return Err(bad(format!(
                "magic {magic:#010x} is not the pagemap magic {PAGEMAP_MAGIC:#010x}"
            )));
        }
        let (at, head) = r
            .record()?
            .ok_or_else(|| bad("no pagemap_head record".into()))?;
        let pages_id = parse_head(head).map_err(|e| bad(format!("pagemap_head at {at}: {e}")))?;
        let mut entries = Vec::new();
        let mut present_bytes: u64 = 0;
        while let Some((at, rec)) = r.record()? {
            let e = parse_entry(rec).map_err(|e| bad(format!("pagemap_entry at {at}: {e}")))?;
            if e.is_present() {
                present_bytes = present_bytes
                    .checked_add(e.len_bytes())
                    .ok_or_else(|| bad("present pages overflow a pages file".into()))?;
            }
            entries.push(e);
        }
        Ok(Pagemap { pages_id, entries })
    }

    /// The image bytes exactly as CRIU 4.2 writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.entries.len() * 24);
        out.extend_from_slice(&IMG_COMMON_MAGIC.to_ne_bytes());
        out.extend_from_slice(&PAGEMAP_MAGIC.to_ne_bytes());
        encode_head(self.pages_id, &mut out);
        for e in &self.entries {
            encode_entry(e, &mut out);
        }
        out
    }

    /// `pages-<pages_id>.img`.
    pub fn pages_name(&self) -> String {
        pages_name(self.pages_id)
    }

    /// The `PE_PRESENT` entries with their byte offsets in the pages file, in file order.
    pub fn present(&self) -> impl Iterator<Item = PresentRange> + '_ {
        let mut offset = 0u64;
        self.entries
            .iter()
            .filter(|e| e.is_present())
            .map(move |e| {
                let r = PresentRange {
                    vaddr: e.vaddr,
                    nr_pages: e.nr_pages,
                    flags: e.flags,
                    offset,
                };
                offset = offset.saturating_add(e.len_bytes());
                r
            })
    }

    /// The present entries that are not lazy: what `criu restore --lazy-pages` reads from the
    /// local pages file (the lazy ones come from the lazy-pages daemon).
    pub fn non_lazy(&self) -> impl Iterator<Item = PresentRange> + '_ {
        self.present().filter(|r| r.flags & PE_LAZY == 0)
    }

    /// Size of the pages file: all present pages.
    pub fn present_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.is_present())
            .fold(0u64, |acc, e| acc.saturating_add(e.len_bytes()))
    }

    /// Finds up to `nr_pages` pages at `vaddr` in the pages file: the offset of the first and how
    /// many follow contiguously (across adjacent present entries). `None` if no present entry
    /// covers `vaddr` or `nr_pages` is 0. A linear scan; see [`PageIndex`] for many lookups.
    pub fn locate(&self, vaddr: u64, nr_pages: u64) -> Option<Located> {
        let ranges: Vec<PresentRange> = self.present().collect();
        let i = ranges
            .iter()
            .position(|r| r.vaddr <= vaddr && vaddr < r.end())?;
        locate_from(&ranges, i, vaddr, nr_pages)
    }

    /// An index for fast lookups; fails if present entries overlap.
    pub fn index(&self) -> Result<PageIndex> {
        PageIndex::new(self)
    }
}

/// Present ranges sorted by address, for binary-search lookups.
#[derive(Debug, Clone, Default)]
pub struct PageIndex {
    ranges: Vec<PresentRange>,
}

impl PageIndex {
    /// Indexes the present entries of `pagemap`; fails if two of them overlap.
    pub fn new(pagemap: &Pagemap) -> Result<PageIndex> {
        let mut ranges: Vec<PresentRange> = pagemap.present().filter(|r| r.nr_pages > 0).collect();
        ranges.sort_by_key(|r| r.vaddr);
        for w in ranges.windows(2) {
            if w[0].end() > w[1].vaddr {
                return Err(bad(format!(
                    "present entries at {:#x} and {:#x} overlap",
                    w[0].vaddr, w[1].vaddr
                )));
            }
        }
        Ok(PageIndex { ranges })
    }

    /// Like [`Pagemap::locate`], in O(log n).
    pub fn locate(&self, vaddr: u64, nr_pages: u64) -> Option<Located> {
        let i = self.ranges.partition_point(|r| r.vaddr <= vaddr);
        let i = i.checked_sub(1)?;
        if vaddr >= self.ranges[i].end() {
            return None;
        }
        locate_from(&self.ranges, i, vaddr, nr_pages)
    }

    /// The indexed ranges, sorted by address.
    pub fn ranges(&self) -> &[PresentRange] {
        &self.ranges
    }
}

/// `ranges[i]` covers `vaddr`; extends over following ranges that continue both the address and
/// the file offset.
fn locate_from(ranges: &[PresentRange], i: usize, vaddr: u64, want: u64) -> Option<Located> {
    if want == 0 || vaddr % PAGE_SIZE != 0 {
        return None;
    }
    let first = ranges[i];
    let skip = vaddr - first.vaddr;
    let offset = first.offset.checked_add(skip)?;
    let mut avail = (first.end() - vaddr) / PAGE_SIZE;
    let mut prev = first;
    for r in &ranges[i + 1..] {
        if avail >= want {
            break;
        }
        if r.vaddr != prev.end() || Some(r.offset) != prev.offset.checked_add(prev.len_bytes()) {
            break;
        }
        avail = avail.saturating_add(r.nr_pages);
        prev = *r;
    }
    Some(Located {
        offset,
        nr_pages: avail.min(want),
    })
}

fn bad(msg: String) -> Error {
    Error::BadImage(msg)
}

/// Reader of a CRIU image's words and `u32 length` + payload records.
pub(crate) struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Longer records are refused.
    max_record: usize,
}

impl<'a> Records<'a> {
    pub(crate) fn new(bytes: &'a [u8], max_record: usize) -> Self {
        Records {
            bytes,
            pos: 0,
            max_record,
        }
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let b = self.bytes.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `None` at the end of the image.
    pub(crate) fn record(&mut self) -> Result<Option<(usize, &'a [u8])>> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let at = self.pos;
        let len = self
            .u32()
            .ok_or_else(|| bad(format!("truncated record length at byte {at}")))?;
        let len = len as usize;
        if len > self.max_record {
            return Err(bad(format!(
                "record of {len} bytes at byte {at} (at most {} expected)",
                self.max_record
            )));
        }
        let body = self
            .bytes
            .get(self.pos..self.pos + len)
            .ok_or_else(|| bad(format!("record of {len} bytes at byte {at} is truncated")))?;
        self.pos += len;
        Ok(Some((at, body)))
    }
}

/// Minimal protobuf (proto2) field reader.
pub(crate) struct Fields<'a> {
    b: &'a [u8],
    pos: usize,
}

pub(crate) enum Value<'a> {
    Varint(u64),
    /// A length-delimited field: bytes, a string or an embedded message.
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Fields { b, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let byte = *self.b.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                return Err("varint overflows 64 bits");
            }
            v |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn skip(&mut self, n: usize) -> Result<(), &'static str> {
        let end = self.pos.checked_add(n).ok_or("truncated field")?;
        if end > self.b.len() {
            return Err("truncated field");
        }
        self.pos = end;
        Ok(())
    }

    /// The next `(field number, value)`; `None` at the end.
    pub(crate) fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, &'static str> {
        if self.pos == self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err("field number 0");
        }
        let v = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Other
            }
            2 => {
                let n = self.varint()?;
                let start = self.pos;
                self.skip(usize::try_from(n).map_err(|_| "truncated field")?)?;
                Value::Bytes(&self.b[start..self.pos])
            }
            5 => {
                self.skip(4)?;
                Value::Other
            }
            _ => return Err("unsupported protobuf wire type"),
        };
        Ok(Some((field, v)))
    }
}

fn varint_field(v: Value, what: &'static str) -> Result<u64, String> {
    match v {
        Value::Varint(x) => Ok(x),
        Value::Bytes(_) | Value::Other => Err(format!("{what} has the wrong wire type")),
    }
}

fn u32_field(v: Value, what: &'static str) -> Result<u32, String> {
    let x = varint_field(v, what)?;
    u32::try_from(x).map_err(|_| format!("{what} {x} does not fit in 32 bits"))
}

fn parse_head(b: &[u8]) -> Result<u32, String> {
    let mut f = Fields { b, pos: 0 };
    let mut pages_id = None;
    while let Some((field, v)) = f.next()? {
        match field {
            1 => pages_id = Some(u32_field(v, "pages_id")?),
            n => return Err(format!("unknown field {n} (an image from a newer criu?)")),
        }
    }
    pages_id.ok_or_else(|| "pages_id is missing".to_string())
}

fn parse_entry(b: &[u8]) -> Result<PagemapEntry, String> {
    let mut f = Fields { b, pos: 0 };
    let (mut vaddr, mut compat, mut in_parent, mut flags, mut nr) = (None, None, None, None, None);
    while let Some((field, v)) = f.next()? {
        match field {
            1 => vaddr = Some(varint_field(v, "vaddr")?),
            2 => compat = Some(u32_field(v, "compat_nr_pages")?),
            3 => in_parent = Some(varint_field(v, "in_parent")? != 0),
            4 => flags = Some(u32_field(v, "flags")?),
            5 => nr = Some(varint_field(v, "nr_pages")?),
            n => return Err(format!("unknown field {n} (an image from a newer criu?)")),
        }
    }
    let vaddr = vaddr.ok_or("vaddr is missing")?;
    // init_compat_pagemap_entry
    let nr_pages = match (nr, compat) {
        (Some(n), _) => n,
        (None, Some(c)) => u64::from(c),
        (None, None) => return Err("nr_pages is missing".into()),
    };
    let flags = if in_parent == Some(true) {
        flags.unwrap_or(0) | PE_PARENT
    } else {
        flags.unwrap_or(PE_PRESENT)
    };
    if flags & !PE_KNOWN != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    let end = nr_pages
        .checked_mul(PAGE_SIZE)
        .and_then(|len| vaddr.checked_add(len));
    if vaddr % PAGE_SIZE != 0 || !matches!(end, Some(end) if end <= MAX_VADDR) {
        return Err(format!("bad range: {nr_pages} pages at {vaddr:#x}"));
    }
    Ok(PagemapEntry {
        vaddr,
        nr_pages,
        flags,
    })
}

/// Writes `v` as a varint at the start of `out` (at least 10 bytes), returns its length.
fn put_varint(mut v: u64, out: &mut [u8]) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

fn put_record(body: &[u8], out: &mut Vec<u8>) {
    // Records are tiny (at most 30 bytes), the cast cannot truncate.
    out.extend_from_slice(&(body.len() as u32).to_ne_bytes());
    out.extend_from_slice(body);
}

/// Appends the `pagemap_head` record.
pub(crate) fn encode_head(pages_id: u32, out: &mut Vec<u8>) {
    let mut body = [0u8; 16];
    body[0] = 0x08;
    let n = 1 + put_varint(u64::from(pages_id), &mut body[1..]);
    put_record(&body[..n], out);
}

/// Appends one `pagemap_entry` record as CRIU 4.2's `write_pagemap_loc` does: `vaddr`,
/// `compat_nr_pages = 0`, `flags`, `nr_pages`. No allocation besides `out`'s growth.
pub(crate) fn encode_entry(e: &PagemapEntry, out: &mut Vec<u8>) {
    let mut body = [0u8; 40];
    body[0] = 0x08;
    let mut n = 1 + put_varint(e.vaddr, &mut body[1..]);
    body[n..n + 3].copy_from_slice(&[0x10, 0x00, 0x20]);
    n += 3;
    n += put_varint(u64::from(e.flags), &mut body[n..]);
    body[n] = 0x28;
    n += 1;
    n += put_varint(e.nr_pages, &mut body[n..]);
    put_record(&body[..n], out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pagemap-15955.img` of a `busybox sleep` dumped by CRIU 4.2.1 (x86_64).
    const BUSYBOX_SLEEP: &str = "19435654254008560200000008010b0000000880a080021000200428010b000000088080f8021000200428050b0000000880a0f9021000200628010b0000000880c0fa021000200628020c0000000880e0b6f0031000200628020e000000088080d8848ee91f1000200428020e0000000880a0ee8efcff1f100020062802";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn img(records: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&IMG_COMMON_MAGIC.to_ne_bytes());
        out.extend_from_slice(&PAGEMAP_MAGIC.to_ne_bytes());
        for r in records {
            put_record(r, &mut out);
        }
        out
    }

    #[test]
    fn criu_image_round_trip() {
        let bytes = unhex(BUSYBOX_SLEEP);
        let pm = Pagemap::parse(&bytes).unwrap();
        assert_eq!(pm.pages_id, 1);
        assert_eq!(pm.entries.len(), 7);
        assert_eq!(
            pm.entries[0],
            PagemapEntry {
                vaddr: 0x401000,
                nr_pages: 1,
                flags: PE_PRESENT
            }
        );
        assert_eq!(pm.entries[2].flags, PE_PRESENT | PE_LAZY);
        assert_eq!(pm.present_bytes(), 61440);
        assert_eq!(pm.to_bytes(), bytes);
        assert_eq!(pm.pages_name(), "pages-1.img");
        let offsets: Vec<u64> = pm.present().map(|r| r.offset / 4096).collect();
        assert_eq!(offsets, [0, 1, 6, 7, 9, 11, 13]);
        let non_lazy: Vec<u64> = pm.non_lazy().map(|r| r.offset / 4096).collect();
        assert_eq!(non_lazy, [0, 1, 11]);
    }

    #[test]
    fn locate_and_index() {
        let pm = Pagemap {
            pages_id: 3,
            entries: vec![
                PagemapEntry {
                    vaddr: 0x10000,
                    nr_pages: 4,
                    flags: PE_PRESENT,
                },
                // adjacent in memory and in the file
                PagemapEntry {
                    vaddr: 0x14000,
                    nr_pages: 2,
                    flags: PE_PRESENT | PE_LAZY,
                },
                PagemapEntry {
                    vaddr: 0x16000,
                    nr_pages: 2,
                    flags: PE_PARENT,
                },
                PagemapEntry {
                    vaddr: 0x18000,
                    nr_pages: 3,
                    flags: PE_LAZY,
                },
                PagemapEntry {
                    vaddr: 0x20000,
                    nr_pages: 1,
                    flags: PE_PRESENT | PE_LAZY,
                },
            ],
        };
        let idx = pm.index().unwrap();
        for (vaddr, want, expect) in [
            (0x10000, 1, Some((0, 1))),
            (0x11000, 100, Some((0x1000, 5))),
            (0x14000, 2, Some((0x4000, 2))),
            (0x15000, 9, Some((0x5000, 1))),
            (0x16000, 1, None),
            (0x18000, 1, None),
            (0x20000, 5, Some((0x6000, 1))),
            (0x21000, 1, None),
            (0x0, 1, None),
            (0x10800, 1, None),
            (0x10000, 0, None),
        ] {
            let expect = expect.map(|(offset, nr_pages)| Located { offset, nr_pages });
            assert_eq!(pm.locate(vaddr, want), expect, "{vaddr:#x}");
            assert_eq!(idx.locate(vaddr, want), expect, "{vaddr:#x}");
        }
        let mut overlapping = pm.clone();
        overlapping.entries[1].vaddr = 0x13000;
        assert!(matches!(overlapping.index(), Err(Error::BadImage(_))));
    }

    #[test]
    fn compat_entries() {
        // nr_pages in field 2, no flags: present.
        let e1: &[u8] = &[0x08, 0x80, 0x20, 0x10, 0x03];
        // in_parent = true
        let e2: &[u8] = &[0x08, 0x80, 0x40, 0x10, 0x01, 0x18, 0x01];
        // flags given, field 5 overrides field 2, unknown-but-skippable wire types are not allowed
        let e3: &[u8] = &[0x08, 0x80, 0x60, 0x10, 0x01, 0x20, 0x02, 0x28, 0x07];
        let pm = Pagemap::parse(&img(&[&[0x08, 0x05], e1, e2, e3])).unwrap();
        assert_eq!(pm.pages_id, 5);
        assert_eq!(
            pm.entries,
            [
                PagemapEntry {
                    vaddr: 0x1000,
                    nr_pages: 3,
                    flags: PE_PRESENT
                },
                PagemapEntry {
                    vaddr: 0x2000,
                    nr_pages: 1,
                    flags: PE_PARENT
                },
                PagemapEntry {
                    vaddr: 0x3000,
                    nr_pages: 7,
                    flags: PE_LAZY
                },
            ]
        );
        // Written back in the 4.2 layout.
        let again = Pagemap::parse(&pm.to_bytes()).unwrap();
        assert_eq!(again, pm);
    }

    #[test]
    fn rejects_bad_images() {
        let head: &[u8] = &[0x08, 0x01];
        let good_entry: &[u8] = &[0x08, 0x80, 0x20, 0x10, 0x00, 0x20, 0x04, 0x28, 0x01];
        assert!(Pagemap::parse(&img(&[head, good_entry])).is_ok());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "magic"),
            (vec![0x19, 0x43], "magic"),
            (
                0x1234_5678u32.to_ne_bytes().repeat(2),
                "unknown image magic",
            ),
            (
                [IMG_COMMON_MAGIC.to_ne_bytes(), 0x1111u32.to_ne_bytes()].concat(),
                "not the pagemap magic",
            ),
            (img(&[]), "no pagemap_head"),
            (img(&[&[0x10, 0x01]]), "unknown field 2"),
            (img(&[&[]]), "pages_id is missing"),
            (img(&[&[0x08, 0xff, 0xff, 0xff, 0xff, 0x1f]]), "32 bits"),
            (img(&[head, &[0x08]]), "truncated varint"),
            (img(&[head, &[0x08, 0x80, 0x20]]), "nr_pages is missing"),
            (img(&[head, &[0x10, 0x01]]), "vaddr is missing"),
            (img(&[head, &[0x08, 0x01, 0x10, 0x01]]), "bad range"),
            (
                img(&[head, &[0x08, 0x80, 0x20, 0x10, 0x01, 0x20, 0x08]]),
                "unknown flags",
            ),
            (
                img(&[head, &[0x08, 0x80, 0x20, 0x10, 0x01, 0x30, 0x01]]),
                "unknown field 6",
            ),
            (
                img(&[head, &[0x08, 0x80, 0x20, 0x10, 0x01, 0x0a, 0x01, 0x00]]),
                "wrong wire type",
            ),
            (
                img(&[
                    head,
                    &[
                        0x08, 0x80, 0x20, 0x28, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                        0x80, 0x01,
                    ],
                ]),
                "bad range",
            ),
            (
                img(&[
                    head,
                    &[
                        0x08, 0x80, 0x20, 0x28, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                    ],
                ]),
                "bad range",
            ),
            (
                img(&[
                    head,
                    &[
                        0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03, 0x10,
                        0x01,
                    ],
                ]),
                "overflows",
            ),
            (
                {
                    let mut v = img(&[head]);
                    v.extend_from_slice(&2000u32.to_ne_bytes());
                    v.extend_from_slice(&[0; 2000]);
                    v
                },
                "at most 1024",
            ),
            (
                {
                    let mut v = img(&[head]);
                    v.extend_from_slice(&20u32.to_ne_bytes());
                    v.extend_from_slice(&[0x08, 0x80]);
                    v
                },
                "truncated",
            ),
            (
                {
                    let mut v = img(&[head]);
                    v.extend_from_slice(&[1, 2]);
                    v
                },
                "truncated record length",
            ),
            (vec![0; MAX_PAGEMAP_IMAGE + 1], "larger than"),
        ];
        for (bytes, want) in cases {
            let err = Pagemap::parse(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn encoding_matches_criu_for_large_values() {
        let pm = Pagemap {
            pages_id: 0x10001,
            entries: vec![PagemapEntry {
                vaddr: 0x7fff_ffff_f000,
                nr_pages: 1 << 33,
                flags: PE_PRESENT | PE_LAZY,
            }],
        };
        let bytes = pm.to_bytes();
        // head: 08 81 80 04
        assert_eq!(&bytes[8..16], &[4, 0, 0, 0, 0x08, 0x81, 0x80, 0x04]);
        let pm2 = Pagemap::parse(&bytes).unwrap();
        assert_eq!(pm2, pm);
    }
}
