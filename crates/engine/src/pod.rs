//! Pods: an infra container running `catatonit -P` holds the namespaces the pod shares
//! (default ipc, net, uts); member containers join them. The pod's published ports and
//! network belong to the infra container. Stopping or removing a pod takes its members along.

use serde::Serialize;
use stasis_state::rusqlite::{params, OptionalExtension};

use crate::container::CreateRequest;
use crate::db::{self, ContainerRecord, State};
use crate::{Engine, EngineError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pods (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    infra_id TEXT NOT NULL,
    shares TEXT NOT NULL,
    created_at TEXT NOT NULL
)";

/// The image of infra containers: catatonit alone.
pub const INFRA_IMAGE: &str = "localhost/stasis-infra:latest";

/// Namespaces a pod can share, in Podman's words.
pub const SHAREABLE: [&str; 5] = ["ipc", "net", "pid", "uts", "cgroup"];

/// A pod's row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pod {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "InfraContainerID")]
    pub infra_id: String,
    #[serde(rename = "SharedNamespaces")]
    pub shares: Vec<String>,
    #[serde(rename = "Created")]
    pub created_at: String,
}

impl Pod {
    pub fn shares(&self, ns: &str) -> bool {
        self.shares.iter().any(|s| s == ns)
    }
    /// The cgroup parent of the pod's containers.
    pub fn cgroup_parent(&self) -> String {
        format!("/stasis/pod-{}", self.id)
    }
}

/// `pod create` options.
#[derive(Debug, Clone, Default)]
pub struct PodCreateRequest {
    pub name: Option<String>,
    /// Comma-separated namespaces; default `ipc,net,uts`.
    pub share: Option<String>,
    pub publish: Vec<String>,
    pub network: Option<String>,
}

