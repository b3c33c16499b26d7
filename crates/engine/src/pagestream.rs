//! Memory pages without staging: the engine speaks CRIU's page-server protocol on both sides.
//!
//! * **Export.** `runc checkpoint --page-server 127.0.0.1:PORT` makes CRIU send every memory
//!   page to a thread of ours ([`DumpServer`]), which writes them straight into the archive:
//!   independent zstd frames compressed on every core, with the tar header of each
//!   `pages-N.img` written first as a stored frame and patched once its size is known, and a
//!   seek table at the end. Nothing of the memory is written to disk or tmpfs on the way, and
//!   compression overlaps the dump. Podman and `zstd -d` read the result as any tar.zst.
//! * **Import.** For an archive with a seek table, the pages stay in the archive
//!   ([`stasis_archive::pages::PagesSkipper`] skips them). A small restore writes them out
//!   ([`materialize`]); a large one starts CRIU's lazy-pages daemon on a socket whose other
//!   end is a detached `stasis container serve-pages` process ([`spawn_feeder`]), which
//!   answers each page request by decompressing the frames that hold it. The container runs
//!   again before its memory is copied; the daemon fills the rest in the background.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use stasis_archive::pages::{padding, pages_header, PagesLocation};
use stasis_archive::ArchiveWriter;
use stasis_pageserver::{DumpSink, PageSource, Pagemap};
use stasis_tar::frames::{FrameReader, FrameWriter, RawFrame, SeekTable};

use crate::progress::Progress;
use crate::EngineError;

/// Uncompressed bytes per zstd frame: big enough for level 1 to lose nothing measurable
/// against one long frame (its window is 512 KiB), small enough that a page request
/// decompresses little.
pub const FRAME_SIZE: usize = 1 << 20;

/// zstd level of streamed exports (`--fast=1`); `STASIS_ZSTD_LEVEL` overrides it.
///
/// CRIU and the compression share the machine's cores during the dump, so compression CPU is
/// dump time. Measured on 1 GiB of the benchmark's memory (half random, half a repeating
/// pattern, 2 cores): level -1 takes 0.72 CPU-s against 1.18 for level 1 and writes the same
/// 542 MB (Podman's level 3: 538 MB); a dump of 1 GiB took 0.83–0.97 s instead of
/// 0.98–1.33 s. The price, on 300 MB of shared libraries: 41% of the input instead of 37%.
pub const STREAM_LEVEL: i32 = -1;

