//! `stasis-network`: container networks through netavark's JSON interface (the interface
//! Podman 4.3 uses), with IP address management of our own.
//!
//! - [`NetworkStore`] keeps network definitions, address leases and published ports in the
//!   shared state database and runs `netavark setup`/`teardown` on a container's network
//!   namespace file. Addresses are chosen here (netavark only applies `static_ips`), so a
//!   restored container can get exactly the IP and MAC it had at checkpoint time.
//! - The default network is `stasis` (bridge `stasis0`, 10.90.0.0/16), apart from Podman's
//!   `podman` (`podman0`, 10.88.0.0/16) on the same host; custom networks get `stasisN` and an
//!   automatic 10.91.N.0/24 that overlaps no network or host route.
//! - Host ports are checked free (briefly bound) before netavark is called, because netavark
//!   1.4 only writes iptables DNAT rules and would not notice a port already in use.
//!
//! Files per concern: [`types`] (public data), [`ipam`] (subnets, addresses, MACs), [`ports`]
//! (port checks), [`netavark`] (running netavark), [`store`] (the store), [`error`].

pub mod error;
pub mod ipam;
pub mod netavark;
pub mod ports;
pub mod scratchns;
pub mod store;
pub mod types;

pub use error::NetworkError;
pub use stasis_archive::network::{NetAddress, NetInterface, NetworkStatus, StatusBlock};
pub use store::{DefaultNetwork, NetworkStore, StoreOptions};
pub use types::{
    Attach, CreateNetwork, Lease, Network, NetworkRequest, PortMapping, Subnet, DEFAULT_BRIDGE,
    DEFAULT_NETWORK, DEFAULT_SUBNET,
};
