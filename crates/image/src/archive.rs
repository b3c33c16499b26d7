//! `docker-archive` and `oci-archive` loading (as `podman save` writes them, optionally gzip
//! or zstd compressed as a whole).
//!
//! The outer tar is indexed once (entry name → offset and size); entries are then read in place
//! by seeking, so layers stream from the archive file straight into [`crate::layer`]. A
//! compressed archive is first decompressed into a temporary file under `root/images/tmp`,
//! because a compressed stream cannot seek and the manifest usually comes after the layers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::digest::{read_limited, sha256_hex, sha256_of, HashReader};
use crate::layer::{unpack_layer, Expect};
use crate::manifest::{self, Parsed, Platform};
use crate::reference::Reference;
use crate::stage::{Record, Stage};
use crate::store::ImageStore;
use crate::{parse_config, Image, ImageError};

/// Largest manifest, index or config accepted.
pub(crate) const METADATA_LIMIT: u64 = 16 << 20;
/// Most symlink hops followed inside an archive.
const MAX_LINK_HOPS: usize = 16;

/// Errors of archive reading.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read archive {archive}: {source}")]
    Read {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive} is neither a docker-archive (no manifest.json) nor an oci-archive (no index.json): save images with \"podman save --format docker-archive\" or \"--format oci-archive\"")]
    UnknownFormat { archive: PathBuf },
    #[error("archive {archive} lacks {entry}, which its {needed_by} refers to: the archive is incomplete")]
    Missing {
        archive: PathBuf,
        entry: String,
        needed_by: String,
    },
    #[error("{what} in archive {archive} is invalid: {detail}")]
    Invalid {
        archive: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{archive} is not a tar archive ({detail}): load expects a docker-archive or oci-archive as written by \"podman save\"")]
    NotTar { archive: PathBuf, detail: String },
    #[error("archive {archive} is truncated: entry {entry} ends beyond the end of the file (was the copy interrupted?)")]
    Truncated { archive: PathBuf, entry: String },
    #[error("archive {archive} is corrupt after entry {entry}: {source}")]
    Corrupt {
        archive: PathBuf,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("archive {archive} contains no image")]
    Empty { archive: PathBuf },
    #[error("{what} in archive {archive} is {actual} bytes but its {claimed_by} says {expected}")]
    SizeMismatch {
        archive: PathBuf,
        what: String,
        actual: u64,
        expected: u64,
        claimed_by: String,
    },
}

#[derive(Debug, Clone)]
enum Entry {
    File { offset: u64, size: u64 },
    Link(String),
}

/// Random access to the entries of an uncompressed tar file.
struct Index {
    /// The archive as named by the user, for messages.
    archive: PathBuf,
    /// The uncompressed tar (the archive itself or a temporary decompressed copy).
    tar: PathBuf,
    entries: HashMap<String, Entry>,
}

