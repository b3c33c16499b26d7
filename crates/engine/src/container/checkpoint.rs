//! `container checkpoint`: freeze a running container through runc and CRIU, keep the images
//! with the container (restore in place) and, with `--export`, write Podman's archive layout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stasis_archive::{names, rootfs_diff, ArchiveParts, NetworkStatus};
use stasis_tar::Compression;

use crate::db::{self, ContainerRecord, State};
use crate::runc::CriuOpts;
use crate::{criu, Engine, EngineError};

/// Where an export goes.
pub enum ExportTarget {
    File(PathBuf),
    /// Standard output (`--export -`).
    Writer(Box<dyn Write + Send>),
}

impl std::fmt::Debug for ExportTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportTarget::File(p) => write!(f, "File({})", p.display()),
            ExportTarget::Writer(_) => f.write_str("Writer"),
        }
    }
}

/// `checkpoint` flags.
#[derive(Debug, Default)]
pub struct CheckpointOptions {
    pub export: Option<ExportTarget>,
    pub compression: Option<Compression>,
    pub leave_running: bool,
    pub keep: bool,
    pub criu: CriuOpts,
    pub ignore_rootfs: bool,
    pub ignore_volumes: bool,
    pub pre_checkpoint: bool,
    pub with_previous: bool,
    /// Show progress on a terminal.
    pub progress: bool,
}

/// What a checkpoint did, for `--print-stats`.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    pub id: String,
    pub name: String,
    pub runtime_duration: Duration,
    pub dump_stats: Option<stasis_archive::DumpStats>,
}

/// zstd level of exports.
pub const ZSTD_LEVEL: i32 = 1;

/// Paths CRIU restores into that must not travel in rootfs-diff.tar: their host side is made
/// afresh by the engine on restore.
pub const DIFF_EXCLUDES: [&str; 9] = [
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run/.containerenv",
    "/dev",
    "/proc",
    "/sys",
    "/run/secrets",
    "/dev/shm",
];

