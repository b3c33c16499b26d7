//! The image store: directories, database tables, lookup, naming and removal.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use stasis_state::rusqlite::{self, params, OptionalExtension};
use stasis_state::FileLock;

use crate::digest::{is_hex64, sha256_hex};
use crate::reference::Reference;
use crate::{parse_config, Image, ImageError, ImportConfig, PullOptions};

/// Tables of this crate in the shared state database. A layer stays while an `image_layers` row
/// refers to it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS image_images (
    id TEXT PRIMARY KEY,
    manifest_digest TEXT,
    created TEXT,
    size INTEGER NOT NULL,
    added INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_names (
    name TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES image_images(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS image_names_by_image ON image_names(image_id);
CREATE TABLE IF NOT EXISTS layer_layers (
    diff_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_layers (
    image_id TEXT NOT NULL REFERENCES image_images(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    diff_id TEXT NOT NULL REFERENCES layer_layers(diff_id),
    PRIMARY KEY (image_id, position)
);
CREATE INDEX IF NOT EXISTS image_layers_by_layer ON image_layers(diff_id)";

/// Handle on the images of one engine root. Cheap to open; safe to use from several processes
/// at once (the database serialises writers, a lock file covers filesystem + database commits).
pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) blobs_dir: PathBuf,
    pub(crate) layers_dir: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    lock_path: PathBuf,
    conn: Mutex<rusqlite::Connection>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`: `root/images`, `root/layers` and the
    /// tables in `root/state.db`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let images = root.join("images");
        let blobs_dir = images.join("blobs").join("sha256");
        let layers_dir = root.join("layers");
        let tmp_dir = images.join("tmp");
        for dir in [&blobs_dir, &layers_dir, &tmp_dir] {
            std::fs::create_dir_all(dir)
                .map_err(ImageError::io(format!("creating {}", dir.display())))?;
        }
        let conn = stasis_state::open_db(root)?;
        stasis_state::ensure_schema(&conn, SCHEMA)?;
        // Staging left by a crashed process; young entries may belong to a running one.
        sweep_stale(&layers_dir, ".tmp-");
        sweep_stale(&tmp_dir, "");
        Ok(Self {
            root: root.to_path_buf(),
            blobs_dir,
            layers_dir,
            tmp_dir,
            lock_path: images.join("store.lock"),
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the store lock, held while the filesystem and the database change together.
    pub(crate) fn lock(&self) -> Result<FileLock, ImageError> {
        Ok(FileLock::exclusive(&self.lock_path)?)
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs_dir.join(hex)
    }

    pub(crate) fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.layers_dir
            .join(sha256_hex(diff_id).unwrap_or(diff_id))
            .join("diff")
    }

    /// Loads a `docker-archive` or `oci-archive` (plain, gzip or zstd), as `podman save`
    /// writes it. Returns every image in it; names come from `RepoTags` or the
    /// `org.opencontainers.image.ref.name` annotation.
    pub fn load(&self, archive: &Path) -> Result<Vec<Image>, ImageError> {
        crate::archive::load(self, archive)
    }

    /// Imports a root filesystem tarball as a one-layer image (like `podman import`), named
    /// `reference` (short names go under `localhost/`).
    pub fn import_rootfs(
        &self,
        tar: &mut dyn std::io::Read,
        reference: Option<&str>,
        config: ImportConfig,
    ) -> Result<Image, ImageError> {
        crate::import::import_rootfs(self, tar, reference, config)
    }

    /// Pulls an image from a registry speaking the OCI distribution API.
    pub fn pull(&self, reference: &str, opts: &PullOptions) -> Result<Image, ImageError> {
        crate::pull::pull(self, reference, opts)
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT id FROM image_images ORDER BY added DESC, id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut images = Vec::with_capacity(ids.len());
        for id in ids {
            // An image removed meanwhile is simply not listed.
            if let Some(image) = self.get(&id)? {
                images.push(image);
            }
        }
        Ok(images)
    }

    /// The image with exactly this ID (64 hex digits, `sha256:` prefix accepted).
    pub fn get(&self, id: &str) -> Result<Option<Image>, ImageError> {
        let id = id.strip_prefix("sha256:").unwrap_or(id);
        let conn = self.conn();
        let row: Option<(Option<String>, Option<String>, i64)> = conn
            .query_row(
                "SELECT manifest_digest, created, size FROM image_images WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((digest, created, size)) = row else {
            return Ok(None);
        };
        let names = query_strings(
            &conn,
            "SELECT name FROM image_names WHERE image_id = ?1 ORDER BY rowid",
            id,
        )?;
        let layers = query_strings(
            &conn,
            "SELECT diff_id FROM image_layers WHERE image_id = ?1 ORDER BY position",
            id,
        )?;
        drop(conn);
        let path = self.blob_path(id);
        let bytes = std::fs::read(&path).map_err(|_| ImageError::Corrupt {
            id: id.to_string(),
            what: "config blob".into(),
            path: path.clone(),
        })?;
        let (config, _) = parse_config(&format!("config of image {id}"), &bytes)?;
        Ok(Some(Image {
            id: id.to_string(),
            names,
            digest,
            created,
            size: u64::try_from(size).unwrap_or(0),
            config,
            layers,
        }))
    }

    /// Finds an image by full name, short name (`busybox` tries `localhost/busybox:latest`,
    /// `docker.io/library/busybox:latest`, then any unique `.../busybox:latest`), name without
    /// tag, full ID or unique ID prefix of at least 3 digits (`sha256:` prefix accepted).
    pub fn resolve(&self, reference: &str) -> Result<Image, ImageError> {
        let id = self.resolve_id(reference)?;
        self.get(&id)?
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))
    }

    fn resolve_id(&self, reference: &str) -> Result<String, ImageError> {
        let input = reference.trim();
        let not_found = || ImageError::NotFound(reference.to_string());
        let (id_like, forced_id) = match input.strip_prefix("sha256:") {
            Some(rest) => (rest, true),
            None => (input, false),
        };
        let hexish = id_like.len() >= 3
            && id_like.len() <= 64
            && id_like
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let conn = self.conn();
        if is_hex64(id_like) {
            let found: Option<String> = conn
                .query_row(
                    "SELECT id FROM image_images WHERE id = ?1",
                    [id_like],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = found {
                return Ok(id);
            }
        }
        if !forced_id {
            for candidate in name_candidates(input) {
                let found: Option<String> = conn
                    .query_row(
                        "SELECT image_id FROM image_names WHERE name = ?1",
                        [&candidate],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(id) = found {
                    return Ok(id);
                }
            }
        }
        if !forced_id {
            if let Some(id) = by_manifest_digest(&conn, input)? {
                return Ok(id);
            }
        }
        if hexish {
            let pattern = format!("{id_like}%");
            let ids = query_strings(
                &conn,
                "SELECT id FROM image_images WHERE id LIKE ?1 ORDER BY id",
                &pattern,
            )?;
            match ids.len() {
                0 => {}
                1 => return Ok(ids.into_iter().next().unwrap_or_default()),
                _ => {
                    return Err(ImageError::Ambiguous {
                        reference: reference.to_string(),
                        candidates: short_ids(&ids),
                    })
                }
            }
        }
        if forced_id || !Reference::is_short_name(input) {
            return Err(not_found());
        }
        // A short name matches the last components of any stored name.
        let Ok(local) = Reference::parse(&format!("localhost/{input}")) else {
            return Err(not_found());
        };
        let suffix = local.to_string();
        let suffix = format!("/{}", suffix.strip_prefix("localhost/").unwrap_or(&suffix));
        let mut stmt = conn.prepare("SELECT name, image_id FROM image_names ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut ids: Vec<String> = Vec::new();
        for row in rows {
            let (name, id) = row?;
            if name.ends_with(&suffix) && !ids.contains(&id) {
                ids.push(id);
            }
        }
        match ids.len() {
            0 => Err(not_found()),
            1 => Ok(ids.into_iter().next().unwrap_or_default()),
            _ => Err(ImageError::Ambiguous {
                reference: reference.to_string(),
                candidates: short_ids(&ids),
            }),
        }
    }

    /// Adds the name `name` to the image `id` (any reference [`ImageStore::resolve`] accepts).
    /// Short names go under `localhost/`, like `podman tag`. A name held by another image moves.
    pub fn tag(&self, id: &str, name: &str) -> Result<(), ImageError> {
        let name = local_name(name)?;
        let image = self.resolve(id)?;
        let _lock = self.lock()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM image_names WHERE name = ?1", [&name])?;
        let n = tx.execute(
            "INSERT INTO image_names (name, image_id) SELECT ?1, id FROM image_images WHERE id = ?2",
            params![name, image.id],
        )?;
        if n == 0 {
            return Err(ImageError::NotFound(id.to_string()));
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the name `name` from its image, keeping the image (like `podman untag`).
    pub fn untag(&self, name: &str) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let conn = self.conn();
        for candidate in name_candidates(name) {
            if conn.execute("DELETE FROM image_names WHERE name = ?1", [&candidate])? > 0 {
                return Ok(());
            }
        }
        Err(ImageError::NotFound(name.to_string()))
    }

    /// Removes the image `reference` resolves to, its blobs and the layers no other image uses.
    /// Returns the removed image IDs. The engine checks that no container uses the image.
    pub fn remove(&self, reference: &str) -> Result<Vec<String>, ImageError> {
        let id = self.resolve_id(reference)?;
        let lock = self.lock()?;
        let (manifest, gone_layers) = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let manifest: Option<Option<String>> = tx
                .query_row(
                    "SELECT manifest_digest FROM image_images WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(manifest) = manifest else {
                return Err(ImageError::NotFound(reference.to_string()));
            };
            tx.execute("DELETE FROM image_images WHERE id = ?1", [&id])?;
            let gone: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT diff_id FROM layer_layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)",
                )?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for diff_id in &gone {
                tx.execute("DELETE FROM layer_layers WHERE diff_id = ?1", [diff_id])?;
            }
            let manifest_shared = match &manifest {
                Some(m) => {
                    tx.query_row(
                        "SELECT count(*) FROM image_images WHERE manifest_digest = ?1",
                        [m],
                        |r| r.get::<_, i64>(0),
                    )? > 0
                }
                None => true,
            };
            tx.commit()?;
            (manifest.filter(|_| !manifest_shared), gone)
        };
        // The database no longer knows these files; removing them can only leave garbage.
        let mut blobs = vec![id.clone()];
        blobs.extend(manifest.as_deref().and_then(sha256_hex).map(str::to_string));
        for hex in blobs {
            remove_quietly(&self.blob_path(&hex));
        }
        for diff_id in gone_layers {
            if let Some(hex) = sha256_hex(&diff_id) {
                self.discard_dir(&self.layers_dir.join(hex));
            }
        }
        drop(lock);
        Ok(vec![id])
    }

    /// Unpacked layer directories of `image`, bottom layer first (overlayfs wants the top
    /// layer first in `lowerdir`: reverse them).
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>, ImageError> {
        image
            .layers
            .iter()
            .map(|diff_id| {
                let dir = self.layer_dir(diff_id);
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    Err(ImageError::Corrupt {
                        id: image.id.clone(),
                        what: format!("layer {diff_id}"),
                        path: dir,
                    })
                }
            })
            .collect()
    }

    /// `true` when the layer is stored (row and directory).
    pub(crate) fn has_layer(&self, diff_id: &str) -> Result<bool, ImageError> {
        let known: Option<i64> = self
            .conn()
            .query_row(
                "SELECT size FROM layer_layers WHERE diff_id = ?1",
                [diff_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(known.is_some() && self.layer_dir(diff_id).is_dir())
    }

    /// Removes a directory tree by first renaming it to a temporary name, so that a crash never
    /// leaves a half-removed tree under a real name.
    pub(crate) fn discard_dir(&self, dir: &Path) {
        let Some(parent) = dir.parent() else { return };
        let aside = match tempfile::Builder::new()
            .prefix(".tmp-rm-")
            .tempdir_in(parent)
        {
            Ok(t) => t.keep(),
            Err(_) => {
                let _ = std::fs::remove_dir_all(dir);
                return;
            }
        };
        let target = aside.join("x");
        if std::fs::rename(dir, &target).is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_dir_all(&aside);
    }
}

/// Age after which a staging entry is certainly abandoned.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes entries of `dir` starting with `prefix` that were last modified before
/// [`STALE_AFTER`]. Best effort: errors are ignored.
fn sweep_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old {
            let p = entry.path();
            if p.is_dir() && !p.is_symlink() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn query_strings(
    conn: &rusqlite::Connection,
    sql: &str,
    arg: &str,
) -> Result<Vec<String>, rusqlite::Error> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([arg], |r| r.get(0))?;
    rows.collect()
}

/// `repo@sha256:..`: the image of that repository whose manifest has that digest (an image
/// pulled by tag is found by digest too).
fn by_manifest_digest(
    conn: &rusqlite::Connection,
    input: &str,
) -> Result<Option<String>, ImageError> {
    let Some(r) = Reference::parse(input).ok().filter(|r| r.digest.is_some()) else {
        return Ok(None);
    };
    let repo = r.repository();
    let ids = query_strings(
        conn,
        "SELECT id FROM image_images WHERE manifest_digest = ?1 ORDER BY id",
        r.digest.as_deref().unwrap_or_default(),
    )?;
    for id in ids {
        let names = query_strings(
            conn,
            "SELECT name FROM image_names WHERE image_id = ?1",
            &id,
        )?;
        let same_repo = names
            .iter()
            .any(|n| Reference::parse(n).is_ok_and(|nr| nr.repository() == repo));
        if same_repo {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn short_ids(ids: &[String]) -> String {
    ids.iter()
        .map(|i| i.get(..12).unwrap_or(i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Full names a user-typed name may stand for, most likely first.
fn name_candidates(input: &str) -> Vec<String> {
    let mut out = Vec::new();
    if Reference::is_short_name(input) {
        if let Ok(r) = Reference::parse(&format!("localhost/{input}")) {
            out.push(r.to_string());
        }
    }
    if let Ok(r) = Reference::parse(input) {
        out.push(r.to_string());
    }
    out
}

/// Normalises a name given to `tag`/`import`: short names go under `localhost/`.
pub(crate) fn local_name(name: &str) -> Result<String, ImageError> {
    // Parse what the user typed first, so that errors quote it.
    let parsed = Reference::parse(name)?;
    if parsed.digest.is_some() {
        return Err(crate::ReferenceError::Invalid {
            reference: name.to_string(),
            reason: "an image name cannot contain a digest: give a tag".into(),
        }
        .into());
    }
    if Reference::is_short_name(name) {
        Ok(Reference::parse(&format!("localhost/{}", name.trim()))?.to_string())
    } else {
        Ok(parsed.to_string())
    }
}
