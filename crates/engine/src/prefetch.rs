//! Cold restores: the programs a restore is about to run and the shared libraries they load
//! are read into the page cache in the background while stasis reads the archive and
//! prepares the container.
//!
//! A restore runs a chain of programs one after the other (conmon, runc, CRIU, tar and gzip
//! for CRIU's tmpfs images; netavark and iptables beside them), and CRIU alone loads a dozen
//! libraries (gnutls and its friends). With a cold page cache, after a boot or once memory
//! pressure has evicted them, each one is read from disk when it starts, on the critical path.
//! A restore first spends 15-20 ms on its own work (archive, rootfs, network namespace), time
//! in which the disk can read them. The reads go in 2 MiB steps, each waited for before the
//! next (`read_into_cache`): stasis's own small reads meanwhile wait behind one step at most.
//!
//! Measured on a tiny restore with a dropped page cache (10 interleaved runs each, means):
//! 237 ms without, 215 ms with every file asked for at once, 199 ms in steps. Checkpoints and
//! `run` were measured too and are left alone: they need runc within milliseconds, and the
//! reads only competed with it (a cold tiny checkpoint took 221 ms without, 235-238 ms with
//! any of three lists). With a warm cache it costs a page-cache lookup per step in that
//! thread.
//!
//! Nothing here can fail a command: a file that cannot be opened or parsed is skipped.
//! `STASIS_PREFETCH=0` turns it off.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// At most this many files (programs and libraries) are prefetched per command.
const MAX_FILES: usize = 96;

/// The programs a restore runs, in the order it needs them. netavark is looked up in the
/// prefetch thread (its search is a few file lookups of its own).
fn restore_programs(opts: &crate::EngineOptions) -> Vec<PathBuf> {
    let mut p = vec![opts.conmon.clone(), opts.runc.clone()];
    p.extend(["criu", "tar", "gzip"].map(PathBuf::from));
    p.extend(stasis_network::netavark::Binaries::find().map(|b| b.netavark));
    p.push("iptables".into());
    p
}

/// Starts prefetching what a restore will run (see the module's comment), in a detached
/// thread.
pub fn spawn_for_restore(opts: &crate::EngineOptions) {
    if std::env::var_os("STASIS_PREFETCH").is_some_and(|v| v == "0") {
        return;
    }
    let opts = opts.clone();
    let _ = std::thread::Builder::new()
        .name("stasis-prefetch".into())
        .spawn(move || {
            let done = run(&restore_programs(&opts));
            crate::progress::mark(&format!("prefetch: {} files read", done.len()));
        });
}

/// Prefetches `programs` and their libraries, each program followed by the libraries it
/// loads (depth first: in the order they will be needed); returns the files read.
pub fn run(programs: &[PathBuf]) -> Vec<PathBuf> {
    enum Item {
        Program(PathBuf),
        Library(String),
    }
    let dirs = library_dirs();
    let (mut seen_libs, mut seen_files) = (HashSet::new(), HashSet::new());
    let mut done = Vec::new();
    let mut stack: Vec<Item> = programs
        .iter()
        .rev()
        .filter_map(|p| resolve_program(p).map(Item::Program))
        .collect();
    while let Some(item) = stack.pop() {
        if done.len() >= MAX_FILES {
            break;
        }
        let opened = match item {
            Item::Program(p) => File::open(&p).ok().map(|f| (f, p)),
            Item::Library(name) if seen_libs.insert(name.clone()) => dirs.iter().find_map(|d| {
                let p = d.join(&name);
                File::open(&p).ok().map(|f| (f, p))
            }),
            Item::Library(_) => None,
        };
        let Some((f, path)) = opened else {
            continue;
        };
        // The same file under two names (symbolic links) is read once.
        let Ok(meta) = f.metadata() else {
            continue;
        };
        if !meta.is_file() || !seen_files.insert((meta.dev(), meta.ino())) {
            continue;
        }
        read_into_cache(&f, meta.len());
        done.push(path);
        let libs = needed(&f).unwrap_or_default();
        stack.extend(libs.into_iter().rev().map(Item::Library));
    }
    done
}

/// How much of a file is asked for at a time.
const CHUNK: u64 = 2 << 20;

