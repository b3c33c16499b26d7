//! Staging: blobs and layers are first written to temporary places; [`Stage::commit`] moves
//! them into the store and records them in one transaction under the store lock. Dropping a
//! stage that was not committed (any error on the way) removes everything staged.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use stasis_state::rusqlite::{params, OptionalExtension, TransactionBehavior};
use tempfile::TempDir;

use crate::digest::{sha256_hex, sha256_of};
use crate::layer::UnpackedLayer;
use crate::store::ImageStore;
use crate::{Image, ImageError};

/// An image to record at commit.
#[derive(Debug)]
pub(crate) struct Record {
    /// 64 hex digits: the digest of the config blob, which must be staged.
    pub id: String,
    pub manifest_digest: Option<String>,
    pub created: Option<String>,
    pub names: Vec<String>,
    /// Diff IDs, bottom first; each must be staged or already stored.
    pub layers: Vec<String>,
}

/// Blobs and layers waiting for [`Stage::commit`].
#[derive(Debug)]
pub(crate) struct Stage<'s> {
    store: &'s ImageStore,
    tmp: TempDir,
    blobs: Vec<String>,
    layers: Vec<UnpackedLayer>,
    layer_ids: HashSet<String>,
}

/// Paths created during a commit, removed again unless the commit succeeded.
#[derive(Default)]
struct Undo {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl<'s> Stage<'s> {
    pub(crate) fn new(store: &'s ImageStore) -> Result<Self, ImageError> {
        let tmp = tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&store.tmp_dir)
            .map_err(ImageError::io(format!(
                "creating a staging directory in {}",
                store.tmp_dir.display()
            )))?;
        Ok(Self {
            store,
            tmp,
            blobs: Vec::new(),
            layers: Vec::new(),
            layer_ids: HashSet::new(),
        })
    }

    pub(crate) fn store(&self) -> &'s ImageStore {
        self.store
    }

    /// Stages a small blob whose digest the caller already verified; returns `sha256:<hex>`.
    pub(crate) fn add_blob(&mut self, bytes: &[u8]) -> Result<String, ImageError> {
        let digest = sha256_of(bytes);
        let hex = digest.trim_start_matches("sha256:").to_string();
        if !self.blobs.contains(&hex) {
            let path = self.tmp.path().join(&hex);
            std::fs::write(&path, bytes)
                .map_err(ImageError::io(format!("writing {}", path.display())))?;
            self.blobs.push(hex);
        }
        Ok(digest)
    }

    /// `true` when the layer need not be unpacked: it is stored or already staged.
    pub(crate) fn has_layer(&self, diff_id: &str) -> Result<bool, ImageError> {
        Ok(self.layer_ids.contains(diff_id) || self.store.has_layer(diff_id)?)
    }

    pub(crate) fn add_layer(&mut self, layer: UnpackedLayer) {
        if self.layer_ids.insert(layer.diff_id.clone()) {
            self.layers.push(layer);
        }
    }

    /// Moves everything staged into the store and records `records`, all or nothing.
    pub(crate) fn commit(self, records: Vec<Record>) -> Result<Vec<Image>, ImageError> {
        let store = self.store;
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        {
            let _lock = store.lock()?;
            let mut undo = Undo::default();
            let mut conn = store.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for layer in self.layers {
                let hex = sha256_hex(&layer.diff_id)
                    .unwrap_or(&layer.diff_id)
                    .to_string();
                let known: Option<i64> = tx
                    .query_row(
                        "SELECT size FROM layer_layers WHERE diff_id = ?1",
                        [&layer.diff_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let final_dir = store.layers_dir.join(&hex);
                if known.is_some() && final_dir.join("diff").is_dir() {
                    continue; // another load stored it meanwhile; ours is dropped
                }
                if final_dir.exists() {
                    // Left by a crash between rename and commit: not recorded, so replace it.
                    store.discard_dir(&final_dir);
                }
                let tmp = layer.dir.keep();
                if let Err(e) = std::fs::rename(&tmp, &final_dir) {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(ImageError::Io {
                        context: format!(
                            "moving layer {} into {}",
                            layer.diff_id,
                            final_dir.display()
                        ),
                        source: e,
                    });
                }
                undo.dirs.push(final_dir);
                tx.execute(
                    "INSERT OR REPLACE INTO layer_layers (diff_id, size) VALUES (?1, ?2)",
                    params![layer.diff_id, i64::try_from(layer.size).unwrap_or(i64::MAX)],
                )?;
            }
            for hex in &self.blobs {
                let dest = store.blob_path(hex);
                if dest.exists() {
                    continue;
                }
                let src = self.tmp.path().join(hex);
                std::fs::rename(&src, &dest).map_err(ImageError::io(format!(
                    "moving blob sha256:{hex} into the store"
                )))?;
                undo.files.push(dest);
            }
            let added = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            for record in &records {
                let mut size: i64 = 0;
                for diff_id in &record.layers {
                    let layer_size: Option<i64> = tx
                        .query_row(
                            "SELECT size FROM layer_layers WHERE diff_id = ?1",
                            [diff_id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    let Some(layer_size) = layer_size else {
                        return Err(ImageError::LayerVanished(diff_id.clone()));
                    };
                    if !store.layer_dir(diff_id).is_dir() {
                        return Err(ImageError::LayerVanished(diff_id.clone()));
                    }
                    size = size.saturating_add(layer_size);
                }
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO image_images (id, manifest_digest, created, size, added) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![record.id, record.manifest_digest, record.created, size, added],
                )?;
                if inserted > 0 {
                    for (position, diff_id) in record.layers.iter().enumerate() {
                        tx.execute(
                            "INSERT INTO image_layers (image_id, position, diff_id) VALUES (?1, ?2, ?3)",
                            params![record.id, i64::try_from(position).unwrap_or(i64::MAX), diff_id],
                        )?;
                    }
                } else if record.manifest_digest.is_some() {
                    tx.execute(
                        "UPDATE image_images SET manifest_digest = ?2 WHERE id = ?1 AND manifest_digest IS NULL",
                        params![record.id, record.manifest_digest],
                    )?;
                }
                for name in &record.names {
                    tx.execute("DELETE FROM image_names WHERE name = ?1", [name])?;
                    tx.execute(
                        "INSERT INTO image_names (name, image_id) VALUES (?1, ?2)",
                        params![name, record.id],
                    )?;
                }
            }
            tx.commit()?;
            undo.files.clear();
            undo.dirs.clear();
        }
        ids.iter()
            .map(|id| {
                store
                    .get(id)?
                    .ok_or_else(|| ImageError::NotFound(id.clone()))
            })
            .collect()
    }
}
