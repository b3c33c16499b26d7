//! A buffered page-server connection: one long-lived buffer, headers and page data read into it
//! with as few `read` calls as possible, page data handed out as slices of it (one copy, from the
//! socket into the buffer).

use std::io::{self, Read, Write};

use crate::dump::DumpSink;
use crate::error::{Error, Result};
use crate::proto::{PsIov, IOV_SIZE};

pub(crate) struct Wire<S> {
    sock: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<S: Read + Write> Wire<S> {
    pub(crate) fn new(sock: S, capacity: usize) -> Wire<S> {
        Wire {
            sock,
            buf: vec![0u8; capacity.max(IOV_SIZE)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Reads more bytes after the buffered ones; 0 at end of stream.
    fn fill(&mut self) -> Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.sock.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading from the page-server socket")(e)),
            }
        }
    }

    /// The next message header; `None` if the peer closed the connection between messages.
    pub(crate) fn read_iov(&mut self) -> Result<Option<PsIov>> {
        while self.end - self.start < IOV_SIZE {
            if self.fill()? == 0 {
                if self.start == self.end {
                    return Ok(None);
                }
                return Err(Error::Truncated("a message header"));
            }
        }
        let mut h = [0u8; IOV_SIZE];
        h.copy_from_slice(&self.buf[self.start..self.start + IOV_SIZE]);
        self.start += IOV_SIZE;
        Ok(Some(PsIov::decode(&h)))
    }

    /// `len` bytes of page data for `sink`: what is already buffered as a slice, the rest
    /// read by the sink itself from the socket ([`DumpSink::pages_from`]).
    pub(crate) fn read_data_into(
        &mut self,
        len: u64,
        sink: &mut impl DumpSink,
        name: &str,
    ) -> Result<()> {
        let sink_err = |op: &'static str| {
            move |source: io::Error| Error::Sink {
                op,
                name: name.to_string(),
                source,
            }
        };
        let buffered =
            usize::try_from(len).map_or(self.end - self.start, |l| l.min(self.end - self.start));
        if buffered > 0 {
            sink.pages(&self.buf[self.start..self.start + buffered])
                .map_err(sink_err("pages"))?;
            self.start += buffered;
        }
        let rest = len - buffered as u64;
        if rest > 0 {
            sink.pages_from(&mut self.sock, rest, &mut self.buf)
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        Error::Truncated("page data")
                    } else {
                        sink_err("pages")(e)
                    }
                })?;
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.sock
            .write_all(bytes)
            .and_then(|()| self.sock.flush())
            .map_err(Error::io("writing to the page-server socket"))
    }

    /// After `PS_IOV_CLOSE`: the peer must close without sending more (CRIU's server does the
    /// same, to leave the TIME_WAIT on the peer's side).
    pub(crate) fn expect_eof(&mut self) -> Result<()> {
        if self.start != self.end || self.fill()? != 0 {
            return Err(Error::TrailingData);
        }
        Ok(())
    }
}
