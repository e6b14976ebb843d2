//! `zoe coordinator`: run a coordinator, show its status, change membership.

use crate::logs::LogFormat;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use zoe_coordinator::config::CoordinatorConfig;
use zoe_coordinator::raft::{CoordNode, CoordinatorClient, Status};
use zoe_net::TlsMaterial;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct CoordinatorArgs {
    /// The coordinator's configuration file (TOML).
    #[arg(long, short, global = true, env = "ZOE_COORDINATOR_CONFIG", default_value = "coordinator.toml")]
    config: PathBuf,
    /// Log format when running.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand)]
enum Action {
    /// Show this coordinator's view: leader, term, commit/applied index, members, last contact.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add a coordinator to the cluster (it catches up as a learner, then votes).
    Join(NewMember),
    /// Remove a coordinator from the cluster.
    Remove {
        /// The member's node id.
        #[arg(long)]
        id: u64,
    },
}

/// A coordinator to add to the cluster (`zoe coordinator join`, `zoe operator add`).
#[derive(Debug, Args)]
pub struct NewMember {
    /// The new member's node id.
    #[arg(long)]
    pub id: u64,
    /// Its address (host:port of its Raft listener), as the other members will reach it.
    #[arg(long)]
    pub addr: String,
    /// The name in its certificate (coordinator.NAME.zoe).
    #[arg(long)]
    pub name: String,
}

pub fn run(args: CoordinatorArgs) -> Result<ExitCode> {
    let config = CoordinatorConfig::load(&args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    match args.action {
        None => {
            // Everything a coordinator writes (sled, snapshots, backups,
            // the bootstrap token) is for its own user only.
            // SAFETY: umask(2) only sets the process's file mode mask.
            unsafe { libc::umask(0o077) };
            crate::logs::init(args.log_format, "info,openraft=warn,sled=warn,quinn=warn");
            rt.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(action) => rt.block_on(admin(config, action)),
    }
}

async fn serve(config: CoordinatorConfig) -> Result<()> {
    let mut signals = crate::signals::StopSignals::new()?;
    let server = zoe_coordinator::server::Server::start(config).await?;
    // Raft, the agent listener and the API all serve now.
    crate::systemd::ready();
    signals.wait().await;
    crate::systemd::stopping();
    server.shutdown().await;
    Ok(())
}

/// Connects to the configured coordinator with its own certificate.
fn client_for(config: &CoordinatorConfig) -> Result<CoordinatorClient> {
    let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let mut addr = config.advertised_addr();
    if let Ok(sa) = addr.parse::<SocketAddr>()
        && sa.ip().is_unspecified()
    {
        addr = SocketAddr::new([127, 0, 0, 1].into(), sa.port()).to_string();
    }
    let mut c = CoordinatorClient::new(&tls, vec![CoordNode { addr, name: config.name.clone() }])?;
    c.attempt_timeout = Duration::from_secs(30);
    Ok(c)
}

async fn admin(config: CoordinatorConfig, action: Action) -> Result<ExitCode> {
    let client = client_for(&config)?;
    match action {
        Action::Status { json } => {
            let s = client
                .status_of(0)
                .await
                .with_context(|| format!("coordinator {} at {}", config.name, config.advertised_addr()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
        }
        Action::Join(NewMember { id, addr, name }) => {
            if config.peers.iter().any(|p| p.id == id && p.name != name) {
                bail!("id {id} is configured as another coordinator");
            }
            client.add_member(0, id, CoordNode { addr, name }).await?;
            eprintln!("coordinator {id} is now a voting member");
        }
        Action::Remove { id } => {
            client.remove_member(0, id).await?;
            eprintln!("coordinator {id} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn print_status(s: &Status) {
    println!("coordinator {} ({}): {}, term {}", s.id, s.name, s.role, s.term);
    println!("leader        {}", opt(s.leader));
    println!("last log      {}", opt(s.last_log_index));
    println!("committed     {}", opt(s.commit_index));
    println!("applied       {}", opt(s.applied_index));
    println!("snapshot      {}  (purged up to {})", opt(s.snapshot_index), opt(s.purged_index));
    println!("last contact  {}", s.last_contact_ms.map(|m| format!("{m} ms ago")).unwrap_or_else(|| "never".into()));
    println!("members:");
    for m in &s.members {
        println!(
            "  {:<4} {:<16} {:<22} {:<7} {}",
            m.id,
            m.name,
            m.addr,
            if m.voter { "voter" } else { "learner" },
            m.matched_index.map(|i| format!("matched {i}")).unwrap_or_default()
        );
    }
}
