//! **Hollow agents**: load generators that speak the real agent protocol
//! (mutual-TLS QUIC, one real agent certificate per node, registration,
//! heartbeats, command streams) but fake their containers. A spawn is
//! answered `Started` at once and the container is then listed as running
//! in every heartbeat until it is terminated, which is what a real agent
//! says about a container that started; nothing runs.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zoe_common::proto::{
    self, AgentMessage, CommandReply, CommandRequest, ContainerInfo, ContainerState, LiveStats, Registration,
    SessionOpen, SessionReply,
};
use zoe_common::service::ImageSummary;
use zoe_net::frame::{read_frame, write_frame};
use zoe_net::{CertificateAuthority, Identity, Role, TlsMaterial};

const CORES_MILLIS: u32 = 16_000;
const MEMORY: u64 = 64 << 30;

/// Counters over all hollow agents of a fleet.
#[derive(Default)]
pub struct Counters {
    /// Agents with an accepted session now.
    pub up: AtomicUsize,
    /// Spawn commands answered.
    pub spawned: AtomicU64,
    pub terminated: AtomicU64,
    /// Update commands answered (dynamic core sharing).
    pub updated: AtomicU64,
}

/// Containers that end on their own ([`start_exiting`]): each exits with
/// code 0 this long after its spawn, reported as a real agent does (an
/// `Exited` event, then `Exited` in the inventory).
#[derive(Clone)]
pub struct Exits {
    pub after: Duration,
    /// Container id → when it exited (epoch ms).
    pub at: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    /// Container id → when its spawn arrived (epoch ms).
    pub spawned: Arc<Mutex<std::collections::HashMap<String, u64>>>,
}

