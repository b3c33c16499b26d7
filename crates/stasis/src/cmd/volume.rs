//! `volume` verbs.

use anyhow::{bail, Result};
use stasis_engine::Engine;

use super::for_each;
use crate::cli::VolumeCmd;

pub fn run(engine: &Engine, cmd: VolumeCmd) -> Result<u8> {
    match cmd {
        VolumeCmd::Create(a) => {
            let (v, _) = engine.volume_create(a.name.as_deref(), false)?;
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCmd::Ls(a) => {
            let list = engine.volume_list()?;
            if a.quiet {
                for v in &list {
                    println!("{}", v.name);
                }
            } else {
                match a.format.as_deref() {
                    Some("json") => println!("{}", serde_json::to_string_pretty(&list)?),
                    None | Some("table") => {
                        let rows: Vec<Vec<String>> = list
                            .iter()
                            .map(|v| vec![v.driver.clone(), v.name.clone()])
                            .collect();
                        crate::table::print(&["DRIVER", "VOLUME NAME"], &rows);
                    }
                    Some(f) => bail!("unsupported --format \"{f}\": use json or table"),
                }
            }
            Ok(0)
        }
        VolumeCmd::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.names {
                match engine.volume(n)? {
                    Some(v) => out.push(v),
                    None => bail!("no volume with name \"{n}\" found: see \"stasis volume ls\""),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        VolumeCmd::Rm(a) => for_each(&a.names, |n| {
            engine.volume_remove(n, a.force)?;
            Ok(Some(n.to_string()))
        }),
        VolumeCmd::Prune(_) => {
            for n in engine.volume_prune()? {
                println!("{n}");
            }
            Ok(0)
        }
    }
}
