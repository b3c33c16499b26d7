//! [`NetworkStore`]: network definitions, address leases and published ports in the shared state
//! database (`net_networks`, `net_leases`, `net_ports`), and the setup/teardown of a container's
//! network namespace through netavark.
//!
//! Every operation that allocates or frees runs under one exclusive file lock
//! (`ROOT/networks.lock`) held across the database work AND the netavark call, so two containers
//! started at once can never be handed the same address, and a failed setup is rolled back
//! before anyone else looks.

use crate::error::NetworkError;
use crate::ipam::{self, Cidr};
use crate::netavark::{Binaries, Options, PerNetwork, Runner};
use crate::ports;
use crate::scratchns::ScratchNetns;
use crate::types::{
    Attach, CreateNetwork, Lease, Network, NetworkRequest, PortMapping, Subnet, DEFAULT_BRIDGE,
    DEFAULT_NETWORK, DEFAULT_SUBNET,
};
use sha2::{Digest, Sha256};
use stasis_archive::network::NetworkStatus;
use stasis_state::rusqlite::{self, params, OptionalExtension, Transaction};
use stasis_state::FileLock;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS net_networks (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    bridge TEXT NOT NULL UNIQUE,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS net_leases (
    network TEXT NOT NULL,
    ip TEXT NOT NULL,
    container_id TEXT NOT NULL,
    mac TEXT,
    interface_name TEXT NOT NULL,
    UNIQUE(network, ip)
);
CREATE INDEX IF NOT EXISTS net_leases_container ON net_leases(container_id);
CREATE TABLE IF NOT EXISTS net_ports (
    container_id TEXT NOT NULL,
    host_ip TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    port_range INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    container_port INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS net_ports_container ON net_ports(container_id)";

/// The default network's parameters (overridable so tests never touch the real one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNetwork {
    /// Name (`stasis`).
    pub name: String,
    /// Bridge (`stasis0`).
    pub bridge: String,
    /// Subnet (`10.90.0.0/16`).
    pub subnet: String,
}

impl Default for DefaultNetwork {
    fn default() -> Self {
        DefaultNetwork {
            name: DEFAULT_NETWORK.into(),
            bridge: DEFAULT_BRIDGE.into(),
            subnet: DEFAULT_SUBNET.into(),
        }
    }
}

/// Knobs of [`NetworkStore::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The default network.
    pub default_network: DefaultNetwork,
    /// Podman's network definitions (their names are refused, their subnets avoided).
    pub podman_networks_dir: PathBuf,
    /// Prefix of automatically named bridges (`stasis` → `stasis1`, `stasis2`, ...).
    pub bridge_prefix: String,
    /// Suffix of the network names given to netavark (`None`: the names as they are). A store
    /// that is not the host's main one sets it, so that its networks never share iptables
    /// chains with another store's networks of the same name.
    pub netavark_suffix: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            default_network: DefaultNetwork::default(),
            podman_networks_dir: PathBuf::from("/etc/containers/networks"),
            bridge_prefix: "stasis".into(),
            netavark_suffix: None,
        }
    }
}

/// Networks, leases and netavark.
#[derive(Debug)]
pub struct NetworkStore {
    conn: Mutex<rusqlite::Connection>,
    lock_path: PathBuf,
    runner: Runner,
    opts: StoreOptions,
}

/// The rows a setup added, to undo on failure.
#[derive(Default)]
struct Added {
    leases: Vec<(String, String)>,
    old_ports: Option<Vec<PortMapping>>,
}

fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn name_id(name: &str) -> String {
    Sha256::digest(name.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn valid_name(name: &str) -> Result<(), NetworkError> {
    let bad = |reason: &str| NetworkError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(bad("it is empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(bad("it must start with a letter or digit"))
        }
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(bad("only letters, digits, '_', '.' and '-' are allowed"));
    }
    if name.len() > 200 {
        return Err(bad("it is longer than 200 characters"));
    }
    Ok(())
}

fn valid_ifname(container: &str, name: &str) -> Result<(), NetworkError> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(NetworkError::InvalidRequest {
            container: container.into(),
            reason: format!(
                "invalid interface name {name:?}: 1 to 15 characters without '/', ':' or spaces"
            ),
        });
    }
    Ok(())
}

