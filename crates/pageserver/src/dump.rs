//! The receiving side of `criu dump --page-server`: what `criu page-server` does
//! (`page_server_serve`, `page_server_open`, `page_server_add` in `criu/page-xfer.c`), with the
//! pages handed to a [`DumpSink`] instead of files.
//!
//! CRIU 4.2 sends, per task and per shmem segment: `PS_IOV_OPEN2` (reply: 1 byte `has_parent`),
//! `PS_IOV_ADD_F` messages in address order (flags in the high 16 bits of `cmd`; page data after
//! the header when `PE_PRESENT`), and at the end `PS_IOV_CLOSE` (TCP) or `PS_IOV_FORCE_CLOSE`
//! (`--ps-socket`), replied with an `i32` 0. Pre-dumps ask `PS_IOV_PARENT` first (reply `i32`).
//!
//! Names follow CRIU's receiver: the pagemap is `pagemap-<pid>.img` / `pagemap-shmem-<shmid>.img`
//! (from `dst_id`), the pages file is `pages-<n>.img` with `n` counting from 0x10001 (65537) in
//! open order, and the pagemap's `pages_id` is that `n`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::{encode_entry, encode_head, PagemapEntry, IMG_COMMON_MAGIC, PAGEMAP_MAGIC};
use crate::image::{MAX_VADDR, PE_KNOWN, PE_PARENT, PE_PRESENT};
use crate::proto::*;
use crate::wire::Wire;

/// Size of the receive buffer: page data is read from the socket into it, and handed to
/// [`DumpSink::pages`] in slices of at most this size.
pub const DUMP_BUFFER: usize = 4 << 20;

/// Where [`serve_dump`] puts what it receives.
pub trait DumpSink {
    /// A new pages file starts (one per `PS_IOV_OPEN2`): e.g. `pages-65537.img` (the name CRIU's
    /// own page server would use).
    fn begin_pages(&mut self, pages_name: &str) -> io::Result<()>;
    /// Page data for the current pages file, in order; slices of any length.
    fn pages(&mut self, data: &[u8]) -> io::Result<()>;
    /// Page data for the current pages file: exactly `len` bytes to read from `r` (the
    /// socket). The default reads them through `buf` and hands them to [`DumpSink::pages`]; a
    /// sink with buffers of its own reads straight into them, one copy fewer.
    fn pages_from(&mut self, r: &mut dyn Read, len: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            r.read_exact(&mut buf[..n])?;
            self.pages(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
    /// The pagemap of the pages file that just ended (next `PS_IOV_OPEN2` or the close): its file
    /// name (`pagemap-1.img`) and its bytes.
    fn end_pages(&mut self, pagemap_name: &str, pagemap: &[u8]) -> io::Result<()>;
}

/// One pagemap received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedPagemap {
    /// Whose pagemap.
    pub dst: DstId,
    /// `pagemap-<pid>.img` or `pagemap-shmem-<shmid>.img`.
    pub pagemap_name: String,
    /// `pages-<n>.img`.
    pub pages_name: String,
    /// Pagemap entries.
    pub entries: u64,
    /// Pages written to the pages file.
    pub present_pages: u64,
}

/// What a dump session carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// The pagemaps, in open order.
    pub pagemaps: Vec<DumpedPagemap>,
    /// Messages received, close included.
    pub messages: u64,
    /// Bytes of page data received.
    pub page_bytes: u64,
    /// The session ended with `PS_IOV_FORCE_CLOSE` (the sender used `--ps-socket`) rather than
    /// `PS_IOV_CLOSE`.
    pub force_closed: bool,
}

struct Open {
    raw_dst: u64,
    info: DumpedPagemap,
    pagemap: Vec<u8>,
}

