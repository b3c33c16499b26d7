//! Both protocol directions against fake peers over `UnixStream::pair()`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use stasis_pageserver::proto::*;
use stasis_pageserver::{
    serve_dump, serve_lazy, write_non_lazy, DumpSink, Error, PageSource, Pagemap, PagemapEntry,
    PE_LAZY, PE_PARENT, PE_PRESENT,
};

#[derive(Default, Debug)]
struct MemSink {
    events: Vec<String>,
    files: HashMap<String, Vec<u8>>,
    current: Option<String>,
    chunks: usize,
}

impl DumpSink for MemSink {
    fn begin_pages(&mut self, pages_name: &str) -> io::Result<()> {
        self.events.push(format!("begin {pages_name}"));
        self.files.insert(pages_name.to_string(), Vec::new());
        self.current = Some(pages_name.to_string());
        Ok(())
    }
    fn pages(&mut self, data: &[u8]) -> io::Result<()> {
        let cur = self.current.as_ref().expect("pages before begin");
        self.files.get_mut(cur).unwrap().extend_from_slice(data);
        self.chunks += 1;
        Ok(())
    }
    fn end_pages(&mut self, pagemap_name: &str, pagemap: &[u8]) -> io::Result<()> {
        self.events.push(format!("end {pagemap_name}"));
        self.files
            .insert(pagemap_name.to_string(), pagemap.to_vec());
        self.current = None;
        Ok(())
    }
}

fn send(s: &mut UnixStream, iov: PsIov) {
    s.write_all(&iov.encode()).unwrap();
}

/// Distinct bytes for every page (the page number is stamped into each one).
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let page: Vec<u8> = (0..4096)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut out = Vec::with_capacity(len + 4096);
    for n in 0..len.div_ceil(4096) as u64 {
        out.extend_from_slice(&page);
        let at = out.len() - 4096;
        out[at..at + 8].copy_from_slice(&n.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn recv<const N: usize>(s: &mut UnixStream) -> [u8; N] {
    let mut b = [0u8; N];
    s.read_exact(&mut b).unwrap();
    b
}

/// Runs `serve_dump` on one end and `peer` on the other.
fn dump_session(
    peer: impl FnOnce(&mut UnixStream) + Send + 'static,
) -> (
    stasis_pageserver::Result<stasis_pageserver::DumpSummary>,
    MemSink,
) {
    let (server, mut client) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        peer(&mut client);
        // dropping `client` closes the connection
    });
    let mut sink = MemSink::default();
    let r = serve_dump(&server, &mut sink);
    drop(server);
    t.join().unwrap();
    (r, sink)
}

