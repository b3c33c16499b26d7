//! Integration tests of checkpoint/restore (issue 3): the real `stasis` binary on real runc,
//! conmon and CRIU, each test in a store of its own under /var/tmp. Needs root, runc, conmon,
//! CRIU and the test image (built by scripts/make-test-image.sh when missing).
//!
//! The slowest tests take a few seconds each (a CRIU dump or restore is ~0.3 s; the bad-input
//! tests run ~20 failing restores); the whole file takes well under a minute on 2 cores.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{
    dir_entries, is_full_id, poll, tar_from_records, tar_records, Snapshot, Store, TarRecord, IMAGE,
};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// `s.path()/name` as a string argument.
fn file_in(s: &Store, name: &str) -> String {
    s.path().join(name).to_string_lossy().into_owned()
}

/// The container directory holding the bundle of `id`: root/containers/<id>/userdata.
fn userdata(s: &Store, id: &str) -> PathBuf {
    s.root.join("containers").join(id).join("userdata")
}

/// Starts a counter `name` and waits until it reached 10 (so a restart from 0 is told apart
/// from counting on); returns (ID, the value read last, just before the caller checkpoints).
fn counter_at_ten(s: &Store, name: &str) -> (String, u64) {
    let id = s.run_counter(name);
    let n = s.count_at_least(name, 10);
    (id, n)
}

