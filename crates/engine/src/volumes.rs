//! Named volumes: directories under `--root/volumes/<name>/_data` (Podman's layout), recorded
//! in the state database. A volume in use by a container cannot be removed.

use serde::{Deserialize, Serialize};
use stasis_state::rusqlite::{params, OptionalExtension};

use crate::{db, Engine, EngineError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    anonymous INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}'
)";

/// A volume as `volume inspect` shows it (Podman's keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    #[serde(rename = "Anonymous")]
    pub anonymous: bool,
}

/// A volume mounted into a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VolumeMount {
    pub name: String,
    pub dest: String,
    pub options: Vec<String>,
    #[serde(default)]
    pub anonymous: bool,
}

/// A host directory or file bind-mounted into a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BindMount {
    pub source: String,
    pub dest: String,
    pub options: Vec<String>,
}

pub(crate) fn ensure_schema(
    conn: &stasis_state::rusqlite::Connection,
) -> stasis_state::rusqlite::Result<()> {
    stasis_state::ensure_schema(conn, SCHEMA)
}

/// Checks a volume name against Podman's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_volume_name(name: &str) -> bool {
    crate::names::valid_name(name)
}

impl Engine {
    fn volume_path(&self, name: &str) -> std::path::PathBuf {
        self.layout.root.join("volumes").join(name).join("_data")
    }

    fn volume_from_row(&self, name: String, created_at: String, anonymous: bool) -> Volume {
        Volume {
            mountpoint: self.volume_path(&name).to_string_lossy().into_owned(),
            name,
            driver: "local".into(),
            created_at,
            anonymous,
        }
    }

    /// The volume named `name`, if it exists.
    pub fn volume(&self, name: &str) -> Result<Option<Volume>, EngineError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name, created_at, anonymous FROM volumes WHERE name=?1",
                params![name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?
            .map(|(n, c, a)| self.volume_from_row(n, c, a != 0)))
    }

    /// Creates a volume; a random 64-hex name when `name` is `None`. `exist_ok` returns an
    /// existing volume instead of failing (what `-v name:/path` does).
    pub fn volume_create(
        &self,
        name: Option<&str>,
        exist_ok: bool,
    ) -> Result<(Volume, bool), EngineError> {
        let (name, anonymous) = match name {
            Some(n) => (n.to_string(), false),
            None => (crate::names::new_id(), true),
        };
        if !valid_volume_name(&name) {
            return Err(EngineError::Invalid {
                what: "volume name",
                value: name,
                why: "names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*".into(),
            });
        }
        let path = self.volume_path(&name);
        let created = crate::container::create::now();
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO volumes (name, created_at, anonymous) VALUES (?1, ?2, ?3)",
            params![name, created, anonymous as i64],
        )?;
        if inserted == 0 {
            if exist_ok {
                let v = self
                    .volume(&name)?
                    .ok_or_else(|| EngineError::msg(format!("volume {name} vanished")))?;
                return Ok((v, false));
            }
            return Err(EngineError::msg(format!(
                "volume with name {name} already exists: use it, or remove it with \"stasis volume rm {name}\""
            )));
        }
        if let Err(e) = std::fs::create_dir_all(&path) {
            let _ = self
                .conn()
                .execute("DELETE FROM volumes WHERE name=?1", params![name]);
            return Err(EngineError::io(&path, e));
        }
        Ok((self.volume_from_row(name, created, anonymous), true))
    }

    pub fn volume_list(&self) -> Result<Vec<Volume>, EngineError> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT name, created_at, anonymous FROM volumes ORDER BY name")?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(n, c, a)| self.volume_from_row(n, c, a != 0))
            .collect())
    }

    /// Names of the containers using volume `name`.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>, EngineError> {
        Ok(db::all(self.conn())?
            .into_iter()
            .filter(|c| c.config.volumes.iter().any(|v| v.name == name))
            .map(|c| c.name)
            .collect())
    }

    /// Removes a volume and its data. In use: refused, or with `force` the containers using it
    /// are removed first.
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<(), EngineError> {
        if self.volume(name)?.is_none() {
            return Err(EngineError::msg(format!(
                "no volume with name \"{name}\" found: see \"stasis volume ls\""
            )));
        }
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            if !force {
                return Err(EngineError::msg(format!(
                    "volume {name} is being used by container(s) {}: remove them first or use volume rm -f",
                    users.join(", ")
                )));
            }
            for u in &users {
                self.remove(u, true)?;
            }
        }
        self.volume_delete(name)
    }

    /// Deletes a volume's data and row (no in-use check).
    pub(crate) fn volume_delete(&self, name: &str) -> Result<(), EngineError> {
        let dir = self.layout.root.join("volumes").join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io(&dir, e)),
        }
        self.conn()
            .execute("DELETE FROM volumes WHERE name=?1", params![name])?;
        Ok(())
    }

    /// Removes every volume no container uses; returns their names.
    pub fn volume_prune(&self) -> Result<Vec<String>, EngineError> {
        let mut removed = Vec::new();
        for v in self.volume_list()? {
            if self.volume_users(&v.name)?.is_empty() {
                self.volume_delete(&v.name)?;
                removed.push(v.name);
            }
        }
        Ok(removed)
    }

    /// The host directory of volume `name`.
    pub fn volume_mountpoint(&self, name: &str) -> std::path::PathBuf {
        self.volume_path(name)
    }
}

impl Engine {
    /// Removes a network: refused while containers use it, unless `force` removes them.
    pub fn network_remove(&self, name: &str, force: bool) -> Result<(), EngineError> {
        let net = self.networks.get(name)?;
        let users: Vec<String> = db::all(self.conn())?
            .into_iter()
            .filter(|c| c.config.networks.iter().any(|n| n.network == net.name))
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            if !force {
                return Err(EngineError::msg(format!(
                    "network {} is in use by container(s) {}: remove them first or use network rm -f",
                    net.name,
                    users.join(", ")
                )));
            }
            for u in &users {
                self.remove(u, true)?;
            }
        }
        Ok(self.networks.remove(&net.name)?)
    }
}
