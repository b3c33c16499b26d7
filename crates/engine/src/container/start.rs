//! `start`: mount the root filesystem, make the network namespace and the host-side files,
//! write the runtime spec, and run the container under conmon.

use std::path::{Path, PathBuf};

use crate::conmon::{self, ConmonArgs};
use crate::db::{self, ContainerRecord, State};
use crate::spec::{self, SpecInput};
use crate::{mounts, netns, user, Engine, EngineError};

impl Engine {
    /// Starts a created or exited container. Starting a running container does nothing.
    pub fn start(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        let c = self.lookup(key)?;
        let _lock = self.lock(&c.id)?;
        let mut c = self.refresh(&c.id)?;
        if c.state == State::Running {
            return Ok(c);
        }
        if c.checkpointed {
            return Err(EngineError::msg(format!(
                "container {} is checkpointed: restore it with \"stasis restore {}\"",
                c.name, c.name
            )));
        }
        let result = (|| {
            self.prepare_runtime(&c)?;
            let spec = match &c.config.spec {
                // Restored containers run from their dumped spec, relocated to this host.
                Some(saved) => {
                    let mut s = saved.clone();
                    crate::spec::relocate(&mut s, &self.relocation(&c))
                        .map_err(|e| EngineError::msg(format!("container {}: {e}", c.name)))?;
                    s
                }
                None => self.generate_spec(&c)?,
            };
            self.write_spec(&c.id, &spec)?;
            let pid = conmon::spawn(&self.conmon_args(&c, None, Vec::new()))?;
            self.runc.start(&c.id)?;
            Ok::<i32, EngineError>(pid)
        })();
        match result {
            Ok(pid) => {
                c.state = State::Running;
                c.pid = Some(pid);
                c.conmon_pid = self.read_conmon_pid(&c.id);
                c.exit_code = None;
                c.started_at = Some(crate::container::create::now());
                c.finished_at = None;
                db::update(self.conn(), &c)?;
                Ok(c)
            }
            Err(e) => {
                let _ = self.runc.kill(&c.id, libc::SIGKILL, false);
                self.teardown(&c);
                Err(self.explain_start_error(&c, e))
            }
        }
    }

    /// Turns runc's "executable file not found" into a message naming the command and image.
    fn explain_start_error(&self, c: &ContainerRecord, e: EngineError) -> EngineError {
        let text = e.to_string();
        if text.contains("executable file not found") || text.contains("no such file or directory")
        {
            if let Some(cmd) = c.config.args.first() {
                return EngineError::msg(format!(
                    "cannot start container {}: command \"{}\" not found in image {}: {}",
                    c.name, cmd, c.config.image_name, text
                ));
            }
        }
        e
    }

    /// Everything outside runc that a container needs before `runc create` or `runc restore`:
    /// runtime directory, rootfs overlay, /dev/shm, network namespace, hosts/hostname/resolv.conf.
    pub(crate) fn prepare_runtime(&self, c: &ContainerRecord) -> Result<(), EngineError> {
        let run = self.layout.run_dir(&c.id);
        std::fs::create_dir_all(&run).map_err(|e| EngineError::io(&run, e))?;
        let _ = std::fs::remove_file(self.layout.exit_file(&c.id));
        let _ = std::fs::remove_file(self.layout.pidfile(&c.id));
        self.runc.delete(&c.id, true)?;

        let merged = self.layout.merged(&c.id);
        if !crate::layout::is_mountpoint(&merged) {
            let image = self.images.get(&c.image_id)?.ok_or_else(|| {
                EngineError::msg(format!(
                    "image {} of container {} is missing: load or pull it again",
                    c.image_id, c.name
                ))
            })?;
            let layers = self.images.layer_dirs(&image)?;
            mounts::mount_overlay(
                &layers,
                &self.layout.upper(&c.id),
                &self.layout.work(&c.id),
                &merged,
            )
            .map_err(|e| EngineError::io(&merged, e))?;
        }
        let shm = self.layout.shm(&c.id);
        if !crate::layout::is_mountpoint(&shm) {
            mounts::mount_shm(&shm).map_err(|e| EngineError::io(&shm, e))?;
        }
        if let Some(ns) = &c.config.netns {
            let ns = Path::new(ns);
            if !crate::layout::is_mountpoint(ns) {
                netns::create(ns).map_err(|e| EngineError::io(ns, e))?;
            }
        }
        let hosts = format!(
            "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost localhost.localdomain\n127.0.1.1\t{} {}\n",
            c.config.hostname, c.name
        );
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for (file, content) in [
            ("hosts", hosts),
            ("hostname", format!("{}\n", c.config.hostname)),
            ("resolv.conf", resolv),
            (".containerenv", String::new()),
        ] {
            let p = run.join(file);
            std::fs::write(&p, content).map_err(|e| EngineError::io(&p, e))?;
        }
        Ok(())
    }

