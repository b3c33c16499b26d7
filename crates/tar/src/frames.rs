//! Seekable zstd: a parallel writer of independent zstd frames followed by a
//! seek table, and random-access readers of such streams.
//!
//! # Layout
//!
//! A stream written by [`FrameWriter`] is a concatenation of independent zstd
//! frames followed by one skippable frame holding a seek table in the
//! [zstd seekable format] (`contrib/seekable_format` in the zstd repository):
//!
//! ```text
//! frame 0 | frame 1 | ... | frame n-1 | 5E 2A 4D 18, size u32 LE,
//!     n x (compressed size u32 LE, decompressed size u32 LE),
//!     n u32 LE, descriptor u8 (0), B1 EA 92 8F
//! ```
//!
//! Standard decoders (`zstd -d`, the `zstd` crate's stream decoder, Podman's
//! klauspost/compress decoder) read it as one ordinary zstd stream: frames
//! are concatenated and skippable frames are ignored.
//!
//! Compressed frames carry their content size in the frame header and a
//! content checksum, which readers verify. "Raw" frames
//! ([`FrameWriter::raw_frame`]) are one stored block with no checksum so their
//! bytes can be overwritten after the fact ([`FrameWriter::patch`]), e.g. a tar
//! header whose size is only known at the end.
//!
//! # Reading
//!
//! [`SeekTable::read_from`] finds the table at the end of a stream (or tells
//! that there is none, as in archives Podman writes); [`FrameReader`] then
//! reads arbitrary decompressed ranges and [`SeekableDecoder`] is a sequential
//! `Read + Seek` view whose seeks jump through the table without decompressing
//! the frames in between.
//!
//! [zstd seekable format]: https://github.com/facebook/zstd/blob/dev/contrib/seekable_format/zstd_seekable_compression_format.md

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe::{self, CParameter};

use crate::TarError;

/// Suggested uncompressed frame size: 1 MiB.
///
/// Each frame restarts the compressor, so smaller frames compress a little
/// worse: on half-random 4 KiB pages at level 1 (zstd's level 1 window is
/// 512 KiB anyway), 1 MiB frames come within 0.01 % of `zstd -1` and 256 KiB
/// frames within 0.05 %. A random 4 KiB read decompresses one whole frame:
/// about 0.2 ms at 1 MiB, 0.07 ms at 256 KiB, so lazy-restore readers may
/// prefer 256 KiB (writing is as fast). At 1 MiB a 1 GiB stream has 1024
/// frames (8 KiB of seek table, plenty of work for the workers) and the
/// writer holds `threads + 2` frames of input and as many of output: about
/// 8 MiB with 2 threads.
pub const DEFAULT_FRAME_SIZE: usize = 1 << 20;

/// Largest uncompressed frame size accepted by the writer and by
/// [`SeekTable::read_from`] for any frame: 64 MiB.
pub const MAX_FRAME_SIZE: usize = 64 << 20;

/// Largest payload of a raw frame: one stored block (128 KiB - 1).
pub const MAX_RAW_FRAME: usize = 128 * 1024 - 1;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const SKIPPABLE_HEADER_LEN: u64 = 8;
const FOOTER_LEN: u64 = 9;
/// Largest frame count of the seekable format (`ZSTD_SEEKABLE_MAXFRAMES`).
const MAX_FRAMES: u64 = 0x800_0000;
/// The smallest zstd frame: magic, descriptor, one window/size byte and an
/// empty last block.
const MIN_FRAME_LEN: u64 = 9;
/// Descriptor bit: every entry has a third field, a checksum.
const DESC_CHECKSUM: u8 = 0x80;
/// Descriptor bits that must be zero.
const DESC_RESERVED: u8 = 0x7C;

// ------------------------------------------------------------------ writer

/// A frame written to the inner writer: where it is and how big it is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Offset of the frame from the start of the stream.
    c_off: u64,
    c_len: u32,
    d_len: u32,
}

/// The two buffers of one frame in flight: its input and its compressed
/// bytes. The writer owns a fixed number of them (the memory bound).
#[derive(Default)]
struct Bufs {
    input: Vec<u8>,
    out: Vec<u8>,
}

/// A frame ready to be written: `bufs.out` holds its bytes.
struct Done {
    seq: u64,
    d_len: usize,
    raw: bool,
    bufs: Bufs,
}

/// Test-only fault injection into the compression of one frame.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Error,
    Panic,
    /// Compress after a pause, so that later frames queue behind this one.
    Slow,
}

struct Job {
    seq: u64,
    d_off: u64,
    bufs: Bufs,
    #[cfg(test)]
    fault: Option<Fault>,
}

/// What the writer thread receives, from the workers and the caller.
enum Msg {
    Frame(Done),
    Failed(io::Error),
    Patch {
        index: u64,
        payload: u64,
        data: Vec<u8>,
    },
    /// Write everything up to frame `frames`, flush, then acknowledge.
    Flush {
        frames: u64,
        ack: mpsc::SyncSender<()>,
    },
    /// Write everything up to frame `frames`, then the seek table, and end.
    Finish {
        frames: u64,
    },
}

/// Writes frames to `w` in order and keeps their seek table entries. Owned
/// by the writer thread, or by the [`FrameWriter`] when it has no workers.
struct Sink<W> {
    w: W,
    /// Position of `w` when the writer was created (for patches).
    base: u64,
    /// Compressed bytes written to `w`.
    written: u64,
    /// Frames written to `w`.
    entries: Vec<Entry>,
    /// Frames that arrived before an earlier one; `pending[0]` is frame
    /// `entries.len()`.
    pending: VecDeque<Option<Done>>,
    /// Buffers of the frames written, to hand back.
    freed: Vec<Bufs>,
}

impl<W: Write + Seek> Sink<W> {
    fn frames(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Takes a frame and writes every frame that is ready, in order.
    fn push(&mut self, done: Done) -> io::Result<()> {
        let i = (done.seq - self.frames()) as usize;
        if self.pending.len() <= i {
            self.pending.resize_with(i + 1, || None);
        }
        self.pending[i] = Some(done);
        while let Some(Some(_)) = self.pending.front() {
            let Some(Some(done)) = self.pending.pop_front() else {
                unreachable!("checked above")
            };
            let out = &done.bufs.out;
            self.w.write_all(out)?;
            self.entries.push(Entry {
                c_off: self.written,
                c_len: out.len() as u32,
                d_len: done.d_len as u32,
            });
            self.written += out.len() as u64;
            self.freed.push(done.bufs);
        }
        Ok(())
    }

    /// Overwrites the payload of raw frame `index`, in memory if it waits
    /// for an earlier frame, else in `w`.
    fn patch(&mut self, index: u64, payload: u64, data: &[u8]) -> io::Result<()> {
        let end = payload + data.len() as u64;
        let not_raw = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "zstd frame {index} is not a raw frame of {} bytes",
                    data.len()
                ),
            )
        };
        if index < self.frames() {
            let e = self.entries[index as usize];
            if e.d_len as usize != data.len() || u64::from(e.c_len) != end {
                return Err(not_raw());
            }
            let at = self.base + e.c_off + payload;
            self.w.seek(SeekFrom::Start(at))?;
            self.w.write_all(data)?;
            self.w.seek(SeekFrom::Start(self.base + self.written))?;
            return Ok(());
        }
        match self.pending.get_mut((index - self.frames()) as usize) {
            Some(Some(done)) if done.raw && done.bufs.out.len() as u64 == end => {
                done.bufs.out[payload as usize..].copy_from_slice(data);
                Ok(())
            }
            _ => Err(not_raw()),
        }
    }

    /// Appends the seek table (every frame written) and flushes `w`.
    fn write_table(&mut self) -> io::Result<()> {
        let n = self.entries.len();
        if n as u64 > MAX_FRAMES {
            return Err(io::Error::other(format!(
                "{n} frames, more than the seekable format allows ({MAX_FRAMES})"
            )));
        }
        let body = n as u64 * 8 + FOOTER_LEN;
        let mut t = Vec::with_capacity((SKIPPABLE_HEADER_LEN + body) as usize);
        t.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        t.extend_from_slice(&(body as u32).to_le_bytes());
        for e in &self.entries {
            t.extend_from_slice(&e.c_len.to_le_bytes());
            t.extend_from_slice(&e.d_len.to_le_bytes());
        }
        t.extend_from_slice(&(n as u32).to_le_bytes());
        t.push(0);
        t.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        self.w.write_all(&t)?;
        self.w.flush()
    }
}

/// The first error of a writer, shared by its threads.
#[derive(Default)]
struct Failure {
    /// Set once `error` is.
    failed: AtomicBool,
    error: Mutex<Option<(io::ErrorKind, String)>>,
}

impl Failure {
    fn set(&self, e: &io::Error) {
        let mut f = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if f.is_none() {
            *f = Some((e.kind(), e.to_string()));
            self.failed.store(true, Ordering::Release);
        }
    }

    fn get(&self) -> Option<io::Error> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        let f = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        f.as_ref().map(|(k, m)| io::Error::new(*k, m.clone()))
    }
}

fn frame_error(seq: u64, d_off: u64, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("compressing zstd frame {seq} at decompressed offset {d_off}: {e}"),
    )
}

