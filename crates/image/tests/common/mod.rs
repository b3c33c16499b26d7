//! Helpers shared by the integration tests: the test image, tool checks, store snapshots.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Fails (never skips) when a tool the tests need is missing.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: run scripts/install-deps.sh (as root) before the tests"
    );
}

/// Directory with rootfs.tar, busybox-docker.tar, busybox-oci.tar, image-id; built once by
/// scripts/make-test-image.sh.
pub fn test_images() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require_tool("podman");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-image.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .expect("running make-test-image.sh");
        assert!(
            status.success(),
            "{} failed: run scripts/install-deps.sh, then retry",
            script.display()
        );
        let dir = std::env::var_os("STASIS_TEST_IMAGES").map_or_else(
            || PathBuf::from("/var/tmp/stasis-test-images"),
            PathBuf::from,
        );
        for f in [
            "rootfs.tar",
            "busybox-docker.tar",
            "busybox-oci.tar",
            "image-id",
        ] {
            assert!(
                dir.join(f).is_file(),
                "make-test-image.sh did not write {f}"
            );
        }
        dir
    })
    .clone()
}

/// Podman's ID of the test image.
pub fn podman_id() -> String {
    std::fs::read_to_string(test_images().join("image-id"))
        .expect("reading image-id")
        .trim()
        .to_string()
}

/// Everything under root/images and root/layers (paths, recursively for images, top level for
/// layers) plus row counts of the image tables: equal snapshots mean nothing was left behind.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub files: BTreeSet<String>,
    pub rows: Vec<(String, i64)>,
}

fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>, depth: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.insert(p.strip_prefix(base).unwrap().display().to_string());
        if depth > 0 && p.is_dir() && !p.is_symlink() {
            walk(&p, base, out, depth - 1);
        }
    }
}

pub fn snapshot(root: &Path) -> Snapshot {
    let mut files = BTreeSet::new();
    walk(&root.join("images"), root, &mut files, 8);
    walk(&root.join("layers"), root, &mut files, 1);
    let conn = stasis_state::open_db(root).unwrap();
    let rows = [
        "image_images",
        "image_names",
        "image_layers",
        "layer_layers",
    ]
    .iter()
    .map(|t| {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap();
        (t.to_string(), n)
    })
    .collect();
    Snapshot { files, rows }
}

/// Entries of root/layers that are layers (not temporary).
pub fn layer_entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tar archive in memory: (name, content) regular files.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A layer tar with one entry whose raw name is `name` (may be unsafe, like `../evil`).
pub fn raw_layer(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Writes a docker-archive with one image made of `layers` (uncompressed tars) to `path`.
/// `diff_ids` default to the real digests; pass some to lie. Returns the image ID.
pub fn docker_archive(
    path: &Path,
    name: &str,
    layers: &[Vec<u8>],
    diff_ids: Option<Vec<String>>,
) -> String {
    let diff_ids = diff_ids.unwrap_or_else(|| {
        layers
            .iter()
            .map(|l| format!("sha256:{}", sha256_hex(l)))
            .collect()
    });
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let id = sha256_hex(config.as_bytes());
    let layer_names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": format!("{id}.json"), "RepoTags": [name], "Layers": layer_names,
    }])
    .to_string();
    let mut files: Vec<(&str, &[u8])> = Vec::new();
    for (n, l) in layer_names.iter().zip(layers) {
        files.push((n, l));
    }
    let config_name = format!("{id}.json");
    files.push((&config_name, config.as_bytes()));
    files.push(("manifest.json", manifest.as_bytes()));
    std::fs::write(path, tar_of(&files)).unwrap();
    id
}

pub fn store(root: &Path) -> stasis_image::ImageStore {
    stasis_image::ImageStore::open(root).unwrap()
}
