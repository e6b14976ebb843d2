//! `zoe agent --config agent.toml`: run a node agent.

use crate::logs::LogFormat;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use zoe_agent::config::AgentConfig;
use zoe_agent::daemon::Agent;

#[derive(Args)]
pub struct AgentArgs {
    /// The agent's configuration file (TOML).
    #[arg(long, short, env = "ZOE_AGENT_CONFIG", default_value = "agent.toml")]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub fn run(args: AgentArgs) -> Result<ExitCode> {
    let config = AgentConfig::load(&args.config)?;
    crate::logs::init(args.log_format, "info,quinn=warn,h2=warn,tower=warn");
    // Two worker threads: the agent is small and must stay small.
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("tokio runtime")?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let agent = Agent::start(config).await?;
        tracing::info!(node = agent.name(), "agent started");
        crate::systemd::ready();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(agent.run(stopped));
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping the agent; containers keep running"),
            _ = int.recv() => tracing::info!("SIGINT: stopping the agent; containers keep running"),
        }
        crate::systemd::stopping();
        let _ = stop.send(true);
        let _ = run.await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