/// Worker threads compressing frames and a writer thread writing them.
/// Dropping it (without [`FrameWriter::finish`]) stops and joins them.
struct Pool<W> {
    jobs: Option<Sender<Job>>,
    to_writer: Option<Sender<Msg>>,
    /// Buffers handed back by the writer thread.
    free: Receiver<Bufs>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

impl<W> Pool<W> {
    fn shut_down(&mut self) -> Option<thread::Result<io::Result<W>>> {
        self.jobs = None;
        self.to_writer = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        self.writer.take().map(JoinHandle::join)
    }
}

impl<W> Drop for Pool<W> {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

enum Engine<W> {
    /// `threads` 0 or 1: compress and write on the calling thread.
    Inline {
        c: Box<Compressor<'static>>,
        sink: Sink<W>,
    },
    Pool(Pool<W>),
}

/// Writes independent zstd frames of at most `frame_size` uncompressed bytes,
/// then a seek table (see the [module documentation](self)).
///
/// With `threads` >= 2, frames are compressed on that many worker threads and
/// written to `w` in order by one more thread, so the calling thread only
/// copies bytes into the current frame: it blocks only when all `threads + 2`
/// frame buffers are in use (every worker busy, one frame queued or being
/// written, one being filled). Memory: `threads + 2` times `frame_size` of
/// input plus as much compressed output, and one zstd context per worker.
/// With `threads` 0 or 1, frames are compressed and written on the calling
/// thread.
///
/// [`Write::flush`] ends the current frame, waits for every frame to be
/// written and flushes `w`. The writer must be finished with
/// [`FrameWriter::finish`]; dropping it stops the threads and leaves a stream
/// without seek table. After any error (from `w` or a worker) every later call
/// fails with the same error.
pub struct FrameWriter<W: Write + Seek + Send + 'static> {
    id: u64,
    frame_size: usize,
    /// The buffers of the frame being filled.
    cur: Option<Bufs>,
    /// Uncompressed bytes accepted.
    position: u64,
    /// Uncompressed offset where `cur` starts.
    cur_off: u64,
    /// Frames submitted (the index of the next one).
    next_seq: u64,
    /// Buffers not in use.
    spare: Vec<Bufs>,
    /// Buffers allocated, at most `cap`.
    allocated: usize,
    cap: usize,
    engine: Engine<W>,
    failure: Arc<Failure>,
    #[cfg(test)]
    fault: Option<(u64, Fault)>,
}

impl<W: Write + Seek + Send + 'static> fmt::Debug for FrameWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let threads = match &self.engine {
            Engine::Inline { .. } => 0,
            Engine::Pool(p) => p.workers.len(),
        };
        f.debug_struct("FrameWriter")
            .field("frame_size", &self.frame_size)
            .field("threads", &threads)
            .field("position", &self.position)
            .field("frames", &self.next_seq)
            .finish()
    }
}

/// A raw frame written by [`FrameWriter::raw_frame`], to be overwritten with
/// [`FrameWriter::patch`].
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// The writer that wrote it.
    writer: u64,
    /// Index of the frame in the stream.
    index: u64,
    /// Offset of the payload from the start of the frame.
    payload: u64,
    /// Uncompressed offset of the payload.
    offset: u64,
    len: usize,
}

impl RawFrame {
    /// Index of the frame in the stream (and in its seek table).
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// Offset of the payload in the decompressed stream.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn new_compressor(level: i32) -> io::Result<Compressor<'static>> {
    let mut c = Compressor::new(level)?;
    c.set_parameter(CParameter::ChecksumFlag(true))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    Ok(c)
}

/// Compresses `input` as one frame into `out` (whose capacity is kept).
fn compress_frame(c: &mut Compressor<'static>, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.reserve(zstd_safe::compress_bound(input.len()));
    c.compress_to_buffer(input, out)?;
    Ok(())
}

fn run_job(c: &mut Compressor<'static>, job: &mut Job) -> io::Result<()> {
    #[cfg(test)]
    match job.fault {
        Some(Fault::Error) => return Err(io::Error::other("injected failure")),
        Some(Fault::Panic) => panic!("injected panic"),
        Some(Fault::Slow) => thread::sleep(std::time::Duration::from_millis(300)),
        None => {}
    }
    compress_frame(c, &job.bufs.input, &mut job.bufs.out)
}

fn worker(mut c: Compressor<'static>, jobs: Arc<Mutex<Receiver<Job>>>, results: Sender<Msg>) {
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(mut job) = job else { return };
        let (seq, d_off) = (job.seq, job.d_off);
        let msg = match panic::catch_unwind(AssertUnwindSafe(|| run_job(&mut c, &mut job))) {
            Ok(Ok(())) => Msg::Frame(Done {
                seq,
                d_len: job.bufs.input.len(),
                raw: false,
                bufs: job.bufs,
            }),
            Ok(Err(e)) => Msg::Failed(frame_error(seq, d_off, e)),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                let e = io::Error::other(format!("zstd worker thread panicked: {msg}"));
                // The context may be unusable after a panic: stop this worker.
                let _ = results.send(Msg::Failed(frame_error(seq, d_off, e)));
                return;
            }
        };
        if results.send(msg).is_err() {
            return;
        }
    }
}

/// The writer thread: writes frames in order, applies patches, writes the
/// seek table on `Finish` and returns `w`. On an error it records it in
/// `failure` and returns, which disconnects the buffer channel the caller
/// waits on.
fn writer_thread<W: Write + Seek>(
    mut sink: Sink<W>,
    msgs: Receiver<Msg>,
    free: Sender<Bufs>,
    failure: Arc<Failure>,
) -> io::Result<W> {
    let r = (|| {
        let mut flush: Option<(u64, mpsc::SyncSender<()>)> = None;
        let mut finish: Option<u64> = None;
        loop {
            if flush.as_ref().is_some_and(|(n, _)| sink.frames() == *n) {
                sink.w.flush()?;
                let (_, ack) = flush.take().expect("checked above");
                let _ = ack.send(());
            }
            if finish == Some(sink.frames()) {
                return sink.write_table().map_err(|e| {
                    io::Error::new(e.kind(), format!("writing the zstd seek table: {e}"))
                });
            }
            let Ok(msg) = msgs.recv() else {
                // The FrameWriter was dropped without finish.
                return Err(io::Error::other("zstd frame writer dropped"));
            };
            match msg {
                Msg::Frame(done) => {
                    sink.push(done)?;
                    for b in sink.freed.drain(..) {
                        let _ = free.send(b);
                    }
                }
                Msg::Failed(e) => return Err(e),
                Msg::Patch {
                    index,
                    payload,
                    data,
                } => sink.patch(index, payload, &data)?,
                Msg::Flush { frames, ack } => flush = Some((frames, ack)),
                Msg::Finish { frames } => finish = Some(frames),
            }
        }
    })();
    match r {
        Ok(()) => Ok(sink.w),
        Err(e) => {
            failure.set(&e);
            Err(e)
        }
    }
}

/// The header of a single-segment frame holding `len` bytes, without
/// checksum, followed by the header of its one raw last block.
fn raw_frame_header(len: usize, h: &mut Vec<u8>) {
    debug_assert!(len <= MAX_RAW_FRAME);
    h.extend_from_slice(&ZSTD_MAGIC.to_le_bytes());
    // Frame header descriptor: Single_Segment_flag (0x20), no checksum, no
    // dictionary; Frame_Content_Size_flag picks a 1, 2 or 4 byte size.
    if len < 256 {
        h.push(0x20);
        h.push(len as u8);
    } else if len < 256 + 65536 {
        h.push(0x60);
        h.extend_from_slice(&((len - 256) as u16).to_le_bytes());
    } else {
        h.push(0xA0);
        h.extend_from_slice(&(len as u32).to_le_bytes());
    }
    // Block header: Last_Block, Block_Type 0 (raw), Block_Size.
    let block = 1u32 | ((len as u32) << 3);
    h.extend_from_slice(&block.to_le_bytes()[..3]);
}

static WRITER_IDS: AtomicU64 = AtomicU64::new(0);

