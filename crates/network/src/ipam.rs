//! Address management that is ours, not netavark's: IPv4 subnet arithmetic, the choice of free
//! subnets (avoiding our networks, Podman's and the host's routes), the choice of a container's
//! next free address, and MAC address checks. The leases themselves live in the state database
//! (see `store.rs`); this module is pure apart from reading the host's routes.

use crate::error::NetworkError;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// An IPv4 network in CIDR form; `addr` is the network address (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Builds a CIDR from any address in it (host bits are cleared).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix > 32 {
            return None;
        }
        Some(Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// Parses `A.B.C.D/N`; host bits must be zero (as Podman requires).
    pub fn parse(s: &str) -> Result<Self, NetworkError> {
        let bad = |reason: &str| NetworkError::InvalidSubnet {
            subnet: s.to_string(),
            reason: reason.to_string(),
        };
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| bad("expected CIDR form ADDRESS/PREFIX, e.g. 10.91.5.0/24"))?;
        let ip: IpAddr = a.parse().map_err(|_| bad("not an IP address"))?;
        let IpAddr::V4(v4) = ip else {
            return Err(bad("IPv6 subnets are not supported: use an IPv4 subnet"));
        };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad("the prefix length must be 0 to 32"))?;
        let c = Cidr::new(v4, prefix).ok_or_else(|| bad("bad prefix"))?;
        if c.addr != v4 {
            return Err(bad(&format!(
                "host bits are set: did you mean {}?",
                Cidr {
                    addr: c.addr,
                    prefix
                }
            )));
        }
        Ok(c)
    }

    fn first(&self) -> u32 {
        u32::from(self.addr)
    }

    fn last(&self) -> u32 {
        self.first() | !mask(self.prefix)
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.first()
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// The network address (not usable by hosts for prefixes below 31).
    pub fn network_addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.last())
    }

    /// The first host address: the default gateway.
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        let (lo, hi) = self.host_range()?;
        (lo <= hi).then(|| Ipv4Addr::from(lo))
    }

    /// Inclusive range of host addresses (network and broadcast excluded below /31).
    fn host_range(&self) -> Option<(u32, u32)> {
        if self.prefix >= 31 {
            return None; // too small for a gateway plus containers
        }
        Some((self.first() + 1, self.last() - 1))
    }

    /// Why `ip` cannot be given to a container of a network with gateway `gateway`, if so.
    pub fn reserved_reason(&self, ip: Ipv4Addr, gateway: Option<Ipv4Addr>) -> Option<String> {
        if ip == self.network_addr() {
            return Some("it is the network address of the subnet".into());
        }
        if ip == self.broadcast() {
            return Some("it is the broadcast address of the subnet".into());
        }
        if Some(ip) == gateway {
            return Some("it is the gateway of the network".into());
        }
        None
    }

    /// The next free container address: the lowest free one after the gateway, then (wrapping)
    /// any free one before it.
    pub fn next_free(
        &self,
        gateway: Option<Ipv4Addr>,
        taken: &BTreeSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let (lo, hi) = self.host_range()?;
        let start = gateway
            .map(u32::from)
            .filter(|g| (lo..=hi).contains(g))
            .map(|g| g + 1)
            .unwrap_or(lo);
        let ok = |n: u32| {
            let ip = Ipv4Addr::from(n);
            Some(ip) != gateway && !taken.contains(&ip)
        };
        (start..=hi)
            .chain(lo..start)
            .find(|n| ok(*n))
            .map(Ipv4Addr::from)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// The IPv4 routes of the host (destination networks, default route excluded), from
/// `/proc/net/route` (whose fields are little-endian hex).
pub fn host_routes() -> Vec<Cidr> {
    std::fs::read_to_string("/proc/net/route")
        .map(|s| parse_proc_route(&s))
        .unwrap_or_default()
}

/// Parses the text of `/proc/net/route`.
pub fn parse_proc_route(text: &str) -> Vec<Cidr> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dst), Ok(m)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
        else {
            continue;
        };
        // The kernel prints the raw network-byte-order value as a native integer.
        let dst = Ipv4Addr::from(dst.to_ne_bytes());
        let prefix = m.count_ones() as u8;
        if prefix == 0 {
            continue; // default route
        }
        if let Some(c) = Cidr::new(dst, prefix) {
            out.push(c);
        }
    }
    out
}

/// Subnets of Podman's networks on this host (`/etc/containers/networks/*.json` plus its
/// built-in default 10.88.0.0/16), so our automatic choice never lands on one of them even
/// while its bridge is down. Unreadable files are skipped.
pub fn podman_networks(dir: &Path) -> Vec<(String, Cidr)> {
    let mut out = vec![(
        "podman".to_string(),
        Cidr {
            addr: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
        },
    )];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let name = v["name"].as_str().unwrap_or_default().to_string();
        for s in v["subnets"].as_array().into_iter().flatten() {
            if let Some(c) = s["subnet"].as_str().and_then(|s| Cidr::parse(s).ok()) {
                out.push((name.clone(), c));
            }
        }
    }
    out
}