    /// The runtime spec of a fresh start.
    pub(crate) fn generate_spec(
        &self,
        c: &ContainerRecord,
    ) -> Result<serde_json::Value, EngineError> {
        let merged = self.layout.merged(&c.id);
        let read = |p: &str| -> String {
            stasis_tar::secure_join(&merged, p)
                .ok()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default()
        };
        let ids = user::resolve(&c.config.user, &read("/etc/passwd"), &read("/etc/group"))
            .map_err(|why| EngineError::msg(format!("container {}: {why}", c.name)))?;
        let mut env = c.config.env.clone();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", ids.home));
        }
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push(format!("HOSTNAME={}", c.config.hostname));
        }
        if !env.iter().any(|e| e.starts_with("container=")) {
            env.push("container=stasis".into());
        }
        let run = self.layout.run_dir(&c.id);
        let input = SpecInput {
            args: c.config.args.clone(),
            env,
            cwd: c.config.workdir.clone(),
            uid: ids.uid,
            gid: ids.gid,
            additional_gids: Vec::new(),
            hostname: c.config.hostname.clone(),
            rootfs: merged,
            cgroups_path: format!("{}/stasis-{}", c.config.cgroup_parent, c.id),
            netns_path: c.config.netns.as_ref().map(PathBuf::from),
            hosts_file: run.join("hosts"),
            hostname_file: run.join("hostname"),
            resolv_file: run.join("resolv.conf"),
            containerenv_file: run.join(".containerenv"),
            shm_dir: self.layout.shm(&c.id),
            nofile: capped(rlimit(libc::RLIMIT_NOFILE), 1_048_576),
            // Podman (as root) runs its exec sessions with at most 32768 processes; a larger
            // limit in the spec makes `podman exec` fail after Podman restores our archive.
            nproc: capped(rlimit(libc::RLIMIT_NPROC), 32_768),
            annotations: if c.config.auto_remove {
                vec![("io.podman.annotations.autoremove".into(), "TRUE".into())]
            } else {
                Vec::new()
            },
            stop_signal: c.config.stop_signal,
        };
        let spec = spec::generate(&input).map_err(|e| {
            EngineError::msg(format!("generating the runtime spec of {}: {e}", c.name))
        })?;
        serde_json::to_value(&spec)
            .map_err(|e| EngineError::msg(format!("serialising the runtime spec: {e}")))
    }

    /// This host's paths for the container's spec.
    pub(crate) fn relocation(&self, c: &ContainerRecord) -> crate::spec::Relocation {
        let run = self.layout.run_dir(&c.id);
        crate::spec::Relocation {
            rootfs: self.layout.merged(&c.id),
            cgroups_path: format!("{}/stasis-{}", c.config.cgroup_parent, c.id),
            netns_path: c.config.netns.as_ref().map(PathBuf::from),
            hosts_file: run.join("hosts"),
            hostname_file: run.join("hostname"),
            resolv_file: run.join("resolv.conf"),
            containerenv_file: run.join(".containerenv"),
            shm_dir: self.layout.shm(&c.id),
        }
    }

    pub(crate) fn write_spec(&self, id: &str, spec: &serde_json::Value) -> Result<(), EngineError> {
        let p = self.layout.bundle(id).join("config.json");
        let body = serde_json::to_vec_pretty(spec)
            .map_err(|e| EngineError::msg(format!("serialising {}: {e}", p.display())))?;
        std::fs::write(&p, body).map_err(|e| EngineError::io(&p, e))
    }

    /// conmon's arguments for this container; `restore` = the CRIU image directory.
    pub(crate) fn conmon_args(
        &self,
        c: &ContainerRecord,
        restore: Option<PathBuf>,
        runtime_opts: Vec<String>,
    ) -> ConmonArgs {
        ConmonArgs {
            conmon: self.opts.conmon.clone(),
            id: c.id.clone(),
            name: c.name.clone(),
            runtime: self.opts.runc.clone(),
            runtime_root: self.layout.runc_root(),
            bundle: self.layout.bundle(&c.id),
            pidfile: self.layout.pidfile(&c.id),
            conmon_pidfile: self.layout.conmon_pidfile(&c.id),
            log_path: self.layout.log_path(&c.id),
            exit_dir: self.layout.exit_dir(),
            socket_dir: self.layout.socket_dir(),
            exit_command: vec![
                self.opts.exe.to_string_lossy().into_owned(),
                "--root".into(),
                self.layout.root.to_string_lossy().into_owned(),
                "--runroot".into(),
                self.layout.runroot.to_string_lossy().into_owned(),
                "container".into(),
                "cleanup".into(),
                c.id.clone(),
            ],
            restore,
            runtime_opts,
        }
    }

    pub(crate) fn read_conmon_pid(&self, id: &str) -> Option<i32> {
        std::fs::read_to_string(self.layout.conmon_pidfile(id))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

fn capped((soft, hard): (u64, u64), max: u64) -> (u64, u64) {
    (soft.min(max), hard.min(max))
}

/// The caller's own (soft, hard) limit: containers inherit what the caller may give.
fn rlimit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return (1024, 1024);
    }
    let clamp = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::from(u32::MAX)
        } else {
            v
        }
    };
    (clamp(r.rlim_cur), clamp(r.rlim_max))
}