impl<W: Write + Seek + Send + 'static> FrameWriter<W> {
    /// Returns a writer compressing into `w` at zstd `level` on `threads`
    /// worker threads (0 or 1 = on the calling thread), in frames of at most
    /// `frame_size` uncompressed bytes (1..=[`MAX_FRAME_SIZE`]; see
    /// [`DEFAULT_FRAME_SIZE`]). The stream starts at the current position of
    /// `w`.
    pub fn new(mut w: W, level: i32, threads: usize, frame_size: usize) -> Result<Self, TarError> {
        let range = zstd::compression_level_range();
        if !range.contains(&level) {
            return Err(TarError::InvalidLevel {
                compression: crate::Compression::Zstd,
                level,
                min: *range.start(),
                max: *range.end(),
            });
        }
        if frame_size == 0 || frame_size > MAX_FRAME_SIZE {
            return Err(TarError::FrameSize {
                size: frame_size,
                max: MAX_FRAME_SIZE,
            });
        }
        let base = w
            .stream_position()
            .map_err(|e| TarError::io("finding the start of the zstd stream", e))?;
        let sink = Sink {
            w,
            base,
            written: 0,
            entries: Vec::new(),
            pending: VecDeque::new(),
            freed: Vec::new(),
        };
        let failure = Arc::new(Failure::default());
        let compressor = || {
            new_compressor(level).map_err(|e| TarError::io("initialising the zstd compressor", e))
        };
        let (engine, cap) = if threads <= 1 {
            let c = Box::new(compressor()?);
            (Engine::Inline { c, sink }, 1)
        } else {
            let (job_tx, job_rx) = mpsc::channel::<Job>();
            let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
            let (free_tx, free_rx) = mpsc::channel::<Bufs>();
            let job_rx = Arc::new(Mutex::new(job_rx));
            let spawn_err = |e| TarError::io("starting the zstd worker threads", e);
            let mut pool = Pool {
                jobs: Some(job_tx),
                to_writer: Some(msg_tx.clone()),
                free: free_rx,
                workers: Vec::with_capacity(threads),
                writer: None,
            };
            for i in 0..threads {
                let c = compressor()?;
                let (jobs, results) = (Arc::clone(&job_rx), msg_tx.clone());
                let h = thread::Builder::new()
                    .name(format!("zstd-frames-{i}"))
                    .spawn(move || worker(c, jobs, results))
                    .map_err(spawn_err)?;
                pool.workers.push(h);
            }
            drop(msg_tx);
            let f = Arc::clone(&failure);
            let h = thread::Builder::new()
                .name("zstd-frames-out".to_string())
                .spawn(move || writer_thread(sink, msg_rx, free_tx, f))
                .map_err(spawn_err)?;
            pool.writer = Some(h);
            (Engine::Pool(pool), threads + 2)
        };
        Ok(FrameWriter {
            id: WRITER_IDS.fetch_add(1, Ordering::Relaxed),
            frame_size,
            cur: None,
            position: 0,
            cur_off: 0,
            next_seq: 0,
            spare: Vec::new(),
            allocated: 0,
            cap,
            engine,
            failure,
            #[cfg(test)]
            fault: None,
        })
    }

    /// Lets up to `n` frames be in flight (filled, queued, compressing or being
    /// written) instead of `threads + 2`: more memory (`n` times two frame
    /// buffers), fewer stalls when the input arrives in bursts, as from CRIU.
    /// Without worker threads there is one buffer whatever `n`.
    pub fn with_buffers(mut self, n: usize) -> Self {
        if matches!(self.engine, Engine::Pool(_)) {
            self.cap = self.cap.max(n);
        }
        self
    }

    /// Uncompressed bytes accepted so far: the offset of the next byte in the
    /// decompressed stream.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Ends the current frame (if it holds any bytes) so that the next byte
    /// starts a new frame.
    pub fn end_frame(&mut self) -> io::Result<()> {
        self.check()?;
        if self.cur.as_ref().is_none_or(|b| b.input.is_empty()) {
            return Ok(());
        }
        self.submit()
    }

    /// Ends the current frame, then writes `data` (at most [`MAX_RAW_FRAME`]
    /// bytes) as its own frame made of one raw (stored) block, with its
    /// content size in the frame header and no content checksum, so that its
    /// bytes can be overwritten later with [`FrameWriter::patch`].
    pub fn raw_frame(&mut self, data: &[u8]) -> io::Result<RawFrame> {
        self.end_frame()?;
        if data.len() > MAX_RAW_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "raw zstd frame of {} bytes is larger than {MAX_RAW_FRAME}",
                    data.len()
                ),
            ));
        }
        // A raw frame takes a buffer like any frame: the same memory bound.
        let mut bufs = match self.cur.take() {
            Some(b) => b,
            None => self.take_bufs()?,
        };
        bufs.out.clear();
        raw_frame_header(data.len(), &mut bufs.out);
        let payload = bufs.out.len() as u64;
        bufs.out.extend_from_slice(data);
        bufs.input.clear();
        let index = self.next_seq;
        self.next_seq += 1;
        let offset = self.position;
        self.position += data.len() as u64;
        self.cur_off = self.position;
        self.deliver(Done {
            seq: index,
            d_len: data.len(),
            raw: true,
            bufs,
        })?;
        Ok(RawFrame {
            writer: self.id,
            index,
            payload,
            offset,
            len: data.len(),
        })
    }

    /// Overwrites the payload of `frame`, a raw frame written earlier by this
    /// writer, with `data` of the same length. Applied in memory while the
    /// frame waits for earlier frames, else in `w` (seeking there and back);
    /// with worker threads, this happens on the writer thread and an error
    /// surfaces from a later call.
    pub fn patch(&mut self, frame: &RawFrame, data: &[u8]) -> io::Result<()> {
        self.check()?;
        if frame.writer != self.id || frame.index >= self.next_seq {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "zstd frame {} is not a raw frame of this writer",
                    frame.index
                ),
            ));
        }
        if data.len() != frame.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "patch of {} bytes for a raw zstd frame of {} bytes",
                    data.len(),
                    frame.len
                ),
            ));
        }
        match &mut self.engine {
            Engine::Inline { sink, .. } => {
                let r = sink.patch(frame.index, frame.payload, data);
                r.map_err(|e| self.fail(e))
            }
            Engine::Pool(_) => self.send(Msg::Patch {
                index: frame.index,
                payload: frame.payload,
                data: data.to_vec(),
            }),
        }
    }

    /// Writes every frame (ending the current one), applies the patches still
    /// pending, appends the seek table and returns `w`, flushed.
    pub fn finish(mut self) -> Result<W, TarError> {
        let ctx = "writing the zstd frames";
        self.end_frame().map_err(|e| TarError::io(ctx, e))?;
        match &mut self.engine {
            Engine::Inline { sink, .. } => {
                sink.write_table()
                    .map_err(|e| TarError::io("writing the zstd seek table", e))?;
                let Engine::Inline { sink, .. } = self.engine else {
                    unreachable!("matched above")
                };
                Ok(sink.w)
            }
            Engine::Pool(pool) => {
                let frames = self.next_seq;
                let sent = pool
                    .to_writer
                    .as_ref()
                    .is_some_and(|tx| tx.send(Msg::Finish { frames }).is_ok());
                let joined = pool.shut_down();
                let r = match joined {
                    Some(Ok(r)) => r,
                    Some(Err(_)) => Err(io::Error::other("the zstd writer thread panicked")),
                    None => Err(io::Error::other("the zstd writer thread is gone")),
                };
                let ctx = "finishing the zstd stream";
                match r {
                    Ok(w) if sent => Ok(w),
                    Ok(_) => Err(TarError::io(ctx, io::Error::other("lost the seek table"))),
                    Err(e) => Err(TarError::io(ctx, e)),
                }
            }
        }
    }

    fn check(&self) -> io::Result<()> {
        match self.failure.get() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Records the first error; every later call returns it.
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failure.set(&e);
        e
    }

    /// The error to report when a thread went away: the one it recorded.
    fn gone(&mut self) -> io::Error {
        let e = self
            .failure
            .get()
            .unwrap_or_else(|| io::Error::other("the zstd writer threads exited"));
        self.fail(e)
    }

    fn send(&mut self, msg: Msg) -> io::Result<()> {
        let Engine::Pool(pool) = &self.engine else {
            unreachable!("only with worker threads")
        };
        let sent = pool
            .to_writer
            .as_ref()
            .is_some_and(|tx| tx.send(msg).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.gone())
        }
    }

    /// A free pair of buffers: a spare one, a new one while fewer than `cap`
    /// exist, else the next one the writer thread hands back (waiting for
    /// it: every worker is busy).
    fn take_bufs(&mut self) -> io::Result<Bufs> {
        if let Engine::Pool(pool) = &self.engine {
            while let Ok(b) = pool.free.try_recv() {
                self.spare.push(b);
            }
        }
        if let Some(b) = self.spare.pop() {
            return Ok(b);
        }
        if self.allocated < self.cap {
            self.allocated += 1;
            return Ok(Bufs {
                input: Vec::with_capacity(self.frame_size),
                out: Vec::new(),
            });
        }
        let got = match &self.engine {
            Engine::Pool(pool) => pool.free.recv().ok(),
            // Frames are written at once: never happens.
            Engine::Inline { .. } => None,
        };
        got.ok_or_else(|| self.gone())
    }

    /// Hands a finished frame to the sink (inline) or the writer thread.
    fn deliver(&mut self, done: Done) -> io::Result<()> {
        match &mut self.engine {
            Engine::Inline { sink, .. } => {
                if let Err(e) = sink.push(done) {
                    return Err(self.fail(e));
                }
                self.spare.append(&mut sink.freed);
                Ok(())
            }
            Engine::Pool(_) => self.send(Msg::Frame(done)),
        }
    }

    /// Hands the current frame to a worker (or compresses it here).
    fn submit(&mut self) -> io::Result<()> {
        let Some(mut bufs) = self.cur.take() else {
            return Ok(());
        };
        let d_off = self.cur_off;
        self.cur_off = self.position;
        let seq = self.next_seq;
        self.next_seq += 1;
        #[cfg(test)]
        let fault = self.fault.filter(|f| f.0 == seq).map(|f| f.1);
        match &mut self.engine {
            Engine::Inline { c, .. } => {
                #[cfg(test)]
                if matches!(fault, Some(Fault::Error | Fault::Panic)) {
                    let e = io::Error::other("injected failure");
                    return Err(self.fail(frame_error(seq, d_off, e)));
                }
                if let Err(e) = compress_frame(c, &bufs.input, &mut bufs.out) {
                    return Err(self.fail(frame_error(seq, d_off, e)));
                }
                let d_len = bufs.input.len();
                self.deliver(Done {
                    seq,
                    d_len,
                    raw: false,
                    bufs,
                })
            }
            Engine::Pool(pool) => {
                let job = Job {
                    seq,
                    d_off,
                    bufs,
                    #[cfg(test)]
                    fault,
                };
                let sent = pool.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
                if sent {
                    Ok(())
                } else {
                    Err(self.gone())
                }
            }
        }
    }
}

