//! Running netavark 1.4: locating the binaries, the input JSON (Podman's `types.NetworkOptions`:
//! `container_id`, `container_name`, `networks` (per-network options keyed by network name),
//! `network_info` (the network definitions, same keys), `port_mappings`), and the output (a
//! status map on success, `{"error": "..."}` on stdout on failure).
//!
//! netavark starts aardvark-dns with inherited stdio, and the DNS server keeps running; a pipe on
//! netavark's stdout would therefore never see EOF. stdin, stdout and stderr are unlinked
//! temporary files instead, read once netavark has exited.

use crate::error::NetworkError;
use crate::types::{Network, PortMapping};
use serde::Serialize;
use stasis_archive::network::NetworkStatus;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where netavark and aardvark-dns are looked for, in order (then `$PATH` for netavark).
pub const HELPER_DIRS: &[&str] = &[
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
];

/// The helper binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// netavark.
    pub netavark: PathBuf,
    /// aardvark-dns, if found (DNS is off without it: netavark skips it).
    pub aardvark: Option<PathBuf>,
}

fn is_exec(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

impl Binaries {
    /// Finds netavark (`$STASIS_NETAVARK`, the helper directories, `$PATH`) and aardvark-dns
    /// (`$STASIS_AARDVARK_DNS`, next to netavark, the helper directories, `$PATH`).
    pub fn find() -> Result<Self, NetworkError> {
        let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        let mut dirs: Vec<PathBuf> = HELPER_DIRS.iter().map(PathBuf::from).collect();
        dirs.extend(path_dirs);
        let mut searched = Vec::new();
        let netavark = std::env::var_os("STASIS_NETAVARK")
            .map(PathBuf::from)
            .filter(|p| is_exec(p))
            .or_else(|| {
                dirs.iter().map(|d| d.join("netavark")).find(|p| {
                    searched.push(p.display().to_string());
                    is_exec(p)
                })
            })
            .ok_or(NetworkError::NetavarkMissing { searched })?;
        let mut aardvark_dirs: Vec<PathBuf> = netavark
            .parent()
            .map(Path::to_path_buf)
            .into_iter()
            .collect();
        aardvark_dirs.extend(dirs);
        let aardvark = std::env::var_os("STASIS_AARDVARK_DNS")
            .map(PathBuf::from)
            .filter(|p| is_exec(p))
            .or_else(|| {
                aardvark_dirs
                    .iter()
                    .map(|d| d.join("aardvark-dns"))
                    .find(|p| is_exec(p))
            });
        Ok(Binaries { netavark, aardvark })
    }
}

/// Per-network options of one container (netavark's `PerNetworkOptions`).
#[derive(Debug, Clone, Serialize)]
pub struct PerNetwork {
    /// Addresses, allocated by us.
    pub static_ips: Vec<IpAddr>,
    /// MAC address, or random when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_mac: Option<String>,
    /// DNS aliases.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Interface in the container.
    pub interface_name: String,
}

/// netavark's `NetworkOptions`.
#[derive(Debug, Clone, Serialize)]
pub struct Options<'a> {
    /// Full container ID.
    pub container_id: &'a str,
    /// Container name.
    pub container_name: &'a str,
    /// Per-network options.
    pub networks: BTreeMap<String, PerNetwork>,
    /// Network definitions.
    pub network_info: BTreeMap<String, Network>,
    /// Published ports; absent when none (netavark then leaves `route_localnet` alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
}

/// How to call netavark.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The binaries.
    pub bin: Binaries,
    /// netavark's `--config` directory (aardvark-dns keeps its state in `aardvark-dns/` there).
    pub config_dir: PathBuf,
    /// Appended (`NAME-SUFFIX`) to the network names netavark sees. netavark keys its
    /// iptables chains on the network name, so stores living side by side on one host must
    /// not hand it the same names; see [`crate::StoreOptions::netavark_suffix`].
    pub name_suffix: Option<String>,
}

