//! The stasis engine: containers on runc + conmon, their state in SQLite, their root
//! filesystems on overlayfs over the image store's layers, and checkpoint/restore on top.
//!
//! Each verb lives in a file of its own under `container/`. Drivers for external programs
//! (runc, conmon) are thin modules beside it; pure logic (spec generation, user resolution,
//! archive format, restore rules) is unit-tested without root.

pub mod config;
pub mod conmon;
pub mod container;
pub mod criu;
pub mod db;
mod error;
mod images;
pub mod layout;
pub mod libpod;
pub mod mounts;
pub mod names;
pub mod netns;
pub mod pagestream;
pub mod pod;
pub mod prefetch;
pub mod progress;
pub mod runc;
pub mod spec;
pub mod user;
pub mod volumes;

use std::path::PathBuf;

pub use error::EngineError;
use stasis_image::ImageStore;
use stasis_state::rusqlite;

pub use crate::config::CreateConfig;
pub use crate::db::{ContainerRecord, State};
pub use crate::layout::Layout;

/// How to reach the external programs and where the store lives.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub runc: PathBuf,
    pub conmon: PathBuf,
    /// The `stasis` binary conmon calls back when a container exits.
    pub exe: PathBuf,
}

impl EngineOptions {
    /// Defaults: /var/lib/stasis, /run/stasis, runc and conmon from PATH.
    pub fn new(exe: PathBuf) -> Self {
        Self {
            root: "/var/lib/stasis".into(),
            runroot: "/run/stasis".into(),
            runc: find_in_path("runc").unwrap_or_else(|| "/usr/bin/runc".into()),
            conmon: find_in_path("conmon").unwrap_or_else(|| "/usr/bin/conmon".into()),
            exe,
        }
    }
}

/// Finds an executable by name in PATH (plus /usr/local/sbin, /usr/sbin, /sbin).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file());
    found
}

/// The host's main store: its default network is `stasis` on bridge `stasis0`, 10.90.0.0/16.
pub const MAIN_ROOT: &str = "/var/lib/stasis";

/// Network settings of a store. Stores side by side on one host (tests, benchmarks) must not
/// share a bridge, a subnet or netavark's per-name iptables chains with the main store or with
/// each other: any other root gets its own, derived from its path.
pub fn network_options(root: &std::path::Path) -> stasis_network::StoreOptions {
    let mut o = stasis_network::StoreOptions::default();
    let canon = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    if canon == std::path::Path::new(MAIN_ROOT) {
        return o;
    }
    // FNV-1a of the path: stable across runs, spread enough for a few stores at once.
    let h = canon
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let tag = format!("{:06x}", h & 0xff_ffff);
    o.default_network.bridge = format!("stasis-{tag}");
    o.default_network.subnet = format!("10.{}.{}.0/24", 200 + (h >> 24) % 50, (h >> 32) % 256);
    o.bridge_prefix = format!("st{tag}n");
    o.netavark_suffix = Some(tag);
    o
}

/// One open store.
#[derive(Debug)]
pub struct Engine {
    pub layout: Layout,
    pub opts: EngineOptions,
    pub images: ImageStore,
    pub networks: stasis_network::NetworkStore,
    pub runc: runc::Runc,
    conn: rusqlite::Connection,
}

impl Engine {
    /// Opens (creating if needed) the store at `opts.root` / `opts.runroot`.
    pub fn open(opts: EngineOptions) -> Result<Self, EngineError> {
        let layout = Layout::new(&opts.root, &opts.runroot);
        for d in [
            layout.root.join("containers"),
            layout.tmp_dir(),
            layout.runroot.clone(),
            layout.exit_dir(),
            layout.socket_dir(),
            layout.runc_root(),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| EngineError::io(&d, e))?;
        }
        let conn = stasis_state::open_db(&layout.root)?;
        db::ensure_schema(&conn).map_err(EngineError::Db)?;
        volumes::ensure_schema(&conn).map_err(EngineError::Db)?;
        pod::ensure_schema(&conn).map_err(EngineError::Db)?;
        let images = ImageStore::open(&layout.root)?;
        let networks = stasis_network::NetworkStore::open_with(
            &layout.root,
            &layout.runroot,
            network_options(&layout.root),
        )?;
        let runc = runc::Runc::new(&opts.runc, layout.runc_root());
        Ok(Self {
            layout,
            opts,
            images,
            networks,
            runc,
            conn,
        })
    }

    pub(crate) fn conn(&self) -> &rusqlite::Connection {
        &self.conn
    }
}
