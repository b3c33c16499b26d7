//! The restore decision logic of Podman's `CRImportCheckpoint` (pkg/checkpoint), as a pure
//! function over the decoded `config.dump`/`spec.dump`, the user's request and a [`World`] that
//! answers questions about the host (volumes, pods, containers, CRIU, runtime).
//!
//! Order of the checks, as in Podman 4.3:
//! 1. pod consistency (`--pod` given iff the archive's container was in a pod);
//! 2. no explicit dependencies;
//! 3. named volumes must not exist (unless `--ignore-volumes`);
//! 4. `--ignore-static-ip` / `--ignore-static-mac` drop the static addresses;
//! 5. `--name`: new name and new (empty) ID;
//! 6. `--pod`: CRIU ≥ 3.16, runtime support, pod lookup **by name or ID** (Podman 4.3 only found
//!    pods by ID), infra container, shared namespaces remapped to the infra container (IPC,
//!    network, PID, UTS, cgroup, in that order), SELinux labels and cgroup parent from the pod,
//!    `io.kubernetes.cri-o.SandboxID` and `CreateCommand` fixed up;
//! 7. `--publish` replaces the port mappings.
//!
//! Then the checks Podman leaves to later stages (image pull, storage, database insert) but that
//! must pass before anything is created: namespace containers that do not exist here, the root
//! filesystem image, the name and the ID being free. [`check_restored`] holds Podman's final
//! name/ID checks.

use crate::config::ContainerConfig;
use crate::port::PortMapping;
use serde_json::Value;

/// CRIU version needed to restore into a pod (`criu.PodCriuVersion`).
pub const POD_CRIU_VERSION: u32 = 31600;
/// The spec annotation holding the sandbox (pod) ID.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri-o.SandboxID";

/// What the user asked for on `restore --import`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreRequest {
    /// `--name`: restore under a new name (and a new ID).
    pub name: Option<String>,
    /// `--pod`: pod name or ID to restore into.
    pub pod: Option<String>,
    /// `--ignore-volumes`.
    pub ignore_volumes: bool,
    /// `--ignore-static-ip`.
    pub ignore_static_ip: bool,
    /// `--ignore-static-mac`.
    pub ignore_static_mac: bool,
    /// `--publish`, already parsed; replaces the archive's port mappings when not empty.
    pub publish: Vec<PortMapping>,
    /// `--ignore-rootfs` (no effect on planning; carried for the caller).
    pub ignore_rootfs: bool,
}

/// Namespaces a pod shares through its infra container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shares {
    /// IPC namespace.
    pub ipc: bool,
    /// Network namespace.
    pub net: bool,
    /// PID namespace.
    pub pid: bool,
    /// UTS namespace.
    pub uts: bool,
    /// cgroup namespace.
    pub cgroup: bool,
}

/// What the engine knows about a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Full pod ID.
    pub id: String,
    /// Pod name.
    pub name: String,
    /// Infra container ID; empty when the pod has none.
    pub infra_id: String,
    /// Shared namespaces.
    pub shares: Shares,
    /// The pod's cgroup path (parent of its containers' cgroups).
    pub cgroup_parent: String,
    /// SELinux mount label of the infra container.
    pub infra_mount_label: String,
    /// SELinux process label of the infra container.
    pub infra_process_label: String,
}

/// Questions about the host, answered by the engine from its database (or by fakes in tests).
pub trait World {
    /// A volume of that name exists.
    fn volume_exists(&self, name: &str) -> bool;
    /// The pod with that name or ID (full or unique prefix, as the engine resolves them).
    fn find_pod(&self, name_or_id: &str) -> Option<PodInfo>;
    /// A container with that name exists.
    fn container_name_taken(&self, name: &str) -> bool;
    /// A container with that full ID exists.
    fn container_id_taken(&self, id: &str) -> bool;
    /// CRIU version as a number, e.g. 40201 for 4.2.1.
    fn criu_version(&self) -> u32;
    /// The OCI runtime accepts `restore --lsm-mount-context` (needed for pod restore).
    fn runtime_supports_pod_restore(&self) -> bool;
    /// Path of the OCI runtime, for messages.
    fn runtime_path(&self) -> String;
}

