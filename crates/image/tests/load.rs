//! Loading docker-/oci-archives and importing root filesystems into a real store.

mod common;

use std::process::Command;

use common::*;
use stasis_image::{ImageError, ImportConfig};

const NAME: &str = "localhost/stasis-test/busybox:latest";

#[test]
fn docker_archive_gets_podmans_id_and_resolves() {
    let images = test_images();
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let loaded = s.load(&images.join("busybox-docker.tar")).unwrap();
    assert_eq!(loaded.len(), 1);
    let img = &loaded[0];
    assert_eq!(img.id, podman_id());
    assert_eq!(img.names, vec![NAME.to_string()]);
    assert_eq!(img.layers.len(), 1);
    assert!(img.size > 1_000_000, "size {}", img.size);
    let dirs = s.layer_dirs(img).unwrap();
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("etc/motd")).unwrap(),
        "hello from the image\n"
    );
    assert!(dirs[0].join("bin/sh").is_symlink());
    let id = &img.id;
    for reference in [
        NAME,
        "localhost/stasis-test/busybox",
        "stasis-test/busybox",
        "busybox",
        "busybox:latest",
        id.as_str(),
        &id[..3],
        &id[..12],
        &format!("sha256:{id}"),
        &format!("sha256:{}", &id[..8]),
    ] {
        assert_eq!(
            &s.resolve(reference).unwrap().id,
            id,
            "resolving {reference}"
        );
    }
    assert_eq!(s.get(id).unwrap().unwrap().id, *id);
    assert!(s.get(&"0".repeat(64)).unwrap().is_none());
    let err = s.resolve("nosuch").unwrap_err().to_string();
    assert_eq!(
        err,
        "image \"nosuch\" not found locally: load it with \"stasis image load -i FILE\" or pull it"
    );
    assert!(matches!(
        s.resolve("busybox:1.0"),
        Err(ImageError::NotFound(_))
    ));
    assert!(matches!(s.resolve(&id[..2]), Err(ImageError::NotFound(_))));
    // Config is the one Podman wrote.
    let cfg = img.config.config().as_ref().unwrap();
    assert_eq!(cfg.cmd().as_ref().unwrap(), &vec!["/bin/sh".to_string()]);
    assert!(img.digest.is_none());
}

#[test]
fn oci_archive_gets_the_same_id_and_shares_the_layer() {
    let images = test_images();
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let oci = s.load(&images.join("busybox-oci.tar")).unwrap();
    assert_eq!(oci.len(), 1);
    assert_eq!(oci[0].id, podman_id());
    assert_eq!(oci[0].names, vec![NAME.to_string()]);
    let digest = oci[0].digest.clone().expect("manifest digest");
    assert!(digest.starts_with("sha256:"));
    let hex = digest.trim_start_matches("sha256:");
    assert!(root.path().join("images/blobs/sha256").join(hex).is_file());
    assert!(root
        .path()
        .join("images/blobs/sha256")
        .join(podman_id())
        .is_file());
    // The docker-archive of the same image: same ID, nothing new unpacked.
    let before = layer_entries(root.path());
    let docker = s.load(&images.join("busybox-docker.tar")).unwrap();
    assert_eq!(docker[0].id, podman_id());
    assert_eq!(layer_entries(root.path()), before);
    assert_eq!(s.list().unwrap().len(), 1);
    assert_eq!(
        s.list().unwrap()[0].digest.as_deref(),
        Some(digest.as_str())
    );
}

#[test]
fn compressed_archives_load() {
    let images = test_images();
    require_tool("gzip");
    require_tool("zstd");
    let work = tempfile::tempdir().unwrap();
    let gz = work.path().join("busybox-docker.tar.gz");
    let zst = work.path().join("busybox-oci.tar.zst");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c {} > {} && zstd -q -c {} > {}",
            images.join("busybox-docker.tar").display(),
            gz.display(),
            images.join("busybox-oci.tar").display(),
            zst.display()
        ))
        .status()
        .unwrap();
    assert!(out.success());
    for archive in [gz, zst] {
        let root = tempfile::tempdir().unwrap();
        let s = store(root.path());
        let img = s.load(&archive).unwrap();
        assert_eq!(img[0].id, podman_id(), "{}", archive.display());
        // The decompressed temporary copy is gone.
        assert_eq!(
            std::fs::read_dir(root.path().join("images/tmp"))
                .unwrap()
                .count(),
            0
        );
    }
}

/// Loads `archive` and checks it fails with a message containing `expect` and leaves the store
/// exactly as it was.
fn fails_cleanly(
    s: &stasis_image::ImageStore,
    root: &std::path::Path,
    archive: &std::path::Path,
    expect: &str,
) {
    let before = snapshot(root);
    let err = s.load(archive).unwrap_err().to_string();
    assert!(err.contains(expect), "error {err:?} lacks {expect:?}");
    assert_eq!(snapshot(root), before, "store changed after: {err}");
}

