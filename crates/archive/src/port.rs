//! `-p/--publish` specs parsed the way Podman 4.3 parses them
//! (`specgenutil.CreatePortBindings` followed by the protocol rules of
//! `generate.ParsePortMapping`), producing libpod's `PortMapping`
//! (`newPortMappings` in config.dump).
//!
//! Grammar: `[[HOSTIP:][HOSTPORT[-END]]:]CONTAINERPORT[-END][/PROTO[,PROTO...]]`, with an IPv6
//! host address written in brackets (`[::1]:8080:80`). An empty host port (`:80`, `1.2.3.4::80`)
//! and a spec without host port (`80`) give `host_port` 0, which means "pick a free port when the
//! container is created". Several protocols (`80/tcp,udp`) give one mapping per protocol.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// libpod's `types.PortMapping`, with its JSON keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortMapping {
    /// Host address to bind; empty for all addresses.
    #[serde(default)]
    pub host_ip: String,
    /// First container port.
    #[serde(default)]
    pub container_port: u16,
    /// First host port; 0 means a free port is chosen at create time.
    #[serde(default)]
    pub host_port: u16,
    /// Number of consecutive ports (1 for a single port).
    #[serde(default)]
    pub range: u16,
    /// `tcp`, `udp` or `sctp`.
    #[serde(default)]
    pub protocol: String,
}

/// A malformed `--publish` spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --publish {spec:?}: {reason}; the format is [[HOSTIP:][HOSTPORT[-END]]:]CONTAINERPORT[-END][/tcp|udp|sctp]")]
pub struct PortError {
    /// The spec as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses several `--publish` specs; the first bad one fails the whole list.
pub fn parse_publish_list<S: AsRef<str>>(specs: &[S]) -> Result<Vec<PortMapping>, PortError> {
    let mut out = Vec::new();
    for s in specs {
        out.extend(parse_publish(s.as_ref())?);
    }
    Ok(out)
}

/// Parses one `--publish` spec into one mapping per protocol.
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, PortError> {
    let fail = |reason: String| PortError {
        spec: spec.to_string(),
        reason,
    };
    let (remainder, proto) = match spec.split('/').collect::<Vec<_>>()[..] {
        [r] => (r, None),
        [r, p] => (r, Some(p)),
        _ => return Err(fail("the protocol can only be specified once".into())),
    };

    let mut host_ip: Option<&str> = None;
    let mut have_v6 = false;
    let mut remainder = remainder;
    match remainder.split(']').collect::<Vec<_>>()[..] {
        [_] => {}
        [ip, rest] => {
            have_v6 = true;
            let Some(ip) = ip.strip_prefix('[') else {
                return Err(fail("IPv6 addresses must be enclosed in []".into()));
            };
            let Some(rest) = rest.strip_prefix(':') else {
                return Err(fail(
                    "an IPv6 address must be followed by a colon (':')".into(),
                ));
            };
            host_ip = Some(ip);
            remainder = rest;
        }
        _ => {
            return Err(fail(
                "at most one IPv6 address can be given in a --publish".into(),
            ))
        }
    }

    let (host_port, ctr_port) = match remainder.split(':').collect::<Vec<_>>()[..] {
        [c] if have_v6 => {
            let _ = c;
            return Err(fail(
                "a host port and a container port are needed when an IP is given".into(),
            ));
        }
        [c] => (None, c),
        [h, c] => (Some(h), c),
        [_, _, _] if have_v6 => {
            return Err(fail(
                "with an IPv6 address the format is [IPV6]:HOSTPORT:CONTAINERPORT".into(),
            ))
        }
        [ip, h, c] => {
            host_ip = Some(ip);
            (Some(h), c)
        }
        _ => {
            return Err(fail(
                "too many ':'; the format is [[HOSTIP:]HOSTPORT:]CONTAINERPORT".into(),
            ))
        }
    };

    if ctr_port.is_empty() {
        return Err(fail("the container port is empty".into()));
    }
    let (ctr_start, ctr_len) =
        parse_range(ctr_port).map_err(|e| fail(format!("container port: {e}")))?;

    let mut base = PortMapping {
        container_port: ctr_start,
        range: ctr_len,
        ..Default::default()
    };

    if let Some(ip) = host_ip {
        if ip.is_empty() {
            return Err(fail("the host IP is empty".into()));
        }
        if ip != "0.0.0.0" {
            let parsed: IpAddr = ip
                .parse()
                .map_err(|_| fail(format!("cannot parse {ip:?} as an IP address")))?;
            base.host_ip = parsed.to_string();
        }
    }
    if let Some(hp) = host_port {
        if !hp.is_empty() {
            let (start, len) = parse_range(hp).map_err(|e| fail(format!("host port: {e}")))?;
            if len != ctr_len {
                return Err(fail(format!(
                    "host and container port ranges have different lengths: {len} vs {ctr_len}"
                )));
            }
            base.host_port = start;
        }
    }

    let protocols: Vec<String> = match proto {
        None => vec!["tcp".to_string()],
        Some("") => return Err(fail("the protocol after '/' is empty".into())),
        Some(p) => {
            let mut v: Vec<String> = Vec::new();
            for one in p.split(',') {
                let one = one.to_ascii_lowercase();
                match one.as_str() {
                    "tcp" | "udp" | "sctp" => {
                        if !v.contains(&one) {
                            v.push(one)
                        }
                    }
                    "" => return Err(fail("empty protocol in the protocol list".into())),
                    _ => return Err(fail(format!("unrecognized protocol {one:?}"))),
                }
            }
            v
        }
    };
    Ok(protocols
        .into_iter()
        .map(|protocol| PortMapping {
            protocol,
            ..base.clone()
        })
        .collect())
}

/// `START[-END]` → (start, number of ports).
fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() > 2 {
        return Err(format!("{s:?} is not START-END"));
    }
    if parts[0].is_empty() {
        return Err(format!("{s:?}: port numbers cannot be negative or empty"));
    }
    let start = parse_port(parts[0])?;
    let mut len = 1u16;
    if let Some(end) = parts.get(1) {
        if end.is_empty() {
            return Err(format!("{s:?}: the end of the range is missing"));
        }
        let end = parse_port(end)?;
        if end <= start {
            return Err(format!(
                "the end port of a range must be higher than the start port - {end} is not higher than {start}"
            ));
        }
        len = end - start + 1;
    }
    Ok((start, len))
}

