//! `pull`: resolve the manifest (choosing the host platform from an index), fetch and verify
//! the config, stream every missing layer from the registry into the unpacker, then commit.

use crate::digest::{sha256_hex, sha256_of, HashReader};
use crate::layer::{unpack_layer, Expect};
use crate::manifest::{self, Parsed, Platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{Client, RegistryError};
use crate::stage::{Record, Stage};
use crate::store::ImageStore;
use crate::{parse_config, Image, ImageError, PullOptions};

/// Errors specific to pulling.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{what} from registry {host} has digest {actual} but {claimed_by} says {expected}: the registry or a proxy altered it")]
    Digest {
        host: String,
        what: String,
        actual: String,
        expected: String,
        claimed_by: String,
    },
    #[error("{what} from registry {host} is {actual} bytes but its manifest says {expected}")]
    Size {
        host: String,
        what: String,
        actual: u64,
        expected: u64,
    },
    #[error(
        "index {what} of registry {host} nests more than {0} levels",
        MAX_NESTING
    )]
    TooDeep { host: String, what: String },
}

/// Most nested index levels followed.
const MAX_NESTING: usize = 4;

fn check_digest(
    host: &str,
    what: &str,
    bytes: &[u8],
    expected: &str,
    claimed_by: &str,
) -> Result<(), PullError> {
    let actual = sha256_of(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(PullError::Digest {
            host: host.to_string(),
            what: what.to_string(),
            actual,
            expected: expected.to_string(),
            claimed_by: claimed_by.to_string(),
        })
    }
}

pub(crate) fn pull(
    store: &ImageStore,
    reference: &str,
    opts: &PullOptions,
) -> Result<Image, ImageError> {
    let r = Reference::parse(reference)?;
    let mut client = Client::new(&r.domain, &r.path, opts);
    let host = client.host().to_string();
    let progress = Progress::new(opts.progress);

    let mut what = format!("manifest {}", r.manifest_ref());
    let what_image = format!("image {r}");
    let (mut bytes, mut content_type) = client.manifest(r.manifest_ref(), &what_image)?;
    if let Some(d) = &r.digest {
        check_digest(&host, &what, &bytes, d, "the reference")?;
    }
    let mut depth = 0;
    let (config_desc, layers) = loop {
        match manifest::parse(&what, &bytes, content_type.as_deref())? {
            Parsed::Image { config, layers } => break (config, layers),
            Parsed::Index { manifests } => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(PullError::TooDeep { host, what }.into());
                }
                let chosen =
                    manifest::select_manifest(&what, &manifests, &Platform::host())?.to_string();
                let parent = what.clone();
                what = format!("manifest {chosen}");
                let (b, ct) = client.manifest(&chosen, &what)?;
                check_digest(&host, &what, &b, &chosen, &parent)?;
                bytes = b;
                content_type = ct;
            }
        }
    };
    let manifest_what = what;

    let config_what = format!("config {}", config_desc.digest);
    let (reader, _) = client.blob(&config_desc.digest, &config_what)?;
    let (mut hashing, hash) = HashReader::new(reader);
    let config_bytes = crate::digest::read_limited(&mut hashing, crate::archive::METADATA_LIMIT)
        .map_err(|e| RegistryError::Http {
            host: host.clone(),
            detail: format!("reading {config_what}: {e}"),
        })?;
    let (actual, _) = hash.finish();
    if actual != config_desc.digest {
        return Err(PullError::Digest {
            host,
            what: config_what,
            actual,
            expected: config_desc.digest,
            claimed_by: manifest_what,
        }
        .into());
    }
    let (config, diff_ids) = parse_config(&format!("{config_what} of {r}"), &config_bytes)?;
    if diff_ids.len() != layers.len() {
        return Err(ImageError::BadConfig {
            what: format!("{config_what} of {r}"),
            detail: format!(
                "it has {} diff IDs but {manifest_what} lists {} layers",
                diff_ids.len(),
                layers.len()
            ),
        });
    }

    let mut stage = Stage::new(store)?;
    let claimed_by = format!("its {manifest_what}");
    for (layer, diff_id) in layers.iter().zip(&diff_ids) {
        let short = sha256_hex(&layer.digest).map_or("?", |h| &h[..12]);
        if stage.has_layer(diff_id)? {
            progress.println(&format!("{short}: already present"));
            continue;
        }
        let what = format!("layer {} of {r}", layer.digest);
        let (reader, len) = client.blob(&layer.digest, &what)?;
        if let Some(len) = len.filter(|l| *l != layer.size && layer.size != 0) {
            return Err(PullError::Size {
                host,
                what,
                actual: len,
                expected: layer.size,
            }
            .into());
        }
        // Never read more than the manifest announces (one byte more makes the digest fail).
        let reader: Box<dyn std::io::Read + Send> = if layer.size > 0 {
            Box::new(std::io::Read::take(reader, layer.size + 1))
        } else {
            reader
        };
        let (reader, bar) = progress.wrap(reader, len.or(Some(layer.size)), short);
        let expect = Expect {
            compressed: Some((&layer.digest, &claimed_by)),
            diff_id: Some((diff_id, "its image config")),
        };
        let unpacked = unpack_layer(reader, &store.layers_dir, &what, &expect);
        if let Some(bar) = bar {
            bar.finish();
        }
        stage.add_layer(unpacked?);
    }
    let manifest_digest = stage.add_blob(&bytes)?;
    let id = stage.add_blob(&config_bytes)?;
    let mut images = stage.commit(vec![Record {
        id: id.trim_start_matches("sha256:").to_string(),
        manifest_digest: Some(manifest_digest),
        created: config.created().clone(),
        names: vec![r.to_string()],
        layers: diff_ids,
    }])?;
    images
        .pop()
        .ok_or_else(|| ImageError::NotFound(reference.to_string()))
}
