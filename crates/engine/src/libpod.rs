//! Mapping between our container record and libpod's `ContainerConfig` (`config.dump`), the
//! shape Podman reads and writes in checkpoint archives. Pure.

use std::collections::BTreeMap;

use serde_json::Value;
use stasis_archive::config::{ContainerConfig, NamedVolume, PerNetworkOptions};

use crate::config::NetAttachment;
use crate::container::mounts_and_networks::{from_podman_network, to_podman_network};
use crate::volumes::{BindMount, VolumeMount};

use crate::config::CreateConfig;
use crate::db::ContainerRecord;
use crate::layout::Layout;

/// libpod's config for one of our containers, as Podman 4.3 would have written it.
pub fn to_libpod(c: &ContainerRecord, spec: &Value, layout: &Layout) -> ContainerConfig {
    let bundle = layout.bundle(&c.id).to_string_lossy().into_owned();
    ContainerConfig {
        spec: Some(spec.clone()),
        id: c.id.clone(),
        name: c.name.clone(),
        lock_id: 0,
        create_command: c.config.create_command.clone(),
        raw_image_name: c.config.raw_image_name.clone(),
        id_mappings: Some(serde_json::json!({
            "HostUIDMapping": true, "HostGIDMapping": true, "UIDMap": null, "GIDMap": null,
            "AutoUserNs": false,
            "AutoUserNsOpts": {"Size": 0, "InitialSize": 0, "PasswdFile": "", "GroupFile": "",
                "AdditionalUIDMappings": null, "AdditionalGIDMappings": null}
        })),
        dependencies: None,
        rootfs_image_id: c.image_id.clone(),
        rootfs_image_name: c.config.image_name.clone(),
        shm_dir: layout.shm(&c.id).to_string_lossy().into_owned(),
        shm_size: 65_536_000,
        static_dir: bundle,
        mounts: vec![layout.shm(&c.id).to_string_lossy().into_owned()],
        user: c.config.user.clone(),
        create_net_ns: c.config.netns.is_some() && !c.config.network_mode.starts_with("container:"),
        network_mode: if c.config.network_mode.starts_with("container:") {
            String::new()
        } else {
            c.config.network_mode.clone()
        },
        pod: c
            .config
            .pod
            .clone()
            .filter(|_| !c.config.infra)
            .unwrap_or_default(),
        ipc_ns_ctr: pod_ctr(c, "ipc"),
        net_ns_ctr: pod_ctr(c, "net"),
        pid_ns_ctr: pod_ctr(c, "pid"),
        uts_ns_ctr: pod_ctr(c, "uts"),
        cgroup_ns_ctr: pod_ctr(c, "cgroup"),
        networks: c
            .config
            .networks
            .iter()
            .map(|n| {
                (
                    to_podman_network(&n.network),
                    PerNetworkOptions {
                        static_ips: n.static_ips.clone(),
                        aliases: n.aliases.clone(),
                        static_mac: n.static_mac.clone().unwrap_or_default(),
                        interface_name: n.interface_name.clone().unwrap_or_else(|| "eth0".into()),
                        ..Default::default()
                    },
                )
            })
            .collect(),
        port_mappings: c.config.ports.clone(),
        named_volumes: c
            .config
            .volumes
            .iter()
            .map(|v| NamedVolume {
                name: v.name.clone(),
                dest: v.dest.clone(),
                options: v.options.clone(),
                is_anonymous: v.anonymous,
                ..Default::default()
            })
            .collect(),
        user_volumes: c
            .config
            .volumes
            .iter()
            .map(|v| v.dest.clone())
            .chain(c.config.binds.iter().map(|b| b.dest.clone()))
            .collect(),
        entrypoint: c.config.entrypoint.clone(),
        command: c.config.command.clone(),
        labels: c.config.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        stop_signal: u32::try_from(c.config.stop_signal).unwrap_or(15),
        stop_timeout: c.config.stop_timeout,
        created_time: c.created_at.clone(),
        cgroup_manager: "cgroupfs".into(),
        cgroup_parent: c.config.cgroup_parent.clone(),
        cgroups_mode: "enabled".into(),
        log_path: layout.log_path(&c.id).to_string_lossy().into_owned(),
        log_driver: "k8s-file".into(),
        // No conmonPidFile / pid_file: Podman takes them as they are on restore, and our
        // runtime directory does not exist on its host.
        runtime: "runc".into(),
        umask: "0022".into(),
        extra: [
            ("createWorkingDir".to_string(), Value::Bool(true)),
            ("passwd".to_string(), Value::Bool(true)),
            ("labelopts".to_string(), serde_json::json!(["disable"])),
            ("sdnotifyMode".to_string(), Value::from("container")),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// The infra container ID a pod member takes namespace `ns` from, or empty.
fn pod_ctr(c: &ContainerRecord, ns: &str) -> String {
    if c.config.pod_shares.iter().any(|s| s == ns) {
        c.config.pod_infra.clone().unwrap_or_default()
    } else {
        String::new()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Our creation record for a container restored from `config` and its runtime `spec`.
pub fn from_libpod(config: &ContainerConfig, spec: &Value) -> CreateConfig {
    let process = &spec["process"];
    let args = strings(&process["args"]);
    CreateConfig {
        raw_image_name: if config.raw_image_name.is_empty() {
            config.rootfs_image_name.clone()
        } else {
            config.raw_image_name.clone()
        },
        image_name: config.rootfs_image_name.clone(),
        entrypoint: config.entrypoint.clone(),
        command: if config.command.is_empty() && config.entrypoint.is_empty() {
            args.clone()
        } else {
            config.command.clone()
        },
        args,
        env: strings(&process["env"]),
        workdir: process["cwd"].as_str().unwrap_or("/").to_string(),
        user: config.user.clone(),
        hostname: spec["hostname"].as_str().unwrap_or_default().to_string(),
        labels: config.labels.clone().into_iter().collect(),
        stop_signal: i32::try_from(config.stop_signal)
            .ok()
            .filter(|s| *s > 0)
            .unwrap_or(15),
        stop_timeout: config.stop_timeout,
        create_command: config.create_command.clone(),
        netns: None,
        network_mode: if config.network_mode.is_empty() {
            if config.networks.is_empty() {
                "none"
            } else {
                "bridge"
            }
            .into()
        } else {
            config.network_mode.clone()
        },
        networks: config
            .networks
            .iter()
            .map(|(name, o)| NetAttachment {
                network: from_podman_network(name),
                static_ips: o.static_ips.clone(),
                static_mac: (!o.static_mac.is_empty()).then(|| o.static_mac.clone()),
                aliases: o.aliases.clone(),
                interface_name: (!o.interface_name.is_empty()).then(|| o.interface_name.clone()),
            })
            .collect(),
        ports: config.port_mappings.clone(),
        volumes: config
            .named_volumes
            .iter()
            .map(|v| VolumeMount {
                name: v.name.clone(),
                dest: v.dest.clone(),
                options: v.options.clone(),
                anonymous: v.is_anonymous,
            })
            .collect(),
        binds: user_binds(config, spec),
        pod: (!config.pod.is_empty()).then(|| config.pod.clone()),
        pod_shares: [
            ("ipc", &config.ipc_ns_ctr),
            ("net", &config.net_ns_ctr),
            ("pid", &config.pid_ns_ctr),
            ("uts", &config.uts_ns_ctr),
            ("cgroup", &config.cgroup_ns_ctr),
        ]
        .into_iter()
        .filter(|(_, ctr)| !ctr.is_empty())
        .map(|(ns, _)| ns.to_string())
        .collect(),
        cgroup_parent: "/stasis".into(),
        auto_remove: spec["annotations"]["io.podman.annotations.autoremove"] == "TRUE",
        spec: Some(spec.clone()),
        ..Default::default()
    }
}

/// Bind mounts the user asked for: spec mounts at `userVolumes` destinations that are not
/// named volumes.
fn user_binds(config: &ContainerConfig, spec: &Value) -> Vec<BindMount> {
    let mounts = spec["mounts"].as_array().cloned().unwrap_or_default();
    config
        .user_volumes
        .iter()
        .filter(|d| !config.named_volumes.iter().any(|v| &v.dest == *d))
        .filter_map(|d| {
            let m = mounts.iter().find(|m| m["destination"] == d.as_str())?;
            Some(BindMount {
                source: m["source"].as_str()?.to_string(),
                dest: d.clone(),
                options: m["options"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|o| o.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_fixture_maps_to_a_create_config() {
        let raw = include_bytes!("../../archive/tests/fixtures/podman43-config.dump");
        let spec_raw = include_bytes!("../../archive/tests/fixtures/podman43-spec.dump");
        let cfg = ContainerConfig::from_json(raw).unwrap();
        let spec: Value = serde_json::from_slice(spec_raw).unwrap();
        let c = from_libpod(&cfg, &spec);
        assert_eq!(c.image_name, "localhost/stasis-test/busybox:latest");
        assert_eq!(c.args[0], "sh");
        assert_eq!(c.stop_signal, 15);
        assert_eq!(c.labels, vec![("fixture".to_string(), "yes".to_string())]);
        assert!(c.env.iter().any(|e| e == "PATH=/bin"));
        assert_eq!(c.network_mode, "bridge");
        assert_eq!(c.networks[0].network, "stasisfx-net");
        assert_eq!(c.networks[0].static_ips, vec!["10.89.77.5"]);
        assert_eq!(
            c.networks[0].static_mac.as_deref(),
            Some("92:d0:c6:0a:29:33")
        );
        assert_eq!(c.ports[0].host_port, 18080);
        assert_eq!(c.volumes[0].name, "stasisfx-vol");
        assert_eq!(c.volumes[0].dest, "/data");
        assert!(c.binds.is_empty());
    }
}
