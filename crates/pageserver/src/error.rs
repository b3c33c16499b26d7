//! The crate's one error type.

use std::io;

/// Everything that can go wrong in this crate.
///
/// Bytes from the socket and from image files are untrusted: every malformed input ends up here,
/// never in a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on the socket or on a file this crate opened itself.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The [`DumpSink`](crate::DumpSink) failed.
    #[error("dump sink failed in {op} for {name}: {source}")]
    Sink {
        /// `begin_pages`, `pages` or `end_pages`.
        op: &'static str,
        /// The pages or pagemap file name concerned.
        name: String,
        /// The sink's error.
        #[source]
        source: io::Error,
    },
    /// The [`PageSource`](crate::PageSource) failed.
    #[error("reading {len} bytes of {pages_name} at offset {offset}: {source}")]
    Source {
        /// The pages file name.
        pages_name: String,
        /// Byte offset in it.
        offset: u64,
        /// Bytes wanted.
        len: usize,
        /// The source's error.
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection in the middle of a message.
    #[error("page-server connection closed in the middle of {0}")]
    Truncated(&'static str),
    /// The peer closed the connection without sending `PS_IOV_CLOSE`/`PS_IOV_FORCE_CLOSE`.
    #[error(
        "page-server connection closed without a close command (the peer failed or was killed)"
    )]
    NotClosed,
    /// Bytes arrived after `PS_IOV_CLOSE`.
    #[error("unexpected data after the page-server close command")]
    TrailingData,
    /// A command number this crate does not know.
    #[error("unknown page-server command {0:#x}")]
    UnknownCommand(u32),
    /// A known command that makes no sense in this kind of session.
    #[error("{command} is not allowed in a {session} page-server session")]
    UnexpectedCommand {
        /// Command name, e.g. `PS_IOV_GET`.
        command: &'static str,
        /// `dump` or `lazy-pages`.
        session: &'static str,
    },
    /// A `dst_id` whose type byte is neither a task nor a shmem pagemap.
    #[error("unknown pagemap type in page-server dst_id {0:#x}")]
    BadDstId(u64),
    /// Pages for a pagemap that is not the one currently open.
    #[error("pages for dst_id {dst_id:#x} arrived without opening it first (open: {open})")]
    NotOpen {
        /// The message's `dst_id`.
        dst_id: u64,
        /// The open pagemap, or `none`.
        open: String,
    },
    /// A page range that is unaligned, empty where it must not be, or beyond any address space.
    #[error("bad page range: {nr_pages} pages at {vaddr:#x}")]
    BadRange {
        /// Start address.
        vaddr: u64,
        /// Length in pages.
        nr_pages: u64,
    },
    /// Pagemap flags with bits this crate does not know (`PE_PARENT|PE_LAZY|PE_PRESENT` only).
    #[error("unknown pagemap flags {0:#x}")]
    BadFlags(u32),
    /// The session opened more pages files than a `u32` pages id can number.
    #[error("too many pages files in one page-server session")]
    TooManyPagesFiles,
    /// A malformed pagemap image.
    #[error("bad pagemap image: {0}")]
    BadImage(String),
    /// An error about one named image file.
    #[error("{name}: {source}")]
    File {
        /// File name (relative to the images directory).
        name: String,
        /// What went wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// A lazy-pages request for pages that the pagemap does not hold in its pages file.
    #[error("no pages in the image for pid {pid} at {vaddr:#x}")]
    NoPages {
        /// The requesting task.
        pid: u64,
        /// The requested address.
        vaddr: u64,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { what, source }
    }

    pub(crate) fn in_file(name: impl Into<String>) -> impl FnOnce(Error) -> Error {
        move |source| Error::File {
            name: name.into(),
            source: Box::new(source),
        }
    }
}
