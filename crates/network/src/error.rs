//! [`NetworkError`]: every failure of this crate, worded for the person at the terminal: it names
//! the object (network, IP, port, container) and, where there is one, the way out.

use std::path::PathBuf;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No network of that name or ID.
    #[error("network {0:?} not found: see \"stasis network ls\"")]
    NotFound(String),
    /// A network of that name exists already.
    #[error("network {0:?} already exists: choose another name or remove it with \"stasis network rm {0}\"")]
    Exists(String),
    /// The name is taken by a Podman network on this host (netavark names its firewall chains
    /// after the network name, so the two would share them).
    #[error("network name {0:?} is used by a Podman network on this host: choose another name")]
    PodmanName(String),
    /// The name is not a valid network name.
    #[error("invalid network name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A malformed or unusable subnet.
    #[error("invalid subnet {subnet:?}: {reason}")]
    InvalidSubnet {
        /// The subnet as given.
        subnet: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A malformed or unusable gateway.
    #[error("invalid gateway {gateway:?}: {reason}")]
    InvalidGateway {
        /// The gateway as given.
        gateway: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A requested subnet overlaps one of our networks.
    #[error("subnet {subnet} overlaps network {network:?} ({other}): choose another --subnet")]
    SubnetOverlap {
        /// The requested subnet.
        subnet: String,
        /// The network that has it.
        network: String,
        /// That network's subnet.
        other: String,
    },
    /// No free automatic subnet is left.
    #[error("no free subnet left in 10.91.0.0/16 for network {0:?}: give one with --subnet")]
    NoFreeSubnet(String),
    /// A network is still used by containers.
    #[error("network {network:?} is in use by container(s) {}: remove them first", .containers.join(", "))]
    InUse {
        /// The network.
        network: String,
        /// The containers holding addresses on it.
        containers: Vec<String>,
    },
    /// The default network cannot be removed.
    #[error("network {0:?} is the default network and cannot be removed")]
    RemoveDefault(String),
    /// A requested IP is held by another container.
    #[error("IP {ip} is already in use by container {container}: choose another --ip or --ignore-static-ip on restore")]
    IpInUse {
        /// The address.
        ip: String,
        /// The container holding it.
        container: String,
    },
    /// A requested IP is outside the network's subnets.
    #[error("IP {ip} is not in the subnet {subnet} of network {network:?}")]
    IpNotInSubnet {
        /// The address.
        ip: String,
        /// The network's subnet(s).
        subnet: String,
        /// The network.
        network: String,
    },
    /// A requested IP cannot be given to a container (network, broadcast or gateway address).
    #[error("IP {ip} cannot be used in network {network:?}: {reason}")]
    IpReserved {
        /// The address.
        ip: String,
        /// The network.
        network: String,
        /// Why.
        reason: String,
    },
    /// The container already has another address on the network.
    #[error("container {container} already has IP {ip} on network {network:?}: tear its network down first")]
    AlreadyAttached {
        /// The container.
        container: String,
        /// The address it has.
        ip: String,
        /// The network.
        network: String,
    },
    /// IPv6 is not supported (yet).
    #[error("IPv6 address {0} is not supported: stasis networks are IPv4 only")]
    Ipv6Unsupported(String),
    /// All addresses of a subnet are taken.
    #[error("no free IP left in subnet {subnet} of network {network:?}: remove containers or create a larger network")]
    SubnetFull {
        /// The subnet.
        subnet: String,
        /// The network.
        network: String,
    },
    /// A malformed MAC address.
    #[error("invalid MAC address {mac:?}: {reason}")]
    InvalidMac {
        /// The MAC as given.
        mac: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A MAC address held by another container on the same network.
    #[error("MAC address {mac} is already in use by container {container} on network {network:?}: choose another --mac-address or --ignore-static-mac on restore")]
    MacInUse {
        /// The MAC.
        mac: String,
        /// The container holding it.
        container: String,
        /// The network.
        network: String,
    },
    /// A bad attach request (duplicate network, bad interface name, ...).
    #[error("invalid network request for container {container}: {reason}")]
    InvalidRequest {
        /// The container.
        container: String,
        /// What is wrong.
        reason: String,
    },
    /// A malformed port mapping.
    #[error("invalid port mapping {mapping}: {reason}")]
    InvalidPort {
        /// The mapping, as `HOSTIP:HOSTPORT:CONTAINERPORT/PROTO`.
        mapping: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A host port is already bound by some process, or published by another container.
    #[error("port {port}/{protocol} on {host_ip} is already in use{}", .by.as_ref().map(|c| format!(" by container {c}")).unwrap_or_default())]
    PortInUse {
        /// The host port.
        port: u16,
        /// `tcp`, `udp` or `sctp`.
        protocol: String,
        /// The host address (`0.0.0.0` for all).
        host_ip: String,
        /// The stasis container publishing it, when it is one of ours.
        by: Option<String>,
    },
    /// The netavark binary was not found.
    #[error("netavark not found (looked in {}): install it (Debian: apt-get install netavark)", .searched.join(", "))]
    NetavarkMissing {
        /// Where we looked.
        searched: Vec<String>,
    },
    /// netavark ran and failed.
    #[error("netavark {action} for container {container}: {message}")]
    Netavark {
        /// `setup` or `teardown`.
        action: String,
        /// The container.
        container: String,
        /// netavark's own error message (from its `{"error": ...}` JSON) or its output.
        message: String,
    },
    /// Teardown collected several errors.
    #[error("network teardown of container {container}: {}", .errors.join("; "))]
    Teardown {
        /// The container.
        container: String,
        /// Every error met.
        errors: Vec<String>,
    },
    /// The state database failed.
    #[error("network state: {0}")]
    Db(#[from] stasis_state::rusqlite::Error),
    /// The state layer (open, lock) failed.
    #[error("network state: {0}")]
    State(#[from] stasis_state::StateError),
    /// A stored network definition is unreadable.
    #[error("network {name:?}: stored definition is corrupt: {reason}")]
    Corrupt {
        /// The network.
        name: String,
        /// What failed.
        reason: String,
    },
    /// A filesystem or process error.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: String,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl NetworkError {
    pub(crate) fn io(what: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NetworkError::Io {
            what: what.to_string(),
            path: path.into(),
            source,
        }
    }
}