/// The first `10.91.N.0/24` that overlaps none of `used`.
pub fn auto_subnet(used: &[Cidr]) -> Option<Cidr> {
    (0..=255u8)
        .map(|n| Cidr {
            addr: Ipv4Addr::new(10, 91, n, 0),
            prefix: 24,
        })
        .find(|c| !used.iter().any(|u| u.overlaps(c)))
}

/// Checks and normalises a MAC address to lower-case `aa:bb:cc:dd:ee:ff`; it must be unicast.
pub fn normalize_mac(mac: &str) -> Result<String, NetworkError> {
    let bad = |reason: &str| NetworkError::InvalidMac {
        mac: mac.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad("expected six hex bytes like 02:42:ac:11:00:02"));
    }
    let mut bytes = [0u8; 6];
    for (b, p) in bytes.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err(bad("expected six hex bytes like 02:42:ac:11:00:02"));
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad("not hexadecimal"))?;
    }
    if bytes[0] & 1 == 1 {
        return Err(bad("a multicast address cannot be used for an interface"));
    }
    if bytes == [0; 6] {
        return Err(bad("the all-zero address cannot be used"));
    }
    Ok(bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn parse_and_contains() {
        let n = c("10.90.0.0/16");
        assert!(n.contains("10.90.255.3".parse().unwrap()));
        assert!(!n.contains("10.91.0.1".parse().unwrap()));
        assert_eq!(n.first_host(), Some("10.90.0.1".parse().unwrap()));
        assert_eq!(n.broadcast(), "10.90.255.255".parse::<Ipv4Addr>().unwrap());
        let e = Cidr::parse("10.90.0.5/16").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid subnet \"10.90.0.5/16\": host bits are set: did you mean 10.90.0.0/16?"
        );
        assert!(Cidr::parse("10.0.0.0").is_err());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("fd00::/64")
            .unwrap_err()
            .to_string()
            .contains("IPv6"));
        assert!(Cidr::parse("x/8").is_err());
    }

    #[test]
    fn overlaps() {
        assert!(c("10.89.0.0/24").overlaps(&c("10.89.0.0/16")));
        assert!(c("10.89.0.0/16").overlaps(&c("10.89.3.0/24")));
        assert!(!c("10.89.0.0/24").overlaps(&c("10.89.1.0/24")));
        assert!(c("0.0.0.0/0").overlaps(&c("1.2.3.0/24")));
    }

    #[test]
    fn next_free_skips_gateway_and_taken() {
        let n = c("10.91.1.0/29"); // hosts .1-.6
        let gw = Some("10.91.1.1".parse().unwrap());
        let mut taken = BTreeSet::new();
        assert_eq!(n.next_free(gw, &taken), Some("10.91.1.2".parse().unwrap()));
        taken.insert("10.91.1.2".parse().unwrap());
        taken.insert("10.91.1.3".parse().unwrap());
        assert_eq!(n.next_free(gw, &taken), Some("10.91.1.4".parse().unwrap()));
        for i in 4..=6 {
            taken.insert(Ipv4Addr::new(10, 91, 1, i));
        }
        assert_eq!(n.next_free(gw, &taken), None);
        // gateway in the middle: wraps to addresses below it
        let gw = Some("10.91.1.6".parse().unwrap());
        let taken = BTreeSet::new();
        assert_eq!(n.next_free(gw, &taken), Some("10.91.1.1".parse().unwrap()));
        assert_eq!(c("10.0.0.0/31").next_free(None, &taken), None);
    }

    #[test]
    fn proc_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
podman0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(
            parse_proc_route(text),
            vec![c("192.0.2.0/24"), c("10.88.0.0/16")]
        );
    }

    #[test]
    fn auto_subnet_skips_used() {
        assert_eq!(auto_subnet(&[]), Some(c("10.91.0.0/24")));
        assert_eq!(
            auto_subnet(&[c("10.91.0.0/23"), c("10.91.3.0/24")]),
            Some(c("10.91.2.0/24"))
        );
        assert_eq!(auto_subnet(&[c("10.0.0.0/8")]), None);
    }

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac("02:42:AC:11:00:02").unwrap(),
            "02:42:ac:11:00:02"
        );
        assert_eq!(
            normalize_mac("02-42-ac-11-00-02").unwrap(),
            "02:42:ac:11:00:02"
        );
        assert!(normalize_mac("zz")
            .unwrap_err()
            .to_string()
            .starts_with("invalid MAC address \"zz\": "));
        assert!(normalize_mac("01:00:5e:00:00:01").is_err());
        assert!(normalize_mac("00:00:00:00:00:00").is_err());
        assert!(normalize_mac("02:42:ac:11:00:0g").is_err());
        assert!(normalize_mac("2:42:ac:11:00:02").is_err());
    }
}
