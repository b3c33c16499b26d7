//! The containers table of the state database.
//!
//! One row per container. The row is the source of truth for a container's existence; its
//! directories are made before the row is inserted and removed after it is deleted, so a crash
//! can leave an orphan directory (cleaned by `rm`) but never a row without storage.

use serde::{Deserialize, Serialize};
use stasis_state::rusqlite::{self, params, OptionalExtension, Row};

use crate::config::CreateConfig;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image_id TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    pid INTEGER,
    conmon_pid INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    checkpointed_at TEXT,
    restored_at TEXT,
    checkpointed INTEGER NOT NULL DEFAULT 0,
    restored INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL
)";

/// Lifecycle states, spelled as Podman prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Storage and database row exist; no runtime container.
    Configured,
    /// `runc create` done, process not started.
    Created,
    Running,
    /// The process ended (or was checkpointed: see `checkpointed`).
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Configured => "configured",
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
    fn parse(s: &str) -> State {
        match s {
            "created" => State::Created,
            "running" => State::Running,
            "exited" => State::Exited,
            _ => State::Configured,
        }
    }
}

/// One container's row.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub state: State,
    pub exit_code: Option<i32>,
    pub pid: Option<i32>,
    pub conmon_pid: Option<i32>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub checkpointed_at: Option<String>,
    pub restored_at: Option<String>,
    pub checkpointed: bool,
    pub restored: bool,
    pub config: CreateConfig,
}

pub fn ensure_schema(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    stasis_state::ensure_schema(conn, SCHEMA)
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<ContainerRecord> {
    let config: String = r.get("config")?;
    let config: CreateConfig = serde_json::from_str(&config).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(ContainerRecord {
        id: r.get("id")?,
        name: r.get("name")?,
        image_id: r.get("image_id")?,
        state: State::parse(&r.get::<_, String>("state")?),
        exit_code: r.get("exit_code")?,
        pid: r.get("pid")?,
        conmon_pid: r.get("conmon_pid")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
        checkpointed_at: r.get("checkpointed_at")?,
        restored_at: r.get("restored_at")?,
        checkpointed: r.get::<_, i64>("checkpointed")? != 0,
        restored: r.get::<_, i64>("restored")? != 0,
        config,
    })
}

/// Inserts a new container. Fails with a constraint error if the name or ID is taken.
pub fn insert(conn: &rusqlite::Connection, c: &ContainerRecord) -> rusqlite::Result<()> {
    let config = serde_json::to_string(&c.config)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "INSERT INTO containers (id, name, image_id, state, exit_code, pid, conmon_pid, created_at,
            started_at, finished_at, checkpointed_at, restored_at, checkpointed, restored, config)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            c.id,
            c.name,
            c.image_id,
            c.state.as_str(),
            c.exit_code,
            c.pid,
            c.conmon_pid,
            c.created_at,
            c.started_at,
            c.finished_at,
            c.checkpointed_at,
            c.restored_at,
            c.checkpointed as i64,
            c.restored as i64,
            config
        ],
    )?;
    Ok(())
}

/// Writes every mutable column of `c` back.
pub fn update(conn: &rusqlite::Connection, c: &ContainerRecord) -> rusqlite::Result<()> {
    let config = serde_json::to_string(&c.config)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.execute(
        "UPDATE containers SET state=?2, exit_code=?3, pid=?4, conmon_pid=?5, started_at=?6,
            finished_at=?7, checkpointed_at=?8, restored_at=?9, checkpointed=?10, restored=?11,
            config=?12 WHERE id=?1",
        params![
            c.id,
            c.state.as_str(),
            c.exit_code,
            c.pid,
            c.conmon_pid,
            c.started_at,
            c.finished_at,
            c.checkpointed_at,
            c.restored_at,
            c.checkpointed as i64,
            c.restored as i64,
            config
        ],
    )?;
    Ok(())
}

pub fn delete(conn: &rusqlite::Connection, id: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM containers WHERE id=?1", params![id])?;
    Ok(())
}

pub fn get(conn: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<ContainerRecord>> {
    conn.query_row(
        "SELECT * FROM containers WHERE id=?1",
        params![id],
        from_row,
    )
    .optional()
}

pub fn all(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<ContainerRecord>> {
    let mut st = conn.prepare("SELECT * FROM containers ORDER BY created_at, id")?;
    let rows = st.query_map([], from_row)?;
    rows.collect()
}

pub fn name_taken(conn: &rusqlite::Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM containers WHERE name=?1",
        params![name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}

/// Finds a container by exact name, full ID, or unique ID prefix. `Ok(Err(n))` reports an
/// ambiguous prefix matching `n` containers.
pub fn lookup(
    conn: &rusqlite::Connection,
    key: &str,
) -> rusqlite::Result<Result<Option<ContainerRecord>, usize>> {
    if let Some(c) = conn
        .query_row(
            "SELECT * FROM containers WHERE name=?1",
            params![key],
            from_row,
        )
        .optional()?
    {
        return Ok(Ok(Some(c)));
    }
    if let Some(c) = get(conn, key)? {
        return Ok(Ok(Some(c)));
    }
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Ok(None));
    }
    let mut st = conn.prepare("SELECT * FROM containers WHERE substr(id, 1, ?2) = ?1")?;
    let mut found: Vec<ContainerRecord> = st
        .query_map(params![key, key.len() as i64], from_row)?
        .collect::<rusqlite::Result<_>>()?;
    match found.len() {
        0 => Ok(Ok(None)),
        1 => Ok(Ok(found.pop())),
        n => Ok(Err(n)),
    }
}

pub fn images_in_use(conn: &rusqlite::Connection, image_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT name FROM containers WHERE image_id=?1")?;
    let rows = st.query_map(params![image_id], |r| r.get(0))?;
    rows.collect()
}
