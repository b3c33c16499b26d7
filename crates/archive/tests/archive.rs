//! Whole-archive tests: a real Podman 4.3 export, writer → reader round trips, and refusals.

use serde_json::{json, Value};
use stasis_archive::archive::{
    read_archive, read_compressed_archive, write_archive, write_rootfs_diff_tar, ArchiveParts,
    ArchiveWriter, MAX_HEAD_BYTES,
};
use stasis_archive::{names, ArchiveError, ContainerConfig};
use stasis_tar::Compression;
use std::fs;
use std::io::{Cursor, Read};
use std::path::Path;

const PODMAN_EXPORT: &[u8] = include_bytes!("fixtures/podman43-export.tar.zst");

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn config() -> ContainerConfig {
    ContainerConfig::from_json(include_bytes!("fixtures/podman43-config.dump")).unwrap()
}

fn tar_names(plain_tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(plain_tar);
    a.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

#[test]
fn reads_real_podman_export() {
    let staging = tempfile::tempdir().unwrap();
    let mut seen = None;
    let (comp, c) = read_compressed_archive(
        Cursor::new(PODMAN_EXPORT.to_vec()),
        "t1.tar.zst",
        staging.path(),
        |cfg, spec| {
            seen = Some((
                cfg.name.clone(),
                spec["annotations"]["io.container.manager"].clone(),
            ));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(comp, Compression::Zstd);
    assert_eq!(seen, Some(("stasisfx1".to_string(), json!("libpod"))));
    assert_eq!(c.config.id.len(), 64);
    assert!(c.has(names::CHECKPOINT_INVENTORY));
    assert!(c.has("volumes/stasisfx-vol.tar"));
    assert_eq!(c.entries[0], "artifacts");
    let files = listing(staging.path());
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/descriptors.json",
        "rootfs-diff.tar",
        "deleted.files",
        "devshm-checkpoint.tar",
        "network.status",
        "stats-dump",
        "volumes/stasisfx-vol.tar",
        "ctr.log",
    ] {
        assert!(files.contains(&want.to_string()), "{want} not in {files:?}");
    }
    assert_eq!(
        fs::read(staging.path().join("stats-dump")).unwrap(),
        include_bytes!("fixtures/stats-dump")
    );
}

#[test]
fn on_head_refusal_leaves_nothing() {
    let staging = tempfile::tempdir().unwrap();
    let e = read_compressed_archive(
        Cursor::new(PODMAN_EXPORT.to_vec()),
        "t1.tar.zst",
        staging.path(),
        |_, _| Err(stasis_archive::import::ImportError::PodContainerWithoutPod.into()),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "cannot restore pod container without --pod");
    assert!(listing(staging.path()).is_empty());
}

/// A small archive written by our writer from a fake checkpoint directory.
fn our_archive(with_inventory: bool, compression: Compression) -> Vec<u8> {
    let t = tempfile::tempdir().unwrap();
    let ck = t.path().join("ck");
    fs::create_dir(&ck).unwrap();
    if with_inventory {
        fs::write(ck.join("inventory.img"), b"inv").unwrap();
    }
    fs::write(ck.join("pages-1.img"), vec![7u8; 100_000]).unwrap();
    let vol = t.path().join("v.tar");
    fs::write(&vol, b"not really a tar").unwrap();
    let stats = t.path().join("stats-dump");
    fs::write(&stats, include_bytes!("fixtures/stats-dump")).unwrap();
    let status =
        stasis_archive::network::parse(include_bytes!("fixtures/podman43-network.status")).status();
    let cfg = config();
    let spec = json!({"ociVersion": "1.0.2", "annotations": {"io.container.manager": "libpod"}});
    let deleted = vec!["/etc/motd".to_string()];
    let volumes = vec![("data".to_string(), vol)];
    let parts = ArchiveParts {
        config: &cfg,
        spec: &spec,
        network_status: Some(&status),
        stats_dump: Some(&stats),
        checkpoint_dir: &ck,
        rootfs_diff_tar: None,
        deleted_files: &deleted,
        devshm_tar: None,
        volumes: &volumes,
        ctr_log: None,
    };
    write_archive(Vec::new(), "out.tar", compression, None, 0, &parts).unwrap()
}

#[test]
fn writer_puts_head_first_and_reads_back() {
    let bytes = our_archive(true, Compression::None);
    let names = tar_names(&bytes);
    assert_eq!(
        names,
        vec![
            "config.dump",
            "spec.dump",
            "network.status",
            "stats-dump",
            "artifacts/",
            "checkpoint/",
            "checkpoint/inventory.img",
            "checkpoint/pages-1.img",
            "deleted.files",
            "volumes/",
            "volumes/data.tar"
        ]
    );
    let staging = tempfile::tempdir().unwrap();
    let mut entries_at_head = usize::MAX;
    let c = read_archive(Cursor::new(bytes), "out.tar", staging.path(), |cfg, _| {
        entries_at_head = listing(staging.path()).len();
        assert_eq!(cfg.name, "stasisfx1");
        Ok(())
    })
    .unwrap();
    // The head was validated before the checkpoint images were extracted.
    assert!(entries_at_head <= 2, "{entries_at_head}");
    assert_eq!(c.config, config());
    assert_eq!(c.spec["ociVersion"], "1.0.2");
    assert_eq!(
        fs::read(staging.path().join("checkpoint/pages-1.img")).unwrap(),
        vec![7u8; 100_000]
    );
    let deleted = fs::read(staging.path().join("deleted.files")).unwrap();
    assert_eq!(
        stasis_archive::rootfs_diff::parse_deleted_files(&deleted).unwrap(),
        vec!["/etc/motd"]
    );
}

#[test]
fn compressed_round_trip() {
    for comp in [Compression::Zstd, Compression::Gzip] {
        let bytes = our_archive(true, comp);
        let staging = tempfile::tempdir().unwrap();
        let (got, c) =
            read_compressed_archive(Cursor::new(bytes), "x", staging.path(), |_, _| Ok(()))
                .unwrap();
        assert_eq!(got, comp);
        assert!(c.has("checkpoint/pages-1.img"));
    }
}

#[test]
fn missing_inventory_is_incomplete() {
    let staging = tempfile::tempdir().unwrap();
    let e = read_archive(
        Cursor::new(our_archive(false, Compression::None)),
        "/tmp/x.tar",
        staging.path(),
        |_, _| Ok(()),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "archive /tmp/x.tar has no checkpoint/inventory.img: not a complete checkpoint"
    );
    assert!(listing(staging.path()).is_empty());
}

/// A tar with raw entry names (bypassing the tar crate's name checks).
fn raw_tar(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn missing_config_and_bad_head() {
    let staging = tempfile::tempdir().unwrap();
    let t = raw_tar(&[(b"spec.dump", b"{}"), (b"checkpoint/inventory.img", b"x")]);
    let e = read_archive(Cursor::new(t), "a.tar", staging.path(), |_, _| Ok(())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "archive a.tar has no config.dump: not a complete checkpoint"
    );
    let t = raw_tar(&[(b"config.dump", b"{\"id\": 3}"), (b"spec.dump", b"{}")]);
    let e = read_archive(Cursor::new(t), "a.tar", staging.path(), |_, _| Ok(())).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("config.dump: unexpected value at line 1 column 8"),
        "{e}"
    );
    assert!(listing(staging.path()).is_empty());
    let t = raw_tar(&[
        (b"config.dump", b"{\"id\": \"a\"}"),
        (b"./config.dump", b"{\"id\": \"b\"}"),
    ]);
    let e = read_archive(Cursor::new(t), "a.tar", staging.path(), |_, _| Ok(())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "archive a.tar: config.dump appears more than once; the archive is damaged or forged"
    );
}

#[test]
fn traversal_is_refused_and_staging_emptied() {
    let staging = tempfile::tempdir().unwrap();
    let t = raw_tar(&[
        (b"checkpoint/inventory.img", b"x"),
        (b"../evil", b"boom"),
        (b"config.dump", b"{\"id\": \"a\"}"),
        (b"spec.dump", b"{}"),
    ]);
    let e = read_archive(Cursor::new(t), "a.tar", staging.path(), |_, _| Ok(())).unwrap_err();
    assert!(matches!(e, ArchiveError::Archive(_)), "{e:?}");
    assert!(e.to_string().contains("../evil"), "{e}");
    assert!(listing(staging.path()).is_empty());
    assert!(!staging.path().parent().unwrap().join("evil").exists());
}

#[test]
fn huge_head_is_refused_without_reading_it() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("config.dump").unwrap();
    h.set_size(MAX_HEAD_BYTES + 1);
    h.set_mode(0o600);
    h.set_cksum();
    b.append(&h, std::io::repeat(b' ').take(MAX_HEAD_BYTES + 1))
        .unwrap();
    let t = b.into_inner().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let e = read_archive(Cursor::new(t), "big.tar", staging.path(), |_, _| Ok(())).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("archive big.tar: config.dump is {} bytes, more than the {} allowed; the archive is damaged or not a checkpoint", MAX_HEAD_BYTES + 1, MAX_HEAD_BYTES)
    );
}