#[test]
fn dump_session_like_criu() {
    let big = 8 * 1024 * 1024 + 3 * 4096; // more than the receive buffer
    let (r, sink) = dump_session(move |c| {
        let task = DstId::task(42).encode().unwrap();
        let shm = DstId::shmem(7).encode().unwrap();
        send(c, PsIov::new(PS_IOV_PARENT, 0, 0, 0, task));
        assert_eq!(i32::from_ne_bytes(recv::<4>(c)), 0);
        send(c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, task));
        assert_eq!(recv::<1>(c), [0]);
        send(c, PsIov::new(PS_IOV_ADD_F, PE_PRESENT, 3, 0x400000, task));
        c.write_all(&pattern(1, 3 * 4096)).unwrap();
        send(
            c,
            PsIov::new(
                PS_IOV_ADD_F,
                PE_PRESENT | PE_LAZY,
                (big / 4096) as u64,
                0x7f0000000000,
                task,
            ),
        );
        // In odd pieces.
        let data = pattern(2, big);
        for piece in data.chunks(100_003) {
            c.write_all(piece).unwrap();
        }
        send(
            c,
            PsIov::new(PS_IOV_ADD_F, PE_LAZY, 16, 0x7f1000000000, task),
        );
        send(c, PsIov::new(PS_IOV_HOLE, 0, 2, 0x7f2000000000, task));
        send(c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, shm));
        assert_eq!(recv::<1>(c), [0]);
        send(c, PsIov::new(PS_IOV_ADD, 0, 1, 0, shm));
        c.write_all(&pattern(3, 4096)).unwrap();
        send(c, PsIov::new(PS_IOV_CLOSE, 0, 0, 0, 0));
        assert_eq!(i32::from_ne_bytes(recv::<4>(c)), 0);
    });
    let summary = r.unwrap();
    assert_eq!(
        sink.events,
        [
            "begin pages-65537.img",
            "end pagemap-42.img",
            "begin pages-65538.img",
            "end pagemap-shmem-7.img"
        ]
    );
    assert_eq!(summary.messages, 9);
    assert_eq!(summary.page_bytes, (3 * 4096 + big + 4096) as u64);
    assert!(!summary.force_closed);
    assert_eq!(summary.pagemaps.len(), 2);
    assert_eq!(summary.pagemaps[0].pages_name, "pages-65537.img");
    assert_eq!(summary.pagemaps[0].entries, 4);
    assert_eq!(summary.pagemaps[0].present_pages, 3 + (big / 4096) as u64);
    assert_eq!(summary.pagemaps[1].dst, DstId::shmem(7));

    let mut want = pattern(1, 3 * 4096);
    want.extend_from_slice(&pattern(2, big));
    assert!(sink.files["pages-65537.img"] == want, "task pages differ");
    assert_eq!(sink.files["pages-65538.img"], pattern(3, 4096));
    // Data is handed over in buffer-sized slices at most, not per page.
    assert!(sink.chunks < 1000, "{} chunks", sink.chunks);

    let pm = Pagemap::parse(&sink.files["pagemap-42.img"]).unwrap();
    assert_eq!(pm.pages_id, 65537);
    assert_eq!(
        pm.entries,
        [
            PagemapEntry {
                vaddr: 0x400000,
                nr_pages: 3,
                flags: PE_PRESENT
            },
            PagemapEntry {
                vaddr: 0x7f0000000000,
                nr_pages: (big / 4096) as u64,
                flags: PE_PRESENT | PE_LAZY
            },
            PagemapEntry {
                vaddr: 0x7f1000000000,
                nr_pages: 16,
                flags: PE_LAZY
            },
            PagemapEntry {
                vaddr: 0x7f2000000000,
                nr_pages: 2,
                flags: PE_PARENT
            },
        ]
    );
    // Byte for byte what CRIU writes.
    assert_eq!(pm.to_bytes(), sink.files["pagemap-42.img"]);
    let shm = Pagemap::parse(&sink.files["pagemap-shmem-7.img"]).unwrap();
    assert_eq!(shm.pages_id, 65538);
    assert_eq!(
        shm.entries,
        [PagemapEntry {
            vaddr: 0,
            nr_pages: 1,
            flags: PE_PRESENT
        }]
    );
}

#[test]
fn dump_force_close_does_not_wait_for_eof() {
    let (server, mut client) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let task = DstId::task(9).encode().unwrap();
        send(&mut client, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, task));
        assert_eq!(recv::<1>(&mut client), [0]);
        send(&mut client, PsIov::new(PS_IOV_FORCE_CLOSE, 0, 0, 0, 0));
        assert_eq!(i32::from_ne_bytes(recv::<4>(&mut client)), 0);
        client // keep it open until joined
    });
    let mut sink = MemSink::default();
    let summary = serve_dump(&server, &mut sink).unwrap();
    let _client = t.join().unwrap();
    assert!(summary.force_closed);
    assert_eq!(sink.events, ["begin pages-65537.img", "end pagemap-9.img"]);
    // An empty pagemap is still a valid image: just the head.
    let pm = Pagemap::parse(&sink.files["pagemap-9.img"]).unwrap();
    assert!(pm.entries.is_empty());
}

fn dump_error(peer: impl FnOnce(&mut UnixStream) + Send + 'static) -> Error {
    let (r, _) = dump_session(peer);
    r.unwrap_err()
}