/// A fleet of hollow agents, all in this process.
pub struct Fleet {
    pub counters: Arc<Counters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts `count` hollow agents named `hollow-<i>` against the agent
/// listener at `addr` (redirects to the leader are followed); at most 64
/// register at the same time, as a rolling restart of a large fleet would.
pub fn start(ca: &CertificateAuthority, addr: SocketAddr, count: usize) -> Result<Fleet> {
    start_exiting(ca, addr, count, None)
}

/// [`start`], with containers that exit on their own after `exits.after`.
pub fn start_exiting(ca: &CertificateAuthority, addr: SocketAddr, count: usize, exits: Option<Exits>) -> Result<Fleet> {
    let ca_pem = ca.cert_pem();
    let ep = {
        let c = ca.issue(&Identity::new(Role::Agent, "hollow-0")?, &[], &[])?;
        TlsMaterial::from_pem(ca_pem.as_bytes(), c.cert_pem.as_bytes(), c.key_pem.as_bytes())?
            .client_endpoint(&[proto::ALPN])?
    };
    let counters = Arc::new(Counters::default());
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..count {
        let c = ca.issue(&Identity::new(Role::Agent, format!("hollow-{i}"))?, &[], &[])?;
        let tls = TlsMaterial::from_pem(ca_pem.as_bytes(), c.cert_pem.as_bytes(), c.key_pem.as_bytes())?;
        let mut cfg = tls.client_config(&[proto::ALPN])?;
        cfg.transport_config(zoe_coordinator::agents::agent_transport());
        let (ep, counters, sem, exits) = (ep.clone(), counters.clone(), sem.clone(), exits.clone());
        let containers: Arc<Mutex<Vec<ContainerInfo>>> = Arc::default();
        tasks.push(tokio::spawn(async move {
            let mut target = (addr, "127.0.0.1".to_string());
            loop {
                let permit = sem.clone().acquire_owned().await.expect("semaphore");
                match session(&ep, cfg.clone(), &target, permit, &counters, &containers, exits.as_ref()).await {
                    Ok(Some(redirect)) => {
                        target = redirect;
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!("hollow agent {i}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    Ok(Fleet { counters, tasks })
}

/// Parses a redirect `name@host:port` into an address and TLS server name.
fn redirect(s: &str) -> Option<(SocketAddr, String)> {
    let (name, addr) = s.split_once('@')?;
    Some((addr.parse().ok()?, Identity::new(Role::Coordinator, name).ok()?.san()))
}

fn stats(containers: &Mutex<Vec<ContainerInfo>>) -> LiveStats {
    let containers = containers.lock().expect("lock").clone();
    LiveStats {
        cores_total_millis: CORES_MILLIS,
        memory_total: MEMORY,
        cores_in_use_millis: 0,
        memory_in_use: 0,
        container_count: containers.len() as u32,
        containers,
        images: None,
        volume_sizes: Vec::new(),
    }
}

/// One session: `Ok(Some(target))` when redirected to the leader.
async fn session(
    ep: &quinn::Endpoint,
    cfg: quinn::ClientConfig,
    (addr, server_name): &(SocketAddr, String),
    permit: tokio::sync::OwnedSemaphorePermit,
    counters: &Arc<Counters>,
    containers: &Arc<Mutex<Vec<ContainerInfo>>>,
    exits: Option<&Exits>,
) -> Result<Option<(SocketAddr, String)>> {
    let conn = ep.connect_with(cfg, *addr, server_name)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let stats0 = stats(containers);
    let open = SessionOpen {
        registration: Registration {
            addresses: vec!["127.0.0.1".into()],
            cores_millis: CORES_MILLIS,
            memory_bytes: MEMORY,
            labels: Default::default(),
            host_volumes: Default::default(),
            containerd_version: "hollow".into(),
            cgroup_mode: "hollow".into(),
            images: vec![ImageSummary {
                names: vec![zoe_testkit::DEFAULT_REFERENCE.into()],
                digest: "sha256:hollow".into(),
                size: 1 << 20,
            }],
            containers: stats0.containers.clone(),
            agent_version: "hollow".into(),
        },
        stats: stats0,
    };
    write_frame(&mut send, &open, proto::MAX_FRAME).await?;
    let reply: SessionReply = read_frame(&mut recv, proto::MAX_FRAME).await?.context("no reply")?;
    let heartbeat_ms = match reply {
        SessionReply::Accepted { heartbeat_ms, .. } => heartbeat_ms,
        SessionReply::NotLeader { leader: Some(l) } => {
            return Ok(Some(redirect(&l).with_context(|| format!("bad redirect {l:?}"))?));
        }
        other => bail!("not accepted: {other:?}"),
    };
    drop(permit);
    counters.up.fetch_add(1, Ordering::Relaxed);
    let (events, mut to_send) = tokio::sync::mpsc::unbounded_channel::<AgentMessage>();
    let commands = {
        let (conn, counters, containers, exits) = (conn.clone(), counters.clone(), containers.clone(), exits.cloned());
        tokio::spawn(async move {
            while let Ok((mut s, mut r)) = conn.accept_bi().await {
                let (counters, containers, exits, events) =
                    (counters.clone(), containers.clone(), exits.clone(), events.clone());
                tokio::spawn(async move {
                    let Ok(Some(req)) = read_frame::<_, CommandRequest>(&mut r, proto::MAX_FRAME).await else {
                        return;
                    };
                    let fresh = match &req.command {
                        proto::AgentCommand::Spawn(spec) => {
                            let list = containers.lock().expect("lock");
                            let spec = &spec.0;
                            (!list.iter().any(|c| c.container_id == spec.container_id))
                                .then(|| (spec.container_id.clone(), spec.service_id))
                        }
                        _ => None,
                    };
                    if let (Some((cid, sid)), Some(exits)) = (fresh, exits) {
                        exits.spawned.lock().expect("lock").insert(cid.clone(), now_ms());
                        tokio::spawn(exit_later(cid, sid, exits, containers.clone(), events));
                    }
                    let reply = answer(req.command, &counters, &containers);
                    let _ = write_frame(&mut s, &reply, proto::MAX_FRAME).await;
                    let _ = s.finish();
                });
            }
        })
    };
    let reader = tokio::spawn(async move {
        while let Ok(Some(_)) = read_frame::<_, proto::LeaderMessage>(&mut recv, proto::MAX_FRAME).await {}
    });
    // Spread the heartbeats over the interval.
    tokio::time::sleep(Duration::from_millis(rand_u64() % heartbeat_ms.max(1))).await;
    let mut tick = tokio::time::interval(Duration::from_millis(heartbeat_ms));
    let mut seq = 0;
    let r = loop {
        let msg = tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                AgentMessage::Heartbeat { seq, stats: stats(containers) }
            }
            Some(ev) = to_send.recv() => ev,
        };
        if let Err(e) = write_frame(&mut send, &msg, proto::MAX_FRAME).await {
            break Err(e.into());
        }
        if reader.is_finished() {
            break Ok(None);
        }
    };
    commands.abort();
    counters.up.fetch_sub(1, Ordering::Relaxed);
    r
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A container's own end: `Exited` in the inventory and as an event.
async fn exit_later(
    cid: String,
    service_id: u64,
    exits: Exits,
    containers: Arc<Mutex<Vec<ContainerInfo>>>,
    events: tokio::sync::mpsc::UnboundedSender<AgentMessage>,
) {
    tokio::time::sleep(exits.after).await;
    let state = ContainerState::Exited { exit_code: Some(0), oom_killed: false };
    {
        let mut list = containers.lock().expect("lock");
        let Some(c) = list.iter_mut().find(|c| c.container_id == cid) else { return };
        if !c.state.is_running() {
            return;
        }
        c.state = state;
    }
    let time_ms = now_ms();
    exits.at.lock().expect("lock").insert(cid.clone(), time_ms);
    let _ = events.send(AgentMessage::Event(proto::AgentEvent::Exited {
        service_id,
        container_id: cid,
        exit_code: Some(0),
        oom_killed: false,
        reason: "exited".into(),
        time_ms,
    }));
}

/// What a real agent answers, minus the container.
fn answer(cmd: proto::AgentCommand, counters: &Counters, containers: &Mutex<Vec<ContainerInfo>>) -> CommandReply {
    match cmd {
        proto::AgentCommand::Ping => CommandReply::Pong,
        proto::AgentCommand::Spawn(spec) => {
            let spec = spec.0;
            let mut list = containers.lock().expect("lock");
            // Idempotent by container id, as the real agent.
            if !list.iter().any(|c| c.container_id == spec.container_id) {
                list.push(ContainerInfo {
                    container_id: spec.container_id.clone(),
                    service_id: Some(spec.service_id),
                    state: ContainerState::Running,
                    cores_in_use_millis: 0,
                    memory_in_use: 0,
                    core_limit_millis: Some(spec.cores.0),
                    memory_limit: spec.memory_limit,
                });
            }
            counters.spawned.fetch_add(1, Ordering::Relaxed);
            CommandReply::Started { container_id: spec.container_id, ip_address: Some("127.0.0.1".into()) }
        }
        proto::AgentCommand::Terminate { container_id, .. } => {
            containers.lock().expect("lock").retain(|c| c.container_id != container_id);
            counters.terminated.fetch_add(1, Ordering::Relaxed);
            CommandReply::Done
        }
        proto::AgentCommand::Update { .. } => {
            counters.updated.fetch_add(1, Ordering::Relaxed);
            CommandReply::Done
        }
        proto::AgentCommand::ListImages => CommandReply::Images(vec![]),
        _ => CommandReply::Done,
    }
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}