/// The decisions for one import.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportPlan {
    /// The config to create the container from (ID empty when a new name was requested).
    pub config: ContainerConfig,
    /// The spec to use (`spec.dump`, SandboxID fixed for a pod restore).
    pub spec: Value,
    /// `--name` was given: the container gets a new ID.
    pub new_name: bool,
    /// The container's ID in the archive.
    pub original_id: String,
    /// Reuse the addresses of `network.status` at all: not with a new name (Podman's rule, so
    /// two copies never get the same dynamic address) and not when the network namespace is
    /// the pod's.
    pub reuse_network_status: bool,
    /// Reuse IPs from `network.status` (false with `--ignore-static-ip`).
    pub reuse_ip: bool,
    /// Reuse MACs from `network.status` (false with `--ignore-static-mac`).
    pub reuse_mac: bool,
    /// The pod restored into, if any.
    pub pod: Option<PodInfo>,
}

/// Why an import is refused. Podman's messages are kept verbatim where Podman has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The archive's container was in a pod, and no `--pod` was given.
    #[error("cannot restore pod container without --pod")]
    PodContainerWithoutPod,
    /// `--pod` was given for a container that was not in a pod.
    #[error("cannot restore non pod container into pod")]
    NonPodContainerIntoPod,
    /// `Dependencies` is not empty.
    #[error("cannot import checkpoints of containers with dependencies")]
    HasDependencies,
    /// A named volume of the archive already exists.
    #[error("volume with name {0} already exists. Use --ignore-volumes to not restore content of volumes")]
    VolumeExists(String),
    /// CRIU is too old for a pod restore.
    #[error("restoring containers into pods requires at least CRIU {need}")]
    CriuTooOld {
        /// Version needed.
        need: u32,
        /// Version found.
        have: u32,
    },
    /// The runtime cannot restore into a pod.
    #[error("runtime {0} does not support pod restore")]
    RuntimeNoPodRestore(String),
    /// `--pod` names no pod.
    #[error("pod {0:?} cannot be retrieved: no such pod")]
    NoSuchPod(String),
    /// The pod has no infra container.
    #[error("cannot retrieve infra container from pod {0:?}: the pod has no infra container; restore into a pod created with an infra container")]
    NoInfraContainer(String),
    /// The container shared a namespace that the pod does not share.
    #[error("pod {pod} does not share the {namespace} namespace")]
    NamespaceNotShared {
        /// The pod as given by the user.
        pod: String,
        /// `IPC`, `network`, `PID`, `UTS` or `cgroup`.
        namespace: &'static str,
    },
    /// `--publish` for a container that uses the pod's network namespace.
    #[error("cannot use --publish when restoring into pod {0}, which shares its network namespace: ports of a pod are published when the pod is created")]
    PublishInSharedNetns(String),
    /// The container joins a namespace of a container that does not exist here.
    #[error("config.dump: the container joins the {namespace} namespace of container {id}, which does not exist here; create or restore that container first")]
    NamespaceContainerMissing {
        /// Namespace kind.
        namespace: &'static str,
        /// The container ID named in config.dump.
        id: String,
    },
    /// No image to recreate the root filesystem from.
    #[error("config.dump has no {0}: the container's root filesystem image is unknown; the archive is damaged or was not written by Podman or stasis")]
    MissingImage(&'static str),
    /// The (new or original) name belongs to an existing container.
    #[error("name {0:?} is in use: a container with that name exists; use --name to restore under another name, or remove that container")]
    NameInUse(String),
    /// The original ID belongs to an existing container (restore without `--name`).
    #[error("container ID {0} is in use: the checkpointed container still exists here; use --name to restore a copy with a new ID, or remove the existing container")]
    IdInUse(String),
    /// `spec.dump` has an `annotations` member that is not an object.
    #[error("spec.dump: \"annotations\" is not a JSON object; the archive is damaged")]
    BadAnnotations,
    /// After creation, the name differs from the one planned.
    #[error("name of restored container ({got}) does not match requested name ({want})")]
    NameMismatch {
        /// Name the engine created.
        got: String,
        /// Name planned.
        want: String,
    },
    /// After creation (without `--name`), the ID differs from the archive's.
    #[error("ID of restored container ({got}) does not match requested ID ({want})")]
    IdMismatch {
        /// ID the engine created.
        got: String,
        /// ID in the archive.
        want: String,
    },
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn clear_static_addresses(config: &mut ContainerConfig, ip: bool, mac: bool) {
    for opts in config.networks.values_mut() {
        if ip {
            opts.static_ips.clear();
        }
        if mac {
            opts.static_mac.clear();
        }
    }
    if ip {
        config.static_ip.clear();
    }
    if mac {
        config.static_mac.clear();
    }
}

/// Decides how to recreate the container; refuses with Podman's errors, in Podman's order.
pub fn plan_import(
    mut config: ContainerConfig,
    mut spec: Value,
    req: &RestoreRequest,
    world: &dyn World,
) -> Result<ImportPlan, ImportError> {
    let req_pod = non_empty(&req.pod);
    let req_name = non_empty(&req.name);

    // 1. Pod consistency.
    if !config.pod.is_empty() && req_pod.is_none() {
        return Err(ImportError::PodContainerWithoutPod);
    }
    if config.pod.is_empty() && req_pod.is_some() {
        return Err(ImportError::NonPodContainerIntoPod);
    }
    // 2. Dependencies.
    if config.dependencies.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(ImportError::HasDependencies);
    }
    // 3. Volumes.
    if !req.ignore_volumes {
        if let Some(v) = config
            .named_volumes
            .iter()
            .find(|v| world.volume_exists(&v.name))
        {
            return Err(ImportError::VolumeExists(v.name.clone()));
        }
    }
    // 4. Static addresses.
    clear_static_addresses(&mut config, req.ignore_static_ip, req.ignore_static_mac);
    // 5. Name.
    let original_id = config.id.clone();
    let new_name = req_name.is_some();
    if let Some(name) = req_name {
        config.id.clear();
        config.name = name.to_string();
    }
    // 6. Pod.
    let mut pod_info = None;
    if let Some(pod_arg) = req_pod {
        let have = world.criu_version();
        if have < POD_CRIU_VERSION {
            return Err(ImportError::CriuTooOld {
                need: POD_CRIU_VERSION,
                have,
            });
        }
        if !world.runtime_supports_pod_restore() {
            return Err(ImportError::RuntimeNoPodRestore(world.runtime_path()));
        }
        let pod = world
            .find_pod(pod_arg)
            .ok_or_else(|| ImportError::NoSuchPod(pod_arg.to_string()))?;
        if pod.infra_id.is_empty() {
            return Err(ImportError::NoInfraContainer(pod_arg.to_string()));
        }
        let old_pod_id = std::mem::replace(&mut config.pod, pod.id.clone());
        let infra = pod.infra_id.clone();
        let not_shared = |namespace| ImportError::NamespaceNotShared {
            pod: pod_arg.to_string(),
            namespace,
        };
        if !config.ipc_ns_ctr.is_empty() {
            if !pod.shares.ipc {
                return Err(not_shared("IPC"));
            }
            config.ipc_ns_ctr = infra.clone();
        }
        if !config.net_ns_ctr.is_empty() {
            if !pod.shares.net {
                return Err(not_shared("network"));
            }
            config.net_ns_ctr = infra.clone();
            clear_static_addresses(&mut config, true, true);
        }
        if !config.pid_ns_ctr.is_empty() {
            if !pod.shares.pid {
                return Err(not_shared("PID"));
            }
            config.pid_ns_ctr = infra.clone();
        }
        if !config.uts_ns_ctr.is_empty() {
            if !pod.shares.uts {
                return Err(not_shared("UTS"));
            }
            config.uts_ns_ctr = infra.clone();
        }
        if !config.cgroup_ns_ctr.is_empty() {
            if !pod.shares.cgroup {
                return Err(not_shared("cgroup"));
            }
            config.cgroup_ns_ctr = infra.clone();
        }
        config.mount_label = pod.infra_mount_label.clone();
        config.process_label = pod.infra_process_label.clone();
        config.cgroup_parent = pod.cgroup_parent.clone();

        let Some(spec_obj) = spec.as_object_mut() else {
            return Err(ImportError::BadAnnotations);
        };
        let annotations = spec_obj
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if annotations.is_null() {
            *annotations = Value::Object(Default::default());
        }
        let Some(annotations) = annotations.as_object_mut() else {
            return Err(ImportError::BadAnnotations);
        };
        let old_sandbox = annotations
            .insert(SANDBOX_ID_ANNOTATION.into(), Value::String(pod.id.clone()))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for arg in config.create_command.iter_mut() {
            if (!old_sandbox.is_empty() && *arg == old_sandbox) || *arg == old_pod_id {
                *arg = pod.id.clone();
            }
        }
        pod_info = Some(pod);
    }
    // 7. Ports.
    if !req.publish.is_empty() {
        if let Some(pod) = &pod_info {
            if !config.net_ns_ctr.is_empty() {
                return Err(ImportError::PublishInSharedNetns(
                    req_pod.unwrap_or(&pod.name).to_string(),
                ));
            }
        }
        config.port_mappings = req.publish.clone();
    }

    // Checks Podman leaves to later stages.
    let infra_id = pod_info.as_ref().map(|p| p.infra_id.as_str());
    for (namespace, id) in config.shared_namespaces() {
        if Some(id) != infra_id && !world.container_id_taken(id) {
            return Err(ImportError::NamespaceContainerMissing {
                namespace,
                id: id.to_string(),
            });
        }
    }
    if config.rootfs.is_empty() {
        if config.rootfs_image_id.is_empty() {
            return Err(ImportError::MissingImage("rootfsImageID"));
        }
        if config.rootfs_image_name.is_empty() {
            return Err(ImportError::MissingImage("rootfsImageName"));
        }
    }
    if !config.name.is_empty() && world.container_name_taken(&config.name) {
        return Err(ImportError::NameInUse(config.name.clone()));
    }
    if !new_name && world.container_id_taken(&original_id) {
        return Err(ImportError::IdInUse(original_id));
    }

    let reuse_network_status = !new_name && config.net_ns_ctr.is_empty();
    Ok(ImportPlan {
        reuse_network_status,
        reuse_ip: reuse_network_status && !req.ignore_static_ip,
        reuse_mac: reuse_network_status && !req.ignore_static_mac,
        config,
        spec,
        new_name,
        original_id,
        pod: pod_info,
    })
}

