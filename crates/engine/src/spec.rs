//! Generation of the OCI runtime spec (config.json) for a new container.
//!
//! The mount set, namespaces, capabilities, masked and read-only paths follow what Podman 4.3
//! generates, because CRIU restores only into the mounts it dumped: matching Podman's set is what
//! lets checkpoints move between the two engines. Pure: no I/O, unit-tested.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

/// Everything the generator needs, already resolved (user IDs, paths).
#[derive(Debug, Clone)]
pub struct SpecInput {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// Host-side paths: rootfs, cgroup, network namespace (`None`: runc makes a new one), and
    /// the files bind-mounted into the container. The same a restore relocates a spec to.
    pub host: Relocation,
    /// (RLIMIT_NOFILE soft, hard), (RLIMIT_NPROC soft, hard) taken from the caller.
    pub nofile: (u64, u64),
    pub nproc: (u64, u64),
    pub annotations: Vec<(String, String)>,
    pub stop_signal: i32,
}

/// Podman's default capability set.
pub const DEFAULT_CAPS: [Capability; 11] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
];

const READONLY: [&str; 6] = [
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// In-container destinations whose host side the engine makes afresh for every run or restore.
pub const ENGINE_MOUNTS: [&str; 5] = [
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run/.containerenv",
    "/dev/shm",
];

fn mount(dest: &str, typ: &str, source: &str, opts: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("all mount fields are set")
}

fn bind(dest: &str, source: &Path, extra: &[&str]) -> Mount {
    let mut opts = vec!["bind", "rprivate"];
    opts.extend_from_slice(extra);
    mount(dest, "bind", &source.to_string_lossy(), &opts)
}

/// The mounts of a container, in Podman's order.
pub fn mounts(input: &SpecInput) -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        bind("/etc/hosts", &input.host.hosts_file, &[]),
        bind(
            "/dev/shm",
            &input.host.shm_dir,
            &["nosuid", "noexec", "nodev"],
        ),
        bind("/run/.containerenv", &input.host.containerenv_file, &[]),
        bind("/etc/hostname", &input.host.hostname_file, &[]),
        bind("/etc/resolv.conf", &input.host.resolv_file, &[]),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// Builds the runtime spec.
pub fn generate(input: &SpecInput) -> Result<Spec, oci_spec::OciSpecError> {
    let caps: std::collections::HashSet<Capability> = DEFAULT_CAPS.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        // The builder's defaults for these are not empty: they must be, or runc fails to
        // raise capabilities outside the bounding set.
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()?;
    let rlimits = vec![
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(input.nofile.0)
            .hard(input.nofile.1)
            .build()?,
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNproc)
            .soft(input.nproc.0)
            .hard(input.nproc.1)
            .build()?,
    ];
    let user = UserBuilder::default()
        .uid(input.uid)
        .gid(input.gid)
        .umask(0o022u32)
        .additional_gids(input.additional_gids.clone())
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(input.args.clone())
        .env(input.env.clone())
        .cwd(if input.cwd.is_empty() {
            "/"
        } else {
            &input.cwd
        })
        .capabilities(capabilities)
        .rlimits(rlimits)
        .no_new_privileges(false)
        .build()?;

    let mut namespaces = vec![LinuxNamespaceBuilder::default()
        .typ(LinuxNamespaceType::Pid)
        .build()?];
    let mut net = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(p) = &input.host.netns_path {
        net = net.path(p.clone());
    }
    namespaces.push(net.build()?);
    for t in [
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(t).build()?);
    }

    let resources = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?])
        .pids(LinuxPidsBuilder::default().limit(2048i64).build()?)
        .build()?;
    let linux = LinuxBuilder::default()
        .sysctl(
            [("net.ipv4.ping_group_range".to_string(), "0 0".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .resources(resources)
        .cgroups_path(PathBuf::from(&input.host.cgroups_path))
        .namespaces(namespaces)
        .masked_paths(MASKED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .readonly_paths(READONLY.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?;

    let mut annotations: std::collections::HashMap<String, String> = [
        ("io.container.manager", "libpod"),
        ("io.kubernetes.cri-o.TTY", "false"),
        ("io.podman.annotations.autoremove", "FALSE"),
        ("io.podman.annotations.init", "FALSE"),
        ("io.podman.annotations.privileged", "FALSE"),
        ("io.podman.annotations.publish-all", "FALSE"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    annotations.insert(
        "org.opencontainers.image.stopSignal".into(),
        input.stop_signal.to_string(),
    );
    for (k, v) in &input.annotations {
        annotations.insert(k.clone(), v.clone());
    }

    SpecBuilder::default()
        .version("1.0.2-dev")
        .process(process)
        .root(
            RootBuilder::default()
                .path(input.host.rootfs.clone())
                .readonly(false)
                .build()?,
        )
        .hostname(input.hostname.clone())
        .mounts(mounts(input))
        .annotations(annotations)
        .linux(linux)
        .build()
}

/// Points the spec's namespaces of the given OCI types at existing ones (a pod's), adding
/// entries that are missing; a shared UTS namespace drops the spec's hostname (runc refuses to
/// set one without a private UTS namespace).
pub fn join_namespaces(spec: &mut serde_json::Value, paths: &[(String, PathBuf)]) {
    if paths.is_empty() {
        return;
    }
    if let Some(nss) = spec["linux"]["namespaces"].as_array_mut() {
        for (typ, path) in paths {
            let p = path.to_string_lossy().into_owned();
            match nss.iter_mut().find(|n| n["type"] == typ.as_str()) {
                Some(n) => n["path"] = p.into(),
                None => nss.push(serde_json::json!({"type": typ, "path": p})),
            }
        }
    }
    if paths.iter().any(|(t, _)| t == "uts") {
        if let Some(o) = spec.as_object_mut() {
            o.remove("hostname");
        }
    }
}

/// Removes the prestart hooks `ours` recognises (engine-local ones, which never travel in an
/// archive nor outlive the run they were written for), then puts `hook`, if any, first: it
/// runs before the hooks the spec brought along.
pub fn replace_prestart_hook(
    spec: &mut serde_json::Value,
    ours: impl Fn(&serde_json::Value) -> bool,
    hook: Option<serde_json::Value>,
) {
    let Some(obj) = spec.as_object_mut() else {
        return;
    };
    let mut prestart: Vec<serde_json::Value> = obj
        .get("hooks")
        .and_then(|h| h.get("prestart"))
        .and_then(|p| p.as_array())
        .map(|a| a.iter().filter(|h| !ours(h)).cloned().collect())
        .unwrap_or_default();
    if let Some(h) = hook {
        prestart.insert(0, h);
    }
    let hooks = obj.entry("hooks").or_insert_with(|| serde_json::json!({}));
    let Some(hooks_obj) = hooks.as_object_mut() else {
        return;
    };
    if prestart.is_empty() {
        hooks_obj.remove("prestart");
    } else {
        hooks_obj.insert("prestart".into(), prestart.into());
    }
    if hooks_obj.is_empty() {
        obj.remove("hooks");
    }
}

/// Host-side paths of a container being restored (or restarted from a saved spec).
#[derive(Debug, Clone)]
pub struct Relocation {
    pub rootfs: PathBuf,
    pub cgroups_path: String,
    pub netns_path: Option<PathBuf>,
    pub hosts_file: PathBuf,
    pub hostname_file: PathBuf,
    pub resolv_file: PathBuf,
    pub containerenv_file: PathBuf,
    pub shm_dir: PathBuf,
    /// Destination → host directory of the container's named volumes.
    pub volume_sources: Vec<(String, PathBuf)>,
}

/// Rewrites a dumped runtime spec (ours or Podman's `spec.dump`) for this host: root path,
/// cgroups path, network namespace path, and the host sources of the engine-made mounts.
///
/// Every mount destination of the dump is kept, in its order: CRIU restores only into the
/// mounts it dumped. Sources of `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`,
/// `/run/.containerenv` and `/dev/shm` are replaced in place; `/run/secrets` (Podman's, whose
/// host side does not travel) is dropped as Podman does on restore.
pub fn relocate(spec: &mut serde_json::Value, r: &Relocation) -> Result<(), String> {
    let obj = spec
        .as_object_mut()
        .ok_or("spec.dump is not a JSON object")?;
    obj.entry("root")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or("spec.dump: \"root\" is not an object")?
        .insert(
            "path".into(),
            r.rootfs.to_string_lossy().into_owned().into(),
        );
    if let Some(mounts) = obj.get_mut("mounts").and_then(|m| m.as_array_mut()) {
        mounts.retain(|m| {
            let d = m["destination"].as_str().unwrap_or_default();
            d != "/run/secrets" && d != "/var/run/secrets"
        });
        for m in mounts.iter_mut() {
            let dest = m["destination"].as_str().unwrap_or_default().to_string();
            let src = match dest.as_str() {
                "/etc/hosts" => &r.hosts_file,
                "/etc/hostname" => &r.hostname_file,
                "/etc/resolv.conf" => &r.resolv_file,
                "/run/.containerenv" | "/var/run/.containerenv" => &r.containerenv_file,
                "/dev/shm" if m["type"] == "bind" => &r.shm_dir,
                d => match r.volume_sources.iter().find(|(dest, _)| dest == d) {
                    Some((_, src)) => src,
                    None => continue,
                },
            };
            m["source"] = src.to_string_lossy().into_owned().into();
        }
    }
    let linux = obj
        .entry("linux")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or("spec.dump: \"linux\" is not an object")?;
    linux.insert("cgroupsPath".into(), r.cgroups_path.clone().into());
    if let Some(nss) = linux.get_mut("namespaces").and_then(|n| n.as_array_mut()) {
        for ns in nss.iter_mut() {
            if ns["type"] == "network" {
                match &r.netns_path {
                    Some(p) => ns["path"] = p.to_string_lossy().into_owned().into(),
                    None => {
                        if let Some(o) = ns.as_object_mut() {
                            o.remove("path");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prestart_hook_keeps_foreign_hooks_and_leaves_no_empty_objects() {
        let ours = |h: &serde_json::Value| h["path"] == "/run/x/gate";
        let gate = serde_json::json!({"path": "/run/x/gate", "args": ["/run/x/gate", "f"]});
        // Added first, before the spec's own hooks.
        let mut spec = serde_json::json!({"hooks": {"prestart": [{"path": "/usr/bin/h"}],
                                                    "poststop": [{"path": "/usr/bin/p"}]}});
        replace_prestart_hook(&mut spec, ours, Some(gate.clone()));
        assert_eq!(spec["hooks"]["prestart"][0], gate);
        assert_eq!(spec["hooks"]["prestart"][1]["path"], "/usr/bin/h");
        // Replaced, not added twice.
        replace_prestart_hook(&mut spec, ours, Some(gate.clone()));
        assert_eq!(spec["hooks"]["prestart"].as_array().unwrap().len(), 2);
        // Removed: the foreign hooks stay.
        replace_prestart_hook(&mut spec, ours, None);
        assert_eq!(
            spec["hooks"]["prestart"],
            serde_json::json!([{"path": "/usr/bin/h"}])
        );
        assert_eq!(spec["hooks"]["poststop"][0]["path"], "/usr/bin/p");
        // A spec with only ours ends without "hooks" at all.
        let mut spec = serde_json::json!({"ociVersion": "1.0.2"});
        replace_prestart_hook(&mut spec, ours, Some(gate));
        replace_prestart_hook(&mut spec, ours, None);
        assert_eq!(spec, serde_json::json!({"ociVersion": "1.0.2"}));
    }

    fn input() -> SpecInput {
        SpecInput {
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: String::new(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: "abc".into(),
            host: Relocation {
                rootfs: "/r/merged".into(),
                cgroups_path: "/stasis/abc".into(),
                netns_path: Some("/run/stasis/netns/x".into()),
                hosts_file: "/run/c/hosts".into(),
                hostname_file: "/run/c/hostname".into(),
                resolv_file: "/run/c/resolv.conf".into(),
                containerenv_file: "/run/c/.containerenv".into(),
                shm_dir: "/r/shm".into(),
                volume_sources: Vec::new(),
            },
            nofile: (1024, 4096),
            nproc: (100, 200),
            annotations: vec![],
            stop_signal: 15,
        }
    }

    #[test]
    fn mount_set_matches_podman() {
        let s = generate(&input()).unwrap();
        let dests: Vec<String> = s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/sys",
                "/dev/pts",
                "/dev/mqueue",
                "/etc/hosts",
                "/dev/shm",
                "/run/.containerenv",
                "/etc/hostname",
                "/etc/resolv.conf",
                "/sys/fs/cgroup"
            ]
        );
    }

    #[test]
    fn json_has_runc_shape() {
        let s = generate(&input()).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(v["process"]["rlimits"][0]["hard"], 4096);
        assert_eq!(v["linux"]["namespaces"][1]["type"], "network");
        assert_eq!(v["linux"]["namespaces"][1]["path"], "/run/stasis/netns/x");
        assert_eq!(v["linux"]["cgroupsPath"], "/stasis/abc");
        assert_eq!(v["annotations"]["io.container.manager"], "libpod");
        assert_eq!(v["root"]["path"], "/r/merged");
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), 11);
        let empty = |k: &str| {
            v["process"]["capabilities"][k].is_null()
                || v["process"]["capabilities"][k]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
        };
        assert!(empty("ambient") && empty("inheritable"));
    }

    #[test]
    fn joins_pod_namespaces() {
        let mut v = serde_json::to_value(generate(&input()).unwrap()).unwrap();
        join_namespaces(
            &mut v,
            &[
                ("ipc".into(), "/proc/7/ns/ipc".into()),
                ("uts".into(), "/proc/7/ns/uts".into()),
                ("cgroup".into(), "/proc/7/ns/cgroup".into()),
            ],
        );
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        let path = |t: &str| {
            ns.iter()
                .find(|n| n["type"] == t)
                .map(|n| n["path"].clone())
        };
        assert_eq!(path("ipc").unwrap(), "/proc/7/ns/ipc");
        assert_eq!(path("cgroup").unwrap(), "/proc/7/ns/cgroup");
        assert!(path("pid").unwrap().is_null());
        assert!(v.get("hostname").is_none());
    }

    #[test]
    fn relocates_a_podman_spec_dump() {
        let raw = include_bytes!("../../archive/tests/fixtures/podman43-spec.dump");
        let mut v: serde_json::Value = serde_json::from_slice(raw).unwrap();
        let before: Vec<String> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        let r = Relocation {
            rootfs: "/new/merged".into(),
            cgroups_path: "/stasis/stasis-x".into(),
            netns_path: Some("/run/stasis/netns/n".into()),
            hosts_file: "/run/c/hosts".into(),
            hostname_file: "/run/c/hostname".into(),
            resolv_file: "/run/c/resolv.conf".into(),
            containerenv_file: "/run/c/.containerenv".into(),
            shm_dir: "/new/shm".into(),
            volume_sources: vec![("/data".into(), "/vol/data/_data".into())],
        };
        relocate(&mut v, &r).unwrap();
        let after: Vec<String> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = before.into_iter().filter(|d| d != "/run/secrets").collect();
        assert_eq!(after, expected, "every dumped destination stays, in order");
        assert_eq!(v["root"]["path"], "/new/merged");
        assert_eq!(v["linux"]["cgroupsPath"], "/stasis/stasis-x");
        let src = |d: &str| {
            v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == d)
                .map(|m| m["source"].as_str().unwrap().to_string())
        };
        assert_eq!(src("/etc/hosts").as_deref(), Some("/run/c/hosts"));
        assert_eq!(src("/dev/shm").as_deref(), Some("/new/shm"));
        assert_eq!(src("/data").as_deref(), Some("/vol/data/_data"));
        let net = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .unwrap();
        assert_eq!(net["path"], "/run/stasis/netns/n");
        assert!(relocate(&mut serde_json::json!([1]), &r).is_err());
    }
}
