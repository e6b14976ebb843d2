//! `zoe-bench protocol`: the agent protocol under load.
//!
//! 1. A coordinator (Raft + agent listener + `AgentBackend`) runs in this
//!    process; a real `zoe agent` process (target/release/zoe) registers with
//!    it on the test containerd. Measured: the command round trip (Ping over
//!    a fresh QUIC stream, leader → agent → leader), the agent's RSS idle
//!    and with 50 running busybox containers.
//! 2. **Hollow agents** — a load generator that speaks the real protocol
//!    with real agent certificates (one per node) but fakes its containers —
//!    run in a child process (`zoe-bench protocol-hollow`), so this process
//!    holds only the coordinator. Measured: how many stay registered at the
//!    heartbeat interval, heartbeats ingested per second, and this process's
//!    CPU (the leader's) in percent of one core.

use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use zoe_common::proto::{
    self, AgentMessage, CommandReply, CommandRequest, LiveStats, Registration, SessionOpen, SessionReply,
};
use zoe_common::resources::Millicores;
use zoe_common::service::ServiceSpec;
use zoe_coordinator::agents::AgentBackend;
use zoe_coordinator::backend::Backend;
use zoe_coordinator::raft::{Coordinator, CoordinatorConfig};
use zoe_net::frame::{read_frame, write_frame};
use zoe_net::{CertificateAuthority, Identity, Role, TlsMaterial};

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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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

/// utime + stime of this process, in seconds.
fn self_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / USER_HZ
}

/// Clock ticks per second of /proc/*/stat: USER_HZ, 100 on every Linux
/// architecture zoe targets (the kernel's HZ does not change it).
const USER_HZ: f64 = 100.0;