/// Serves one dump session on `sock`: the whole conversation with `criu dump --page-server`
/// (`--address/--port` or `--ps-socket`) or with `criu pre-dump`. Returns after the sender's
/// close command has been answered and, for `PS_IOV_CLOSE`, the sender has closed the connection.
///
/// Every pagemap ends at the next open or at the close, so when this returns `Ok` every
/// [`DumpSink::end_pages`] has been called. No parent images are offered (`has_parent` 0,
/// `PS_IOV_PARENT` answered 0): the sender dumps everything.
///
/// For a `TcpStream`, set `TCP_NODELAY` (CRIU's server does) so that the 1-byte `PS_IOV_OPEN2`
/// answers leave at once.
pub fn serve_dump(sock: impl Read + Write, sink: &mut impl DumpSink) -> Result<DumpSummary> {
    let mut wire = Wire::new(sock, DUMP_BUFFER);
    let mut summary = DumpSummary::default();
    let mut next_pages_id = Some(PAGE_SERVER_FIRST_PAGES_ID);
    let mut open: Option<Open> = None;

    loop {
        let Some(iov) = wire.read_iov()? else {
            return Err(Error::NotClosed);
        };
        summary.messages += 1;
        let command = iov.command();
        match command {
            PS_IOV_OPEN | PS_IOV_OPEN2 => {
                let dst = DstId::decode(iov.dst_id).ok_or(Error::BadDstId(iov.dst_id))?;
                finish(open.take(), sink, &mut summary)?;
                let pages_id = next_pages_id.ok_or(Error::TooManyPagesFiles)?;
                next_pages_id = pages_id.checked_add(1);
                let info = DumpedPagemap {
                    dst,
                    pagemap_name: dst.pagemap_name(),
                    pages_name: pages_name(pages_id),
                    entries: 0,
                    present_pages: 0,
                };
                sink.begin_pages(&info.pages_name)
                    .map_err(sink_err("begin_pages", &info.pages_name))?;
                let mut pagemap = Vec::with_capacity(4096);
                pagemap.extend_from_slice(&IMG_COMMON_MAGIC.to_ne_bytes());
                pagemap.extend_from_slice(&PAGEMAP_MAGIC.to_ne_bytes());
                encode_head(pages_id, &mut pagemap);
                open = Some(Open {
                    raw_dst: iov.dst_id,
                    info,
                    pagemap,
                });
                if command == PS_IOV_OPEN2 {
                    wire.write(&[0u8])?; // has_parent
                }
            }
            PS_IOV_PARENT => {
                DstId::decode(iov.dst_id).ok_or(Error::BadDstId(iov.dst_id))?;
                wire.write(&0i32.to_ne_bytes())?;
            }
            PS_IOV_ADD_F | PS_IOV_ADD | PS_IOV_HOLE => {
                let flags = match command {
                    PS_IOV_ADD_F => iov.flags(),
                    PS_IOV_ADD => PE_PRESENT,
                    _ => PE_PARENT,
                };
                let cur = match open.as_mut() {
                    Some(o) if o.raw_dst == iov.dst_id => o,
                    other => {
                        return Err(Error::NotOpen {
                            dst_id: iov.dst_id,
                            open: other.map_or("none".to_string(), |o| o.info.dst.to_string()),
                        })
                    }
                };
                if flags & !PE_KNOWN != 0 {
                    return Err(Error::BadFlags(flags));
                }
                let len = checked_range(iov.vaddr, iov.nr_pages)?;
                let entry = PagemapEntry {
                    vaddr: iov.vaddr,
                    nr_pages: iov.nr_pages,
                    flags,
                };
                encode_entry(&entry, &mut cur.pagemap);
                cur.info.entries += 1;
                if flags & PE_PRESENT != 0 {
                    let name = &cur.info.pages_name;
                    wire.read_data_into(len, sink, name)?;
                    cur.info.present_pages += iov.nr_pages;
                    summary.page_bytes += len;
                }
            }
            PS_IOV_CLOSE | PS_IOV_FORCE_CLOSE => {
                // Flush to the sink before answering: when the sender sees the answer, the
                // images are complete.
                finish(open.take(), sink, &mut summary)?;
                wire.write(&0i32.to_ne_bytes())?;
                summary.force_closed = command == PS_IOV_FORCE_CLOSE;
                if command == PS_IOV_CLOSE {
                    wire.expect_eof()?;
                }
                return Ok(summary);
            }
            PS_IOV_GET => {
                return Err(Error::UnexpectedCommand {
                    command: command_name(command),
                    session: "dump",
                })
            }
            _ => return Err(Error::UnknownCommand(iov.cmd)),
        }
    }
}

/// Bytes of `nr_pages` at `vaddr`, if that is a sane, non-empty, page-aligned range.
pub(crate) fn checked_range(vaddr: u64, nr_pages: u64) -> Result<u64> {
    let bad = || Error::BadRange { vaddr, nr_pages };
    let len = nr_pages.checked_mul(PAGE_SIZE).ok_or_else(bad)?;
    let end = vaddr.checked_add(len).ok_or_else(bad)?;
    if nr_pages == 0 || vaddr % PAGE_SIZE != 0 || end > MAX_VADDR {
        return Err(bad());
    }
    Ok(len)
}

fn finish(open: Option<Open>, sink: &mut impl DumpSink, summary: &mut DumpSummary) -> Result<()> {
    if let Some(o) = open {
        sink.end_pages(&o.info.pagemap_name, &o.pagemap)
            .map_err(sink_err("end_pages", &o.info.pagemap_name))?;
        summary.pagemaps.push(o.info);
    }
    Ok(())
}

fn sink_err<'a>(op: &'static str, name: &'a str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Sink {
        op,
        name: name.to_string(),
        source,
    }
}

/// A [`DumpSink`] that writes the files into a directory, as `criu page-server -D dir` would.
#[derive(Debug)]
pub struct DirSink {
    dir: PathBuf,
    pages: Option<File>,
}

impl DirSink {
    /// Writes into `dir` (which must exist); existing files of the same names are replaced.
    pub fn new(dir: impl Into<PathBuf>) -> DirSink {
        DirSink {
            dir: dir.into(),
            pages: None,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl DumpSink for DirSink {
    fn begin_pages(&mut self, pages_name: &str) -> io::Result<()> {
        self.pages = Some(File::create(self.dir.join(pages_name))?);
        Ok(())
    }

    fn pages(&mut self, data: &[u8]) -> io::Result<()> {
        match self.pages.as_mut() {
            Some(f) => f.write_all(data),
            None => Err(io::Error::other("page data before a pages file was opened")),
        }
    }

    fn end_pages(&mut self, pagemap_name: &str, pagemap: &[u8]) -> io::Result<()> {
        self.pages = None;
        std::fs::write(self.dir.join(pagemap_name), pagemap)
    }
}
