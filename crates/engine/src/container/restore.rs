//! `container restore`: bring a checkpointed container back to life — in place, from the
//! images kept with it, or from an exported archive as a new container (`--import`).
//!
//! The import flow, top to bottom (Podman's `CRImportCheckpoint` order, one pass over the
//! archive), in [`Engine::restore_import`] then [`Engine::finish_import`]:
//! 1. stream the archive once into scratch space (tmpfs when it has room); as soon as
//!    `config.dump` and `spec.dump` have passed, validate everything that can be validated
//!    ([`stasis_archive::plan_import`]: pod rules, dependencies, volumes, name and ID) and find
//!    the image by the archive's image ID, pulling `rootfsImageName` only when it is missing;
//! 2. check what the network setup would refuse (static IP/MAC taken, host port in use), then
//!    create the archive's volumes and the container (row + storage) under the old ID or, with
//!    `--name`, a new name and ID;
//! 3. move the small files (network.status, stats-dump, ctr.log) into its bundle; the CRIU
//!    images stay where they were read to: nothing is extracted twice;
//! 4. mount its root filesystem and apply `rootfs-diff.tar` and `deleted.files`; fill the
//!    volumes from `volumes/NAME.tar`;
//! 5. make the network namespace and the host-side files, refill /dev/shm, relocate
//!    `spec.dump` to this host (every dumped mount destination kept) and restore through conmon
//!    → `runc restore` → CRIU, lazily for large memory (CRIU's lazy-pages daemon fills it after
//!    the process runs again);
//! 6. check the restored name and ID as Podman does.
//!
//! Any failure after step 2 removes the container and the volumes it made again: a failed
//! restore leaves nothing.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stasis_archive::{names, ContainerConfig, ImportPlan, PodInfo, RestoreRequest, World};
use stasis_tar::UnpackOptions;

use crate::container::checkpoint::{copy_tree, tempdir_in, tmpfs_scratch};
use crate::container::mounts_and_networks::{from_podman_network, reuse_from_status};
use crate::db::{self, ContainerRecord, State};
use crate::runc::CriuOpts;
use crate::{criu, pagestream, Engine, EngineError};

/// Where an import comes from.
pub enum ImportSource {
    File(PathBuf),
    /// Standard input (`--import -`).
    Reader(Box<dyn Read + Send>),
}

impl std::fmt::Debug for ImportSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportSource::File(p) => write!(f, "File({})", p.display()),
            ImportSource::Reader(_) => f.write_str("Reader"),
        }
    }
}

/// `restore` flags.
#[derive(Debug, Default)]
pub struct RestoreOptions {
    pub import: Option<ImportSource>,
    pub name: Option<String>,
    pub keep: bool,
    pub criu: CriuOpts,
    pub ignore_rootfs: bool,
    pub ignore_volumes: bool,
    pub ignore_static_ip: bool,
    pub ignore_static_mac: bool,
    pub publish: Vec<String>,
    pub pod: Option<String>,
    /// Show progress on a terminal.
    pub progress: bool,
}

/// What a restore did, for `--print-stats`.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub id: String,
    pub name: String,
    pub runtime_duration: Duration,
    pub restore_stats: Option<stasis_archive::RestoreStats>,
}

/// Memory pages an import left in its (seekable) archive.
pub(crate) struct InArchive {
    file: std::fs::File,
    pages: pagestream::ArchivePages,
}

/// Below this much memory, a lazy restore costs more (a daemon to start) than it saves.
/// `STASIS_LAZY_MIN_PAGES` (bytes) overrides it, for tests.
fn lazy_min_pages() -> u64 {
    std::env::var("STASIS_LAZY_MIN_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20)
}

/// Bytes of memory pages in a CRIU image directory (`pages-*.img`).
fn pages_size(images: &Path) -> u64 {
    std::fs::read_dir(images)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Whether imports restore memory lazily: when CRIU supports it here, unless
/// `STASIS_LAZY_PAGES=0`.
fn lazy_wanted() -> bool {
    static LAZY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LAZY.get_or_init(|| {
        std::env::var("STASIS_LAZY_PAGES").map_or(true, |v| v != "0")
            && criu::lazy_pages_supported()
    })
}

/// Moves a file, copying when source and target are on different filesystems.
fn move_file(from: &Path, to: &Path) -> Result<(), EngineError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(from, to).map_err(|e| EngineError::io(to, e))?;
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        Err(e) => Err(EngineError::io(to, e)),
    }
}

