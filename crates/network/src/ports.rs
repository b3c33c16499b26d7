//! Published ports: validation, and the check that a host port is free BEFORE netavark is
//! called.
//!
//! netavark 1.4 publishes ports with iptables DNAT rules only; it binds nothing, so a host port
//! already used by a process would "work" silently (the DNAT rule wins for traffic from outside,
//! the process for some local traffic). We therefore bind every host port briefly (TCP and UDP;
//! SCTP is not checked) and also compare against ports published by our other containers, which
//! are DNAT-only and so invisible to `bind`.

use crate::error::NetworkError;
use crate::types::PortMapping;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

/// `HOSTIP:HOSTPORT:CONTAINERPORT/PROTO`, for messages.
pub fn describe(p: &PortMapping) -> String {
    let ip = if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &p.host_ip
    };
    let range = |start: u16| {
        if p.range > 1 {
            format!("{start}-{}", u32::from(start) + u32::from(p.range) - 1)
        } else {
            start.to_string()
        }
    };
    format!(
        "{ip}:{}:{}/{}",
        range(p.host_port),
        range(p.container_port),
        if p.protocol.is_empty() {
            "tcp"
        } else {
            &p.protocol
        }
    )
}

/// Checks one mapping and returns it normalised (protocol `tcp` when empty, range 1 when 0,
/// host IP `0.0.0.0` written as empty, as Podman passes it to netavark).
pub fn normalize(p: &PortMapping) -> Result<PortMapping, NetworkError> {
    let bad = |reason: &str| NetworkError::InvalidPort {
        mapping: describe(p),
        reason: reason.to_string(),
    };
    let protocol = match p.protocol.as_str() {
        "" => "tcp",
        "tcp" | "udp" | "sctp" => p.protocol.as_str(),
        _ => return Err(bad("the protocol must be tcp, udp or sctp")),
    };
    let range = p.range.max(1);
    if p.container_port == 0 {
        return Err(bad("the container port must not be 0"));
    }
    if p.host_port == 0 {
        return Err(bad(
            "the host port is 0: pick a free one when the container is created (see ports::assign_host_ports)",
        ));
    }
    if u32::from(p.container_port) + u32::from(range) - 1 > 65535
        || u32::from(p.host_port) + u32::from(range) - 1 > 65535
    {
        return Err(bad("the port range goes past 65535"));
    }
    let host_ip = match p.host_ip.as_str() {
        "" | "0.0.0.0" => String::new(),
        s => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.to_string(),
            Ok(IpAddr::V6(_)) => {
                return Err(bad(
                    "IPv6 host addresses are not supported: stasis networks are IPv4 only",
                ))
            }
            Err(_) => return Err(bad("the host address is not an IP address")),
        },
    };
    Ok(PortMapping {
        host_ip,
        container_port: p.container_port,
        host_port: p.host_port,
        range,
        protocol: protocol.to_string(),
    })
}

/// Whether two normalised mappings would claim a common host port.
pub fn conflicts(a: &PortMapping, b: &PortMapping) -> bool {
    let ips = a.host_ip.is_empty() || b.host_ip.is_empty() || a.host_ip == b.host_ip;
    let (a0, a1) = (
        u32::from(a.host_port),
        u32::from(a.host_port) + u32::from(a.range.max(1)) - 1,
    );
    let (b0, b1) = (
        u32::from(b.host_port),
        u32::from(b.host_port) + u32::from(b.range.max(1)) - 1,
    );
    a.protocol == b.protocol && ips && a0 <= b1 && b0 <= a1
}

