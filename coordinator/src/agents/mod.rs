//! The coordinator's side of the agent protocol (`zoe_common::proto`).
//!
//! Every coordinator runs an agent listener: its own QUIC endpoint with ALPN
//! `zoe-agent/1` (separate from the Raft endpoint, so agent load can never
//! delay Raft traffic). Only the leader keeps sessions: a follower answers
//! a registration with the leader's agent address, which every coordinator
//! publishes in the replicated metadata (`agents.addr.<name>`).
//!
//! On the leader, [`AgentBackend`]:
//! * registers nodes through Raft (`RegisterNode`; the name is the agent
//!   certificate's, so re-registration keeps the identity and no agent can
//!   speak for another node);
//! * keeps live stats, inventories and heartbeat times in memory (never in
//!   the Raft log) and serves Zoe's ClusterStats;
//! * implements the leader loop's [`Backend`](crate::backend::Backend) and
//!   the API's [`LiveSource`](crate::api::live::LiveSource) by sending
//!   commands over the agents' connections.
//!
//! It decides nothing: liveness, reconciliation and network pushes are the
//! leader's pass (`zoe_model::pass`), on what this back-end reports.

mod backend;
pub mod client;
pub use zoe_model::reconcile;
pub mod stats;

pub use backend::AgentLive;
pub use stats::{ClusterStats, NodeStats};

use crate::backend::BackendEvent;
use crate::raft::Coordinator;
use crate::state::{Capacity, Command, Millis, Registration};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use zoe_common::proto::{
    self, AgentEvent, AgentMessage, ClientReply, ClientRequest, ContainerInfo, LeaderMessage, LiveStats, SessionOpen,
    SessionReply,
};
use zoe_common::resources::Millicores;
use zoe_common::service::ImageSummary;
use zoe_net::frame::{read_frame, write_frame};
use zoe_net::{Role, TlsMaterial};

/// The `[agents]` section of the coordinator's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Agent listener; default: the Raft listen address with port + 1.
    pub listen: Option<SocketAddr>,
    /// Address agents are redirected to; default: `listen` (with 127.0.0.1
    /// for an unspecified IP).
    pub advertise: Option<String>,
    /// Heartbeat interval agents are told to use.
    pub heartbeat_ms: u64,
    /// A node is marked down after `ttl_ms + grace_ms` without heartbeats.
    pub ttl_ms: u64,
    pub grace_ms: u64,
    /// After an election, nodes are not judged for this long.
    pub failover_grace_ms: u64,
    /// A running container the state does not know is stopped after this.
    pub orphan_grace_ms: u64,
    /// SIGTERM → SIGKILL grace when stopping a service.
    pub stop_grace_ms: u64,
    /// Longest wait for a spawn (image pull included).
    pub spawn_timeout_ms: u64,
    /// The cluster network (`[agents.network]`: `bridge = true` gives
    /// containers their own addresses; see docs/networking.md). Applied to
    /// the replicated state while no node has registered yet.
    pub network: Option<crate::state::ClusterNetwork>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            listen: None,
            advertise: None,
            heartbeat_ms: 2_000,
            ttl_ms: 10_000,
            grace_ms: 10_000,
            failover_grace_ms: 30_000,
            orphan_grace_ms: 60_000,
            stop_grace_ms: 10_000,
            spawn_timeout_ms: 600_000,
            network: None,
        }
    }
}