/// Brings `f` into the page cache, one chunk at a time: the command's own small reads then
/// never queue behind tens of megabytes at the disk (all files asked for at once delayed a
/// cold restore's own work by about 20 ms). Cached chunks cost a page-cache lookup.
fn read_into_cache(f: &File, len: u64) {
    let fd = f.as_raw_fd();
    // SAFETY: plain system calls on a descriptor we own; they only steer the page cache.
    // RANDOM: reading this descriptor starts no readahead beyond what is asked for.
    unsafe {
        libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_RANDOM);
    }
    let mut byte = [0u8; 1];
    let mut off = 0;
    while off < len {
        let n = CHUNK.min(len - off);
        // SAFETY: as above; the range lies within the file.
        unsafe {
            libc::posix_fadvise(fd, off as i64, n as i64, libc::POSIX_FADV_WILLNEED);
        }
        // Waits for the chunk (its last page) before the next one is queued.
        let _ = f.read_at(&mut byte, off + n - 1);
        off += n;
    }
}

fn resolve_program(p: &Path) -> Option<PathBuf> {
    if p.is_absolute() {
        return Some(p.to_path_buf());
    }
    crate::find_in_path(p.to_str()?)
}

/// Where the dynamic loader finds libraries: the directories of the libraries mapped into this
/// process (the system's multiarch directory among them), then the usual ones.
fn library_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        if !path.contains(".so") {
            continue;
        }
        if let Some(d) = Path::new(path).parent() {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    dirs
}

