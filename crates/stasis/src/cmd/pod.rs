//! `pod` verbs.

use anyhow::{bail, Result};
use stasis_engine::pod::PodCreateRequest;
use stasis_engine::{Engine, State};

use super::for_each;
use crate::cli::PodCmd;

pub fn run(engine: &Engine, cmd: PodCmd) -> Result<u8> {
    match cmd {
        PodCmd::Create(a) => {
            let p = engine.pod_create(&PodCreateRequest {
                name: a.name,
                share: a.share,
                publish: a.publish,
                network: a.network,
            })?;
            println!("{}", p.id);
            Ok(0)
        }
        PodCmd::Start(a) => for_each(&a.names, |n| Ok(Some(engine.pod_start(n)?.id))),
        PodCmd::Stop(a) => {
            let names = if a.all {
                engine.pods()?.into_iter().map(|p| p.id).collect()
            } else {
                a.names
            };
            for_each(&names, |n| Ok(Some(engine.pod_stop(n, a.time)?.id)))
        }
        PodCmd::Rm(a) => {
            let names = if a.all {
                engine.pods()?.into_iter().map(|p| p.id).collect()
            } else {
                a.names
            };
            if names.is_empty() {
                bail!("give the pods to remove, or --all");
            }
            for_each(&names, |n| Ok(Some(engine.pod_remove(n, a.force)?)))
        }
        PodCmd::Ps(a) => {
            let pods = engine.pods()?;
            if a.quiet {
                for p in &pods {
                    println!("{}", &p.id[..12]);
                }
                return Ok(0);
            }
            let mut rows = Vec::new();
            let mut json = Vec::new();
            for p in &pods {
                let ctrs = engine.pod_containers(p)?;
                let running = ctrs.iter().filter(|c| c.state == State::Running).count();
                let status = if running == 0 {
                    if ctrs.iter().any(|c| c.state == State::Exited) {
                        "Exited"
                    } else {
                        "Created"
                    }
                } else if running == ctrs.len() {
                    "Running"
                } else {
                    "Degraded"
                };
                rows.push(vec![
                    p.id[..12].to_string(),
                    p.name.clone(),
                    status.to_string(),
                    p.created_at.clone(),
                    p.infra_id[..12].to_string(),
                    ctrs.len().to_string(),
                ]);
                json.push(serde_json::json!({
                    "Id": p.id, "Name": p.name, "Status": status, "Created": p.created_at,
                    "InfraId": p.infra_id,
                    "Containers": ctrs.iter().map(|c| serde_json::json!({
                        "Id": c.id, "Names": c.name, "Status": format!("{:?}", c.state).to_lowercase()
                    })).collect::<Vec<_>>(),
                }));
            }
            match a.format.as_deref() {
                Some("json") => println!("{}", serde_json::to_string_pretty(&json)?),
                None | Some("table") => crate::table::print(
                    &[
                        "POD ID",
                        "NAME",
                        "STATUS",
                        "CREATED",
                        "INFRA ID",
                        "# OF CONTAINERS",
                    ],
                    &rows,
                ),
                Some(f) => bail!("unsupported --format \"{f}\": use json or table"),
            }
            Ok(0)
        }
        PodCmd::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.names {
                let p = engine.pod(n)?;
                let ctrs = engine.pod_containers(&p)?;
                let mut v = serde_json::to_value(&p)?;
                v["Containers"] = ctrs
                    .iter()
                    .map(|c| serde_json::json!({"Id": c.id, "Name": c.name, "State": format!("{:?}", c.state).to_lowercase()}))
                    .collect();
                v["CgroupParent"] = p.cgroup_parent().into();
                out.push(v);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
    }
}