#[test]
fn dump_protocol_violations() {
    let task = DstId::task(1).encode().unwrap();
    let open = move |c: &mut UnixStream| {
        send(c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, task));
        assert_eq!(recv::<1>(c), [0]);
    };

    let e = dump_error(move |c| send(c, PsIov::new(PS_IOV_ADD_F, PE_PRESENT, 1, 0, task)));
    assert!(matches!(e, Error::NotOpen { .. }), "{e}");
    assert!(e.to_string().contains("without opening"), "{e}");

    let e = dump_error(move |c| {
        open(c);
        send(
            c,
            PsIov::new(
                PS_IOV_ADD_F,
                PE_PRESENT,
                1,
                0,
                DstId::task(2).encode().unwrap(),
            ),
        );
    });
    assert!(matches!(e, Error::NotOpen { .. }), "{e}");

    let e = dump_error(move |c| send(c, PsIov::new(PS_IOV_GET, 0, 1, 0x1000, 1)));
    assert!(
        matches!(
            e,
            Error::UnexpectedCommand {
                command: "PS_IOV_GET",
                ..
            }
        ),
        "{e}"
    );

    let e = dump_error(move |c| send(c, PsIov::new(0x99, 0, 0, 0, 0)));
    assert!(matches!(e, Error::UnknownCommand(0x99)), "{e}");

    let e = dump_error(move |c| send(c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, (1 << 8) | 3)));
    assert!(matches!(e, Error::BadDstId(_)), "{e}");

    for (nr, vaddr) in [(u64::MAX, 0), (1 << 50, 0x1000), (0, 0x1000), (1, 0x1001)] {
        let e = dump_error(move |c| {
            open(c);
            send(c, PsIov::new(PS_IOV_ADD_F, PE_PRESENT, nr, vaddr, task));
        });
        assert!(matches!(e, Error::BadRange { .. }), "{e}");
    }

    let e = dump_error(move |c| {
        open(c);
        send(c, PsIov::new(PS_IOV_ADD_F, 0x40, 1, 0, task));
    });
    assert!(matches!(e, Error::BadFlags(0x40)), "{e}");

    let e = dump_error(move |c| {
        open(c);
        send(c, PsIov::new(PS_IOV_ADD_F, PE_PRESENT, 4, 0, task));
        c.write_all(&[0u8; 5000]).unwrap();
    });
    assert!(matches!(e, Error::Truncated("page data")), "{e}");

    let e = dump_error(move |c| {
        open(c);
        c.write_all(&[1, 2, 3]).unwrap();
    });
    assert!(matches!(e, Error::Truncated("a message header")), "{e}");

    let e = dump_error(open);
    assert!(matches!(e, Error::NotClosed), "{e}");

    let e = dump_error(move |c| {
        send(c, PsIov::new(PS_IOV_CLOSE, 0, 0, 0, 0));
        assert_eq!(recv::<4>(c), [0; 4]);
        c.write_all(b"x").unwrap();
    });
    assert!(matches!(e, Error::TrailingData), "{e}");
}

#[test]
fn dump_sink_errors_are_reported() {
    struct Failing;
    impl DumpSink for Failing {
        fn begin_pages(&mut self, _: &str) -> io::Result<()> {
            Ok(())
        }
        fn pages(&mut self, _: &[u8]) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
        fn end_pages(&mut self, _: &str, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }
    let (server, mut c) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        let task = DstId::task(5).encode().unwrap();
        send(&mut c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, task));
        let _ = recv::<1>(&mut c);
        send(&mut c, PsIov::new(PS_IOV_ADD_F, PE_PRESENT, 1, 0, task));
        let _ = c.write_all(&[0u8; 4096]);
    });
    let e = serve_dump(&server, &mut Failing).unwrap_err();
    t.join().unwrap();
    assert_eq!(
        e.to_string(),
        "dump sink failed in pages for pages-65537.img: disk full"
    );
}

// ---------------------------------------------------------------------------------------------
// lazy

struct MemSource(HashMap<String, Vec<u8>>);

