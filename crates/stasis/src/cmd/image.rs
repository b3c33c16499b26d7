//! Image verbs.

use std::io::Read;

use anyhow::{bail, Context, Result};
use stasis_engine::Engine;
use stasis_image::{ImportConfig, PullOptions};

use super::for_each;
use crate::cli::ImageCmd;

fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

pub fn run(engine: &Engine, cmd: ImageCmd) -> Result<u8> {
    match cmd {
        ImageCmd::Load(a) => {
            let images = engine.images.load(&a.input)?;
            for i in images {
                if i.names.is_empty() {
                    println!("Loaded image: sha256:{}", i.id);
                }
                for n in &i.names {
                    println!("Loaded image: {n}");
                }
            }
            Ok(0)
        }
        ImageCmd::Import(a) => {
            let config = parse_changes(&a.change)?;
            let mut input: Box<dyn Read> = if a.file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(
                    std::fs::File::open(&a.file)
                        .with_context(|| format!("cannot open {}", a.file))?,
                )
            };
            let img = engine
                .images
                .import_rootfs(&mut input, a.reference.as_deref(), config)?;
            println!("{}", img.id);
            Ok(0)
        }
        ImageCmd::Pull(a) => {
            let (username, password) = match a.creds.as_deref() {
                Some(c) => match c.split_once(':') {
                    Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                    None => (Some(c.to_string()), None),
                },
                None => (None, None),
            };
            let img = engine.images.pull(
                &a.image,
                &PullOptions {
                    tls_verify: a.tls_verify,
                    username,
                    password,
                    progress: !a.quiet && is_tty(2),
                },
            )?;
            println!("{}", img.id);
            Ok(0)
        }
        ImageCmd::Images(a) => {
            let list = engine.images.list()?;
            if a.quiet {
                for i in &list {
                    println!("{}", if a.no_trunc { &i.id[..] } else { &i.id[..12] });
                }
                return Ok(0);
            }
            if a.format.as_deref() == Some("json") {
                let v: Vec<serde_json::Value> = list
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "Id": i.id, "Names": i.names, "Digest": i.digest,
                            "Created": i.created, "Size": i.size,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            let mut rows = Vec::new();
            for i in &list {
                let id = if a.no_trunc {
                    i.id.clone()
                } else {
                    i.id[..12].to_string()
                };
                let created = i.created.clone().unwrap_or_default();
                let names = if i.names.is_empty() {
                    vec!["<none>:<none>".to_string()]
                } else {
                    i.names.clone()
                };
                for n in names {
                    let (repo, tag) = match n.rsplit_once(':') {
                        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                        _ => (n.clone(), "<none>".into()),
                    };
                    rows.push(vec![repo, tag, id.clone(), created.clone(), human(i.size)]);
                }
            }
            crate::table::print(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
            Ok(0)
        }
        ImageCmd::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.images {
                let i = engine.images.resolve(n)?;
                out.push(serde_json::to_value(&i)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        ImageCmd::Rm(a) => for_each(&a.images, |n| {
            let ids = engine.remove_image(n, a.force)?;
            Ok(Some(
                ids.iter()
                    .map(|i| format!("Deleted: {i}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ))
        }),
    }
}

fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.3} {}", units[u])
}

/// `--change` instructions for import: CMD, ENTRYPOINT, ENV, WORKDIR.
fn parse_changes(changes: &[String]) -> Result<ImportConfig> {
    let mut c = ImportConfig::default();
    for ch in changes {
        let (k, v) = ch
            .trim()
            .split_once([' ', '='])
            .with_context(|| format!("invalid --change \"{ch}\": expected INSTRUCTION VALUE"))?;
        let list = |v: &str| -> Vec<String> {
            let v = v.trim();
            if v.starts_with('[') {
                serde_json::from_str(v).unwrap_or_else(|_| vec![v.to_string()])
            } else {
                vec!["/bin/sh".into(), "-c".into(), v.to_string()]
            }
        };
        match k.to_ascii_uppercase().as_str() {
            "CMD" => c.cmd = Some(list(v)),
            "ENTRYPOINT" => c.entrypoint = Some(list(v)),
            "ENV" => c.env.push(v.trim().replacen(' ', "=", 1)),
            "WORKDIR" => c.workdir = Some(v.trim().to_string()),
            other => bail!(
                "unsupported --change instruction \"{other}\": use CMD, ENTRYPOINT, ENV or WORKDIR"
            ),
        }
    }
    Ok(c)
}
