//! What a container was created with: the user's request resolved against its image.

use serde::{Deserialize, Serialize};
pub use stasis_archive::PortMapping;

pub use crate::volumes::{BindMount, VolumeMount};

/// One network a container joins, with what the user asked for on it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct NetAttachment {
    pub network: String,
    pub static_ips: Vec<String>,
    pub static_mac: Option<String>,
    pub aliases: Vec<String>,
    pub interface_name: Option<String>,
}

/// The container's creation record, stored as JSON in its database row. Checkpoint export maps
/// it onto Podman's `config.dump`; restore builds it back from one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CreateConfig {
    /// Image reference as the user typed it.
    pub raw_image_name: String,
    /// The image's canonical name (first of its names), or its ID when it has none.
    pub image_name: String,
    /// Final process arguments (entrypoint + command).
    pub args: Vec<String>,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    /// `user[:group]` as given or from the image.
    pub user: String,
    pub hostname: String,
    pub labels: Vec<(String, String)>,
    pub stop_signal: i32,
    pub stop_timeout: u32,
    /// The full command line that created the container (Podman's CreateCommand).
    pub create_command: Vec<String>,
    /// Path of the container's network namespace, when it has one of its own.
    pub netns: Option<String>,
    /// `bridge` (networks below), `none` (loopback only), `host` (the host's), or
    /// `container:<infra id>` (a pod's).
    pub network_mode: String,
    pub networks: Vec<NetAttachment>,
    /// Published ports (`-p`), host ports already chosen.
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMount>,
    pub binds: Vec<BindMount>,
    /// The pod (ID) the container belongs to.
    pub pod: Option<String>,
    /// The pod's infra container (ID), for members.
    pub pod_infra: Option<String>,
    /// Namespaces joined from the pod's infra container (`ipc`, `net`, `pid`, `uts`, `cgroup`).
    pub pod_shares: Vec<String>,
    /// This is a pod's infra container.
    pub infra: bool,
    pub cgroup_parent: String,
    /// `--rm`: remove the container when it exits.
    pub auto_remove: bool,
    /// The OCI runtime spec handed to runc (generated at create, or spec.dump on restore).
    pub spec: Option<serde_json::Value>,
}
