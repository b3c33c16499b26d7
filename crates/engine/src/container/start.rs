//! `start`: mount the root filesystem, make the network namespace and the host-side files,
//! write the runtime spec, and run the container under conmon.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::conmon::{self, ConmonArgs};
use crate::container::mounts_and_networks::set_up_network;
use crate::db::{self, ContainerRecord, State};
use crate::spec::{self, SpecInput};
use crate::{mounts, netns, user, Engine, EngineError};

/// The spec annotation naming the CRIU configuration file runc passes to CRIU.
pub(crate) const CRIU_CONFIG_ANNOTATION: &str = "org.criu.config";

impl Engine {
    /// Starts a created or exited container. Starting a running container does nothing.
    pub fn start(&self, key: &str) -> Result<ContainerRecord, EngineError> {
        let c = self.lookup(key)?;
        // A pod member needs its infra container running; started before this container's
        // lock is taken (a process never holds two container locks).
        if let (Some(pod), false) = (&c.config.pod, c.config.infra) {
            self.running_infra(pod)?;
        }
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
            self.prepare_runtime(&c, &BTreeMap::new())?;
            if c.started_at.is_none() && !c.restored {
                self.copy_up_volumes(&c)?;
            }
            let spec = match &c.config.spec {
                // Restored containers run from their dumped spec, relocated to this host.
                Some(saved) => {
                    let mut s = saved.clone();
                    self.relocate_spec(&c, &mut s)?;
                    s
                }
                None => self.generate_spec(&c)?,
            };
            self.write_spec(&c.id, &spec, None)?;
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
    /// storage (rootfs overlay, /dev/shm) and network (namespace, netavark, host files).
    /// `reuse` holds addresses to ask for again (restore).
    pub(crate) fn prepare_runtime(
        &self,
        c: &ContainerRecord,
        reuse: &BTreeMap<String, (Vec<IpAddr>, Option<String>)>,
    ) -> Result<(), EngineError> {
        self.prepare_storage(c)?;
        self.prepare_network(c, reuse)
    }

    /// Runtime directory, rootfs overlay and /dev/shm; bind sources checked.
    pub(crate) fn prepare_storage(&self, c: &ContainerRecord) -> Result<(), EngineError> {
        let run = self.layout.run_dir(&c.id);
        std::fs::create_dir_all(&run).map_err(|e| EngineError::io(&run, e))?;
        let _ = std::fs::remove_file(self.layout.exit_file(&c.id));
        let _ = std::fs::remove_file(self.layout.pidfile(&c.id));
        self.runc.delete(&c.id, true)?;
        for b in &c.config.binds {
            if !Path::new(&b.source).exists() {
                return Err(EngineError::msg(format!(
                    "bind mount source {} of container {} (at {}) does not exist: create it first",
                    b.source, c.name, b.dest
                )));
            }
        }
        for v in &c.config.volumes {
            let p = self.volume_mountpoint(&v.name);
            if !p.is_dir() {
                return Err(EngineError::msg(format!(
                    "volume {} of container {} is missing: create it with \"stasis volume create {}\"",
                    v.name, c.name, v.name
                )));
            }
        }

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
        Ok(())
    }

    /// Network namespace, netavark setup (once), and hosts/hostname/resolv.conf/.containerenv.
    pub(crate) fn prepare_network(
        &self,
        c: &ContainerRecord,
        reuse: &BTreeMap<String, (Vec<IpAddr>, Option<String>)>,
    ) -> Result<(), EngineError> {
        let run = self.layout.run_dir(&c.id);
        std::fs::create_dir_all(&run).map_err(|e| EngineError::io(&run, e))?;
        let shared_net = c.config.network_mode.strip_prefix("container:");
        if let (Some(ns), None) = (&c.config.netns, shared_net) {
            let ns = Path::new(ns);
            if !crate::layout::is_mountpoint(ns) {
                netns::create(ns).map_err(|e| EngineError::io(ns, e))?;
            }
        }
        let status = if let Some(owner) = shared_net {
            self.read_network_status(owner)
        } else if self.networks.leases_of(&c.id)?.is_empty() {
            match self.setup_requests(c, reuse) {
                Some((attach, fresh)) => Some(set_up_network(
                    &self.networks,
                    &c.name,
                    &attach,
                    fresh.as_ref(),
                    &self.network_status_path(&c.id),
                )?),
                None => None,
            }
        } else {
            self.read_network_status(&c.id)
        };
        write_host_files(&run, c, status.as_ref())
    }

    /// For a restore: [`Engine::prepare_network`], but with its netavark setup left to run
    /// beside `runc restore` (see [`Engine::spawn_restore`]) when it can: the namespace and
    /// provisional host files (the bind sources runc checks) are made now.
    pub(crate) fn network_beside(
        &self,
        c: &ContainerRecord,
        reuse: &BTreeMap<String, (Vec<IpAddr>, Option<String>)>,
    ) -> Result<Option<NetworkBeside>, EngineError> {
        let shared = c.config.network_mode.starts_with("container:");
        let requests = self.setup_requests(c, reuse);
        let (Some((attach, fresh)), false, Some(ns)) = (requests, shared, &c.config.netns) else {
            self.prepare_network(c, reuse)?;
            return Ok(None);
        };
        let run = self.layout.run_dir(&c.id);
        std::fs::create_dir_all(&run).map_err(|e| EngineError::io(&run, e))?;
        let gate = match crate::runc::RestoreGate::new(&run, &self.layout.runc_root()) {
            Some(g) if self.networks.leases_of(&c.id)?.is_empty() => g,
            _ => {
                self.prepare_network(c, reuse)?;
                return Ok(None);
            }
        };
        let ns = Path::new(ns);
        if !crate::layout::is_mountpoint(ns) {
            netns::create(ns).map_err(|e| EngineError::io(ns, e))?;
        }
        write_host_files(&run, c, None)?;
        Ok(Some(NetworkBeside {
            c: c.clone(),
            attach,
            fresh,
            status_path: self.network_status_path(&c.id),
            run,
            gate,
        }))
    }

    /// Runs conmon for a restore; with `network` (from [`Engine::network_beside`]), its
    /// netavark setup runs meanwhile. CRIU waits for it at `setup-namespaces`, before
    /// anything of the container is restored (the gate's prestart hook, which the caller
    /// wrote into `config.json`): a restore that took 170 ms gains the 40 ms of a setup.
    pub(crate) fn spawn_restore(
        &self,
        args: ConmonArgs,
        network: Option<NetworkBeside>,
    ) -> Result<i32, EngineError> {
        let Some(net) = network else {
            return Ok(conmon::spawn(&args)?);
        };
        let networks = &self.networks;
        let (spawned, set_up) = std::thread::scope(|s| {
            let setup = s.spawn(|| {
                let res = net.run(networks);
                net.gate.open(res.is_ok());
                crate::progress::mark("restore: network set up, gate open");
                res
            });
            let spawned = conmon::spawn(&args);
            let set_up = setup
                .join()
                .unwrap_or_else(|_| Err(EngineError::msg("network setup panicked")));
            (spawned, set_up)
        });
        // The network's own error tells more than CRIU's "action script failed".
        set_up?;
        Ok(spawned?)
    }

    /// First start: a volume that is still empty gets what the image has at its destination,
    /// as Podman's copy-up does (read through the mounted rootfs, symlinks resolved inside it).
    fn copy_up_volumes(&self, c: &ContainerRecord) -> Result<(), EngineError> {
        let merged = self.layout.merged(&c.id);
        for v in &c.config.volumes {
            let vol = self.volume_mountpoint(&v.name);
            let empty = std::fs::read_dir(&vol)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                continue;
            }
            let Ok(src) = stasis_tar::secure_join(&merged, &v.dest) else {
                continue;
            };
            if src.is_dir() {
                crate::container::checkpoint::copy_tree(&src, &vol).map_err(|e| {
                    EngineError::msg(format!(
                        "copying {} of image {} into volume {}: {e}",
                        v.dest, c.config.image_name, v.name
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// The container's saved network.status, if any.
    pub(crate) fn read_network_status(&self, id: &str) -> Option<stasis_archive::NetworkStatus> {
        let bytes = std::fs::read(self.network_status_path(id)).ok()?;
        match stasis_archive::network::parse(&bytes) {
            stasis_archive::NetworkStatusRead::Status(s) => Some(s),
            _ => None,
        }
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
        let input = SpecInput {
            args: c.config.args.clone(),
            env,
            cwd: c.config.workdir.clone(),
            uid: ids.uid,
            gid: ids.gid,
            additional_gids: Vec::new(),
            hostname: c.config.hostname.clone(),
            host: self.relocation(c),
            nofile: capped(rlimit(libc::RLIMIT_NOFILE), 1_048_576),
            // Podman (as root) runs its exec sessions with at most 32768 processes; a larger
            // limit in the spec makes `podman exec` fail after Podman restores our archive.
            nproc: capped(rlimit(libc::RLIMIT_NPROC), 32_768),
            annotations: {
                let mut a = Vec::new();
                if c.config.auto_remove {
                    a.push(("io.podman.annotations.autoremove".into(), "TRUE".into()));
                }
                if let (Some(infra), false) = (&c.config.pod_infra, c.config.infra) {
                    a.push(("io.kubernetes.cri-o.SandboxID".into(), infra.clone()));
                }
                a
            },
            stop_signal: c.config.stop_signal,
        };
        let spec = spec::generate(&input).map_err(|e| {
            EngineError::msg(format!("generating the runtime spec of {}: {e}", c.name))
        })?;
        let mut v = serde_json::to_value(&spec)
            .map_err(|e| EngineError::msg(format!("serialising the runtime spec: {e}")))?;
        if let Some(m) = v["mounts"].as_array_mut() {
            m.extend(super::mounts_and_networks::extra_mounts(
                self,
                &c.config.volumes,
                &c.config.binds,
            ));
        }
        if c.config.network_mode == "host" {
            if let Some(ns) = v["linux"]["namespaces"].as_array_mut() {
                ns.retain(|n| n["type"] != "network");
            }
        }
        crate::spec::join_namespaces(&mut v, &self.pod_namespaces(c)?);
        Ok(v)
    }

    /// This host's paths for the container's spec.
    pub(crate) fn relocation(&self, c: &ContainerRecord) -> crate::spec::Relocation {
        let run = self.layout.run_dir(&c.id);
        crate::spec::Relocation {
            rootfs: self.layout.merged(&c.id),
            cgroups_path: cgroups_path(c),
            netns_path: c.config.netns.as_ref().map(PathBuf::from),
            hosts_file: run.join("hosts"),
            hostname_file: run.join("hostname"),
            resolv_file: run.join("resolv.conf"),
            containerenv_file: run.join(".containerenv"),
            shm_dir: self.layout.shm(&c.id),
            volume_sources: c
                .config
                .volumes
                .iter()
                .map(|v| (v.dest.clone(), self.volume_mountpoint(&v.name)))
                .collect(),
        }
    }

    /// `relocation` plus the pod namespaces, for a spec about to run.
    pub(crate) fn relocate_spec(
        &self,
        c: &ContainerRecord,
        spec: &mut serde_json::Value,
    ) -> Result<(), EngineError> {
        crate::spec::relocate(spec, &self.relocation(c))
            .map_err(|e| EngineError::msg(format!("container {}: {e}", c.name)))?;
        crate::spec::join_namespaces(spec, &self.pod_namespaces(c)?);
        Ok(())
    }

    /// Writes the bundle's `config.json`; `gate` is a restore's network gate (see
    /// [`crate::runc::RestoreGate`]), a prestart hook that exists for that restore only.
    pub(crate) fn write_spec(
        &self,
        id: &str,
        spec: &serde_json::Value,
        gate: Option<serde_json::Value>,
    ) -> Result<(), EngineError> {
        let p = self.layout.bundle(id).join("config.json");
        let mut spec = spec.clone();
        crate::spec::replace_prestart_hook(&mut spec, crate::runc::RestoreGate::is_gate_hook, gate);
        // runc hands CRIU the configuration file this annotation names (when it exists). Ours
        // exists only while a checkpoint streams memory pages over a socket (see pagestream);
        // exports leave the annotation out of spec.dump.
        if let Some(obj) = spec.as_object_mut() {
            if let Some(a) = obj
                .entry("annotations")
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
            {
                a.insert(
                    CRIU_CONFIG_ANNOTATION.into(),
                    self.criu_config_path(id)
                        .to_string_lossy()
                        .into_owned()
                        .into(),
                );
            }
        }
        let body = serde_json::to_vec_pretty(&spec)
            .map_err(|e| EngineError::msg(format!("serialising {}: {e}", p.display())))?;
        std::fs::write(&p, body).map_err(|e| EngineError::io(&p, e))
    }

    /// The CRIU configuration file runc passes to CRIU for this container (see
    /// [`CRIU_CONFIG_ANNOTATION`]).
    pub(crate) fn criu_config_path(&self, id: &str) -> PathBuf {
        self.layout.bundle(id).join("criu.conf")
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

/// A restore's network setup, to run beside `runc restore` (see [`Engine::spawn_restore`]).
pub(crate) struct NetworkBeside {
    c: ContainerRecord,
    attach: stasis_network::Attach,
    /// The request without the addresses to reuse, should those be taken meanwhile.
    fresh: Option<stasis_network::Attach>,
    status_path: PathBuf,
    run: PathBuf,
    gate: crate::runc::RestoreGate,
}

impl NetworkBeside {
    /// The prestart hook that makes the restore wait for this setup: it goes into the
    /// restore's `config.json` (see [`Engine::write_spec`]).
    pub(crate) fn gate_hook(&self) -> serde_json::Value {
        self.gate.hook()
    }

    /// What [`Engine::prepare_network`] does after making the namespace, for a container
    /// with networks of its own and no addresses yet.
    fn run(&self, networks: &stasis_network::NetworkStore) -> Result<(), EngineError> {
        let status = set_up_network(
            networks,
            &self.c.name,
            &self.attach,
            self.fresh.as_ref(),
            &self.status_path,
        )?;
        write_host_files(&self.run, &self.c, Some(&status))
    }
}

/// hosts, hostname, resolv.conf and .containerenv in the container's runtime directory `run`,
/// for its network `status`. Rewritten in place (same files), so bind mounts of them see the
/// new content.
fn write_host_files(
    run: &Path,
    c: &ContainerRecord,
    status: Option<&stasis_archive::NetworkStatus>,
) -> Result<(), EngineError> {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost localhost.localdomain\n",
    );
    let mut own = Vec::new();
    let mut dns = Vec::new();
    let mut gateway = None;
    for block in status.iter().flat_map(|s| s.values()) {
        dns.extend(block.dns_server_ips.iter().cloned());
        for iface in block.interfaces.values() {
            for sn in &iface.subnets {
                own.push(sn.ipnet.split('/').next().unwrap_or_default().to_string());
                if gateway.is_none() {
                    gateway = Some(sn.gateway.clone()).filter(|g| !g.is_empty());
                }
            }
        }
    }
    if own.is_empty() {
        own.push("127.0.1.1".into());
    }
    for ip in &own {
        hosts.push_str(&format!("{ip}\t{} {}\n", c.config.hostname, c.name));
    }
    if let Some(gw) = gateway {
        hosts.push_str(&format!("{gw}\thost.containers.internal\n"));
    }
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = if dns.is_empty() {
        host_resolv
    } else {
        let mut r = String::from("search dns.podman\n");
        for d in &dns {
            r.push_str(&format!("nameserver {d}\n"));
        }
        for l in host_resolv.lines().filter(|l| l.starts_with("options")) {
            r.push_str(l);
            r.push('\n');
        }
        r
    };
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

/// The container's cgroup, under its parent (`/stasis` or its pod's).
pub(crate) fn cgroups_path(c: &ContainerRecord) -> String {
    format!("{}/stasis-{}", c.config.cgroup_parent, c.id)
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
