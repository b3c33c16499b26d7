//! stasis-pageserver: CRIU's page-server protocol, both ways, and CRIU pagemap images.
//!
//! * [`proto`] — the wire format: `struct page_server_iov`, commands, `dst_id`, file names;
//! * [`image`] — `pagemap-*.img` parse/write and where each page is in `pages-*.img`;
//! * [`cgroup`] — whether `cgroup.img` lets a restore leave the cgroups to runc;
//! * [`serve_dump`] — receive `criu dump --page-server` into a [`DumpSink`] (what
//!   `criu page-server` does), e.g. [`DirSink`];
//! * [`serve_lazy`] — answer `criu lazy-pages --page-server` from a [`PageSource`] (e.g.
//!   [`DirSource`]), and [`write_non_lazy`] for the local part of a lazy restore.
//!
//! Everything read from a socket or an image file is untrusted: malformed input is an [`Error`],
//! never a panic. Page size is 4096 and byte order native, as CRIU on x86_64 uses.
//!
//! Checked against CRIU 4.2 (`criu/page-xfer.c`, `criu/uffd.c`, `criu/pagemap.c`,
//! `criu/image.c`, `images/pagemap.proto`) and exercised with the real `criu` in the tests.

pub mod cgroup;
mod dump;
mod error;
pub mod image;
mod lazy;
pub mod proto;
mod wire;

pub use dump::{serve_dump, DirSink, DumpSink, DumpSummary, DumpedPagemap, DUMP_BUFFER};
pub use error::{Error, Result};
pub use image::{Located, PageIndex, Pagemap, PagemapEntry, PresentRange};
pub use image::{PE_LAZY, PE_PARENT, PE_PRESENT};
pub use lazy::MAX_REPLY_PAGES;
pub use lazy::{read_pagemap, serve_lazy, write_non_lazy, DirSource, LazySummary, PageSource};
pub use proto::{DstId, PagemapKind, PsIov};