fn zoe_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("zoe");
    if !bin.exists() {
        bail!("{} missing: run `cargo build --release -p zoe-cli` first", bin.display());
    }
    Ok(bin)
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
        if c.raft().metrics().borrow().current_leader == Some(1) {
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

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let dir = tempfile::Builder::new().prefix("zoe-bench-protocol-").tempdir()?;
    let ca = CertificateAuthority::generate("bench")?;
    ca.write(dir.path())?;
    ca.issue(&Identity::new(Role::Coordinator, "c1")?, &[], &["127.0.0.1".parse()?])?.write(dir.path(), "c1")?;
    ca.issue(&Identity::new(Role::Agent, "real")?, &[], &[])?.write(dir.path(), "real")?;
    let (_c, backend, addr) = start_coordinator(dir.path(), args.heartbeat_ms).await?;

    // ---- the real agent: RTT and RSS
    let zoe = zoe_bin()?;
    let socket = zoe_testkit::containerd().socket.clone();
    let ns = zoe_testkit::unique_namespace("bench-protocol");
    {
        let mut rc = zoe_agent::RuntimeConfig::new(&socket, dir.path().join("prep"));
        rc.namespace = ns.clone();
        let rt = zoe_agent::Runtime::connect(rc).await?;
        let archive = dir.path().join("busybox.tar");
        zoe_testkit::BusyboxImage::build()?.write_oci_archive(&archive)?;
        rt.images().import_archive(&archive, None, None).await?;
        rt.shutdown().await;
    }
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
    rtts.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let (rtt_p50, rtt_p99) = (percentile(&rtts, 0.5), percentile(&rtts, 0.99));
    // Idle: a few heartbeats after start-up.
    tokio::time::sleep(Duration::from_millis(args.heartbeat_ms * 3)).await;
    let rss_idle = proc_rss_mib(pid);
    eprintln!("rtt p50 {rtt_p50:.0} µs; agent RSS idle {rss_idle:.1} MiB; starting {} containers", args.containers);
    let mut ids = Vec::new();
    for i in 0..args.containers {
        let id = format!("bench-{i}");
        let spec = ServiceSpec {
            service_id: 100_000 + i as u64,
            execution_id: 1,
            container_id: id.clone(),
            instance: format!("s{i}"),
            image: zoe_testkit::DEFAULT_REFERENCE.into(),
            command: Some(vec!["sleep".into(), "600".into()]),
            env: vec![],
            working_dir: None,
            hostname: format!("s{i}"),
            mounts: vec![],
            labels: Default::default(),
            cores: Millicores(100),
            cores_min: Millicores(100),
            memory_limit: Some(16 << 20),
            shm: None,
            ports: vec![],
            network: None,
        };
        backend.spawn_service("real", spec).await.map_err(|e| anyhow::anyhow!("spawn {id}: {e}"))?;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(args.heartbeat_ms * 3)).await;
    let rss_50 = proc_rss_mib(pid);
    eprintln!("agent RSS with {} containers {rss_50:.1} MiB; stopping them", args.containers);
    // `sleep` as PID 1 ignores SIGTERM: stop them all at once, short grace.
    futures::future::join_all(ids.iter().map(|id| backend.terminate_service("real", 0, id))).await;
    drop(agent);
    {
        let mut rc = zoe_agent::RuntimeConfig::new(&socket, dir.path().join("cleanup"));
        rc.namespace = ns.clone();
        if let Ok(rt) = zoe_agent::Runtime::connect(rc).await {
            for s in rt.services() {
                let _ = rt.stop(&s.id, Duration::from_secs(1)).await;
            }
            let _ = rt.images().remove(zoe_testkit::DEFAULT_REFERENCE).await;
            let ctd = rt.containerd().clone();
            rt.shutdown().await;
            let _ = ctd
                .namespaces()
                .delete(containerd_client::services::v1::DeleteNamespaceRequest { name: ns.clone() })
                .await;
        }
    }

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
    while backend.connected() < args.hollow + 0 && Instant::now() < deadline {
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
    let (cpu0, hb0, t0) = (self_cpu_s(), backend.heartbeats.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.measure_s)).await;
    let (cpu1, hb1, dt) = (self_cpu_s(), backend.heartbeats.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
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
    let ep = {
        let id = Identity::new(Role::Agent, "hollow-0")?;
        let c = ca.issue(&id, &[], &[])?;
        TlsMaterial::from_pem(ca_pem.as_bytes(), c.cert_pem.as_bytes(), c.key_pem.as_bytes())?
            .client_endpoint(&[proto::ALPN])?
    };
    let addr: std::net::SocketAddr = args.addr.parse()?;
    let up = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..args.count {
        let id = Identity::new(Role::Agent, format!("hollow-{i}"))?;
        let c = ca.issue(&id, &[], &[])?;
        let tls = TlsMaterial::from_pem(ca_pem.as_bytes(), c.cert_pem.as_bytes(), c.key_pem.as_bytes())?;
        let mut cfg = tls.client_config(&[proto::ALPN])?;
        cfg.transport_config(zoe_coordinator::agents::agent_transport());
        let (ep, up, sem) = (ep.clone(), up.clone(), sem.clone());
        tokio::spawn(async move {
            loop {
                let permit = sem.clone().acquire_owned().await.expect("semaphore");
                if let Err(e) = hollow_session(&ep, cfg.clone(), addr, permit, &up).await {
                    tracing::debug!("hollow agent {i}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

async fn hollow_session(
    ep: &quinn::Endpoint,
    cfg: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
    up: &AtomicUsize,
) -> Result<()> {
    let conn = ep.connect_with(cfg, addr, "127.0.0.1")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let open = SessionOpen {
        registration: Registration {
            addresses: vec!["127.0.0.1".into()],
            cores_millis: 16_000,
            memory_bytes: 64 << 30,
            labels: Default::default(),
            containerd_version: "hollow".into(),
            cgroup_mode: "hollow".into(),
            images: vec![],
            containers: vec![],
            agent_version: "hollow".into(),
        },
        stats: LiveStats::default(),
    };
    write_frame(&mut send, &open, proto::MAX_FRAME).await?;
    let reply: SessionReply = read_frame(&mut recv, proto::MAX_FRAME).await?.context("no reply")?;
    let SessionReply::Accepted { heartbeat_ms, .. } = reply else { bail!("not accepted: {reply:?}") };
    drop(permit);
    up.fetch_add(1, Ordering::Relaxed);
    // Fake containers: every command is answered at once.
    let c2 = conn.clone();
    tokio::spawn(async move {
        while let Ok((mut s, mut r)) = c2.accept_bi().await {
            tokio::spawn(async move {
                if let Ok(Some(req)) = read_frame::<_, CommandRequest>(&mut r, proto::MAX_FRAME).await {
                    let reply = match req.command {
                        proto::Command::Ping => CommandReply::Pong,
                        proto::Command::Spawn(spec) => CommandReply::Started {
                            container_id: spec.0.container_id,
                            ip_address: Some("127.0.0.1".into()),
                        },
                        _ => CommandReply::Done,
                    };
                    let _ = write_frame(&mut s, &reply, proto::MAX_FRAME).await;
                    let _ = s.finish();
                }
            });
        }
    });
    let reader = tokio::spawn(async move {
        while let Ok(Some(_)) = read_frame::<_, proto::LeaderMessage>(&mut recv, proto::MAX_FRAME).await {}
    });
    // Spread the heartbeats over the interval.
    let jitter = (rand_u64() % heartbeat_ms.max(1)) as u64;
    tokio::time::sleep(Duration::from_millis(jitter)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(heartbeat_ms));
    let mut seq = 0;
    let r = loop {
        tick.tick().await;
        seq += 1;
        let stats = LiveStats { cores_total_millis: 16_000, memory_total: 64 << 30, ..Default::default() };
        if let Err(e) = write_frame(&mut send, &AgentMessage::Heartbeat { seq, stats }, proto::MAX_FRAME).await {
            break Err(e.into());
        }
        if reader.is_finished() {
            break Ok(());
        }
    };
    up.fetch_sub(1, Ordering::Relaxed);
    r
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}
