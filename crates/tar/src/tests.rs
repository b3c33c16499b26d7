//! Unit tests: round trips, detection, every unpack safety rule, whiteouts,
//! secure_join and truncation. They run as root (chown, mknod, trusted.*).

use std::ffi::OsStr;
use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::*;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------- helpers

/// Builds archives with arbitrary (malicious) raw names.
struct Raw {
    b: tar::Builder<Vec<u8>>,
}

impl Raw {
    fn new() -> Self {
        Raw {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &[u8], kind: EntryType, size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let n = name.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        h
    }

    fn put(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).expect("append");
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_mode(name, data, 0o644)
    }

    fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        let h = Self::header(name.as_bytes(), EntryType::Regular, data.len() as u64, mode);
        self.put(h, data)
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let h = Self::header(name.as_bytes(), EntryType::Directory, 0, mode);
        self.put(h, b"")
    }

    fn link(&mut self, name: &str, kind: EntryType, target: &str) -> &mut Self {
        let mut h = Self::header(name.as_bytes(), kind, 0, 0o777);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        self.put(h, b"")
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(name, EntryType::Symlink, target)
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(name, EntryType::Link, target)
    }

    fn dev(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(name.as_bytes(), kind, 0, 0o600);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.put(h, b"")
    }

    fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(recs.iter().map(|(k, v)| (*k, *v)))
            .expect("pax");
        self
    }

    fn done(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().expect("finish")
    }
}

/// A temp dir holding `dest` (extraction target) and `outside` (a sentinel
/// directory with one file) side by side.
struct Sandbox {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
}

fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().to_path_buf();
    let dest = base.join("dest");
    let outside = base.join("outside");
    fs::create_dir(&dest).expect("dest");
    fs::create_dir(&outside).expect("outside");
    fs::write(outside.join("f"), b"secret").expect("sentinel");
    Sandbox {
        _tmp: tmp,
        base,
        dest,
        outside,
    }
}

impl Sandbox {
    /// Nothing but `dest` and the untouched sentinel exists next to `dest`.
    fn assert_outside_untouched(&self) {
        let mut top: Vec<_> = fs::read_dir(&self.base)
            .expect("read base")
            .map(|e| e.expect("entry").file_name())
            .collect();
        top.sort();
        assert_eq!(top, vec![OsStr::new("dest"), OsStr::new("outside")]);
        let mut inside: Vec<_> = fs::read_dir(&self.outside)
            .expect("read outside")
            .map(|e| e.expect("entry").file_name())
            .collect();
        inside.sort();
        assert_eq!(inside, vec![OsStr::new("f")]);
        let meta = fs::symlink_metadata(self.outside.join("f")).expect("sentinel meta");
        assert!(meta.is_file());
        assert_eq!(meta.nlink(), 1, "sentinel was hard-linked");
        assert_eq!(
            fs::read(self.outside.join("f")).expect("sentinel"),
            b"secret"
        );
    }

    fn unpack(&self, tar: &[u8], opts: &UnpackOptions) -> Result<UnpackStats, TarError> {
        unpack(Cursor::new(tar.to_vec()), &self.dest, opts)
    }

    fn unpack_err(&self, tar: &[u8], opts: &UnpackOptions) -> String {
        match self.unpack(tar, opts) {
            Ok(s) => panic!("unpack succeeded unexpectedly: {s:?}"),
            Err(e) => e.to_string(),
        }
    }
}

fn strict() -> UnpackOptions {
    UnpackOptions::default()
}

fn in_place() -> UnpackOptions {
    UnpackOptions {
        in_place: true,
        ..UnpackOptions::default()
    }
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn compress_vec(data: &[u8], c: Compression, threads: u32) -> R<Vec<u8>> {
    let mut w = compress(Vec::new(), c, None, threads)?;
    w.write_all(data)?;
    Ok(w.finish()?)
}

// ---------------------------------------------------------------- compression

#[test]
fn compression_parse_and_display() -> R {
    assert_eq!("zstd".parse::<Compression>()?, Compression::Zstd);
    assert_eq!("GZip".parse::<Compression>()?, Compression::Gzip);
    assert_eq!("NONE".parse::<Compression>()?, Compression::None);
    let err = "lz4".parse::<Compression>().err().ok_or("lz4 accepted")?;
    assert_eq!(
        err.to_string(),
        r#"selected compression algorithm ("lz4") not supported. Please select one from: gzip, none, zstd"#
    );
    assert_eq!(Compression::Zstd.to_string(), "zstd");
    assert_eq!(Compression::Gzip.to_string(), "gzip");
    assert_eq!(Compression::None.to_string(), "none");
    Ok(())
}

#[test]
fn detect_by_magic() {
    assert_eq!(detect(&[0x1F, 0x8B, 0x08, 0, 0, 0]), Detected::Gzip);
    assert_eq!(detect(&[0x28, 0xB5, 0x2F, 0xFD, 0x04]), Detected::Zstd);
    assert_eq!(detect(b"BZh91AY"), Detected::Bzip2);
    assert_eq!(detect(&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]), Detected::Xz);
    assert_eq!(
        detect(&[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x01]),
        Detected::Plain
    );
    assert_eq!(detect(&[0x1F, 0x8B]), Detected::Plain);
    assert_eq!(detect(b""), Detected::Plain);
    assert_eq!(detect(b"checkpoint/"), Detected::Plain);
}

#[test]
fn zstd_file_named_tar_gz_is_zstd() -> R {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("layer.tar.gz");
    let mut t = TarBuilder::new(Vec::new());
    t.append_bytes("hello", b"world", 0o644)?;
    let tar = t.finish()?;
    fs::write(&path, compress_vec(&tar, Compression::Zstd, 0)?)?;
    let (c, mut r) = decompress(fs::File::open(&path)?)?;
    assert_eq!(c, Compression::Zstd);
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    assert_eq!(out, tar);
    Ok(())
}

