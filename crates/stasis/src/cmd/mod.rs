//! Verb dispatch. Each verb prints what Podman prints and returns the process exit code.

mod checkpoint;
mod container;
mod image;
mod network;
mod pod;
mod volume;

use anyhow::Result;
use stasis_engine::{Engine, EngineOptions};

use crate::cli::{Cli, ImageCmd, Top};

/// Exit code for engine errors (Podman's convention).
pub const EXIT_ENGINE: u8 = 125;

pub fn run(cli: Cli) -> Result<u8> {
    let exe = std::env::current_exe()?;
    let mut opts = EngineOptions::new(exe);
    opts.root = cli.root;
    opts.runroot = cli.runroot;
    // A restore's programs (conmon, runc, CRIU, ...) are read from disk meanwhile.
    if matches!(
        &cli.command,
        Top::Container(crate::cli::ContainerCmd::Restore(_))
            | Top::Ctr(crate::cli::ContainerCmd::Restore(_))
    ) {
        stasis_engine::prefetch::spawn_for_restore(&opts);
    }
    let open = || Engine::open(opts.clone());
    match cli.command {
        // The page feeder needs no store: it must not take the engine's locks.
        Top::Container(crate::cli::ContainerCmd::ServePages(a))
        | Top::Ctr(crate::cli::ContainerCmd::ServePages(a)) => {
            stasis_engine::pagestream::serve_pages(
                a.archive_fd,
                a.socket_fd,
                &a.images,
                &a.plan,
                a.kill_cgroup.as_deref(),
            )
            .map_err(anyhow::Error::msg)?;
            Ok(0)
        }
        Top::Container(c) | Top::Ctr(c) => container::run(&open()?, c),
        Top::Image(i) => image::run(&open()?, i),
        Top::Volume(v) => volume::run(&open()?, v),
        Top::Network(n) => network::run(&open()?, n),
        Top::Pod(p) => pod::run(&open()?, p),
        Top::Images(a) => image::run(&open()?, ImageCmd::Images(a)),
        Top::Rmi(a) => image::run(&open()?, ImageCmd::Rm(a)),
        Top::Pull(a) => image::run(&open()?, ImageCmd::Pull(a)),
        Top::Load(a) => image::run(&open()?, ImageCmd::Load(a)),
        Top::Import(a) => image::run(&open()?, ImageCmd::Import(a)),
    }
}

/// The error and its causes on one line, without repeating text a cause already includes.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<stasis_engine::EngineError>() {
        Some(stasis_engine::EngineError::ExecFailed { code, .. }) => *code as u8,
        _ => EXIT_ENGINE,
    }
}

/// Runs `f` for each name, printing what it returns; reports every failure, fails if any did.
pub fn for_each(names: &[String], mut f: impl FnMut(&str) -> Result<Option<String>>) -> Result<u8> {
    let mut failed = 0;
    for n in names {
        match f(n) {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("Error: {}", error_chain(&e));
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { EXIT_ENGINE } else { 0 })
}