fn host_addr(p: &PortMapping) -> Ipv4Addr {
    p.host_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// Binds every host port of a normalised mapping briefly; the first one in use fails.
pub fn check_free(p: &PortMapping) -> Result<(), NetworkError> {
    let ip = host_addr(p);
    for port in (0..p.range.max(1)).map(|i| p.host_port.wrapping_add(i)) {
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        let res = match p.protocol.as_str() {
            "tcp" => TcpListener::bind(addr).map(drop),
            "udp" => UdpSocket::bind(addr).map(drop),
            _ => Ok(()), // sctp: not checked
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(NetworkError::PortInUse {
                    port,
                    protocol: p.protocol.clone(),
                    host_ip: ip.to_string(),
                    by: None,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Err(NetworkError::InvalidPort {
                    mapping: describe(p),
                    reason: format!("{ip} is not an address of this host"),
                })
            }
            Err(e) => {
                return Err(NetworkError::InvalidPort {
                    mapping: describe(p),
                    reason: format!("cannot check that the host port is free: {e}"),
                })
            }
        }
    }
    Ok(())
}

/// Replaces host port 0 (`-p 80`, `-p :80`) by a free port chosen now, as Podman does at create
/// time. Ranges get a run of consecutive free ports. Call when the container is created; the
/// result goes into its config so restarts and restores keep the port.
pub fn assign_host_ports(ports: &mut [PortMapping]) -> Result<(), NetworkError> {
    for i in 0..ports.len() {
        if ports[i].host_port != 0 {
            continue;
        }
        let range = ports[i].range.max(1);
        let mut found = None;
        for _ in 0..200 {
            let base: u16 = rand::random_range(32768..=60999u16.saturating_sub(range));
            let mut cand = ports[i].clone();
            cand.host_port = base;
            let Ok(n) = normalize(&cand) else { continue };
            let clash = ports
                .iter()
                .filter(|o| o.host_port != 0)
                .filter_map(|o| normalize(o).ok())
                .any(|o| conflicts(&o, &n));
            if !clash && check_free(&n).is_ok() {
                found = Some(base);
                break;
            }
        }
        match found {
            Some(b) => ports[i].host_port = b,
            None => {
                return Err(NetworkError::InvalidPort {
                    mapping: describe(&ports[i]),
                    reason: "no free host port found".into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(ip: &str, host: u16, cont: u16, range: u16, proto: &str) -> PortMapping {
        PortMapping {
            host_ip: ip.into(),
            container_port: cont,
            host_port: host,
            range,
            protocol: proto.into(),
        }
    }

    #[test]
    fn normalizes() {
        let n = normalize(&pm("0.0.0.0", 8080, 80, 0, "")).unwrap();
        assert_eq!(n, pm("", 8080, 80, 1, "tcp"));
        assert!(normalize(&pm("", 0, 80, 1, "tcp")).is_err());
        assert!(normalize(&pm("", 80, 0, 1, "tcp")).is_err());
        assert!(normalize(&pm("", 65535, 80, 2, "tcp")).is_err());
        assert!(normalize(&pm("", 80, 80, 1, "icmp")).is_err());
        assert!(normalize(&pm("::1", 80, 80, 1, "tcp")).is_err());
        assert_eq!(
            normalize(&pm("x", 80, 80, 1, "tcp"))
                .unwrap_err()
                .to_string(),
            "invalid port mapping x:80:80/tcp: the host address is not an IP address"
        );
        assert_eq!(
            describe(&pm("", 8000, 80, 3, "udp")),
            "0.0.0.0:8000-8002:80-82/udp"
        );
    }

    #[test]
    fn conflict_rules() {
        let a = pm("", 8000, 80, 3, "tcp");
        assert!(conflicts(&a, &pm("127.0.0.1", 8002, 1, 1, "tcp")));
        assert!(!conflicts(&a, &pm("127.0.0.1", 8003, 1, 1, "tcp")));
        assert!(!conflicts(&a, &pm("", 8000, 1, 1, "udp")));
        assert!(!conflicts(
            &pm("127.0.0.1", 8000, 1, 1, "tcp"),
            &pm("127.0.0.2", 8000, 1, 1, "tcp")
        ));
    }

    #[test]
    fn used_port_detected() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = check_free(&pm("", port, 80, 1, "tcp")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("port {port}/tcp on 0.0.0.0 is already in use")
        );
        drop(l);
        check_free(&pm("", port, 80, 1, "tcp")).unwrap();
    }

    #[test]
    fn assigns_free_ports() {
        let mut v = vec![pm("", 0, 80, 2, "tcp"), pm("", 0, 53, 1, "udp")];
        assign_host_ports(&mut v).unwrap();
        assert!(v.iter().all(|p| p.host_port >= 32768));
    }
}
