//! Resolving `-v`, `--network`, `--ip`, `--mac-address` and `-p` at create time, and the
//! network setup/teardown a container's start, stop and restore go through.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use stasis_network::{Attach, NetworkRequest, NetworkStatus};

use crate::config::{CreateConfig, NetAttachment};
use crate::db::ContainerRecord;
use crate::volumes::{BindMount, VolumeMount};
use crate::{Engine, EngineError};

/// One parsed `-v SRC:DEST[:OPTIONS]`.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeSpec {
    Named {
        name: String,
        dest: String,
        options: Vec<String>,
    },
    Bind {
        source: String,
        dest: String,
        options: Vec<String>,
    },
}

/// Parses a `-v` value like Podman: `NAME:/dest[:ro,...]`, `/host:/dest[:ro]`, or `/dest`
/// alone (an anonymous volume).
pub fn parse_volume(spec: &str) -> Result<VolumeSpec, EngineError> {
    let bad = |why: &str| EngineError::Invalid {
        what: "volume",
        value: spec.to_string(),
        why: why.to_string(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dest, opts) = match parts.as_slice() {
        [dest] => ("", *dest, ""),
        [src, dest] => (*src, *dest, ""),
        [src, dest, opts] => (*src, *dest, *opts),
        _ => return Err(bad("expected SOURCE:DESTINATION[:OPTIONS]")),
    };
    if !dest.starts_with('/') {
        return Err(bad("the destination must be an absolute path"));
    }
    let mut options = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "rw" => options.push(o.to_string()),
            "z" | "Z" | "U" => {}
            "nosuid" | "nodev" | "noexec" | "suid" | "dev" | "exec" => options.push(o.to_string()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                options.push(o.to_string())
            }
            other => return Err(bad(&format!("unknown option {other:?}"))),
        }
    }
    if src.starts_with('/') {
        Ok(VolumeSpec::Bind {
            source: src.to_string(),
            dest: dest.to_string(),
            options,
        })
    } else {
        if !src.is_empty() && !crate::volumes::valid_volume_name(src) {
            return Err(bad("volume names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"));
        }
        Ok(VolumeSpec::Named {
            name: src.to_string(),
            dest: dest.to_string(),
            options,
        })
    }
}

/// Podman's mount options for a named volume.
pub fn volume_options(user: &[String]) -> Vec<String> {
    let ro = user.iter().any(|o| o == "ro");
    let mut o = vec![if ro { "ro" } else { "rw" }.to_string(), "rprivate".into()];
    for x in ["nosuid", "nodev"] {
        o.push(x.into());
    }
    o.push("rbind".into());
    o
}

/// Podman's mount options for a bind mount.
pub fn bind_options(user: &[String]) -> Vec<String> {
    let mut o = vec!["rbind".to_string()];
    o.extend(user.iter().filter(|x| *x != "rw").cloned());
    if !o
        .iter()
        .any(|x| x.contains("private") || x.contains("shared") || x.contains("slave"))
    {
        o.push("rprivate".into());
    }
    o
}

/// The in-container spec mounts for volumes and binds.
pub(crate) fn extra_mounts(
    engine: &Engine,
    volumes: &[VolumeMount],
    binds: &[BindMount],
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for v in volumes {
        out.push(serde_json::json!({
            "destination": v.dest,
            "type": "bind",
            "source": engine.volume_mountpoint(&v.name),
            "options": v.options,
        }));
    }
    for b in binds {
        out.push(serde_json::json!({
            "destination": b.dest,
            "type": "bind",
            "source": b.source,
            "options": b.options,
        }));
    }
    out
}

impl Engine {
    /// Fills `config`'s volumes and binds from `-v` values and the image's VOLUME entries.
    /// Returns the volumes created on the way, so a failed create can remove them.
    pub(crate) fn resolve_volumes(
        &self,
        specs: &[String],
        image_volumes: &[String],
        config: &mut CreateConfig,
    ) -> Result<Vec<String>, EngineError> {
        let mut created = Vec::new();
        let res = (|| {
            for s in specs {
                match parse_volume(s)? {
                    VolumeSpec::Bind {
                        source,
                        dest,
                        options,
                    } => {
                        if !Path::new(&source).exists() {
                            return Err(EngineError::msg(format!(
                                "bind mount source {source} does not exist: create it or fix the -v {s}"
                            )));
                        }
                        config.binds.push(BindMount {
                            source,
                            dest,
                            options: bind_options(&options),
                        });
                    }
                    VolumeSpec::Named {
                        name,
                        dest,
                        options,
                    } => {
                        let anonymous = name.is_empty();
                        let (v, new) =
                            self.volume_create((!anonymous).then_some(name.as_str()), true)?;
                        if new {
                            created.push(v.name.clone());
                        }
                        config.volumes.push(VolumeMount {
                            name: v.name,
                            dest,
                            options: volume_options(&options),
                            anonymous,
                        });
                    }
                }
            }
            for dest in image_volumes {
                let taken = config.volumes.iter().any(|v| &v.dest == dest)
                    || config.binds.iter().any(|b| &b.dest == dest);
                if !taken {
                    let (v, _) = self.volume_create(None, false)?;
                    created.push(v.name.clone());
                    config.volumes.push(VolumeMount {
                        name: v.name,
                        dest: dest.clone(),
                        options: volume_options(&[]),
                        anonymous: true,
                    });
                }
            }
            Ok(())
        })();
        match res {
            Ok(()) => Ok(created),
            Err(e) => {
                for v in &created {
                    let _ = self.volume_delete(v);
                }
                Err(e)
            }
        }
    }