#[test]
fn decompress_detects_each_format_and_tiny_inputs() -> R {
    let data = b"some data that is not a tar".repeat(100);
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let (got, mut r) = decompress(Cursor::new(compress_vec(&data, c, 0)?))?;
        assert_eq!(got, c);
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        assert_eq!(out, data);
    }
    // fewer bytes than a magic number
    let (c, mut r) = decompress(Cursor::new(b"ab".to_vec()))?;
    assert_eq!(c, Compression::None);
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    assert_eq!(out, b"ab");
    Ok(())
}

#[test]
fn bzip2_and_xz_are_clear_errors() {
    let e = decompress(Cursor::new(b"BZh91AY&SY".to_vec())).err();
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some("archive is bzip2-compressed, which is not supported (supported: gzip, zstd, uncompressed)")
    );
    let e = decompress(Cursor::new(vec![0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, 1, 2])).err();
    assert!(e
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("xz-compressed"));
}

#[test]
fn compression_levels_and_threads() -> R {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for (c, level, threads) in [
        (Compression::Gzip, Some(1), 0),
        (Compression::Gzip, Some(9), 0),
        (Compression::Zstd, Some(1), 2),
        (Compression::Zstd, Some(19), 0),
        (Compression::Zstd, None, 2),
    ] {
        let mut w = compress(Vec::new(), c, level, threads)?;
        w.write_all(&data)?;
        let out = w.finish()?;
        assert!(
            out.len() < data.len() / 10,
            "{c} {level:?} did not compress"
        );
        let (got, mut r) = decompress(Cursor::new(out))?;
        assert_eq!(got, c);
        let mut back = Vec::new();
        r.read_to_end(&mut back)?;
        assert!(back == data, "{c} {level:?} {threads} round trip differs");
    }
    let e = compress(Vec::new(), Compression::Gzip, Some(10), 0).err();
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some("compression level 10 is out of range for gzip (0..=9)")
    );
    assert!(compress(Vec::new(), Compression::Zstd, Some(1000), 0).is_err());
    Ok(())
}

// ---------------------------------------------------------------- round trip

fn make_source(root: &Path) -> R {
    fs::create_dir_all(root.join("etc/ssl"))?;
    fs::create_dir_all(root.join("empty"))?;
    fs::write(root.join("etc/hostname"), b"box\n")?;
    fs::write(root.join("etc/ssl/cert.pem"), b"-----BEGIN-----\n")?;
    fs::write(root.join("empty-file"), b"")?;
    let big: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), &big)?;
    fs::write(root.join("suid"), b"#!/bin/sh\n")?;
    fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755))?;
    fs::write(root.join("private"), b"k")?;
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600))?;
    std::os::unix::fs::chown(root.join("private"), Some(1234), Some(5678))?;
    std::os::unix::fs::symlink("etc/hostname", root.join("rel-link"))?;
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link"))?;
    std::os::unix::fs::symlink("missing", root.join("dangling"))?;
    let long_dir = root.join("d".repeat(60)).join("e".repeat(60));
    fs::create_dir_all(&long_dir)?;
    fs::write(long_dir.join("f".repeat(80)), b"long name")?;
    rustix::fs::lsetxattr(
        root.join("etc/hostname"),
        "user.test",
        b"v1",
        rustix::fs::XattrFlags::empty(),
    )?;
    rustix::fs::lsetxattr(
        root.join("big.bin"),
        "security.capability",
        &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        rustix::fs::XattrFlags::empty(),
    )?;
    rustix::fs::lsetxattr(
        root.join("etc/ssl"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )?;
    fs::set_permissions(root.join("etc/ssl"), fs::Permissions::from_mode(0o750))?;
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o1777))?;
    // fixed mtimes, directories last
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 0,
        },
    };
    for p in [
        "etc/hostname",
        "big.bin",
        "rel-link",
        "etc/ssl",
        "etc",
        "empty",
    ] {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            root.join(p),
            &t,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

/// Compares two trees: types, modes, owners, contents, link targets, file
/// and directory mtimes, xattrs.
fn assert_same_tree(a: &Path, b: &Path) -> R {
    let mut names_a: Vec<_> = fs::read_dir(a)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    let mut names_b: Vec<_> = fs::read_dir(b)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "entries of {a:?}");
    for n in names_a {
        let (pa, pb) = (a.join(&n), b.join(&n));
        let (ma, mb) = (fs::symlink_metadata(&pa)?, fs::symlink_metadata(&pb)?);
        assert_eq!(ma.file_type(), mb.file_type(), "type of {pb:?}");
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of {pb:?}"
        );
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa)?, fs::read_link(&pb)?, "target of {pb:?}");
        } else {
            assert_eq!(ma.mode(), mb.mode(), "mode of {pb:?}");
        }
        assert_eq!(ma.mtime(), mb.mtime(), "mtime of {pb:?}");
        let mut xa = crate::builder::tests_support::xattrs(&pa)?;
        let mut xb = crate::builder::tests_support::xattrs(&pb)?;
        xa.retain(|(k, _)| k != "security.selinux");
        xb.retain(|(k, _)| k != "security.selinux");
        assert_eq!(xa, xb, "xattrs of {pb:?}");
        if ma.is_file() {
            assert!(fs::read(&pa)? == fs::read(&pb)?, "contents of {pb:?}");
        } else if ma.is_dir() {
            assert_same_tree(&pa, &pb)?;
        }
    }
    Ok(())
}

#[test]
fn round_trip_all_compressions() -> R {
    let src_tmp = tempfile::tempdir()?;
    let src = src_tmp.path().join("src");
    fs::create_dir(&src)?;
    make_source(&src)?;
    for (c, threads) in [
        (Compression::None, 0),
        (Compression::Gzip, 0),
        (Compression::Zstd, 0),
        (Compression::Zstd, 2),
    ] {
        let mut t = TarBuilder::new(compress(Vec::new(), c, None, threads)?);
        t.append_tree("", &src)?;
        let bytes = t.finish()?.finish()?;
        let (got, r) = decompress(Cursor::new(bytes))?;
        assert_eq!(got, c);
        let dst_tmp = tempfile::tempdir()?;
        let opts = UnpackOptions {
            preserve_ownership: true,
            ..UnpackOptions::default()
        };
        let stats = unpack(r, dst_tmp.path(), &opts)?;
        assert_eq!(stats.entries, 15, "{c}");
        assert_eq!(stats.bytes, 3_500_000 + 4 + 16 + 10 + 1 + 9, "{c}");
        assert_same_tree(&src, dst_tmp.path())?;
        assert_eq!(
            fs::metadata(dst_tmp.path().join("suid"))?.mode() & 0o7777,
            0o4755
        );
    }
    Ok(())
}

