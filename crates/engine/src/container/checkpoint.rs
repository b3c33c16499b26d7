//! `container checkpoint`: freeze a running container through runc and CRIU, keep the images
//! with the container (restore in place) and, with `--export`, write Podman's archive layout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stasis_archive::{names, rootfs_diff, ArchiveParts, NetworkStatus};
use stasis_tar::Compression;

use crate::db::{self, ContainerRecord, State};
use crate::pagestream::{self, DumpServer, StreamedArchive};
use crate::runc::CriuOpts;
use crate::{criu, Engine, EngineError};
use stasis_tar::frames::FrameWriter;

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
        crate::progress::mark("checkpoint: start");
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

        // A file export in zstd streams the memory pages straight from CRIU into the archive
        // (see `pagestream`): the archive is started now, its head first.
        let mut server = None;
        let mut criu_end = None;
        let mut ps_socket = None;
        let criu_conf = self.criu_config_path(&c.id);
        let _ = std::fs::remove_file(&criu_conf);
        let own_config = self.spec_names_criu_config(&c);
        if let Some(path) = self.stream_target(&c, &opts) {
            std::fs::create_dir_all(&images).map_err(|e| EngineError::io(&images, e))?;
            let (archive, out) = self.start_streamed_export(&c, &path)?;
            let progress = crate::progress::Progress::new(
                opts.progress,
                &format!("exporting {} (memory)", c.name),
                self.container_memory(&c),
            );
            let started =
                if own_config && std::env::var("STASIS_PAGE_SERVER").map_or(true, |v| v != "tcp") {
                    // An AF_UNIX socket CRIU inherits through runc, named in the configuration
                    // file runc hands CRIU.
                    (|| {
                        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                            .map_err(|e| EngineError::msg(format!("page server socket: {e}")))?;
                        let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
                        pagestream::widen_socket(&theirs);
                        pagestream::set_inheritable(fd)
                            .map_err(|e| EngineError::msg(format!("page server socket: {e}")))?;
                        ps_socket = Some(fd);
                        criu_end = Some(theirs);
                        DumpServer::on_socket(archive, images.clone(), ours, progress)
                    })()
                } else {
                    DumpServer::listen(archive, images.clone(), progress)
                };
            match started {
                Ok(s) => {
                    opts.criu.page_server = s.address();
                    server = Some((s, out));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&criu_conf);
                    let _ = std::fs::remove_file(&out.tmp);
                    return Err(e);
                }
            }
        }

        // The dump decides CRIU's network lock for itself and its restores (see
        // `criu::config_file`): none without TCP connections in a namespace of its own.
        let pod_netns = c.config.network_mode.starts_with("container:");
        let conf = criu::config_file(!opts.criu.tcp_established && !pod_netns, ps_socket);
        if own_config && !conf.is_empty() {
            if let Err(e) = std::fs::write(&criu_conf, conf) {
                if let Some((_, out)) = &server {
                    let _ = std::fs::remove_file(&out.tmp);
                }
                return Err(EngineError::io(&criu_conf, e));
            }
        }
        crate::progress::mark("checkpoint: archive head written, starting runc");
        // Without --leave-running, the container's network may go while CRIU dumps (see
        // `Engine::dump`).
        let (dumped, runtime_duration) =
            self.dump(&c, &images, &bundle, opts.leave_running, &opts.criu);
        drop(criu_end);
        let _ = std::fs::remove_file(&criu_conf);
        crate::progress::mark("checkpoint: runc checkpoint done");
        let mut streamed = None;
        if let Some((s, out)) = server {
            match (s.finish(), &dumped) {
                (Ok(a), Ok(())) => streamed = Some((a, out)),
                (Err(e), Ok(())) => {
                    let _ = std::fs::remove_file(&out.tmp);
                    return Err(EngineError::msg(format!(
                        "checkpointing container {}: receiving its memory pages failed: {e}",
                        c.name
                    )));
                }
                (_, Err(_)) => {
                    let _ = std::fs::remove_file(&out.tmp);
                }
            }
        }
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

        // A container left running is frozen again while its files are archived (CRIU thawed
        // it): the rootfs diff, /dev/shm and volumes are then one consistent view, and no file
        // changes size under the archiver.
        let frozen = (opts.leave_running && opts.export.is_some())
            .then(|| self.runc.freeze(&c.id))
            .flatten();
        // The shm tmpfs is external to CRIU: save its content beside the images.
        let shm_tar = bundle.join(names::DEVSHM_CHECKPOINT_TAR);
        tar_dir(&self.layout.shm(&c.id), &shm_tar)?;

        let was_streamed = streamed.is_some();
        let export_result = match (opts.export.take(), streamed) {
            (_, Some((archive, out))) => {
                self.finish_streamed_export(&c, &opts, archive, &out, &images)
            }
            (Some(target), None) => self.export(&c, &opts, target, &images),
            (None, None) => Ok(()),
        };
        drop(frozen);
        if export_result.is_err() && tmp_images.is_some() && !opts.leave_running && !was_streamed {
            // The process is gone and the archive failed: keep the images with the container
            // so that `restore NAME` can still bring it back.
            if let Err(e) = copy_tree(&images, &stale_images) {
                eprintln!("warning: keeping the checkpoint of {} failed: {e}", c.name);
            }
        }
        drop(tmp_images);

        crate::progress::mark("checkpoint: archive written");
        if !opts.leave_running {
            // The dump killed the process; let conmon record the exit and mark the container
            // checkpointed. Its runtime resources (runc's state, network, mounts) are released
            // by conmon's exit command (`container cleanup`, waiting for our lock), or by
            // whichever command looks at the container first (`refresh` finds the exit file):
            // the checkpoint does not wait for that, as Podman leaves ordinary exits to its
            // cleanup command.
            let exited = self.wait_exit_file(&c.id, Duration::from_secs(10));
            c.checkpointed = true;
            c.checkpointed_at = Some(crate::container::create::now());
            db::update(self.conn(), &c)?;
            if !exited {
                c = self.finish(c, Some(137))?;
            }
        } else {
            c.checkpointed_at = Some(crate::container::create::now());
            db::update(self.conn(), &c)?;
        }
        crate::progress::mark("checkpoint: container finished");
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

    /// The bundle's spec and the container's libpod configuration: the archive's head.
    fn archive_head(&self, c: &ContainerRecord) -> Result<ArchiveHead, EngineError> {
        let spec_path = self.layout.bundle(&c.id).join("config.json");
        let spec: serde_json::Value = std::fs::read(&spec_path)
            .map_err(|e| EngineError::io(&spec_path, e))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| EngineError::msg(format!("{}: {e}", spec_path.display())))
            })?;
        let config = crate::libpod::to_libpod(c, &spec, &self.layout);
        let mut spec = spec;
        // Our CRIU configuration file and a restore's network gate are host-local details
        // (see `write_spec`).
        if let Some(a) = spec.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            a.remove(crate::container::start::CRIU_CONFIG_ANNOTATION);
        }
        crate::spec::replace_prestart_hook(&mut spec, crate::runc::RestoreGate::is_gate_hook, None);
        Ok((config, spec))
    }

    /// Whether runc hands CRIU our configuration file for this container: containers whose
    /// spec was written before that existed do not name it.
    fn spec_names_criu_config(&self, c: &ContainerRecord) -> bool {
        let p = self.layout.bundle(&c.id).join("config.json");
        let want = self.criu_config_path(&c.id);
        std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|spec| {
                spec["annotations"][crate::container::start::CRIU_CONFIG_ANNOTATION]
                    .as_str()
                    .is_some_and(|v| Path::new(v) == want)
            })
    }

    /// Where a checkpoint streams its pages into the archive: a file export in zstd, not
    /// kept, with room for the memory beside the target (else the pages are staged on tmpfs
    /// as before, and a failed export can still keep the images). `STASIS_PAGE_SERVER=0`
    /// turns streaming off.
    fn stream_target(&self, c: &ContainerRecord, opts: &CheckpointOptions) -> Option<PathBuf> {
        let Some(ExportTarget::File(path)) = &opts.export else {
            return None;
        };
        if opts.keep
            || opts.compression.unwrap_or(Compression::Zstd) != Compression::Zstd
            || std::env::var("STASIS_PAGE_SERVER").is_ok_and(|v| v == "0")
        {
            return None;
        }
        let dir = export_dir(path);
        let st = nix::sys::statvfs::statvfs(dir).ok()?;
        let avail = st.blocks_available() as u64 * st.fragment_size() as u64;
        let need = self.container_memory(c).unwrap_or(0) + (256 << 20);
        (avail >= need).then(|| path.clone())
    }

    /// Opens the partial archive file and writes the head of a streamed export.
    fn start_streamed_export(
        &self,
        c: &ContainerRecord,
        path: &Path,
    ) -> Result<(StreamedArchive, StreamedExport), EngineError> {
        let (config, spec) = self.archive_head(c)?;
        let tmp = partial_path(path);
        let f = open_0600(&tmp)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let started = (|| {
            let fw = FrameWriter::new(
                f,
                pagestream::stream_level(),
                threads,
                pagestream::FRAME_SIZE,
            )
            .map_err(|e| EngineError::msg(e.to_string()))?
            .with_buffers(pagestream::frames_in_flight());
            let label = path.display().to_string();
            let mut a = stasis_archive::ArchiveWriter::with_sink(fw, &label, &config, &spec)
                .map_err(|e| EngineError::msg(e.to_string()))?;
            a.checkpoint_dir_entry(0o700)
                .map_err(|e| EngineError::msg(e.to_string()))?;
            Ok(a)
        })();
        match started {
            Ok(a) => Ok((
                a,
                StreamedExport {
                    tmp,
                    path: path.to_path_buf(),
                    head: (config, spec),
                },
            )),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Writes the rest of a streamed export after the dump, and renames it into place.
    fn finish_streamed_export(
        &self,
        c: &ContainerRecord,
        opts: &CheckpointOptions,
        mut archive: StreamedArchive,
        out: &StreamedExport,
        images: &Path,
    ) -> Result<(), EngineError> {
        let scratch = tempdir_in(&self.layout.tmp_dir())?;
        let res = (|| {
            let prepared = self.export_parts(c, opts, scratch.path())?;
            crate::progress::mark("checkpoint: export parts prepared");
            let parts = prepared.parts(&out.head.0, &out.head.1, images);
            stasis_archive::write_parts(&mut archive, &parts).map_err(|e| {
                EngineError::msg(format!("exporting checkpoint of {}: {e}", c.name))
            })?;
            let fw = archive.finish_tar().map_err(|e| {
                EngineError::msg(format!("exporting checkpoint of {}: {e}", c.name))
            })?;
            fw.finish().map_err(|e| {
                EngineError::msg(format!("exporting checkpoint of {}: {e}", c.name))
            })?;
            std::fs::rename(&out.tmp, &out.path).map_err(|e| EngineError::io(&out.path, e))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&out.tmp);
        }
        res
    }

    /// Everything of an export but the head and the CRIU images: the rootfs diff and the
    /// volume tars (built in `scratch`), the deleted paths, the network status and the files
    /// of the bundle.
    fn export_parts(
        &self,
        c: &ContainerRecord,
        opts: &CheckpointOptions,
        scratch: &Path,
    ) -> Result<PreparedParts, EngineError> {
        let bundle = self.layout.bundle(&c.id);
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
                let p = scratch.join(names::ROOTFS_DIFF_TAR);
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
                let p = scratch.join(format!("volume-{}.tar", v.name));
                tar_dir(&self.volume_mountpoint(&v.name), &p)?;
                volumes.push((v.name.clone(), p));
            }
        }
        let exists = |p: PathBuf| p.exists().then_some(p);
        // Addresses on our default network are host-local: they are not carried (Podman would
        // refuse them in its own default subnet). Custom networks keep theirs.
        let status: NetworkStatus = self
            .read_network_status(&c.id)
            .unwrap_or_default()
            .into_iter()
            .filter(|(net, _)| net != stasis_network::DEFAULT_NETWORK)
            .collect();
        Ok(PreparedParts {
            status,
            stats: exists(bundle.join(names::STATS_DUMP)),
            diff_tar,
            deleted,
            shm_tar: exists(bundle.join(names::DEVSHM_CHECKPOINT_TAR)),
            volumes,
            log: exists(self.layout.log_path(&c.id)),
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
        let (config, spec) = self.archive_head(c)?;
        let scratch = tempdir_in(&self.layout.tmp_dir())?;
        let prepared = self.export_parts(c, opts, scratch.path())?;
        let parts = prepared.parts(&config, &spec, images);
        let compression = opts.compression.unwrap_or(Compression::Zstd);
        // zstd level 1: as small as Podman's level 3 on memory pages (mostly either very
        // repetitive or incompressible) and lighter on memory; see BENCHMARKS.md.
        let level = (compression == Compression::Zstd).then_some(ZSTD_LEVEL);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        match target {
            ExportTarget::File(path) => {
                // Written beside the target and renamed: a failed export leaves no partial file.
                let tmp = partial_path(&path);
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

/// `config.dump` and `spec.dump`, as written at the head of an archive.
type ArchiveHead = (stasis_archive::ContainerConfig, serde_json::Value);

/// A streamed export under way: its partial file, its target and the head it was started
/// with (the rest of the archive is written after the dump).
struct StreamedExport {
    tmp: PathBuf,
    path: PathBuf,
    head: ArchiveHead,
}

/// The parts of an export prepared after the dump (see [`Engine::export_parts`]).
struct PreparedParts {
    status: NetworkStatus,
    stats: Option<PathBuf>,
    diff_tar: Option<PathBuf>,
    deleted: Vec<String>,
    shm_tar: Option<PathBuf>,
    volumes: Vec<(String, PathBuf)>,
    log: Option<PathBuf>,
}

impl PreparedParts {
    fn parts<'a>(
        &'a self,
        config: &'a stasis_archive::ContainerConfig,
        spec: &'a serde_json::Value,
        images: &'a Path,
    ) -> ArchiveParts<'a> {
        ArchiveParts {
            config,
            spec,
            network_status: Some(&self.status),
            stats_dump: self.stats.as_deref(),
            checkpoint_dir: images,
            rootfs_diff_tar: self.diff_tar.as_deref(),
            deleted_files: &self.deleted,
            devshm_tar: self.shm_tar.as_deref(),
            volumes: &self.volumes,
            ctr_log: self.log.as_deref(),
        }
    }
}

/// The directory an export file goes to.
fn export_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The partial file an export is written to beside its target, renamed when complete: a
/// failed export leaves no partial file under the target's name.
fn partial_path(path: &Path) -> PathBuf {
    export_dir(path).join(format!(
        ".{}.partial",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ))
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
