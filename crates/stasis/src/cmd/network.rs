//! `network` verbs.

use anyhow::{bail, Result};
use stasis_engine::Engine;
use stasis_network::CreateNetwork;

use super::for_each;
use crate::cli::NetworkCmd;

pub fn run(engine: &Engine, cmd: NetworkCmd) -> Result<u8> {
    match cmd {
        NetworkCmd::Create(a) => {
            let n = engine.networks.create(&CreateNetwork {
                name: a.name,
                subnet: a.subnet,
                gateway: a.gateway,
                internal: a.internal,
                dns: !a.disable_dns,
            })?;
            println!("{}", n.name);
            Ok(0)
        }
        NetworkCmd::Ls(a) => {
            engine.networks.ensure_default()?;
            let list = engine.networks.list()?;
            if a.quiet {
                for n in &list {
                    println!("{}", n.name);
                }
                return Ok(0);
            }
            match a.format.as_deref() {
                Some("json") => println!("{}", serde_json::to_string_pretty(&list)?),
                None | Some("table") => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|n| {
                            vec![
                                n.id[..12].to_string(),
                                n.name.clone(),
                                n.driver.clone(),
                                n.subnets
                                    .iter()
                                    .map(|s| s.subnet.clone())
                                    .collect::<Vec<_>>()
                                    .join(","),
                            ]
                        })
                        .collect();
                    crate::table::print(&["NETWORK ID", "NAME", "DRIVER", "SUBNETS"], &rows);
                }
                Some(f) => bail!("unsupported --format \"{f}\": use json or table"),
            }
            Ok(0)
        }
        NetworkCmd::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.names {
                out.push(engine.networks.get(n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        NetworkCmd::Rm(a) => for_each(&a.names, |n| {
            engine.network_remove(n, a.force)?;
            Ok(Some(n.to_string()))
        }),
    }
}