#[test]
fn builder_layout_matches_go() -> R {
    let tmp = tempfile::tempdir()?;
    let cp = tmp.path().join("cp");
    fs::create_dir(&cp)?;
    fs::write(cp.join("pages-1.img"), b"pages")?;
    fs::write(cp.join("inventory.img"), b"inv")?;
    let sock = cp.join("sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock)?;
    fs::write(tmp.path().join("config.dump"), b"{}")?;
    let mut t = TarBuilder::new(Vec::new());
    t.append_file("config.dump", &tmp.path().join("config.dump"))?;
    t.append_tree("checkpoint", &cp)?;
    t.append_bytes("spec.dump", b"{\"a\":1}", 0o600)?;
    t.append_dir("rootfs", 0o755)?;
    t.append_reader("stream.bin", 5, Cursor::new(b"12345678".to_vec()), 0o644)?;
    t.append_symlink("ln", "checkpoint/pages-1.img")?;
    let bytes = t.finish()?;
    let mut ar = tar::Archive::new(Cursor::new(bytes));
    let mut seen = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        let name = String::from_utf8(e.path_bytes().into_owned())?;
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        seen.push((name, data));
    }
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "config.dump",
            "checkpoint/",
            "checkpoint/inventory.img",
            "checkpoint/pages-1.img",
            "spec.dump",
            "rootfs/",
            "stream.bin",
            "ln"
        ]
    );
    assert_eq!(seen[6].1, b"12345");
    assert_eq!(seen[4].1, b"{\"a\":1}");
    // a reader shorter than announced is an error naming the entry
    let mut t = TarBuilder::new(Vec::new());
    let e = t
        .append_reader("short", 10, Cursor::new(b"abc".to_vec()), 0o644)
        .err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("\"short\"") && msg.contains("7 bytes early"),
        "{msg}"
    );
    Ok(())
}

// ---------------------------------------------------------------- names

#[test]
fn rejects_absolute_names() {
    let sb = sandbox();
    let abs = sb.outside.join("x");
    let tar = Raw::new()
        .file(abs.to_str().unwrap_or_default(), b"pwned")
        .done();
    let msg = sb.unpack_err(&tar, &strict());
    assert_eq!(
        msg,
        format!(
            "archive entry {:?} has an absolute path",
            abs.to_string_lossy()
        )
    );
    sb.assert_outside_untouched();
    assert_eq!(fs::read_dir(&sb.dest).map(|d| d.count()).unwrap_or(99), 0);
}

#[test]
fn rejects_dotdot_components() {
    for name in ["../x", "a/../../x", "a/..", "./../outside/f", ".."] {
        for opts in [strict(), in_place()] {
            let sb = sandbox();
            let tar = Raw::new().file("ok", b"1").file(name, b"pwned").done();
            let msg = sb.unpack_err(&tar, &opts);
            assert_eq!(
                msg,
                format!("archive entry {name:?} escapes the target directory")
            );
            sb.assert_outside_untouched();
        }
    }
}

#[test]
fn rejects_empty_and_nul_names() {
    let sb = sandbox();
    let tar = Raw::new().file("", b"x").done();
    assert_eq!(
        sb.unpack_err(&tar, &strict()),
        r#"archive entry "" has an invalid name: the name is empty"#
    );
    let tar = Raw::new()
        .pax(&[("path", b"a\0b")])
        .file("placeholder", b"x")
        .done();
    assert_eq!(
        sb.unpack_err(&tar, &strict()),
        r#"archive entry "a\0b" has an invalid name: the name contains a NUL byte"#
    );
    let tar = Raw::new().symlink(".", "/etc").done();
    assert!(sb
        .unpack_err(&tar, &strict())
        .contains("cannot replace the target directory"));
    sb.assert_outside_untouched();
}

#[test]
fn normalises_dot_prefixes_and_root_entry() -> R {
    let sb = sandbox();
    let tar = Raw::new()
        .dir("./", 0o711)
        .dir("./a/", 0o755)
        .file("./a/./b", b"bee")
        .file("c//d", b"dee")
        .done();
    let stats = sb.unpack(&tar, &strict())?;
    assert_eq!(
        stats,
        UnpackStats {
            entries: 4,
            bytes: 6
        }
    );
    assert_eq!(fs::read(sb.dest.join("a/b"))?, b"bee");
    assert_eq!(fs::read(sb.dest.join("c/d"))?, b"dee");
    assert_eq!(fs::metadata(&sb.dest)?.mode() & 0o7777, 0o711);
    sb.assert_outside_untouched();
    Ok(())
}

#[test]
fn long_pax_and_gnu_names() -> R {
    let sb = sandbox();
    let long = format!("{}/{}/{}", "a".repeat(90), "b".repeat(90), "c".repeat(120));
    let gnu = format!("{}/{}", "g".repeat(150), "h".repeat(40));
    let mut raw = Raw::new();
    raw.pax(&[("path", long.as_bytes())])
        .file("short-placeholder", b"pax");
    let mut h = Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    raw.b.append_data(&mut h, &gnu, &b"gnu"[..])?;
    let tar = raw.done();
    sb.unpack(&tar, &strict())?;
    assert_eq!(fs::read(sb.dest.join(&long))?, b"pax");
    assert_eq!(fs::read(sb.dest.join(&gnu))?, b"gnu");
    assert!(!sb.dest.join("short-placeholder").exists());
    Ok(())
}

