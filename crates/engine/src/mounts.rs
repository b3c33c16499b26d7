//! The container's root filesystem (overlayfs over the image's layers) and its /dev/shm tmpfs.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mounts an overlay at `merged`. `lower` is bottom layer first.
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> io::Result<()> {
    if lower.is_empty() {
        return Err(io::Error::other("image has no layers"));
    }
    let lowerdir = lower
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| io::Error::other(format!("mounting overlay at {}: {e}", merged.display())))
}

/// Mounts the container's private /dev/shm (Podman's size: 64000k).
pub fn mount_shm(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    mount(
        Some("shm"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536000"),
    )
    .map_err(|e| io::Error::other(format!("mounting shm at {}: {e}", dir.display())))
}

/// Unmounts `path` if it is mounted (lazily, so a busy mount never blocks cleanup).
pub fn unmount(path: &Path) -> io::Result<()> {
    loop {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue, // stacked mounts: peel them all
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "unmounting {}: {e}",
                    path.display()
                )))
            }
        }
    }
}
