//! What a container was created with: the user's request resolved against its image.

use serde::{Deserialize, Serialize};

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
    /// `none` (loopback only) until networks land.
    pub network_mode: String,
    pub cgroup_parent: String,
    /// `--rm`: remove the container when it exits.
    pub auto_remove: bool,
    /// The OCI runtime spec handed to runc (generated at create, or spec.dump on restore).
    pub spec: Option<serde_json::Value>,
}