/// The zstd level of a streamed export: [`STREAM_LEVEL`] unless `STASIS_ZSTD_LEVEL` says
/// otherwise.
pub fn stream_level() -> i32 {
    std::env::var("STASIS_ZSTD_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(STREAM_LEVEL)
}

/// Frames a streamed export lets be in flight: CRIU sends pages in bursts of up to 4 MiB
/// while the workers compress, and a deeper queue keeps both cores busy (16 MiB of frames,
/// as much again for their compressed copies). `STASIS_FRAMES_IN_FLIGHT` overrides it.
pub const FRAMES_IN_FLIGHT: usize = 16;

/// [`FRAMES_IN_FLIGHT`] unless `STASIS_FRAMES_IN_FLIGHT` says otherwise.
pub fn frames_in_flight() -> usize {
    std::env::var("STASIS_FRAMES_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FRAMES_IN_FLIGHT)
}

/// The archive being written by a streamed export.
pub type StreamedArchive = ArchiveWriter<FrameWriter<File>>;

/// Writes what CRIU sends into the archive; pagemaps go to the local image directory (they
/// are small and join the archive with CRIU's other images after the dump).
struct ArchiveSink<'a> {
    archive: &'a mut StreamedArchive,
    images: &'a Path,
    current: Option<(String, RawFrame, u64)>,
    progress: &'a Progress,
}

impl DumpSink for ArchiveSink<'_> {
    fn begin_pages(&mut self, pages_name: &str) -> io::Result<()> {
        if self.current.is_some() {
            return Err(io::Error::other(
                "pages image started before the last one ended",
            ));
        }
        let entry = format!("{}/{pages_name}", stasis_archive::names::CHECKPOINT_DIR);
        let header = pages_header(&entry, 0)?;
        let frame = self.archive.sink_mut().raw_frame(&header)?;
        self.current = Some((entry, frame, 0));
        Ok(())
    }

    fn pages(&mut self, data: &[u8]) -> io::Result<()> {
        let Some((_, _, size)) = &mut self.current else {
            return Err(io::Error::other("page data outside a pages image"));
        };
        *size += data.len() as u64;
        self.progress.add(data.len());
        self.archive.sink_mut().write_all(data)
    }

    fn pages_from(&mut self, r: &mut dyn io::Read, len: u64, _buf: &mut [u8]) -> io::Result<()> {
        let Some((_, _, size)) = &mut self.current else {
            return Err(io::Error::other("page data outside a pages image"));
        };
        *size += len;
        self.progress
            .add(usize::try_from(len).unwrap_or(usize::MAX));
        // Straight from the socket into the frames being compressed.
        self.archive.sink_mut().fill_from(r, len)
    }

    fn end_pages(&mut self, pagemap_name: &str, pagemap: &[u8]) -> io::Result<()> {
        let Some((entry, frame, size)) = self.current.take() else {
            return Err(io::Error::other("pagemap without a pages image"));
        };
        let sink = self.archive.sink_mut();
        let pad = padding(size) as usize;
        sink.write_all(&[0u8; 512][..pad])?;
        sink.end_frame()?;
        sink.patch(&frame, &pages_header(&entry, size)?)?;
        if pagemap_name.contains('/') || !pagemap_name.starts_with("pagemap") {
            return Err(io::Error::other(format!(
                "unexpected pagemap name {pagemap_name:?}"
            )));
        }
        std::fs::write(self.images.join(pagemap_name), pagemap)
    }
}

/// A page server thread that writes the pages of one dump into an archive. CRIU reaches it
/// through a socket it inherits (AF_UNIX: the fastest path, named in the CRIU configuration
/// file runc hands it) or, for containers whose spec names no such file, on a loopback port
/// (`runc checkpoint --page-server`).
pub struct DumpServer {
    /// The loopback address, when listening on one.
    addr: Option<SocketAddr>,
    handle: JoinHandle<Result<StreamedArchive, String>>,
}

impl std::fmt::Debug for DumpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Where CRIU's connection comes from.
enum Connection {
    Listener(TcpListener),
    Socket(UnixStream),
}