// ---------------------------------------------------------------- symlinks

#[test]
fn archive_symlink_to_outside_is_not_followed() {
    fn tars(target: &str) -> Vec<(Vec<u8>, &'static str)> {
        vec![
            (
                Raw::new()
                    .symlink("link", target)
                    .file("link/f", b"pwned")
                    .done(),
                "link/f",
            ),
            (
                Raw::new()
                    .symlink("link", target)
                    .symlink("link/evil", "/etc")
                    .done(),
                "link/evil",
            ),
            (
                Raw::new()
                    .symlink("link", target)
                    .dir("link/sub", 0o755)
                    .done(),
                "link/sub",
            ),
            (
                Raw::new()
                    .symlink("link", target)
                    .file("x", b"1")
                    .hardlink("link/h", "x")
                    .done(),
                "link/h",
            ),
            (
                Raw::new()
                    .symlink("link", target)
                    .file("link/a/b", b"1")
                    .done(),
                "link/a/b",
            ),
        ]
    }
    for relative in [true, false] {
        for i in 0..5 {
            let sb = sandbox();
            let target = if relative {
                "../outside".to_string()
            } else {
                sb.outside.to_string_lossy().into_owned()
            };
            let (tar, name) = tars(&target).swap_remove(i);
            assert_eq!(
                sb.unpack_err(&tar, &strict()),
                format!("archive entry {name:?} would be written through the symlink \"link\"")
            );
            sb.assert_outside_untouched();
        }
    }
}

#[test]
fn existing_symlink_in_dest_is_an_error_without_in_place() {
    let sb = sandbox();
    std::os::unix::fs::symlink(&sb.outside, sb.dest.join("etc")).expect("symlink");
    let tar = Raw::new().file("etc/passwd", b"pwned").done();
    assert_eq!(
        sb.unpack_err(&tar, &strict()),
        r#"archive entry "etc/passwd" would be written through the symlink "etc""#
    );
    sb.assert_outside_untouched();
}

#[test]
fn in_place_resolves_symlinks_inside_dest() -> R {
    let sb = sandbox();
    let outside = sb.outside.to_string_lossy().into_owned();
    // existing absolute symlink pointing (on the host) at outside/
    std::os::unix::fs::symlink(&sb.outside, sb.dest.join("lib"))?;
    // existing relative symlink climbing far above the root
    std::os::unix::fs::symlink("../../../../../../..", sb.dest.join("up"))?;
    let tar = Raw::new()
        .symlink("root", "/")
        .file("root/passwd", b"via root")
        .file("lib/f", b"via lib")
        .file("up/g", b"via up")
        .symlink("dotdot", "..")
        .file("dotdot/h", b"via dotdot")
        .done();
    sb.unpack(&tar, &in_place())?;
    assert_eq!(fs::read(sb.dest.join("passwd"))?, b"via root");
    let inner = sb.dest.join(outside.trim_start_matches('/'));
    assert_eq!(fs::read(inner.join("f"))?, b"via lib");
    assert_eq!(fs::read(sb.dest.join("g"))?, b"via up");
    assert_eq!(fs::read(sb.dest.join("h"))?, b"via dotdot");
    // the links themselves are still there
    assert_eq!(fs::read_link(sb.dest.join("root"))?, Path::new("/"));
    sb.assert_outside_untouched();
    Ok(())
}

#[test]
fn in_place_replaces_existing_files_and_final_symlinks() -> R {
    let sb = sandbox();
    fs::write(sb.dest.join("file"), b"old")?;
    fs::create_dir_all(sb.dest.join("dir/sub"))?;
    fs::write(sb.dest.join("dir/sub/x"), b"x")?;
    fs::write(sb.dest.join("was-file"), b"f")?;
    // a final-component symlink must be replaced, not written through
    std::os::unix::fs::symlink(sb.outside.join("f"), sb.dest.join("passwd"))?;
    let tar = Raw::new()
        .file("file", b"new")
        .file("dir", b"now a file")
        .dir("was-file", 0o755)
        .file("was-file/inner", b"i")
        .file("passwd", b"replaced")
        .done();
    sb.unpack(&tar, &in_place())?;
    assert_eq!(fs::read(sb.dest.join("file"))?, b"new");
    assert_eq!(fs::read(sb.dest.join("dir"))?, b"now a file");
    assert_eq!(fs::read(sb.dest.join("was-file/inner"))?, b"i");
    assert!(fs::symlink_metadata(sb.dest.join("passwd"))?.is_file());
    assert_eq!(fs::read(sb.dest.join("passwd"))?, b"replaced");
    sb.assert_outside_untouched();
    Ok(())
}

#[test]
fn later_entries_replace_earlier_ones() -> R {
    let sb = sandbox();
    let tar = Raw::new()
        .file("a", b"file")
        .dir("a", 0o755)
        .file("a/b", b"b")
        .dir("c", 0o755)
        .file("c/d", b"d")
        .file("c", b"file again")
        .symlink("e", "/etc")
        .file("e", b"not a link")
        .done();
    sb.unpack(&tar, &strict())?;
    assert_eq!(fs::read(sb.dest.join("a/b"))?, b"b");
    assert_eq!(fs::read(sb.dest.join("c"))?, b"file again");
    assert_eq!(fs::read(sb.dest.join("e"))?, b"not a link");
    Ok(())
}

#[test]
fn symlink_entries_may_point_anywhere() -> R {
    let sb = sandbox();
    let tar = Raw::new()
        .symlink("abs", "/etc/shadow")
        .symlink("rel", "../../../../etc")
        .done();
    sb.unpack(&tar, &strict())?;
    assert_eq!(
        fs::read_link(sb.dest.join("abs"))?,
        Path::new("/etc/shadow")
    );
    assert_eq!(
        fs::read_link(sb.dest.join("rel"))?,
        Path::new("../../../../etc")
    );
    sb.assert_outside_untouched();
    Ok(())
}

