//! The agent process: registers the node with the leader over mutual-TLS
//! QUIC, sends heartbeats with live stats and events, and carries out the
//! leader's commands on the [`Runtime`].
//!
//! Connection life: try the configured coordinators in turn (backoff with
//! jitter between rounds); a follower answers `NotLeader` with the leader's
//! address, which is tried next. While no coordinator is reachable nothing
//! happens to the containers: they keep running, and their exits are kept
//! in the inventory sent at the next registration, where the leader
//! reconciles them.

mod heartbeat;
mod orders;
mod session;

pub use orders::to_container_spec;

use heartbeat::SlowCache;
use session::Outcome;

use crate::config::{AgentConfig, CoordinatorAddr};
use crate::error::Error;
use crate::network::PortMapping;
use crate::runtime::{Runtime, RuntimeConfig, ServiceState};
use crate::spec::{BindMount, ContainerSpec, NetworkMode, Ownership, Resources};
use rand::Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use zoe_common::proto::{
    self, AgentCommand, AgentEvent, AgentMessage, CommandReply, CommandRequest, ContainerInfo, ContainerState,
    ImageProgress, LeaderMessage, LiveStats, Registration, SessionOpen, SessionReply,
};
use zoe_common::resources::Millicores;
use zoe_common::service::{ImageSummary, ServiceSpec};
use zoe_net::frame::{read_frame, write_frame};
use zoe_net::{Role, TlsMaterial};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Net(#[from] zoe_net::NetError),
    #[error(transparent)]
    Runtime(#[from] Error),
    #[error("{0}")]
    Setup(String),
}

/// Idle timeout of the agent connection: a dead coordinator (kill -9 sends
/// nothing) is noticed within this, well inside the 5 s reconnect target.
const IDLE_TIMEOUT: Duration = Duration::from_millis(2_500);
const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// Orphans and images are listed every this many heartbeats (each costs
/// containerd round trips; their changes are rare).
const SLOW_EVERY: u64 = 5;

/// The agent: one per node.
pub struct Agent {
    cfg: AgentConfig,
    rt: Runtime,
    name: String,
    endpoint: quinn::Endpoint,
    /// Exit events waiting for a session.
    outbox: Mutex<VecDeque<AgentEvent>>,
    outbox_ready: Notify,
    /// Containers whose exit is watched (one watcher each).
    watched: Mutex<HashSet<String>>,
    /// Containers the leader asked to stop: their exit is its doing, not news.
    stopping: Mutex<HashSet<String>>,
    /// One spawn at a time per container id (a new leader may repeat one).
    spawn_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The newest leader term whose container commands this agent obeyed
    /// (see `CommandRequest::term`).
    newest_term: std::sync::atomic::AtomicU64,
    /// Previous CPU sample per container: (cpu ns, when).
    cpu_prev: Mutex<HashMap<String, (u64, Instant)>>,
    slow: Mutex<SlowCache>,
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("fits a VarInt")));
    t.max_concurrent_bidi_streams(1024u32.into());
    Arc::new(t)
}

/// The QUIC transport settings both ends of an agent connection use.
pub fn agent_transport() -> Arc<quinn::TransportConfig> {
    transport()
}

