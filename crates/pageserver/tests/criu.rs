//! Real CRIU (as root): dumps received by `serve_dump`, restored by plain `criu restore`; lazy
//! restores served by `serve_lazy`. Skipped, with a message, when `criu` is missing or not root.
//!
//! The dumped process is this test binary itself, re-executed to run [`memfill_child`] only: it
//! fills memory with a known pattern, reports where, and checks the pattern on request.
//!
//! Measurements (ignored by default):
//! `cargo test --release -p stasis-pageserver --test criu -- --ignored --nocapture measure`

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Once};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{
    geteuid, getpid, kill_process, set_child_subreaper, waitpid, Pid, Signal, WaitOptions,
};
use stasis_pageserver::{
    read_pagemap, serve_dump, serve_lazy, write_non_lazy, DirSink, DirSource, DumpSink,
    DumpSummary, LazySummary, Pagemap,
};

const CHILD_READY: &str = "STASIS_PS_CHILD_READY";
const CHILD_MIB: &str = "STASIS_PS_CHILD_MIB";

fn word(i: u64) -> u64 {
    // splitmix64: distinct, non-zero-looking data on every page
    let mut z = (i ^ 0x5eed_1234).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Not a test: the body of the dumped process when [`CHILD_READY`] is set, a no-op otherwise.
#[test]
fn memfill_child() {
    let Ok(ready) = std::env::var(CHILD_READY) else {
        return;
    };
    let ready = PathBuf::from(ready);
    let mib: usize = std::env::var(CHILD_MIB)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let words = mib << 17;
    let mut v: Vec<u64> = Vec::with_capacity(words);
    v.extend((0..words as u64).map(word));
    let tmp = ready.with_extension("tmp");
    fs::write(&tmp, format!("{} {}\n", v.as_ptr() as usize, words * 8)).unwrap();
    fs::rename(&tmp, &ready).unwrap();
    let verify = ready.with_extension("verify");
    let result = ready.with_extension("result");
    loop {
        if verify.exists() && !result.exists() {
            let t = Instant::now();
            let bad = v.iter().enumerate().position(|(i, &w)| w != word(i as u64));
            let msg = match bad {
                None => format!("ok {}\n", t.elapsed().as_micros()),
                Some(i) => format!("bad word {i}\n"),
            };
            fs::write(&tmp, msg).unwrap();
            fs::rename(&tmp, &result).unwrap();
        }
        thread::sleep(Duration::from_millis(5));
        std::hint::black_box(&mut v);
    }
}

/// Kills and reaps everything a test started, even when it fails.
#[derive(Default)]
struct Guard {
    children: Vec<Child>,
    pids: Vec<i32>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for &p in &self.pids {
            if let Some(pid) = Pid::from_raw(p) {
                let _ = kill_process(pid, Signal::KILL);
                // We are a subreaper, so the restored process is our child.
                let _ = waitpid(Some(pid), WaitOptions::empty());
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Ctx {
    criu: PathBuf,
    tmp: tempfile::TempDir,
    guard: Guard,
}

/// The dumped process.
struct Target {
    pid: i32,
    addr: u64,
    len: u64,
    ready: PathBuf,
    child: usize,
}

fn criu_bin() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join("criu"))
        .find(|p| p.is_file());
    found
}

fn setup(test: &str, tmp_in: Option<&str>) -> Option<Ctx> {
    let Some(criu) = criu_bin() else {
        eprintln!("skipping {test}: criu not found");
        return None;
    };
    if !geteuid().is_root() {
        eprintln!("skipping {test}: criu needs root");
        return None;
    }
    static SUBREAPER: Once = Once::new();
    SUBREAPER.call_once(|| set_child_subreaper(Some(getpid())).expect("PR_SET_CHILD_SUBREAPER"));
    let mut b = tempfile::Builder::new();
    b.prefix("stasis-ps-");
    let tmp = match tmp_in {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .unwrap();
    Some(Ctx {
        criu,
        tmp,
        guard: Guard::default(),
    })
}

impl Ctx {
    fn dir(&self, name: &str) -> PathBuf {
        let d = self.tmp.path().join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn spawn_child(&mut self, mib: usize) -> Target {
        let ready = self
            .tmp
            .path()
            .join(format!("child-{}.ready", self.guard.children.len()));
        let child = Command::new("setsid")
            .arg(std::env::current_exe().unwrap())
            .args([
                "memfill_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_READY, &ready)
            .env(CHILD_MIB, mib.to_string())
            .current_dir(self.tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        self.guard.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let text = loop {
            if let Ok(t) = fs::read_to_string(&ready) {
                break t;
            }
            assert!(Instant::now() < deadline, "the child did not get ready");
            thread::sleep(Duration::from_millis(5));
        };
        let mut it = text.split_whitespace().map(|s| s.parse::<u64>().unwrap());
        Target {
            pid,
            addr: it.next().unwrap(),
            len: it.next().unwrap(),
            ready,
            child: self.guard.children.len() - 1,
        }
    }

    /// Reaps the original process after `criu dump` killed it, so its pid is free to restore.
    fn reap(&mut self, t: &Target) {
        let st = self.guard.children[t.child].wait().unwrap();
        assert!(
            !st.success(),
            "the dumped process should have been killed: {st}"
        );
    }

    fn spawn_criu(&mut self, args: &[&str], stdin: Option<OwnedFd>) -> Child {
        let mut cmd = Command::new(&self.criu);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.stdin(stdin.map_or(Stdio::null(), Stdio::from));
        let child = cmd.spawn().unwrap();
        drop(cmd); // our copy of the socket end
        child
    }

    /// Runs criu to completion; panics with the log tail on failure.
    fn run_criu(
        &mut self,
        dir: &Path,
        log: &str,
        args: &[&str],
        stdin: Option<OwnedFd>,
    ) -> Duration {
        let t = Instant::now();
        let child = self.spawn_criu(args, stdin);
        self.wait_criu(child, dir, log, Duration::from_secs(60));
        t.elapsed()
    }

    fn wait_criu(&mut self, mut child: Child, dir: &Path, log: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("criu ({log}) timed out\n{}", log_tail(dir, log));
            }
            thread::sleep(Duration::from_millis(2));
        };
        if !status.success() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!(
                "criu ({log}) failed: {status}\n{err}\n{}",
                log_tail(dir, log)
            );
        }
    }
}

fn log_tail(dir: &Path, log: &str) -> String {
    let text = fs::read_to_string(dir.join(log)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Checks the pattern through /proc/PID/mem.
fn check_memory(t: &Target) {
    let mem = fs::File::open(format!("/proc/{}/mem", t.pid)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < t.len {
        let n = (t.len - off).min(buf.len() as u64) as usize;
        mem.read_exact_at(&mut buf[..n], t.addr + off).unwrap();
        for (j, w) in buf[..n].chunks_exact(8).enumerate() {
            let i = off / 8 + j as u64;
            let got = u64::from_ne_bytes(w.try_into().unwrap());
            assert_eq!(got, word(i), "word {i} of pid {} differs", t.pid);
        }
        off += n as u64;
    }
}

/// Asks the process to check its own memory (touching every page) and waits for the answer.
fn self_check(t: &Target) -> String {
    let result = t.ready.with_extension("result");
    let _ = fs::remove_file(&result);
    fs::write(t.ready.with_extension("verify"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = fs::read_to_string(&result) {
            fs::remove_file(t.ready.with_extension("verify")).unwrap();
            return r.trim().to_string();
        }
        assert!(Instant::now() < deadline, "pid {} did not answer", t.pid);
        thread::sleep(Duration::from_millis(2));
    }
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    /// `--ps-socket 0`: one end of a socketpair as criu's stdin.
    PsSocket,
    /// `--address 127.0.0.1 --port P`.
    Tcp,
}

fn accept(listener: &TcpListener) -> std::io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// `criu dump … --page-server` into `serve_dump(sink)`; returns the criu time and the summary.
fn dump_via_server<S: DumpSink + Send + 'static>(
    ctx: &mut Ctx,
    t: &Target,
    dir: &Path,
    transport: Transport,
    mut sink: S,
    verbose: bool,
) -> (Duration, DumpSummary, S, Duration) {
    let pid = t.pid.to_string();
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "dump",
        "-t",
        &pid,
        "-D",
        d,
        "-o",
        "dump.log",
        "--page-server",
    ];
    if verbose {
        args.push("-v4");
    }
    let (tx, rx) = mpsc::channel();
    let port;
    let stdin = match transport {
        Transport::PsSocket => {
            let (ours, theirs) = UnixStream::pair().unwrap();
            ours.set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            thread::spawn(move || {
                let cpu = thread_cpu();
                let r = serve_dump(&ours, &mut sink);
                let _ = tx.send((r, sink, thread_cpu() - cpu));
            });
            args.extend(["--ps-socket", "0"]);
            Some(OwnedFd::from(theirs))
        }
        Transport::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            port = listener.local_addr().unwrap().port().to_string();
            thread::spawn(move || {
                let r = accept(&listener).map_err(|e| e.to_string()).map(|s| {
                    let cpu = thread_cpu();
                    let r = serve_dump(&s, &mut sink);
                    (r, sink, thread_cpu() - cpu)
                });
                match r {
                    Ok(x) => {
                        let _ = tx.send(x);
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            });
            args.extend(["--address", "127.0.0.1", "--port", &port]);
            None
        }
    };
    let took = ctx.run_criu(dir, "dump.log", &args, stdin);
    let (r, sink, cpu) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve_dump did not end");
    (took, r.expect("serve_dump"), sink, cpu)
}

fn dump_and_restore(transport: Transport) {
    let Some(mut ctx) = setup("dump_and_restore", None) else {
        return;
    };
    let t = ctx.spawn_child(64);
    let dir = ctx.dir("images");
    let (took, summary, _, _) = dump_via_server(
        &mut ctx,
        &t,
        &dir,
        transport,
        DirSink::new(dir.clone()),
        true,
    );
    ctx.reap(&t);
    eprintln!("{transport:?}: criu dump of 64 MiB through serve_dump: {took:?}, {summary:?}");

    // What CRIU's own page server would have written.
    assert_eq!(summary.pagemaps.len(), 1, "{summary:?}");
    let pm_info = &summary.pagemaps[0];
    assert_eq!(pm_info.pagemap_name, format!("pagemap-{}.img", t.pid));
    assert_eq!(pm_info.pages_name, "pages-65537.img");
    assert_eq!(summary.force_closed, transport == Transport::PsSocket);
    assert!(!dir.join("pages-1.img").exists());
    let bytes = fs::read(dir.join(&pm_info.pagemap_name)).unwrap();
    let pm = Pagemap::parse(&bytes).unwrap();
    assert_eq!(pm.to_bytes(), bytes);
    assert_eq!(pm.pages_id, 65537);
    let pages_len = fs::metadata(dir.join("pages-65537.img")).unwrap().len();
    assert_eq!(pm.present_bytes(), pages_len);
    assert_eq!(summary.page_bytes, pages_len);
    assert!(pages_len >= t.len, "{pages_len} bytes of pages");

    // Plain criu restore reads them back.
    let d = dir.to_str().unwrap();
    let took = ctx.run_criu(
        &dir,
        "restore.log",
        &["restore", "-D", d, "-d", "-o", "restore.log", "-v4"],
        None,
    );
    ctx.guard.pids.push(t.pid);
    eprintln!("{transport:?}: criu restore: {took:?}");
    assert!(alive(t.pid));
    check_memory(&t);
    let r = self_check(&t);
    assert!(r.starts_with("ok"), "{r}");
    assert!(alive(t.pid));
}

#[test]
fn dump_through_ps_socket_and_restore() {
    dump_and_restore(Transport::PsSocket);
}

#[test]
fn dump_through_tcp_and_restore() {
    dump_and_restore(Transport::Tcp);
}

/// A normal local dump; checks that every pagemap round-trips byte for byte.
fn local_dump(ctx: &mut Ctx, t: &Target, dir: &Path, verbose: bool) -> Duration {
    let pid = t.pid.to_string();
    let mut args = vec![
        "dump",
        "-t",
        &pid,
        "-D",
        dir.to_str().unwrap(),
        "-o",
        "dump.log",
    ];
    if verbose {
        args.push("-v4");
    }
    let took = ctx.run_criu(dir, "dump.log", &args, None);
    ctx.reap(t);
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with("pagemap-") {
            let bytes = fs::read(dir.join(&name)).unwrap();
            let pm = Pagemap::parse(&bytes).unwrap();
            assert_eq!(pm.to_bytes(), bytes, "{name} does not round-trip");
        }
    }
    took
}

#[test]
fn criu_pagemaps_round_trip() {
    let Some(mut ctx) = setup("criu_pagemaps_round_trip", None) else {
        return;
    };
    let t = ctx.spawn_child(8);
    let dir = ctx.dir("images");
    local_dump(&mut ctx, &t, &dir, false);
    let pm = read_pagemap(&dir.join(format!("pagemap-{}.img", t.pid))).unwrap();
    assert_eq!(pm.pages_id, 1);
    assert!(pm.entries.iter().any(|e| e.is_lazy() && e.is_present()));
    assert!(pm.non_lazy().count() > 0);
    assert_eq!(
        pm.present_bytes(),
        fs::metadata(dir.join("pages-1.img")).unwrap().len()
    );
    // The memory is found where the pagemap says.
    let found = pm
        .locate(t.addr & !4095, 1)
        .expect("the pattern's first page");
    let mut page = [0u8; 8];
    fs::File::open(dir.join("pages-1.img"))
        .unwrap()
        .read_exact_at(&mut page, found.offset + (t.addr & 4095))
        .unwrap();
    assert_eq!(u64::from_ne_bytes(page), word(0));
}

/// Lazy restore: pages-*.img moved to `src`, the local pages files rewritten with the non-lazy
/// pages only, the rest served by `serve_lazy`. Returns the restore time, the fill time (restore
/// start to the daemon's close), the summary and the CPU time of the `serve_lazy` thread.
fn lazy_restore(
    ctx: &mut Ctx,
    t: &Target,
    dir: &Path,
    transport: Transport,
    verbose: bool,
    touch_during_fill: bool,
) -> (Duration, Duration, LazySummary, Duration) {
    let src = ctx.dir("source");
    let mut lazy_bytes = 0;
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with("pages-") {
            fs::rename(dir.join(&name), src.join(&name)).unwrap();
        }
    }
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with("pagemap-") {
            let pm = read_pagemap(&dir.join(&name)).unwrap();
            let f = fs::File::create(dir.join(pm.pages_name())).unwrap();
            let mut source = DirSource::new(&src);
            let n = write_non_lazy(&pm, &mut source, &pm.pages_name(), &f).unwrap();
            lazy_bytes += pm.present_bytes() - n;
        }
    }
    assert!(lazy_bytes >= t.len);

    let d = dir.to_str().unwrap().to_string();
    let mut args = vec!["lazy-pages", "-D", &d, "-o", "lazy.log", "--page-server"];
    if verbose {
        args.push("-v4");
    }
    let (tx, rx) = mpsc::channel();
    let dir2 = dir.to_path_buf();
    let port;
    let stdin = match transport {
        Transport::PsSocket => {
            let (ours, theirs) = UnixStream::pair().unwrap();
            ours.set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            thread::spawn(move || {
                let cpu = thread_cpu();
                let r = serve_lazy(&ours, &dir2, &mut DirSource::new(src));
                let _ = tx.send((r, Instant::now(), thread_cpu() - cpu));
            });
            args.extend(["--ps-socket", "0"]);
            Some(OwnedFd::from(theirs))
        }
        Transport::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            port = listener.local_addr().unwrap().port().to_string();
            thread::spawn(move || {
                let s = accept(&listener).expect("accept");
                let cpu = thread_cpu();
                let r = serve_lazy(&s, &dir2, &mut DirSource::new(src));
                let _ = tx.send((r, Instant::now(), thread_cpu() - cpu));
            });
            args.extend(["--address", "127.0.0.1", "--port", &port]);
            None
        }
    };
    let daemon = ctx.spawn_criu(&args, stdin);
    let sock = dir.join("lazy-pages.socket");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "no lazy-pages.socket\n{}",
            log_tail(dir, "lazy.log")
        );
        thread::sleep(Duration::from_millis(1));
    }

    let start = Instant::now();
    let mut rargs = vec![
        "restore",
        "-D",
        &d,
        "--lazy-pages",
        "-d",
        "-o",
        "restore.log",
    ];
    if verbose {
        rargs.push("-v4");
    }
    let restored = ctx.run_criu(dir, "restore.log", &rargs, None);
    ctx.guard.pids.push(t.pid);
    assert!(alive(t.pid));
    // With `touch_during_fill`, the process touches all its memory while the background fill
    // runs: its faults go through the daemon to serve_lazy.
    if touch_during_fill {
        let r = self_check(t);
        assert!(r.starts_with("ok"), "{r}");
    }
    let (summary, filled, cpu) = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok((Ok(s), at, cpu)) => (s, at - start, cpu),
        Ok((Err(e), _, _)) => panic!("serve_lazy: {e}\n{}", log_tail(dir, "lazy.log")),
        Err(_) => panic!("serve_lazy did not end\n{}", log_tail(dir, "lazy.log")),
    };
    ctx.wait_criu(daemon, dir, "lazy.log", Duration::from_secs(30));
    check_memory(t);
    let r = self_check(t);
    assert!(r.starts_with("ok"), "{r}");
    assert!(alive(t.pid));
    (restored, filled, summary, cpu)
}