/// Lexically normalises an entry name: no leading `./` or `/`, no `.`; `None` when `..` would
/// leave the archive.
fn normalize(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl Index {
    fn build(archive: &Path, tar: PathBuf) -> Result<Self, ArchiveError> {
        let read_err = |source| ArchiveError::Read {
            archive: archive.to_path_buf(),
            source,
        };
        let file = File::open(&tar).map_err(read_err)?;
        let file_len = file.metadata().map_err(read_err)?.len();
        let mut ar = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let mut last = String::new();
        for entry in ar.entries_with_seek().map_err(read_err)? {
            let entry = entry.map_err(|source| {
                if last.is_empty() {
                    ArchiveError::NotTar {
                        archive: archive.to_path_buf(),
                        detail: source.to_string(),
                    }
                } else {
                    ArchiveError::Corrupt {
                        archive: archive.to_path_buf(),
                        entry: last.clone(),
                        source,
                    }
                }
            })?;
            let Some(name) = entry.path().ok().and_then(|p| normalize(&p)) else {
                continue;
            };
            last.clone_from(&name);
            let kind = entry.header().entry_type();
            if entry.raw_file_position().saturating_add(entry.size()) > file_len {
                return Err(ArchiveError::Truncated {
                    archive: archive.to_path_buf(),
                    entry: name,
                });
            }
            let e = if kind.is_file() {
                Entry::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().ok().flatten() else {
                    continue;
                };
                let base = if kind.is_symlink() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(target)
                } else {
                    target.into_owned()
                };
                match normalize(&base) {
                    Some(t) => Entry::Link(t),
                    None => continue,
                }
            } else {
                continue;
            };
            entries.insert(name, e);
        }
        Ok(Self {
            archive: archive.to_path_buf(),
            tar,
            entries,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn locate(&self, name: &str, needed_by: &str) -> Result<(u64, u64), ArchiveError> {
        let mut current = normalize(Path::new(name)).unwrap_or_default();
        for _ in 0..MAX_LINK_HOPS {
            match self.entries.get(&current) {
                Some(Entry::File { offset, size }) => return Ok((*offset, *size)),
                Some(Entry::Link(t)) => current = t.clone(),
                None => break,
            }
        }
        Err(ArchiveError::Missing {
            archive: self.archive.clone(),
            entry: name.to_string(),
            needed_by: needed_by.to_string(),
        })
    }

    /// A reader of one entry's content.
    fn open(
        &self,
        name: &str,
        needed_by: &str,
    ) -> Result<(Box<dyn Read + Send>, u64), ArchiveError> {
        let (offset, size) = self.locate(name, needed_by)?;
        let read_err = |source| ArchiveError::Read {
            archive: self.archive.clone(),
            source,
        };
        let mut f = File::open(&self.tar).map_err(read_err)?;
        f.seek(SeekFrom::Start(offset)).map_err(read_err)?;
        Ok((
            Box::new(io::BufReader::with_capacity(1 << 16, f).take(size)),
            size,
        ))
    }

    fn read_small(&self, name: &str, needed_by: &str) -> Result<Vec<u8>, ArchiveError> {
        let (mut r, _) = self.open(name, needed_by)?;
        read_limited(&mut r, METADATA_LIMIT).map_err(|source| ArchiveError::Read {
            archive: self.archive.clone(),
            source,
        })
    }

    fn invalid(&self, what: &str, detail: impl ToString) -> ArchiveError {
        ArchiveError::Invalid {
            archive: self.archive.clone(),
            what: what.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// The hex digest a blob's file name claims: `<hex>`, `<hex>.tar`, `<hex>.json`,
/// `blobs/sha256/<hex>`. Legacy `<id>/layer.tar` names claim nothing.
fn claimed_hex(name: &str) -> Option<&str> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base
        .strip_suffix(".tar")
        .or_else(|| base.strip_suffix(".json"))
        .unwrap_or(base);
    crate::digest::is_hex64(stem).then_some(stem)
}

/// Loads every image of `archive` into `store`, all or nothing.
pub(crate) fn load(store: &ImageStore, archive: &Path) -> Result<Vec<Image>, ImageError> {
    let read_err = |source| ArchiveError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let mut file = File::open(archive).map_err(read_err)?;
    let mut head = [0u8; 8];
    let n = read_head(&mut file, &mut head).map_err(read_err)?;
    let compressed = !matches!(stasis_tar::detect(&head[..n]), stasis_tar::Detected::Plain);
    // Keeps the decompressed copy alive (and removes it at the end).
    let mut _decompressed = None;
    let tar_path = if compressed {
        file.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let (_, mut reader) = stasis_tar::decompress(file).map_err(|e| {
            ImageError::from(ArchiveError::Read {
                archive: archive.to_path_buf(),
                source: io::Error::other(e),
            })
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix("archive-")
            .tempfile_in(&store.tmp_dir)
            .map_err(ImageError::io(format!(
                "creating a temporary file in {}",
                store.tmp_dir.display()
            )))?;
        io::copy(&mut reader, tmp.as_file_mut()).map_err(read_err)?;
        let path = tmp.path().to_path_buf();
        _decompressed = Some(tmp);
        path
    } else {
        archive.to_path_buf()
    };
    let index = Index::build(archive, tar_path)?;
    let mut stage = Stage::new(store)?;
    let records = if index.has("manifest.json") {
        load_docker(&index, &mut stage)?
    } else if index.has("index.json") {
        load_oci(&index, &mut stage)?
    } else {
        return Err(ArchiveError::UnknownFormat {
            archive: archive.to_path_buf(),
        }
        .into());
    };
    if records.is_empty() {
        return Err(ArchiveError::Empty {
            archive: archive.to_path_buf(),
        }
        .into());
    }
    stage.commit(records)
}

fn read_head(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn normalize_names(index: &Index, names: &[String]) -> Result<Vec<String>, ImageError> {
    names
        .iter()
        .map(|n| {
            Reference::parse(n)
                .map(|r| r.to_string())
                .map_err(|e| index.invalid("image name", e).into())
        })
        .collect()
}

fn load_docker(index: &Index, stage: &mut Stage<'_>) -> Result<Vec<Record>, ImageError> {
    let bytes = index.read_small("manifest.json", "format")?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&bytes).map_err(|e| index.invalid("manifest.json", e))?;
    let archive = index.archive.display().to_string();
    let mut records = Vec::new();
    for entry in entries {
        let config_bytes = index.read_small(&entry.config, "manifest.json")?;
        let id_digest = sha256_of(&config_bytes);
        let config_what = format!("config {} of archive {archive}", entry.config);
        if let Some(claimed) = claimed_hex(&entry.config) {
            if id_digest != format!("sha256:{claimed}") {
                return Err(ImageError::DigestMismatch {
                    what: config_what,
                    actual: id_digest,
                    expected: format!("sha256:{claimed}"),
                    claimed_by: "its file name".into(),
                });
            }
        }
        let (config, diff_ids) = parse_config(&config_what, &config_bytes)?;
        if diff_ids.len() != entry.layers.len() {
            return Err(index
                .invalid(
                    "manifest.json",
                    format!(
                        "it lists {} layers for {} but the config has {} diff IDs",
                        entry.layers.len(),
                        entry.config,
                        diff_ids.len()
                    ),
                )
                .into());
        }
        for (layer_name, diff_id) in entry.layers.iter().zip(&diff_ids) {
            if stage.has_layer(diff_id)? {
                continue;
            }
            let (reader, _) = index.open(layer_name, "manifest.json")?;
            let what = format!("layer {layer_name} of archive {archive}");
            let claimed = claimed_hex(layer_name).map(|h| format!("sha256:{h}"));
            let expect = Expect {
                compressed: claimed.as_deref().map(|c| (c, "its file name")),
                diff_id: Some((diff_id, "its image config")),
            };
            let layer = unpack_layer(reader, &stage.store().layers_dir, &what, &expect)?;
            stage.add_layer(layer);
        }
        stage.add_blob(&config_bytes)?;
        records.push(Record {
            id: id_digest.trim_start_matches("sha256:").to_string(),
            manifest_digest: None,
            created: config.created().clone(),
            names: normalize_names(index, entry.repo_tags.as_deref().unwrap_or_default())?,
            layers: diff_ids,
        });
    }
    Ok(records)
}

/// Reads a blob of an OCI layout, verifying size and digest.
fn read_oci_blob(
    index: &Index,
    digest: &str,
    size: Option<u64>,
    what: &str,
    claimed_by: &str,
) -> Result<Vec<u8>, ImageError> {
    let hex = sha256_hex(digest).ok_or_else(|| index.invalid(what, "digest is not sha256"))?;
    let (reader, actual_size) = index.open(&format!("blobs/sha256/{hex}"), claimed_by)?;
    if let Some(expected) = size.filter(|s| *s != actual_size) {
        return Err(ArchiveError::SizeMismatch {
            archive: index.archive.clone(),
            what: what.to_string(),
            actual: actual_size,
            expected,
            claimed_by: claimed_by.to_string(),
        }
        .into());
    }
    let (mut hashing, hash) = HashReader::new(reader);
    let bytes =
        read_limited(&mut hashing, METADATA_LIMIT).map_err(|source| ArchiveError::Read {
            archive: index.archive.clone(),
            source,
        })?;
    let (actual, _) = hash.finish();
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what: format!("{what} of archive {}", index.archive.display()),
            actual,
            expected: digest.to_string(),
            claimed_by: claimed_by.to_string(),
        });
    }
    Ok(bytes)
}

#[derive(Debug, Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<manifest::Descriptor>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn load_oci(index: &Index, stage: &mut Stage<'_>) -> Result<Vec<Record>, ImageError> {
    let bytes = index.read_small("index.json", "format")?;
    let top: OciIndex =
        serde_json::from_slice(&bytes).map_err(|e| index.invalid("index.json", e))?;
    let archive = index.archive.display().to_string();
    let mut records = Vec::new();
    for desc in top.manifests {
        // Only full references name an image; a bare tag ("latest") does not say which repository.
        let names: Vec<String> = [CONTAINERD_NAME, REF_NAME]
            .iter()
            .filter_map(|k| desc.annotations.get(*k))
            .find(|n| n.contains('/') || n.contains(':'))
            .and_then(|n| Reference::parse(n).ok())
            .map(|r| r.to_string())
            .into_iter()
            .collect();
        let mut digest = desc.digest.clone();
        let mut size = Some(desc.size);
        let mut what = format!("manifest {digest}");
        let mut bytes = read_oci_blob(index, &digest, size, &what, "index.json")?;
        let (config_desc, layers) = loop {
            match manifest::parse(&what, &bytes, Some(&desc.media_type))? {
                Parsed::Image { config, layers } => break (config, layers),
                Parsed::Index { manifests } => {
                    let chosen = manifest::select_manifest(&what, &manifests, &Platform::host())?;
                    let chosen_size = manifests
                        .iter()
                        .find(|m| m.digest == chosen)
                        .map(|m| m.size);
                    let parent = what.clone();
                    digest = chosen.to_string();
                    size = chosen_size;
                    what = format!("manifest {digest}");
                    bytes = read_oci_blob(index, &digest, size, &what, &parent)?;
                }
            }
        };
        let manifest_what = what;
        let config_bytes = read_oci_blob(
            index,
            &config_desc.digest,
            Some(config_desc.size),
            &format!("config {}", config_desc.digest),
            &manifest_what,
        )?;
        let config_what = format!("config {} of archive {archive}", config_desc.digest);
        let (config, diff_ids) = parse_config(&config_what, &config_bytes)?;
        if diff_ids.len() != layers.len() {
            return Err(index
                .invalid(
                    &manifest_what,
                    format!(
                        "it lists {} layers but its config has {} diff IDs",
                        layers.len(),
                        diff_ids.len()
                    ),
                )
                .into());
        }
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            if stage.has_layer(diff_id)? {
                continue;
            }
            let hex = sha256_hex(&layer.digest).unwrap_or_default();
            let (reader, actual_size) =
                index.open(&format!("blobs/sha256/{hex}"), &manifest_what)?;
            let what = format!("layer {} of archive {archive}", layer.digest);
            if actual_size != layer.size {
                return Err(ArchiveError::SizeMismatch {
                    archive: index.archive.clone(),
                    what: format!("layer {}", layer.digest),
                    actual: actual_size,
                    expected: layer.size,
                    claimed_by: manifest_what.clone(),
                }
                .into());
            }
            let claimed_by = format!("its {manifest_what}");
            let expect = Expect {
                compressed: Some((&layer.digest, &claimed_by)),
                diff_id: Some((diff_id, "its image config")),
            };
            let unpacked = unpack_layer(reader, &stage.store().layers_dir, &what, &expect)?;
            stage.add_layer(unpacked);
        }
        let manifest_digest = stage.add_blob(&bytes)?;
        let id = stage.add_blob(&config_bytes)?;
        records.push(Record {
            id: id.trim_start_matches("sha256:").to_string(),
            manifest_digest: Some(manifest_digest),
            created: config.created().clone(),
            names,
            layers: diff_ids,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(normalize(Path::new("./a/b")).as_deref(), Some("a/b"));
        assert_eq!(normalize(Path::new("/a/./b/../c")).as_deref(), Some("a/c"));
        assert_eq!(normalize(Path::new("../x")), None);
        let h = "a".repeat(64);
        assert_eq!(claimed_hex(&format!("{h}.tar")), Some(h.as_str()));
        assert_eq!(claimed_hex(&format!("blobs/sha256/{h}")), Some(h.as_str()));
        assert_eq!(claimed_hex(&format!("{h}/layer.tar")), None);
    }
}
