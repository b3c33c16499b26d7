//! `config.dump`: libpod's `ContainerConfig` with the exact JSON key spellings of Podman 4.3
//! (`libpod/container_config.go`), and `spec.dump` decoding.
//!
//! Reading follows Go's decoder: a missing key or `null` gives the zero value, and every key this
//! struct does not model is kept in [`ContainerConfig::extra`] so a Podman config round-trips.
//! Writing follows Podman 4.3's encoder: keys Go writes without `omitempty` are always written,
//! the others are skipped when empty, and every value has the JSON type Go expects (`stopSignal` a
//! number, `staticIP`/`static_mac` strings, `createdTime` RFC 3339 with nanoseconds).

use crate::json::{is_false, is_zero_u32, null_default, JsonProblem};
use crate::names::{CONFIG_DUMP, SPEC_DUMP};
use crate::port::PortMapping;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Errors decoding or encoding `config.dump` and `spec.dump`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not JSON, or its values have the wrong types.
    #[error("{file}: {problem}; the archive is damaged or was not written by Podman or stasis")]
    Json {
        /// `config.dump` or `spec.dump`.
        file: &'static str,
        /// Position and cause.
        problem: JsonProblem,
    },
    /// `config.dump` has no (or an empty) `id`.
    #[error("{file}: the container ID (key \"id\") is missing or empty; the archive is damaged or not a container checkpoint")]
    MissingId {
        /// Always `config.dump`.
        file: &'static str,
    },
    /// `spec.dump` is JSON but not an object.
    #[error("{file}: expected a JSON object (an OCI runtime spec), found {found}; the archive is damaged")]
    NotAnObject {
        /// Always `spec.dump`.
        file: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// Encoding failed (only possible with non-string map keys in `extra`).
    #[error("{file}: cannot encode: {0}", file = CONFIG_DUMP)]
    Encode(String),
}

/// One named volume of the container (`namedVolumes[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NamedVolume {
    /// Volume name.
    #[serde(rename = "volumeName", default, deserialize_with = "null_default")]
    pub name: String,
    /// Mount destination in the container.
    #[serde(default, deserialize_with = "null_default")]
    pub dest: String,
    /// Mount options.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<String>,
    /// Anonymous volume (`-v /path`).
    #[serde(rename = "setAnonymous", default, skip_serializing_if = "is_false")]
    pub is_anonymous: bool,
    /// Keys not modelled here (`SubPath`, `noCreate`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Per-network options of the container (`newNetworks` values; netavark `PerNetworkOptions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PerNetworkOptions {
    /// Static IP addresses, as strings (Go `[]net.IP`).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub static_ips: Vec<String>,
    /// Network aliases.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aliases: Vec<String>,
    /// Static MAC address, as a string `aa:bb:cc:dd:ee:ff` (Go `HardwareAddr` marshals as string).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub static_mac: String,
    /// Interface name in the container (`eth0`).
    #[serde(default, deserialize_with = "null_default")]
    pub interface_name: String,
    /// Driver options.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub options: BTreeMap<String, String>,
    /// Keys not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

macro_rules! config_struct {
    ($($body:tt)*) => {
        /// libpod's `ContainerConfig` as written to `config.dump`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
        pub struct ContainerConfig { $($body)* }
    };
}

