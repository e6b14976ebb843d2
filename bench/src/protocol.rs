//! `zoe-bench protocol`: the agent protocol under load.
//!
//! 1. A coordinator (Raft + agent listener + `AgentBackend`) runs in this
//!    process; a real `zoe agent` process (target/release/zoe) registers with
//!    it on the test containerd. Measured: the command round trip (Ping over
//!    a fresh QUIC stream, leader → agent → leader), the agent's RSS idle
//!    and with 50 running busybox containers.
//! 2. **Hollow agents** ([`crate::hollow`]: the real protocol, fake
//!    containers) run in a child process (`zoe-bench protocol-hollow`), so
//!    this process holds only the coordinator. Measured: how many stay registered at the
//!    heartbeat interval, heartbeats ingested per second, and this process's
//!    CPU (the leader's) in percent of one core.

use crate::common::{Kill, cleanup_namespace, cpu_s, import_busybox, pct, sorted, zoe_bin};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use zoe_common::service::ServiceSpec;
use zoe_coordinator::agents::AgentBackend;
use zoe_coordinator::backend::Backend;
use zoe_coordinator::config::CoordinatorConfig;
use zoe_coordinator::raft::Coordinator;
use zoe_net::{CertificateAuthority, Identity, Role};

#[derive(clap::Args)]
pub struct Args {
    /// Hollow agents to connect.
    #[arg(long, default_value_t = 5000)]
    hollow: usize,
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Seconds over which the leader's CPU is measured.
    #[arg(long, default_value_t = 20)]
    measure_s: u64,
    /// Ping round trips to time.
    #[arg(long, default_value_t = 2000)]
    rtt_samples: usize,
    /// Containers for the loaded RSS figure.
    #[arg(long, default_value_t = 50)]
    containers: usize,
}

#[derive(clap::Args)]
pub struct HollowArgs {
    #[arg(long)]
    addr: String,
    /// Directory with ca.pem and ca-key.pem.
    #[arg(long)]
    pki: PathBuf,
    #[arg(long)]
    count: usize,
}

fn proc_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