impl Engine {
    /// Memory the container uses now (its cgroup's), to size scratch space.
    pub(crate) fn container_memory(&self, c: &ContainerRecord) -> Option<u64> {
        let path = crate::container::start::cgroups_path(c);
        let rel = path.trim_start_matches('/');
        [
            format!("/sys/fs/cgroup/memory/{rel}/memory.usage_in_bytes"),
            format!("/sys/fs/cgroup/{rel}/memory.current"),
            format!("/sys/fs/cgroup/unified/{rel}/memory.current"),
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
    }

    /// Checkpoints a running container.
    pub fn checkpoint(
        &self,
        key: &str,
        mut opts: CheckpointOptions,
    ) -> Result<CheckpointReport, EngineError> {
        if opts.pre_checkpoint || opts.with_previous {
            if !criu::memory_tracking() {
                return Err(EngineError::msg(
                    "pre-checkpointing needs dirty memory tracking (CONFIG_MEM_SOFT_DIRTY), which this kernel lacks: checkpoint without -P/--with-previous",
                ));
            }
            return Err(EngineError::msg(
                "pre-checkpoints (-P/--with-previous) are not implemented yet: checkpoint without them",
            ));
        }
        if opts.export.is_none() && (opts.ignore_rootfs || opts.ignore_volumes) {
            return Err(EngineError::msg(
                "--ignore-rootfs and --ignore-volumes can only be used with --export",
            ));
        }
        if opts.export.is_none() && opts.compression.is_some() {
            return Err(EngineError::msg(
                "--compress can only be used with --export",
            ));
        }
        let c = self.lookup(key)?;
        let _lock = self.lock(&c.id)?;
        let mut c = self.refresh(&c.id)?;
        if c.state != State::Running {
            return Err(EngineError::NotRunning {
                name: c.name.clone(),
                state: c.state.as_str().into(),
            });
        }
        if !criu::wait_lazy_pages(&self.lazy_pidfile(&c.id), Duration::from_secs(60)) {
            return Err(EngineError::msg(format!(
                "container {} is still receiving its memory from a lazy restore: try again in a moment",
                c.name
            )));
        }
        let bundle = self.layout.bundle(&c.id);
        // Images that only feed an export go to tmpfs: no disk round trip, and they are gone
        // once the archive is written. Kept (or local) checkpoints live in the bundle.
        let tmp_images = if opts.export.is_some() && !opts.keep {
            tmpfs_scratch(self.container_memory(&c).unwrap_or(0))
        } else {
            None
        };
        let images = match &tmp_images {
            Some(t) => t.path().join(names::CHECKPOINT_DIR),
            None => bundle.join(names::CHECKPOINT_DIR),
        };
        let stale_images = bundle.join(names::CHECKPOINT_DIR);
        for stale in [names::STATS_DUMP, "dump.log", names::DEVSHM_CHECKPOINT_TAR] {
            let _ = std::fs::remove_file(bundle.join(stale));
        }
        if stale_images.exists() {
            std::fs::remove_dir_all(&stale_images)
                .map_err(|e| EngineError::io(&stale_images, e))?;
        }

        let started = Instant::now();
        let dumped = self
            .runc
            .checkpoint(&c.id, &images, &bundle, opts.leave_running, &opts.criu);
        let runtime_duration = started.elapsed();
        if let Err(e) = dumped {
            let log = bundle.join("dump.log");
            let lines = criu::log_errors(&log, 6);
            let _ = std::fs::remove_dir_all(&images);
            return Err(EngineError::msg(format!(
                "checkpointing container {} failed: {e}{}{} (CRIU log: {})",
                c.name,
                if lines.is_empty() { "" } else { "\n  " },
                lines.join("\n  "),
                log.display()
            )));
        }

        // The shm tmpfs is external to CRIU: save its content beside the images.
        let shm_tar = bundle.join(names::DEVSHM_CHECKPOINT_TAR);
        tar_dir(&self.layout.shm(&c.id), &shm_tar)?;

        let export_result = match opts.export.take() {
            Some(target) => self.export(&c, &opts, target, &images),
            None => Ok(()),
        };
        if export_result.is_err() && tmp_images.is_some() && !opts.leave_running {
            // The process is gone and the archive failed: keep the images with the container
            // so that `restore NAME` can still bring it back.
            if let Err(e) = copy_tree(&images, &stale_images) {
                eprintln!("warning: keeping the checkpoint of {} failed: {e}", c.name);
            }
        }
        drop(tmp_images);

        if !opts.leave_running {
            // The dump killed the process; let conmon record the exit, then release runtime
            // resources and mark the container checkpointed.
            self.wait_exit_file(&c.id, Duration::from_secs(10));
            c.checkpointed = true;
            c.checkpointed_at = Some(crate::container::create::now());
            db::update(self.conn(), &c)?;
            c = self.finish(c, Some(137))?;
        } else {
            c.checkpointed_at = Some(crate::container::create::now());
            db::update(self.conn(), &c)?;
        }
        let dump_stats = std::fs::read(bundle.join(names::STATS_DUMP))
            .ok()
            .and_then(|b| stasis_archive::read_dump_stats(&b).ok());
        if !opts.keep {
            for f in ["dump.log", names::STATS_DUMP] {
                let _ = std::fs::remove_file(bundle.join(f));
            }
        }
        export_result?;
        Ok(CheckpointReport {
            id: c.id,
            name: c.name,
            runtime_duration,
            dump_stats,
        })
    }

    /// Writes the archive: config.dump and spec.dump first, then network.status, stats-dump,
    /// artifacts/, checkpoint/, rootfs-diff.tar, deleted.files, devshm-checkpoint.tar, ctr.log.
    fn export(
        &self,
        c: &ContainerRecord,
        opts: &CheckpointOptions,
        target: ExportTarget,
        images: &Path,
    ) -> Result<(), EngineError> {
        let bundle = self.layout.bundle(&c.id);
        let spec_path = bundle.join("config.json");
        let spec: serde_json::Value = std::fs::read(&spec_path)
            .map_err(|e| EngineError::io(&spec_path, e))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| EngineError::msg(format!("{}: {e}", spec_path.display())))
            })?;
        let config = crate::libpod::to_libpod(c, &spec, &self.layout);
        let scratch = tempdir_in(&self.layout.tmp_dir())?;

        let mut deleted = Vec::new();
        let mut diff_tar = None;
        if !opts.ignore_rootfs {
            let image = self.images.get(&c.image_id)?;
            let lowers = match &image {
                Some(i) => self.images.layer_dirs(i)?,
                None => Vec::new(),
            };
            let lowers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
            let changes = rootfs_diff::changes_with_lowers(
                &self.layout.upper(&c.id),
                &lowers,
                &DIFF_EXCLUDES,
            )
            .map_err(|e| EngineError::msg(format!("container {}: {e}", c.name)))?;
            deleted = changes.deleted.clone();
            if !changes.added_or_modified.is_empty() {
                let p = scratch.path().join(names::ROOTFS_DIFF_TAR);
                let f = std::fs::File::create(&p).map_err(|e| EngineError::io(&p, e))?;
                let w = stasis_archive::archive::write_rootfs_diff_tar(
                    &self.layout.upper(&c.id),
                    &changes,
                    std::io::BufWriter::new(f),
                )
                .map_err(|e| EngineError::msg(e.to_string()))?;
                w.into_inner()
                    .map_err(|e| EngineError::io(&p, e.into_error()))?;
                diff_tar = Some(p);
            }
        }
        let mut volumes = Vec::new();
        if !opts.ignore_volumes {
            for v in &c.config.volumes {
                let p = scratch.path().join(format!("volume-{}.tar", v.name));
                tar_dir(&self.volume_mountpoint(&v.name), &p)?;
                volumes.push((v.name.clone(), p));
            }
        }
        let stats = bundle.join(names::STATS_DUMP);
        let shm_tar = bundle.join(names::DEVSHM_CHECKPOINT_TAR);
        let log = self.layout.log_path(&c.id);
        // Addresses on our default network are host-local: they are not carried (Podman would
        // refuse them in its own default subnet). Custom networks keep theirs.
        let status: NetworkStatus = self
            .read_network_status(&c.id)
            .unwrap_or_default()
            .into_iter()
            .filter(|(net, _)| net != stasis_network::DEFAULT_NETWORK)
            .collect();
        let parts = ArchiveParts {
            config: &config,
            spec: &spec,
            network_status: Some(&status),
            stats_dump: stats.exists().then_some(stats.as_path()),
            checkpoint_dir: images,
            rootfs_diff_tar: diff_tar.as_deref(),
            deleted_files: &deleted,
            devshm_tar: shm_tar.exists().then_some(shm_tar.as_path()),
            volumes: &volumes,
            ctr_log: log.exists().then_some(log.as_path()),
        };
        let compression = opts.compression.unwrap_or(Compression::Zstd);
        // zstd level 1: as small as Podman's level 3 on memory pages (mostly either very
        // repetitive or incompressible) and lighter on memory; see BENCHMARKS.md.
        let level = (compression == Compression::Zstd).then_some(ZSTD_LEVEL);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        match target {
            ExportTarget::File(path) => {
                // Written beside the target and renamed: a failed export leaves no partial file.
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let tmp = dir.join(format!(
                    ".{}.partial",
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ));
                let f = open_0600(&tmp)?;
                let label = path.display().to_string();
                let progress = crate::progress::Progress::new(
                    opts.progress,
                    &format!("exporting {}", c.name),
                    None,
                );
                let res = stasis_archive::write_archive(
                    std::io::BufWriter::with_capacity(
                        1 << 20,
                        crate::progress::CountingWriter {
                            inner: f,
                            progress: progress.clone(),
                        },
                    ),
                    &label,
                    compression,
                    level,
                    threads,
                    &parts,
                )
                .map_err(|e| EngineError::msg(format!("exporting checkpoint of {}: {e}", c.name)))
                .and_then(|w| {
                    w.into_inner()
                        .map_err(|e| EngineError::io(&tmp, e.into_error()))
                });
                progress.finish();
                match res {
                    Ok(_) => std::fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e)),
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        Err(e)
                    }
                }
            }
            ExportTarget::Writer(w) => stasis_archive::write_archive(
                w,
                "standard output",
                compression,
                level,
                threads,
                &parts,
            )
            .map(drop)
            .map_err(|e| EngineError::msg(format!("exporting checkpoint of {}: {e}", c.name))),
        }
    }
}