config_struct! {
    /// Create-time OCI spec (replaced by `spec.dump` on restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
    /// Full container ID (64 hex digits).
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// Container name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Pod **ID** the container belongs to, or empty.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// libpod namespace.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// libpod lock number.
    #[serde(rename = "lockID", default, deserialize_with = "null_default")]
    pub lock_id: u32,
    /// The command line that created the container.
    #[serde(rename = "CreateCommand", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub create_command: Vec<String>,
    /// Image name as the user typed it.
    #[serde(rename = "RawImageName", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub raw_image_name: String,
    /// containers/storage `IDMappingOptions`, kept opaque.
    #[serde(rename = "idMappingsOptions", default, skip_serializing_if = "Option::is_none")]
    pub id_mappings: Option<Value>,
    /// Explicit dependencies (`--requires`); Go field without a JSON tag. Written as `null` when
    /// `None`, like Go writes a nil slice.
    #[serde(rename = "Dependencies", default)]
    pub dependencies: Option<Vec<String>>,
    /// Image ID of the root filesystem.
    #[serde(rename = "rootfsImageID", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub rootfs_image_id: String,
    /// Image name of the root filesystem.
    #[serde(rename = "rootfsImageName", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub rootfs_image_name: String,
    /// Host directory used as rootfs (`--rootfs`), instead of an image.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub rootfs: String,
    /// Host directory of the container's private `/dev/shm`.
    #[serde(rename = "ShmDir", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub shm_dir: String,
    /// Size of `/dev/shm` in bytes.
    #[serde(rename = "shmSize", default, deserialize_with = "null_default")]
    pub shm_size: i64,
    /// No `/dev/shm` at all.
    #[serde(rename = "NoShm", default, deserialize_with = "null_default", skip_serializing_if = "is_false")]
    pub no_shm: bool,
    /// Don't share `/dev/shm` with the pod (the Go spelling really is `NOShmShare`).
    #[serde(rename = "NOShmShare", default, deserialize_with = "null_default", skip_serializing_if = "is_false")]
    pub no_shm_share: bool,
    /// The container's bundle/userdata directory.
    #[serde(rename = "staticDir", default, deserialize_with = "null_default")]
    pub static_dir: String,
    /// Extra mounts managed by libpod (host paths).
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// Named volumes.
    #[serde(rename = "namedVolumes", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub named_volumes: Vec<NamedVolume>,
    /// `--privileged`.
    #[serde(default, deserialize_with = "null_default")]
    pub privileged: bool,
    /// SELinux process label.
    #[serde(rename = "ProcessLabel", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub process_label: String,
    /// SELinux mount label.
    #[serde(rename = "MountLabel", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub mount_label: String,
    /// `--user`.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `--group-add`.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Container whose IPC namespace is joined.
    #[serde(rename = "ipcNsCtr", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub ipc_ns_ctr: String,
    /// Container whose mount namespace is joined.
    #[serde(rename = "mountNsCtr", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub mount_ns_ctr: String,
    /// Container whose network namespace is joined.
    #[serde(rename = "netNsCtr", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub net_ns_ctr: String,
    /// Container whose PID namespace is joined.
    #[serde(rename = "pidNsCtr", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub pid_ns_ctr: String,
    /// Container whose user namespace is joined.
    #[serde(rename = "userNsCtr", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub user_ns_ctr: String,
    /// Container whose UTS namespace is joined.
    #[serde(rename = "utsNsCtr", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub uts_ns_ctr: String,
    /// Container whose cgroup namespace is joined.
    #[serde(rename = "cgroupNsCtr", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub cgroup_ns_ctr: String,
    /// libpod creates (and configures) a network namespace.
    #[serde(rename = "createNetNS", default, deserialize_with = "null_default")]
    pub create_net_ns: bool,
    /// Pre-4.0 static IP (Go `net.IP`, a string).
    #[serde(rename = "staticIP", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub static_ip: String,
    /// Pre-4.0 static MAC (a string).
    #[serde(rename = "staticMAC", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub static_mac: String,
    /// Published ports.
    #[serde(rename = "newPortMappings", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// Pre-4.0 CNI port mappings, kept opaque.
    #[serde(rename = "portMappings", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub old_port_mappings: Vec<Value>,
    /// Exposed ports: port number (as a string key, Go `map[uint16]`) → protocols.
    #[serde(rename = "exposedPorts", default, deserialize_with = "null_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Vec<String>>,
    /// Use the image's resolv.conf (untagged Go field).
    #[serde(rename = "UseImageResolvConf", default, deserialize_with = "null_default")]
    pub use_image_resolv_conf: bool,
    /// Use the image's /etc/hosts (untagged Go field).
    #[serde(rename = "UseImageHosts", default, deserialize_with = "null_default")]
    pub use_image_hosts: bool,
    /// `--dns` servers (strings).
    #[serde(rename = "dnsServer", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub dns_server: Vec<String>,
    /// `--dns-search`.
    #[serde(rename = "dnsSearch", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(rename = "dnsOption", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub dns_option: Vec<String>,
    /// `--add-host` entries.
    #[serde(rename = "hostsAdd", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub hosts_add: Vec<String>,
    /// Networks (Podman 4.0–5.x): network name → options.
    #[serde(rename = "newNetworks", default, deserialize_with = "null_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, PerNetworkOptions>,
    /// Pre-4.0 network names.
    #[serde(rename = "networks", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub networks_deprecated: Vec<String>,
    /// Network mode (`bridge`, `host`, `slirp4netns`, `container:ID`, ...).
    #[serde(rename = "networkMode", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub network_mode: String,
    /// Volumes declared by the image.
    #[serde(rename = "userVolumes", default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub user_volumes: Vec<String>,
    /// Entrypoint.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Command.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Container labels.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Stop signal number (Go `uint`).
    #[serde(rename = "stopSignal", default, deserialize_with = "null_default", skip_serializing_if = "is_zero_u32")]
    pub stop_signal: u32,
    /// Stop timeout in seconds.
    #[serde(rename = "stopTimeout", default, deserialize_with = "null_default", skip_serializing_if = "is_zero_u32")]
    pub stop_timeout: u32,
    /// Creation time, Go `time.Time` text (see [`crate::go_time`]).
    #[serde(rename = "createdTime", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub created_time: String,
    /// `cgroupfs` or `systemd`.
    #[serde(rename = "cgroupManager", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub cgroup_manager: String,
    /// Parent cgroup.
    #[serde(rename = "cgroupParent", default, deserialize_with = "null_default")]
    pub cgroup_parent: String,
    /// `enabled`, `disabled`, `no-conmon`, `split`.
    #[serde(rename = "cgroupsMode", default, deserialize_with = "null_default")]
    pub cgroups_mode: String,
    /// Log file path.
    #[serde(rename = "logPath", default, deserialize_with = "null_default")]
    pub log_path: String,
    /// Log tag.
    #[serde(rename = "logTag", default, deserialize_with = "null_default")]
    pub log_tag: String,
    /// Log driver (`k8s-file`, `journald`, ...).
    #[serde(rename = "logDriver", default, deserialize_with = "null_default")]
    pub log_driver: String,
    /// conmon's PID file.
    #[serde(rename = "conmonPidFile", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub conmon_pid_file: String,
    /// Restart policy.
    #[serde(rename = "restart_policy", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub restart_policy: String,
    /// OCI runtime name (`runc`, `crun`); checkpointctl and Podman's pre-run read it.
    #[serde(rename = "runtime", default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    /// Is a pod infra container.
    #[serde(rename = "pause", default, deserialize_with = "null_default")]
    pub is_infra: bool,
    /// Is the default infra container.
    #[serde(rename = "defaultPause", default, deserialize_with = "null_default", skip_serializing_if = "is_false")]
    pub is_default_infra: bool,
    /// `--systemd` (Go `*bool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<bool>,
    /// umask, e.g. `0022`.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub umask: String,
    /// `--tz`.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub timezone: String,
    /// Every other key, kept as is.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ContainerConfig {
    /// Decodes `config.dump`. Errors name the file; an empty `id` is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let cfg: ContainerConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json {
                file: CONFIG_DUMP,
                problem: JsonProblem::from_serde(&e),
            })?;
        if cfg.id.is_empty() {
            return Err(ConfigError::MissingId { file: CONFIG_DUMP });
        }
        Ok(cfg)
    }

    /// Encodes as Podman does (`json.MarshalIndent`, two spaces).
    pub fn to_json_pretty(&self) -> Result<Vec<u8>, ConfigError> {
        serde_json::to_vec_pretty(self).map_err(|e| ConfigError::Encode(e.to_string()))
    }

    /// The namespace-sharing container IDs that are set, as `(namespace, id)` pairs.
    pub fn shared_namespaces(&self) -> Vec<(&'static str, &str)> {
        [
            ("IPC", self.ipc_ns_ctr.as_str()),
            ("mount", self.mount_ns_ctr.as_str()),
            ("network", self.net_ns_ctr.as_str()),
            ("PID", self.pid_ns_ctr.as_str()),
            ("user", self.user_ns_ctr.as_str()),
            ("UTS", self.uts_ns_ctr.as_str()),
            ("cgroup", self.cgroup_ns_ctr.as_str()),
        ]
        .into_iter()
        .filter(|(_, id)| !id.is_empty())
        .collect()
    }
}