#[test]
fn symlink_loop_in_place_errors() {
    let sb = sandbox();
    let tar = Raw::new()
        .symlink("l1", "l2")
        .symlink("l2", "l1")
        .file("l1/x", b"x")
        .done();
    let msg = sb.unpack_err(&tar, &in_place());
    assert!(
        msg.contains("\"l1/x\"") && msg.contains("too many levels of symbolic links"),
        "{msg}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn parent_that_is_a_file_is_an_error() {
    let sb = sandbox();
    let tar = Raw::new().file("a", b"1").file("a/b", b"2").done();
    assert_eq!(
        sb.unpack_err(&tar, &strict()),
        r#"archive entry "a/b" cannot be created: "a" is not a directory"#
    );
}

// ---------------------------------------------------------------- hard links

#[test]
fn hardlink_rules() -> R {
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "absolute",
            Raw::new().hardlink("a", "/etc/shadow").done(),
            r#"archive entry "a" is a hard link to "/etc/shadow" outside the archive"#,
        ),
        (
            "dotdot",
            Raw::new().hardlink("a", "../outside/f").done(),
            r#"archive entry "a" is a hard link to "../outside/f" outside the archive"#,
        ),
        (
            "not extracted",
            Raw::new().hardlink("a", "nope").done(),
            r#"archive entry "a" is a hard link to "nope", which is not a regular file extracted earlier from the archive"#,
        ),
        (
            "to a symlink",
            Raw::new()
                .symlink("s", "../outside/f")
                .hardlink("h", "s")
                .done(),
            r#"archive entry "h" is a hard link to "s", which is not a regular file extracted earlier from the archive"#,
        ),
        (
            "to a directory",
            Raw::new().dir("d", 0o755).hardlink("h", "d").done(),
            r#"archive entry "h" is a hard link to "d", which is not a regular file extracted earlier from the archive"#,
        ),
        (
            "file replaced by symlink",
            Raw::new()
                .file("f", b"1")
                .symlink("f", "../outside/f")
                .hardlink("h", "f")
                .done(),
            r#"archive entry "h" is a hard link to "f", which is not a regular file extracted earlier from the archive"#,
        ),
    ];
    for (what, tar, want) in cases {
        for opts in [strict(), in_place()] {
            let sb = sandbox();
            assert_eq!(sb.unpack_err(&tar, &opts), want, "{what}");
            sb.assert_outside_untouched();
        }
    }
    // through a symlinked parent: strict errors, in_place stays inside
    let sb = sandbox();
    let outside = sb.outside.to_string_lossy().into_owned();
    let tar = Raw::new()
        .file("d/f", b"1")
        .symlink("d", &outside)
        .hardlink("h", "d/f")
        .done();
    let msg = sb.unpack_err(&tar, &strict());
    assert!(msg.contains("through the symlink \"d\""), "{msg}");
    sb.assert_outside_untouched();
    let sb = sandbox();
    let tar = Raw::new()
        .file("d/f", b"1")
        .symlink("d", &sb.outside.to_string_lossy())
        .hardlink("h", "d/f")
        .done();
    let msg = sb.unpack_err(&tar, &in_place());
    assert!(
        msg.contains("\"h\"") && msg.contains("not a regular file extracted earlier"),
        "{msg}"
    );
    sb.assert_outside_untouched();
    Ok(())
}

#[test]
fn hardlink_to_preexisting_file_is_refused() {
    for opts in [strict(), in_place()] {
        let sb = sandbox();
        fs::write(sb.dest.join("existing"), b"host file").expect("existing");
        let tar = Raw::new().hardlink("h", "existing").done();
        assert_eq!(
            sb.unpack_err(&tar, &opts),
            r#"archive entry "h" is a hard link to "existing", which is not a regular file extracted earlier from the archive"#
        );
        assert!(!sb.dest.join("h").exists());
        assert_eq!(
            fs::metadata(sb.dest.join("existing"))
                .map(|m| m.nlink())
                .unwrap_or(0),
            1
        );
    }
}

#[test]
fn valid_hardlinks_share_the_inode() -> R {
    let sb = sandbox();
    let tar = Raw::new()
        .file("dir/f", b"data")
        .hardlink("g", "./dir/f")
        .hardlink("dir/h", "dir/f")
        .done();
    sb.unpack(&tar, &strict())?;
    let ino = fs::metadata(sb.dest.join("dir/f"))?.ino();
    assert_eq!(fs::metadata(sb.dest.join("g"))?.ino(), ino);
    assert_eq!(fs::metadata(sb.dest.join("dir/h"))?.ino(), ino);
    assert_eq!(fs::metadata(sb.dest.join("g"))?.nlink(), 3);
    Ok(())
}

// ---------------------------------------------------------------- devices

#[test]
fn devices_rejected_by_default() {
    let cases = [
        (
            EntryType::Block,
            "dev/sda",
            r#"archive entry "dev/sda" is a block device: device nodes are not allowed"#,
        ),
        (
            EntryType::Char,
            "dev/null",
            r#"archive entry "dev/null" is a character device: device nodes are not allowed"#,
        ),
        (
            EntryType::Fifo,
            "pipe",
            r#"archive entry "pipe" is a fifo: device nodes are not allowed"#,
        ),
    ];
    for (kind, name, want) in cases {
        let sb = sandbox();
        let tar = Raw::new().dev(name, kind, 8, 0).done();
        assert_eq!(sb.unpack_err(&tar, &strict()), want);
        assert!(!sb.dest.join(name).exists());
        sb.assert_outside_untouched();
    }
}

#[test]
fn devices_created_when_allowed() -> R {
    let sb = sandbox();
    let tar = Raw::new()
        .dev("dev/sda", EntryType::Block, 8, 1)
        .dev("dev/null", EntryType::Char, 1, 3)
        .dev("pipe", EntryType::Fifo, 0, 0)
        .done();
    let opts = UnpackOptions {
        allow_devices: true,
        ..UnpackOptions::default()
    };
    sb.unpack(&tar, &opts)?;
    let m = fs::symlink_metadata(sb.dest.join("dev/sda"))?;
    assert!(m.file_type().is_block_device());
    assert_eq!(m.rdev(), rustix::fs::makedev(8, 1));
    let m = fs::symlink_metadata(sb.dest.join("dev/null"))?;
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(m.mode() & 0o777, 0o600);
    assert!(fs::symlink_metadata(sb.dest.join("pipe"))?
        .file_type()
        .is_fifo());
    Ok(())
}

