//! Entry names inside a checkpoint archive, spelled exactly as Podman 4.3 (and checkpointctl's
//! `lib/metadata.go`) spell them. Paths are relative, without a `./` prefix.

/// libpod `ContainerConfig` as JSON.
pub const CONFIG_DUMP: &str = "config.dump";
/// The generated OCI runtime spec (the bundle's `config.json`) as JSON.
pub const SPEC_DUMP: &str = "spec.dump";
/// `map[network name]StatusBlock` as JSON (netavark's result format).
pub const NETWORK_STATUS: &str = "network.status";
/// CRIU statistics image written by a dump.
pub const STATS_DUMP: &str = "stats-dump";
/// CRIU statistics image written by a restore (never part of a Podman export).
pub const STATS_RESTORE: &str = "stats-restore";
/// Directory holding CRIU's image files.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// libpod's per-container artifacts directory (normally empty).
pub const ARTIFACTS_DIR: &str = "artifacts";
/// Directory holding one uncompressed tar per named volume: `volumes/<name>.tar`.
pub const VOLUMES_DIR: &str = "volumes";
/// Uncompressed tar of the container's private `/dev/shm`.
pub const DEVSHM_CHECKPOINT_TAR: &str = "devshm-checkpoint.tar";
/// Uncompressed tar of added and modified files, relative to the rootfs.
pub const ROOTFS_DIFF_TAR: &str = "rootfs-diff.tar";
/// JSON array of absolute in-container paths that were deleted.
pub const DELETED_FILES: &str = "deleted.files";
/// The container's log file (k8s-file / json-file log drivers only).
pub const CTR_LOG: &str = "ctr.log";
/// CRIU's dump log (kept in the bundle, never exported by Podman).
pub const DUMP_LOG: &str = "dump.log";
/// CRIU's restore log (kept in the bundle, never exported by Podman).
pub const RESTORE_LOG: &str = "restore.log";
/// Directory of CRIU pre-dump images (used instead of `checkpoint/` with `--pre-checkpoint`).
pub const PRE_CHECKPOINT_DIR: &str = "pre-checkpoint";
/// The CRIU image whose presence makes a checkpoint complete.
pub const CHECKPOINT_INVENTORY: &str = "checkpoint/inventory.img";
/// runc/crun's map of the container's stdio descriptors, inside `checkpoint/`.
pub const DESCRIPTORS_JSON: &str = "descriptors.json";

/// Name of the tar of volume `name` inside the archive: `volumes/<name>.tar`.
pub fn volume_tar(name: &str) -> String {
    format!("{VOLUMES_DIR}/{name}.tar")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_tar_name() {
        assert_eq!(volume_tar("data"), "volumes/data.tar");
        assert_eq!(
            CHECKPOINT_INVENTORY,
            format!("{CHECKPOINT_DIR}/inventory.img")
        );
    }
}