async fn start_coordinator(dir: &Path, heartbeat_ms: u64) -> Result<(Coordinator, Arc<AgentBackend>, String)> {
    let raft = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let agents = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let text = format!(
        "id = 1\nname = \"c1\"\nlisten = \"127.0.0.1:{raft}\"\ndata_dir = \"c1-data\"\n\
         [tls]\nca = \"ca.pem\"\ncert = \"c1.pem\"\nkey = \"c1-key.pem\"\n\
         [[peers]]\nid = 1\naddr = \"127.0.0.1:{raft}\"\nname = \"c1\"\n\
         [agents]\nlisten = \"127.0.0.1:{agents}\"\nheartbeat_ms = {heartbeat_ms}\nfailover_grace_ms = 600000\nstop_grace_ms = 500\n"
    );
    let path = dir.join("c1.toml");
    std::fs::write(&path, text)?;
    let cfg = CoordinatorConfig::load(&path)?;
    let settings = cfg.agents.clone();
    let c = Coordinator::start(cfg).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if c.leadership().borrow().leader == Some(1) {
            break;
        }
        if Instant::now() > deadline {
            bail!("coordinator never became leader");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = AgentBackend::start(c.clone(), settings).await?;
    while !b.is_leader() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((c, b, format!("127.0.0.1:{agents}")))
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let dir = tempfile::Builder::new().prefix("zoe-bench-protocol-").tempdir()?;
    let ca = CertificateAuthority::generate("bench")?;
    ca.write(dir.path())?;
    ca.issue(&Identity::new(Role::Coordinator, "c1")?, &[], &["127.0.0.1".parse()?])?.write(dir.path(), "c1")?;
    ca.issue(&Identity::new(Role::Agent, "real")?, &[], &[])?.write(dir.path(), "real")?;
    let (c, backend, addr) = start_coordinator(dir.path(), args.heartbeat_ms).await?;
    let term = c.leader_term().context("the coordinator leads")?;

    // ---- the real agent: RTT and RSS
    let zoe = zoe_bin(None)?;
    let socket = zoe_testkit::containerd().socket.clone();
    let ns = zoe_testkit::unique_namespace("bench-protocol");
    import_busybox(&socket, &ns, dir.path()).await?;
    let agent_toml = format!(
        "coordinators = [\"{addr}\"]\ndata_dir = \"agent-data\"\nheartbeat_ms = {}\n\
         [containerd]\nsocket = \"{}\"\nnamespace = \"{ns}\"\n[tls]\nca = \"ca.pem\"\ncert = \"real.pem\"\nkey = \"real-key.pem\"\n",
        args.heartbeat_ms,
        socket.display()
    );
    std::fs::write(dir.path().join("agent.toml"), agent_toml)?;
    let agent = Kill(
        Command::new(&zoe)
            .args(["agent", "--config"])
            .arg(dir.path().join("agent.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let pid = agent.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !backend.platform_state().connected("real") {
        if Instant::now() > deadline {
            bail!("the real agent never registered");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("real agent registered; timing {} pings", args.rtt_samples);
    for _ in 0..100 {
        backend.ping("real").await?;
    }
    let mut rtts = Vec::with_capacity(args.rtt_samples);
    for _ in 0..args.rtt_samples {
        let t = Instant::now();
        backend.ping("real").await?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let rtts = sorted(rtts);
    let (rtt_p50, rtt_p99) = (pct(&rtts, 0.5), pct(&rtts, 0.99));
    // Idle: a few heartbeats after start-up.
    tokio::time::sleep(Duration::from_millis(args.heartbeat_ms * 3)).await;
    let rss_idle = proc_rss_mib(pid);
    eprintln!("rtt p50 {rtt_p50:.0} µs; agent RSS idle {rss_idle:.1} MiB; starting {} containers", args.containers);
    let mut ids = Vec::new();
    for i in 0..args.containers {
        let id = format!("bench-{i}");
        let instance = format!("s{i}");
        let spec = ServiceSpec {
            memory_limit: Some(16 << 20),
            ..ServiceSpec::plain(
                100_000 + i as u64,
                1,
                &id,
                &instance,
                zoe_testkit::DEFAULT_REFERENCE,
                &["sleep", "600"],
            )
        };
        backend.spawn_service(term, "real", spec).await.map_err(|e| anyhow::anyhow!("spawn {id}: {e}"))?;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(args.heartbeat_ms * 3)).await;
    let rss_50 = proc_rss_mib(pid);
    eprintln!("agent RSS with {} containers {rss_50:.1} MiB; stopping them", args.containers);
    // `sleep` as PID 1 ignores SIGTERM: stop them all at once, short grace.
    futures::future::join_all(ids.iter().map(|id| backend.terminate_service(term, "real", 0, id))).await;
    drop(agent);
    cleanup_namespace(&socket, &ns, dir.path()).await;

    // ---- hollow agents
    eprintln!("starting {} hollow agents", args.hollow);
    let exe = std::env::current_exe()?;
    let _hollow = Kill(
        Command::new(exe)
            .args(["protocol-hollow", "--addr", &addr, "--count", &args.hollow.to_string(), "--pki"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = 0;
    while backend.connected() < args.hollow && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let n = backend.connected();
        if n / 500 != last / 500 {
            eprintln!("  {n} connected");
        }
        last = n;
    }
    let connected_at_start = backend.connected();
    // Let registration writes settle before measuring the steady state.
    tokio::time::sleep(Duration::from_millis(args.heartbeat_ms * 2)).await;
    let (cpu0, hb0, t0) = (cpu_s("self"), backend.heartbeats.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.measure_s)).await;
    let (cpu1, hb1, dt) = (cpu_s("self"), backend.heartbeats.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    let connected_at_end = backend.connected();
    let cpu_pct = (cpu1 - cpu0) / dt * 100.0;
    let hb_per_s = (hb1 - hb0) as f64 / dt;
    eprintln!(
        "hollow: {connected_at_end} connected (of {}), {hb_per_s:.0} heartbeats/s, leader CPU {cpu_pct:.1}% of one core",
        args.hollow
    );
    Ok(json!({
        "bench": "protocol",
        "rtt_us_p50": rtt_p50.round(),
        "rtt_us_p99": rtt_p99.round(),
        "hollow_agents": connected_at_end.min(connected_at_start),
        "hollow_target": args.hollow,
        "heartbeat_ms": args.heartbeat_ms,
        "heartbeats_per_s": hb_per_s.round(),
        "leader_cpu_pct": (cpu_pct * 10.0).round() / 10.0,
        "agent_rss_idle_mib": (rss_idle * 10.0).round() / 10.0,
        "agent_rss_50_mib": (rss_50 * 10.0).round() / 10.0,
        "containers": args.containers,
    }))
}

/// The hollow-agent load generator (a child process of the benchmark).
pub async fn hollow(args: HollowArgs) -> Result<serde_json::Value> {
    let ca_pem = std::fs::read_to_string(args.pki.join("ca.pem"))?;
    let ca = CertificateAuthority::from_pem(&ca_pem, &std::fs::read_to_string(args.pki.join("ca-key.pem"))?)?;
    let _fleet = crate::hollow::start(&ca, args.addr.parse()?, args.count)?;
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
