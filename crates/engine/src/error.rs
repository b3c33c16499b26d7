//! The engine's error: one variant per kind of failure, each message naming the object and,
//! where there is one, the way out.

use std::path::{Path, PathBuf};

use crate::{conmon::ConmonError, runc::RuncError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no container with name or ID \"{0}\" found: see \"stasis ps -a\"")]
    NoSuchContainer(String),
    #[error("\"{0}\" matches {1} containers: give more of the ID")]
    Ambiguous(String, usize),
    #[error("the container name \"{0}\" is already in use by container {1}: remove it (\"stasis rm {0}\") or choose another name with --name")]
    NameInUse(String, String),
    #[error("cannot remove container {0} as it is running: stop it first or use rm -f")]
    RemoveRunning(String),
    #[error("container {name} is not running (state {state})")]
    NotRunning { name: String, state: String },
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error(
        "image {image} is in use by container(s) {containers}: remove them first or use rmi -f"
    )]
    ImageInUse { image: String, containers: String },
    #[error("invalid {what} \"{value}\": {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("{0}")]
    Message(String),
    /// `exec` could not run the command (exit code 126 or 127, as Podman).
    #[error("{message}")]
    ExecFailed { code: i32, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Runc(#[from] RuncError),
    #[error(transparent)]
    Conmon(#[from] ConmonError),
    #[error(transparent)]
    Image(#[from] stasis_image::ImageError),
    #[error(transparent)]
    State(#[from] stasis_state::StateError),
    #[error(transparent)]
    Network(#[from] stasis_network::NetworkError),
    #[error("state database: {0}")]
    Db(#[source] stasis_state::rusqlite::Error),
}

impl EngineError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn msg(m: impl Into<String>) -> Self {
        EngineError::Message(m.into())
    }
}

impl From<stasis_state::rusqlite::Error> for EngineError {
    fn from(e: stasis_state::rusqlite::Error) -> Self {
        EngineError::Db(e)
    }
}
