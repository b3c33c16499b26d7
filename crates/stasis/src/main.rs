//! `stasis`: the command line. Thin: parses flags (Podman's names), calls the engine, prints.

mod cli;
mod cmd;
mod table;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {}", cmd::error_chain(&e));
            ExitCode::from(cmd::exit_code_for(&e))
        }
    }
}