impl<W: Write + Seek + Send + 'static> FrameWriter<W> {
    /// The buffers of the frame being filled, taking free ones (emptied) when there is none.
    fn current(&mut self) -> io::Result<&mut Bufs> {
        if self.cur.is_none() {
            let mut b = self.take_bufs()?;
            b.input.clear();
            self.cur = Some(b);
        }
        Ok(self.cur.get_or_insert_with(Bufs::default))
    }

    /// Reads exactly `len` bytes from `r` straight into the frames (no copy through a buffer
    /// of the caller's): what `write` would do with them. `UnexpectedEof` if `r` ends first.
    pub fn fill_from(&mut self, r: &mut dyn Read, len: u64) -> io::Result<()> {
        self.check()?;
        let frame_size = self.frame_size;
        let mut left = len;
        while left > 0 {
            let cur = self.current()?;
            let filled = cur.input.len();
            let want = (frame_size - filled).min(usize::try_from(left).unwrap_or(usize::MAX));
            cur.input.resize(filled + want, 0);
            let n = loop {
                match r.read(&mut cur.input[filled..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let n = match n {
                Ok(0) => {
                    cur.input.truncate(filled);
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(n) => n,
                Err(e) => {
                    cur.input.truncate(filled);
                    return Err(e);
                }
            };
            cur.input.truncate(filled + n);
            let full = cur.input.len() == frame_size;
            left -= n as u64;
            self.position += n as u64;
            if full {
                self.submit()?;
            }
        }
        Ok(())
    }
}

impl<W: Write + Seek + Send + 'static> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let frame_size = self.frame_size;
        let mut rest = buf;
        while !rest.is_empty() {
            let cur = self.current()?;
            let n = (frame_size - cur.input.len()).min(rest.len());
            cur.input.extend_from_slice(&rest[..n]);
            let full = cur.input.len() == frame_size;
            rest = &rest[n..];
            self.position += n as u64;
            if full {
                self.submit()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.end_frame()?;
        match &mut self.engine {
            Engine::Inline { sink, .. } => {
                let r = sink.w.flush();
                r.map_err(|e| self.fail(e))
            }
            Engine::Pool(_) => {
                let (ack, done) = mpsc::sync_channel(1);
                self.send(Msg::Flush {
                    frames: self.next_seq,
                    ack,
                })?;
                match done.recv() {
                    Ok(()) => Ok(()),
                    Err(_) => Err(self.gone()),
                }
            }
        }
    }
}

// ------------------------------------------------------------------ reader

/// Where one frame is, compressed and decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Offset of the frame from the start of the stream.
    pub compressed_offset: u64,
    /// Compressed length of the frame.
    pub compressed_len: u64,
    /// Offset of its content in the decompressed stream.
    pub decompressed_offset: u64,
    /// Length of its content.
    pub decompressed_len: u64,
}

/// The seek table of a seekable zstd stream, validated.
#[derive(Debug, Clone)]
pub struct SeekTable {
    /// Compressed offsets of the frames, plus the end of the last one.
    c: Vec<u64>,
    /// Decompressed offsets of the frames, plus the end of the last one.
    d: Vec<u64>,
}

fn table_error(reason: impl Into<String>) -> TarError {
    TarError::SeekTable {
        reason: reason.into(),
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl SeekTable {
    /// Reads the seek table at the end of `r` (which must start at the start
    /// of the zstd stream: the frames' sizes must sum to the table's offset).
    ///
    /// Returns `Ok(None)` when the stream does not end with a seek table
    /// footer, e.g. an archive Podman wrote. Every entry is untrusted: a
    /// stream that ends with the footer but whose table is malformed
    /// (truncated, more frames than fit in the stream, a frame smaller than
    /// the smallest zstd frame, larger than zstd's compress bound of its
    /// content, or holding more than [`MAX_FRAME_SIZE`] bytes, sizes that do
    /// not sum to the table's offset) is a
    /// [`TarError::SeekTable`]; a caller can still read such a stream
    /// sequentially. Entry checksums, when present, are read and ignored:
    /// frames carry their own.
    pub fn read_from<R: Read + Seek>(r: &mut R) -> Result<Option<SeekTable>, TarError> {
        let io_err = |e| TarError::io("reading the zstd seek table", e);
        let len = r.seek(SeekFrom::End(0)).map_err(io_err)?;
        if len < FOOTER_LEN {
            return Ok(None);
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        r.seek(SeekFrom::Start(len - FOOTER_LEN)).map_err(io_err)?;
        r.read_exact(&mut footer).map_err(io_err)?;
        if le32(&footer[5..9]) != SEEKABLE_MAGIC {
            return Ok(None);
        }
        let n = u64::from(le32(&footer[0..4]));
        let desc = footer[4];
        if desc & DESC_RESERVED != 0 {
            return Err(table_error(format!(
                "reserved bits set in the descriptor ({desc:#04x})"
            )));
        }
        let entry_len: u64 = if desc & DESC_CHECKSUM != 0 { 12 } else { 8 };
        if n > MAX_FRAMES {
            return Err(table_error(format!(
                "{n} frames, more than the format allows ({MAX_FRAMES})"
            )));
        }
        let table_len = SKIPPABLE_HEADER_LEN + n * entry_len + FOOTER_LEN;
        if table_len + n * MIN_FRAME_LEN > len {
            return Err(table_error(format!(
                "{n} frames do not fit in a stream of {len} bytes"
            )));
        }
        let start = len - table_len;
        let mut header = [0u8; SKIPPABLE_HEADER_LEN as usize];
        r.seek(SeekFrom::Start(start)).map_err(io_err)?;
        r.read_exact(&mut header).map_err(io_err)?;
        if le32(&header[0..4]) != SKIPPABLE_MAGIC {
            return Err(table_error(format!(
                "no skippable frame at offset {start} for a table of {n} frames (truncated?)"
            )));
        }
        let body = u64::from(le32(&header[4..8]));
        if body != table_len - SKIPPABLE_HEADER_LEN {
            return Err(table_error(format!(
                "the skippable frame holds {body} bytes, a table of {n} frames takes {}",
                table_len - SKIPPABLE_HEADER_LEN
            )));
        }
        // n is bounded by the stream length, so these are too.
        let mut c = Vec::with_capacity(n as usize + 1);
        let mut d = Vec::with_capacity(n as usize + 1);
        let (mut c_off, mut d_off) = (0u64, 0u64);
        let mut buf = vec![0u8; (entry_len * 4096) as usize];
        let mut left = n;
        while left > 0 {
            let k = left.min(4096);
            let chunk = &mut buf[..(k * entry_len) as usize];
            r.read_exact(chunk).map_err(io_err)?;
            for e in chunk.chunks_exact(entry_len as usize) {
                let i = c.len();
                let (c_len, d_len) = (u64::from(le32(&e[0..4])), u64::from(le32(&e[4..8])));
                if c_len < MIN_FRAME_LEN {
                    return Err(table_error(format!(
                        "frame {i} is {c_len} bytes long, smaller than any zstd frame"
                    )));
                }
                if d_len > MAX_FRAME_SIZE as u64 {
                    return Err(table_error(format!(
                        "frame {i} holds {d_len} bytes, more than {MAX_FRAME_SIZE}"
                    )));
                }
                // No encoder writes more (this bounds the reader's buffer).
                let bound = zstd_safe::compress_bound(d_len as usize) as u64 + 64;
                if c_len > bound {
                    return Err(table_error(format!(
                        "frame {i} is {c_len} bytes long, more than any zstd frame of {d_len} bytes"
                    )));
                }
                c.push(c_off);
                d.push(d_off);
                c_off += c_len; // at most 2^27 * 2^32: no overflow
                d_off += d_len;
                if c_off > start {
                    return Err(table_error(format!(
                        "frame {i} ends at {c_off}, after the seek table at {start}"
                    )));
                }
            }
            left -= k;
        }
        if c_off != start {
            return Err(table_error(format!(
                "the frames end at {c_off}, the seek table starts at {start}"
            )));
        }
        c.push(c_off);
        d.push(d_off);
        Ok(Some(SeekTable { c, d }))
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.c.len() - 1
    }

    /// Whether the stream has no frames.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the decompressed stream.
    pub fn decompressed_len(&self) -> u64 {
        self.d[self.d.len() - 1]
    }

    /// Length of the frames, i.e. the offset of the seek table.
    pub fn compressed_len(&self) -> u64 {
        self.c[self.c.len() - 1]
    }

    /// Index of the frame holding decompressed offset `off` (never an empty
    /// frame); `None` at or past the end.
    pub fn frame_at(&self, off: u64) -> Option<usize> {
        if off >= self.decompressed_len() {
            return None;
        }
        // The last frame starting at or before `off`; d[0] = 0 <= off.
        Some(self.d.partition_point(|&x| x <= off) - 1)
    }

    /// Where frame `i` is.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub fn frame(&self, i: usize) -> FrameInfo {
        assert!(
            i < self.len(),
            "zstd frame {i} out of range ({} frames)",
            self.len()
        );
        FrameInfo {
            compressed_offset: self.c[i],
            compressed_len: self.c[i + 1] - self.c[i],
            decompressed_offset: self.d[i],
            decompressed_len: self.d[i + 1] - self.d[i],
        }
    }
}

/// Random access into a seekable zstd stream, keeping the last decompressed
/// frame cached. Frames are decompressed with a reused context, verifying
/// their content checksums; a corrupt frame is an [`io::ErrorKind::InvalidData`]
/// error naming its index and decompressed offset.
pub struct FrameReader<R: Read + Seek> {
    r: R,
    table: SeekTable,
    dctx: Option<Decompressor<'static>>,
    /// Compressed bytes of the frame being decompressed.
    cbuf: Vec<u8>,
    /// The cached frame's content.
    cache: Vec<u8>,
    cached: Option<usize>,
}

impl<R: Read + Seek> fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReader")
            .field("frames", &self.table.len())
            .field("decompressed_len", &self.table.decompressed_len())
            .field("cached", &self.cached)
            .finish()
    }
}

/// Where to put a decompressed frame.
enum Dest<'a> {
    Cache,
    Slice(&'a mut [u8]),
}

impl<R: Read + Seek> FrameReader<R> {
    /// Reads the frames of `r` (positioned anywhere) as described by `table`.
    pub fn new(r: R, table: SeekTable) -> Self {
        FrameReader {
            r,
            table,
            dctx: None,
            cbuf: Vec::new(),
            cache: Vec::new(),
            cached: None,
        }
    }

    /// The seek table.
    pub fn table(&self) -> &SeekTable {
        &self.table
    }

    /// Returns the underlying reader.
    pub fn into_inner(self) -> R {
        self.r
    }

    /// Fills `buf` from decompressed offset `off`, across frames as needed.
    /// [`io::ErrorKind::UnexpectedEof`] if the range ends past the end of the
    /// stream (nothing is read then).
    pub fn read_exact_at(&mut self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let total = self.table.decompressed_len();
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > total)
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "reading {} bytes at offset {off} past the end of the decompressed stream ({total} bytes)",
                    buf.len()
                ),
            ));
        }
        let mut done = 0;
        while done < buf.len() {
            let pos = off + done as u64;
            let i = self
                .table
                .frame_at(pos)
                .expect("checked against the length");
            let f = self.table.frame(i);
            let skip = (pos - f.decompressed_offset) as usize;
            let n = (f.decompressed_len as usize - skip).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            if self.cached == Some(i) {
                dst.copy_from_slice(&self.cache[skip..skip + n]);
            } else if skip == 0 && n as u64 == f.decompressed_len {
                // The whole frame is wanted: no copy through the cache.
                self.decode(i, Dest::Slice(dst))?;
            } else {
                self.decode(i, Dest::Cache)?;
                dst.copy_from_slice(&self.cache[skip..skip + n]);
            }
            done += n;
        }
        Ok(())
    }

    /// Makes frame `i` the cached one and returns its content.
    fn load(&mut self, i: usize) -> io::Result<&[u8]> {
        if self.cached != Some(i) {
            self.decode(i, Dest::Cache)?;
        }
        Ok(&self.cache)
    }

    fn decode(&mut self, i: usize, dest: Dest<'_>) -> io::Result<()> {
        let f = self.table.frame(i);
        let corrupt = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "corrupt zstd frame {i} at decompressed offset {}: {what}",
                    f.decompressed_offset
                ),
            )
        };
        self.r.seek(SeekFrom::Start(f.compressed_offset))?;
        self.cbuf.clear();
        (&mut self.r)
            .take(f.compressed_len)
            .read_to_end(&mut self.cbuf)?;
        if self.cbuf.len() as u64 != f.compressed_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "zstd frame {i} at decompressed offset {} is truncated",
                    f.decompressed_offset
                ),
            ));
        }
        if self.dctx.is_none() {
            self.dctx = Some(Decompressor::new()?);
        }
        let dctx = self.dctx.as_mut().expect("just set");
        let d_len = f.decompressed_len as usize;
        let to_cache = matches!(dest, Dest::Cache);
        let r = match dest {
            Dest::Cache => {
                self.cached = None;
                self.cache.clear();
                self.cache.reserve(d_len);
                dctx.decompress_to_buffer(&self.cbuf, &mut self.cache)
            }
            Dest::Slice(s) => dctx.decompress_to_buffer(&self.cbuf, s),
        };
        match r {
            Ok(n) if n == d_len => {}
            Ok(n) => {
                return Err(corrupt(format!(
                    "{n} bytes decompressed, the seek table says {d_len}"
                )))
            }
            Err(e) => return Err(corrupt(e.to_string())),
        }
        if to_cache {
            self.cached = Some(i);
        }
        Ok(())
    }
}