impl AgentSettings {
    /// How the leader judges nodes under these settings.
    pub fn liveness(&self) -> zoe_model::pass::Liveness {
        zoe_model::pass::Liveness {
            down_after_ms: self.ttl_ms + self.grace_ms,
            failover_grace_ms: self.failover_grace_ms,
            orphan_grace_ms: self.orphan_grace_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("agent listener on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: zoe_net::NetError,
    },
    #[error(transparent)]
    Net(#[from] zoe_net::NetError),
}

pub fn meta_key(name: &str) -> String {
    format!("agents.addr.{name}")
}

/// A connected node, as the leader holds it.
struct NodeConn {
    session: u64,
    conn: quinn::Connection,
    stats: LiveStats,
    images: Vec<ImageSummary>,
    /// What a pass needs of the two above, computed when they arrive
    /// rather than at every pass: the images' canonical names, and zoe's
    /// containers the node holds.
    image_names: Arc<BTreeSet<String>>,
    zoe_containers: u32,
    addresses: Vec<String>,
    stats_at: u64,
    /// What it held at registration, and at its latest heartbeat.
    registered: Arc<Vec<ContainerInfo>>,
    inventory: Arc<Vec<ContainerInfo>>,
}

#[derive(Default)]
struct Registry {
    nodes: HashMap<String, NodeConn>,
    /// Last heartbeat or registration per node, connected or not.
    last_seen: HashMap<String, Millis>,
}

/// The leader's agent registry and the agent-protocol back-end.
pub struct AgentBackend {
    coord: Coordinator,
    settings: AgentSettings,
    endpoint: quinn::Endpoint,
    advertise: String,
    reg: Mutex<Registry>,
    events: broadcast::Sender<BackendEvent>,
    leader: watch::Receiver<bool>,
    next_command: AtomicU64,
    next_session: AtomicU64,
    /// Heartbeats ingested (benchmarks read it).
    pub heartbeats: AtomicU64,
}

fn now_ms() -> Millis {
    crate::leader::now_ms()
}

/// The canonical references a node's images go by.
fn image_names(images: &[ImageSummary]) -> BTreeSet<String> {
    images.iter().flat_map(|i| i.names.iter().cloned()).collect()
}

/// zoe's containers among those a node reports.
fn zoe_containers(stats: &LiveStats) -> u32 {
    stats.containers.iter().filter(|c| c.service_id.is_some()).count() as u32
}

impl AgentBackend {
    /// Opens the agent listener and starts the registry's tasks.
    pub async fn start(coord: Coordinator, settings: AgentSettings) -> Result<Arc<AgentBackend>, StartError> {
        let cfg = coord.config().clone();
        let tls = TlsMaterial::load(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)?;
        let listen =
            settings.listen.unwrap_or_else(|| SocketAddr::new(cfg.listen.ip(), cfg.listen.port().wrapping_add(1)));
        let mut server = tls.server_config(&[proto::ALPN])?;
        server.transport_config(agent_transport());
        let endpoint = quinn::Endpoint::server(server, listen)
            .map_err(|e| StartError::Listen { addr: listen.to_string(), source: e.into() })?;
        let local =
            endpoint.local_addr().map_err(|e| StartError::Listen { addr: listen.to_string(), source: e.into() })?;
        let advertise = settings.advertise.clone().unwrap_or_else(|| {
            let ip = if local.ip().is_unspecified() { [127, 0, 0, 1].into() } else { local.ip() };
            SocketAddr::new(ip, local.port()).to_string()
        });
        let (leader_tx, leader_rx) = watch::channel(false);
        let (events, _) = broadcast::channel(4096);
        let b = Arc::new(AgentBackend {
            coord,
            settings,
            endpoint,
            advertise,
            reg: Mutex::new(Registry::default()),
            events,
            leader: leader_rx,
            next_command: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            heartbeats: AtomicU64::new(0),
        });
        tracing::info!(listen = %local, advertise = %b.advertise, "agent listener started");
        tokio::spawn(b.clone().watch_leadership(leader_tx));
        tokio::spawn(b.clone().publish_address());
        tokio::spawn(b.clone().accept_loop());
        Ok(b)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    /// Number of connected agents.
    pub fn connected(&self) -> usize {
        self.reg.lock().expect("lock").nodes.len()
    }

    pub async fn shutdown(&self) {
        self.endpoint.close(0u32.into(), b"coordinator stopping");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// Keeps the registry in step with leadership: a deposed leader forgets
    /// its sessions.
    async fn watch_leadership(self: Arc<Self>, tx: watch::Sender<bool>) {
        let mut m = self.coord.leadership();
        loop {
            let leader = m.borrow_and_update().term.is_some();
            let changed = tx.send_if_modified(|l| {
                let c = *l != leader;
                *l = leader;
                c
            });
            if changed {
                if leader {
                    tracing::info!("leader: accepting agents");
                } else {
                    self.reg.lock().expect("lock").nodes.clear();
                }
            }
            if m.changed().await.is_err() {
                return;
            }
        }
    }

    /// Writes this coordinator's agent address into the replicated
    /// metadata, so followers can redirect agents to whichever is leader.
    async fn publish_address(self: Arc<Self>) {
        let key = meta_key(&self.coord.config().name);
        loop {
            let current = self.coord.read_local(|st| st.meta.get(&key).cloned()).0;
            if current.as_deref() == Some(self.advertise.as_str()) {
                return;
            }
            match self.coord.write(Command::SetMeta { key: key.clone(), value: self.advertise.clone() }).await {
                Ok(_) => {}
                Err(e) => tracing::debug!("publishing the agent address: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The leader's agent address as `name@host:port`, if known.
    fn leader_address(&self) -> Option<String> {
        let name = self.coord.leader_node()?.1.name;
        let addr = self.coord.read_local(|st| st.meta.get(&meta_key(&name)).cloned()).0?;
        Some(format!("{name}@{addr}"))
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("agent handshake failed: {e}");
                        return;
                    }
                };
                let peer = match zoe_net::require_role(&conn, &[Role::Agent, Role::Client]) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(remote = %conn.remote_address(), "refused on the agent listener: {e}");
                        return;
                    }
                };
                match peer.role {
                    Role::Agent => me.serve_agent(conn, peer.name).await,
                    _ => me.serve_client(conn).await,
                }
            });
        }
    }

    async fn serve_client(self: Arc<Self>, conn: quinn::Connection) {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let me = self.clone();
            tokio::spawn(async move {
                let _ = zoe_net::rpc::serve_stream(send, recv, proto::MAX_FRAME, |req: ClientRequest| {
                    let me = me.clone();
                    async move {
                        match req {
                            ClientRequest::ClusterStats if me.is_leader() => match me.cluster_stats() {
                                Some(s) => {
                                    ClientReply::ClusterStats { json: serde_json::to_string(&s).unwrap_or_default() }
                                }
                                None => ClientReply::NotLeader { leader: me.leader_address() },
                            },
                            ClientRequest::ClusterStats => ClientReply::NotLeader { leader: me.leader_address() },
                        }
                    }
                })
                .await;
            });
        }
    }

    async fn serve_agent(self: Arc<Self>, conn: quinn::Connection, name: String) {
        let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi()).await else {
            return;
        };
        let open: SessionOpen = match read_frame(&mut recv, proto::MAX_FRAME).await {
            Ok(Some(o)) => o,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(node = %name, "malformed registration: {e}");
                let _ = recv.stop(zoe_net::rpc::STREAM_BAD_FRAME.into());
                return;
            }
        };
        if !self.is_leader() {
            let _ =
                write_frame(&mut send, &SessionReply::NotLeader { leader: self.leader_address() }, proto::MAX_FRAME)
                    .await;
            let _ = send.finish();
            // Let the answer reach the agent before the connection goes.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            return;
        }
        // Heard from now: a pass that follows the registration's commit
        // must not judge the node on its silence before it.
        self.reg.lock().expect("lock").last_seen.insert(name.clone(), now_ms());
        // Subnets are handed out at first registration: the configured
        // network must be in place before.
        self.ensure_configured_network().await;
        let r = &open.registration;
        let registration = Registration {
            // The certificate's name, never anything the agent sent.
            name: name.clone(),
            addresses: r.addresses.clone(),
            capacity: Capacity { cores: Millicores(r.cores_millis), memory: r.memory_bytes },
            labels: r.labels.clone(),
            host_volumes: r.host_volumes.iter().map(|v| (v.name.clone(), v.clone())).collect(),
            containerd_version: r.containerd_version.clone(),
            cgroup_mode: r.cgroup_mode.clone(),
            images: image_names(&r.images),
        };
        match self.coord.write(Command::RegisterNode { registration, time: now_ms() }).await {
            Ok(w) if w.result.is_ok() => {}
            Ok(w) => {
                let reason = format!("{:?}", w.result.err());
                let _ = write_frame(&mut send, &SessionReply::Refused { reason }, proto::MAX_FRAME).await;
                return;
            }
            Err(e) => {
                // Lost leadership mid-way, most likely: let the agent retry.
                let leader = self.leader_address();
                tracing::info!(node = %name, "registration not committed: {e}");
                let _ = write_frame(&mut send, &SessionReply::NotLeader { leader }, proto::MAX_FRAME).await;
                let _ = send.finish();
                return;
            }
        }
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        {
            let mut reg = self.reg.lock().expect("lock");
            let old = reg.nodes.insert(
                name.clone(),
                NodeConn {
                    session,
                    conn: conn.clone(),
                    stats: open.stats.clone(),
                    images: r.images.clone(),
                    image_names: Arc::new(image_names(&r.images)),
                    zoe_containers: zoe_containers(&open.stats),
                    addresses: r.addresses.clone(),
                    stats_at: now_ms(),
                    registered: Arc::new(r.containers.clone()),
                    inventory: Arc::new(open.stats.containers.clone()),
                },
            );
            if let Some(old) = old {
                old.conn.close(0u32.into(), b"replaced by a new session");
            }
            reg.last_seen.insert(name.clone(), now_ms());
        }
        tracing::info!(node = %name, containers = r.containers.len(), "agent registered");
        let _ = self.events.send(BackendEvent::NodeRegistered { node: name.clone() });
        let accepted = SessionReply::Accepted { node: name.clone(), heartbeat_ms: self.settings.heartbeat_ms };
        if write_frame(&mut send, &accepted, proto::MAX_FRAME).await.is_err() {
            self.disconnected(&name, session);
            return;
        }
        let mut leader = self.leader.clone();
        loop {
            tokio::select! {
                m = read_frame::<_, AgentMessage>(&mut recv, proto::MAX_FRAME) => match m {
                    Ok(Some(AgentMessage::Heartbeat { seq, stats })) => {
                        self.heartbeats.fetch_add(1, Ordering::Relaxed);
                        {
                            let mut reg = self.reg.lock().expect("lock");
                            reg.last_seen.insert(name.clone(), now_ms());
                            if let Some(n) = reg.nodes.get_mut(&name).filter(|n| n.session == session) {
                                if let Some(images) = &stats.images {
                                    n.images = images.clone();
                                    n.image_names = Arc::new(image_names(images));
                                }
                                n.zoe_containers = zoe_containers(&stats);
                                n.inventory = Arc::new(stats.containers.clone());
                                n.stats = stats;
                                n.stats_at = now_ms();
                            }
                        }
                        if write_frame(&mut send, &LeaderMessage::HeartbeatAck { seq }, proto::MAX_FRAME).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(AgentMessage::Event(ev))) => self.on_event(&name, ev),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(node = %name, "session ended: {e}");
                        let _ = recv.stop(zoe_net::rpc::STREAM_BAD_FRAME.into());
                        break;
                    }
                },
                r = leader.changed() => {
                    if r.is_err() || !*leader.borrow() {
                        let msg = LeaderMessage::NotLeader { leader: self.leader_address() };
                        let _ = write_frame(&mut send, &msg, proto::MAX_FRAME).await;
                        let _ = send.finish();
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
                        break;
                    }
                }
            }
        }
        self.disconnected(&name, session);
        conn.close(0u32.into(), b"session over");
    }

    /// Applies the configured `[agents.network]` to the replicated state
    /// while no node has registered (afterwards subnets are fixed).
    async fn ensure_configured_network(&self) {
        let Some(want) = self.settings.network.clone() else { return };
        let (current, fresh) = self.coord.read_local(|st| (st.network.clone(), st.nodes.is_empty())).0;
        if current == want {
            return;
        }
        if !fresh {
            tracing::warn!(
                configured = ?want, replicated = ?current,
                "[agents.network] differs from the cluster's network, which cannot change once nodes registered"
            );
            return;
        }
        match self.coord.write(Command::SetClusterNetwork { network: want }).await {
            Ok(w) if w.result.is_ok() => tracing::info!("cluster network set from the configuration"),
            Ok(w) => tracing::warn!("setting the cluster network: {:?}", w.result.err()),
            Err(e) => tracing::warn!("setting the cluster network: {e}"),
        }
    }

    fn disconnected(&self, name: &str, session: u64) {
        let mut reg = self.reg.lock().expect("lock");
        if reg.nodes.get(name).is_some_and(|n| n.session == session) {
            reg.nodes.remove(name);
            tracing::info!(node = %name, "agent disconnected");
        }
    }

    fn on_event(&self, node: &str, ev: AgentEvent) {
        match ev {
            AgentEvent::Exited { service_id, container_id, exit_code, oom_killed, reason, time_ms } => {
                // An agent speaks for its own node only: an exit of a
                // service placed elsewhere (a confused or hostile agent,
                // container ids being guessable) is dropped. (One the state
                // does not know is refused where it is applied.)
                let (placed, _) = self.coord.read_local(|s| s.services.get(&service_id).map(|x| x.node.clone()));
                if let Some(placed) = placed
                    && placed.as_deref() != Some(node)
                {
                    tracing::warn!(
                        node,
                        service = service_id,
                        ?placed,
                        "refused an exit report for a service placed elsewhere"
                    );
                    return;
                }
                tracing::info!(node, service = service_id, container = %container_id, ?exit_code, oom_killed, "container exited");
                let _ = self.events.send(BackendEvent::Exited {
                    service: service_id,
                    container_id,
                    exit_code,
                    oom_killed,
                    reason,
                    time: time_ms,
                });
            }
            AgentEvent::ImageProgress(p) => tracing::debug!(node, image = %p.image, p.done, p.total, "image progress"),
        }
    }

    /// Zoe's ClusterStats: `None` when this coordinator is not the leader.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        if !self.is_leader() {
            return None;
        }
        let reg = self.reg.lock().expect("lock");
        let live: BTreeMap<String, stats::ReportView<'_>> = reg
            .nodes
            .iter()
            .map(|(k, n)| {
                (
                    k.clone(),
                    stats::ReportView { connected: true, stats: &n.stats, images: &n.images, timestamp: n.stats_at },
                )
            })
            .collect();
        Some(self.coord.read_local(|st| stats::cluster_stats(st, &live)).0)
    }

    /// Copies of what each connected node last reported (for the API's
    /// statistics): `None` when this coordinator is not the leader.
    pub fn live_reports(&self) -> Option<BTreeMap<String, stats::NodeReport>> {
        if !self.is_leader() {
            return None;
        }
        let reg = self.reg.lock().expect("lock");
        Some(
            reg.nodes
                .iter()
                .map(|(k, n)| {
                    let r =
                        stats::NodeReport { stats: n.stats.clone(), images: n.images.clone(), timestamp: n.stats_at };
                    (k.clone(), r)
                })
                .collect(),
        )
    }

    fn connection(&self, node: &str) -> Option<(quinn::Connection, Vec<String>)> {
        self.reg.lock().expect("lock").nodes.get(node).map(|n| (n.conn.clone(), n.addresses.clone()))
    }
}

/// Keep-alive and idle timeout of agent connections: short, so that an
/// agent notices a dead leader (kill -9 sends nothing) within seconds.
pub fn agent_transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    t.max_idle_timeout(Some(Duration::from_millis(2_500).try_into().expect("fits a VarInt")));
    t.max_concurrent_bidi_streams(1024u32.into());
    Arc::new(t)
}

#[cfg(test)]
mod tests;
