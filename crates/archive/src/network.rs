//! `network.status`: the container's network state at checkpoint time, as Podman ≥ 4.0 writes
//! it: `map[network name]StatusBlock` in netavark's JSON.
//!
//! Podman 3.x wrote a CNI result list instead; Podman 4 fails to decode it, logs "Failed to
//! unmarshal network status, cannot restore the same ip/mac" and restores anyway. [`parse`]
//! does the same: anything that is not a v4 status gives [`NetworkStatusRead::Unreadable`], never
//! an error, so the restore goes on with new addresses.

use crate::json::{null_default, JsonProblem};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Network name → status.
pub type NetworkStatus = BTreeMap<String, StatusBlock>;

/// netavark's `StatusBlock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusBlock {
    /// Interface name → addresses.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub interfaces: BTreeMap<String, NetInterface>,
    /// DNS servers configured for the network.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_server_ips: Vec<String>,
    /// DNS search domains.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_search_domains: Vec<String>,
    /// Keys not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One interface of a [`StatusBlock`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetInterface {
    /// Addresses with their subnet.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub subnets: Vec<NetAddress>,
    /// MAC address `aa:bb:cc:dd:ee:ff`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
    /// Keys not modelled here.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One address: `ipnet` is `ADDR/PREFIX`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetAddress {
    /// `10.88.0.9/16`.
    #[serde(default, deserialize_with = "null_default")]
    pub ipnet: String,
    /// Gateway, if any.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub gateway: String,
}

/// The result of reading `network.status`.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkStatusRead {
    /// A Podman ≥ 4.0 status (possibly empty: `null`, `{}` or an empty file).
    Status(NetworkStatus),
    /// Not decodable (e.g. a Podman 3.x CNI result): IP and MAC addresses are not reused.
    Unreadable {
        /// Why, for a warning: `network.status: unreadable (...), IP/MAC not reused`.
        reason: String,
    },
}

impl NetworkStatusRead {
    /// The status, or an empty one when unreadable.
    pub fn status(&self) -> NetworkStatus {
        match self {
            NetworkStatusRead::Status(s) => s.clone(),
            NetworkStatusRead::Unreadable { .. } => NetworkStatus::new(),
        }
    }
}

/// Errors of this module (there are none on read; kept for symmetry with the others).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Encoding failed.
    #[error("network.status: cannot encode: {0}")]
    Encode(String),
}

/// Reads `network.status`; never fails (see the module docs).
pub fn parse(bytes: &[u8]) -> NetworkStatusRead {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return NetworkStatusRead::Status(NetworkStatus::new());
    }
    match serde_json::from_slice::<Option<NetworkStatus>>(bytes) {
        Ok(s) => NetworkStatusRead::Status(s.unwrap_or_default()),
        Err(e) => NetworkStatusRead::Unreadable {
            reason: format!(
                "network.status: unreadable ({}), IP/MAC not reused; the container gets new addresses",
                JsonProblem::from_serde(&e)
            ),
        },
    }
}

/// Encodes a status as Podman does (two-space indent; an empty status is `{}`).
pub fn to_json_pretty(status: &NetworkStatus) -> Result<Vec<u8>, NetworkError> {
    serde_json::to_vec_pretty(status).map_err(|e| NetworkError::Encode(e.to_string()))
}

/// The address to reuse on one network, taken from its first interface (in name order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReusedAddress {
    /// Interface name in the container.
    pub interface_name: String,
    /// IP addresses without prefix length.
    pub ips: Vec<String>,
    /// MAC address, or empty.
    pub mac: String,
}

/// Per network, the interface name, IPs and MAC to ask for again on restore, like Podman's
/// `perNetworkOpts` (only the first interface of each network is used). The caller applies the
/// rules: not with a new name, and a static IP/MAC in the config wins.
pub fn reuse_addresses(status: &NetworkStatus) -> BTreeMap<String, ReusedAddress> {
    let mut out = BTreeMap::new();
    for (net, block) in status {
        if let Some((ifname, iface)) = block.interfaces.iter().next() {
            let ips = iface
                .subnets
                .iter()
                .map(|s| s.ipnet.split('/').next().unwrap_or_default().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            out.insert(
                net.clone(),
                ReusedAddress {
                    interface_name: ifname.clone(),
                    ips,
                    mac: iface.mac_address.clone(),
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_podman43_static() {
        let r = parse(include_bytes!("../tests/fixtures/podman43-network.status"));
        let NetworkStatusRead::Status(s) = r else {
            panic!("unreadable: {r:?}")
        };
        let b = &s["stasisfx-net"];
        assert_eq!(b.dns_server_ips, vec!["10.89.77.1"]);
        assert_eq!(b.dns_search_domains, vec!["dns.podman"]);
        let eth0 = &b.interfaces["eth0"];
        assert_eq!(eth0.mac_address, "92:d0:c6:0a:29:33");
        assert_eq!(eth0.subnets[0].ipnet, "10.89.77.5/24");
        assert_eq!(eth0.subnets[0].gateway, "10.89.77.1");
        let reuse = reuse_addresses(&s);
        assert_eq!(
            reuse["stasisfx-net"],
            ReusedAddress {
                interface_name: "eth0".into(),
                ips: vec!["10.89.77.5".into()],
                mac: "92:d0:c6:0a:29:33".into()
            }
        );
    }

    #[test]
    fn round_trip_dynamic() {
        let bytes = include_bytes!("../tests/fixtures/podman43-network-dynamic.status");
        let s = parse(bytes).status();
        assert_eq!(
            s["podman"].interfaces["eth0"].subnets[0].ipnet,
            "10.88.0.4/16"
        );
        let again: Value = serde_json::from_slice(&to_json_pretty(&s).unwrap()).unwrap();
        assert_eq!(again, serde_json::from_slice::<Value>(bytes).unwrap());
    }

    #[test]
    fn empty_forms() {
        for b in [&b""[..], b"null", b"{}", b"  \n"] {
            assert_eq!(parse(b), NetworkStatusRead::Status(NetworkStatus::new()));
        }
    }

    #[test]
    fn pre_v4_cni_result_is_unreadable_not_fatal() {
        let cni = br#"[{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff"}],"ips":[{"version":"4","address":"10.88.0.5/16"}]}]"#;
        let r = parse(cni);
        match &r {
            NetworkStatusRead::Unreadable { reason } => {
                assert!(
                    reason.starts_with("network.status: unreadable (unexpected value at line 1"),
                    "{reason}"
                );
                assert!(reason.contains("IP/MAC not reused"));
            }
            other => panic!("{other:?}"),
        }
        assert!(r.status().is_empty());
        assert!(matches!(
            parse(b"{garbage"),
            NetworkStatusRead::Unreadable { .. }
        ));
    }
}
