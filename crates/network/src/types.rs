//! Public data types: network definitions (serialised in netavark's / Podman's `network inspect`
//! JSON shape, which is also what `netavark setup` takes in `network_info`), creation and attach
//! requests, and leases.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

pub use stasis_archive::port::PortMapping;

/// Name of the default network.
pub const DEFAULT_NETWORK: &str = "stasis";
/// Bridge of the default network.
pub const DEFAULT_BRIDGE: &str = "stasis0";
/// Subnet of the default network (Podman's default is `podman0`, 10.88.0.0/16).
pub const DEFAULT_SUBNET: &str = "10.90.0.0/16";

/// One subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// `10.90.0.0/16`.
    pub subnet: String,
    /// `10.90.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A network definition, serialised like `podman network inspect` (netavark's network JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Name, unique.
    pub name: String,
    /// 64 hex digits, unique.
    pub id: String,
    /// Always `bridge`.
    pub driver: String,
    /// Bridge on the host: `stasis0`, `stasis1`, ...
    pub network_interface: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Subnets (IPv4, one for now).
    pub subnets: Vec<Subnet>,
    /// Whether any subnet is IPv6 (always false for now).
    #[serde(default)]
    pub ipv6_enabled: bool,
    /// No external routing (no NAT, no port forwarding).
    #[serde(default)]
    pub internal: bool,
    /// Whether aardvark-dns serves names on this network.
    #[serde(default)]
    pub dns_enabled: bool,
    /// IPAM options; `{"driver": "host-local"}`.
    #[serde(default)]
    pub ipam_options: BTreeMap<String, String>,
}

/// `stasis network create`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateNetwork {
    /// Network name.
    pub name: String,
    /// CIDR; chosen automatically (10.91.N.0/24) when absent.
    pub subnet: Option<String>,
    /// Gateway; the first address of the subnet when absent.
    pub gateway: Option<String>,
    /// No external routing.
    pub internal: bool,
    /// Run aardvark-dns for this network.
    pub dns: bool,
}

/// One network a container joins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkRequest {
    /// Network name or ID.
    pub network: String,
    /// Addresses to use (each must be in a subnet of the network and free); empty for automatic.
    pub static_ips: Vec<IpAddr>,
    /// MAC address `aa:bb:cc:dd:ee:ff`; random when absent.
    pub static_mac: Option<String>,
    /// Extra DNS names on this network.
    pub aliases: Vec<String>,
    /// Interface name in the container; `eth0`, `eth1`, ... in request order by default.
    pub interface_name: Option<String>,
}

/// A container's attachment: what `setup`/`teardown` act on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attach {
    /// Full container ID.
    pub container_id: String,
    /// Container name (its DNS name).
    pub container_name: String,
    /// Path of the network namespace file (bind mount).
    pub netns: PathBuf,
    /// Networks to join.
    pub networks: Vec<NetworkRequest>,
    /// Published ports (host ports must be resolved: non-zero).
    pub ports: Vec<PortMapping>,
}

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Network name.
    pub network: String,
    /// The address.
    pub ip: String,
    /// Holder.
    pub container_id: String,
    /// MAC address of the interface, once known.
    pub mac: Option<String>,
    /// Interface name in the container.
    pub interface_name: String,
}