/// ID and state of every container, for comparing `ps -a` before and after.
fn ps_states(s: &Store) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = s
        .ps_json()
        .into_iter()
        .map(|c| {
            (
                c["Id"].as_str().unwrap_or_default().to_string(),
                c["Names"][0].as_str().unwrap_or_default().to_string(),
                c["State"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn export_then_two_imports_count_on_as_independent_containers() {
    let s = Store::with_image();
    let (id1, before) = counter_at_ten(&s, "c1");
    let archive = file_in(&s, "c1.tar.zst");
    let out = s.ok(&["container", "checkpoint", "--export", &archive, "c1"]);
    assert_eq!(out.trim(), "c1", "checkpoint prints the name it was given");
    let bytes = std::fs::read(&archive).unwrap();
    assert_eq!(bytes[..4], ZSTD_MAGIC, "zstd is the default compression");
    let mode = std::fs::metadata(&archive).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "the archive is private, as Podman's");

    // c1 is exited and marked checkpointed.
    let e = s.ps_entry("c1");
    assert_eq!(e["Id"], id1.as_str(), "{e}");
    assert_eq!(e["State"], "exited", "{e}");
    assert_eq!(e["Exited"], true, "{e}");
    assert_eq!(e["Checkpointed"], true, "{e}");
    assert_eq!(e["Restored"], false, "{e}");
    assert_eq!(e["Pid"], 0, "{e}");
    assert!(
        e["Status"].as_str().unwrap().contains("checkpointed"),
        "{e}"
    );
    assert!(
        !s.ok(&["ps"]).contains(" c1"),
        "a checkpointed container is not listed as running"
    );

    let mut ids = vec![id1.clone()];
    for name in ["c2", "c3"] {
        let out = s.ok(&["container", "restore", "--import", &archive, "--name", name]);
        let id = out.trim().to_string();
        assert!(is_full_id(&id), "restore printed {out:?}");
        assert!(!ids.contains(&id), "{name} got an ID already used: {id}");
        ids.push(id.clone());
        let e = s.ps_entry(name);
        assert_eq!(e["Id"], id.as_str(), "{e}");
        assert_eq!(e["State"], "running", "{e}");
        assert_eq!(e["Restored"], true, "{e}");
        s.assert_counts_on(name, before);
        // Every task is in the new container's cgroups, in every hierarchy (CRIU is told to
        // leave cgroups to runc when the dump's tasks were all in the container's own).
        let cgroups = s.ok(&["exec", name, "cat", "/proc/1/cgroup"]);
        for line in cgroups.lines() {
            assert!(
                line.ends_with(&format!("-{id}")) || line.ends_with(&format!("-{id}.scope")),
                "{name}: {line:?} is not the container's cgroup ({cgroups})"
            );
        }
    }
    // Independent: stopping one leaves the other counting; c1 stays checkpointed.
    s.ok(&["rm", "-f", "c2"]);
    s.assert_container_gone(&ids[1]);
    let n = s.count_at_least("c3", 0);
    s.count_at_least("c3", n + 2);
    assert_eq!(s.ps_entry("c1")["Checkpointed"], true);
    assert_eq!(s.ps_entry("c1")["State"], "exited");
}

#[test]
fn in_place_checkpoint_restore_keep_and_leave_running() {
    let s = Store::with_image();
    let (id, before) = counter_at_ten(&s, "c1");
    let ud = userdata(&s, &id);

    // In place, with --keep: the CRIU images and dump.log stay in the bundle.
    s.ok(&["checkpoint", "--keep", "c1"]);
    assert!(
        ud.join("checkpoint/inventory.img").is_file(),
        "--keep: no CRIU images in {}: {:?}",
        ud.display(),
        dir_entries(&ud)
    );
    assert!(ud.join("dump.log").is_file(), "--keep: no dump.log");
    assert_eq!(s.ps_entry("c1")["Checkpointed"], true);
    let out = s.ok(&["restore", "c1"]);
    assert_eq!(out.trim(), id, "an in-place restore keeps the ID");
    let after = s.assert_counts_on("c1", before);
    assert!(
        !ud.join("checkpoint").exists(),
        "without --keep the restore removes the checkpoint directory"
    );
    assert!(!ud.join("dump.log").exists());
    let e = s.ps_entry("c1");
    assert_eq!(
        (e["State"].as_str(), e["Restored"].as_bool()),
        (Some("running"), Some(true))
    );

    // Nothing to restore: running, then exited without a checkpoint.
    let err = s.fail_with(125, &["restore", "c1"]);
    assert!(err.contains("c1") && err.contains("running"), "{err}");
    s.ok(&["checkpoint", "c1"]);
    assert!(ud.join("checkpoint/inventory.img").is_file());
    assert!(
        !ud.join("dump.log").exists(),
        "dump.log kept without --keep"
    );
    s.ok(&["restore", "c1"]);
    s.assert_counts_on("c1", after);
    s.ok(&["kill", "c1"]);
    poll("c1 to exit", Duration::from_secs(10), || {
        (s.ps_entry("c1")["State"] == "exited").then_some(())
    });
    let err = s.fail_with(125, &["restore", "c1"]);
    assert!(err.contains("checkpoint") && err.contains("c1"), "{err}");

    // --leave-running: the original keeps counting, its export restores as another one.
    let (_, before) = counter_at_ten(&s, "r1");
    let archive = file_in(&s, "r1.tar");
    s.ok(&["checkpoint", "-R", "-e", &archive, "r1"]);
    let e = s.ps_entry("r1");
    assert_eq!(e["State"], "running", "--leave-running: {e}");
    s.count_at_least("r1", before + 3);
    s.ok(&["restore", "-i", &archive, "-n", "r2"]);
    s.assert_counts_on("r2", before);
    s.count_at_least("r1", before + 5);
}

#[test]
fn every_compression_round_trips_and_is_detected_by_magic_bytes() {
    let s = Store::with_image();
    let (_, before) = counter_at_ten(&s, "c1");
    let cases: [(&str, &str, &[u8]); 4] = [
        ("none", "n.tar", b"config.dump"),
        ("gzip", "g.tar.gz", &GZIP_MAGIC),
        ("zstd", "z.tar.zst", &ZSTD_MAGIC),
        // The name lies: the content decides.
        ("gzip", "x.tar.zst", &GZIP_MAGIC),
    ];
    for (i, (compression, file, magic)) in cases.iter().enumerate() {
        let archive = file_in(&s, file);
        s.ok(&["checkpoint", "-R", "-c", compression, "-e", &archive, "c1"]);
        let bytes = std::fs::read(&archive).unwrap();
        assert!(
            bytes.starts_with(magic),
            "-c {compression}: {:?}",
            &bytes[..16]
        );
        let name = format!("r{i}");
        s.ok(&["restore", "-i", &archive, "--name", &name]);
        s.assert_counts_on(&name, before);
        s.ok(&["rm", "-f", &name]);
    }
    let err = s.fail_with(
        125,
        &["checkpoint", "-c", "lzma", "-e", &file_in(&s, "l"), "c1"],
    );
    assert!(err.contains("lzma"), "{err}");
}

#[test]
fn export_to_stdout_piped_into_import_from_stdin() {
    let s = Store::with_image();
    let (_, before) = counter_at_ten(&s, "c1");
    let mut exporter = s
        .command(&["checkpoint", "-e", "-", "c1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = exporter.stdout.take().unwrap();
    let importer = s
        .command(&["restore", "-i", "-", "--name", "c2"])
        .stdin(Stdio::from(pipe))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let imported = importer.wait_with_output().unwrap();
    let exported = exporter.wait_with_output().unwrap();
    assert!(
        exported.status.success(),
        "checkpoint -e -: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(
        imported.status.success(),
        "restore -i -: {}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(
        exported.stdout.is_empty(),
        "-e -: the archive went through the pipe, nothing else on stdout"
    );
    let id = String::from_utf8_lossy(&imported.stdout).trim().to_string();
    assert!(is_full_id(&id), "restore -i - printed {id:?}");
    s.assert_counts_on("c2", before);
}

/// Changes the rootfs of `name` (as in tests/interop.rs): adds /added and /newdir/inner,
/// modifies /var/www/index.html, deletes /etc/motd. The modified file is rewritten (a new file
/// renamed over it), not appended to in place: a copied-up file carries overlayfs's private
/// `trusted.overlay.origin` xattr, which the export wrongly includes and which breaks the
/// restore when its bytes hold a newline (see the ignored test below).
fn change_rootfs(s: &Store, name: &str) {
    s.ok(&[
        "exec",
        name,
        "sh",
        "-c",
        "echo added > /added; mkdir -p /newdir/sub; echo inner > /newdir/sub/inner; \
         { cat /var/www/index.html; echo appended; } > /var/www/new && mv /var/www/new /var/www/index.html; rm /etc/motd",
    ]);
}

/// What `change_rootfs` changed, as seen inside `name`.
fn rootfs_view(s: &Store, name: &str) -> String {
    s.ok(&[
        "exec",
        name,
        "sh",
        "-c",
        "cat /added /newdir/sub/inner /var/www/index.html 2>&1; ls /etc/motd 2>&1; true",
    ])
}

#[test]
fn rootfs_changes_survive_export_and_ignore_rootfs_drops_them() {
    let s = Store::with_image();
    // A process that keeps no file of the container's rootfs open: the counter writes
    // /tmp/count (an added file), and a dump taken while that file is open cannot be restored
    // without the rootfs changes (CRIU: "Can't open file tmp/count on restore"), in Podman too.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        IMAGE,
        "sh",
        "-c",
        "while true; do sleep 0.1; done",
    ]);
    change_rootfs(&s, "c1");
    let changed = rootfs_view(&s, "c1");
    assert_eq!(
        changed,
        "added\ninner\n<h1>stasis</h1>\nappended\nls: /etc/motd: No such file or directory\n"
    );
    let with = file_in(&s, "with.tar.zst");
    let without = file_in(&s, "without.tar.zst");
    s.ok(&["checkpoint", "-R", "-e", &with, "c1"]);
    s.ok(&["checkpoint", "-R", "--ignore-rootfs", "-e", &without, "c1"]);

    s.ok(&["restore", "-i", &with, "--name", "c2"]);
    assert_eq!(
        rootfs_view(&s, "c2"),
        changed,
        "rootfs changes lost in the export"
    );

    // --ignore-rootfs on the checkpoint side: the archive has no changes at all.
    s.ok(&["restore", "-i", &without, "--name", "c3"]);
    let pristine = rootfs_view(&s, "c3");
    assert_eq!(
        pristine,
        "cat: can't open '/added': No such file or directory\n\
         cat: can't open '/newdir/sub/inner': No such file or directory\n\
         <h1>stasis</h1>\n/etc/motd\n",
        "--ignore-rootfs on checkpoint kept changes"
    );
    // --ignore-rootfs on the restore side: the changes in the archive are not applied.
    s.ok(&["restore", "-i", &with, "--ignore-rootfs", "--name", "c4"]);
    assert_eq!(rootfs_view(&s, "c4"), pristine);
    let err = s.fail_with(125, &["checkpoint", "--ignore-rootfs", "c1"]);
    assert!(err.contains("--export"), "{err}");
}

fn json_u64(v: &serde_json::Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is {v}, not a number"))
}

#[test]
fn print_stats_prints_podmans_json() {
    let s = Store::with_image();
    let (id, _) = counter_at_ten(&s, "c1");
    let archive = file_in(&s, "c1.tar");
    let out = s.ok(&["checkpoint", "--print-stats", "-e", &archive, "c1"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?} is not JSON: {e}"));
    let total = json_u64(
        &v["podman_checkpoint_duration"],
        "podman_checkpoint_duration",
    );
    let c = &v["container_statistics"][0];
    assert_eq!(c["Id"], id.as_str(), "{v}");
    let runtime = json_u64(
        &c["runtime_checkpoint_duration"],
        "runtime_checkpoint_duration",
    );
    let criu = &c["criu_statistics"];
    let get = |k: &str| json_u64(&criu[k], k);
    // Microseconds, as Podman: a dump takes more than 1 ms and less than 2 minutes.
    assert!((1_000..120_000_000).contains(&total), "{v}");
    assert!(runtime > 0 && runtime <= total, "{v}");
    assert!(
        get("frozen_time") > 0 && get("frozen_time") <= runtime,
        "{v}"
    );
    let _ = (
        get("freezing_time"),
        get("memdump_time"),
        get("memwrite_time"),
    );
    assert!(get("pages_written") > 0, "{v}");
    assert!(get("pages_scanned") >= get("pages_written"), "{v}");

    let out = s.ok(&["restore", "--print-stats", "-i", &archive, "--name", "c2"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?} is not JSON: {e}"));
    let total = json_u64(&v["podman_restore_duration"], "podman_restore_duration");
    let c = &v["container_statistics"][0];
    assert_eq!(c["Id"], s.ps_entry("c2")["Id"], "{v}");
    let runtime = json_u64(&c["runtime_restore_duration"], "runtime_restore_duration");
    let criu = &c["criu_statistics"];
    let get = |k: &str| json_u64(&criu[k], k);
    assert!((1_000..120_000_000).contains(&total), "{v}");
    assert!(runtime > 0 && runtime <= total, "{v}");
    assert!(
        get("restore_time") > 0 && get("restore_time") <= runtime,
        "{v}"
    );
    assert!(get("pages_restored") > 0, "{v}");
    let _ = (
        get("pages_compared"),
        get("pages_skipped_cow"),
        get("forking_time"),
    );
}

/// A server and a client in one container, with an established connection over loopback: the
/// client sends a line every 200 ms, the server appends what it gets to /tmp/got. (busybox nc
/// has no -k; its stdin is kept open by `sleep`, else it would shut the connection down.)
const TCP_PAIR: &str = "sleep 100000 | nc -l -p 9999 > /tmp/got & sleep 0.3; \
     i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done | nc 127.0.0.1 9999";

fn lines_got(s: &Store, name: &str) -> Option<usize> {
    let out = s.stasis(&["exec", name, "cat", "/tmp/got"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).lines().count())
}

#[test]
fn established_tcp_connection_survives_with_tcp_established_only() {
    let s = Store::with_image();
    s.ok(&["run", "-d", "--name", "t1", IMAGE, "sh", "-c", TCP_PAIR]);
    let before = poll("lines over the connection", Duration::from_secs(15), || {
        lines_got(&s, "t1").filter(|&n| n >= 3)
    });

    let snap = s.snapshot();
    let archive = file_in(&s, "t1.tar.zst");
    let (code, err) = s.fail_output(&["checkpoint", "-e", &archive, "t1"]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.starts_with("Error: ") && err.contains("--tcp-established"),
        "the error must name the established connection and the flag: {err}"
    );
    assert!(
        !Path::new(&archive).exists(),
        "a failed export left {archive}"
    );
    snap.assert_same(&s.snapshot(), "a refused checkpoint");
    let n = lines_got(&s, "t1").unwrap();
    poll(
        "t1 to go on after the failed dump",
        Duration::from_secs(10),
        || (lines_got(&s, "t1")? > n).then_some(()),
    );

    s.ok(&["checkpoint", "--tcp-established", "-e", &archive, "t1"]);
    s.ok(&[
        "restore",
        "--tcp-established",
        "-i",
        &archive,
        "--name",
        "t2",
    ]);
    let first = poll("/tmp/got of t2", Duration::from_secs(10), || {
        lines_got(&s, "t2")
    });
    assert!(first >= before, "t2 has {first} lines, t1 had {before}");
    poll(
        "lines to keep coming over the restored connection",
        Duration::from_secs(10),
        || (lines_got(&s, "t2")? >= first + 3).then_some(()),
    );
    let got = s.ok(&["exec", "t2", "cat", "/tmp/got"]);
    let nums: Vec<u64> = got.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "the stream has a gap or restarted: {nums:?}"
    );
}

#[test]
fn pre_checkpoint_is_refused_in_one_line_and_changes_nothing() {
    let s = Store::with_image();
    let (_, before) = counter_at_ten(&s, "c1");
    let snap = s.snapshot();
    for flag in ["-P", "--pre-checkpoint", "--with-previous"] {
        let err = s.fail_with(125, &["checkpoint", flag, "c1"]);
        assert!(
            err.contains("memory tracking") || err.contains("not implemented"),
            "{flag}: {err}"
        );
        snap.assert_same(&s.snapshot(), flag);
    }
    assert_eq!(s.ps_entry("c1")["State"], "running");
    s.count_at_least("c1", before + 2);
}

// ---------------------------------------------------------------------------------------------
// Bad input.

/// A store with `c1` counting (left running) and its uncompressed export.
fn store_with_export() -> (Store, String, Vec<u8>) {
    let s = Store::with_image();
    let (id, _) = counter_at_ten(&s, "c1");
    let archive = file_in(&s, "good.tar");
    s.ok(&["checkpoint", "-R", "-c", "none", "-e", &archive, "c1"]);
    let bytes = std::fs::read(&archive).unwrap();
    (s, id, bytes)
}

/// Restores `archive` (written to a file) with `extra` flags, asserts it fails with one
/// `Error:` line holding every keyword, and that nothing changed. Returns the error line.
fn refused(s: &Store, what: &str, archive: &[u8], extra: &[&str], keywords: &[&str]) -> String {
    let before = s.snapshot();
    let ps = ps_states(s);
    let path = s
        .path()
        .join(format!("bad-{}.tar", what.replace([' ', '/'], "_")));
    std::fs::write(&path, archive).unwrap();
    let mut args = vec!["restore", "--import", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let err = s.fail_with(125, &args);
    eprintln!("{what}: {err}");
    for k in keywords {
        assert!(err.contains(k), "{what}: {k:?} not in {err:?}");
    }
    assert_unchanged(s, &before, &ps, what);
    err
}

fn assert_unchanged(s: &Store, before: &Snapshot, ps: &[(String, String, String)], what: &str) {
    before.assert_same(&s.snapshot(), what);
    assert_eq!(ps_states(s), ps, "after {what}: ps -a changed");
    assert_eq!(
        dir_entries(&s.root.join("tmp")),
        Vec::<String>::new(),
        "after {what}: scratch left in root/tmp"
    );
}

/// The records of `good` with `f` applied to config.dump's JSON.
fn with_config(good: &[u8], f: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let mut recs = tar_records(good);
    let r = recs.iter_mut().find(|r| r.name() == "config.dump").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
    f(&mut v);
    r.set_data(&serde_json::to_vec_pretty(&v).unwrap());
    tar_from_records(&recs)
}

fn without(good: &[u8], name: &str) -> Vec<u8> {
    let recs: Vec<TarRecord> = tar_records(good)
        .into_iter()
        .filter(|r| r.name() != name)
        .collect();
    tar_from_records(&recs)
}

fn with_extra(good: &[u8], extra: Vec<TarRecord>) -> Vec<u8> {
    let mut recs = tar_records(good);
    recs.extend(extra);
    tar_from_records(&recs)
}

#[test]
fn damaged_archives_fail_in_one_line_and_change_nothing() {
    let (s, _, good) = store_with_export();
    let names: Vec<String> = tar_records(&good).iter().map(|r| r.name()).collect();
    assert!(names.contains(&"config.dump".to_string()), "{names:?}");

    refused(&s, "empty", b"", &["-n", "x"], &["archive"]);
    refused(
        &s,
        "plain half",
        &good[..good.len() / 2],
        &["-n", "x"],
        &["truncated"],
    );
    let zst = file_in(&s, "good.tar.zst");
    s.ok(&["checkpoint", "-R", "-e", &zst, "c1"]);
    let z = std::fs::read(&zst).unwrap();
    refused(
        &s,
        "zstd half",
        &z[..z.len() / 2],
        &["-n", "x"],
        &["truncated"],
    );
    let mut x: u32 = 12345;
    let garbage: Vec<u8> = (0..65536)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    refused(&s, "garbage", &garbage, &["-n", "x"], &["archive"]);
    refused(
        &s,
        "no config.dump",
        &without(&good, "config.dump"),
        &["-n", "x"],
        &["config.dump"],
    );
    refused(
        &s,
        "no inventory",
        &without(&good, "checkpoint/inventory.img"),
        &["-n", "x"],
        &["inventory.img"],
    );
    let mut recs = tar_records(&good);
    recs.iter_mut()
        .find(|r| r.name() == "config.dump")
        .unwrap()
        .set_data(b"{ this is not JSON");
    refused(
        &s,
        "config not json",
        &tar_from_records(&recs),
        &["-n", "x"],
        &["config.dump"],
    );
    let no_id = with_config(&good, |v| {
        v.as_object_mut().unwrap().remove("id");
    });
    refused(
        &s,
        "config without id",
        &no_id,
        &["-n", "x"],
        &["config.dump", "id"],
    );
    refused(
        &s,
        "config without id, no --name",
        &no_id,
        &[],
        &["config.dump", "id"],
    );
    let empty_id = with_config(&good, |v| v["id"] = "".into());
    refused(
        &s,
        "config with empty id",
        &empty_id,
        &[],
        &["config.dump", "id"],
    );

    // The good archive still restores: the refusals above did not spoil the store.
    s.ok(&["restore", "-i", &file_in(&s, "good.tar"), "-n", "ok"]);
    s.count_at_least("ok", 1);
}

#[test]
fn hostile_archive_entries_write_nothing_outside() {
    let (s, _, good) = store_with_export();
    let tag = format!("stasis-ctest-{}", std::process::id());
    let outside = |p: &str| PathBuf::from(p.replace("NAME", &tag));
    let watched = [
        outside("/var/tmp/NAME"),
        outside("/etc/NAME"),
        s.root.join(&tag),
        s.root.join("tmp").join(&tag),
        s.path().join(&tag),
    ];
    let check_outside = |what: &str| {
        for p in &watched {
            assert!(!p.exists(), "{what}: {} was written", p.display());
        }
    };
    let f = |name: &str| TarRecord::new(&name.replace("NAME", &tag), b'0', "", b"pwned\n");

    for (what, entries, keywords) in [
        ("dotdot", vec![f("../NAME")], &["escapes"][..]),
        (
            "deep dotdot",
            vec![f("../../../../../../../../../../var/tmp/NAME")],
            &["escapes"],
        ),
        (
            "nested dotdot",
            vec![f("checkpoint/../../NAME")],
            &["escapes"],
        ),
        ("absolute", vec![f("/etc/NAME")], &["absolute"]),
        (
            "through symlink",
            vec![
                TarRecord::new("evil-link", b'2', "/var/tmp", b""),
                f("evil-link/NAME"),
            ],
            &["symlink"],
        ),
        (
            "through relative symlink",
            vec![
                TarRecord::new("checkpoint/up", b'2', "../../../../../../var/tmp", b""),
                f("checkpoint/up/NAME"),
            ],
            &["symlink"],
        ),
    ] {
        refused(
            &s,
            what,
            &with_extra(&good, entries),
            &["-n", "x"],
            keywords,
        );
        check_outside(what);
    }

    // A hard link to /etc/shadow: refused, /etc/shadow untouched.
    let shadow = std::fs::metadata("/etc/shadow").unwrap();
    refused(
        &s,
        "hard link to /etc/shadow",
        &with_extra(
            &good,
            vec![TarRecord::new("shadow", b'1', "/etc/shadow", b"")],
        ),
        &["-n", "x"],
        &["hard link", "/etc/shadow"],
    );
    // A hard link to a file outside, then a file written through it: the decoy is untouched.
    let decoy = PathBuf::from(format!("/var/tmp/{tag}-decoy"));
    std::fs::write(&decoy, "original\n").unwrap();
    let link_then_write = with_extra(
        &good,
        vec![
            TarRecord::new("hl", b'1', decoy.to_str().unwrap(), b""),
            TarRecord::new("hl", b'0', "", b"pwned\n"),
        ],
    );
    let res = std::panic::catch_unwind(|| {
        refused(
            &s,
            "hard link then write",
            &link_then_write,
            &["-n", "x"],
            &["hard link"],
        );
    });
    let decoy_content = std::fs::read_to_string(&decoy).unwrap();
    let decoy_links = std::fs::metadata(&decoy).unwrap().nlink();
    std::fs::remove_file(&decoy).unwrap();
    assert_eq!(decoy_content, "original\n", "written through a hard link");
    assert_eq!(decoy_links, 1);
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
    let now = std::fs::metadata("/etc/shadow").unwrap();
    assert_eq!(
        (now.nlink(), now.len(), now.mtime(), now.ino()),
        (shadow.nlink(), shadow.len(), shadow.mtime(), shadow.ino()),
        "/etc/shadow changed"
    );

    // A device node (char 1,3 = /dev/null).
    refused(
        &s,
        "device node",
        &with_extra(
            &good,
            vec![TarRecord::new("checkpoint/null", b'3', "", b"")],
        ),
        &["-n", "x"],
        &["device"],
    );
    check_outside("all");
}

#[test]
fn name_id_and_image_conflicts_are_refused_before_anything_is_created() {
    let (s, id, good) = store_with_export();
    // c1 still exists (left running): its name is taken.
    let err = refused(&s, "name in use", &good, &[], &["\"c1\"", "in use"]);
    assert!(err.contains("--name"), "{err}");
    // Another name, the same ID: the ID is taken by c1.
    let renamed = with_config(&good, |v| v["name"] = "c1-copy".into());
    let err = refused(&s, "ID in use", &renamed, &[], &["in use"]);
    assert!(err.contains(&id) || err.contains(&id[..12]), "{err}");

    // An image that is neither here nor pullable.
    let missing = with_config(&good, |v| {
        v["rootfsImageID"] = "ab".repeat(32).into();
        v["rootfsImageName"] = "127.0.0.1:9/stasis-missing/busybox:latest".into();
    });
    let before = s.snapshot();
    let ps = ps_states(&s);
    let path = file_in(&s, "missing-image.tar");
    std::fs::write(&path, &missing).unwrap();
    let (code, err) = s.fail_output(&["restore", "-i", &path, "-n", "x"]);
    assert_eq!(code, 125, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("Error: ")
            && last.contains("stasis-missing/busybox")
            && last.contains("pulled"),
        "{err}"
    );
    assert!(err.lines().count() <= 2, "{err}");
    assert_unchanged(&s, &before, &ps, "missing image");

    // After c1 is gone, the archive restores under its old name and ID.
    s.ok(&["rm", "-f", "c1"]);
    let out = s.ok(&["restore", "-i", &file_in(&s, "good.tar")]);
    assert_eq!(out.trim(), id);
    assert_eq!(s.ps_entry("c1")["Id"], id.as_str());
    // ... and a second time both clash again.
    refused(&s, "name in use again", &good, &[], &["\"c1\"", "in use"]);
}

#[test]
fn criu_failure_shows_criu_errors_and_a_log_that_exists() {
    let (s, _, good) = store_with_export();
    for img in ["checkpoint/inventory.img", "checkpoint/pstree.img"] {
        let mut recs = tar_records(&good);
        let r = recs.iter_mut().find(|r| r.name() == img).unwrap();
        let junk = vec![0x5au8; r.data.len()];
        r.set_data(&junk);
        let before = s.snapshot();
        let ps = ps_states(&s);
        let path = file_in(&s, "corrupt.tar");
        std::fs::write(&path, tar_from_records(&recs)).unwrap();
        let (code, err) = s.fail_output(&["restore", "-i", &path, "-n", "x"]);
        assert_eq!(code, 125, "{img}: {err}");
        assert!(err.starts_with("Error: "), "{img}: {err}");
        assert!(
            err.contains("Error ("),
            "{img}: no CRIU error line in {err}"
        );
        let log = err
            .split("CRIU log: ")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .unwrap_or_else(|| panic!("{img}: no log path in {err}"));
        let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{img}: {log}: {e}"));
        assert!(text.contains("Error"), "{img}: {log} has no error");
        // The kept log (root/logs) is the one thing a failed restore leaves: outside the snapshot.
        assert_unchanged(&s, &before, &ps, img);
    }
}

#[test]
fn truncated_archive_message_says_where_it_ends() {
    let (s, _, good) = store_with_export();
    let err = refused(
        &s,
        "plain half",
        &good[..good.len() / 2],
        &["-n", "x"],
        &["truncated"],
    );
    assert!(
        !err.contains("before the first entry")
            && (err.contains("after entry") || err.contains("in entry")),
        "the archive was cut after several complete entries: {err}"
    );
}

#[test]
fn rootfs_diff_carries_no_overlayfs_private_xattrs() {
    let s = Store::with_image();
    s.run_counter("c1");
    s.ok(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "echo appended >> /var/www/index.html",
    ]);
    let archive = file_in(&s, "c1.tar");
    s.ok(&["checkpoint", "-R", "-c", "none", "-e", &archive, "c1"]);
    let recs = tar_records(&std::fs::read(&archive).unwrap());
    let diff = recs
        .iter()
        .find(|r| r.name() == "rootfs-diff.tar")
        .expect("no rootfs-diff.tar in the export");
    let inner = tar_records(&diff.data);
    let names: Vec<String> = inner.iter().map(|r| r.name()).collect();
    assert!(names.iter().any(|n| n == "var/www/index.html"), "{names:?}");
    let leaked = diff.data.windows(15).any(|w| w == b"trusted.overlay");
    assert!(
        !leaked,
        "rootfs-diff.tar holds a trusted.overlay.* xattr (overlayfs-internal; Podman's diff has none)"
    );
}

/// A shell holding 40 MB of random text in a variable (its memory), answering checksum
/// requests: /tmp/req appearing makes it write the md5 of the text to /tmp/sum.
const MEMORY_WORKLOAD: &str = "v=$(head -c 30000000 /dev/urandom | base64 -w0); touch /tmp/ready; \
     while :; do if [ -e /tmp/req ]; then rm /tmp/req; echo -n \"$v\" | md5sum > /tmp/sum.tmp; \
     mv /tmp/sum.tmp /tmp/sum; fi; sleep 0.1; done";

/// The checksum of the memory workload's text, computed by the process from its memory.
fn memory_sum(s: &Store, name: &str) -> String {
    let out = s.ok(&[
        "exec",
        name,
        "sh",
        "-c",
        "rm -f /tmp/sum; touch /tmp/req; i=0; while [ ! -e /tmp/sum ]; do sleep 0.05; \
         i=$((i+1)); [ $i -gt 600 ] && exit 1; done; cat /tmp/sum",
    ]);
    let sum = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sum.len(), 32, "md5 of the workload's memory: {out:?}");
    sum
}

/// Size of `entry` in a zstd-compressed tar.
fn entry_sizes(archive: &Path) -> Vec<(String, u64)> {
    let f = std::fs::File::open(archive).unwrap();
    let dec = zstd::stream::read::Decoder::new(f).unwrap();
    let mut t = tar::Archive::new(dec);
    t.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().size().unwrap(),
            )
        })
        .collect()
}