/// Parses `--share`: known names only, no duplicates.
pub fn parse_shares(share: Option<&str>) -> Result<Vec<String>, EngineError> {
    let raw = share.unwrap_or("ipc,net,uts");
    let mut out: Vec<String> = Vec::new();
    for s in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !SHAREABLE.contains(&s) {
            return Err(EngineError::Invalid {
                what: "namespace to share",
                value: s.to_string(),
                why: "use ipc, net, pid, uts or cgroup".into(),
            });
        }
        if !out.iter().any(|x| x == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

/// The OCI namespace type of a shareable namespace.
pub fn oci_ns(ns: &str) -> &str {
    if ns == "net" {
        "network"
    } else {
        ns
    }
}

pub(crate) fn ensure_schema(
    conn: &stasis_state::rusqlite::Connection,
) -> stasis_state::rusqlite::Result<()> {
    stasis_state::ensure_schema(conn, SCHEMA)
}

fn row(r: &stasis_state::rusqlite::Row<'_>) -> stasis_state::rusqlite::Result<Pod> {
    let shares: String = r.get(3)?;
    Ok(Pod {
        id: r.get(0)?,
        name: r.get(1)?,
        infra_id: r.get(2)?,
        shares: shares
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        created_at: r.get(4)?,
    })
}

impl Engine {
    /// Finds a pod by name, full ID or unique ID prefix.
    pub fn pod(&self, key: &str) -> Result<Pod, EngineError> {
        let conn = self.conn();
        let sel = "SELECT id, name, infra_id, shares, created_at FROM pods";
        if let Some(p) = conn
            .query_row(&format!("{sel} WHERE name=?1 OR id=?1"), params![key], row)
            .optional()?
        {
            return Ok(p);
        }
        let mut st = conn.prepare(&format!("{sel} WHERE substr(id, 1, ?2) = ?1"))?;
        let found: Vec<Pod> = st
            .query_map(params![key, key.len() as i64], row)?
            .collect::<Result<_, _>>()?;
        match found.len() {
            1 if key.len() >= 3 => Ok(found.into_iter().next().expect("one element")),
            n if n > 1 => Err(EngineError::msg(format!(
                "\"{key}\" matches {n} pods: give more of the ID"
            ))),
            _ => Err(EngineError::msg(format!(
                "no pod with name or ID \"{key}\" found: see \"stasis pod ps\""
            ))),
        }
    }

    pub fn pods(&self) -> Result<Vec<Pod>, EngineError> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, name, infra_id, shares, created_at FROM pods ORDER BY created_at",
        )?;
        let v = st.query_map([], row)?.collect::<Result<_, _>>()?;
        Ok(v)
    }

    /// The containers of a pod (infra last).
    pub fn pod_containers(&self, pod: &Pod) -> Result<Vec<ContainerRecord>, EngineError> {
        let mut v: Vec<ContainerRecord> = db::all(self.conn())?
            .into_iter()
            .filter(|c| c.config.pod.as_deref() == Some(pod.id.as_str()))
            .collect();
        v.sort_by_key(|c| c.config.infra);
        Ok(v)
    }

    /// The infra image, made on first use from the host's catatonit.
    fn infra_image(&self) -> Result<String, EngineError> {
        if let Ok(img) = self.images.resolve(INFRA_IMAGE) {
            return Ok(img.id);
        }
        let catatonit = ["/usr/libexec/podman/catatonit", "/usr/bin/catatonit"]
            .iter()
            .map(std::path::Path::new)
            .find(|p| p.exists())
            .ok_or_else(|| {
                EngineError::msg("catatonit is missing: install it (scripts/install-deps.sh)")
            })?;
        let mut b = stasis_tar::TarBuilder::new(Vec::new());
        let err =
            |e: stasis_tar::TarError| EngineError::msg(format!("building the infra image: {e}"));
        for d in ["dev", "proc", "sys", "etc", "tmp", "run"] {
            b.append_dir(d, 0o755).map_err(err)?;
        }
        b.append_bytes("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
            .map_err(err)?;
        b.append_bytes("etc/group", b"root:x:0:\n", 0o644)
            .map_err(err)?;
        b.append_file("catatonit", catatonit).map_err(err)?;
        let bytes = b.finish().map_err(err)?;
        let img = self.images.import_rootfs(
            &mut std::io::Cursor::new(bytes),
            Some(INFRA_IMAGE),
            stasis_image::ImportConfig {
                entrypoint: Some(vec!["/catatonit".into(), "-P".into()]),
                ..Default::default()
            },
        )?;
        Ok(img.id)
    }

    /// Creates a pod and its infra container (not started, as Podman).
    pub fn pod_create(&self, req: &PodCreateRequest) -> Result<Pod, EngineError> {
        let shares = parse_shares(req.share.as_deref())?;
        if !shares.iter().any(|s| s == "net") && (!req.publish.is_empty() || req.network.is_some())
        {
            return Err(EngineError::msg(
                "--publish and --network need the pod to share its network namespace (--share net)",
            ));
        }
        let id = crate::names::new_id();
        let name = req.name.clone().unwrap_or_else(crate::names::random_name);
        if !crate::names::valid_name(&name) {
            return Err(EngineError::Invalid {
                what: "pod name",
                value: name,
                why: "names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*".into(),
            });
        }
        if self.pod(&name).is_ok() {
            return Err(EngineError::msg(format!(
                "a pod named \"{name}\" already exists: remove it or choose another name"
            )));
        }
        self.infra_image()?;
        let infra = self.create(&CreateRequest {
            image: INFRA_IMAGE.into(),
            name: Some(format!("{}-infra", &id[..12])),
            hostname: Some(name.clone()),
            network: if shares.iter().any(|s| s == "net") {
                req.network.clone()
            } else {
                Some("none".into())
            },
            publish: req.publish.clone(),
            ..Default::default()
        })?;
        let mut infra_rec = infra.clone();
        infra_rec.config.infra = true;
        infra_rec.config.pod = Some(id.clone());
        infra_rec.config.cgroup_parent = format!("/stasis/pod-{id}");
        let created = crate::container::create::now();
        let res = (|| {
            db::update(self.conn(), &infra_rec)?;
            self.conn().execute(
                "INSERT INTO pods (id, name, infra_id, shares, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, name, infra.id, shares.join(","), created],
            )?;
            Ok::<_, EngineError>(())
        })();
        if let Err(e) = res {
            let _ = self.remove(&infra.id, true);
            return Err(e);
        }
        self.pod(&id)
    }

    /// Starts the infra container, then the members.
    pub fn pod_start(&self, key: &str) -> Result<Pod, EngineError> {
        let pod = self.pod(key)?;
        self.start(&pod.infra_id)?;
        for c in self.pod_containers(&pod)? {
            if !c.config.infra {
                self.start(&c.id)?;
            }
        }
        Ok(pod)
    }

    /// Stops the members, then the infra container.
    pub fn pod_stop(&self, key: &str, timeout: Option<u32>) -> Result<Pod, EngineError> {
        let pod = self.pod(key)?;
        for c in self.pod_containers(&pod)? {
            self.stop(&c.id, timeout)?;
        }
        Ok(pod)
    }

    /// Removes a pod with its containers; running ones need `force`.
    pub fn pod_remove(&self, key: &str, force: bool) -> Result<String, EngineError> {
        let pod = self.pod(key)?;
        let members = self.pod_containers(&pod)?;
        if !force {
            let running: Vec<&str> = members
                .iter()
                .filter(|c| !c.config.infra && c.state == State::Running)
                .map(|c| c.name.as_str())
                .collect();
            if !running.is_empty() {
                return Err(EngineError::msg(format!(
                    "pod {} has running containers ({}): stop the pod first or use pod rm -f",
                    pod.name,
                    running.join(", ")
                )));
            }
        }
        for c in &members {
            self.remove(&c.id, true)?;
        }
        self.conn()
            .execute("DELETE FROM pods WHERE id=?1", params![pod.id])?;
        Ok(pod.id)
    }

    /// The running infra container of a pod, started if needed.
    pub(crate) fn running_infra(&self, pod_id: &str) -> Result<ContainerRecord, EngineError> {
        let pod = self.pod(pod_id)?;
        let infra = self.container(&pod.infra_id)?;
        if infra.state == State::Running {
            return Ok(infra);
        }
        self.start(&pod.infra_id)
    }

    /// Namespace paths a pod member joins: (OCI type, path) for each shared namespace.
    pub(crate) fn pod_namespaces(
        &self,
        c: &ContainerRecord,
    ) -> Result<Vec<(String, std::path::PathBuf)>, EngineError> {
        let Some(pod_id) = &c.config.pod else {
            return Ok(Vec::new());
        };
        if c.config.infra || c.config.pod_shares.is_empty() {
            return Ok(Vec::new());
        }
        let infra = self.running_infra(pod_id)?;
        let pid = infra.pid.ok_or_else(|| {
            EngineError::msg(format!(
                "the infra container of pod {pod_id} has no process"
            ))
        })?;
        Ok(c.config
            .pod_shares
            .iter()
            .map(|ns| {
                let path = if ns == "net" {
                    infra
                        .config
                        .netns
                        .clone()
                        .map(std::path::PathBuf::from)
                        .unwrap_or_else(|| format!("/proc/{pid}/ns/net").into())
                } else {
                    format!("/proc/{pid}/ns/{ns}").into()
                };
                (oci_ns(ns).to_string(), path)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse() {
        assert_eq!(parse_shares(None).unwrap(), vec!["ipc", "net", "uts"]);
        assert_eq!(
            parse_shares(Some("net,pid,net")).unwrap(),
            vec!["net", "pid"]
        );
        assert!(parse_shares(Some("mnt")).is_err());
        assert_eq!(oci_ns("net"), "network");
        assert_eq!(oci_ns("ipc"), "ipc");
    }
}