impl Agent {
    /// Loads the TLS material, checks it is an agent certificate, connects
    /// to containerd (reattaching to running containers).
    pub async fn start(cfg: AgentConfig) -> Result<Arc<Agent>, DaemonError> {
        let tls = TlsMaterial::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)?;
        let me = tls.identity().clone();
        if me.role != Role::Agent {
            return Err(DaemonError::Setup(format!(
                "{} is a {} certificate; an agent needs an agent certificate",
                cfg.tls.cert.display(),
                me.role
            )));
        }
        let mut client = tls.client_config(&[proto::ALPN])?;
        client.transport_config(transport());
        let bind: SocketAddr = "0.0.0.0:0".parse().expect("literal");
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| DaemonError::Setup(format!("UDP socket: {e}")))?;
        endpoint.set_default_client_config(client);

        let mut rc = RuntimeConfig::new(&cfg.containerd.socket, &cfg.data_dir);
        rc.namespace = cfg.containerd.namespace.clone();
        rc.parent_cgroup = cfg.containerd.parent_cgroup.clone();
        rc.registry.insecure = cfg.registry.insecure.clone();
        rc.reserve.cpu = Millicores::from_cores(cfg.reserve.cores).map_err(|e| DaemonError::Setup(e.to_string()))?;
        rc.reserve.memory_bytes = cfg.reserve.memory_bytes;
        rc.advertise.cpu = match cfg.advertise.cores {
            Some(c) => {
                Some(Millicores::from_cores(c).map_err(|e| DaemonError::Setup(format!("advertise.cores: {e}")))?)
            }
            None => None,
        };
        rc.advertise.memory_bytes = cfg.advertise.memory_bytes;
        rc.network = cfg.network.clone();
        let rt = Runtime::connect(rc).await?;
        let agent = Arc::new(Agent {
            cfg,
            rt,
            name: me.name,
            endpoint,
            outbox: Mutex::new(VecDeque::new()),
            outbox_ready: Notify::new(),
            watched: Mutex::new(HashSet::new()),
            stopping: Mutex::new(HashSet::new()),
            spawn_locks: Mutex::new(HashMap::new()),
            newest_term: std::sync::atomic::AtomicU64::new(0),
            cpu_prev: Mutex::new(HashMap::new()),
            slow: Mutex::new(SlowCache::default()),
        });
        for s in agent.rt.services() {
            agent.watch_exit(&s.id);
        }
        Ok(agent)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Runs until `shutdown` turns true; containers are left running.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let list: Vec<CoordinatorAddr> =
            self.cfg.coordinators.iter().filter_map(|c| CoordinatorAddr::parse(c).ok()).collect();
        let mut next = 0usize;
        let mut redirect: Option<CoordinatorAddr> = None;
        let mut failures = 0u32;
        // Coordinators that just timed out or refused a handshake: a killed
        // leader costs a full QUIC handshake timeout per attempt, so it is
        // skipped while another member may already know the new leader.
        let mut suspect: HashMap<String, Instant> = HashMap::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let target = redirect.take().unwrap_or_else(|| {
                let now = Instant::now();
                suspect.retain(|_, until| *until > now);
                let i = (next..next + list.len())
                    .map(|k| k % list.len())
                    .find(|i| !suspect.contains_key(&list[*i].addr))
                    .unwrap_or(next % list.len());
                next = i + 1;
                list[i].clone()
            });
            let outcome = tokio::select! {
                o = self.clone().session(&target) => o,
                _ = shutdown.changed() => break,
            };
            match outcome {
                Outcome::Redirect(Some(leader)) => {
                    tracing::info!(from = %target.addr, leader = %leader, "not the leader; following");
                    redirect = CoordinatorAddr::parse(&leader).ok();
                    failures = 0;
                    continue;
                }
                Outcome::Redirect(None) => tracing::info!(coordinator = %target.addr, "no leader known yet"),
                Outcome::Ended(why) => {
                    tracing::warn!(coordinator = %target.addr, "session ended: {why}");
                    suspect.insert(target.addr.clone(), Instant::now() + 2 * IDLE_TIMEOUT);
                    failures = 0;
                }
                Outcome::Failed(why) => {
                    tracing::warn!(coordinator = %target.addr, "cannot register: {why}");
                    suspect.insert(target.addr.clone(), Instant::now() + 2 * IDLE_TIMEOUT);
                }
            }
            failures += 1;
            // Back off once per round over the list, with jitter so that a
            // restarted cluster is not hit by every agent at once.
            if (failures as usize).is_multiple_of(list.len().max(1)) || list.len() == 1 {
                let exp = self.cfg.reconnect_min_ms.saturating_mul(1 << (failures / list.len().max(1) as u32).min(10));
                let cap = exp.min(self.cfg.reconnect_max_ms);
                let wait = {
                    use rand::SeedableRng;
                    rand::rngs::SmallRng::from_os_rng().random_range(cap / 2..=cap.max(1))
                };
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
        self.endpoint.close(0u32.into(), b"agent stopping");
        self.rt.shutdown().await;
        tracing::info!("agent stopped; containers keep running");
    }
}