/// The host as the import rules see it.
struct HostWorld<'a> {
    engine: &'a Engine,
}

impl World for HostWorld<'_> {
    fn volume_exists(&self, name: &str) -> bool {
        self.engine
            .volume(name)
            .map(|v| v.is_some())
            .unwrap_or(true)
    }
    fn find_pod(&self, name_or_id: &str) -> Option<PodInfo> {
        let p = self.engine.pod(name_or_id).ok()?;
        Some(PodInfo {
            id: p.id.clone(),
            name: p.name.clone(),
            infra_id: p.infra_id.clone(),
            shares: stasis_archive::Shares {
                ipc: p.shares("ipc"),
                net: p.shares("net"),
                pid: p.shares("pid"),
                uts: p.shares("uts"),
                cgroup: p.shares("cgroup"),
            },
            cgroup_parent: p.cgroup_parent(),
            infra_mount_label: String::new(),
            infra_process_label: String::new(),
        })
    }
    fn container_name_taken(&self, name: &str) -> bool {
        db::name_taken(self.engine.conn(), name).unwrap_or(true)
    }
    fn container_id_taken(&self, id: &str) -> bool {
        db::get(self.engine.conn(), id)
            .map(|c| c.is_some())
            .unwrap_or(true)
    }
    fn criu_version(&self) -> u32 {
        criu::version().unwrap_or(0)
    }
    fn runtime_supports_pod_restore(&self) -> bool {
        criu::runtime_supports_pod_restore(&self.engine.opts.runc)
    }
    fn runtime_path(&self) -> String {
        self.engine.opts.runc.to_string_lossy().into_owned()
    }
}

impl Engine {
    /// Restores a container: from `opts.import` as a new container, else in place.
    pub fn restore(
        &self,
        key: Option<&str>,
        opts: RestoreOptions,
    ) -> Result<RestoreReport, EngineError> {
        let import_only = opts.name.is_some()
            || opts.pod.is_some()
            || !opts.publish.is_empty()
            || opts.ignore_rootfs
            || opts.ignore_volumes;
        match opts.import {
            Some(_) => self.restore_import(opts),
            None if import_only => Err(EngineError::msg(
                "--name, --pod, --publish, --ignore-rootfs and --ignore-volumes can only be used with --import",
            )),
            None => {
                let key = key.ok_or_else(|| {
                    EngineError::msg("give the container to restore, or --import FILE")
                })?;
                self.restore_in_place(key, &opts)
            }
        }
    }

    fn restore_in_place(
        &self,
        key: &str,
        opts: &RestoreOptions,
    ) -> Result<RestoreReport, EngineError> {
        let c = self.lookup(key)?;
        let _lock = self.lock(&c.id)?;
        let c = self.refresh(&c.id)?;
        if c.state == State::Running {
            return Err(EngineError::msg(format!(
                "container {} is running: nothing to restore",
                c.name
            )));
        }
        let inventory = self.layout.bundle(&c.id).join(names::CHECKPOINT_INVENTORY);
        if !inventory.exists() && c.checkpointed {
            return Err(EngineError::msg(format!(
                "the checkpoint of container {} was exported to an archive and not kept here: restore it with \"stasis restore --import FILE\" (checkpoint with --keep to keep a local copy too)",
                c.name
            )));
        }
        if !inventory.exists() {
            return Err(EngineError::msg(format!(
                "a complete checkpoint for container {} cannot be found, cannot restore: checkpoint it first (\"stasis checkpoint {}\")",
                c.name, c.name
            )));
        }
        let reuse = match self.read_network_status(&c.id) {
            Some(st) => reuse_from_status(&st, !opts.ignore_static_ip, !opts.ignore_static_mac),
            None => BTreeMap::new(),
        };
        let bundle = self.layout.bundle(&c.id);
        self.restore_prepared(c, opts, &reuse, &bundle, false, None)
    }