/// Podman's checks after the container was created: the name must be the planned one and,
/// without `--name`, the ID must be the archive's.
pub fn check_restored(
    plan: &ImportPlan,
    created_name: &str,
    created_id: &str,
) -> Result<(), ImportError> {
    if created_name != plan.config.name {
        return Err(ImportError::NameMismatch {
            got: created_name.to_string(),
            want: plan.config.name.clone(),
        });
    }
    if !plan.new_name && created_id != plan.original_id {
        return Err(ImportError::IdMismatch {
            got: created_id.to_string(),
            want: plan.original_id.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NamedVolume, PerNetworkOptions};
    use serde_json::json;
    use std::collections::BTreeSet;

    const ID: &str = "f41583fc3f07f3ae2e1c5cd05db1aee2ebdcca4f01cc36fba16fad737adec2b6";
    const OLD_INFRA: &str = "cf7f5e1a3e27458777eedff5ec9129f87f8b5cb8f8a6df6899fda1f685ef26a9";
    const OLD_POD: &str = "c472af8b112c19cedb2b07a4ed4c568dea60260c72763e0194869c4315dddc18";

    struct Fake {
        volumes: BTreeSet<String>,
        pods: Vec<PodInfo>,
        names: BTreeSet<String>,
        ids: BTreeSet<String>,
        criu: u32,
        pod_restore: bool,
    }

    impl Default for Fake {
        fn default() -> Self {
            Fake {
                volumes: BTreeSet::new(),
                pods: vec![PodInfo {
                    id: "p".repeat(64),
                    name: "newpod".into(),
                    infra_id: "i".repeat(64),
                    shares: Shares {
                        ipc: true,
                        net: true,
                        pid: false,
                        uts: true,
                        cgroup: false,
                    },
                    cgroup_parent: "/libpod_parent/pppp".into(),
                    infra_mount_label: "system_u:object_r:container_file_t:s0:c1,c2".into(),
                    infra_process_label: "system_u:system_r:container_t:s0:c1,c2".into(),
                }],
                names: BTreeSet::new(),
                ids: BTreeSet::new(),
                criu: 40201,
                pod_restore: true,
            }
        }
    }

    impl World for Fake {
        fn volume_exists(&self, name: &str) -> bool {
            self.volumes.contains(name)
        }
        fn find_pod(&self, q: &str) -> Option<PodInfo> {
            self.pods.iter().find(|p| p.name == q || p.id == q).cloned()
        }
        fn container_name_taken(&self, name: &str) -> bool {
            self.names.contains(name)
        }
        fn container_id_taken(&self, id: &str) -> bool {
            self.ids.contains(id)
        }
        fn criu_version(&self) -> u32 {
            self.criu
        }
        fn runtime_supports_pod_restore(&self) -> bool {
            self.pod_restore
        }
        fn runtime_path(&self) -> String {
            "/usr/sbin/runc".into()
        }
    }

    fn plain() -> (ContainerConfig, Value) {
        let c =
            ContainerConfig::from_json(include_bytes!("../tests/fixtures/podman43-config.dump"))
                .unwrap();
        let s =
            crate::config::parse_spec_dump(include_bytes!("../tests/fixtures/podman43-spec.dump"))
                .unwrap();
        (c, s)
    }

    fn podded() -> (ContainerConfig, Value) {
        let c = ContainerConfig::from_json(include_bytes!(
            "../tests/fixtures/podman43-pod-config.dump"
        ))
        .unwrap();
        let s = crate::config::parse_spec_dump(include_bytes!(
            "../tests/fixtures/podman43-pod-spec.dump"
        ))
        .unwrap();
        (c, s)
    }

    fn req() -> RestoreRequest {
        RestoreRequest::default()
    }

    fn pod_req(p: &str) -> RestoreRequest {
        RestoreRequest {
            pod: Some(p.into()),
            ..req()
        }
    }

    fn err(c: (ContainerConfig, Value), r: &RestoreRequest, w: &Fake) -> String {
        plan_import(c.0, c.1, r, w).unwrap_err().to_string()
    }

    #[test]
    fn plain_restore_keeps_identity() {
        let p = plan_import(plain().0, plain().1, &req(), &Fake::default()).unwrap();
        assert_eq!(p.config.id, ID);
        assert_eq!(p.config.name, "stasisfx1");
        assert_eq!(p.original_id, ID);
        assert!(!p.new_name);
        assert!(p.reuse_network_status && p.reuse_ip && p.reuse_mac);
        assert_eq!(
            p.config.networks["stasisfx-net"].static_ips,
            vec!["10.89.77.5"]
        );
        assert_eq!(p.config, plain().0);
        assert_eq!(p.spec, plain().1);
        check_restored(&p, "stasisfx1", ID).unwrap();
    }

    #[test]
    fn pod_archive_without_pod() {
        assert_eq!(
            err(podded(), &req(), &Fake::default()),
            "cannot restore pod container without --pod"
        );
        // Empty --pod counts as absent.
        assert_eq!(
            err(podded(), &pod_req(""), &Fake::default()),
            "cannot restore pod container without --pod"
        );
    }

    #[test]
    fn non_pod_archive_into_pod() {
        assert_eq!(
            err(plain(), &pod_req("newpod"), &Fake::default()),
            "cannot restore non pod container into pod"
        );
    }

    #[test]
    fn pod_check_comes_before_volume_and_dependency_checks() {
        let (mut c, s) = podded();
        c.dependencies = Some(vec!["x".into()]);
        c.named_volumes.push(NamedVolume {
            name: "v".into(),
            ..Default::default()
        });
        let mut w = Fake::default();
        w.volumes.insert("v".into());
        assert_eq!(
            err((c.clone(), s.clone()), &req(), &w),
            "cannot restore pod container without --pod"
        );
        // Dependencies before volumes.
        c.pod.clear();
        assert_eq!(
            err((c, s), &req(), &w),
            "cannot import checkpoints of containers with dependencies"
        );
    }

    #[test]
    fn dependencies_refused() {
        let (mut c, s) = plain();
        c.dependencies = Some(vec![OLD_INFRA.into()]);
        assert_eq!(
            err((c.clone(), s.clone()), &req(), &Fake::default()),
            "cannot import checkpoints of containers with dependencies"
        );
        c.dependencies = Some(vec![]);
        assert!(plan_import(c, s, &req(), &Fake::default()).is_ok());
    }

    #[test]
    fn existing_volume() {
        let mut w = Fake::default();
        w.volumes.insert("stasisfx-vol".into());
        assert_eq!(
            err(plain(), &req(), &w),
            "volume with name stasisfx-vol already exists. Use --ignore-volumes to not restore content of volumes"
        );
        let r = RestoreRequest {
            ignore_volumes: true,
            ..req()
        };
        assert!(plan_import(plain().0, plain().1, &r, &w).is_ok());
    }

    #[test]
    fn volume_check_comes_before_name_checks() {
        let mut w = Fake::default();
        w.volumes.insert("stasisfx-vol".into());
        w.names.insert("stasisfx1".into());
        w.ids.insert(ID.into());
        assert!(err(plain(), &req(), &w).starts_with("volume with name stasisfx-vol"));
    }

    #[test]
    fn ignore_static_ip_and_mac() {
        let (mut c, s) = plain();
        c.static_ip = "10.0.0.9".into();
        c.static_mac = "aa:aa:aa:aa:aa:aa".into();
        let r = RestoreRequest {
            ignore_static_ip: true,
            ..req()
        };
        let p = plan_import(c.clone(), s.clone(), &r, &Fake::default()).unwrap();
        let n = &p.config.networks["stasisfx-net"];
        assert!(n.static_ips.is_empty());
        assert_eq!(n.static_mac, "92:d0:c6:0a:29:33");
        assert_eq!(p.config.static_ip, "");
        assert_eq!(p.config.static_mac, "aa:aa:aa:aa:aa:aa");
        assert!(p.reuse_network_status && !p.reuse_ip && p.reuse_mac);
        let r = RestoreRequest {
            ignore_static_mac: true,
            ..req()
        };
        let p = plan_import(c, s, &r, &Fake::default()).unwrap();
        assert_eq!(
            p.config.networks["stasisfx-net"].static_ips,
            vec!["10.89.77.5"]
        );
        assert_eq!(p.config.networks["stasisfx-net"].static_mac, "");
        assert!(p.reuse_ip && !p.reuse_mac);
    }

    #[test]
    fn new_name_means_new_id_and_no_address_reuse() {
        let mut w = Fake::default();
        w.names.insert("stasisfx1".into());
        w.ids.insert(ID.into()); // the original still exists: fine with --name
        let r = RestoreRequest {
            name: Some("copy".into()),
            ..req()
        };
        let p = plan_import(plain().0, plain().1, &r, &w).unwrap();
        assert_eq!(p.config.id, "");
        assert_eq!(p.config.name, "copy");
        assert_eq!(p.original_id, ID);
        assert!(p.new_name && !p.reuse_network_status && !p.reuse_ip && !p.reuse_mac);
        check_restored(&p, "copy", "0123").unwrap();
        assert_eq!(
            check_restored(&p, "other", "0123").unwrap_err().to_string(),
            "name of restored container (other) does not match requested name (copy)"
        );
    }

    #[test]
    fn name_and_id_in_use() {
        let mut w = Fake::default();
        w.names.insert("stasisfx1".into());
        w.ids.insert(ID.into());
        assert_eq!(
            err(plain(), &req(), &w),
            "name \"stasisfx1\" is in use: a container with that name exists; use --name to restore under another name, or remove that container"
        );
        w.names.clear();
        assert_eq!(
            err(plain(), &req(), &w),
            format!("container ID {ID} is in use: the checkpointed container still exists here; use --name to restore a copy with a new ID, or remove the existing container")
        );
        let mut w = Fake::default();
        w.names.insert("copy".into());
        let r = RestoreRequest {
            name: Some("copy".into()),
            ..req()
        };
        assert!(err(plain(), &r, &w).starts_with("name \"copy\" is in use"));
    }

    #[test]
    fn missing_image() {
        let (mut c, s) = plain();
        c.rootfs_image_id.clear();
        assert!(err((c.clone(), s.clone()), &req(), &Fake::default())
            .starts_with("config.dump has no rootfsImageID: "));
        c.rootfs_image_id = "x".into();
        c.rootfs_image_name.clear();
        assert!(err((c.clone(), s.clone()), &req(), &Fake::default())
            .starts_with("config.dump has no rootfsImageName: "));
        c.rootfs_image_id.clear();
        c.rootfs = "/srv/rootfs".into();
        assert!(plan_import(c, s, &req(), &Fake::default()).is_ok());
    }

    #[test]
    fn image_check_comes_before_name_check() {
        let (mut c, s) = plain();
        c.rootfs_image_id.clear();
        let mut w = Fake::default();
        w.names.insert("stasisfx1".into());
        assert!(err((c, s), &req(), &w).starts_with("config.dump has no rootfsImageID"));
    }

    #[test]
    fn pod_restore_by_name_remaps_everything() {
        let w = Fake::default();
        let pod = &w.pods[0];
        let (mut c, s) = podded();
        c.create_command.push(OLD_INFRA.into());
        c.create_command.push(OLD_POD.into());
        c.networks.insert(
            "n".into(),
            PerNetworkOptions {
                static_ips: vec!["1.2.3.4".into()],
                static_mac: "aa:bb:cc:dd:ee:ff".into(),
                ..Default::default()
            },
        );
        let p = plan_import(c, s, &pod_req("newpod"), &w).unwrap();
        assert_eq!(p.config.pod, pod.id);
        assert_eq!(p.config.ipc_ns_ctr, pod.infra_id);
        assert_eq!(p.config.net_ns_ctr, pod.infra_id);
        assert_eq!(p.config.uts_ns_ctr, pod.infra_id);
        assert_eq!(p.config.pid_ns_ctr, "");
        assert!(p.config.networks["n"].static_ips.is_empty());
        assert_eq!(p.config.networks["n"].static_mac, "");
        assert_eq!(p.config.mount_label, pod.infra_mount_label);
        assert_eq!(p.config.process_label, pod.infra_process_label);
        assert_eq!(p.config.cgroup_parent, pod.cgroup_parent);
        assert_eq!(p.spec["annotations"][SANDBOX_ID_ANNOTATION], json!(pod.id));
        let n = p.config.create_command.len();
        assert_eq!(
            p.config.create_command[n - 2..],
            [pod.id.clone(), pod.id.clone()]
        );
        assert!(p
            .config
            .create_command
            .contains(&"stasisfx-pod".to_string()));
        assert!(
            !p.reuse_network_status,
            "the pod's netns is not the container's"
        );
        assert_eq!(p.pod.as_ref(), Some(pod));
        // By ID as well.
        let p = plan_import(podded().0, podded().1, &pod_req(&pod.id), &w).unwrap();
        assert_eq!(p.config.pod, pod.id);
    }

    #[test]
    fn pod_spec_without_annotations_gets_them() {
        let (c, mut s) = podded();
        s.as_object_mut().unwrap().remove("annotations");
        let p = plan_import(c.clone(), s.clone(), &pod_req("newpod"), &Fake::default()).unwrap();
        assert_eq!(
            p.spec["annotations"][SANDBOX_ID_ANNOTATION],
            json!("p".repeat(64))
        );
        s["annotations"] = json!("nope");
        assert_eq!(
            err((c, s), &pod_req("newpod"), &Fake::default()),
            "spec.dump: \"annotations\" is not a JSON object; the archive is damaged"
        );
    }

    #[test]
    fn pod_criu_runtime_and_lookup_in_order() {
        let mut w = Fake {
            criu: 31500,
            pod_restore: false,
            pods: vec![],
            ..Default::default()
        };
        assert_eq!(
            err(podded(), &pod_req("x"), &w),
            "restoring containers into pods requires at least CRIU 31600"
        );
        w.criu = 31600;
        assert_eq!(
            err(podded(), &pod_req("x"), &w),
            "runtime /usr/sbin/runc does not support pod restore"
        );
        w.pod_restore = true;
        assert_eq!(
            err(podded(), &pod_req("x"), &w),
            "pod \"x\" cannot be retrieved: no such pod"
        );
        let mut w = Fake::default();
        w.pods[0].infra_id.clear();
        assert!(err(podded(), &pod_req("newpod"), &w)
            .starts_with("cannot retrieve infra container from pod \"newpod\": "));
    }

    #[test]
    fn unshared_namespaces_each_and_in_order() {
        type Case = (&'static str, fn(&mut Shares), &'static str);
        let cases: [Case; 5] = [
            ("ipc", |s| s.ipc = false, "IPC"),
            ("net", |s| s.net = false, "network"),
            ("pid", |s| s.pid = false, "PID"),
            ("uts", |s| s.uts = false, "UTS"),
            ("cgroup", |s| s.cgroup = false, "cgroup"),
        ];
        for (what, unset, ns) in cases {
            let (mut c, s) = podded();
            c.pid_ns_ctr = OLD_INFRA.into();
            c.cgroup_ns_ctr = OLD_INFRA.into();
            let mut w = Fake::default();
            w.pods[0].shares = Shares {
                ipc: true,
                net: true,
                pid: true,
                uts: true,
                cgroup: true,
            };
            unset(&mut w.pods[0].shares);
            assert_eq!(
                err((c, s), &pod_req("newpod"), &w),
                format!("pod newpod does not share the {ns} namespace"),
                "{what}"
            );
        }
        // Both IPC and UTS unshared: IPC is reported.
        let mut w = Fake::default();
        w.pods[0].shares.ipc = false;
        w.pods[0].shares.uts = false;
        assert!(err(podded(), &pod_req("newpod"), &w).contains("IPC"));
    }

    #[test]
    fn publish_replaces_ports() {
        let ports = crate::port::parse_publish("9090:80").unwrap();
        let r = RestoreRequest {
            publish: ports.clone(),
            ..req()
        };
        let p = plan_import(plain().0, plain().1, &r, &Fake::default()).unwrap();
        assert_eq!(p.config.port_mappings, ports);
        let r = RestoreRequest {
            publish: ports,
            ..pod_req("newpod")
        };
        assert!(err(podded(), &r, &Fake::default())
            .starts_with("cannot use --publish when restoring into pod newpod"));
    }

    #[test]
    fn namespace_container_must_exist() {
        let (mut c, s) = plain();
        c.net_ns_ctr = "abc".into();
        assert_eq!(
            err((c.clone(), s.clone()), &req(), &Fake::default()),
            "config.dump: the container joins the network namespace of container abc, which does not exist here; create or restore that container first"
        );
        let mut w = Fake::default();
        w.ids.insert("abc".into());
        let p = plan_import(c, s, &req(), &w).unwrap();
        assert!(!p.reuse_network_status);
        // In a pod, a user namespace container that is not remapped must exist too.
        let (mut c, s) = podded();
        c.user_ns_ctr = OLD_INFRA.into();
        assert!(err((c, s), &pod_req("newpod"), &Fake::default())
            .contains("joins the user namespace of container"));
    }

    #[test]
    fn id_check_after_creation() {
        let p = plan_import(plain().0, plain().1, &req(), &Fake::default()).unwrap();
        assert_eq!(
            check_restored(&p, "stasisfx1", "beef")
                .unwrap_err()
                .to_string(),
            format!("ID of restored container (beef) does not match requested ID ({ID})")
        );
    }
}
