//! `zoe`: the one binary. It parses arguments and calls zoe's libraries;
//! everything it does lives in a library crate.

mod coordinator;
mod zapp;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "zoe",
    version,
    about = "zoe: a cluster scheduler for data-analytics containers",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with ZApp descriptions (Zoe's application format 3).
    #[command(subcommand)]
    Zapp(zapp::ZappCommand),
    /// Run a coordinator (`zoe coordinator --config coordinator.toml`), or query/administer one.
    Coordinator(coordinator::CoordinatorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Zapp(c) => zapp::run(c),
        Command::Coordinator(c) => coordinator::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