// ---------------------------------------------------------------- limits

#[test]
fn entry_and_byte_limits() {
    let sb = sandbox();
    let tar = Raw::new()
        .file("a", b"1")
        .file("b", b"2")
        .file("c", b"3")
        .done();
    let opts = UnpackOptions {
        max_entries: Some(2),
        ..UnpackOptions::default()
    };
    assert_eq!(
        sb.unpack_err(&tar, &opts),
        r#"archive exceeds the limit of 2 entries at entry "c""#
    );
    assert!(!sb.dest.join("c").exists());

    let sb = sandbox();
    let tar = Raw::new()
        .file("a", &[0u8; 600])
        .file("big", &[1u8; 500])
        .done();
    let opts = UnpackOptions {
        max_bytes: Some(1000),
        ..UnpackOptions::default()
    };
    assert_eq!(
        sb.unpack_err(&tar, &opts),
        r#"archive exceeds the size limit of 1000 bytes at entry "big""#
    );
    assert!(!sb.dest.join("big").exists());
    sb.assert_outside_untouched();
}

// ---------------------------------------------------------------- truncation

fn sample_tar() -> Vec<u8> {
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(7919) >> 5) as u8)
        .collect();
    Raw::new()
        .file("first", b"hello")
        .file("big", &data)
        .file("last", b"bye")
        .done()
}