impl DumpServer {
    /// Listens on 127.0.0.1 (any free port) and serves one dump session on a thread.
    pub fn listen(
        archive: StreamedArchive,
        images: PathBuf,
        progress: Progress,
    ) -> Result<Self, EngineError> {
        let err = |e: io::Error| EngineError::msg(format!("starting the page server: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        Self::spawn(
            archive,
            images,
            Connection::Listener(listener),
            Some(addr),
            progress,
        )
    }

    /// Serves one dump session arriving on `sock` (whose other end CRIU inherits).
    pub fn on_socket(
        archive: StreamedArchive,
        images: PathBuf,
        sock: UnixStream,
        progress: Progress,
    ) -> Result<Self, EngineError> {
        Self::spawn(archive, images, Connection::Socket(sock), None, progress)
    }

    fn spawn(
        mut archive: StreamedArchive,
        images: PathBuf,
        conn: Connection,
        addr: Option<SocketAddr>,
        progress: Progress,
    ) -> Result<Self, EngineError> {
        let handle = std::thread::Builder::new()
            .name("stasis-pages".into())
            .spawn(move || {
                let served = (|| {
                    let mut sink = ArchiveSink {
                        archive: &mut archive,
                        images: &images,
                        current: None,
                        progress: &progress,
                    };
                    match conn {
                        Connection::Listener(l) => {
                            let (sock, _) = l.accept().map_err(|e| e.to_string())?;
                            drop(l);
                            stasis_pageserver::serve_dump(sock, &mut sink)
                        }
                        Connection::Socket(sock) => stasis_pageserver::serve_dump(sock, &mut sink),
                    }
                    .map_err(|e| e.to_string())?;
                    if sink.current.is_some() {
                        return Err("the dump ended inside a pages image".to_string());
                    }
                    Ok(())
                })();
                progress.finish();
                served.map(|()| archive)
            })
            .map_err(|e| EngineError::msg(format!("starting the page server: {e}")))?;
        Ok(DumpServer { addr, handle })
    }

    /// `ADDRESS:PORT` for `runc checkpoint --page-server`, when listening on a port.
    pub fn address(&self) -> Option<String> {
        self.addr.map(|a| a.to_string())
    }

    /// Waits for the session to end and gives the archive back. Call after runc returned (and
    /// after dropping our copy of CRIU's socket end): if CRIU never connected to the port (the
    /// dump failed early), a connection of our own ends the wait.
    pub fn finish(self) -> Result<StreamedArchive, String> {
        if let Some(addr) = self.addr {
            if !self.handle.is_finished() {
                let _ = TcpStream::connect(addr);
            }
        }
        self.handle
            .join()
            .unwrap_or_else(|_| Err("the page server thread panicked".into()))
    }
}

/// Bytes CRIU may have queued on the page socket (`STASIS_PAGE_SOCKET_BUFFER` overrides it):
/// the default (208 KiB) makes CRIU wait for our reader every fifth of a megabyte.
pub const PAGE_SOCKET_BUFFER: usize = 4 << 20;

/// Gives CRIU's end of the page socket a send buffer of [`PAGE_SOCKET_BUFFER`] (as root, past
/// `net.core.wmem_max`). Best effort: a failure only costs speed.
pub fn widen_socket(sock: &UnixStream) {
    let bytes = std::env::var("STASIS_PAGE_SOCKET_BUFFER")
        .ok()
        .and_then(|v| v.parse::<libc::c_int>().ok())
        .unwrap_or(PAGE_SOCKET_BUFFER as libc::c_int);
    if bytes <= 0 {
        return;
    }
    // SAFETY: setsockopt on a descriptor we own, with a pointer to a c_int of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

// ------------------------------------------------------------------------------------------
// Import side

/// Where the pages images of an imported archive are: the archive (seekable) and the
/// location of each `pages-N.img` in its decompressed stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivePages {
    pub archive: PathBuf,
    pub pages: Vec<PagesLocationJson>,
}

/// [`PagesLocation`] as stored for the feeder process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PagesLocationJson {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

impl ArchivePages {
    pub fn new(archive: PathBuf, locations: &[PagesLocation]) -> Self {
        ArchivePages {
            archive,
            pages: locations
                .iter()
                .map(|l| PagesLocationJson {
                    name: l.name.clone(),
                    offset: l.offset,
                    size: l.size,
                })
                .collect(),
        }
    }

    /// Bytes of memory pages in all.
    pub fn total(&self) -> u64 {
        self.pages.iter().map(|p| p.size).sum()
    }

    fn open(&self, file: File) -> Result<ArchiveSource, String> {
        let mut file = file;
        let table = SeekTable::read_from(&mut file)
            .map_err(|e| format!("{}: {e}", self.archive.display()))?
            .ok_or_else(|| format!("{}: no seek table", self.archive.display()))?;
        Ok(ArchiveSource {
            reader: FrameReader::new(file, table),
            pages: self
                .pages
                .iter()
                .map(|p| (p.name.clone(), (p.offset, p.size)))
                .collect(),
        })
    }
}

/// Pages read from the archive, by pages image name and offset.
struct ArchiveSource {
    reader: FrameReader<File>,
    pages: BTreeMap<String, (u64, u64)>,
}

impl PageSource for ArchiveSource {
    fn read_pages(&mut self, pages_name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let (start, size) = *self.pages.get(pages_name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("the archive has no {pages_name}"),
            )
        })?;
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{pages_name}: {} bytes at offset {offset} are beyond its {size} bytes",
                    buf.len()
                ),
            ));
        }
        self.reader.read_exact_at(start + offset, buf)
    }
}