fn open_0600(p: &Path) -> Result<std::fs::File, EngineError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| EngineError::io(p, e))
}

/// Tars the contents of `dir` (uncompressed) into `out`.
pub(crate) fn tar_dir(dir: &Path, out: &Path) -> Result<(), EngineError> {
    let f = std::fs::File::create(out).map_err(|e| EngineError::io(out, e))?;
    let mut b = stasis_tar::TarBuilder::new(std::io::BufWriter::new(f));
    b.append_tree("", dir)
        .map_err(|e| EngineError::msg(format!("saving {}: {e}", dir.display())))?;
    let w = b
        .finish()
        .map_err(|e| EngineError::msg(format!("saving {}: {e}", dir.display())))?;
    w.into_inner()
        .map_err(|e| EngineError::io(out, e.into_error()))?;
    Ok(())
}

/// A scratch directory on tmpfs (/dev/shm) when it has room for `need` bytes (plus a margin),
/// for CRIU images that only pass through.
pub(crate) fn tmpfs_scratch(need: u64) -> Option<Scratch> {
    let dir = Path::new("/dev/shm");
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let avail = st.blocks_available() as u64 * st.fragment_size() as u64;
    if avail < need.saturating_mul(5) / 4 + (256 << 20) {
        return None;
    }
    tempdir_in(dir).ok()
}

/// Copies a directory tree (regular files, directories, symlinks) with modes and owners.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let md = e.metadata()?;
        let ft = md.file_type();
        let dest = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dest)?;
            std::fs::set_permissions(&dest, md.permissions())?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dest)?;
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dest)?;
        } else {
            continue; // sockets, fifos, devices: not copied
        }
        std::os::unix::fs::lchown(&dest, Some(md.uid()), Some(md.gid()))?;
    }
    Ok(())
}

/// A scratch directory under the store (same filesystem), removed on drop.
pub(crate) struct Scratch(PathBuf, bool);

impl Scratch {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
    /// Leaves the directory in place when dropped (someone else removes it).
    pub(crate) fn keep(mut self) {
        self.1 = false;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub(crate) fn tempdir_in(parent: &Path) -> Result<Scratch, EngineError> {
    std::fs::create_dir_all(parent).map_err(|e| EngineError::io(parent, e))?;
    let p = parent.join(format!("stasis-{}", &crate::names::new_id()[..16]));
    std::fs::create_dir(&p).map_err(|e| EngineError::io(&p, e))?;
    Ok(Scratch(p, true))
}