/// Decodes `spec.dump`: any JSON object (the OCI spec is kept as a [`Value`]).
pub fn parse_spec_dump(bytes: &[u8]) -> Result<Value, ConfigError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ConfigError::Json {
        file: SPEC_DUMP,
        problem: JsonProblem::from_serde(&e),
    })?;
    if !v.is_object() {
        let found = match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        return Err(ConfigError::NotAnObject {
            file: SPEC_DUMP,
            found,
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/podman43-config.dump");
    const POD_FIXTURE: &[u8] = include_bytes!("../tests/fixtures/podman43-pod-config.dump");

    #[test]
    fn parses_real_podman_config() {
        let c = ContainerConfig::from_json(FIXTURE).unwrap();
        assert_eq!(
            c.id,
            "f41583fc3f07f3ae2e1c5cd05db1aee2ebdcca4f01cc36fba16fad737adec2b6"
        );
        assert_eq!(c.name, "stasisfx1");
        assert_eq!(c.lock_id, 1);
        assert_eq!(c.rootfs_image_name, "localhost/stasis-test/busybox:latest");
        assert_eq!(c.rootfs_image_id.len(), 64);
        assert_eq!(c.dependencies, None);
        assert_eq!(c.named_volumes.len(), 1);
        assert_eq!(c.named_volumes[0].name, "stasisfx-vol");
        assert_eq!(c.named_volumes[0].dest, "/data");
        assert_eq!(
            c.port_mappings,
            vec![PortMapping {
                host_ip: String::new(),
                container_port: 80,
                host_port: 18080,
                range: 1,
                protocol: "tcp".into()
            }]
        );
        let net = &c.networks["stasisfx-net"];
        assert_eq!(net.static_ips, vec!["10.89.77.5"]);
        assert_eq!(net.static_mac, "92:d0:c6:0a:29:33");
        assert_eq!(net.interface_name, "eth0");
        assert!(c.create_net_ns);
        assert_eq!(c.stop_signal, 15);
        assert_eq!(c.stop_timeout, 10);
        assert_eq!(c.created_time, "2026-12-04T14:44:51.408595346Z");
        assert_eq!(c.runtime, "runc");
        assert_eq!(c.log_driver, "k8s-file");
        assert_eq!(c.shm_size, 65_536_000);
        assert_eq!(c.labels["fixture"], "yes");
        assert!(c.pod.is_empty());
        assert!(c.extra.contains_key("labelopts"));
        assert!(c.extra.contains_key("healthcheck"));
        assert!(c.spec.as_ref().is_some_and(|s| s["ociVersion"].is_string()));
    }

    #[test]
    fn parses_pod_member() {
        let c = ContainerConfig::from_json(POD_FIXTURE).unwrap();
        assert_eq!(
            c.pod,
            "c472af8b112c19cedb2b07a4ed4c568dea60260c72763e0194869c4315dddc18"
        );
        let infra = "cf7f5e1a3e27458777eedff5ec9129f87f8b5cb8f8a6df6899fda1f685ef26a9";
        assert_eq!(c.ipc_ns_ctr, infra);
        assert_eq!(c.net_ns_ctr, infra);
        assert_eq!(c.uts_ns_ctr, infra);
        assert!(c.pid_ns_ctr.is_empty());
        assert_eq!(
            c.shared_namespaces(),
            vec![("IPC", infra), ("network", infra), ("UTS", infra)]
        );
        assert!(!c.create_net_ns);
    }

    #[test]
    fn round_trips_exactly() {
        for fixture in [FIXTURE, POD_FIXTURE] {
            let original: Value = serde_json::from_slice(fixture).unwrap();
            let c = ContainerConfig::from_json(fixture).unwrap();
            let again: Value = serde_json::from_slice(&c.to_json_pretty().unwrap()).unwrap();
            assert_eq!(original, again);
            assert_eq!(
                ContainerConfig::from_json(&c.to_json_pretty().unwrap()).unwrap(),
                c
            );
        }
    }

    #[test]
    fn writes_go_compatible_types() {
        let mut c = ContainerConfig {
            id: "abc".into(),
            stop_signal: 15,
            static_ip: "10.0.0.2".into(),
            ..Default::default()
        };
        c.networks.insert(
            "n".into(),
            PerNetworkOptions {
                static_mac: "aa:bb:cc:dd:ee:ff".into(),
                interface_name: "eth0".into(),
                ..Default::default()
            },
        );
        let v: Value = serde_json::from_slice(&c.to_json_pretty().unwrap()).unwrap();
        assert_eq!(v["stopSignal"], serde_json::json!(15));
        assert_eq!(v["staticIP"], "10.0.0.2");
        assert_eq!(v["lockID"], serde_json::json!(0));
        assert_eq!(v["Dependencies"], Value::Null);
        assert_eq!(v["newNetworks"]["n"]["static_mac"], "aa:bb:cc:dd:ee:ff");
        assert!(v["newNetworks"]["n"].get("static_ips").is_none());
        assert!(v.get("pod").is_none());
        assert!(v.get("createdTime").is_none());
    }

    #[test]
    fn null_values_are_zero_values() {
        let c = ContainerConfig::from_json(
            br#"{"id":"x","name":null,"CreateCommand":null,"newNetworks":null,"lockID":null,"labels":null}"#,
        )
        .unwrap();
        assert_eq!(c.name, "");
        assert!(c.create_command.is_empty() && c.networks.is_empty() && c.labels.is_empty());
    }

    #[test]
    fn malformed_json_names_file_and_position() {
        let e = ContainerConfig::from_json(b"{\n  \"id\": \"x\",\n    ]\n}").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("config.dump: invalid JSON at line 3 column 5: "),
            "{msg}"
        );
        assert!(msg.contains("the archive is damaged"), "{msg}");
        let e = ContainerConfig::from_json(br#"{"id":"x","stopSignal":"TERM"}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config.dump: unexpected value at line 1 column"),
            "{e}"
        );
        let e = ContainerConfig::from_json(b"").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config.dump: invalid JSON at line 1 column 0"),
            "{e}"
        );
    }

    #[test]
    fn missing_id_is_an_error() {
        let e = ContainerConfig::from_json(br#"{"name":"a"}"#).unwrap_err();
        assert!(matches!(e, ConfigError::MissingId { .. }));
        assert!(e
            .to_string()
            .contains("config.dump: the container ID (key \"id\") is missing"));
    }

    #[test]
    fn spec_dump() {
        let spec = parse_spec_dump(include_bytes!("../tests/fixtures/podman43-spec.dump")).unwrap();
        assert_eq!(spec["annotations"]["io.container.manager"], "libpod");
        let e = parse_spec_dump(b"[]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.dump: expected a JSON object (an OCI runtime spec), found an array; the archive is damaged"
        );
        let e = parse_spec_dump(b"{").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("spec.dump: invalid JSON at line 1 column 1"),
            "{e}"
        );
    }
}
