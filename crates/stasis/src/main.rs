//! `stasis`: the command line. Thin: parses flags (Podman's names), calls the engine, prints.

mod cli;
mod cmd;
mod table;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`stasis ps | head`), as CLIs do,
    // instead of panicking on a failed print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    stasis_engine::progress::mark("main");
    let cli = cli::Cli::parse();
    let res = cmd::run(cli);
    stasis_engine::progress::mark("done");
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {}", cmd::error_chain(&e));
            ExitCode::from(cmd::exit_code_for(&e))
        }
    }
}