    /// Runs the restore of a container whose bundle holds its checkpoint. On failure the
    /// container's runtime resources are released (the caller decides about the container).
    /// `source` holds `checkpoint/` and `devshm-checkpoint.tar`: the bundle (in place), or
    /// the tmpfs scratch an archive was read into (`passing`: the images may be consumed).
    fn restore_prepared(
        &self,
        mut c: ContainerRecord,
        opts: &RestoreOptions,
        reuse: &BTreeMap<String, (Vec<IpAddr>, Option<String>)>,
        source: &Path,
        passing: bool,
        in_archive: Option<&InArchive>,
    ) -> Result<RestoreReport, EngineError> {
        let bundle = self.layout.bundle(&c.id);
        let run = (|| {
            // Memory pages first: a lazy-pages daemon comes up while the network is set up.
            let lazy_daemon = self.prepare_pages(&c, opts, source, passing, in_archive)?;
            crate::progress::mark("restore: pages prepared");
            // The network is set up while runc and CRIU restore (see `spawn_restore`).
            self.prepare_storage(&c)?;
            let network = self.network_beside(&c, reuse)?;
            crate::progress::mark("restore: runtime prepared (network set up beside runc)");
            let shm_tar = source.join(names::DEVSHM_CHECKPOINT_TAR);
            if shm_tar.exists() {
                let f = std::fs::File::open(&shm_tar).map_err(|e| EngineError::io(&shm_tar, e))?;
                stasis_tar::unpack(
                    std::io::BufReader::new(f),
                    &self.layout.shm(&c.id),
                    &UnpackOptions {
                        in_place: true,
                        max_bytes: Some(65_536_000),
                        ..Default::default()
                    },
                )
                .map_err(|e| EngineError::msg(format!("{}: {e}", shm_tar.display())))?;
            }
            let spec_path = bundle.join("config.json");
            let mut spec: serde_json::Value = match &c.config.spec {
                Some(s) => s.clone(),
                None => std::fs::read(&spec_path)
                    .map_err(|e| EngineError::io(&spec_path, e))
                    .and_then(|b| {
                        serde_json::from_slice(&b)
                            .map_err(|e| EngineError::msg(format!("{}: {e}", spec_path.display())))
                    })?,
            };
            self.relocate_spec(&c, &mut spec)?;
            self.write_spec(&c.id, &spec, network.as_ref().map(|n| n.gate_hook()))?;
            // Our CRIU configuration for this restore, if any (it replaces whatever a
            // checkpoint that died mid-way left behind); removed once runc is done.
            let criu_conf = self.criu_config_path(&c.id);
            let _ = std::fs::remove_file(&criu_conf);
            // (the network lock is the dump's choice: see `criu::config_file`)
            let images = source.join(names::CHECKPOINT_DIR);
            let conf = criu::restore_config_file(&images);
            if !conf.is_empty() {
                std::fs::write(&criu_conf, conf).map_err(|e| EngineError::io(&criu_conf, e))?;
            }
            let _ = std::fs::remove_file(bundle.join("restore.log"));
            let _ = std::fs::remove_file(bundle.join(names::STATS_RESTORE));
            let mut runtime_opts = Vec::new();
            if opts.criu.tcp_established {
                runtime_opts.push("--tcp-established".to_string());
            }
            if opts.criu.file_locks {
                runtime_opts.push("--file-locks".to_string());
            }
            if let Some(d) = lazy_daemon {
                d.wait_ready()
                    .map_err(|e| EngineError::msg(format!("restoring {}: {e}", c.name)))?;
                runtime_opts.push("--lazy-pages".to_string());
            } else if passing && !opts.keep {
                // CRIU punches holes in the page images as it restores: tmpfs memory is
                // handed back progressively instead of being held twice.
                runtime_opts.push("--auto-dedup".to_string());
            }
            crate::progress::mark("restore: pages ready, starting conmon/runc");
            let started = Instant::now();
            let pid = self.spawn_restore(self.conmon_args(&c, Some(images), runtime_opts), network);
            let _ = std::fs::remove_file(&criu_conf);
            let pid = pid?;
            Ok::<_, EngineError>((pid, started.elapsed()))
        })();
        let (pid, runtime_duration) = match run {
            Ok(v) => v,
            Err(e) => {
                criu::stop_lazy_pages(&self.lazy_pidfile(&c.id));
                let _ = self.runc.kill(&c.id, libc::SIGKILL, false);
                self.teardown(&c);
                // A network that could not be set up stopped CRIU at its gate: CRIU's log
                // only says that a hook failed.
                if matches!(e, EngineError::Network(_)) {
                    return Err(EngineError::msg(format!(
                        "restoring container {} failed: {e}",
                        c.name
                    )));
                }
                // CRIU's log: the restore's, or the lazy-pages daemon's when it failed first.
                let log = ["restore.log", "lazy-pages.log"]
                    .iter()
                    .map(|f| bundle.join(f))
                    .find(|p| p.exists())
                    .unwrap_or_else(|| bundle.join("restore.log"));
                let lines = criu::log_errors(&log, 6);
                let kept = self.keep_log(&c.id, &log);
                return Err(EngineError::msg(format!(
                    "restoring container {} failed: {e}{}{}{}",
                    c.name,
                    if lines.is_empty() { "" } else { "\n  " },
                    lines.join("\n  "),
                    kept.map(|p| format!(" (CRIU log: {})", p.display()))
                        .unwrap_or_default()
                )));
            }
        };
        crate::progress::mark("restore: runc restore done");
        c.state = State::Running;
        c.pid = Some(pid);
        c.conmon_pid = self.read_conmon_pid(&c.id);
        c.exit_code = None;
        c.restored = true;
        c.checkpointed = false;
        let now = crate::container::create::now();
        c.restored_at = Some(now.clone());
        c.started_at = Some(now);
        c.finished_at = None;
        db::update(self.conn(), &c)?;
        let restore_stats = std::fs::read(bundle.join(names::STATS_RESTORE))
            .ok()
            .and_then(|b| stasis_archive::read_restore_stats(&b).ok());
        if !opts.keep {
            let _ = std::fs::remove_dir_all(bundle.join(names::CHECKPOINT_DIR));
            for f in [
                "restore.log",
                "dump.log",
                names::STATS_DUMP,
                names::STATS_RESTORE,
                names::DEVSHM_CHECKPOINT_TAR,
                names::ROOTFS_DIFF_TAR,
                names::DELETED_FILES,
            ] {
                let _ = std::fs::remove_file(bundle.join(f));
            }
        }
        Ok(RestoreReport {
            id: c.id,
            name: c.name,
            runtime_duration,
            restore_stats,
        })
    }