/// The pagemaps of an image directory, with the pages image each one reads.
fn pagemaps(images: &Path) -> Result<Vec<(String, Pagemap)>, EngineError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(images).map_err(|e| EngineError::io(images, e))?;
    for e in rd {
        let e = e.map_err(|e| EngineError::io(images, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("pagemap-") || !name.ends_with(".img") {
            continue;
        }
        let bytes = std::fs::read(e.path()).map_err(|err| EngineError::io(&e.path(), err))?;
        let pm = Pagemap::parse(&bytes)
            .map_err(|err| EngineError::msg(format!("checkpoint/{name}: {err}")))?;
        out.push((format!("pages-{}.img", pm.pages_id), pm));
    }
    Ok(out)
}

/// Checks that every pages image of the archive has exactly the bytes its pagemap lists.
fn check_sizes(pages: &ArchivePages, maps: &[(String, Pagemap)]) -> Result<(), EngineError> {
    for p in &pages.pages {
        let listed: u64 = maps
            .iter()
            .filter(|(n, _)| *n == p.name)
            .map(|(_, pm)| pm.present_bytes())
            .sum();
        if listed != p.size {
            return Err(EngineError::msg(format!(
                "archive {}: checkpoint/{} holds {} bytes but its pagemap lists {listed}",
                pages.archive.display(),
                p.name,
                p.size
            )));
        }
    }
    Ok(())
}

/// Writes the pages images into `images` from the archive (small restores, `--keep`, or no
/// lazy restore on this kernel).
pub fn materialize(pages: &ArchivePages, file: File, images: &Path) -> Result<(), EngineError> {
    let maps = pagemaps(images)?;
    check_sizes(pages, &maps)?;
    let mut src = pages.open(file).map_err(EngineError::msg)?;
    let mut buf = vec![0u8; 1 << 20];
    for p in &pages.pages {
        let dest = images.join(&p.name);
        let mut out = std::io::BufWriter::with_capacity(
            1 << 20,
            File::create(&dest).map_err(|e| EngineError::io(&dest, e))?,
        );
        let mut off = 0;
        while off < p.size {
            let n = buf.len().min((p.size - off) as usize);
            src.read_pages(&p.name, off, &mut buf[..n]).map_err(|e| {
                EngineError::msg(format!("archive {}: {e}", pages.archive.display()))
            })?;
            out.write_all(&buf[..n])
                .map_err(|e| EngineError::io(&dest, e))?;
            off += n as u64;
        }
        out.flush().map_err(|e| EngineError::io(&dest, e))?;
    }
    Ok(())
}

/// Prepares a lazy restore from the archive: writes the pages CRIU restores up front (stacks
/// and the like: present but not lazy) into sparse local pages images, and returns the
/// file the feeder reads its instructions from.
pub fn prepare_lazy(
    pages: &ArchivePages,
    file: File,
    images: &Path,
) -> Result<PathBuf, EngineError> {
    let maps = pagemaps(images)?;
    check_sizes(pages, &maps)?;
    let mut src = pages.open(file).map_err(EngineError::msg)?;
    for (pages_name, pm) in &maps {
        let dest = images.join(pages_name);
        let f = File::create(&dest).map_err(|e| EngineError::io(&dest, e))?;
        stasis_pageserver::write_non_lazy(pm, &mut src, pages_name, &f)
            .map_err(|e| EngineError::msg(format!("archive {}: {e}", pages.archive.display())))?;
    }
    let plan = images.parent().unwrap_or(images).join("serve-pages.json");
    let json = serde_json::to_vec(pages).map_err(|e| EngineError::msg(e.to_string()))?;
    std::fs::write(&plan, json).map_err(|e| EngineError::io(&plan, e))?;
    Ok(plan)
}

/// Clears close-on-exec on `fd`: children spawned from now on inherit it (called in this
/// process, or in a child between fork and exec: fcntl is async-signal-safe).
pub fn set_inheritable(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number; async-signal-safe.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts the detached feeder: `EXE container serve-pages` answering the lazy-pages daemon on
/// `socket` from the archive (`archive`, already open), per `plan`; its errors go to `log`,
/// and make it kill the processes of the container's cgroup `cgroup`.
pub fn spawn_feeder(
    exe: &Path,
    archive: &File,
    socket: OwnedFd,
    images: &Path,
    plan: &Path,
    log: &Path,
    cgroup: &str,
) -> Result<(), EngineError> {
    use std::os::unix::process::CommandExt;
    let afd = archive.as_raw_fd();
    let sfd = socket.as_raw_fd();
    let log_file = File::create(log).map_err(|e| EngineError::io(log, e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["container", "serve-pages"])
        .arg("--archive-fd")
        .arg(afd.to_string())
        .arg("--socket-fd")
        .arg(sfd.to_string())
        .arg("--images")
        .arg(images)
        .arg("--plan")
        .arg(plan)
        .arg("--kill-cgroup")
        .arg(cgroup)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            set_inheritable(afd)?;
            set_inheritable(sfd)?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| EngineError::msg(format!("starting the page feeder: {e}")))?;
    drop(socket);
    Ok(())
}

/// Kills every process of the cgroup `rel` (the container's): cgroup v2's `cgroup.kill`, or
/// the `cgroup.procs` of the v1 hierarchies. A restored process whose memory cannot be
/// delivered must not run on: once the lazy-pages daemon is gone, its missing pages would
/// read as zeros.
pub fn kill_cgroup(rel: &str) {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return;
    }
    let root = Path::new("/sys/fs/cgroup");
    if std::fs::write(root.join(rel).join("cgroup.kill"), "1").is_ok() {
        return;
    }
    for _ in 0..20 {
        let mut any = false;
        for h in [
            "pids", "freezer", "memory", "cpu", "devices", "systemd", "unified",
        ] {
            let procs = root.join(h).join(rel).join("cgroup.procs");
            let Ok(list) = std::fs::read_to_string(&procs) else {
                continue;
            };
            for pid in list.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                any = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !any {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The feeder process (`stasis container serve-pages`): serves one lazy-pages session. When
/// it cannot (a damaged archive, say), it kills the container's processes (cgroup `cgroup`)
/// and fails.
pub fn serve_pages(
    archive_fd: RawFd,
    socket_fd: RawFd,
    images: &Path,
    plan: &Path,
    cgroup: Option<&str>,
) -> Result<(), String> {
    let served = serve_pages_inner(archive_fd, socket_fd, images, plan);
    if let (Err(_), Some(cg)) = (&served, cgroup) {
        kill_cgroup(cg);
    }
    served
}

fn serve_pages_inner(
    archive_fd: RawFd,
    socket_fd: RawFd,
    images: &Path,
    plan: &Path,
) -> Result<(), String> {
    use std::os::fd::FromRawFd;
    let plan_bytes = std::fs::read(plan).map_err(|e| format!("{}: {e}", plan.display()))?;
    let pages: ArchivePages =
        serde_json::from_slice(&plan_bytes).map_err(|e| format!("{}: {e}", plan.display()))?;
    // SAFETY: the engine handed us these descriptors (inherited, owned by no one else here).
    let file = unsafe { File::from_raw_fd(archive_fd) };
    let sock = unsafe { UnixStream::from_raw_fd(socket_fd) };
    let mut src = pages.open(file)?;
    stasis_pageserver::serve_lazy(sock, images, &mut src)
        .map(drop)
        .map_err(|e| format!("serving pages of {}: {e}", pages.archive.display()))
}
