//! `zoe dev`: a one-node cluster in one process (coordinator + agent), for
//! trying zoe and for development. The pieces live in the libraries
//! (`zoe_coordinator::dev`, `zoe_coordinator::server`, `zoe_agent`); this
//! file only puts them in order.

use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use zoe_agent::config::AgentConfig;
use zoe_agent::daemon::Agent;
use zoe_agent::private_containerd::{PrivateContainerd, answers};
use zoe_coordinator::config::CoordinatorConfig;
use zoe_coordinator::dev::{DEFAULT_NAMESPACE, DevLayout, DevOptions, NODE_NAME};
use zoe_coordinator::server::Server;

/// The system containerd's socket (Debian's package).
const SYSTEM_CONTAINERD: &str = "/run/containerd/containerd.sock";

#[derive(Args)]
pub struct DevArgs {
    /// Where the cluster keeps everything (certificates, configs, state, token)
    /// [default: $XDG_DATA_HOME/zoe/dev or ~/.local/share/zoe/dev].
    #[arg(long, env = "ZOE_DEV_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// REST API address (plain HTTP, so loopback only).
    #[arg(long, default_value = "127.0.0.1:5001", value_name = "ADDR")]
    api: SocketAddr,
    /// Service proxy address: services' web ports at
    /// http://localhost:PORT/{execution}/{service}/{port}/ [default: the API's
    /// port + 1].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_proxy")]
    proxy: Option<SocketAddr>,
    /// Run without the service proxy.
    #[arg(long)]
    no_proxy: bool,
    /// containerd socket to use [default: the system one if it answers, else a
    /// private containerd started under DIR/containerd].
    #[arg(long, value_name = "SOCKET")]
    containerd: Option<PathBuf>,
    /// containerd namespace of the node's containers.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// ZApp shop packages for the web UI [default: ./examples/shop when it
    /// exists, as in a checkout of zoe].
    #[arg(long, value_name = "DIR")]
    shop: Option<PathBuf>,
}

fn default_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .context("no HOME: pass --data-dir")?;
    Ok(base.join("zoe").join("dev"))
}

pub fn run(args: DevArgs) -> Result<ExitCode> {
    crate::logs::init(crate::logs::LogFormat::Text, "info,openraft=warn,sled=warn,quinn=warn,h2=warn,tower=warn");
    let dir = match args.data_dir.clone() {
        Some(d) => d,
        None => default_dir()?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("{}", dir.display()))?;
    let layout = DevLayout::new(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(serve(args, layout))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: DevArgs, layout: DevLayout) -> Result<()> {
    let mut signals = crate::signals::StopSignals::new()?;
    if layout.ensure_certs()? {
        tracing::info!(dir = %layout.tls_dir().display(), "created the dev cluster's CA and certificates");
    }
    let mut private = None;
    let socket = match args.containerd {
        Some(s) => {
            anyhow::ensure!(answers(&s).await, "no containerd answers on {}", s.display());
            s
        }
        None if answers(SYSTEM_CONTAINERD.as_ref()).await => PathBuf::from(SYSTEM_CONTAINERD),
        None => {
            tracing::info!("no system containerd answers on {SYSTEM_CONTAINERD}; starting a private one");
            let p = PrivateContainerd::start(&layout.containerd_dir()).await?;
            let s = p.socket().to_path_buf();
            private = Some(p);
            s
        }
    };
    let shop = match args.shop {
        Some(d) => Some(d.canonicalize().with_context(|| format!("--shop {}", d.display()))?),
        None => Path::new("examples/shop").canonicalize().ok().filter(|p| p.is_dir()),
    };
    let opts = DevOptions {
        api: args.api,
        containerd_socket: socket.clone(),
        namespace: args.namespace,
        shop_dir: shop,
        proxy: (!args.no_proxy)
            .then(|| args.proxy.unwrap_or_else(|| SocketAddr::new(args.api.ip(), args.api.port().wrapping_add(1)))),
    };
    let result = run_cluster(&opts, &layout, &mut signals).await;
    if let Some(p) = private {
        p.stop().await;
    }
    result
}

async fn run_cluster(opts: &DevOptions, layout: &DevLayout, signals: &mut crate::signals::StopSignals) -> Result<()> {
    layout.write_configs(opts)?;
    let server = Server::start(CoordinatorConfig::load(&layout.coordinator_config())?).await?;
    let agent = match Agent::start(AgentConfig::load(&layout.agent_config())?).await {
        Ok(a) => a,
        Err(e) => {
            server.shutdown().await;
            return Err(e.into());
        }
    };
    let (stop_agent, agent_stopped) = tokio::sync::watch::channel(false);
    let agent_task = tokio::spawn(agent.run(agent_stopped));
    let ready = async {
        let (token, new) = layout.admin_token(server.coordinator()).await?;
        // Ready means the node has registered and can take work.
        for _ in 0..300 {
            if server.agents().connected() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok((token, new))
    };
    let outcome = tokio::select! {
        r = ready => r.map(Some),
        _ = signals.wait() => Ok(None),
    };
    let outcome = match outcome {
        Ok(Some((token, new))) => {
            print_banner(&server, layout, &token, new, &opts.containerd_socket, &opts.namespace);
            crate::systemd::ready();
            signals.wait().await;
            Ok(())
        }
        other => other.map(|_| ()),
    };
    crate::systemd::stopping();
    let _ = stop_agent.send(true);
    let _ = agent_task.await;
    server.shutdown().await;
    outcome
}

fn print_banner(server: &Server, layout: &DevLayout, token: &str, new: bool, socket: &std::path::Path, ns: &str) {
    let url = server.api_url().unwrap_or_else(|| "(no API)".into());
    let token_file = layout.admin_token_file();
    println!("\nzoe dev is up ({}):", layout.dir.display());
    println!("  API          {url}  (web UI: {url}/ui/)");
    if let Some(p) = server.proxy_url() {
        println!("  proxy        {p}/<execution>/<service>/<port>/  (services' web pages)");
    }
    println!("  admin token  {token}{}", if new { "  (new)" } else { "" });
    println!("               saved in {} (mode 0600)", token_file.display());
    println!("  node         {NODE_NAME}: containerd {} namespace {ns}", socket.display());
    println!("\n  export ZOE_ADDR={url} ZOE_TOKEN=$(cat {})", token_file.display());
    println!("  zoe node ls; zoe exec start NAME examples/zapps/FILE.json --wait running");
    println!("\n  Ctrl-C (or SIGTERM) stops the cluster; the next `zoe dev` continues with the same state.\n");
}