    /// Decides the network mode, networks and published ports of a new container.
    pub(crate) fn resolve_network(
        &self,
        network: Option<&str>,
        ip: Option<&str>,
        mac: Option<&str>,
        publish: &[String],
        config: &mut CreateConfig,
    ) -> Result<(), EngineError> {
        let mut ports = stasis_archive::parse_publish_list(publish)
            .map_err(|e| EngineError::msg(e.to_string()))?;
        let mode = network.unwrap_or("bridge");
        match mode {
            "none" | "host" => {
                if ip.is_some() || mac.is_some() || !ports.is_empty() {
                    return Err(EngineError::msg(format!(
                        "--ip, --mac-address and --publish need a bridge network, not --network {mode}"
                    )));
                }
                config.network_mode = mode.to_string();
                if mode == "host" {
                    config.netns = None;
                }
                return Ok(());
            }
            _ => {}
        }
        let names: Vec<String> = if mode == "bridge" {
            vec![self.networks.ensure_default()?.name]
        } else {
            mode.split(',').map(str::to_string).collect()
        };
        for n in &names {
            self.networks.get(n)?;
        }
        if (ip.is_some() || mac.is_some()) && names.len() > 1 {
            return Err(EngineError::msg(
                "--ip and --mac-address apply to one network: give a single --network",
            ));
        }
        if let Some(ip) = ip {
            ip.parse::<IpAddr>().map_err(|e| EngineError::Invalid {
                what: "IP address",
                value: ip.to_string(),
                why: e.to_string(),
            })?;
        }
        if let Some(m) = mac {
            stasis_network::ipam::normalize_mac(m)?;
        }
        stasis_network::ports::assign_host_ports(&mut ports)?;
        config.network_mode = "bridge".into();
        config.networks = names
            .into_iter()
            .map(|network| NetAttachment {
                network,
                static_ips: ip.map(|i| vec![i.to_string()]).unwrap_or_default(),
                static_mac: mac.map(str::to_string),
                aliases: Vec::new(),
                interface_name: None,
            })
            .collect();
        config.ports = ports;
        Ok(())
    }

    /// The netavark attach request of a container; `reuse` maps network → (IPs, MAC) to ask
    /// for again (restore), used where the config has no static address of its own.
    pub(crate) fn attach_request(
        &self,
        c: &ContainerRecord,
        reuse: &BTreeMap<String, (Vec<IpAddr>, Option<String>)>,
    ) -> Option<Attach> {
        let netns = c.config.netns.as_ref()?;
        if c.config.networks.is_empty() {
            return None;
        }
        let networks = c
            .config
            .networks
            .iter()
            .map(|n| {
                let mut static_ips: Vec<IpAddr> =
                    n.static_ips.iter().filter_map(|i| i.parse().ok()).collect();
                let mut static_mac = n.static_mac.clone();
                if let Some((ips, mac)) = reuse.get(&n.network) {
                    if static_ips.is_empty() {
                        static_ips = ips.clone();
                    }
                    if static_mac.is_none() {
                        static_mac = mac.clone();
                    }
                }
                NetworkRequest {
                    network: n.network.clone(),
                    static_ips,
                    static_mac,
                    aliases: n.aliases.clone(),
                    interface_name: n.interface_name.clone(),
                }
            })
            .collect();
        Some(Attach {
            container_id: c.id.clone(),
            container_name: c.name.clone(),
            netns: PathBuf::from(netns),
            networks,
            ports: c.config.ports.clone(),
        })
    }

