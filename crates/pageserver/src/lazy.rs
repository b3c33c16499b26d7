//! The source side of lazy restore: answering `criu lazy-pages --page-server` (`criu/uffd.c`)
//! from images whose pages live elsewhere, and preparing the local pages files that
//! `criu restore --lazy-pages` reads.
//!
//! The daemon (CRIU 4.2) connects once the restore has handed it the userfaultfds, then sends
//! `PS_IOV_GET { nr_pages, vaddr, dst_id = pid }` (plain pid, not an encoded `dst_id`) for page
//! faults (1 page) and for background transfer (64 KiB growing to 4 MiB). Requests may be
//! pipelined (`PR_ASYNC`): a fault can be asked while a background request is outstanding; the
//! answers must come in order. Each request lies within one pagemap entry (the daemon's
//! `pagemap_bound_check`). CRIU's own server (`page_server_get_pages`) answers with a
//! `PS_IOV_ADD_F|PE_PRESENT` header that echoes `vaddr` and `dst_id` (the daemon matches the
//! answer to its request by them) with `nr_pages` at most the requested count, then the data; the
//! daemon accepts fewer pages than asked (`page_server_read` shrinks its goal) and asks again for
//! the rest. When CRIU's server has no pages (`nr_pages` would be 0) it ends the session with an
//! error instead of answering; so does [`serve_lazy`]. When every page is in, the daemon sends
//! `PS_IOV_CLOSE` (TCP) or `PS_IOV_FORCE_CLOSE` (`--ps-socket`) and waits for an `i32` 0.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::dump::checked_range;
use crate::error::{Error, Result};
use crate::image::{PageIndex, Pagemap, MAX_PAGEMAP_IMAGE, PE_PRESENT};
use crate::proto::*;
use crate::wire::Wire;

/// Most pages [`serve_lazy`] sends in one answer (4 MiB, the daemon's largest request).
pub const MAX_REPLY_PAGES: u64 = 1024;

/// Where the pages files' contents come from.
pub trait PageSource {
    /// Fills all of `buf` with the bytes of `pages_name` (e.g. `pages-1.img`) at `offset`.
    fn read_pages(&mut self, pages_name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// A [`PageSource`] reading pages files from a directory (files opened once, kept open).
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    files: HashMap<String, File>,
}

impl DirSource {
    /// Reads from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> DirSource {
        DirSource {
            dir: dir.into(),
            files: HashMap::new(),
        }
    }
}

impl PageSource for DirSource {
    fn read_pages(&mut self, pages_name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if pages_name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pages file name with a slash",
            ));
        }
        let f = match self.files.get(pages_name) {
            Some(f) => f,
            None => {
                let f = File::open(self.dir.join(pages_name))?;
                self.files.entry(pages_name.to_string()).or_insert(f)
            }
        };
        f.read_exact_at(buf, offset)
    }
}

/// What a lazy-pages session carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LazySummary {
    /// `PS_IOV_GET` requests answered.
    pub requests: u64,
    /// Answers with fewer pages than asked.
    pub short_answers: u64,
    /// Pages sent.
    pub pages: u64,
    /// Pagemaps loaded (one per task).
    pub pagemaps: usize,
    /// The session ended with `PS_IOV_FORCE_CLOSE` (the daemon used `--ps-socket`).
    pub force_closed: bool,
}

struct Loaded {
    pages_name: String,
    index: PageIndex,
}

