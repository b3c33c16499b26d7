//! Podman 4.3 interoperability, both ways: Podman exports a checkpoint, we read it with
//! `read_compressed_archive`, rewrite it with `write_archive` (zstd, our entry order) and Podman
//! restores our archive. Needs root, podman, CRIU and the test image
//! (`scripts/make-test-image.sh`); run with
//! `STASIS_PODMAN_INTEROP=1 cargo test -p stasis-archive --test podman_interop -- --ignored`.

use stasis_archive::archive::{read_compressed_archive, write_archive, ArchiveParts};
use stasis_archive::names;
use stasis_tar::Compression;
use std::path::PathBuf;
use std::process::Command;

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs root, podman 4.3, CRIU and the test image"]
fn podman_restores_our_archive() {
    if std::env::var_os("STASIS_PODMAN_INTEROP").is_none() {
        return;
    }
    let name = format!("stasis-archive-interop-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs.tar.zst");
    let ours = dir.path().join("ours.tar.zst");
    let theirs_s = theirs.to_str().unwrap();
    podman(&["run", "-d", "--name", &name, "localhost/stasis-test/busybox:latest",
        "sh", "-c", "echo changed > /etc/motd; rm /etc/group; i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    podman(&["container", "checkpoint", "--export", theirs_s, &name]);
    podman(&["rm", "-f", &name]);

    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let f = std::fs::File::open(&theirs).unwrap();
    let (_, c) = read_compressed_archive(f, theirs_s, &staging, |_, _| Ok(())).unwrap();
    let status = std::fs::read(staging.join(names::NETWORK_STATUS))
        .map(|b| stasis_archive::network::parse(&b).status())
        .ok();
    let opt = |n: &str| Some(staging.join(n)).filter(|p| p.exists());
    let stats = opt(names::STATS_DUMP);
    let diff = opt(names::ROOTFS_DIFF_TAR);
    let devshm = opt(names::DEVSHM_CHECKPOINT_TAR);
    let log = opt(names::CTR_LOG);
    let deleted = std::fs::read(staging.join(names::DELETED_FILES))
        .map(|b| stasis_archive::rootfs_diff::parse_deleted_files(&b).unwrap())
        .unwrap_or_default();
    assert_eq!(deleted, vec!["/etc/group"]);
    let volumes: Vec<(String, PathBuf)> = Vec::new();
    let parts = ArchiveParts {
        config: &c.config,
        spec: &c.spec,
        network_status: status.as_ref(),
        stats_dump: stats.as_deref(),
        checkpoint_dir: &staging.join(names::CHECKPOINT_DIR),
        rootfs_diff_tar: diff.as_deref(),
        deleted_files: &deleted,
        devshm_tar: devshm.as_deref(),
        volumes: &volumes,
        ctr_log: log.as_deref(),
    };
    let out = std::fs::File::create(&ours).unwrap();
    write_archive(out, "ours", Compression::Zstd, None, 2, &parts).unwrap();

    podman(&["container", "restore", "--import", ours.to_str().unwrap()]);
    let state = podman(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.Name}}",
        &c.config.id,
    ]);
    let motd = podman(&["exec", &name, "cat", "/etc/motd"]);
    let group = Command::new("podman")
        .args(["exec", &name, "test", "-e", "/etc/group"])
        .status()
        .unwrap();
    let n1: u64 = podman(&["exec", &name, "cat", "/tmp/n"]).parse().unwrap();
    podman(&["rm", "-f", &name]);
    assert_eq!(state, format!("running {name}"));
    assert_eq!(motd, "changed");
    assert!(
        !group.success(),
        "/etc/group was deleted before the checkpoint"
    );
    assert!(n1 > 1, "the counter kept its memory state: {n1}");
}
