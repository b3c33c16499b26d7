//! Test helpers: network namespaces we create (`ip netns add`), a store in a temp root whose
//! default network and bridge names are test-specific, and guards that undo everything
//! (teardowns, bridges, namespaces) even when a test fails.

#![allow(dead_code)]

use stasis_network::{Attach, NetworkRequest, NetworkStore, StoreOptions};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// Tests touching the host network run one at a time (iptables, bridges).
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn run(args: &[&str]) -> (bool, String) {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// A network namespace made with `ip netns add`; the [`Fixture`] that made it deletes it.
#[derive(Clone, Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("snt-{tag}-{}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        let (ok, out) = run(&["ip", "netns", "add", &name]);
        assert!(ok, "ip netns add {name}: {out}");
        let (ok, out) = run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        assert!(ok, "lo up: {out}");
        Netns { name }
    }

    fn delete(&self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NS -j addr show dev IF` parsed: (IPv4 addresses with prefix, MAC).
    pub fn addr(&self, ifname: &str) -> Option<(Vec<String>, String)> {
        let o = Command::new("ip")
            .args(["-n", &self.name, "-j", "addr", "show", "dev", ifname])
            .output()
            .ok()?;
        if !o.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let link = v.as_array()?.first()?;
        let ips = link["addr_info"]
            .as_array()?
            .iter()
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect();
        Some((ips, link["address"].as_str()?.to_string()))
    }
}

pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// A store in a temp root. Its default network is `{tag}-default` on bridge `{tag}d` with the given
/// subnet (never the real stasis0/10.90.0.0/16), custom bridges are `{tag}b1`, `{tag}b2`, ...
/// On drop: tears down every attachment made through [`Fixture::attach`] that still holds
/// leases, deletes the bridges of its networks, its namespaces, then the temp dirs.
pub struct Fixture {
    pub store: NetworkStore,
    /// Name of the default network.
    pub def: String,
    pub attaches: Mutex<Vec<Attach>>,
    namespaces: Mutex<Vec<Netns>>,
    _root: tempfile::TempDir,
    _run: tempfile::TempDir,
}

impl Fixture {
    pub fn new(tag: &str, default_subnet: &str) -> Fixture {
        let root = tempfile::tempdir().expect("tempdir");
        let runroot = tempfile::tempdir().expect("tempdir");
        let mut opts = StoreOptions::default();
        opts.default_network.name = format!("{tag}-default");
        opts.default_network.bridge = format!("{tag}d");
        opts.default_network.subnet = default_subnet.into();
        opts.bridge_prefix = format!("{tag}b");
        let store = NetworkStore::open_with(root.path(), runroot.path(), opts).expect("open");
        Fixture {
            store,
            def: format!("{tag}-default"),
            attaches: Mutex::new(Vec::new()),
            namespaces: Mutex::new(Vec::new()),
            _root: root,
            _run: runroot,
        }
    }

    /// A new namespace, deleted when the fixture goes.
    pub fn ns(&self, tag: &str) -> Netns {
        let n = Netns::new(tag);
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(n.clone());
        n
    }

    /// Deletes a namespace now (a "crash").
    pub fn delete_ns(&self, ns: &Netns) {
        ns.delete();
    }

    /// An attach request, remembered for cleanup.
    pub fn attach(&self, id: &str, ns: &Netns, networks: Vec<NetworkRequest>) -> Attach {
        let a = Attach {
            container_id: id.into(),
            container_name: format!("name-{id}"),
            netns: ns.path(),
            networks,
            ports: Vec::new(),
        };
        self.remember(&a);
        a
    }

    pub fn remember(&self, a: &Attach) {
        self.attaches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(a.clone());
    }
}

pub fn net(name: &str) -> NetworkRequest {
    NetworkRequest {
        network: name.into(),
        ..Default::default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let attaches =
            std::mem::take(&mut *self.attaches.lock().unwrap_or_else(|p| p.into_inner()));
        for a in attaches.iter().rev() {
            if !self
                .store
                .leases_of(&a.container_id)
                .unwrap_or_default()
                .is_empty()
            {
                let _ = self.store.teardown(a);
            }
        }
        for n in self.store.list().unwrap_or_default() {
            if link_exists(&n.network_interface) {
                let _ = run(&["ip", "link", "del", &n.network_interface]);
            }
        }
        for ns in self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            ns.delete();
        }
    }
}