/// Why an ELF file's dependencies could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Not a 64-bit little-endian ELF file (scripts, other architectures).
    NotElf64,
    /// A header or table points outside the file or is implausibly large.
    Malformed(&'static str),
    Io(std::io::ErrorKind),
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;

/// The `DT_NEEDED` names of a 64-bit little-endian ELF file: the libraries the dynamic loader
/// will load for it. Reads only the headers, the dynamic section and its string table.
pub fn needed(f: &impl FileExt) -> Result<Vec<String>, ElfError> {
    let read = |off: u64, len: usize| -> Result<Vec<u8>, ElfError> {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off)
            .map_err(|e| ElfError::Io(e.kind()))?;
        Ok(buf)
    };
    let h = read(0, 64).map_err(|_| ElfError::NotElf64)?;
    if h[..4] != *b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return Err(ElfError::NotElf64);
    }
    let phoff = u64_at(&h, 0x20);
    let phentsize = u16_at(&h, 0x36) as usize;
    let phnum = u16_at(&h, 0x38) as usize;
    if phentsize < 56 || phnum > 512 {
        return Err(ElfError::Malformed("program headers"));
    }
    let ph = read(phoff, phentsize * phnum)?;
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let e = &ph[i * phentsize..];
        let (kind, offset, vaddr, filesz) =
            (u32_at(e, 0), u64_at(e, 8), u64_at(e, 16), u64_at(e, 32));
        match kind {
            PT_LOAD => loads.push((vaddr, offset, filesz)),
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    // A static executable has no dynamic section, hence nothing to load.
    let Some((dyn_off, dyn_size)) = dynamic else {
        return Ok(Vec::new());
    };
    if dyn_size > 64 * 1024 {
        return Err(ElfError::Malformed("dynamic section"));
    }
    let d = read(dyn_off, dyn_size as usize)?;
    let (mut names, mut strtab, mut strsz) = (Vec::new(), None, None);
    for e in d.chunks_exact(16) {
        match (u64_at(e, 0), u64_at(e, 8)) {
            (DT_NULL, _) => break,
            (DT_NEEDED, v) => names.push(v),
            (DT_STRTAB, v) => strtab = Some(v),
            (DT_STRSZ, v) => strsz = Some(v),
            _ => {}
        }
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
        return Err(ElfError::Malformed("string table"));
    };
    if strsz > 1 << 20 {
        return Err(ElfError::Malformed("string table"));
    }
    // The table is named by its address once loaded: find the segment that holds it.
    let file_off = loads
        .iter()
        .find(|(vaddr, _, filesz)| strtab >= *vaddr && strtab - vaddr < *filesz)
        .map(|(vaddr, offset, _)| strtab - vaddr + offset)
        .ok_or(ElfError::Malformed("string table"))?;
    let s = read(file_off, strsz as usize)?;
    Ok(names
        .into_iter()
        .filter_map(|off| {
            let rest = s.get(off as usize..)?;
            let end = rest.iter().position(|&b| b == 0)?;
            let name = std::str::from_utf8(&rest[..end]).ok()?;
            // A plain file name: anything else is not a library to look up in a directory.
            (!name.is_empty() && !name.contains('/') && name != "..").then(|| name.to_string())
        })
        .collect())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_LOAD mapping the whole file at `base` and a PT_DYNAMIC
    /// listing `libs`.
    fn elf(libs: &[&str], base: u64) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut offs = Vec::new();
        for l in libs {
            offs.push(strtab.len() as u64);
            strtab.extend_from_slice(l.as_bytes());
            strtab.push(0);
        }
        let phoff = 64u64;
        let dyn_off = phoff + 2 * 56;
        let mut dynamic = Vec::new();
        let mut ent = |tag: u64, val: u64| {
            dynamic.extend_from_slice(&tag.to_le_bytes());
            dynamic.extend_from_slice(&val.to_le_bytes());
        };
        for o in &offs {
            ent(DT_NEEDED, *o);
        }
        let n_entries = offs.len() as u64 + 3;
        let str_off = dyn_off + n_entries * 16;
        ent(DT_STRTAB, base + str_off);
        ent(DT_STRSZ, strtab.len() as u64);
        ent(DT_NULL, 0);
        let total = str_off + strtab.len() as u64;
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let mut ph = |kind: u32, off: u64, vaddr: u64, size: u64| {
            let mut e = vec![0u8; 56];
            e[0..4].copy_from_slice(&kind.to_le_bytes());
            e[8..16].copy_from_slice(&off.to_le_bytes());
            e[16..24].copy_from_slice(&vaddr.to_le_bytes());
            e[32..40].copy_from_slice(&size.to_le_bytes());
            f.extend_from_slice(&e);
        };
        ph(PT_LOAD, 0, base, total);
        ph(PT_DYNAMIC, dyn_off, base + dyn_off, dynamic.len() as u64);
        f.extend_from_slice(&dynamic);
        f.extend_from_slice(&strtab);
        f
    }

    fn tmp_file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn needed_lists_the_libraries_of_a_built_elf_through_its_load_segment() {
        let f = tmp_file(&elf(&["libfoo.so.1", "libc.so.6"], 0x40_0000));
        assert_eq!(needed(&f).unwrap(), vec!["libfoo.so.1", "libc.so.6"]);
    }

    #[test]
    fn needed_of_this_test_binary_names_libc() {
        let f = File::open("/proc/self/exe").unwrap();
        let libs = needed(&f).unwrap();
        assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{libs:?}");
    }

    #[test]
    fn scripts_and_truncated_or_hostile_files_are_errors_not_panics() {
        assert_eq!(
            needed(&tmp_file(b"#!/bin/sh\necho hi\n")),
            Err(ElfError::NotElf64)
        );
        let good = elf(&["libx.so"], 0x1000);
        for cut in [70, 64 + 56 + 10, good.len() - 3] {
            assert!(needed(&tmp_file(&good[..cut])).is_err(), "cut at {cut}");
        }
        // A string table address no segment maps.
        let mut bad = good.clone();
        let strtab_entry = 64 + 2 * 56 + 16;
        bad[strtab_entry + 8..strtab_entry + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            needed(&tmp_file(&bad)),
            Err(ElfError::Malformed("string table"))
        );
        // Names with a slash are not looked up.
        let f = tmp_file(&elf(&["../../etc/evil.so", "libok.so"], 0));
        assert_eq!(needed(&f).unwrap(), vec!["libok.so"]);
    }

    #[test]
    fn run_follows_a_program_to_its_libraries() {
        let done = run(&["sh".into(), "/nonexistent/program".into()]);
        let names: Vec<String> = done
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("libc.so") || n.starts_with("libc-")),
            "{names:?}"
        );
        assert!(done.len() >= 2, "{done:?}");
    }
}