#[test]
fn streamed_export_is_a_seekable_tar_zst_and_restores_eagerly_and_lazily_from_it() {
    let s = Store::with_image();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "m1",
        IMAGE,
        "sh",
        "-c",
        MEMORY_WORKLOAD,
    ]);
    poll(
        "the workload to fill its memory",
        Duration::from_secs(30),
        || {
            s.stasis(&["exec", "m1", "test", "-e", "/tmp/ready"])
                .status
                .success()
                .then_some(())
        },
    );
    let sum = memory_sum(&s, "m1");
    // The loopback TCP page server (containers whose spec names no CRIU configuration file),
    // leaving m1 running.
    let tcp = s.path().join("tcp.tar.zst");
    let tcp = tcp.to_string_lossy().into_owned();
    s.set_env("STASIS_PAGE_SERVER", Some("tcp"));
    s.ok(&["container", "checkpoint", "-R", "--export", &tcp, "m1"]);
    s.set_env("STASIS_PAGE_SERVER", None);
    s.set_env("STASIS_LAZY_MIN_PAGES", Some("1"));
    s.ok(&[
        "container",
        "restore",
        "--import",
        &tcp,
        "--name",
        "via-tcp",
    ]);
    assert_eq!(memory_sum(&s, "via-tcp"), sum, "memory sent over TCP");
    s.ok(&["rm", "-f", "via-tcp"]);
    s.set_env("STASIS_LAZY_MIN_PAGES", None);

    let archive = s.path().join("m1.tar.zst");
    let a = archive.to_string_lossy().into_owned();
    s.ok(&["container", "checkpoint", "--export", &a, "m1"]);

    // An ordinary tar.zst (what Podman and zstd read) ending in a zstd seek table, with the
    // pages image's header patched to its real size.
    let bytes = std::fs::read(&archive).unwrap();
    assert_eq!(bytes[..4], ZSTD_MAGIC);
    assert_eq!(
        bytes[bytes.len() - 4..],
        [0xB1, 0xEA, 0x92, 0x8F],
        "seekable format footer"
    );
    if let Ok(st) = std::process::Command::new("zstd")
        .args(["-q", "-t"])
        .arg(&archive)
        .status()
    {
        assert!(st.success(), "zstd -t {a}");
    }
    let sizes = entry_sizes(&archive);
    let pages: u64 = sizes
        .iter()
        .filter(|(n, _)| n.starts_with("checkpoint/pages-"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        pages >= 40_000_000,
        "pages images hold the memory: {sizes:?}"
    );
    for (name, _) in &sizes {
        assert!(
            !name.starts_with("checkpoint/pages-") || name.ends_with(".img"),
            "{name}"
        );
    }
    assert!(
        sizes
            .iter()
            .any(|(n, _)| n.starts_with("checkpoint/pagemap-")),
        "{sizes:?}"
    );

    // Lazily: the pages are served from the archive by the feeder.
    s.set_env("STASIS_LAZY_MIN_PAGES", Some("1"));
    let id = s.ok(&["container", "restore", "--import", &a, "--name", "lazy"]);
    assert!(
        userdata(&s, id.trim()).join("serve-pages.log").exists(),
        "the lazy restore went through the page feeder"
    );
    assert_eq!(memory_sum(&s, "lazy"), sum, "memory after a lazy restore");
    // A lazily restored container checkpoints again (once its memory is all there).
    let again = s.path().join("again.tar.zst");
    let again = again.to_string_lossy().into_owned();
    s.ok(&["container", "checkpoint", "--export", &again, "lazy"]);
    s.ok(&[
        "container",
        "restore",
        "--import",
        &again,
        "--name",
        "again",
    ]);
    assert_eq!(memory_sum(&s, "again"), sum, "memory after a second round");

    // Eagerly: the pages are copied out of the archive first.
    s.set_env("STASIS_LAZY_MIN_PAGES", Some("1000000000000"));
    let id = s.ok(&["container", "restore", "--import", &a, "--name", "eager"]);
    assert!(!userdata(&s, id.trim()).join("serve-pages.log").exists());
    assert_eq!(
        memory_sum(&s, "eager"),
        sum,
        "memory after an eager restore"
    );

    // Damage in the middle of the memory (lazy pages only, there): the restore returns, then
    // the feeder meets the damage and kills the container rather than let it run with pages
    // it never got.
    s.set_env("STASIS_LAZY_MIN_PAGES", Some("1"));
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x5a;
    let d = s.path().join("damaged.tar.zst");
    std::fs::write(&d, &damaged).unwrap();
    let id = s.ok(&[
        "restore",
        "--import",
        d.to_str().unwrap(),
        "--name",
        "damaged",
    ]);
    let _ = s.stasis(&["exec", "damaged", "sh", "-c", "touch /tmp/req"]);
    poll(
        "the damaged container to be stopped",
        Duration::from_secs(30),
        || (s.ps_entry("damaged")["State"] != "running").then_some(()),
    );
    let log = std::fs::read_to_string(userdata(&s, id.trim()).join("serve-pages.log")).unwrap();
    assert!(
        log.contains("corrupt zstd frame"),
        "the feeder says what failed: {log:?}"
    );
}