#[test]
fn truncated_plain_archives_error() -> R {
    let tar = sample_tar();
    // offsets: header(512) + "first" data(512) + header(512) + big data...
    let cases = [
        (1536 + 100_000, r#"unexpected end of archive (truncated?) in entry "big" (100000 of 200000 bytes)"#),
        (1536 + 200_000 + 100, r#"unexpected end of archive (truncated?) after entry "big""#),
        (1024 + 300, r#"unexpected end of archive (truncated?) after entry "first""#),
        (tar.len() - 1024, r#"unexpected end of archive (truncated?) after entry "last" (no end-of-archive marker)"#),
        (0, "unexpected end of archive (truncated?) before the first entry (no end-of-archive marker)"),
    ];
    for (cut, want) in cases {
        let sb = sandbox();
        let msg = sb.unpack_err(&tar[..cut], &strict());
        assert_eq!(msg, want, "cut at {cut}");
    }
    // the complete archive is fine, also with extra zero padding
    let sb = sandbox();
    let mut padded = tar.clone();
    padded.extend_from_slice(&[0u8; 8192]);
    assert_eq!(sb.unpack(&padded, &strict())?.entries, 3);
    Ok(())
}

#[test]
fn truncated_compressed_archives_error() -> R {
    let tar = sample_tar();
    for c in [Compression::Gzip, Compression::Zstd] {
        let z = compress_vec(&tar, c, 0)?;
        for cut in [z.len() / 2, z.len() - 3] {
            let sb = sandbox();
            let (_, r) = decompress(Cursor::new(z[..cut].to_vec()))?;
            let msg = match unpack(r, &sb.dest, &strict()) {
                Ok(_) => panic!("{c} cut at {cut}/{} accepted", z.len()),
                Err(e) => e.to_string(),
            };
            assert!(
                msg.starts_with("unexpected end of archive (truncated?)"),
                "{c} cut at {cut}: {msg}"
            );
        }
        // corruption in the middle is an error too
        let mut bad = z.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xFF;
        bad[mid + 1] ^= 0x55;
        let sb = sandbox();
        let (_, r) = decompress(Cursor::new(bad))?;
        assert!(
            unpack(r, &sb.dest, &strict()).is_err(),
            "{c} corruption accepted"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- metadata

#[test]
fn modes_setuid_mtimes_and_xattrs() -> R {
    let sb = sandbox();
    let tar = Raw::new()
        .dir("d", 0o750)
        .file_mode("d/suid", b"x", 0o6755)
        .file_mode("d/plain", b"y", 0o640)
        .pax(&[
            ("SCHILY.xattr.user.k", b"v\0binary"),
            ("mtime", b"1234567890.5"),
        ])
        .file("d/x", b"z")
        .done();
    sb.unpack(&tar, &strict())?;
    assert_eq!(fs::metadata(sb.dest.join("d"))?.mode() & 0o7777, 0o750);
    assert_eq!(
        fs::metadata(sb.dest.join("d/suid"))?.mode() & 0o7777,
        0o755,
        "setuid kept without preserve_ownership"
    );
    assert_eq!(
        fs::metadata(sb.dest.join("d/plain"))?.mode() & 0o7777,
        0o640
    );
    assert_eq!(
        getxattr(&sb.dest.join("d/x"), "user.k").as_deref(),
        Some(&b"v\0binary"[..])
    );
    let m = fs::metadata(sb.dest.join("d/x"))?;
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_234_567_890, 500_000_000));
    // directory mtime set after its contents were written
    assert_eq!(fs::metadata(sb.dest.join("d"))?.mtime(), 1_600_000_000);

    let sb = sandbox();
    let mut raw = Raw::new();
    let mut h = Raw::header(b"owned", EntryType::Regular, 1, 0o4750);
    h.set_uid(1000);
    h.set_gid(2000);
    raw.put(h, b"o");
    let tar = raw.done();
    let opts = UnpackOptions {
        preserve_ownership: true,
        ..UnpackOptions::default()
    };
    sb.unpack(&tar, &opts)?;
    let m = fs::metadata(sb.dest.join("owned"))?;
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 2000, 0o4750));
    Ok(())
}

// ---------------------------------------------------------------- whiteouts

#[test]
fn overlay_whiteouts() -> R {
    let sb = sandbox();
    fs::create_dir(sb.dest.join("etc"))?;
    fs::write(sb.dest.join("etc/gone"), b"old")?;
    let tar = Raw::new()
        .dir("etc", 0o755)
        .file("etc/.wh.gone", b"")
        .file(".wh.toplevel", b"")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/kept", b"k")
        .file(".wh..wh.plnk", b"")
        .done();
    let opts = UnpackOptions {
        overlay_whiteouts: true,
        in_place: true,
        ..UnpackOptions::default()
    };
    sb.unpack(&tar, &opts)?;
    for p in ["etc/gone", "toplevel"] {
        let m = fs::symlink_metadata(sb.dest.join(p))?;
        assert!(m.file_type().is_char_device(), "{p}");
        assert_eq!(m.rdev(), 0, "{p}");
    }
    assert!(!sb.dest.join("etc/.wh.gone").exists());
    assert_eq!(
        getxattr(&sb.dest.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!sb.dest.join("opq/.wh..wh..opq").exists());
    assert_eq!(fs::read(sb.dest.join("opq/kept"))?, b"k");
    assert!(!sb.dest.join(".wh..wh.plnk").exists());

    // whiteouts never escape either
    let sb2 = sandbox();
    let tar = Raw::new().file("../.wh.outside", b"").done();
    assert!(sb2
        .unpack_err(&tar, &opts)
        .contains("escapes the target directory"));
    let tar = Raw::new()
        .symlink("l", &sb2.outside.to_string_lossy())
        .file("l/.wh.f", b"")
        .done();
    let strict_wh = UnpackOptions {
        overlay_whiteouts: true,
        ..UnpackOptions::default()
    };
    assert!(sb2
        .unpack_err(&tar, &strict_wh)
        .contains("through the symlink"));
    sb2.assert_outside_untouched();

    // without the option they are plain files
    let sb3 = sandbox();
    let tar = Raw::new()
        .file(".wh.foo", b"")
        .file("d/.wh..wh..opq", b"")
        .done();
    sb3.unpack(&tar, &strict())?;
    assert!(fs::symlink_metadata(sb3.dest.join(".wh.foo"))?.is_file());
    assert!(fs::symlink_metadata(sb3.dest.join("d/.wh..wh..opq"))?.is_file());
    assert_eq!(
        getxattr(&sb3.dest.join("d"), "trusted.overlay.opaque"),
        None
    );
    Ok(())
}

// ---------------------------------------------------------------- secure_join

#[test]
fn secure_join_cases() -> R {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("etc"))?;
    fs::create_dir_all(root.join("usr/lib"))?;
    std::os::unix::fs::symlink("/etc", root.join("etclink"))?;
    std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
    std::os::unix::fs::symlink("../../../../../tmp", root.join("usr/up"))?;
    std::os::unix::fs::symlink("loop2", root.join("loop1"))?;
    std::os::unix::fs::symlink("loop1", root.join("loop2"))?;
    std::os::unix::fs::symlink("/etc/passwd", root.join("pw"))?;

    let cases = [
        ("../../etc/passwd", "etc/passwd"),
        ("/etc/passwd", "etc/passwd"),
        ("etclink/passwd", "etc/passwd"),
        ("etclink", "etc"),
        ("lib/x.so", "usr/lib/x.so"),
        ("lib/../bin", "usr/bin"),
        ("usr/up/f", "tmp/f"),
        ("a/b/../../../c", "c"),
        ("missing/../etc", "etc"),
        ("pw", "etc/passwd"),
        ("", ""),
        ("/", ""),
    ];
    for (input, want) in cases {
        let got = secure_join(&root, input)?;
        let expect = if want.is_empty() {
            root.clone()
        } else {
            root.join(want)
        };
        assert_eq!(got, expect, "secure_join({input:?})");
        assert!(got.starts_with(&root));
    }
    let e = secure_join(&root, "loop1/x")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("\"loop1/x\"") && e.contains("too many levels of symbolic links"),
        "{e}"
    );
    Ok(())
}

#[test]
fn non_utf8_names_are_kept() -> R {
    let sb = sandbox();
    let mut raw = Raw::new();
    let h = Raw::header(b"caf\xe9", EntryType::Regular, 1, 0o644);
    raw.put(h, b"x");
    sb.unpack(&raw.done(), &strict())?;
    assert_eq!(fs::read(sb.dest.join(OsStr::from_bytes(b"caf\xe9")))?, b"x");
    Ok(())
}

#[test]
fn layer_overlay_xattrs_are_ignored() -> R {
    let tar = Raw::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            (
                "SCHILY.xattr.security.capability",
                &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
        ])
        .dir("d", 0o755)
        .done();
    let sb = sandbox();
    let layer = UnpackOptions {
        overlay_whiteouts: true,
        ..UnpackOptions::default()
    };
    sb.unpack(&tar, &layer)?;
    assert_eq!(
        getxattr(&sb.dest.join("d"), "trusted.overlay.redirect"),
        None
    );
    assert_eq!(getxattr(&sb.dest.join("d"), "trusted.overlay.opaque"), None);
    assert!(getxattr(&sb.dest.join("d"), "security.capability").is_some());
    // outside layer mode they are applied like any xattr
    let sb = sandbox();
    sb.unpack(&tar, &strict())?;
    assert_eq!(
        getxattr(&sb.dest.join("d"), "trusted.overlay.redirect").as_deref(),
        Some(&b"/etc"[..])
    );
    Ok(())
}

#[test]
fn public_types_are_send() {
    fn send<T: Send>() {}
    send::<Compressor<Vec<u8>>>();
    send::<TarBuilder<Vec<u8>>>();
    send::<TarError>();
    send::<UnpackOptions>();
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}", width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

/// A GNU sparse entry: 3 data bytes at offset 5 MiB of a 10 MiB file.
fn sparse_tar() -> Vec<u8> {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_size(3);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_uid(0);
    h.set_gid(0);
    h.as_old_mut().name[..6].copy_from_slice(b"sparse");
    if let Some(gnu) = h.as_gnu_mut() {
        octal(&mut gnu.sparse[0].offset, 5 << 20);
        octal(&mut gnu.sparse[0].numbytes, 3);
        octal(&mut gnu.sparse[1].offset, 10 << 20);
        octal(&mut gnu.sparse[1].numbytes, 0);
        octal(&mut gnu.realsize, 10 << 20);
    }
    let mut raw = Raw::new();
    raw.put(h, b"abc");
    raw.done()
}

#[test]
fn gnu_sparse_files_and_byte_limit() -> R {
    let tar = sparse_tar();
    let sb = sandbox();
    let stats = sb.unpack(&tar, &strict())?;
    assert_eq!(stats.bytes, 10 << 20);
    let data = fs::read(sb.dest.join("sparse"))?;
    assert_eq!(data.len(), 10 << 20);
    assert_eq!(&data[5 << 20..(5 << 20) + 3], b"abc");
    assert!(data[..5 << 20].iter().all(|b| *b == 0));
    // the logical size counts against max_bytes, not the 3 archived bytes
    let sb = sandbox();
    let opts = UnpackOptions {
        max_bytes: Some(1 << 20),
        ..UnpackOptions::default()
    };
    assert_eq!(
        sb.unpack_err(&tar, &opts),
        r#"archive exceeds the size limit of 1048576 bytes at entry "sparse""#
    );
    Ok(())
}

/// Throughput check, run by hand: `cargo test --release -p stasis-tar -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_large_round_trip() -> R {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    fs::create_dir(&src)?;
    let mut f = fs::File::create(src.join("pages-1.img"))?;
    let chunk: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    for _ in 0..1024 {
        f.write_all(&chunk)?;
    }
    drop(f);
    for (c, threads) in [
        (Compression::None, 0),
        (Compression::Zstd, 2),
        (Compression::Gzip, 0),
    ] {
        let archive = tmp.path().join("a.tar");
        let t0 = std::time::Instant::now();
        let mut t = TarBuilder::new(compress(fs::File::create(&archive)?, c, None, threads)?);
        t.append_tree("checkpoint", &src)?;
        t.finish()?.finish()?;
        let t1 = t0.elapsed();
        let dst = tmp.path().join(format!("dst-{c}"));
        fs::create_dir(&dst)?;
        let t0 = std::time::Instant::now();
        let (_, r) = decompress(fs::File::open(&archive)?)?;
        unpack(r, &dst, &UnpackOptions::default())?;
        let t2 = t0.elapsed();
        eprintln!(
            "{c}: 1 GiB pack {t1:?}, unpack {t2:?}, archive {} MiB",
            fs::metadata(&archive)?.len() >> 20
        );
        fs::remove_dir_all(&dst)?;
    }
    Ok(())
}