#[test]
fn bad_archives_leave_nothing_behind() {
    let images = test_images();
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let work = tempfile::tempdir().unwrap();
    // Start from a store that already holds an image, so "as before" is not just "empty".
    s.load(&images.join("busybox-docker.tar")).unwrap();

    // A diff ID lie: the layer unpacks, then its digest does not match the config.
    let good = tar_of(&[("hello.txt", b"hi\n")]);
    let lie = work.path().join("lie.tar");
    docker_archive(
        &lie,
        "localhost/lie:1",
        std::slice::from_ref(&good),
        Some(vec![format!("sha256:{}", "1".repeat(64))]),
    );
    fails_cleanly(
        &s,
        root.path(),
        &lie,
        "but its image config says sha256:1111",
    );

    // The second of two layers is bad: the first (already unpacked) must go too.
    let two = work.path().join("two.tar");
    let other = tar_of(&[("other.txt", b"x\n")]);
    docker_archive(
        &two,
        "localhost/two:1",
        &[good.clone(), other],
        Some(vec![
            format!("sha256:{}", sha256_hex(&good)),
            format!("sha256:{}", "2".repeat(64)),
        ]),
    );
    fails_cleanly(&s, root.path(), &two, "has digest sha256:");

    // An unsafe entry.
    let evil = work.path().join("evil.tar");
    docker_archive(
        &evil,
        "localhost/evil:1",
        &[raw_layer("../evil", b"boom")],
        None,
    );
    fails_cleanly(&s, root.path(), &evil, "escapes");
    assert!(!root.path().join("evil").exists());

    // A missing layer file.
    let missing = work.path().join("missing.tar");
    let config = serde_json::json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[format!("sha256:{}", "3".repeat(64))]}}).to_string();
    let id = sha256_hex(config.as_bytes());
    let manifest = serde_json::json!([{"Config": format!("{id}.json"), "RepoTags": ["localhost/m:1"], "Layers": ["nope/layer.tar"]}]).to_string();
    std::fs::write(
        &missing,
        tar_of(&[
            (&format!("{id}.json"), config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ]),
    )
    .unwrap();
    fails_cleanly(&s, root.path(), &missing, "lacks nope/layer.tar");

    // A config whose content does not match its file name.
    let renamed = work.path().join("renamed.tar");
    let fake = "4".repeat(64);
    let manifest =
        serde_json::json!([{"Config": format!("{fake}.json"), "RepoTags": [], "Layers": []}])
            .to_string();
    std::fs::write(
        &renamed,
        tar_of(&[
            (&format!("{fake}.json"), config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
        ]),
    )
    .unwrap();
    fails_cleanly(&s, root.path(), &renamed, "its file name says sha256:4444");

    // A tampered byte inside the real image's layer (docker-archive layer named by digest).
    let tampered = work.path().join("tampered.tar");
    let mut bytes = std::fs::read(images.join("busybox-docker.tar")).unwrap();
    let pos = bytes
        .windows(20)
        .position(|w| w == b"hello from the image")
        .unwrap();
    bytes[pos] = b'H';
    std::fs::write(&tampered, &bytes).unwrap();
    // Use a fresh root: in the shared one the layer is already present and not re-read.
    let root2 = tempfile::tempdir().unwrap();
    let s2 = store(root2.path());
    fails_cleanly(&s2, root2.path(), &tampered, "has digest");

    // Tampered OCI config, a truncated archive, not an archive at all.
    let oci = std::fs::read(images.join("busybox-oci.tar")).unwrap();
    let pos = oci.windows(8).position(|w| w == b"\"/bin/sh").unwrap();
    let mut t = oci.clone();
    t[pos + 2] = b'B';
    let tampered_oci = work.path().join("tampered-oci.tar");
    std::fs::write(&tampered_oci, &t).unwrap();
    fails_cleanly(&s2, root2.path(), &tampered_oci, "has digest");
    let truncated = work.path().join("truncated.tar");
    std::fs::write(&truncated, &oci[..oci.len() / 2]).unwrap();
    fails_cleanly(
        &s2,
        root2.path(),
        &truncated,
        "is truncated: entry blobs/sha256/",
    );
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar file at all").unwrap();
    fails_cleanly(&s2, root2.path(), &junk, "is not a tar archive");
    let plain = work.path().join("plain.tar");
    std::fs::write(&plain, tar_of(&[("x", b"y")])).unwrap();
    fails_cleanly(&s2, root2.path(), &plain, "neither a docker-archive");
    assert!(s2.list().unwrap().is_empty());
}

#[test]
fn import_rootfs_names_and_configures() {
    let images = test_images();
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let mut f = std::fs::File::open(images.join("rootfs.tar")).unwrap();
    let img = s
        .import_rootfs(
            &mut f,
            Some("imported"),
            ImportConfig {
                cmd: Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]),
                env: vec!["PATH=/bin".into()],
                workdir: Some("/root".into()),
                entrypoint: None,
            },
        )
        .unwrap();
    assert_eq!(img.names, vec!["localhost/imported:latest".to_string()]);
    assert_eq!(s.resolve("imported").unwrap().id, img.id);
    assert_eq!(s.resolve("localhost/imported:latest").unwrap().id, img.id);
    let cfg = img.config.config().as_ref().unwrap();
    assert_eq!(cfg.working_dir().as_deref(), Some("/root"));
    assert_eq!(cfg.env().as_ref().unwrap(), &vec!["PATH=/bin".to_string()]);
    assert_eq!(cfg.cmd().as_ref().unwrap().len(), 3);
    // Same bytes as Podman's layer: the imported layer is the loaded image's layer.
    let loaded = s.load(&images.join("busybox-docker.tar")).unwrap();
    assert_eq!(loaded[0].layers, img.layers);
    assert_eq!(layer_entries(root.path()).len(), 1);
    assert!(s.layer_dirs(&img).unwrap()[0].join("bin/busybox").is_file());

    // Removing one keeps the shared layer; removing the other removes it and all blobs.
    assert_eq!(s.remove("imported").unwrap(), vec![img.id.clone()]);
    assert!(s.layer_dirs(&loaded[0]).unwrap()[0].is_dir());
    assert_eq!(
        s.remove(&loaded[0].id[..6]).unwrap(),
        vec![loaded[0].id.clone()]
    );
    assert!(layer_entries(root.path()).is_empty());
    let snap = snapshot(root.path());
    assert!(snap.rows.iter().all(|(_, n)| *n == 0), "{snap:?}");
    assert!(
        !snap
            .files
            .iter()
            .any(|f| f.starts_with("images/blobs/sha256/")),
        "{snap:?}"
    );
    assert!(matches!(s.remove("imported"), Err(ImageError::NotFound(_))));
}

