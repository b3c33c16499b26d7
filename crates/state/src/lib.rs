//! Embedded state: one SQLite database under `--root` plus advisory file locks.
//!
//! Every crate that keeps state opens the same database file through [`open_db`] and creates its
//! own tables with `CREATE TABLE IF NOT EXISTS` (see [`ensure_schema`]). SQLite serialises
//! writers; [`FileLock`] covers multi-step work that spans the database and the filesystem.

mod lock;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use lock::FileLock;
pub use rusqlite;

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Name of the database file inside the root directory.
pub const DB_FILE: &str = "state.db";

/// Opens (creating if needed) the state database in `root`, configured for concurrent use by
/// several processes: WAL journal, a generous busy timeout, foreign keys on.
pub fn open_db(root: &Path) -> Result<rusqlite::Connection, StateError> {
    std::fs::create_dir_all(root).map_err(|source| StateError::Dir {
        path: root.to_path_buf(),
        source,
    })?;
    let path = root.join(DB_FILE);
    let err = |source| StateError::Db {
        path: path.clone(),
        source,
    };
    let conn = rusqlite::Connection::open(&path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
    // journal_mode returns a row; query it rather than execute.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(err)?;
    conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")
        .map_err(err)?;
    Ok(conn)
}

/// Runs a schema script (idempotent `CREATE ... IF NOT EXISTS` statements) in one transaction.
pub fn ensure_schema(conn: &rusqlite::Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; COMMIT;"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_twice_and_sees_writes() {
        let dir = tempfile::tempdir().unwrap();
        let a = open_db(dir.path()).unwrap();
        ensure_schema(&a, "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)").unwrap();
        let b = open_db(dir.path()).unwrap();
        ensure_schema(&b, "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)").unwrap();
        a.execute("INSERT INTO t VALUES ('x')", []).unwrap();
        let n: i64 = b
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        assert!(b.execute("INSERT INTO t VALUES ('x')", []).is_err());
    }
}