fn parse_port(s: &str) -> Result<u16, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a port number"))?;
    if !(1..=65535).contains(&n) {
        return Err(format!(
            "port numbers must be between 1 and 65535 (inclusive), got {n}"
        ));
    }
    Ok(n as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> PortMapping {
        let v = parse_publish(spec).unwrap();
        assert_eq!(v.len(), 1, "{spec}");
        v.into_iter().next().unwrap()
    }

    fn pm(ip: &str, c: u16, h: u16, r: u16, p: &str) -> PortMapping {
        PortMapping {
            host_ip: ip.into(),
            container_port: c,
            host_port: h,
            range: r,
            protocol: p.into(),
        }
    }

    #[test]
    fn simple_forms() {
        assert_eq!(one("80"), pm("", 80, 0, 1, "tcp"));
        assert_eq!(one("8080:80"), pm("", 80, 8080, 1, "tcp"));
        assert_eq!(one(":80"), pm("", 80, 0, 1, "tcp"));
        assert_eq!(
            one("127.0.0.1:8080:80/udp"),
            pm("127.0.0.1", 80, 8080, 1, "udp")
        );
        assert_eq!(one("127.0.0.1::80"), pm("127.0.0.1", 80, 0, 1, "tcp"));
        assert_eq!(one("0.0.0.0:8080:80"), pm("", 80, 8080, 1, "tcp"));
        assert_eq!(one("80/SCTP"), pm("", 80, 0, 1, "sctp"));
    }

    #[test]
    fn ranges_and_v6() {
        assert_eq!(one("8000-8009:9000-9009"), pm("", 9000, 8000, 10, "tcp"));
        assert_eq!(one("9000-9001"), pm("", 9000, 0, 2, "tcp"));
        assert_eq!(one("[::1]:8080:80"), pm("::1", 80, 8080, 1, "tcp"));
        assert_eq!(one("[fe80::0001]::80"), pm("fe80::1", 80, 0, 1, "tcp"));
    }

    #[test]
    fn several_protocols() {
        let v = parse_publish("53:53/tcp,udp").unwrap();
        assert_eq!(v, vec![pm("", 53, 53, 1, "tcp"), pm("", 53, 53, 1, "udp")]);
        let list = parse_publish_list(&["1:2", "3"]).unwrap();
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn errors_name_the_spec() {
        let cases = [
            ("80/tcp/udp", "protocol can only be specified once"),
            ("::1]:80:80", "enclosed in []"),
            ("[::1]80:80", "followed by a colon"),
            ("[::1]:80", "a host port and a container port are needed"),
            ("[::1]:1:2:3", "with an IPv6 address"),
            ("1:2:3:4", "too many ':'"),
            ("8080:", "the container port is empty"),
            ("0", "between 1 and 65535"),
            ("70000", "between 1 and 65535"),
            ("x", "\"x\" is not a port number"),
            (
                "90-80",
                "must be higher than the start port - 80 is not higher than 90",
            ),
            ("80-", "end of the range is missing"),
            ("1-2-3", "is not START-END"),
            ("8000-8001:80", "different lengths: 2 vs 1"),
            ("nope:80:80", "cannot parse \"nope\" as an IP address"),
            ("80/icmp", "unrecognized protocol \"icmp\""),
            ("80/", "protocol after '/' is empty"),
            (":1:80", "the host IP is empty"),
        ];
        for (spec, want) in cases {
            let e = parse_publish(spec).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(want), "{spec}: {msg}");
            assert!(
                msg.starts_with(&format!("invalid --publish {spec:?}: ")),
                "{msg}"
            );
        }
    }

    #[test]
    fn json_keys_are_libpods() {
        let v = serde_json::to_value(pm("", 80, 8080, 1, "tcp")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"host_ip":"","container_port":80,"host_port":8080,"range":1,"protocol":"tcp"})
        );
    }
}