/// Offset, in a streamed archive, of the first byte after the stored frame holding the tar
/// header of the pages image: the start of the frames of its data.
fn pages_data_frames(archive: &[u8]) -> usize {
    let needle = b"checkpoint/pages-";
    let at = archive
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("a streamed archive stores the pages image's tar header uncompressed");
    at + 512
}

#[test]
fn damaged_pages_in_a_streamed_archive_never_run_with_wrong_memory() {
    let s = Store::with_image();
    counter_at_ten(&s, "c1");
    let good = file_in(&s, "good.tar.zst");
    s.ok(&["checkpoint", "-R", "-e", &good, "c1"]);
    let mut bytes = std::fs::read(&good).unwrap();
    // A byte in the middle of the first compressed frame of the memory pages.
    let at = pages_data_frames(&bytes) + 200;
    bytes[at] ^= 0x5a;

    // Pages copied out of the archive: the restore fails as a whole and leaves nothing.
    s.set_env("STASIS_LAZY_MIN_PAGES", Some("1000000000000"));
    refused(&s, "damaged pages", &bytes, &["-n", "x"], &["archive"]);

    // Pages served lazily: either the restore fails up front (the damage is in the pages CRIU
    // restores first) or the feeder finds it and the container's processes are killed; never
    // a container running on with memory it did not have.
    s.set_env("STASIS_LAZY_MIN_PAGES", Some("1"));
    let path = s.path().join("damaged-lazy.tar.zst");
    std::fs::write(&path, &bytes).unwrap();
    let out = s.stasis(&["restore", "--import", path.to_str().unwrap(), "-n", "y"]);
    if out.status.success() {
        poll(
            "the damaged container to be stopped",
            Duration::from_secs(20),
            || (s.ps_entry("y")["State"] != "running").then_some(()),
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let log = std::fs::read_to_string(userdata(&s, &id).join("serve-pages.log")).unwrap();
        assert!(
            log.contains("frame"),
            "the feeder says what failed: {log:?}"
        );
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("archive"), "{err}");
        assert!(s.ps_json().iter().all(|c| c["Names"][0] != "y"));
    }
}
