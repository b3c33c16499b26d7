//! Container verbs.

use std::io::Write;

use anyhow::{bail, Context, Result};
use stasis_engine::container::{inspect_json, ps_json, status_line, CreateRequest, ExecRequest};
use stasis_engine::{ContainerRecord, Engine, State};

use super::{error_chain, for_each, EXIT_ENGINE};
use crate::cli::{ContainerCmd, RunArgs};

pub fn run(engine: &Engine, cmd: ContainerCmd) -> Result<u8> {
    match cmd {
        ContainerCmd::Create(a) => {
            let c = engine.create(&create_request(&a)?)?;
            println!("{}", c.id);
            Ok(0)
        }
        ContainerCmd::Run(a) => run_container(engine, &a),
        ContainerCmd::Start(a) => for_each(&a.containers, |n| {
            engine.start(n)?;
            Ok(Some(n.to_string()))
        }),
        ContainerCmd::Stop(a) => {
            let names = names_or_all(engine, a.containers, a.all, true)?;
            for_each(&names, |n| {
                engine.stop(n, a.time)?;
                Ok(Some(n.to_string()))
            })
        }
        ContainerCmd::Kill(a) => {
            let sig = stasis_engine::container::parse_signal(&a.signal)
                .with_context(|| format!("invalid signal \"{}\"", a.signal))?;
            let names = names_or_all(engine, a.containers, a.all, true)?;
            for_each(&names, |n| {
                engine.kill(n, sig)?;
                Ok(Some(n.to_string()))
            })
        }
        ContainerCmd::Rm(a) => {
            let names = names_or_all(engine, a.containers, a.all, false)?;
            for_each(&names, |n| {
                Ok(Some(engine.remove(n, a.force).map(|_| n.to_string())?))
            })
        }
        ContainerCmd::Wait(a) => for_each(&a.containers, |n| Ok(Some(engine.wait(n)?.to_string()))),
        ContainerCmd::Ps(a) => ps(engine, a.all, a.quiet, a.format.as_deref(), a.no_trunc),
        ContainerCmd::Inspect(a) => {
            let mut out = Vec::new();
            let mut failed = false;
            for n in &a.names {
                match engine.container(n) {
                    Ok(c) => out.push(inspect_json(engine, &c)),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(if failed { EXIT_ENGINE } else { 0 })
        }
        ContainerCmd::Logs(a) => {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            engine.logs(
                &a.container,
                a.follow,
                &mut stdout.lock(),
                &mut stderr.lock(),
            )?;
            Ok(0)
        }
        ContainerCmd::Exec(a) => {
            if a.tty {
                bail!("exec --tty is not supported yet: run without -t");
            }
            let code = engine.exec(
                &a.container,
                &ExecRequest {
                    args: a.command,
                    env: a.env,
                    workdir: a.workdir,
                    user: a.user,
                    interactive: a.interactive,
                    detach: a.detach,
                },
            )?;
            Ok(code.clamp(0, 255) as u8)
        }
        ContainerCmd::Checkpoint(a) => super::checkpoint::checkpoint(engine, a),
        ContainerCmd::Restore(a) => super::checkpoint::restore(engine, a),
        ContainerCmd::Cleanup(a) => for_each(&a.containers, |n| {
            engine.cleanup(n)?;
            Ok(None)
        }),
        ContainerCmd::ServePages(_) => Err(anyhow::anyhow!(
            "serve-pages is dispatched before the engine opens"
        )),
    }
}

fn names_or_all(
    engine: &Engine,
    names: Vec<String>,
    all: bool,
    running_only: bool,
) -> Result<Vec<String>> {
    if all {
        return Ok(engine
            .containers()?
            .into_iter()
            .filter(|c| !running_only || c.state == State::Running)
            .map(|c| c.id)
            .collect());
    }
    if names.is_empty() {
        bail!("give at least one container name or ID, or --all");
    }
    Ok(names)
}

fn kv(list: &[String], what: &str) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("invalid {what} \"{s}\": expected KEY=VALUE"))
        })
        .collect()
}

fn create_request(a: &RunArgs) -> Result<CreateRequest> {
    if a.tty {
        bail!("--tty is not supported yet: run without -t");
    }
    let stop_signal = match &a.stop_signal {
        Some(s) => Some(
            stasis_engine::container::parse_signal(s)
                .with_context(|| format!("invalid stop signal \"{s}\""))?,
        ),
        None => None,
    };
    let mut env = Vec::new();
    for e in &a.env {
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.push(format!("{e}={v}"));
        }
    }
    Ok(CreateRequest {
        image: a.image.clone(),
        name: a.name.clone(),
        command: a.command.clone(),
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.trim_start().starts_with('[') {
                serde_json::from_str(e).unwrap_or_else(|_| vec![e.clone()])
            } else {
                vec![e.clone()]
            }
        }),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        labels: kv(&a.label, "label")?,
        stop_signal,
        stop_timeout: a.stop_timeout,
        create_command: std::env::args().collect(),
        // A foreground `run --rm` removes the container itself once it has its exit code.
        auto_remove: a.rm && a.detach,
        volumes: a.volume.clone(),
        network: a.network.clone(),
        ip: a.ip.clone(),
        mac_address: a.mac_address.clone(),
        publish: a.publish.clone(),
        pod: a.pod.clone(),
    })
}

fn run_container(engine: &Engine, a: &RunArgs) -> Result<u8> {
    let c = engine.create(&create_request(a)?)?;
    if let Err(e) = engine.start(&c.id) {
        let _ = engine.remove(&c.id, true);
        let code = if e.to_string().contains("not found in image") {
            127
        } else {
            EXIT_ENGINE
        };
        eprintln!("Error: {}", error_chain(&e.into()));
        return Ok(code);
    }
    if a.detach {
        println!("{}", c.id);
        return Ok(0);
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    engine.logs(&c.id, true, &mut stdout.lock(), &mut stderr.lock())?;
    let code = engine.wait(&c.id)?;
    let _ = std::io::stdout().flush();
    if a.rm {
        engine.remove(&c.id, true)?;
    }
    Ok(code.clamp(0, 255) as u8)
}

fn short(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        &id[..id.len().min(12)]
    }
}

fn ps(engine: &Engine, all: bool, quiet: bool, format: Option<&str>, no_trunc: bool) -> Result<u8> {
    let list: Vec<ContainerRecord> = engine
        .containers()?
        .into_iter()
        .filter(|c| all || c.state == State::Running)
        .collect();
    if quiet {
        for c in &list {
            println!("{}", short(&c.id, no_trunc));
        }
        return Ok(0);
    }
    match format {
        Some("json") => {
            println!("{}", serde_json::to_string_pretty(&ps_json(&list))?);
        }
        Some(other) if other != "table" => {
            bail!("unsupported --format \"{other}\": use json or table")
        }
        _ => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let mut cmd = c.config.args.join(" ");
                    if cmd.chars().count() > 24 && !no_trunc {
                        cmd = cmd.chars().take(21).collect::<String>() + "...";
                    }
                    vec![
                        short(&c.id, no_trunc).to_string(),
                        c.config.image_name.clone(),
                        cmd,
                        stasis_engine::container::ago(Some(&c.created_at)),
                        status_line(c),
                        stasis_engine::container::ports_line(c),
                        c.name.clone(),
                    ]
                })
                .collect();
            crate::table::print(
                &[
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "CREATED",
                    "STATUS",
                    "PORTS",
                    "NAMES",
                ],
                &rows,
            );
        }
    }
    Ok(0)
}
