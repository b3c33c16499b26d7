//! `checkpoint` and `restore`.

use std::time::Instant;

use anyhow::{bail, Result};
use stasis_archive::stats::{
    to_podman_json, CheckpointStatsReport, ContainerCheckpointStats, ContainerRestoreStats,
    RestoreStatsReport,
};
use stasis_engine::container::{CheckpointOptions, ExportTarget, ImportSource, RestoreOptions};
use stasis_engine::{Engine, State};

use super::{error_chain, EXIT_ENGINE};
use crate::cli::{CheckpointArgs, RestoreArgs};

fn latest(engine: &Engine) -> Result<String> {
    engine
        .containers()?
        .into_iter()
        .max_by(|a, b| a.created_at.cmp(&b.created_at))
        .map(|c| c.id)
        .ok_or_else(|| anyhow::anyhow!("no containers to act on: see \"stasis ps -a\""))
}

/// The containers a verb acts on: `--all` (those matching `eligible`), `--latest`, or the
/// names given.
fn select(
    engine: &Engine,
    all: bool,
    latest_only: bool,
    names: &[String],
    eligible: impl Fn(&stasis_engine::ContainerRecord) -> bool,
) -> Result<Vec<String>> {
    Ok(if all {
        engine
            .containers()?
            .into_iter()
            .filter(|c| eligible(c))
            .map(|c| c.id)
            .collect()
    } else if latest_only {
        vec![latest(engine)?]
    } else {
        names.to_vec()
    })
}

pub fn checkpoint(engine: &Engine, a: CheckpointArgs) -> Result<u8> {
    let started = Instant::now();
    let names = select(engine, a.common.all, a.common.latest, &a.containers, |c| {
        c.state == State::Running
    })?;
    if names.is_empty() {
        bail!("give the containers to checkpoint, or --all or --latest");
    }
    if a.export.is_some() && names.len() > 1 {
        bail!("--export can only be used with a single container");
    }
    let compression = match &a.compress {
        Some(c) => Some(c.parse::<stasis_tar::Compression>()?),
        None => None,
    };
    let mut stats = Vec::new();
    let mut failed = false;
    for n in &names {
        let export = a.export.as_ref().map(|e| {
            if e == "-" {
                ExportTarget::Writer(Box::new(std::io::stdout()))
            } else {
                ExportTarget::File(e.into())
            }
        });
        let to_stdout = a.export.as_deref() == Some("-");
        let opts = CheckpointOptions {
            export,
            compression,
            leave_running: a.leave_running,
            keep: a.common.keep,
            criu: a.common.criu(),
            ignore_rootfs: a.common.ignore_rootfs,
            ignore_volumes: a.common.ignore_volumes,
            pre_checkpoint: a.pre_checkpoint,
            with_previous: a.with_previous,
            progress: !to_stdout,
        };
        match engine.checkpoint(n, opts) {
            Ok(r) => {
                if a.common.print_stats {
                    stats.push(ContainerCheckpointStats::new(
                        &r.id,
                        n,
                        r.runtime_duration,
                        r.dump_stats.as_ref(),
                    ));
                } else if !to_stdout {
                    println!("{n}");
                }
            }
            Err(e) => {
                eprintln!("Error: {}", error_chain(&e.into()));
                failed = true;
            }
        }
    }
    if a.common.print_stats && a.export.as_deref() != Some("-") {
        let report = CheckpointStatsReport {
            podman_checkpoint_duration: stasis_archive::stats::micros(started.elapsed()),
            container_statistics: stats,
        };
        println!("{}", to_podman_json(&report));
    }
    Ok(if failed { EXIT_ENGINE } else { 0 })
}

pub fn restore(engine: &Engine, a: RestoreArgs) -> Result<u8> {
    let started = Instant::now();
    let base = |import: Option<ImportSource>| RestoreOptions {
        import,
        name: a.name.clone(),
        keep: a.common.keep,
        criu: a.common.criu(),
        ignore_rootfs: a.common.ignore_rootfs,
        ignore_volumes: a.common.ignore_volumes,
        ignore_static_ip: a.ignore_static_ip,
        ignore_static_mac: a.ignore_static_mac,
        publish: a.publish.clone(),
        pod: a.pod.clone(),
        progress: true,
    };
    let mut stats = Vec::new();
    let mut failed = false;
    let mut report = |raw: &str, r: Result<stasis_engine::container::RestoreReport, _>| match r {
        Ok(r) => {
            if a.common.print_stats {
                stats.push(ContainerRestoreStats::new(
                    &r.id,
                    raw,
                    r.runtime_duration,
                    r.restore_stats.as_ref(),
                ));
            } else {
                println!("{}", r.id);
            }
        }
        Err(e) => {
            eprintln!("Error: {}", error_chain(&anyhow::Error::from(e)));
            failed = true;
        }
    };
    if let Some(imp) = &a.import {
        if !a.containers.is_empty() || a.common.all || a.common.latest {
            bail!("--import cannot be combined with container names, --all or --latest");
        }
        let src = if imp == "-" {
            ImportSource::Reader(Box::new(std::io::stdin()))
        } else {
            ImportSource::File(imp.into())
        };
        report("", engine.restore(None, base(Some(src))));
    } else {
        let names = select(engine, a.common.all, a.common.latest, &a.containers, |c| {
            c.state == State::Exited && c.checkpointed
        })?;
        if names.is_empty() && !a.common.all {
            bail!("give the containers to restore, or --all, --latest or --import FILE");
        }
        for n in &names {
            report(n, engine.restore(Some(n), base(None)));
        }
    }
    if a.common.print_stats {
        let r = RestoreStatsReport {
            podman_restore_duration: stasis_archive::stats::micros(started.elapsed()),
            container_statistics: stats,
        };
        println!("{}", to_podman_json(&r));
    }
    Ok(if failed { EXIT_ENGINE } else { 0 })
}
