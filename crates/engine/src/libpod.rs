//! Mapping between our container record and libpod's `ContainerConfig` (`config.dump`), the
//! shape Podman reads and writes in checkpoint archives. Pure.

use std::collections::BTreeMap;

use serde_json::Value;
use stasis_archive::config::ContainerConfig;

use crate::config::CreateConfig;
use crate::db::ContainerRecord;
use crate::layout::Layout;

/// libpod's config for one of our containers, as Podman 4.3 would have written it.
pub fn to_libpod(c: &ContainerRecord, spec: &Value, layout: &Layout) -> ContainerConfig {
    let bundle = layout.bundle(&c.id).to_string_lossy().into_owned();
    let run = layout.run_dir(&c.id);
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
        create_net_ns: c.config.netns.is_some(),
        network_mode: c.config.network_mode.clone(),
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
        conmon_pid_file: layout.conmon_pidfile(&c.id).to_string_lossy().into_owned(),
        runtime: "runc".into(),
        umask: "0022".into(),
        extra: [
            (
                "pid_file".to_string(),
                Value::from(run.join("pidfile").to_string_lossy().into_owned()),
            ),
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
            "none".into()
        } else {
            config.network_mode.clone()
        },
        cgroup_parent: "/stasis".into(),
        auto_remove: spec["annotations"]["io.podman.annotations.autoremove"] == "TRUE",
        spec: Some(spec.clone()),
    }
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
    }
}