fn lazy(transport: Transport) {
    let Some(mut ctx) = setup("lazy", None) else {
        return;
    };
    let t = ctx.spawn_child(64);
    let dir = ctx.dir("images");
    local_dump(&mut ctx, &t, &dir, true);
    let (restored, filled, summary, _) = lazy_restore(&mut ctx, &t, &dir, transport, true, true);
    eprintln!(
        "{transport:?}: lazy restore of 64 MiB: running after {restored:?}, filled after {filled:?}, {summary:?}"
    );
    assert_eq!(summary.force_closed, transport == Transport::PsSocket);
    assert_eq!(summary.pagemaps, 1);
    assert!(summary.pages * 4096 >= t.len, "{summary:?}");
}

#[test]
fn lazy_restore_through_ps_socket() {
    lazy(Transport::PsSocket);
}

#[test]
fn lazy_restore_through_tcp() {
    lazy(Transport::Tcp);
}

// ---------------------------------------------------------------------------------------------
// measurements

struct Discard(u64);

impl DumpSink for Discard {
    fn begin_pages(&mut self, _: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn pages(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0 += data.len() as u64;
        Ok(())
    }
    fn end_pages(&mut self, _: &str, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

fn bench_mib() -> usize {
    std::env::var("STASIS_PS_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let s = fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = s
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[test]
#[ignore = "measurement: run with --release --ignored --nocapture"]
fn measure_dump() {
    let Some(mut ctx) = setup("measure_dump", Some("/dev/shm")) else {
        return;
    };
    let mib = bench_mib();
    for round in 0..2 {
        let t = ctx.spawn_child(mib);
        let dir = ctx.dir(&format!("local-{round}"));
        let took = local_dump(&mut ctx, &t, &dir, false);
        eprintln!("[measure] {mib} MiB: criu dump to /dev/shm: {}", secs(took));
        fs::remove_dir_all(&dir).unwrap();

        for transport in [Transport::PsSocket, Transport::Tcp] {
            let t = ctx.spawn_child(mib);
            let dir = ctx.dir(&format!("ps-{round}-{transport:?}"));
            let (took, summary, sink, cpu) =
                dump_via_server(&mut ctx, &t, &dir, transport, Discard(0), false);
            ctx.reap(&t);
            eprintln!(
                "[measure] {mib} MiB: criu dump --page-server ({transport:?}) into serve_dump + discarding sink: {} ({} messages, {} MiB, serve_dump thread CPU {})",
                secs(took),
                summary.messages,
                sink.0 >> 20,
                secs(cpu)
            );
        }
        let t = ctx.spawn_child(mib);
        let dir = ctx.dir(&format!("dirsink-{round}"));
        let (took, _, _, cpu) = dump_via_server(
            &mut ctx,
            &t,
            &dir,
            Transport::PsSocket,
            DirSink::new(dir.clone()),
            false,
        );
        ctx.reap(&t);
        eprintln!(
            "[measure] {mib} MiB: criu dump --page-server (PsSocket) into serve_dump + DirSink on /dev/shm: {} (serve_dump thread CPU {})",
            secs(took),
            secs(cpu)
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
#[ignore = "measurement: run with --release --ignored --nocapture"]
fn measure_lazy() {
    let Some(mut ctx) = setup("measure_lazy", Some("/dev/shm")) else {
        return;
    };
    let mib = bench_mib();
    for round in 0..2 {
        let t = ctx.spawn_child(mib);
        let dir = ctx.dir(&format!("plain-{round}"));
        local_dump(&mut ctx, &t, &dir, false);
        let d = dir.to_str().unwrap();
        let took = ctx.run_criu(
            &dir,
            "restore.log",
            &["restore", "-D", d, "-d", "-o", "restore.log"],
            None,
        );
        ctx.guard.pids.push(t.pid);
        eprintln!(
            "[measure] {mib} MiB: plain criu restore from /dev/shm: {}",
            secs(took)
        );
        let _ = kill_process(Pid::from_raw(t.pid).unwrap(), Signal::KILL);
        fs::remove_dir_all(&dir).unwrap();

        for transport in [Transport::PsSocket, Transport::Tcp] {
            let t = ctx.spawn_child(mib);
            let dir = ctx.dir(&format!("lazy-{round}-{transport:?}"));
            local_dump(&mut ctx, &t, &dir, false);
            let (restored, filled, summary, cpu) =
                lazy_restore(&mut ctx, &t, &dir, transport, false, false);
            eprintln!(
                "[measure] {mib} MiB: lazy restore ({transport:?}) via serve_lazy from /dev/shm: running after {}, filled after {}, serve_lazy thread CPU {} ({} requests, {} short, {} pages)",
                secs(restored),
                secs(filled),
                secs(cpu),
                summary.requests,
                summary.short_answers,
                summary.pages
            );
            let _ = kill_process(Pid::from_raw(t.pid).unwrap(), Signal::KILL);
            fs::remove_dir_all(&dir).unwrap();
            fs::remove_dir_all(ctx.tmp.path().join("source")).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// same output as CRIU's own receiver

/// A dump session as CRIU 4.2 could send it, with a parent query, holes, lazy entries without
/// data, a shmem pagemap and the legacy commands.
fn replay_session(c: &mut UnixStream) {
    use stasis_pageserver::proto::*;
    use stasis_pageserver::{DstId, PsIov, PE_LAZY, PE_PARENT, PE_PRESENT};
    use std::io::Write;
    let send = |c: &mut UnixStream, iov: PsIov| c.write_all(&iov.encode()).unwrap();
    let recv = |c: &mut UnixStream, n: usize| {
        let mut b = vec![0u8; n];
        c.read_exact(&mut b).unwrap();
        b
    };
    let data = |seed: u64, pages: u64| -> Vec<u8> {
        (0..pages * 512)
            .flat_map(|i| word(i ^ (seed << 40)).to_ne_bytes())
            .collect()
    };
    let task = DstId::task(4242).encode().unwrap();
    let shm = DstId::shmem(77).encode().unwrap();
    send(c, PsIov::new(PS_IOV_PARENT, 0, 0, 0, task));
    assert_eq!(recv(c, 4), 0i32.to_ne_bytes());
    send(c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, task));
    assert_eq!(recv(c, 1), [0]);
    send(c, PsIov::new(PS_IOV_ADD_F, PE_PRESENT, 3, 0x400000, task));
    c.write_all(&data(1, 3)).unwrap();
    send(
        c,
        PsIov::new(
            PS_IOV_ADD_F,
            PE_PRESENT | PE_LAZY,
            300,
            0x7f12_3456_7000,
            task,
        ),
    );
    c.write_all(&data(2, 300)).unwrap();
    send(
        c,
        PsIov::new(PS_IOV_ADD_F, PE_LAZY, 1 << 20, 0x7f20_0000_0000, task),
    );
    send(
        c,
        PsIov::new(PS_IOV_ADD_F, PE_PARENT, 5, 0x7f30_0000_0000, task),
    );
    send(c, PsIov::new(PS_IOV_ADD, 0, 1, 0x7ffd_0000_0000, task));
    c.write_all(&data(3, 1)).unwrap();
    send(c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, shm));
    assert_eq!(recv(c, 1), [0]);
    send(c, PsIov::new(PS_IOV_ADD_F, PE_PRESENT, 2, 0, shm));
    c.write_all(&data(4, 2)).unwrap();
    send(c, PsIov::new(PS_IOV_HOLE, 0, 2, 0x2000, shm));
    send(c, PsIov::new(PS_IOV_FORCE_CLOSE, 0, 0, 0, 0));
    assert_eq!(recv(c, 4), 0i32.to_ne_bytes());
}

fn page_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("pages") || n.starts_with("pagemap"))
        .map(|n| {
            let b = fs::read(dir.join(&n)).unwrap();
            (n, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn same_files_as_criu_page_server() {
    let Some(mut ctx) = setup("same_files_as_criu_page_server", None) else {
        return;
    };
    // CRIU's receiver.
    let theirs_dir = ctx.dir("criu");
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let d = theirs_dir.to_str().unwrap();
    let server = ctx.spawn_criu(
        &[
            "page-server",
            "-D",
            d,
            "-o",
            "ps.log",
            "-v4",
            "--ps-socket",
            "0",
        ],
        Some(OwnedFd::from(theirs)),
    );
    replay_session(&mut ours);
    ctx.wait_criu(server, &theirs_dir, "ps.log", Duration::from_secs(30));

    // Ours.
    let our_dir = ctx.dir("ours");
    let (server, mut client) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        replay_session(&mut client);
        client
    });
    let summary = serve_dump(&server, &mut DirSink::new(&our_dir)).unwrap();
    let _client = t.join().unwrap();
    assert!(summary.force_closed);

    let theirs = page_files(&theirs_dir);
    let names: Vec<&str> = theirs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "pagemap-4242.img",
            "pagemap-shmem-77.img",
            "pages-65537.img",
            "pages-65538.img"
        ]
    );
    assert!(
        page_files(&our_dir) == theirs,
        "files differ from criu page-server's"
    );
}
