//! stasis-archive: the pure parts of checkpoint/restore, interchangeable with Podman 4.3.
//!
//! No processes, no root (except for building whiteouts in the rootfs-diff tests):
//! * [`names`] — entry names inside a checkpoint archive;
//! * [`archive`] — one-pass archive reader and Podman-compatible writer (on `stasis-tar`);
//! * [`config`] — `config.dump` (libpod `ContainerConfig`) and `spec.dump`;
//! * [`network`] — `network.status`;
//! * [`stats`] — CRIU `stats-dump`/`stats-restore` and `--print-stats` JSON;
//! * [`rootfs_diff`] — overlay upper directory → `rootfs-diff.tar` list and `deleted.files`;
//! * [`pages`] — memory pages streamed into archives and skipped on import;
//! * [`port`] — `--publish` specs;
//! * [`import`] — the restore decision logic of Podman's `CRImportCheckpoint`.
//!
//! Every module has its own error enum; [`ArchiveError`] folds them together.

pub mod archive;
pub mod config;
pub mod import;
mod json;
pub mod names;
pub mod network;
pub mod pages;
pub mod port;
pub mod rootfs_diff;
pub mod stats;

pub use archive::{
    read_archive, read_compressed_archive, write_archive, write_parts, ArchiveContents,
    ArchiveIoError, ArchiveParts, ArchiveWriter,
};
pub use config::{parse_spec_dump, ConfigError, ContainerConfig, NamedVolume, PerNetworkOptions};
pub use import::{
    check_restored, plan_import, ImportError, ImportPlan, PodInfo, RestoreRequest, Shares, World,
};
pub use json::{go_time, JsonProblem};
pub use network::{NetworkStatus, NetworkStatusRead, StatusBlock};
pub use port::{parse_publish, parse_publish_list, PortError, PortMapping};
pub use rootfs_diff::{
    changes, changes_with_lowers, parse_deleted_files, Changes, RootfsDiffError,
};
pub use stats::{read_dump_stats, read_restore_stats, DumpStats, RestoreStats, StatsError};

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a whole archive.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveIoError),
    /// `config.dump` / `spec.dump`.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `network.status` encoding.
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    /// CRIU statistics images.
    #[error(transparent)]
    Stats(#[from] stats::StatsError),
    /// Rootfs diff and `deleted.files`.
    #[error(transparent)]
    RootfsDiff(#[from] rootfs_diff::RootfsDiffError),
    /// Import planning.
    #[error(transparent)]
    Import(#[from] import::ImportError),
    /// `--publish`.
    #[error(transparent)]
    Port(#[from] PortError),
}