/// A sequential `Read + Seek` view of the decompressed stream of a seekable
/// zstd stream. Seeking only moves the decompressed position: a forward seek
/// far ahead jumps through the seek table without decompressing the frames in
/// between (what `tar::Archive::entries_with_seek` needs to skip a big
/// entry's data). Positions past the end are allowed; reads there return 0.
pub struct SeekableDecoder<R: Read + Seek> {
    inner: FrameReader<R>,
    pos: u64,
}

impl<R: Read + Seek> fmt::Debug for SeekableDecoder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeekableDecoder")
            .field("inner", &self.inner)
            .field("pos", &self.pos)
            .finish()
    }
}

impl<R: Read + Seek> SeekableDecoder<R> {
    /// Reads the frames of `r` as described by `table`, from decompressed
    /// offset 0.
    pub fn new(r: R, table: SeekTable) -> Self {
        SeekableDecoder {
            inner: FrameReader::new(r, table),
            pos: 0,
        }
    }

    /// The seek table.
    pub fn table(&self) -> &SeekTable {
        self.inner.table()
    }

    /// Returns the random-access reader underneath.
    pub fn into_frame_reader(self) -> FrameReader<R> {
        self.inner
    }

    /// Returns the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner.into_inner()
    }
}

impl<R: Read + Seek> Read for SeekableDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(i) = self.inner.table.frame_at(self.pos) else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let f = self.inner.table.frame(i);
        let skip = (self.pos - f.decompressed_offset) as usize;
        let n = (f.decompressed_len as usize - skip).min(buf.len());
        if self.inner.cached != Some(i) && skip == 0 && n as u64 == f.decompressed_len {
            self.inner.decode(i, Dest::Slice(&mut buf[..n]))?;
        } else {
            let frame = self.inner.load(i)?;
            buf[..n].copy_from_slice(&frame[skip..skip + n]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for SeekableDecoder<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match pos {
            SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.inner.table.decompressed_len(), d),
        };
        match base.checked_add_signed(delta) {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid seek to a negative or overflowing position",
            )),
        }
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Cursor;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use super::*;

    type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

    const KIB: usize = 1024;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Pages of half random bytes, half a repeating pattern (like the bench
    /// generator).
    fn pages(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        let pat = b"stasis-test: half random, half a repeating pattern. ";
        let mut v = vec![0u8; len];
        for (p, page) in v.chunks_mut(4096).enumerate() {
            let half = page.len() / 2;
            for c in page[..half].chunks_mut(8) {
                let r = rng.next().to_le_bytes();
                c.copy_from_slice(&r[..c.len()]);
            }
            for (i, b) in page[half..].iter_mut().enumerate() {
                *b = pat[(p + i) % pat.len()];
            }
        }
        v
    }

    /// Writes `data` in pieces of 1 byte to 1 MiB.
    fn write_varied<W: Write>(w: &mut W, data: &[u8], seed: u64) -> io::Result<()> {
        let mut rng = Rng(seed);
        let mut rest = data;
        while !rest.is_empty() {
            let n = match rng.below(4) {
                0 => 1 + rng.below(100),
                1 => 4096,
                2 => 1 + rng.below(300_000),
                _ => 1 << 20,
            } as usize;
            let n = n.min(rest.len());
            w.write_all(&rest[..n])?;
            rest = &rest[n..];
        }
        Ok(())
    }

    fn writer(threads: usize, frame_size: usize) -> R<FrameWriter<Cursor<Vec<u8>>>> {
        Ok(FrameWriter::new(
            Cursor::new(Vec::new()),
            1,
            threads,
            frame_size,
        )?)
    }

    fn encode(data: &[u8], threads: usize, frame_size: usize) -> R<Vec<u8>> {
        let mut w = writer(threads, frame_size)?;
        write_varied(&mut w, data, 7)?;
        assert_eq!(w.position(), data.len() as u64);
        Ok(w.finish()?.into_inner())
    }

    /// Decodes like Podman would: one ordinary zstd stream.
    fn plain_decode(z: &[u8]) -> R<Vec<u8>> {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(z)?.read_to_end(&mut out)?;
        Ok(out)
    }

    fn table_of(z: &[u8]) -> R<SeekTable> {
        Ok(SeekTable::read_from(&mut Cursor::new(z))?.ok_or("no seek table")?)
    }

    fn have_zstd_cli() -> bool {
        Command::new("zstd")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `zstd -t` and `zstd -d` accept `z` and decompress it to `expect`.
    fn check_cli(z: &[u8], expect: &[u8]) -> R {
        if !have_zstd_cli() {
            eprintln!("zstd CLI not found, skipping the CLI check");
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.zst");
        std::fs::write(&path, z)?;
        let st = Command::new("zstd")
            .arg("-q")
            .arg("-t")
            .arg(&path)
            .status()?;
        assert!(st.success(), "zstd -t failed");
        let out = Command::new("zstd")
            .args(["-q", "-d", "-c"])
            .arg(&path)
            .output()?;
        assert!(out.status.success(), "zstd -d failed");
        assert!(out.stdout == expect, "zstd -d output differs");
        Ok(())
    }

    fn check_ranges(z: &[u8], data: &[u8], seed: u64) -> R {
        let t = table_of(z)?;
        let mut r = FrameReader::new(Cursor::new(z), t.clone());
        let mut rng = Rng(seed);
        let len = data.len() as u64;
        for _ in 0..300 {
            let n = match rng.below(4) {
                0 => 1 + rng.below(64),
                1 => 4096,
                2 => rng.below(300_000),
                _ => (4 << 20) - rng.below(4096),
            }
            .min(len);
            let off = rng.below(len - n + 1);
            let mut buf = vec![0u8; n as usize];
            r.read_exact_at(off, &mut buf)?;
            assert!(
                buf == data[off as usize..(off + n) as usize],
                "range {off}+{n}"
            );
        }
        // Across every frame boundary, and whole frames.
        for i in 0..t.len() {
            let f = t.frame(i);
            let b = f.decompressed_offset;
            let (lo, hi) = (b.saturating_sub(10), (b + 10).min(len));
            let mut buf = vec![0u8; (hi - lo) as usize];
            r.read_exact_at(lo, &mut buf)?;
            assert!(buf == data[lo as usize..hi as usize], "around boundary {b}");
            let mut buf = vec![0u8; f.decompressed_len as usize];
            r.read_exact_at(b, &mut buf)?;
            assert!(buf == data[b as usize..(b + f.decompressed_len) as usize]);
        }
        let mut all = vec![0u8; data.len()];
        r.read_exact_at(0, &mut all)?;
        assert!(all == data);
        // The end: empty read fine, anything past it is UnexpectedEof.
        r.read_exact_at(len, &mut [])?;
        let e = r.read_exact_at(len - 1, &mut [0u8; 2]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let e = r.read_exact_at(u64::MAX, &mut [0u8; 2]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        Ok(())
    }

    #[test]
    fn round_trip() -> R {
        let fs = 64 * KIB;
        let data = pages((3 << 20) + 12345, 1);
        let reference = encode(&data, 0, fs)?;
        for threads in [0, 1, 2, 4] {
            let z = encode(&data, threads, fs)?;
            // The same frames whatever the thread count.
            assert!(z == reference, "threads {threads}: output differs");
            assert!(plain_decode(&z)? == data, "threads {threads}");
            let t = table_of(&z)?;
            assert_eq!(t.len(), data.len().div_ceil(fs));
            assert_eq!(t.decompressed_len(), data.len() as u64);
            let table_len = 8 + 8 * t.len() as u64 + 9;
            assert_eq!(t.compressed_len() + table_len, z.len() as u64);
            for i in 0..t.len() {
                let f = t.frame(i);
                assert_eq!(f.decompressed_offset, (i * fs) as u64);
                let d_len = fs.min(data.len() - i * fs) as u64;
                assert_eq!(f.decompressed_len, d_len);
                let frame = &z[f.compressed_offset as usize..][..f.compressed_len as usize];
                // Content size in the header, content checksum on.
                assert!(
                    matches!(zstd_safe::get_frame_content_size(frame), Ok(Some(n)) if n == d_len),
                    "frame {i} content size"
                );
                assert_ne!(frame[4] & 0x04, 0, "frame {i} has no checksum");
                assert_eq!(
                    zstd_safe::find_frame_compressed_size(frame),
                    Ok(f.compressed_len as usize)
                );
            }
            assert_eq!(t.frame_at(0), Some(0));
            assert_eq!(t.frame_at(fs as u64 - 1), Some(0));
            assert_eq!(t.frame_at(fs as u64), Some(1));
            assert_eq!(t.frame_at(data.len() as u64), None);
            check_ranges(&z, &data, threads as u64)?;
        }
        check_cli(&reference, &data)?;
        Ok(())
    }

    #[test]
    fn empty_and_tiny_streams() -> R {
        for threads in [0, 2] {
            let z = writer(threads, 1024)?.finish()?.into_inner();
            assert!(plain_decode(&z)?.is_empty());
            let t = table_of(&z)?;
            assert!(t.is_empty());
            assert_eq!(t.decompressed_len(), 0);
            assert_eq!(t.frame_at(0), None);
            let mut d = SeekableDecoder::new(Cursor::new(&z[..]), t);
            let mut out = Vec::new();
            d.read_to_end(&mut out)?;
            assert!(out.is_empty());
            check_cli(&z, &[])?;

            let z = encode(b"x", threads, 1)?;
            assert_eq!(plain_decode(&z)?, b"x");
            assert_eq!(table_of(&z)?.len(), 1);
            let z = encode(b"hello", threads, 1)?;
            assert_eq!(table_of(&z)?.len(), 5);
            check_ranges(&z, b"hello", 3)?;
        }
        Ok(())
    }

    #[test]
    fn invalid_parameters() {
        let c = || Cursor::new(Vec::new());
        assert!(matches!(
            FrameWriter::new(c(), 1, 2, 0),
            Err(TarError::FrameSize { size: 0, .. })
        ));
        assert!(matches!(
            FrameWriter::new(c(), 1, 2, MAX_FRAME_SIZE + 1),
            Err(TarError::FrameSize { .. })
        ));
        assert!(matches!(
            FrameWriter::new(c(), 1000, 2, 1024),
            Err(TarError::InvalidLevel { level: 1000, .. })
        ));
        let e = FrameWriter::new(c(), 1, 2, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "zstd frame size 0 is out of range (1..=67108864)"
        );
    }

    #[test]
    fn raw_frames_and_patches() -> R {
        for threads in [0, 2] {
            let fs = 64 * KIB;
            let mut w = writer(threads, fs)?;
            let mut expect = Vec::new();

            let a = pages(100_000, 1);
            w.write_all(&a)?;
            expect.extend_from_slice(&a);
            let h1 = w.raw_frame(&[0u8; 512])?;
            assert_eq!(h1.offset(), 100_000);
            assert_eq!(h1.index(), 2);
            assert_eq!(h1.len(), 512);
            let h1_at = expect.len();
            expect.extend_from_slice(&[0u8; 512]);
            assert_eq!(w.position(), expect.len() as u64);

            let b = pages(300_000, 2);
            w.write_all(&b)?;
            expect.extend_from_slice(&b);
            let big = vec![1u8; MAX_RAW_FRAME];
            let h2 = w.raw_frame(&big)?;
            let h2_at = expect.len();
            expect.extend_from_slice(&big);

            // end_frame boundaries, an empty end_frame is a no-op.
            w.end_frame()?;
            w.end_frame()?;
            let tail_at = expect.len() as u64;
            w.write_all(b"tail")?;
            w.end_frame()?;
            let more_at = expect.len() as u64 + 4;
            w.write_all(b"more")?;
            expect.extend_from_slice(b"tailmore");

            // Every header size form (1, 2 and 4 byte content sizes).
            let mut small = Vec::new();
            for len in [0usize, 1, 255, 256, 257, 65791, 65792, 65793] {
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let h = w.raw_frame(&data)?;
                assert_eq!(h.offset(), expect.len() as u64);
                small.push((h, expect.len()));
                expect.extend_from_slice(&data);
            }

            // Too big: refused, the writer still works.
            let e = w.raw_frame(&vec![0u8; MAX_RAW_FRAME + 1]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

            // h1 has reached the inner writer: patched in place.
            w.flush()?;
            let p1: Vec<u8> = (0..512).map(|i| (i % 7) as u8 + b'a').collect();
            w.patch(&h1, &p1)?;
            expect[h1_at..h1_at + 512].copy_from_slice(&p1);

            // A raw frame queued behind a slow compressed frame: patched in
            // memory (the pool case).
            w.fault = Some((w.next_seq, Fault::Slow));
            let c = pages(fs, 3);
            w.write_all(&c)?;
            expect.extend_from_slice(&c);
            let h3 = w.raw_frame(b"placeholder")?;
            w.patch(&h3, b"PLACEHOLDER")?;
            expect.extend_from_slice(b"PLACEHOLDER");
            w.fault = None;

            let d = pages(200_000, 4);
            w.write_all(&d)?;
            expect.extend_from_slice(&d);

            // Wrong length, or not a raw frame.
            let e = w.patch(&h2, b"short").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            // A raw frame of another writer, or past the end.
            let mut other = writer(threads, fs)?;
            let theirs = other.raw_frame(&[0u8; 512])?;
            let e = w.patch(&theirs, &[1u8; 512]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            let fake = RawFrame {
                index: 1000,
                ..h1.clone()
            };
            let e = w.patch(&fake, &[1u8; 512]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

            // h2 and the small ones may or may not be written by now.
            let p2 = vec![2u8; MAX_RAW_FRAME];
            w.patch(&h2, &p2)?;
            expect[h2_at..h2_at + MAX_RAW_FRAME].copy_from_slice(&p2);
            for (h, at) in &small {
                let p = vec![0xEE; h.len()];
                w.patch(h, &p)?;
                expect[*at..*at + h.len()].copy_from_slice(&p);
            }
            assert_eq!(w.position(), expect.len() as u64);

            let z = w.finish()?.into_inner();
            assert!(plain_decode(&z)? == expect, "threads {threads}");
            check_cli(&z, &expect)?;
            let t = table_of(&z)?;
            let f = t.frame(h1.index());
            assert_eq!((f.decompressed_offset, f.decompressed_len), (100_000, 512));
            let f = t.frame(h2.index());
            assert_eq!(f.decompressed_offset, h2_at as u64);
            assert_eq!(f.decompressed_len, MAX_RAW_FRAME as u64);
            // The raw frame (header + one block) is exactly where the table
            // says, without checksum.
            let raw = &z[f.compressed_offset as usize..][..f.compressed_len as usize];
            assert_eq!(raw[4] & 0x04, 0);
            assert_eq!(zstd_safe::find_frame_compressed_size(raw), Ok(raw.len()));
            for (h, at) in &small {
                let f = t.frame(h.index());
                assert_eq!(f.decompressed_offset, *at as u64);
                assert_eq!(f.decompressed_len, h.len() as u64);
            }
            // end_frame started frames at "tail" and "more".
            let i = t.frame_at(tail_at).ok_or("no frame")?;
            assert_eq!(t.frame(i).decompressed_offset, tail_at);
            assert_eq!(t.frame(i).decompressed_len, 4);
            let i = t.frame_at(more_at).ok_or("no frame")?;
            assert_eq!(t.frame(i).decompressed_offset, more_at);
            check_ranges(&z, &expect, 5)?;
        }
        Ok(())
    }

    #[test]
    fn patch_through_a_buffered_file() -> R {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.zst");
        let mut w = FrameWriter::new(io::BufWriter::new(File::create(&path)?), 3, 2, 64 * KIB)?;
        let a = pages(200_000, 9);
        w.write_all(&a)?;
        let h = w.raw_frame(&[b'?'; 1000])?;
        w.write_all(&a)?;
        w.flush()?;
        w.patch(&h, &[b'!'; 1000])?;
        w.write_all(&a)?;
        w.finish()?.flush()?;
        let mut expect = a.clone();
        expect.extend_from_slice(&[b'!'; 1000]);
        expect.extend_from_slice(&a);
        expect.extend_from_slice(&a);
        let z = std::fs::read(&path)?;
        assert!(plain_decode(&z)? == expect);
        let t = SeekTable::read_from(&mut File::open(&path)?)?.ok_or("no table")?;
        let mut r = FrameReader::new(File::open(&path)?, t);
        let mut buf = [0u8; 1000];
        r.read_exact_at(200_000, &mut buf)?;
        assert_eq!(buf, [b'!'; 1000]);
        Ok(())
    }

    #[test]
    fn no_seek_table() -> R {
        let data = pages(300_000, 3);
        let z = zstd::encode_all(&data[..], 3)?;
        assert!(SeekTable::read_from(&mut Cursor::new(&z))?.is_none());
        let mut c = crate::compress(Vec::new(), crate::Compression::Zstd, Some(1), 2)?;
        c.write_all(&data)?;
        let d = c.finish()?;
        assert!(SeekTable::read_from(&mut Cursor::new(&d))?.is_none());
        for plain in [
            &b""[..],
            b"12345678",
            b"hello, world: not compressed at all",
        ] {
            assert!(SeekTable::read_from(&mut Cursor::new(plain))?.is_none());
        }
        assert!(SeekTable::read_from(&mut Cursor::new(&data))?.is_none());
        Ok(())
    }

    /// Splits a stream from the writer into frames, table entries and footer.
    fn parts(z: &[u8]) -> (usize, Vec<[u8; 8]>) {
        let n = le32(&z[z.len() - 9..]) as usize;
        let start = z.len() - 17 - 8 * n;
        let entries = z[start + 8..z.len() - 9]
            .chunks_exact(8)
            .map(|c| c.try_into().unwrap())
            .collect();
        (start, entries)
    }

    /// A stream with `entries` (of 8 or 12 bytes) as its table.
    fn with_table(
        frames: &[u8],
        entries: &[Vec<u8>],
        n: u32,
        desc: u8,
        body: Option<u32>,
    ) -> Vec<u8> {
        let mut v = frames.to_vec();
        let len: usize = entries.iter().map(Vec::len).sum::<usize>() + 9;
        v.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        v.extend_from_slice(&body.unwrap_or(len as u32).to_le_bytes());
        for e in entries {
            v.extend_from_slice(e);
        }
        v.extend_from_slice(&n.to_le_bytes());
        v.push(desc);
        v.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        v
    }

    fn table_err(z: &[u8]) -> String {
        match SeekTable::read_from(&mut Cursor::new(z)) {
            Err(e @ TarError::SeekTable { .. }) => e.to_string(),
            Err(e) => panic!("unexpected error {e}"),
            Ok(t) => panic!("accepted a malformed table: {t:?}"),
        }
    }

    #[test]
    fn malformed_seek_tables() -> R {
        let data = pages(200_000, 4);
        let z = encode(&data, 2, 64 * KIB)?;
        let good = table_of(&z)?;
        let (start, entries) = parts(&z);
        let frames = &z[..start];
        let n = entries.len() as u32;
        let e8: Vec<Vec<u8>> = entries.iter().map(|e| e.to_vec()).collect();

        // Rebuilt as is: fine. With checksums (12-byte entries): fine too.
        let same = with_table(frames, &e8, n, 0, None);
        assert_eq!(same, z);
        let e12: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| [&e[..], &[0xAB, 0xCD, 0xEF, 0x01]].concat())
            .collect();
        let t = table_of(&with_table(frames, &e12, n, 0x80, None))?;
        assert_eq!(t.c, good.c);
        assert_eq!(t.d, good.d);
        let z12 = with_table(frames, &e12, n, 0x80, None);
        check_ranges(&z12, &data, 1)?;
        check_cli(&z12, &data)?;

        // Truncated: an entry missing, the frames cut, the table cut.
        let s = table_err(&with_table(frames, &e8[1..], n, 0, None));
        assert!(s.contains("skippable"), "{s}");
        let s = table_err(&with_table(frames, &e8[1..], n - 1, 0, None));
        assert!(s.contains("frames end at"), "{s}");
        table_err(&with_table(&frames[100..], &e8, n, 0, None));
        table_err(&z[z.len() - 9 - 16..]);
        table_err(&z[z.len() - 9..]);
        // Checksum flag with 8-byte entries, reserved bits.
        table_err(&with_table(frames, &e8, n, 0x80, None));
        let s = table_err(&with_table(frames, &e8, n, 0x04, None));
        assert!(s.contains("reserved"), "{s}");
        // Huge counts.
        for count in [n + 1, 1000, 0x800_0000, 0x800_0001, u32::MAX] {
            table_err(&with_table(frames, &e8, count, 0, None));
        }
        // Wrong skippable frame size.
        table_err(&with_table(frames, &e8, n, 0, Some(12345)));
        table_err(&with_table(frames, &e8, n, 0, Some(u32::MAX)));
        // Sizes that do not sum to the table's offset.
        let mut bad = e8.clone();
        bad[0][0] = bad[0][0].wrapping_add(1);
        table_err(&with_table(frames, &bad, n, 0, None));
        let mut bad = e8.clone();
        bad[0][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        table_err(&with_table(frames, &bad, n, 0, None));
        // A frame too small to be a frame, one holding too much.
        let mut bad = e8.clone();
        bad[0][..4].copy_from_slice(&0u32.to_le_bytes());
        bad[1][..4].copy_from_slice(&(le32(&e8[0]) + le32(&e8[1])).to_le_bytes());
        let s = table_err(&with_table(frames, &bad, n, 0, None));
        assert!(s.contains("smaller than any zstd frame"), "{s}");
        let mut bad = e8.clone();
        bad[0][4..].copy_from_slice(&(MAX_FRAME_SIZE as u32 + 1).to_le_bytes());
        let s = table_err(&with_table(frames, &bad, n, 0, None));
        assert!(s.contains("more than"), "{s}");
        // A frame far bigger than its content could compress to.
        let mut bad = e8.clone();
        bad[0][4..].copy_from_slice(&0u32.to_le_bytes());
        let s = table_err(&with_table(frames, &bad, n, 0, None));
        assert!(s.contains("more than any zstd frame"), "{s}");
        // Only a footer.
        let mut f = Vec::new();
        f.extend_from_slice(&0u32.to_le_bytes());
        f.push(0);
        f.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        table_err(&f);
        // An empty table after no frames is a valid empty stream.
        let t = table_of(&with_table(&[], &[], 0, 0, None))?;
        assert!(t.is_empty());

        // Any single corrupt byte in the table: an error or a table that
        // still reads without panicking.
        for i in start..z.len() {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut c = z.clone();
                c[i] ^= x;
                if let Ok(Some(t)) = SeekTable::read_from(&mut Cursor::new(&c)) {
                    let mut r = FrameReader::new(Cursor::new(&c), t.clone());
                    let mut buf = vec![0u8; t.decompressed_len().min(1 << 20) as usize];
                    let _ = r.read_exact_at(0, &mut buf);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn corrupt_frames() -> R {
        let fs = 64 * KIB;
        let data = pages(10 * fs, 5);
        let z = encode(&data, 2, fs)?;
        let t = table_of(&z)?;
        let f = t.frame(3);
        // A byte in the middle of the data, then the checksum.
        for at in [
            f.compressed_offset + f.compressed_len / 2,
            f.compressed_offset + f.compressed_len - 1,
        ] {
            let mut c = z.clone();
            c[at as usize] ^= 0x55;
            let mut r = FrameReader::new(Cursor::new(&c), t.clone());
            let mut buf = vec![0u8; 100];
            let e = r.read_exact_at(3 * fs as u64 + 10, &mut buf).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            let s = e.to_string();
            assert!(
                s.contains(&format!("frame 3 at decompressed offset {}", 3 * fs)),
                "{s}"
            );
            // A whole-frame read (decoded in place) fails the same way.
            let mut buf = vec![0u8; fs];
            let e = r.read_exact_at(3 * fs as u64, &mut buf).unwrap_err();
            assert!(e.to_string().contains("frame 3"), "{e}");
            // The other frames still read.
            r.read_exact_at(0, &mut buf)?;
            assert!(buf == data[..fs]);
            r.read_exact_at(4 * fs as u64, &mut buf)?;
            assert!(buf == data[4 * fs..5 * fs]);
            // A sequential reader can seek over it without decompressing it.
            let mut d = SeekableDecoder::new(Cursor::new(&c), t.clone());
            d.seek(SeekFrom::Start(fs as u64))?;
            d.seek(SeekFrom::Current(3 * fs as i64))?;
            let mut rest = Vec::new();
            d.read_to_end(&mut rest)?;
            assert!(rest == data[4 * fs..]);
            d.seek(SeekFrom::Start(3 * fs as u64 + 1))?;
            assert!(d.read(&mut [0u8; 10]).is_err());
        }
        // The file cut short in the frames.
        let mut r = FrameReader::new(Cursor::new(&z[..f.compressed_offset as usize + 10]), t);
        let e = r.read_exact_at(3 * fs as u64, &mut [0u8; 10]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        Ok(())
    }

    #[test]
    fn seekable_decoder() -> R {
        let fs = 64 * KIB;
        let data = pages(40 * fs + 777, 6);
        let z = encode(&data, 2, fs)?;
        let t = table_of(&z)?;
        let len = data.len() as u64;

        let mut d = SeekableDecoder::new(Cursor::new(&z[..]), t.clone());
        let mut out = Vec::new();
        d.read_to_end(&mut out)?;
        assert!(out == data);
        assert_eq!(d.stream_position()?, len);
        assert_eq!(d.read(&mut [0u8; 10])?, 0);

        // Small sequential reads (as a tar parser does).
        d.seek(SeekFrom::Start(0))?;
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = d.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert!(out == data);

        // Far forward, back, relative, from the end, past the end.
        d.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 10_000];
        d.read_exact(&mut buf[..100])?;
        assert_eq!(
            d.seek(SeekFrom::Current(30 * fs as u64 as i64))?,
            30 * fs as u64 + 100
        );
        d.read_exact(&mut buf)?;
        assert!(buf == data[30 * fs + 100..30 * fs + 10_100]);
        d.seek(SeekFrom::Start(5))?;
        d.read_exact(&mut buf)?;
        assert!(buf == data[5..10_005]);
        d.seek(SeekFrom::End(-5))?;
        let mut tail = Vec::new();
        d.read_to_end(&mut tail)?;
        assert!(tail == data[data.len() - 5..]);
        assert_eq!(d.seek(SeekFrom::End(10))?, len + 10);
        assert_eq!(d.read(&mut buf)?, 0);
        assert!(d.seek(SeekFrom::Current(-(len as i64) - 11)).is_err());
        assert!(d.seek(SeekFrom::Start(u64::MAX)).is_ok());
        assert!(d.seek(SeekFrom::Current(1)).is_err());
        assert_eq!(d.read(&mut buf)?, 0);

        // Exact frame boundaries.
        for i in 0..t.len() {
            let b = t.frame(i).decompressed_offset;
            d.seek(SeekFrom::Start(b))?;
            let n = 700.min(len - b) as usize;
            let mut buf = vec![0u8; n];
            d.read_exact(&mut buf)?;
            assert!(buf == data[b as usize..b as usize + n], "frame {i}");
            // Ending exactly at a boundary too.
            if b >= 3 {
                d.seek(SeekFrom::Start(b - 3))?;
                let mut buf = [0u8; 3];
                d.read_exact(&mut buf)?;
                assert_eq!(buf, data[b as usize - 3..b as usize]);
            }
        }
        let mut r = d.into_frame_reader();
        let mut buf = [0u8; 4];
        r.read_exact_at(len - 4, &mut buf)?;
        assert_eq!(buf, data[data.len() - 4..]);
        Ok(())
    }

    #[test]
    fn tar_archive_through_frames() -> R {
        let big = pages(5 << 20, 7);
        let mut b = tar::Builder::new(writer(2, 256 * KIB)?);
        let add = |b: &mut tar::Builder<_>, name: &str, data: &[u8]| -> io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data)
        };
        add(&mut b, "spec.dump", b"{\"small\": true}")?;
        add(&mut b, "checkpoint/pages-1.img", &big)?;
        add(&mut b, "config.dump", b"after the pages")?;
        let z = b.into_inner()?.finish()?.into_inner();

        fn read<Rd: Read>(a: tar::Entries<'_, Rd>) -> R<Vec<(String, Vec<u8>)>> {
            let mut v = Vec::new();
            for e in a {
                let mut e = e?;
                let name = e.path()?.to_string_lossy().into_owned();
                let mut content = Vec::new();
                if e.size() < 1000 {
                    e.read_to_end(&mut content)?;
                }
                v.push((name, content));
            }
            Ok(v)
        }
        let t = table_of(&z)?;
        let mut a = tar::Archive::new(SeekableDecoder::new(Cursor::new(&z[..]), t));
        let got = read(a.entries_with_seek()?)?;
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            ("spec.dump".to_string(), b"{\"small\": true}".to_vec())
        );
        assert_eq!(got[1].0, "checkpoint/pages-1.img");
        assert_eq!(
            got[2],
            ("config.dump".to_string(), b"after the pages".to_vec())
        );

        // And as Podman reads it: one zstd stream.
        let (_, dec) = crate::decompress(Cursor::new(z))?;
        let mut a = tar::Archive::new(dec);
        let got2 = read(a.entries()?)?;
        assert_eq!(got, got2);
        Ok(())
    }

    #[test]
    fn worker_errors_surface() -> R {
        for (threads, fault) in [
            (2, Fault::Error),
            (2, Fault::Panic),
            (4, Fault::Panic),
            (0, Fault::Error),
        ] {
            let fs = 16 * KIB;
            let data = pages(40 * fs, 8);
            let mut w = writer(threads, fs)?;
            w.fault = Some((2, fault));
            let r = write_varied(&mut w, &data, 1);
            let e = match r {
                Err(e) => {
                    // Poisoned: later calls fail too.
                    assert!(w.write_all(b"x").is_err());
                    assert!(w.end_frame().is_err());
                    assert!(w.raw_frame(b"x").is_err());
                    let e2 = w.finish().unwrap_err();
                    assert!(e2.to_string().contains("frame 2"), "{e2}");
                    e.to_string()
                }
                Ok(()) => w.finish().unwrap_err().to_string(),
            };
            assert!(e.contains("frame 2 at decompressed offset 32768"), "{e}");
            if fault == Fault::Panic {
                assert!(e.contains("panicked"), "{e}");
            }
        }
        // Dropping a writer with work in flight does not hang.
        let mut w = writer(2, 16 * KIB)?;
        w.write_all(&pages(200 * KIB, 1))?;
        drop(w);
        Ok(())
    }

    /// Fails every write once `limit` bytes went through.
    #[derive(Debug)]
    struct FailAfter {
        inner: Cursor<Vec<u8>>,
        limit: u64,
    }

    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.inner.position() + buf.len() as u64 > self.limit {
                return Err(io::Error::other("disk full"));
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for FailAfter {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn output_errors_surface() -> R {
        for threads in [0, 2] {
            let data = pages(1 << 20, 9);
            let out = FailAfter {
                inner: Cursor::new(Vec::new()),
                limit: 100_000,
            };
            let mut w = FrameWriter::new(out, 1, threads, 64 * KIB)?;
            let e = write_varied(&mut w, &data, 2).unwrap_err();
            assert!(e.to_string().contains("disk full"), "{e}");
            let e = w.finish().unwrap_err();
            assert!(e.to_string().contains("disk full"), "{e}");
            // The seek table itself failing.
            let out = FailAfter {
                inner: Cursor::new(Vec::new()),
                limit: 10,
            };
            let w = FrameWriter::new(out, 1, threads, 64 * KIB)?;
            let e = w.finish().unwrap_err();
            assert!(e.to_string().contains("seek table"), "{e}");
        }
        Ok(())
    }

    #[test]
    fn bounded_buffers() -> R {
        for threads in [1, 2, 3] {
            let fs = 32 * KIB;
            let mut w = writer(threads, fs)?;
            let data = pages(3 << 20, 10);
            let mut rng = Rng(threads as u64);
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = (1 + rng.below(200_000) as usize).min(rest.len());
                w.write_all(&rest[..n])?;
                rest = &rest[n..];
                // threads + 2 pairs of frame buffers at most (one inline).
                let cap = if threads > 1 { threads + 2 } else { 1 };
                assert_eq!(w.cap, cap);
                assert!(w.allocated <= cap, "{} buffers", w.allocated);
            }
            // Raw frames take buffers too.
            for _ in 0..50 {
                w.raw_frame(&[7u8; 1000])?;
                w.write_all(&data[..100])?;
                assert!(w.allocated <= w.cap);
            }
            let z = w.finish()?.into_inner();
            let mut expect = data.clone();
            for _ in 0..50 {
                expect.extend_from_slice(&[7u8; 1000]);
                expect.extend_from_slice(&data[..100]);
            }
            assert!(plain_decode(&z)? == expect);
        }
        Ok(())
    }

    /// User + system CPU seconds of this process so far.
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, s)| s.split_whitespace().collect())
            .unwrap_or_default();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (tick(11) + tick(12)) / 100.0
    }

    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Counts the bytes written through it.
    struct Counting<W> {
        inner: W,
        n: u64,
    }

    impl<W: Write> Write for Counting<W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.n += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    impl<W: Seek> Seek for Counting<W> {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    /// Reads `path` back: sequentially (1 MiB reads), then 20000 random
    /// 4 KiB pages.
    fn bench_reader(path: &str, total: u64) -> R {
        let t = SeekTable::read_from(&mut File::open(path)?)?.ok_or("no seek table")?;
        let t0 = Instant::now();
        let mut d = SeekableDecoder::new(File::open(path)?, t.clone());
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = d.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        assert_eq!(n, total);
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "SeekableDecoder: {:.3} s, {:.0} MB/s",
            secs,
            n as f64 / secs / 1e6
        );
        let mut r = FrameReader::new(File::open(path)?, t);
        let mut rng = Rng(1);
        let mut page = [0u8; 4096];
        let t0 = Instant::now();
        for _ in 0..20_000 {
            let off = rng.below(total / 4096) * 4096;
            r.read_exact_at(off, &mut page)?;
        }
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "read_exact_at: random 4 KiB pages, {:.0} us each",
            secs * 1e6 / 20_000.0
        );
        Ok(())
    }

    #[test]
    fn fill_from_reads_straight_into_frames() -> R {
        // A reader that returns short reads.
        struct Short<'a>(&'a [u8]);
        impl Read for Short<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                let n = b.len().min(1000).min(self.0.len());
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = pages(3 * 64 * KIB + 123, 7);
        let mut w = FrameWriter::new(io::Cursor::new(Vec::new()), 1, 2, 64 * KIB)?;
        w.write_all(&data[..100])?;
        w.fill_from(&mut Short(&data[100..]), (data.len() - 100) as u64)?;
        assert_eq!(w.position(), data.len() as u64);
        let out = w.finish()?.into_inner();
        let mut back = Vec::new();
        zstd::stream::read::Decoder::new(&out[..])?.read_to_end(&mut back)?;
        assert!(back == data, "fill_from round trip");

        let mut w = FrameWriter::new(io::Cursor::new(Vec::new()), 1, 2, 64 * KIB)?;
        let e = w.fill_from(&mut Short(b"abc"), 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        Ok(())
    }

    /// `cargo test -p stasis-tar --release -- --ignored --nocapture bench_frame_writer`
    ///
    /// Compresses /dev/shm/pages.bin (1 GiB from /var/tmp/zt/gen) at level 1
    /// in 1 MiB writes and compares with `zstd -1 -T2`. Knobs:
    /// `FRAMES_THREADS` (2), `FRAMES_SIZE` (1 MiB), `FRAMES_CHUNK` (1 MiB),
    /// `FRAMES_OUT` (/dev/null), `FRAMES_READ` (set: read `FRAMES_OUT` back).
    #[test]
    #[ignore = "benchmark: needs /dev/shm/pages.bin"]
    fn bench_frame_writer() -> R {
        let input = std::env::var("FRAMES_INPUT").unwrap_or("/dev/shm/pages.bin".into());
        if !std::path::Path::new(&input).exists() {
            eprintln!("{input} not found, skipping");
            return Ok(());
        }
        let env = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let threads = env("FRAMES_THREADS", 2);
        let frame_size = env("FRAMES_SIZE", DEFAULT_FRAME_SIZE);
        let chunk = env("FRAMES_CHUNK", 1 << 20);
        let out = std::env::var("FRAMES_OUT").unwrap_or("/dev/null".into());

        let sink = Counting {
            inner: File::create(&out)?,
            n: 0,
        };
        let rss0 = peak_rss_kib();
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let mut f = File::open(&input)?;
        let level: i32 = std::env::var("FRAMES_LEVEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut w = FrameWriter::new(sink, level, threads, frame_size)?;
        let mut buf = vec![0u8; chunk];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
            total += n as u64;
        }
        let sink = w.finish()?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let rss = peak_rss_kib();
        eprintln!(
            "FrameWriter: {total} -> {} bytes ({:.2} %), {secs:.3} s, {:.0} MB/s, cpu {cpu:.2} s, \
             peak rss {rss} KiB (before {rss0} KiB), threads {threads}, frame {frame_size}, chunk {chunk}",
            sink.n,
            sink.n as f64 * 100.0 / total as f64,
            total as f64 / secs / 1e6,
        );

        if out != "/dev/null" && std::env::var_os("FRAMES_READ").is_some() {
            bench_reader(&out, total)?;
        }
        if have_zstd_cli() {
            if out != "/dev/null" {
                std::fs::remove_file(&out)?;
            }
            let stdout = File::create(&out)?;
            let t0 = Instant::now();
            let st = Command::new("zstd")
                .args(["-1", "-T2", "-q", "-c"])
                .arg(&input)
                .stdout(stdout)
                .status()?;
            let zsecs = t0.elapsed().as_secs_f64();
            assert!(st.success());
            eprintln!(
                "zstd -1 -T2: {zsecs:.3} s, {:.0} MB/s; FrameWriter / zstd = {:.2}x",
                total as f64 / zsecs / 1e6,
                secs / zsecs
            );
        }
        Ok(())
    }
}
