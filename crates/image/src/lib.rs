//! Image store of stasis: load, import, pull, name and unpack container images.
//!
//! Images are kept the way the OCI image spec describes them, content-addressed under the engine
//! root (`--root`, default `/var/lib/stasis`):
//!
//! * `images/blobs/sha256/<hex>`: manifest and config blobs, each verified while it is read;
//! * `layers/<diff-id-hex>/diff`: every layer unpacked once, shared by all images that use it;
//! * `state.db` (shared with the other crates): tables `image_images`, `image_names`,
//!   `image_layers` and `layer_layers` tie names to images and images to layers (a layer is
//!   kept while an `image_layers` row refers to it).
//!
//! The image ID is the sha256 of the config blob, as Podman computes it, so one image has the same
//! ID in both engines. Compressed layer blobs are not kept: a layer is decompressed, hashed twice
//! (compressed digest and diff ID) and unpacked in one streaming pass.
//!
//! Every way in ([`ImageStore::load`], [`ImageStore::import_rootfs`], [`ImageStore::pull`]) first
//! stages its blobs and layers in temporary places, then commits them in one database
//! transaction under the store lock; a failure at any point removes what was staged, so a bad
//! archive or an interrupted pull leaves the store as it was.

mod archive;
mod digest;
mod import;
mod layer;
mod manifest;
mod progress;
mod pull;
mod reference;
mod registry;
mod stage;
mod store;

use std::path::PathBuf;

pub use archive::ArchiveError;
pub use layer::LayerError;
pub use manifest::{select_manifest, ManifestError, Platform};
pub use pull::PullError;
pub use reference::{Reference, ReferenceError};
pub use registry::{parse_www_authenticate, Challenge, RegistryError};
pub use store::ImageStore;

/// Re-export of the OCI spec crate whose `ImageConfiguration` is part of [`Image`].
pub use oci_spec;

/// One stored image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Image {
    /// sha256 of the config blob, 64 hex digits without the `sha256:` prefix.
    pub id: String,
    /// Fully qualified names (`docker.io/library/busybox:latest`), oldest first.
    pub names: Vec<String>,
    /// Digest of the manifest the image came with (`sha256:..`), when it came with one.
    pub digest: Option<String>,
    /// Creation time from the image config (RFC 3339).
    pub created: Option<String>,
    /// Sum of the uncompressed layer sizes in bytes.
    pub size: u64,
    /// The parsed image configuration.
    pub config: oci_spec::image::ImageConfiguration,
    /// Layer diff IDs (`sha256:..`), bottom layer first.
    pub layers: Vec<String>,
}

/// Options of [`ImageStore::pull`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `false` talks plain HTTP to the registry (Podman's `--tls-verify=false`).
    pub tls_verify: bool,
    /// User name for HTTP basic auth or for the bearer token server.
    pub username: Option<String>,
    /// Password matching `username`.
    pub password: Option<String>,
    /// Show download progress bars (only when stderr is a terminal).
    pub progress: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            tls_verify: true,
            username: None,
            password: None,
            progress: false,
        }
    }
}

/// Config overrides of [`ImageStore::import_rootfs`] (like `podman import --change`).
#[derive(Debug, Clone, Default)]
pub struct ImportConfig {
    /// Default command (`CMD`).
    pub cmd: Option<Vec<String>>,
    /// Environment (`ENV`), `KEY=value` entries.
    pub env: Vec<String>,
    /// Working directory (`WORKDIR`).
    pub workdir: Option<String>,
    /// Entrypoint (`ENTRYPOINT`).
    pub entrypoint: Option<Vec<String>>,
}

/// Errors of the image store. Errors of the parts (references, archives, layers, registries)
/// are folded in unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image \"{0}\" not found locally: load it with \"stasis image load -i FILE\" or pull it"
    )]
    NotFound(String),
    #[error("image reference \"{reference}\" is ambiguous: it matches images {candidates}; give more characters of the ID or a full name")]
    Ambiguous {
        reference: String,
        candidates: String,
    },
    #[error("{what} has digest {actual} but {claimed_by} says {expected}")]
    DigestMismatch {
        what: String,
        actual: String,
        expected: String,
        claimed_by: String,
    },
    #[error("{what} is not a valid image configuration: {detail}")]
    BadConfig { what: String, detail: String },
    #[error("layer {0} was removed by a concurrent image removal while this image was stored: retry the command")]
    LayerVanished(String),
    #[error("image {id} is stored but its {what} is missing ({path}): remove the image and load or pull it again")]
    Corrupt {
        id: String,
        what: String,
        path: PathBuf,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image database: {0}")]
    Db(#[from] stasis_state::rusqlite::Error),
    #[error(transparent)]
    State(#[from] stasis_state::StateError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Pull(#[from] PullError),
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }
}

/// Parses a config blob and checks its layer list; returns the config and its diff IDs.
pub(crate) fn parse_config(
    what: &str,
    bytes: &[u8],
) -> Result<(oci_spec::image::ImageConfiguration, Vec<String>), ImageError> {
    let bad = |detail: String| ImageError::BadConfig {
        what: what.to_string(),
        detail,
    };
    let config: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if let Some(bad_id) = diff_ids.iter().find(|d| digest::sha256_hex(d).is_none()) {
        return Err(bad(format!(
            "diff ID \"{bad_id}\" is not sha256:<64 hex digits>"
        )));
    }
    Ok((config, diff_ids))
}