fn scratch(dir: &Path, tag: &str) -> Result<File, NetworkError> {
    let p = dir.join(format!(
        ".netavark-{}-{}-{tag}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let f = File::options()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&p)
        .map_err(|e| NetworkError::io("creating", &p, e))?;
    std::fs::remove_file(&p).map_err(|e| NetworkError::io("removing", &p, e))?;
    Ok(f)
}

/// netavark's error message from its output: the `error` of the JSON object on stdout (or
/// stderr), else the trimmed output.
pub fn error_message(stdout: &str, stderr: &str) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        error: String,
    }
    for text in [stdout, stderr] {
        for line in text.lines().rev() {
            if let Ok(e) = serde_json::from_str::<E>(line.trim()) {
                return e.error;
            }
        }
    }
    let both = format!("{} {}", stdout.trim(), stderr.trim());
    let both = both.trim();
    if both.is_empty() {
        "failed without a message".into()
    } else {
        both.to_string()
    }
}

impl Runner {
    fn run(&self, action: &str, netns: &Path, opts: &Options<'_>) -> Result<String, NetworkError> {
        std::fs::create_dir_all(&self.config_dir)
            .map_err(|e| NetworkError::io("creating", &self.config_dir, e))?;
        let mut value = serde_json::to_value(opts).map_err(|e| NetworkError::Netavark {
            action: action.into(),
            container: opts.container_id.into(),
            message: format!("cannot encode the input: {e}"),
        })?;
        if let Some(sfx) = &self.name_suffix {
            rename_networks(&mut value, sfx);
        }
        let input = serde_json::to_vec(&value).map_err(|e| NetworkError::Netavark {
            action: action.into(),
            container: opts.container_id.into(),
            message: format!("cannot encode the input: {e}"),
        })?;
        let mut stdin = scratch(&self.config_dir, "in")?;
        let mut stdout = scratch(&self.config_dir, "out")?;
        let mut stderr = scratch(&self.config_dir, "err")?;
        let io_err = |what: &str, e: std::io::Error| NetworkError::io(what, &self.config_dir, e);
        stdin
            .write_all(&input)
            .and_then(|_| stdin.seek(SeekFrom::Start(0)).map(drop))
            .map_err(|e| io_err("writing netavark input in", e))?;
        let mut cmd = Command::new(&self.bin.netavark);
        cmd.arg("--config")
            .arg(&self.config_dir)
            .args(["--rootless", "false"]);
        if let Some(a) = &self.bin.aardvark {
            cmd.arg("--aardvark-binary").arg(a);
        }
        cmd.arg(action).arg(netns);
        let clone = |f: &File| {
            f.try_clone()
                .map_err(|e| io_err("duplicating a file in", e))
        };
        cmd.stdin(Stdio::from(clone(&stdin)?))
            .stdout(Stdio::from(clone(&stdout)?))
            .stderr(Stdio::from(clone(&stderr)?));
        let status = cmd
            .status()
            .map_err(|e| NetworkError::io("running", &self.bin.netavark, e))?;
        let read = |f: &mut File| -> Result<String, NetworkError> {
            let mut s = String::new();
            f.seek(SeekFrom::Start(0))
                .and_then(|_| f.read_to_string(&mut s))
                .map_err(|e| io_err("reading netavark output in", e))?;
            Ok(s)
        };
        let out = read(&mut stdout)?;
        let err = read(&mut stderr)?;
        if !status.success() {
            return Err(NetworkError::Netavark {
                action: action.into(),
                container: opts.container_id.into(),
                message: error_message(&out, &err),
            });
        }
        Ok(out)
    }

    /// `netavark setup NETNS`: the status of each network.
    pub fn setup(&self, netns: &Path, opts: &Options<'_>) -> Result<NetworkStatus, NetworkError> {
        let out = self.run("setup", netns, opts)?;
        let status: NetworkStatus =
            serde_json::from_str(out.trim()).map_err(|e| NetworkError::Netavark {
                action: "setup".into(),
                container: opts.container_id.into(),
                message: format!("unreadable status ({e}): {}", out.trim()),
            })?;
        Ok(match &self.name_suffix {
            None => status,
            Some(sfx) => {
                let tail = format!("-{sfx}");
                status
                    .into_iter()
                    .map(|(k, v)| (k.strip_suffix(&tail).map(str::to_string).unwrap_or(k), v))
                    .collect()
            }
        })
    }