fn network_cidrs(n: &Network) -> Vec<(Cidr, Option<Ipv4Addr>)> {
    n.subnets
        .iter()
        .filter_map(|s| {
            let c = Cidr::parse(&s.subnet).ok()?;
            let gw = s.gateway.as_deref().and_then(|g| g.parse().ok());
            Some((c, gw))
        })
        .collect()
}

fn read_network(name: &str, json: &str) -> Result<Network, NetworkError> {
    serde_json::from_str(json).map_err(|e| NetworkError::Corrupt {
        name: name.into(),
        reason: e.to_string(),
    })
}

fn ports_of(tx: &rusqlite::Connection, container: &str) -> Result<Vec<PortMapping>, NetworkError> {
    let mut st = tx.prepare(
        "SELECT host_ip, host_port, port_range, protocol, container_port FROM net_ports WHERE container_id = ?1",
    )?;
    let rows = st
        .query_map([container], |r| {
            Ok(PortMapping {
                host_ip: r.get(0)?,
                host_port: r.get(1)?,
                range: r.get(2)?,
                protocol: r.get(3)?,
                container_port: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn set_ports(
    tx: &rusqlite::Connection,
    container: &str,
    ports: &[PortMapping],
) -> Result<(), NetworkError> {
    tx.execute("DELETE FROM net_ports WHERE container_id = ?1", [container])?;
    for p in ports {
        tx.execute(
            "INSERT INTO net_ports (container_id, host_ip, host_port, port_range, protocol, container_port) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![container, p.host_ip, p.host_port, p.range, p.protocol, p.container_port],
        )?;
    }
    Ok(())
}

fn leases_where(
    conn: &rusqlite::Connection,
    clause: &str,
    arg: &str,
) -> Result<Vec<Lease>, NetworkError> {
    let mut st = conn.prepare(&format!(
        "SELECT network, ip, container_id, mac, interface_name FROM net_leases {clause} ORDER BY network, ip"
    ))?;
    let rows = if clause.is_empty() {
        st.query_map([], lease_row)?
            .collect::<Result<Vec<_>, _>>()?
    } else {
        st.query_map([arg], lease_row)?
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(rows)
}

fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        network: r.get(0)?,
        ip: r.get(1)?,
        container_id: r.get(2)?,
        mac: r.get(3)?,
        interface_name: r.get(4)?,
    })
}

impl NetworkStore {
    /// Opens the store with the default options: state in `root`'s database, netavark's
    /// `--config` directory at `runroot/networks`.
    pub fn open(root: &Path, runroot: &Path) -> Result<Self, NetworkError> {
        Self::open_with(root, runroot, StoreOptions::default())
    }

    /// Opens the store with explicit options.
    pub fn open_with(
        root: &Path,
        runroot: &Path,
        opts: StoreOptions,
    ) -> Result<Self, NetworkError> {
        let bin = Binaries::find()?;
        let conn = stasis_state::open_db(root)?;
        stasis_state::ensure_schema(&conn, SCHEMA)?;
        Ok(NetworkStore {
            conn: Mutex::new(conn),
            lock_path: root.join("networks.lock"),
            runner: Runner {
                bin,
                config_dir: runroot.join("networks"),
                name_suffix: opts.netavark_suffix.clone(),
            },
            opts,
        })
    }

    /// The netavark and aardvark-dns binaries in use.
    pub fn binaries(&self) -> &Binaries {
        &self.runner.bin
    }

    fn conn(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // A panic while holding the mutex cannot leave SQLite inconsistent: go on.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> Result<FileLock, NetworkError> {
        Ok(FileLock::exclusive(&self.lock_path)?)
    }

    fn all_networks(conn: &rusqlite::Connection) -> Result<Vec<Network>, NetworkError> {
        let mut st = conn.prepare("SELECT name, definition FROM net_networks ORDER BY name")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.iter().map(|(n, j)| read_network(n, j)).collect()
    }

    fn find(conn: &rusqlite::Connection, name_or_id: &str) -> Result<Network, NetworkError> {
        let nets = Self::all_networks(conn)?;
        if let Some(n) = nets
            .iter()
            .find(|n| n.name == name_or_id)
            .or_else(|| nets.iter().find(|n| n.id == name_or_id))
        {
            return Ok(n.clone());
        }
        let by_prefix: Vec<&Network> = if name_or_id.len() >= 3 {
            nets.iter()
                .filter(|n| n.id.starts_with(name_or_id))
                .collect()
        } else {
            Vec::new()
        };
        match by_prefix[..] {
            [one] => Ok(one.clone()),
            _ => Err(NetworkError::NotFound(name_or_id.into())),
        }
    }

    fn insert(tx: &Transaction<'_>, n: &Network) -> Result<(), NetworkError> {
        let json = serde_json::to_string(n).map_err(|e| NetworkError::Corrupt {
            name: n.name.clone(),
            reason: e.to_string(),
        })?;
        tx.execute(
            "INSERT INTO net_networks (name, id, bridge, definition) VALUES (?1, ?2, ?3, ?4)",
            params![n.name, n.id, n.network_interface, json],
        )?;
        Ok(())
    }

    fn build(
        name: &str,
        id: String,
        bridge: String,
        subnet: Cidr,
        gateway: Ipv4Addr,
        internal: bool,
        dns: bool,
    ) -> Network {
        Network {
            name: name.into(),
            id,
            driver: "bridge".into(),
            network_interface: bridge,
            created: now(),
            subnets: vec![Subnet {
                subnet: subnet.to_string(),
                gateway: Some(gateway.to_string()),
            }],
            ipv6_enabled: false,
            internal,
            dns_enabled: dns,
            ipam_options: [("driver".to_string(), "host-local".to_string())].into(),
        }
    }

    /// The default network (`stasis`, bridge `stasis0`, 10.90.0.0/16, DNS off like Podman's
    /// default), created on first use.
    pub fn ensure_default(&self) -> Result<Network, NetworkError> {
        let _lock = self.lock()?;
        let mut conn = self.conn();
        let d = &self.opts.default_network;
        match Self::find(&conn, &d.name) {
            Ok(n) => return Ok(n),
            Err(NetworkError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let subnet = Cidr::parse(&d.subnet)?;
        let gateway = subnet
            .first_host()
            .ok_or_else(|| NetworkError::InvalidSubnet {
                subnet: d.subnet.clone(),
                reason: "too small".into(),
            })?;
        for other in Self::all_networks(&conn)? {
            for (c, _) in network_cidrs(&other) {
                if c.overlaps(&subnet) {
                    return Err(NetworkError::SubnetOverlap {
                        subnet: subnet.to_string(),
                        network: other.name.clone(),
                        other: c.to_string(),
                    });
                }
            }
        }
        let n = Self::build(
            &d.name,
            name_id(&d.name),
            d.bridge.clone(),
            subnet,
            gateway,
            false,
            false,
        );
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Self::insert(&tx, &n)?;
        tx.commit()?;
        Ok(n)
    }

    /// Creates a bridge network; see [`CreateNetwork`].
    pub fn create(&self, req: &CreateNetwork) -> Result<Network, NetworkError> {
        valid_name(&req.name)?;
        if req.name == "podman"
            || ipam::podman_networks(&self.opts.podman_networks_dir)
                .iter()
                .any(|(n, _)| n == &req.name)
        {
            return Err(NetworkError::PodmanName(req.name.clone()));
        }
        let _lock = self.lock()?;
        let mut conn = self.conn();
        let existing = Self::all_networks(&conn)?;
        if req.name == self.opts.default_network.name || existing.iter().any(|n| n.name == req.name)
        {
            return Err(NetworkError::Exists(req.name.clone()));
        }
        let ours: Vec<(String, Cidr)> = existing
            .iter()
            .flat_map(|n| {
                network_cidrs(n)
                    .into_iter()
                    .map(|(c, _)| (n.name.clone(), c))
            })
            .collect();
        let subnet = match &req.subnet {
            Some(s) => {
                let c = Cidr::parse(s)?;
                if c.prefix > 30 {
                    return Err(NetworkError::InvalidSubnet {
                        subnet: s.clone(),
                        reason: "too small: use a prefix of /30 or shorter".into(),
                    });
                }
                if let Some((name, other)) = ours.iter().find(|(_, o)| o.overlaps(&c)) {
                    return Err(NetworkError::SubnetOverlap {
                        subnet: c.to_string(),
                        network: name.clone(),
                        other: other.to_string(),
                    });
                }
                c
            }
            None => {
                let mut used: Vec<Cidr> = ours.iter().map(|(_, c)| *c).collect();
                used.extend(ipam::host_routes());
                used.extend(
                    ipam::podman_networks(&self.opts.podman_networks_dir)
                        .into_iter()
                        .map(|(_, c)| c),
                );
                if let Ok(d) = Cidr::parse(&self.opts.default_network.subnet) {
                    used.push(d);
                }
                ipam::auto_subnet(&used)
                    .ok_or_else(|| NetworkError::NoFreeSubnet(req.name.clone()))?
            }
        };
        let gateway = match &req.gateway {
            Some(g) => {
                let bad = |reason: String| NetworkError::InvalidGateway {
                    gateway: g.clone(),
                    reason,
                };
                let ip: Ipv4Addr = g.parse().map_err(|_| bad("not an IPv4 address".into()))?;
                if !subnet.contains(ip) {
                    return Err(bad(format!("it is not in the subnet {subnet}")));
                }
                if let Some(r) = subnet.reserved_reason(ip, None) {
                    return Err(bad(r));
                }
                ip
            }
            None => subnet
                .first_host()
                .ok_or_else(|| NetworkError::InvalidSubnet {
                    subnet: subnet.to_string(),
                    reason: "too small".into(),
                })?,
        };
        let bridges: BTreeSet<&str> = existing
            .iter()
            .map(|n| n.network_interface.as_str())
            .collect();
        let prefix = &self.opts.bridge_prefix;
        let bridge = (1..10_000)
            .map(|i| format!("{prefix}{i}"))
            .find(|b| {
                b != &self.opts.default_network.bridge
                    && !bridges.contains(b.as_str())
                    && !Path::new("/sys/class/net").join(b).exists()
            })
            .ok_or_else(|| NetworkError::InvalidName {
                name: req.name.clone(),
                reason: "no free bridge name".into(),
            })?;
        let mut id = random_id();
        while existing.iter().any(|n| n.id == id) {
            id = random_id();
        }
        let n = Self::build(
            &req.name,
            id,
            bridge,
            subnet,
            gateway,
            req.internal,
            req.dns,
        );
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Self::insert(&tx, &n)?;
        tx.commit()?;
        Ok(n)
    }

    /// All networks, by name.
    pub fn list(&self) -> Result<Vec<Network>, NetworkError> {
        Self::all_networks(&self.conn())
    }

    /// A network by name, full ID or unique ID prefix (3+ characters).
    pub fn get(&self, name_or_id: &str) -> Result<Network, NetworkError> {
        Self::find(&self.conn(), name_or_id)
    }

    /// Removes a network that no container uses. The bridge itself is already gone (netavark
    /// deletes it when its last container leaves).
    pub fn remove(&self, name: &str) -> Result<(), NetworkError> {
        let _lock = self.lock()?;
        let mut conn = self.conn();
        let n = Self::find(&conn, name)?;
        if n.name == self.opts.default_network.name {
            return Err(NetworkError::RemoveDefault(n.name));
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let users: Vec<String> = {
            let mut st = tx.prepare(
                "SELECT DISTINCT container_id FROM net_leases WHERE network = ?1 ORDER BY container_id",
            )?;
            let v = st
                .query_map([&n.name], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?;
            v
        };
        if !users.is_empty() {
            return Err(NetworkError::InUse {
                network: n.name,
                containers: users,
            });
        }
        tx.execute("DELETE FROM net_networks WHERE name = ?1", [&n.name])?;
        tx.commit()?;
        Ok(())
    }

    /// All leases (for inspection), ordered by network and IP.
    pub fn leases(&self) -> Result<Vec<Lease>, NetworkError> {
        leases_where(&self.conn(), "", "")
    }

    /// The leases of one container.
    pub fn leases_of(&self, container_id: &str) -> Result<Vec<Lease>, NetworkError> {
        leases_where(&self.conn(), "WHERE container_id = ?1", container_id)
    }

    /// The ports published by one container (as stored at setup).
    pub fn ports_of(&self, container_id: &str) -> Result<Vec<PortMapping>, NetworkError> {
        ports_of(&self.conn(), container_id)
    }

    /// Allocates addresses (requested ones must be inside the subnet and free; a MAC is kept if
    /// given), checks the host ports are free, runs `netavark setup`, and returns its status.
    /// On any failure nothing stays allocated or set up.
    pub fn setup(&self, c: &Attach) -> Result<NetworkStatus, NetworkError> {
        let invalid = |reason: String| NetworkError::InvalidRequest {
            container: c.container_id.clone(),
            reason,
        };
        if c.container_id.is_empty() {
            return Err(invalid("empty container ID".into()));
        }
        if c.networks.is_empty() {
            return Err(invalid("no network to join".into()));
        }
        if !c.netns.exists() {
            return Err(invalid(format!(
                "network namespace {} does not exist",
                c.netns.display()
            )));
        }
        let mut ports_norm = Vec::new();
        for p in &c.ports {
            let n = ports::normalize(p)?;
            if let Some(o) = ports_norm.iter().find(|o| ports::conflicts(o, &n)) {
                return Err(NetworkError::InvalidPort {
                    mapping: ports::describe(&n),
                    reason: format!("it overlaps {}", ports::describe(o)),
                });
            }
            ports_norm.push(n);
        }
        let _lock = self.lock()?;
        let mut conn = self.conn();

        // Resolve the networks and per-network options.
        let mut plan: Vec<(Network, NetworkRequest, String)> = Vec::new();
        for (i, r) in c.networks.iter().enumerate() {
            let n = Self::find(&conn, &r.network)?;
            if plan.iter().any(|(p, _, _)| p.name == n.name) {
                return Err(invalid(format!("network {:?} is given twice", n.name)));
            }
            let ifname = r
                .interface_name
                .clone()
                .unwrap_or_else(|| format!("eth{i}"));
            valid_ifname(&c.container_id, &ifname)?;
            if plan.iter().any(|(_, _, f)| f == &ifname) {
                return Err(invalid(format!("interface name {ifname:?} is given twice")));
            }
            let mut r = r.clone();
            r.static_mac = r
                .static_mac
                .as_deref()
                .map(ipam::normalize_mac)
                .transpose()?;
            plan.push((n, r, ifname));
        }

        // Published ports: not used by our other containers, and bindable right now.
        let mut old_ports = None;
        if !ports_norm.is_empty() {
            let all = {
                let mut st = conn.prepare(
                    "SELECT container_id, host_ip, host_port, port_range, protocol, container_port FROM net_ports",
                )?;
                let v = st
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            PortMapping {
                                host_ip: r.get(1)?,
                                host_port: r.get(2)?,
                                range: r.get(3)?,
                                protocol: r.get(4)?,
                                container_port: r.get(5)?,
                            },
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                v
            };
            for p in &ports_norm {
                if let Some((owner, o)) = all
                    .iter()
                    .find(|(owner, o)| owner != &c.container_id && ports::conflicts(o, p))
                {
                    let port = p.host_port.max(o.host_port);
                    return Err(NetworkError::PortInUse {
                        port,
                        protocol: p.protocol.clone(),
                        host_ip: if p.host_ip.is_empty() {
                            "0.0.0.0".into()
                        } else {
                            p.host_ip.clone()
                        },
                        by: Some(owner.clone()),
                    });
                }
            }
            for p in &ports_norm {
                ports::check_free(p)?;
            }
            old_ports = Some(ports_of(&conn, &c.container_id)?);
        }

        // Allocate.
        let mut added = Added {
            old_ports: old_ports.clone(),
            ..Default::default()
        };
        let mut per_net = BTreeMap::new();
        let mut info = BTreeMap::new();
        {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (n, r, ifname) in &plan {
                let (ips, mac) = Self::allocate(&tx, &c.container_id, n, r, ifname, &mut added)?;
                let mut aliases = r.aliases.clone();
                if n.dns_enabled {
                    let short: String = c.container_id.chars().take(12).collect();
                    if !aliases.contains(&short) {
                        aliases.push(short);
                    }
                } else {
                    aliases.clear();
                }
                per_net.insert(
                    n.name.clone(),
                    PerNetwork {
                        static_ips: ips,
                        static_mac: mac,
                        aliases,
                        interface_name: ifname.clone(),
                    },
                );
                info.insert(n.name.clone(), n.clone());
            }
            if old_ports.is_some() {
                set_ports(&tx, &c.container_id, &ports_norm)?;
            }
            tx.commit()?;
        }
        drop(conn);

        let opts = Options {
            container_id: &c.container_id,
            container_name: &c.container_name,
            networks: per_net,
            network_info: info,
            port_mappings: (!ports_norm.is_empty()).then(|| ports_norm.clone()),
        };
        let status = match self.runner.setup(&c.netns, &opts) {
            Ok(s) => s,
            Err(e) => {
                self.undo(&c.container_id, &added);
                return Err(e);
            }
        };
        // Record the MACs netavark chose.
        let recorded = (|| -> Result<(), NetworkError> {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (net, block) in &status {
                for (ifname, iface) in &block.interfaces {
                    if !iface.mac_address.is_empty() {
                        tx.execute(
                            "UPDATE net_leases SET mac = ?1 WHERE network = ?2 AND container_id = ?3 AND interface_name = ?4",
                            params![iface.mac_address, net, c.container_id, ifname],
                        )?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = recorded {
            let _ = self.runner.teardown(&c.netns, &opts);
            self.undo(&c.container_id, &added);
            return Err(e);
        }
        Ok(status)
    }

    /// Addresses for one network: kept from an earlier setup of the same container, the
    /// requested ones, or the next free ones. Returns the IPs and the MAC to ask for.
    fn allocate(
        tx: &Transaction<'_>,
        container: &str,
        n: &Network,
        r: &NetworkRequest,
        ifname: &str,
        added: &mut Added,
    ) -> Result<(Vec<IpAddr>, Option<String>), NetworkError> {
        let cidrs = network_cidrs(n);
        let mine: Vec<Lease> = leases_where(tx, "WHERE container_id = ?1", container)?
            .into_iter()
            .filter(|l| l.network == n.name)
            .collect();
        let mac = r.static_mac.clone();
        if let Some(m) = &mac {
            let holder: Option<String> = tx
                .query_row(
                    "SELECT container_id FROM net_leases WHERE network = ?1 AND mac = ?2 AND container_id != ?3 LIMIT 1",
                    params![n.name, m, container],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(h) = holder {
                return Err(NetworkError::MacInUse {
                    mac: m.clone(),
                    container: h,
                    network: n.name.clone(),
                });
            }
        }
        if !mine.is_empty() {
            // Set up again (e.g. a restart after a crash): keep what it has.
            let have: BTreeSet<IpAddr> = mine.iter().filter_map(|l| l.ip.parse().ok()).collect();
            let want: BTreeSet<IpAddr> = r.static_ips.iter().copied().collect();
            if !want.is_empty() && want != have {
                return Err(NetworkError::AlreadyAttached {
                    container: container.into(),
                    ip: mine
                        .iter()
                        .map(|l| l.ip.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    network: n.name.clone(),
                });
            }
            let mac = mac.or_else(|| mine.iter().find_map(|l| l.mac.clone()));
            tx.execute(
                "UPDATE net_leases SET interface_name = ?1, mac = ?2 WHERE network = ?3 AND container_id = ?4",
                params![ifname, mac, n.name, container],
            )?;
            return Ok((have.into_iter().collect(), mac));
        }
        let subnet_text = n
            .subnets
            .iter()
            .map(|s| s.subnet.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut chosen: Vec<(usize, Ipv4Addr)> = Vec::new();
        for ip in &r.static_ips {
            let IpAddr::V4(v4) = ip else {
                return Err(NetworkError::Ipv6Unsupported(ip.to_string()));
            };
            let Some(idx) = cidrs.iter().position(|(c, _)| c.contains(*v4)) else {
                return Err(NetworkError::IpNotInSubnet {
                    ip: ip.to_string(),
                    subnet: subnet_text,
                    network: n.name.clone(),
                });
            };
            if chosen.iter().any(|(i, _)| *i == idx) {
                return Err(NetworkError::InvalidRequest {
                    container: container.into(),
                    reason: format!(
                        "two static IPs in the subnet {} of network {:?}",
                        cidrs[idx].0, n.name
                    ),
                });
            }
            if let Some(reason) = cidrs[idx].0.reserved_reason(*v4, cidrs[idx].1) {
                return Err(NetworkError::IpReserved {
                    ip: ip.to_string(),
                    network: n.name.clone(),
                    reason,
                });
            }
            chosen.push((idx, *v4));
        }
        let taken: BTreeSet<Ipv4Addr> = {
            let mut st = tx.prepare("SELECT ip FROM net_leases WHERE network = ?1")?;
            let v = st
                .query_map([&n.name], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            v.iter().filter_map(|s| s.parse().ok()).collect()
        };
        for (idx, (cidr, gw)) in cidrs.iter().enumerate() {
            if chosen.iter().any(|(i, _)| *i == idx) {
                continue;
            }
            let ip = cidr
                .next_free(*gw, &taken)
                .ok_or_else(|| NetworkError::SubnetFull {
                    subnet: cidr.to_string(),
                    network: n.name.clone(),
                })?;
            chosen.push((idx, ip));
        }
        let mut ips = Vec::new();
        for (_, ip) in chosen {
            let ip_s = ip.to_string();
            let res = tx.execute(
                "INSERT INTO net_leases (network, ip, container_id, mac, interface_name) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![n.name, ip_s, container, mac, ifname],
            );
            match res {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    let holder: String = tx.query_row(
                        "SELECT container_id FROM net_leases WHERE network = ?1 AND ip = ?2",
                        params![n.name, ip_s],
                        |row| row.get(0),
                    )?;
                    return Err(NetworkError::IpInUse {
                        ip: ip_s,
                        container: holder,
                    });
                }
                Err(e) => return Err(e.into()),
            }
            added.leases.push((n.name.clone(), ip_s));
            ips.push(IpAddr::V4(ip));
        }
        Ok((ips, mac))
    }

    /// Removes what a failed setup added (best effort: the lock is still held).
    fn undo(&self, container: &str, added: &Added) {
        let mut conn = self.conn();
        let Ok(tx) = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        else {
            return;
        };
        for (net, ip) in &added.leases {
            let _ = tx.execute(
                "DELETE FROM net_leases WHERE network = ?1 AND ip = ?2 AND container_id = ?3",
                params![net, ip, container],
            );
        }
        if let Some(old) = &added.old_ports {
            let _ = set_ports(&tx, container, old);
        }
        let _ = tx.commit();
    }

    /// netavark's per-network options and network definitions for tearing down `leases`.
    fn teardown_plan(
        conn: &rusqlite::Connection,
        leases: &[&Lease],
        c: &Attach,
        errors: &mut Vec<String>,
    ) -> (BTreeMap<String, PerNetwork>, BTreeMap<String, Network>) {
        let mut per_net: BTreeMap<String, PerNetwork> = BTreeMap::new();
        let mut info = BTreeMap::new();
        for l in leases {
            let Ok(ip) = l.ip.parse::<IpAddr>() else {
                continue;
            };
            let e = per_net
                .entry(l.network.clone())
                .or_insert_with(|| PerNetwork {
                    static_ips: Vec::new(),
                    static_mac: l.mac.clone(),
                    aliases: c
                        .networks
                        .iter()
                        .find(|r| r.network == l.network)
                        .map(|r| r.aliases.clone())
                        .unwrap_or_default(),
                    interface_name: l.interface_name.clone(),
                });
            e.static_ips.push(ip);
            if !info.contains_key(&l.network) {
                match Self::find(conn, &l.network) {
                    Ok(n) => {
                        info.insert(l.network.clone(), n);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        per_net.retain(|k, _| info.contains_key(k));
        (per_net, info)
    }

    /// Runs `netavark teardown` for the container's networks (those of `c.networks`, or all it
    /// holds addresses on when that list is empty) and releases the leases (and, when all
    /// networks go, the published ports). Goes on after errors and reports all of them.
    pub fn teardown(&self, c: &Attach) -> Result<(), NetworkError> {
        let _lock = self.lock()?;
        let mut errors = Vec::new();
        let conn = self.conn();
        let leases = leases_where(&conn, "WHERE container_id = ?1", &c.container_id)?;
        let wanted: Option<BTreeSet<String>> = if c.networks.is_empty() {
            None
        } else {
            let mut s = BTreeSet::new();
            for r in &c.networks {
                match Self::find(&conn, &r.network) {
                    Ok(n) => {
                        s.insert(n.name);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Some(s)
        };
        let selected: Vec<&Lease> = leases
            .iter()
            .filter(|l| wanted.as_ref().is_none_or(|w| w.contains(&l.network)))
            .collect();
        let remaining = leases.len() - selected.len();
        let (per_net, info) = Self::teardown_plan(&conn, &selected, c, &mut errors);
        let mut port_list = Vec::new();
        for p in &c.ports {
            match ports::normalize(p) {
                Ok(n) => port_list.push(n),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if port_list.is_empty() {
            port_list = ports_of(&conn, &c.container_id).unwrap_or_default();
        }
        drop(conn);
        if !per_net.is_empty() {
            let opts = Options {
                container_id: &c.container_id,
                container_name: &c.container_name,
                networks: per_net,
                network_info: info,
                port_mappings: (!port_list.is_empty()).then_some(port_list),
            };
            let nets: Vec<Network> = opts.network_info.values().cloned().collect();
            if c.netns.exists() {
                if let Err(e) = self.runner.teardown(&c.netns, &opts) {
                    errors.push(e.to_string());
                }
            } else {
                // The namespace is gone and its interfaces with it: tear down the rest (ports,
                // DNS, an emptied bridge) from a stand-in namespace.
                let ifnames = opts
                    .networks
                    .values()
                    .map(|p| p.interface_name.clone())
                    .collect();
                match ScratchNetns::new(ifnames) {
                    Ok(ns) => {
                        if let Err(e) = self.runner.teardown(ns.path(), &opts) {
                            errors.push(e.to_string());
                        }
                    }
                    Err(e) => errors.push(format!(
                        "network namespace {} is gone and no stand-in could be made ({e}): port forwarding rules may remain",
                        c.netns.display()
                    )),
                }
            }
            nets.iter()
                .for_each(|n| self.runner.drop_leftover_dn_chain(n));
        }
        let released = (|| -> Result<(), NetworkError> {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for l in &selected {
                tx.execute(
                    "DELETE FROM net_leases WHERE network = ?1 AND ip = ?2 AND container_id = ?3",
                    params![l.network, l.ip, c.container_id],
                )?;
            }
            if remaining == 0 {
                tx.execute(
                    "DELETE FROM net_ports WHERE container_id = ?1",
                    [&c.container_id],
                )?;
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = released {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NetworkError::Teardown {
                container: c.container_id.clone(),
                errors,
            })
        }
    }

    /// [`NetworkStore::teardown`] when the container holds addresses or published ports here,
    /// else nothing (no netavark run). Returns whether there was something to tear down.
    pub fn teardown_if_attached(&self, c: &Attach) -> Result<bool, NetworkError> {
        if self.leases_of(&c.container_id)?.is_empty() && self.ports_of(&c.container_id)?.is_empty()
        {
            return Ok(false);
        }
        self.teardown(c).map(|()| true)
    }

    /// Releases the leases and ports of containers not in `alive` (after a crash) and returns
    /// their IDs. Their network namespaces are presumed gone, and their veths with them;
    /// `netavark teardown` is run against a throwaway namespace so that their port forwarding
    /// and DNS entries go too, and the bridge and network firewall chains when they were the
    /// last containers on it (its errors are ignored: best effort).
    pub fn release_stale(&self, alive: &[String]) -> Result<Vec<String>, NetworkError> {
        let _lock = self.lock()?;
        let alive: BTreeSet<&str> = alive.iter().map(String::as_str).collect();
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut st = conn.prepare(
                "SELECT container_id FROM net_leases UNION SELECT container_id FROM net_ports ORDER BY 1",
            )?;
            let v = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            v.into_iter()
                .filter(|id| !alive.contains(id.as_str()))
                .collect()
        };
        for id in &ids {
            let (opts_parts, ports) = {
                let conn = self.conn();
                let leases = leases_where(&conn, "WHERE container_id = ?1", id)?;
                let refs: Vec<&Lease> = leases.iter().collect();
                let c = Attach {
                    container_id: id.clone(),
                    ..Default::default()
                };
                let mut ignored = Vec::new();
                (
                    Self::teardown_plan(&conn, &refs, &c, &mut ignored),
                    ports_of(&conn, id)?,
                )
            };
            let (per_net, info) = opts_parts;
            if !per_net.is_empty() {
                let ifnames = per_net.values().map(|p| p.interface_name.clone()).collect();
                if let Ok(ns) = ScratchNetns::new(ifnames) {
                    let opts = Options {
                        container_id: id,
                        container_name: "",
                        networks: per_net,
                        network_info: info,
                        port_mappings: (!ports.is_empty()).then_some(ports),
                    };
                    let nets: Vec<Network> = opts.network_info.values().cloned().collect();
                    let _ = self.runner.teardown(ns.path(), &opts);
                    nets.iter()
                        .for_each(|n| self.runner.drop_leftover_dn_chain(n));
                }
            }
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM net_leases WHERE container_id = ?1", [id])?;
            tx.execute("DELETE FROM net_ports WHERE container_id = ?1", [id])?;
            tx.commit()?;
        }
        Ok(ids)
    }
}