    /// Gets the memory pages where CRIU reads them. Pages left in a seekable archive are
    /// served to a lazy restore by our feeder (large memory) or copied out of the archive;
    /// pages in the scratch space of an import are restored lazily when large. Returns the
    /// lazy-pages daemon being started, if any.
    fn prepare_pages(
        &self,
        c: &ContainerRecord,
        opts: &RestoreOptions,
        source: &Path,
        passing: bool,
        in_archive: Option<&InArchive>,
    ) -> Result<Option<criu::LazyStart>, EngineError> {
        let bundle = self.layout.bundle(&c.id);
        let images = source.join(names::CHECKPOINT_DIR);
        // (`lazy_wanted` asks CRIU, a process: only once the size makes it worth asking.)
        let lazy = |size: u64| passing && !opts.keep && size >= lazy_min_pages() && lazy_wanted();
        let failed = |e: std::io::Error| EngineError::msg(format!("restoring {}: {e}", c.name));
        if let Some(ia) = in_archive {
            let file = ia
                .file
                .try_clone()
                .map_err(|e| EngineError::io(&ia.pages.archive, e))?;
            if !lazy(ia.pages.total()) {
                pagestream::materialize(&ia.pages, file, &images)?;
                return Ok(None);
            }
            // The pages stay in the archive: CRIU's lazy-pages daemon asks our feeder for
            // them, after the process runs again.
            let plan = pagestream::prepare_lazy(&ia.pages, file, &images)?;
            let (ours, daemons) = std::os::unix::net::UnixStream::pair().map_err(failed)?;
            pagestream::spawn_feeder(
                &self.opts.exe,
                &ia.file,
                ours.into(),
                &images,
                &plan,
                &bundle.join("serve-pages.log"),
                &crate::container::start::cgroups_path(c),
            )?;
            let d = criu::spawn_lazy_pages(
                &images,
                &bundle,
                source,
                &self.lazy_pidfile(&c.id),
                Some(daemons.into()),
            )
            .map_err(failed)?;
            return Ok(Some(d));
        }
        if lazy(pages_size(&images)) {
            // Memory pages are delivered after the process runs again, by CRIU's lazy-pages
            // daemon, which then removes the scratch space it reads from.
            let d =
                criu::spawn_lazy_pages(&images, &bundle, source, &self.lazy_pidfile(&c.id), None)
                    .map_err(failed)?;
            return Ok(Some(d));
        }
        Ok(None)
    }