    /// [`drop_leftover_dn_chain`] under the name netavark knows the network by.
    pub fn drop_leftover_dn_chain(&self, network: &Network) {
        match &self.name_suffix {
            None => drop_leftover_dn_chain(network),
            Some(sfx) => {
                let mut n = network.clone();
                n.name = format!("{}-{sfx}", n.name);
                drop_leftover_dn_chain(&n)
            }
        }
    }

    /// `netavark teardown NETNS`.
    pub fn teardown(&self, netns: &Path, opts: &Options<'_>) -> Result<(), NetworkError> {
        self.run("teardown", netns, opts).map(drop)
    }
}

/// Renames every network of a netavark input (`networks` keys, `network_info` keys and
/// names) to `NAME-SUFFIX`.
fn rename_networks(v: &mut serde_json::Value, sfx: &str) {
    for key in ["networks", "network_info"] {
        if let Some(map) = v.get_mut(key).and_then(|m| m.as_object_mut()) {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                if key == "network_info" {
                    if let Some(n) = val.get_mut("name") {
                        *n = format!("{k}-{sfx}").into();
                    }
                }
                map.insert(format!("{k}-{sfx}"), val);
            }
        }
    }
}

/// netavark's name for a network's iptables chains: the first 13 hex digits (upper case) of
/// the SHA-512 of the network NAME (so two engines' networks of the same name share chains).
pub fn chain_hash(network_name: &str) -> String {
    use sha2::{Digest, Sha512};
    Sha512::digest(network_name.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<String>()[..13]
        .to_string()
}

/// netavark 1.4 leaves an empty `NETAVARK-DN-<hash>` nat chain behind when a network's last
/// container is torn down without port mappings after another one with ports went earlier.
/// Once the bridge is gone (complete teardown), delete that chain; iptables refuses if it is
/// still non-empty or referenced, which is then left alone.
pub fn drop_leftover_dn_chain(network: &Network) {
    if Path::new("/sys/class/net")
        .join(&network.network_interface)
        .exists()
    {
        return;
    }
    let chain = format!("NETAVARK-DN-{}", chain_hash(&network.name));
    let _ = Command::new("iptables")
        .args(["-w", "-t", "nat", "-X", &chain])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_names() {
        // NETAVARK-4E9FE06B54706 was seen on a host for a network named "stasis".
        assert_eq!(super::chain_hash("stasis"), "4E9FE06B54706");
    }

    use super::*;

    #[test]
    fn error_json() {
        assert_eq!(
            error_message("{\"error\":\"IO error: x\"}\n", ""),
            "IO error: x"
        );
        assert_eq!(error_message("", "[DEBUG] a\n{\"error\":\"y\"}"), "y");
        assert_eq!(error_message("", " boom \n"), "boom");
        assert_eq!(error_message("", ""), "failed without a message");
    }

    #[test]
    fn input_shape() {
        let net = Network {
            name: "n".into(),
            id: "0".repeat(64),
            driver: "bridge".into(),
            network_interface: "stasis3".into(),
            created: "2024-01-01T00:00:00Z".into(),
            subnets: vec![crate::types::Subnet {
                subnet: "10.91.3.0/24".into(),
                gateway: Some("10.91.3.1".into()),
            }],
            ipv6_enabled: false,
            internal: false,
            dns_enabled: true,
            ipam_options: [("driver".to_string(), "host-local".to_string())].into(),
        };
        let o = Options {
            container_id: "abc",
            container_name: "c",
            networks: [(
                "n".to_string(),
                PerNetwork {
                    static_ips: vec!["10.91.3.2".parse().unwrap()],
                    static_mac: None,
                    aliases: vec![],
                    interface_name: "eth0".into(),
                },
            )]
            .into(),
            network_info: [("n".to_string(), net)].into(),
            port_mappings: None,
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "container_id": "abc", "container_name": "c",
                "networks": {"n": {"static_ips": ["10.91.3.2"], "interface_name": "eth0"}},
                "network_info": {"n": {"name": "n", "id": "0".repeat(64), "driver": "bridge",
                    "network_interface": "stasis3", "created": "2024-01-01T00:00:00Z",
                    "subnets": [{"subnet": "10.91.3.0/24", "gateway": "10.91.3.1"}],
                    "ipv6_enabled": false, "internal": false, "dns_enabled": true,
                    "ipam_options": {"driver": "host-local"}}}
            })
        );
    }
}