    /// The request to set the container's networks up with (`reuse`: addresses to ask for
    /// again), and, when it reuses some, the same request without them (see
    /// [`set_up_network`]).
    pub(crate) fn setup_requests(
        &self,
        c: &ContainerRecord,
        reuse: &BTreeMap<String, (Vec<IpAddr>, Option<String>)>,
    ) -> Option<(Attach, Option<Attach>)> {
        let attach = self.attach_request(c, reuse)?;
        let fresh = (!reuse.is_empty())
            .then(|| self.attach_request(c, &BTreeMap::new()))
            .flatten();
        Some((attach, fresh))
    }

    /// Where the container's network status is recorded (its bundle's network.status).
    pub(crate) fn network_status_path(&self, id: &str) -> PathBuf {
        self.layout
            .bundle(id)
            .join(stasis_archive::names::NETWORK_STATUS)
    }

    /// Tears the container's networks down (errors reported, not fatal for the caller).
    pub(crate) fn network_teardown(&self, c: &ContainerRecord) -> Result<(), EngineError> {
        if let Some(attach) = self.attach_request(c, &BTreeMap::new()) {
            self.networks.teardown_if_attached(&attach)?;
        }
        Ok(())
    }
}

/// Sets up container `name`'s networks (`attach`) and records their status in `status_path`.
/// A reused (dynamic) address another container took meanwhile gets a new one, as a new
/// container would, when `fresh` (the request without the addresses to reuse) is given; static
/// addresses of the config still fail. Needs no engine: a restore runs it on a thread of its
/// own, beside runc.
pub(crate) fn set_up_network(
    networks: &stasis_network::NetworkStore,
    name: &str,
    attach: &Attach,
    fresh: Option<&Attach>,
    status_path: &Path,
) -> Result<NetworkStatus, EngineError> {
    let status = match (networks.setup(attach), fresh) {
        (
            Err(
                stasis_network::NetworkError::IpInUse { .. }
                | stasis_network::NetworkError::MacInUse { .. },
            ),
            Some(fresh),
        ) => {
            eprintln!("the address container {name} had is taken now: it gets a new one");
            networks.setup(fresh)?
        }
        (other, _) => other?,
    };
    let body = stasis_archive::network::to_json_pretty(&status)
        .map_err(|e| EngineError::msg(e.to_string()))?;
    std::fs::write(status_path, body).map_err(|e| EngineError::io(status_path, e))?;
    Ok(status)
}

/// Addresses to reuse on restore, from a network.status: network → (IPs, MAC).
pub(crate) fn reuse_from_status(
    status: &NetworkStatus,
    ip: bool,
    mac: bool,
) -> BTreeMap<String, (Vec<IpAddr>, Option<String>)> {
    stasis_archive::network::reuse_addresses(status)
        .into_iter()
        .map(|(net, r)| {
            let ips = if ip {
                r.ips.iter().filter_map(|i| i.parse().ok()).collect()
            } else {
                Vec::new()
            };
            let m = (mac && !r.mac.is_empty()).then_some(r.mac);
            (net, (ips, m))
        })
        .collect()
}

/// The network names as Podman knows them: our default network is Podman's `podman`.
pub fn to_podman_network(name: &str) -> String {
    if name == stasis_network::DEFAULT_NETWORK {
        "podman".into()
    } else {
        name.to_string()
    }
}

/// Our name for a network of a Podman archive: Podman's default `podman` is our default.
pub fn from_podman_network(name: &str) -> String {
    if name == "podman" {
        stasis_network::DEFAULT_NETWORK.into()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_volume_specs() {
        assert_eq!(
            parse_volume("data:/data").unwrap(),
            VolumeSpec::Named {
                name: "data".into(),
                dest: "/data".into(),
                options: vec![]
            }
        );
        assert_eq!(
            parse_volume("/h:/m:ro").unwrap(),
            VolumeSpec::Bind {
                source: "/h".into(),
                dest: "/m".into(),
                options: vec!["ro".into()]
            }
        );
        assert!(
            matches!(parse_volume("/anon").unwrap(), VolumeSpec::Named { name, .. } if name.is_empty())
        );
        assert!(parse_volume("data:rel").is_err());
        assert!(parse_volume("a:/b:bogus").is_err());
        assert!(parse_volume("a:/b:ro:x").is_err());
        assert_eq!(volume_options(&["ro".into()])[0], "ro");
        assert_eq!(bind_options(&[]), vec!["rbind", "rprivate"]);
    }

    #[test]
    fn maps_default_network_names() {
        assert_eq!(to_podman_network("stasis"), "podman");
        assert_eq!(from_podman_network("podman"), "stasis");
        assert_eq!(from_podman_network("mynet"), "mynet");
    }
}