/// Serves one `criu lazy-pages --page-server` session on `sock` (TCP from `--address/--port`, or
/// the other end of `--ps-socket`): answers each `PS_IOV_GET` from `pagemap-<pid>.img` in
/// `images_dir` (read once per pid) and `source`. Returns after the daemon's close command was
/// answered and, for `PS_IOV_CLOSE`, the daemon closed the connection.
///
/// Serves present entries only (the images of a normal dump, whose lazy pages are
/// `PE_LAZY|PE_PRESENT`); a request for pages that are not in the pages file ends the session
/// with [`Error::NoPages`], as CRIU's server does.
pub fn serve_lazy(
    sock: impl Read + Write,
    images_dir: &Path,
    source: &mut impl PageSource,
) -> Result<LazySummary> {
    let mut wire = Wire::new(sock, 4096);
    let mut out = vec![0u8; IOV_SIZE + (MAX_REPLY_PAGES * PAGE_SIZE) as usize];
    let mut maps: HashMap<u64, Loaded> = HashMap::new();
    let mut summary = LazySummary::default();

    loop {
        let Some(iov) = wire.read_iov()? else {
            return Err(Error::NotClosed);
        };
        match iov.command() {
            PS_IOV_GET => {
                let pid = iov.dst_id;
                checked_range(iov.vaddr, iov.nr_pages)?;
                let map = match maps.entry(pid) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(load(images_dir, pid)?)
                    }
                };
                let want = iov.nr_pages.min(MAX_REPLY_PAGES);
                let found = map.index.locate(iov.vaddr, want).ok_or(Error::NoPages {
                    pid,
                    vaddr: iov.vaddr,
                })?;
                // At most MAX_REPLY_PAGES pages: fits in `out`.
                let len = (found.nr_pages * PAGE_SIZE) as usize;
                let data = &mut out[IOV_SIZE..IOV_SIZE + len];
                source
                    .read_pages(&map.pages_name, found.offset, data)
                    .map_err(|source| Error::Source {
                        pages_name: map.pages_name.clone(),
                        offset: found.offset,
                        len,
                        source,
                    })?;
                let answer = PsIov::new(
                    PS_IOV_ADD_F,
                    PE_PRESENT,
                    found.nr_pages,
                    iov.vaddr,
                    iov.dst_id,
                );
                out[..IOV_SIZE].copy_from_slice(&answer.encode());
                wire.write(&out[..IOV_SIZE + len])?;
                summary.requests += 1;
                summary.pages += found.nr_pages;
                if found.nr_pages < iov.nr_pages {
                    summary.short_answers += 1;
                }
            }
            PS_IOV_CLOSE | PS_IOV_FORCE_CLOSE => {
                wire.write(&0i32.to_ne_bytes())?;
                summary.force_closed = iov.command() == PS_IOV_FORCE_CLOSE;
                if !summary.force_closed {
                    wire.expect_eof()?;
                }
                summary.pagemaps = maps.len();
                return Ok(summary);
            }
            c @ (PS_IOV_ADD | PS_IOV_HOLE | PS_IOV_OPEN | PS_IOV_OPEN2 | PS_IOV_PARENT
            | PS_IOV_ADD_F) => {
                return Err(Error::UnexpectedCommand {
                    command: command_name(c),
                    session: "lazy-pages",
                })
            }
            _ => return Err(Error::UnknownCommand(iov.cmd)),
        }
    }
}

/// Reads and indexes `pagemap-<pid>.img`.
fn load(images_dir: &Path, pid: u64) -> Result<Loaded> {
    // The daemon's pids are ints; anything else cannot name a pagemap it restored.
    if pid > i32::MAX as u64 {
        return Err(Error::NoPages { pid, vaddr: 0 });
    }
    let name = DstId {
        kind: PagemapKind::Task,
        id: pid,
    }
    .pagemap_name();
    let pagemap = read_pagemap(&images_dir.join(&name)).map_err(Error::in_file(&name))?;
    let index = pagemap.index().map_err(Error::in_file(&name))?;
    Ok(Loaded {
        pages_name: pagemap.pages_name(),
        index,
    })
}

/// Reads and parses a pagemap image file (at most [`MAX_PAGEMAP_IMAGE`] bytes are read).
pub fn read_pagemap(path: &Path) -> Result<Pagemap> {
    let f = File::open(path).map_err(Error::io("opening the pagemap image"))?;
    let mut bytes = Vec::new();
    f.take(MAX_PAGEMAP_IMAGE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io("reading the pagemap image"))?;
    Pagemap::parse(&bytes)
}

/// Writes the local pages file of a lazy restore: `dest` (the pages file `pagemap` names, e.g.
/// `pages-1.img` in the restore's images directory) gets the present, non-lazy pages at their
/// offsets, read from `source` as `pages_name`, and is sized to hold every present page; the lazy
/// ranges stay holes. Returns the bytes written.
pub fn write_non_lazy(
    pagemap: &Pagemap,
    source: &mut impl PageSource,
    pages_name: &str,
    dest: &File,
) -> Result<u64> {
    const CHUNK: u64 = 1 << 20;
    dest.set_len(pagemap.present_bytes())
        .map_err(Error::io("sizing the local pages file"))?;
    let mut buf = Vec::new();
    let mut written = 0u64;
    for r in pagemap.non_lazy() {
        let mut done = 0u64;
        let total = r.len_bytes();
        while done < total {
            let n = (total - done).min(CHUNK);
            let off = r.offset.saturating_add(done);
            // n <= CHUNK: the cast cannot truncate.
            buf.resize(n as usize, 0);
            source
                .read_pages(pages_name, off, &mut buf)
                .map_err(|source| Error::Source {
                    pages_name: pages_name.to_string(),
                    offset: off,
                    len: buf.len(),
                    source,
                })?;
            dest.write_all_at(&buf, off)
                .map_err(Error::io("writing the local pages file"))?;
            done += n;
        }
        written += total;
    }
    Ok(written)
}
