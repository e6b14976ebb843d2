//! `zoe`: the one binary. It parses arguments and calls zoe's libraries;
//! everything it does lives in a library crate.

mod agent;
mod certs;
mod client;
mod coordinator;
mod dev;
mod logs;
mod signals;
mod sim;
mod systemd;
mod zapp;

use clap::{CommandFactory, Parser, Subcommand};
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
    /// Run a node agent (`zoe agent --config agent.toml`).
    Agent(agent::AgentArgs),
    /// Run a one-node cluster (coordinator + agent) in this process, for trying zoe and development.
    Dev(dev::DevArgs),
    /// The cluster's certificates: create a CA, issue coordinator/agent/client certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Run the scheduler in virtual time on a generated workload (no cluster needed).
    Sim(sim::SimArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Print a shell completion script (e.g. `zoe completions bash > /etc/bash_completion.d/zoe`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Zapp(c) => zapp::run(c),
        Command::Coordinator(c) => coordinator::run(c),
        Command::Agent(a) => agent::run(a),
        Command::Dev(d) => dev::run(d),
        Command::Certs(c) => certs::run(c),
        Command::Sim(s) => sim::run(s),
        Command::Client(c) => client::run(c),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "zoe", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