#[test]
fn oversized_extension_headers_are_refused() -> R {
    // a 2 MiB PAX record (would be buffered whole by the tar crate)
    let big = vec![b'a'; 2 << 20];
    let tar = Raw::new()
        .file("ok", b"1")
        .pax(&[("comment", &big)])
        .file("victim", b"x")
        .done();
    let sb = sandbox();
    assert_eq!(
        sb.unpack_err(&tar, &strict()),
        r#"corrupt archive after entry "ok": pax extended header of 2097169 bytes exceeds the limit of 1048576 bytes"#
    );
    // a 2 MiB GNU long name
    let mut raw = Raw::new();
    let mut h = Raw::header(
        b"././@LongLink",
        EntryType::GNULongName,
        big.len() as u64,
        0o644,
    );
    h.set_cksum();
    raw.b.append(&h, &big[..])?;
    raw.file("victim", b"x");
    let sb = sandbox();
    let msg = sb.unpack_err(&raw.done(), &strict());
    assert!(
        msg.ends_with("gnu long name record of 2097152 bytes exceeds the limit of 1048576 bytes"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn pax_size_override_keeps_the_guard_in_sync() -> R {
    // header says 0 bytes, PAX says 700: the data (and the next header) follow the PAX size
    let data = vec![b'z'; 700];
    let mut raw = Raw::new();
    raw.pax(&[("size", b"700")]);
    let mut h = Raw::header(b"sized", EntryType::Regular, 0, 0o644);
    h.set_cksum();
    raw.b.get_mut().extend_from_slice(h.as_bytes());
    raw.b.get_mut().extend_from_slice(&data);
    raw.b.get_mut().extend_from_slice(&[0u8; 1024 - 700]);
    raw.file("after", b"ok");
    let tar = raw.done();
    let sb = sandbox();
    sb.unpack(&tar, &strict())?;
    assert_eq!(fs::read(sb.dest.join("sized"))?, data);
    assert_eq!(fs::read(sb.dest.join("after"))?, b"ok");
    // and an oversized header after it is still seen
    let mut tar2 = tar[..tar.len() - 1024].to_vec();
    let mut raw = Raw::new();
    raw.pax(&[("comment", &vec![b'a'; 2 << 20])])
        .file("late", b"x");
    tar2.extend_from_slice(&raw.done());
    let msg = sb.unpack_err(&tar2, &strict());
    assert!(
        msg.contains("pax extended header of") && msg.contains("after entry \"after\""),
        "{msg}"
    );
    Ok(())
}

#[test]
fn deferred_dir_times_do_not_follow_a_later_symlink() -> R {
    let sb = sandbox();
    let before = fs::metadata(&sb.outside)?.mtime();
    let tar = Raw::new()
        .dir("a", 0o755)
        .dir("a/b", 0o755)
        .symlink("a", &sb.outside.to_string_lossy())
        .done();
    sb.unpack(&tar, &strict())?;
    assert_ne!(fs::metadata(&sb.outside)?.mtime(), 1_600_000_000);
    assert_eq!(fs::metadata(&sb.outside)?.mtime(), before);
    assert!(fs::symlink_metadata(sb.dest.join("a"))?
        .file_type()
        .is_symlink());
    sb.assert_outside_untouched();
    Ok(())
}