#[test]
fn truncated_archive() {
    let bytes = our_archive(true, Compression::Zstd);
    let cut = bytes[..bytes.len() / 2].to_vec();
    let staging = tempfile::tempdir().unwrap();
    let e = read_compressed_archive(Cursor::new(cut), "cut.tar.zst", staging.path(), |_, _| {
        Ok(())
    })
    .unwrap_err();
    assert!(e.to_string().starts_with("archive cut.tar.zst: "), "{e}");
    assert!(listing(staging.path()).is_empty());
}

#[test]
fn bad_volume_name() {
    let cfg = config();
    let spec = Value::Object(Default::default());
    let mut w =
        ArchiveWriter::new(Vec::new(), "o", Compression::None, None, 0, &cfg, &spec).unwrap();
    let e = w.volume_tar("../x", Path::new("/dev/null")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("volume name \"../x\" cannot be stored"),
        "{e}"
    );
}

#[test]
fn rootfs_diff_tar_from_upper() {
    let t = tempfile::tempdir().unwrap();
    let up = t.path();
    fs::create_dir_all(up.join("etc")).unwrap();
    fs::write(up.join("etc/motd"), "changed").unwrap();
    std::os::unix::fs::symlink("motd", up.join("etc/link")).unwrap();
    fs::create_dir_all(up.join("var/new")).unwrap();
    let changes = stasis_archive::rootfs_diff::changes(up, &[]).unwrap();
    let bytes = write_rootfs_diff_tar(up, &changes, Vec::new()).unwrap();
    assert_eq!(
        tar_names(&bytes),
        vec!["etc/", "etc/link", "etc/motd", "var/", "var/new/"]
    );
    let mut a = tar::Archive::new(&bytes[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == b"etc/motd" {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            assert_eq!(s, "changed");
        }
    }
}