#[test]
fn import_of_garbage_fails_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let before = snapshot(root.path());
    let evil = raw_layer("../../etc/evil", b"x");
    let err = s
        .import_rootfs(&mut &evil[..], Some("evil"), ImportConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains("escapes"), "{err}");
    let gz_junk = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
    assert!(s
        .import_rootfs(&mut &gz_junk[..], None, ImportConfig::default())
        .is_err());
    assert_eq!(snapshot(root.path()), before);
    assert!(s
        .import_rootfs(&mut &b""[..], Some("Bad Name"), ImportConfig::default())
        .is_err());
}

#[test]
fn tags_move_and_prefixes_can_be_ambiguous() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path());
    let work = tempfile::tempdir().unwrap();
    // 20 small distinct images.
    let mut ids = Vec::new();
    for i in 0..20 {
        let a = work.path().join(format!("{i}.tar"));
        let layer = tar_of(&[("f", format!("{i}").as_bytes())]);
        ids.push(docker_archive(
            &a,
            &format!("localhost/img{i}:v1"),
            &[layer],
            None,
        ));
        s.load(&a).unwrap();
    }
    s.tag("localhost/img0:v1", "moved").unwrap();
    s.tag("img1:v1", "moved").unwrap();
    assert_eq!(s.resolve("moved").unwrap().id, ids[1]);
    assert!(s
        .resolve("localhost/moved:latest")
        .unwrap()
        .names
        .contains(&"localhost/img1:v1".to_string()));
    s.untag("moved").unwrap();
    assert!(s.resolve("moved").is_err());
    assert!(s.tag("img2:v1", "UPPER").is_err());
    let err = s
        .tag("img2:v1", &format!("x@sha256:{}", ids[0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot contain a digest"), "{err}");
    // Two registries hold a ".../dup": the short name is ambiguous.
    s.tag("img3:v1", "quay.io/a/dup:latest").unwrap();
    s.tag("img4:v1", "quay.io/b/dup:latest").unwrap();
    let err = s.resolve("dup").unwrap_err().to_string();
    assert!(err.contains("is ambiguous"), "{err}");
    assert_eq!(s.list().unwrap().len(), 20);
}

#[test]
fn concurrent_loads_of_the_same_layer_are_safe() {
    let images = test_images();
    let root = tempfile::tempdir().unwrap();
    let archive = images.join("busybox-docker.tar");
    let oci = images.join("busybox-oci.tar");
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let root = root.path();
                let a = if i % 2 == 0 { &archive } else { &oci };
                sc.spawn(move || store(root).load(a).map(|v| v[0].id.clone()))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), podman_id());
        }
    });
    let s = store(root.path());
    assert_eq!(s.list().unwrap().len(), 1);
    assert_eq!(
        layer_entries(root.path()).len(),
        1,
        "{:?}",
        layer_entries(root.path())
    );
    assert_eq!(
        std::fs::read_dir(root.path().join("images/tmp"))
            .unwrap()
            .count(),
        0
    );
}