    /// Where the pid of a container's lazy-pages daemon is kept while it runs.
    pub(crate) fn lazy_pidfile(&self, id: &str) -> PathBuf {
        self.layout.run_dir(id).join("lazy-pages.pid")
    }

    /// Copies a CRIU log out of a bundle about to be removed; returns where it went.
    fn keep_log(&self, id: &str, log: &Path) -> Option<PathBuf> {
        if !log.exists() {
            return None;
        }
        let dir = self.layout.root.join("logs");
        std::fs::create_dir_all(&dir).ok()?;
        let dest = dir.join(format!(
            "restore-{}-{}.log",
            &id[..12.min(id.len())],
            std::process::id()
        ));
        std::fs::copy(log, &dest).ok()?;
        Some(dest)
    }

    fn restore_import(&self, mut opts: RestoreOptions) -> Result<RestoreReport, EngineError> {
        let publish = stasis_archive::parse_publish_list(&opts.publish)
            .map_err(|e| EngineError::msg(e.to_string()))?;
        let req = RestoreRequest {
            name: opts.name.clone(),
            pod: opts.pod.clone(),
            ignore_volumes: opts.ignore_volumes,
            ignore_static_ip: opts.ignore_static_ip,
            ignore_static_mac: opts.ignore_static_mac,
            publish,
            ignore_rootfs: opts.ignore_rootfs,
        };
        let mut src_size = None;
        // An archive file with a seek table (ours) is read with its memory pages skipped:
        // they are served or copied from the archive later (see `pagestream`).
        let mut seekable = None;
        let (reader, label): (Box<dyn Read + Send>, String) = match opts.import.take() {
            Some(ImportSource::File(p)) => {
                let mut f = std::fs::File::open(&p).map_err(|e| {
                    EngineError::msg(format!(
                        "cannot open checkpoint archive {}: {e}",
                        p.display()
                    ))
                })?;
                src_size = f.metadata().ok().map(|m| m.len());
                let table = stasis_tar::frames::SeekTable::read_from(&mut f)
                    .map_err(|e| EngineError::msg(format!("archive {}: {e}", p.display())))?;
                f.seek(std::io::SeekFrom::Start(0))
                    .map_err(|e| EngineError::io(&p, e))?;
                if let Some(t) = table {
                    let keep = f.try_clone().map_err(|e| EngineError::io(&p, e))?;
                    seekable = Some((p.clone(), keep, t));
                }
                (Box::new(f), p.display().to_string())
            }
            Some(ImportSource::Reader(r)) => (r, "standard input".into()),
            None => return Err(EngineError::msg("no archive to import")),
        };

        crate::progress::mark("restore: start");
        // 1. One pass over the archive; validation as soon as the head has passed.
        // The archive is read once into scratch space: tmpfs when it has room (CRIU then
        // restores from memory), else the store's disk.
        let need = match &src_size {
            Some(n) => n.saturating_mul(3),
            None => 2 << 30,
        };
        let scratch = match tmpfs_scratch(need) {
            Some(s) => s,
            None => tempdir_in(&self.layout.tmp_dir())?,
        };
        let world = HostWorld { engine: self };
        let mut plan: Option<ImportPlan> = None;
        let mut image_err: Option<EngineError> = None;
        let mut image_id = String::new();
        let progress =
            crate::progress::Progress::new(opts.progress, &format!("importing {label}"), src_size);
        let reader = crate::progress::CountingReader {
            inner: reader,
            progress: progress.clone(),
        };
        let on_head = |config: &ContainerConfig, spec: &serde_json::Value| {
            let p = stasis_archive::plan_import(config.clone(), spec.clone(), &req, &world)?;
            match self.image_for_restore(&p.config) {
                Ok(id) => image_id = id,
                Err(e) => {
                    let msg = e.to_string();
                    image_err = Some(e);
                    return Err(stasis_archive::ArchiveIoError::Io {
                        context: "restore refused".into(),
                        source: std::io::Error::other(msg),
                    }
                    .into());
                }
            }
            plan = Some(p);
            Ok(())
        };
        let mut in_archive = None;
        let read = match seekable {
            Some((path, file, table)) => {
                let dec = stasis_tar::frames::SeekableDecoder::new(
                    file.try_clone().map_err(|e| EngineError::io(&path, e))?,
                    table,
                );
                let mut skipper = stasis_archive::pages::PagesSkipper::new(dec);
                let read = stasis_archive::read_archive(
                    crate::progress::CountingReader {
                        inner: &mut skipper,
                        progress: progress.clone(),
                    },
                    &label,
                    scratch.path(),
                    on_head,
                );
                if !skipper.locations().is_empty() {
                    in_archive = Some(InArchive {
                        pages: pagestream::ArchivePages::new(path, skipper.locations()),
                        file,
                    });
                }
                read
            }
            None => stasis_archive::read_compressed_archive(
                std::io::BufReader::with_capacity(1 << 20, reader),
                &label,
                scratch.path(),
                on_head,
            )
            .map(|(_, contents)| contents),
        };
        crate::progress::mark("restore: archive read");
        progress.finish();
        if let Some(e) = image_err {
            return Err(e);
        }
        let contents = read.map_err(|e| EngineError::msg(e.to_string()))?;
        let plan =
            plan.ok_or_else(|| EngineError::msg(format!("archive {label}: no config.dump")))?;

        // 2. The container, under the archive's ID or a new one.
        let id = if plan.new_name || plan.config.id.is_empty() {
            crate::names::new_id()
        } else {
            plan.config.id.clone()
        };
        let mut config = crate::libpod::from_libpod(&plan.config, &plan.spec);
        if config
            .networks
            .iter()
            .any(|n| n.network == stasis_network::DEFAULT_NETWORK)
        {
            self.networks.ensure_default()?;
        }
        if let Some(pod) = &plan.pod {
            // Joined to the pod: its cgroup, and its infra container's namespaces.
            config.pod = Some(pod.id.clone());
            config.pod_infra = Some(pod.infra_id.clone());
            config.cgroup_parent = pod.cgroup_parent.clone();
            if config.pod_shares.iter().any(|s| s == "net") {
                let infra = self.lookup(&pod.infra_id)?;
                config.netns = infra.config.netns.clone();
                config.network_mode = format!("container:{}", infra.id);
                config.networks.clear();
                config.ports.clear();
            }
        }
        if config.network_mode.starts_with("container:") {
            // (set above for pods)
        } else {
            config.netns = Some(
                self.layout
                    .netns_dir()
                    .join(format!("stasis-{}", &id[..12]))
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        self.preflight_network(&config)?;

        // Volumes of the archive: made now (they were checked absent, or --ignore-volumes
        // reuses existing ones), removed again if the restore fails.
        let mut created_volumes = Vec::new();
        for v in &plan.config.named_volumes {
            match self.volume_create(Some(&v.name), opts.ignore_volumes) {
                Ok((_, true)) => created_volumes.push(v.name.clone()),
                Ok((_, false)) => {}
                Err(e) => {
                    for n in &created_volumes {
                        let _ = self.volume_delete(n);
                    }
                    return Err(e);
                }
            }
        }
        let drop_volumes = |engine: &Engine| {
            for n in &created_volumes {
                let _ = engine.volume_delete(n);
            }
        };
        let store = stasis_state::FileLock::exclusive(&self.layout.store_lock())?;
        let created =
            self.create_from_config(id.clone(), image_id, config, Some(plan.config.name.clone()));
        drop(store);
        let c = match created {
            Ok(c) => c,
            Err(e) => {
                drop_volumes(self);
                return Err(e);
            }
        };
        crate::progress::mark("restore: container created");
        let lock = self.lock(&c.id)?;
        let result = self.finish_import(
            &c,
            &plan,
            &contents,
            scratch.path(),
            &opts,
            in_archive.as_ref(),
        );
        if result.is_ok() && self.lazy_pidfile(&c.id).exists() {
            // The lazy-pages daemon reads the scratch space and removes it when done.
            scratch.keep();
        }
        match result {
            Ok(report) => Ok(report),
            Err(e) => {
                // Nothing of a failed restore stays behind: container, leases, volumes.
                drop(lock);
                let rm = self.remove(&c.id, true);
                drop_volumes(self);
                if let Err(rm) = rm {
                    return Err(EngineError::msg(format!(
                        "{e}; cleaning up failed too: {rm}"
                    )));
                }
                Err(e)
            }
        }
    }

    /// Steps 3–6 of the import flow, for a container that now exists.
    fn finish_import(
        &self,
        c: &ContainerRecord,
        plan: &ImportPlan,
        contents: &stasis_archive::ArchiveContents,
        scratch: &Path,
        opts: &RestoreOptions,
        in_archive: Option<&InArchive>,
    ) -> Result<RestoreReport, EngineError> {
        // 3. The small files go to the bundle; CRIU's images stay in the scratch space they
        //    were read into (tmpfs when it had room) and are restored from there.
        let bundle = self.layout.bundle(&c.id);
        for name in [names::STATS_DUMP, names::NETWORK_STATUS] {
            let from = scratch.join(name);
            if from.exists() {
                move_file(&from, &bundle.join(name))?;
            }
        }
        let log = scratch.join(names::CTR_LOG);
        if log.exists() {
            move_file(&log, &self.layout.log_path(&c.id))?;
        }
        if !scratch.join(names::CHECKPOINT_INVENTORY).exists() {
            return Err(EngineError::msg(format!(
                "archive has no {}: not a complete checkpoint",
                names::CHECKPOINT_INVENTORY
            )));
        }
        let _ = contents;

        // 4. Root filesystem changes, on the freshly mounted overlay; volume contents.
        self.prepare_storage(c)?;
        if !opts.ignore_rootfs {
            self.apply_rootfs_changes(c, scratch)?;
        }
        if !opts.ignore_volumes {
            for v in &plan.config.named_volumes {
                let tar = scratch.join(names::volume_tar(&v.name));
                if !tar.exists() {
                    return Err(EngineError::msg(format!(
                        "archive has no {}: the content of volume {} is missing; use --ignore-volumes to restore without it",
                        names::volume_tar(&v.name),
                        v.name
                    )));
                }
                let f = std::fs::File::open(&tar).map_err(|e| EngineError::io(&tar, e))?;
                stasis_tar::unpack(
                    std::io::BufReader::with_capacity(1 << 20, f),
                    &self.volume_mountpoint(&v.name),
                    &UnpackOptions {
                        in_place: true,
                        preserve_ownership: true,
                        ..Default::default()
                    },
                )
                .map_err(|e| EngineError::msg(format!("{}: {e}", names::volume_tar(&v.name))))?;
            }
        }

        crate::progress::mark("restore: rootfs and volumes applied");
        // 5. Restore, reusing the archive's addresses where the rules allow.
        let reuse = match (plan.reuse_network_status, self.read_network_status(&c.id)) {
            (true, Some(st)) => reuse_from_status(&st, plan.reuse_ip, plan.reuse_mac)
                .into_iter()
                .map(|(net, a)| (from_podman_network(&net), a))
                .filter(|(net, (ips, _))| self.addresses_fit(net, ips))
                .collect(),
            _ => BTreeMap::new(),
        };
        let report = self.restore_prepared(c.clone(), opts, &reuse, scratch, true, in_archive)?;
        if opts.keep {
            let to = bundle.join(names::CHECKPOINT_DIR);
            copy_tree(&scratch.join(names::CHECKPOINT_DIR), &to)
                .map_err(|e| EngineError::io(&to, e))?;
            let shm = scratch.join(names::DEVSHM_CHECKPOINT_TAR);
            if shm.exists() {
                move_file(&shm, &bundle.join(names::DEVSHM_CHECKPOINT_TAR))?;
            }
        }

        // 6. Podman's final checks.
        stasis_archive::check_restored(plan, &report.name, &report.id)
            .map_err(|e| EngineError::msg(e.to_string()))?;
        Ok(report)
    }

    /// Checks, before anything is created, what the network setup would refuse: networks that
    /// do not exist here, static addresses another container holds, host ports in use.
    fn preflight_network(&self, config: &crate::config::CreateConfig) -> Result<(), EngineError> {
        let leases = self.networks.leases()?;
        for n in &config.networks {
            self.networks.get(&n.network)?;
            for ip in &n.static_ips {
                if let Some(l) = leases
                    .iter()
                    .find(|l| l.network == n.network && &l.ip == ip)
                {
                    return Err(stasis_network::NetworkError::IpInUse {
                        ip: ip.clone(),
                        container: l.container_id.clone(),
                    }
                    .into());
                }
            }
            if let Some(mac) = &n.static_mac {
                let mac = mac.to_ascii_lowercase();
                if let Some(l) = leases.iter().find(|l| {
                    l.network == n.network
                        && l.mac.as_deref().map(str::to_ascii_lowercase) == Some(mac.clone())
                }) {
                    return Err(EngineError::msg(format!(
                        "MAC address {mac} is already in use by container {} on network {:?}: use --ignore-static-mac",
                        l.container_id, n.network
                    )));
                }
            }
        }
        for p in &config.ports {
            let p = stasis_network::ports::normalize(p)?;
            stasis_network::ports::check_free(&p)?;
        }
        Ok(())
    }

    /// Whether `ips` all lie in a subnet of our network `net` (a Podman archive's addresses
    /// on its own default network do not fit ours, and are then not reused).
    fn addresses_fit(&self, net: &str, ips: &[IpAddr]) -> bool {
        let Ok(n) = self.networks.get(net) else {
            return false;
        };
        ips.iter().all(|ip| {
            n.subnets.iter().any(|s| match ip {
                IpAddr::V4(v4) => stasis_network::ipam::Cidr::parse(&s.subnet)
                    .map(|c| c.contains(*v4))
                    .unwrap_or(false),
                IpAddr::V6(_) => false,
            })
        })
    }

    /// Applies `rootfs-diff.tar` and `deleted.files` from the bundle onto the mounted rootfs.
    fn apply_rootfs_changes(&self, c: &ContainerRecord, from: &Path) -> Result<(), EngineError> {
        let bundle = from;
        let merged = self.layout.merged(&c.id);
        let diff = bundle.join(names::ROOTFS_DIFF_TAR);
        if diff.exists() {
            let f = std::fs::File::open(&diff).map_err(|e| EngineError::io(&diff, e))?;
            let (_, r) = stasis_tar::decompress(std::io::BufReader::with_capacity(1 << 20, f))
                .map_err(|e| EngineError::msg(format!("{}: {e}", names::ROOTFS_DIFF_TAR)))?;
            stasis_tar::unpack(
                r,
                &merged,
                &UnpackOptions {
                    in_place: true,
                    preserve_ownership: true,
                    ..Default::default()
                },
            )
            .map_err(|e| EngineError::msg(format!("{}: {e}", names::ROOTFS_DIFF_TAR)))?;
        }
        let deleted = bundle.join(names::DELETED_FILES);
        if deleted.exists() {
            let bytes = std::fs::read(&deleted).map_err(|e| EngineError::io(&deleted, e))?;
            let list = stasis_archive::parse_deleted_files(&bytes)
                .map_err(|e| EngineError::msg(e.to_string()))?;
            for path in list {
                let target = stasis_tar::secure_join(&merged, &path)
                    .map_err(|e| EngineError::msg(format!("{}: {e}", names::DELETED_FILES)))?;
                if target == merged {
                    continue;
                }
                let res = match std::fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&target),
                    Ok(_) => std::fs::remove_file(&target),
                    Err(_) => Ok(()),
                };
                res.map_err(|e| EngineError::io(&target, e))?;
            }
        }
        Ok(())
    }

    /// The image a restored container runs on: the archive's image ID when present here,
    /// else `rootfsImageName` pulled (only when missing), which must have that same ID.
    fn image_for_restore(&self, config: &ContainerConfig) -> Result<String, EngineError> {
        if let Some(img) = self.images.get(&config.rootfs_image_id)? {
            return Ok(img.id);
        }
        let name = &config.rootfs_image_name;
        eprintln!(
            "image {} ({}) of the checkpoint is not here: pulling it",
            name,
            &config.rootfs_image_id[..12.min(config.rootfs_image_id.len())]
        );
        let img = self
            .images
            .pull(name, &stasis_image::PullOptions::default())
            .map_err(|e| {
                EngineError::msg(format!(
                    "the checkpoint's image {} ({}) is not here and cannot be pulled: {e}; load it with \"stasis image load -i FILE\"",
                    name, config.rootfs_image_id
                ))
            })?;
        if img.id != config.rootfs_image_id {
            return Err(EngineError::msg(format!(
                "pulled {} has ID {} but the checkpoint needs image {}: load the exact image with \"stasis image load -i FILE\"",
                name, img.id, config.rootfs_image_id
            )));
        }
        Ok(img.id)
    }
}