impl PageSource for MemSource {
    fn read_pages(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let f = self
            .0
            .get(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let off = usize::try_from(offset).unwrap();
        let src = f
            .get(off..off + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// pid 100: pages-1.img; 4 non-lazy pages, 2048 lazy, a lazy hole without data, 1 lazy page.
fn lazy_fixture() -> (tempfile::TempDir, Pagemap, MemSource) {
    let pm = Pagemap {
        pages_id: 1,
        entries: vec![
            PagemapEntry {
                vaddr: 0x400000,
                nr_pages: 4,
                flags: PE_PRESENT,
            },
            PagemapEntry {
                vaddr: 0x7f0000000000,
                nr_pages: 2048,
                flags: PE_PRESENT | PE_LAZY,
            },
            PagemapEntry {
                vaddr: 0x7f1000000000,
                nr_pages: 8,
                flags: PE_LAZY,
            },
            PagemapEntry {
                vaddr: 0x7ffff000,
                nr_pages: 1,
                flags: PE_PRESENT | PE_LAZY,
            },
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pagemap-100.img"), pm.to_bytes()).unwrap();
    let pages = pattern(9, (4 + 2048 + 1) * 4096);
    let src = MemSource(HashMap::from([("pages-1.img".to_string(), pages)]));
    (dir, pm, src)
}

fn get(c: &mut UnixStream, nr: u64, vaddr: u64, pid: u64) {
    send(c, PsIov::new(PS_IOV_GET, 0, nr, vaddr, pid));
}

fn answer(c: &mut UnixStream) -> (PsIov, Vec<u8>) {
    let h = PsIov::decode(&recv::<32>(c));
    let mut data = vec![0u8; (h.nr_pages * 4096) as usize];
    c.read_exact(&mut data).unwrap();
    (h, data)
}

#[test]
fn lazy_session_like_the_daemon() {
    let (dir, _pm, mut src) = lazy_fixture();
    let pages = src.0["pages-1.img"].clone();
    let (server, mut c) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        // A fault: one page.
        get(&mut c, 1, 0x7f0000005000, 100);
        let (h, d) = answer(&mut c);
        assert_eq!(
            h,
            PsIov::new(PS_IOV_ADD_F, PE_PRESENT, 1, 0x7f0000005000, 100)
        );
        assert!(d == pages[(4 + 5) * 4096..(4 + 6) * 4096]);
        // Pipelined: background transfer and a fault.
        get(&mut c, 16, 0x7f0000000000, 100);
        get(&mut c, 1, 0x7ffff000, 100);
        let (h, d) = answer(&mut c);
        assert_eq!((h.nr_pages, h.vaddr), (16, 0x7f0000000000));
        assert!(d == pages[4 * 4096..20 * 4096]);
        let (h, d) = answer(&mut c);
        assert_eq!((h.nr_pages, h.vaddr, h.dst_id), (1, 0x7ffff000, 100));
        assert!(d == pages[2052 * 4096..2053 * 4096]);
        // More than one answer carries: clamped to 1024 pages.
        get(&mut c, 2000, 0x7f0000000000, 100);
        let (h, d) = answer(&mut c);
        assert_eq!(h.nr_pages, 1024);
        assert!(d == pages[4 * 4096..1028 * 4096]);
        // The rest of the entry: clamped to what the entry holds.
        get(&mut c, 1024, 0x7f0000000000 + 1500 * 4096, 100);
        let (h, _) = answer(&mut c);
        assert_eq!(h.nr_pages, 548);
        send(&mut c, PsIov::new(PS_IOV_FORCE_CLOSE, 0, 0, 0, 0));
        assert_eq!(i32::from_ne_bytes(recv::<4>(&mut c)), 0);
        c
    });
    let summary = serve_lazy(&server, dir.path(), &mut src).unwrap();
    let _c = t.join().unwrap();
    assert_eq!(summary.requests, 5);
    assert_eq!(summary.short_answers, 2);
    assert_eq!(summary.pages, 1 + 16 + 1 + 1024 + 548);
    assert_eq!(summary.pagemaps, 1);
    assert!(summary.force_closed);
}

fn lazy_error(peer: impl FnOnce(&mut UnixStream) + Send + 'static) -> Error {
    let (dir, _pm, mut src) = lazy_fixture();
    let (server, mut c) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || peer(&mut c));
    let r = serve_lazy(&server, dir.path(), &mut src);
    drop(server);
    t.join().unwrap();
    r.unwrap_err()
}

#[test]
fn lazy_close_waits_for_eof() {
    let (dir, _pm, mut src) = lazy_fixture();
    let (server, mut c) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || {
        send(&mut c, PsIov::new(PS_IOV_CLOSE, 0, 0, 0, 0));
        assert_eq!(recv::<4>(&mut c), [0; 4]);
    });
    let summary = serve_lazy(&server, dir.path(), &mut src).unwrap();
    t.join().unwrap();
    assert!(!summary.force_closed);
    assert_eq!(summary.requests, 0);
}

#[test]
fn lazy_errors() {
    // Not in the pages file (a lazy-dump entry) and outside every entry.
    for vaddr in [0x7f1000000000, 0x500000] {
        let e = lazy_error(move |c| get(c, 1, vaddr, 100));
        assert!(matches!(e, Error::NoPages { pid: 100, .. }), "{e}");
    }
    let e = lazy_error(|c| get(c, 1, 0x400000, 101));
    assert!(
        e.to_string()
            .starts_with("pagemap-101.img: opening the pagemap image"),
        "{e}"
    );
    let e = lazy_error(|c| get(c, 1, 0x400000, 1 << 40));
    assert!(matches!(e, Error::NoPages { .. }), "{e}");
    let e = lazy_error(|c| get(c, 0, 0x400000, 100));
    assert!(matches!(e, Error::BadRange { .. }), "{e}");
    let e = lazy_error(|c| send(c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, 0x101)));
    assert!(
        matches!(
            e,
            Error::UnexpectedCommand {
                session: "lazy-pages",
                ..
            }
        ),
        "{e}"
    );
    let e = lazy_error(|c| send(c, PsIov::new(0x4242, 0, 0, 0, 0)));
    assert!(matches!(e, Error::UnknownCommand(0x4242)), "{e}");
    let e = lazy_error(|_| {});
    assert!(matches!(e, Error::NotClosed), "{e}");

    // A corrupt pagemap image.
    let (dir, _pm, mut src) = lazy_fixture();
    std::fs::write(dir.path().join("pagemap-100.img"), b"garbage!garbage!").unwrap();
    let (server, mut c) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || get(&mut c, 1, 0x400000, 100));
    let e = serve_lazy(&server, dir.path(), &mut src).unwrap_err();
    t.join().unwrap();
    assert!(
        e.to_string()
            .starts_with("pagemap-100.img: bad pagemap image"),
        "{e}"
    );

    // The source fails.
    let (dir, _pm, _) = lazy_fixture();
    let mut empty = MemSource(HashMap::new());
    let (server, mut c) = UnixStream::pair().unwrap();
    let t = thread::spawn(move || get(&mut c, 1, 0x400000, 100));
    let e = serve_lazy(&server, dir.path(), &mut empty).unwrap_err();
    t.join().unwrap();
    assert!(matches!(e, Error::Source { .. }), "{e}");
}

#[test]
fn non_lazy_local_pages_file() {
    let (dir, pm, mut src) = lazy_fixture();
    let pages = src.0["pages-1.img"].clone();
    let path = dir.path().join("pages-1.img");
    let f = std::fs::File::create(&path).unwrap();
    let written = write_non_lazy(&pm, &mut src, "pages-1.img", &f).unwrap();
    drop(f);
    assert_eq!(written, 4 * 4096);
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len(), pages.len());
    assert_eq!(got[..4 * 4096], pages[..4 * 4096]);
    assert!(got[4 * 4096..].iter().all(|&b| b == 0));
    // Sparse: the lazy part takes no blocks.
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&path).unwrap().blocks();
    assert!(blocks * 512 < 1 << 20, "{blocks} blocks");
}

// ---------------------------------------------------------------------------------------------
// measurement

/// The receiver's own cost: 1 GiB as 1024 `PS_IOV_ADD_F` of 1 MiB over a socketpair, into
/// `serve_dump` with a discarding sink, against a bare `read` loop over the same stream.
#[test]
#[ignore = "measurement: run with --release --ignored --nocapture"]
fn measure_receiver_overhead() {
    struct Discard(u64);
    impl DumpSink for Discard {
        fn begin_pages(&mut self, _: &str) -> io::Result<()> {
            Ok(())
        }
        fn pages(&mut self, data: &[u8]) -> io::Result<()> {
            self.0 += data.len() as u64;
            Ok(())
        }
        fn end_pages(&mut self, _: &str, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
    }
    const MSG: usize = 1 << 20;
    const N: u64 = 1024;
    let sender = |mut c: UnixStream| {
        let data = pattern(5, MSG);
        let task = DstId::task(1).encode().unwrap();
        send(&mut c, PsIov::new(PS_IOV_OPEN2, 0, 0, 0, task));
        let _ = recv::<1>(&mut c);
        for i in 0..N {
            let iov = PsIov::new(
                PS_IOV_ADD_F,
                PE_PRESENT,
                256,
                0x10000000 + i * MSG as u64,
                task,
            );
            send(&mut c, iov);
            c.write_all(&data).unwrap();
        }
        send(&mut c, PsIov::new(PS_IOV_FORCE_CLOSE, 0, 0, 0, 0));
        let _ = recv::<4>(&mut c);
    };
    for round in 0..3 {
        // bare reads
        let (server, client) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || sender(client));
        let start = std::time::Instant::now();
        let mut buf = vec![0u8; 4 << 20];
        let mut total = 0u64;
        let want = 32 + N * (32 + MSG as u64) + 32;
        let mut s = &server;
        let mut opened = false;
        while total < want {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            total += n as u64;
            if !opened && total >= 32 {
                s.write_all(&[0]).unwrap();
                opened = true;
            }
        }
        s.write_all(&[0; 4]).unwrap();
        let bare = start.elapsed();
        t.join().unwrap();

        let (server, client) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || sender(client));
        let start = std::time::Instant::now();
        let mut sink = Discard(0);
        let summary = serve_dump(&server, &mut sink).unwrap();
        let served = start.elapsed();
        t.join().unwrap();
        assert_eq!(sink.0, N * MSG as u64);
        eprintln!(
            "[measure] round {round}: 1 GiB in {} messages: bare read loop {:.3} s, serve_dump {:.3} s",
            summary.messages,
            bare.as_secs_f64(),
            served.as_secs_f64()
        );
    }
}
