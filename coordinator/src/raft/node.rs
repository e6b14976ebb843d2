//! One running coordinator: Raft, storage, the QUIC server, and the API the
//! rest of the coordinator uses (write, reads, admin, status).
//!
//! ```ignore
//! let c = Coordinator::start(CoordinatorConfig::load(path)?).await?;
//! let w = c.write(Command::SetMeta { key: "a".into(), value: "1".into() }).await?;
//! let (v, _) = c.read_linearizable(|s| s.meta.get("a").cloned()).await?;
//! let (v, staleness) = c.read_local(|s| s.meta.get("a").cloned());
//! c.shutdown().await;
//! ```

use super::network::{ApiError, MAX_FRAME, Network, PeerPool, ReadReply, Request, Response, Status, WriteReply};
use super::store::{Durable, LogStore, MAX_COMMAND_BYTES, SmData, StateMachineStore, open_db};
use super::{CommandResult, CoordNode, NodeId, Raft, codec};
use crate::config::CoordinatorConfig;
use crate::state::{Command, State};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::time::timeout_at;
use zoe_net::{Identity, Role, TlsMaterial};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS: {0}")]
    Tls(#[from] zoe_net::NetError),
    #[error("{0}")]
    Identity(String),
    #[error("data dir {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage: {0}")]
    Storage(#[from] openraft::StorageError<NodeId>),
    #[error("raft config: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: zoe_net::NetError,
    },
}

/// How fresh a local read is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staleness {
    /// Last log index applied to the state that was read.
    pub applied_index: Option<u64>,
    pub leader: Option<NodeId>,
    pub is_leader: bool,
    /// Follower: ms since the leader was last heard from. Leader: ms since a
    /// quorum last acknowledged it. `None`: never.
    pub last_contact_ms: Option<u64>,
}

/// A committed write: the index of the log entry that carried it (shared
/// by the writes batched with it) and what applying it returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub index: u64,
    pub result: CommandResult,
}

const NEVER: u64 = u64::MAX;

struct Inner {
    /// Who leads; changes with leadership only (see [`Leadership`]).
    leadership: tokio::sync::watch::Sender<Leadership>,
    /// The index this replica last applied.
    applied: tokio::sync::watch::Sender<u64>,
    id: NodeId,
    config: CoordinatorConfig,
    raft: Raft,
    sm: StateMachineStore,
    sm_data: Arc<RwLock<SmData>>,
    committed: Arc<AtomicU64>,
    log_stats: Arc<super::store::LogStats>,
    pool: Arc<PeerPool>,
    endpoint: quinn::Endpoint,
    durable: Durable,
    started: Instant,
    /// ms after `started` when an AppendEntries last arrived.
    last_append_ms: AtomicU64,
    /// ms after `started` when this member last stood (pre-vote).
    stood_ms: AtomicU64,
    /// The Raft log, for its last entry's id (pre-votes compare logs).
    log: LogStore,
    closing: AtomicBool,
    inflight: AtomicUsize,
    proposer: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// Serves relayed streams; set once the parts that answer them exist.
    relay: std::sync::OnceLock<Arc<dyn RelayHandler>>,
}

/// A relayed stream to the leader, as [`Coordinator::open_relay`] opened it.
pub struct RelayStream {
    /// The leader it reached: when it stops leading the stream is moot.
    pub leader: NodeId,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
}

/// Serves a stream another coordinator opened with [`Request::Relay`]: the
/// raft layer carries the bytes and checks the peer is a coordinator, the
/// handler (the live routes, outside this module) gives them meaning.
pub trait RelayHandler: Send + Sync + 'static {
    fn serve(
        &self,
        open: Vec<u8>,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> futures::future::BoxFuture<'static, ()>;
}

/// Who leads, as one coordinator sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The term, while this coordinator is the leader.
    pub term: Option<u64>,
    /// The leader's id, if known (this one's included).
    pub leader: Option<NodeId>,
}

/// A running coordinator. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

/// A write waiting for the proposer.
struct Pending {
    cmd: Command,
    size: usize,
    tx: tokio::sync::oneshot::Sender<Result<Written, ApiError>>,
}

/// Proposals in flight at once. While they are, new writes queue and form
/// the next (larger) batch: see [`super::Proposal`].
const PROPOSALS_IN_FLIGHT: usize = 2;

/// Turns queued writes into [`super::Proposal`]s of at most
/// `MAX_COMMAND_BYTES` (or one command).
async fn proposer(raft: Raft, mut rx: tokio::sync::mpsc::UnboundedReceiver<Pending>, timeout: Duration) {
    let slots = Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT));
    let mut next: Option<Pending> = None;
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while let Ok(p) = rx.try_recv() {
            if bytes + p.size > MAX_COMMAND_BYTES {
                next = Some(p);
                break;
            }
            bytes += p.size;
            batch.push(p);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (cmds, txs): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
            let r = tokio::time::timeout(timeout, raft.client_write(super::Proposal { commands: cmds })).await;
            let err = match r {
                Ok(Ok(resp)) => {
                    let index = resp.log_id.index;
                    for (tx, result) in txs.into_iter().zip(resp.data) {
                        let _ = tx.send(Ok(Written { index, result }));
                    }
                    return;
                }
                Err(_) => ApiError::Timeout,
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => ApiError::NotLeader(f.leader_id),
                Ok(Err(RaftError::APIError(e))) => ApiError::Raft(e.to_string()),
                Ok(Err(RaftError::Fatal(_))) => ApiError::ShuttingDown,
            };
            for tx in txs {
                let _ = tx.send(Err(err.clone()));
            }
        });
    }
}

struct InflightGuard<'a>(&'a AtomicUsize);
impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Coordinator {
    /// Opens storage, starts Raft and the QUIC server, and (first start of
    /// an empty cluster, lowest id only) bootstraps the initial membership.
    pub async fn start(config: CoordinatorConfig) -> Result<Coordinator, StartError> {
        let tls = TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
        let me = tls.identity();
        if me.role != Role::Coordinator || me.name != config.name {
            return Err(StartError::Identity(format!(
                "certificate {} is for {me}, but this is coordinator {}",
                config.tls.cert.display(),
                config.name
            )));
        }
        // The data dir holds the whole state (password hashes, token
        // hashes): the coordinator's alone, whatever the umask said.
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&config.data_dir)
            .and_then(|()| std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
        let db = open_db(&config.data_dir)?;
        let durable = Durable::open(&db, &config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
        let log = LogStore::open(&db, durable.clone())?;
        let log_handle = log.clone();
        let committed = log.committed_handle();
        let log_stats = log.stats();
        let sm = StateMachineStore::open(&config.data_dir)?;
        let sm_data = sm.data();

        let endpoint = tls
            .endpoint(config.listen, &[super::network::ALPN])
            .map_err(|source| StartError::Listen { addr: config.listen.to_string(), source })?;
        let pool = Arc::new(PeerPool::new(endpoint.clone()));

        let t = &config.raft;
        let raft_config = openraft::Config {
            cluster_name: "zoe".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_timeout_min_ms,
            election_timeout_max: t.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every_logs),
            max_in_snapshot_log_to_keep: t.trailing_logs,
            snapshot_max_chunk_size: t.snapshot_chunk_bytes,
            max_payload_entries: 1024,
            install_snapshot_timeout: 2_000,
            // Elections are ours: they start with a pre-vote (raft/election.rs).
            enable_elect: false,
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::new(config.id, Arc::new(raft_config), Network { pool: pool.clone() }, log, sm.clone()).await?;

        let (proposer_tx, proposer_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(proposer(raft.clone(), proposer_rx, Duration::from_millis(config.raft.write_timeout_ms)));
        let inner = Arc::new(Inner {
            leadership: tokio::sync::watch::Sender::new(Leadership::default()),
            applied: tokio::sync::watch::Sender::new(0),
            id: config.id,
            config,
            raft,
            sm,
            sm_data,
            committed,
            log_stats,
            pool,
            endpoint: endpoint.clone(),
            durable,
            started: Instant::now(),
            last_append_ms: AtomicU64::new(NEVER),
            stood_ms: AtomicU64::new(0),
            log: log_handle,
            closing: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            proposer: proposer_tx,
            relay: std::sync::OnceLock::new(),
        });
        let c = Coordinator { inner };
        tracing::info!(id = c.id(), listen = %c.inner.config.listen, "coordinator started");
        tokio::spawn(c.clone().watch_metrics());
        tokio::spawn(c.clone().accept_loop());
        tokio::spawn(c.clone().bootstrap());
        tokio::spawn(c.clone().elections());
        Ok(c)
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    /// The underlying openraft handle, for this module only: the rest of
    /// the coordinator sees leadership and the applied index through
    /// [`Coordinator::leadership`] and [`Coordinator::applied`].
    pub(crate) fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Who leads, as this coordinator sees it. openraft's metrics change on
    /// every commit and heartbeat; this changes only with leadership, so
    /// thousands of waiters (agent sessions, the leader loop) wake for
    /// what concerns them.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.inner.leadership.subscribe()
    }

    /// The index this replica last applied; changes with every apply.
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.applied.subscribe()
    }

    /// The leader's id and address, if one is known.
    pub fn leader_node(&self) -> Option<(NodeId, CoordNode)> {
        let id = self.inner.leadership.borrow().leader?;
        Some((id, self.node_of(id)?))
    }

    /// Turns openraft's metrics into the two watches above.
    async fn watch_metrics(self) {
        let mut m = self.inner.raft.metrics();
        loop {
            let (leadership, applied) = {
                let v = m.borrow_and_update();
                let leads = v.state == ServerState::Leader && v.current_leader == Some(self.id());
                let l = Leadership { term: leads.then_some(v.current_term), leader: v.current_leader };
                (l, v.last_applied.map(|l| l.index).unwrap_or(0))
            };
            self.inner.leadership.send_if_modified(|cur| {
                let changed = *cur != leadership;
                *cur = leadership;
                changed
            });
            self.inner.applied.send_if_modified(|cur| {
                let changed = *cur != applied;
                *cur = applied;
                changed
            });
            if m.changed().await.is_err() {
                return;
            }
        }
    }

    // ------------------------------------------------------------ bootstrap

    /// Initializes the cluster exactly once: only the lowest id of the
    /// configured peers does it, only while its own log is empty, and not
    /// if any peer already belongs to an initialized cluster (so a wiped
    /// lowest-id node does not found a second cluster).
    async fn bootstrap(self) {
        let cfg = &self.inner.config;
        let Some(lowest) = cfg.peers.iter().map(|p| p.id).min() else { return };
        if lowest != cfg.id {
            return;
        }
        match self.inner.raft.is_initialized().await {
            Ok(false) => {}
            _ => return,
        }
        let others: Vec<_> = cfg.peers.iter().filter(|p| p.id != cfg.id).collect();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut answered = 0;
            for p in &others {
                let node = CoordNode { addr: p.addr.clone(), name: p.name.clone() };
                if let Ok(Response::Status(s)) =
                    self.inner.pool.call(p.id, &node, &Request::Status, Duration::from_millis(500)).await
                {
                    if s.initialized {
                        tracing::info!(peer = p.id, "peer already belongs to a cluster; not bootstrapping");
                        return;
                    }
                    answered += 1;
                }
            }
            if answered == others.len() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let members: BTreeMap<NodeId, CoordNode> =
            cfg.peers.iter().map(|p| (p.id, CoordNode { addr: p.addr.clone(), name: p.name.clone() })).collect();
        match self.inner.raft.initialize(members).await {
            Ok(()) => tracing::info!("cluster bootstrapped"),
            Err(e) => tracing::info!("bootstrap skipped: {e}"),
        }
    }

    // --------------------------------------------------------------- server

    async fn accept_loop(self) {
        while let Some(incoming) = self.inner.endpoint.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("handshake failed: {e}");
                        return;
                    }
                };
                let peer = match zoe_net::require_role(&conn, &[Role::Coordinator, Role::Client]) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(remote = %conn.remote_address(), "refused connection: {e}");
                        return;
                    }
                };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let me = me.clone();
                    let peer = peer.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.serve_stream(send, recv, peer.clone()).await {
                            tracing::debug!(%peer, "stream ended: {e}");
                        }
                    });
                }
            });
        }
    }

    /// One incoming stream: requests and answers, unless its first frame
    /// opens a relayed stream, which then belongs to the relay handler.
    async fn serve_stream(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        peer: Identity,
    ) -> Result<(), zoe_net::NetError> {
        use zoe_net::frame::{read_frame, write_frame};
        let first = match read_frame::<_, Request>(&mut recv, MAX_FRAME).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = recv.stop(zoe_net::rpc::STREAM_BAD_FRAME.into());
                let _ = send.reset(zoe_net::rpc::STREAM_BAD_FRAME.into());
                return Err(e.into());
            }
        };
        let resp = match first {
            Request::Relay(open) if peer.role == Role::Coordinator => match self.inner.relay.get() {
                Some(h) => {
                    h.serve(open, send, recv).await;
                    return Ok(());
                }
                None => Response::Forbidden("this coordinator serves no relayed streams yet".into()),
            },
            Request::Relay(_) => Response::Forbidden(format!("{peer} may not open relayed streams")),
            other => self.handle(other, &peer).await,
        };
        write_frame(&mut send, &resp, MAX_FRAME).await?;
        zoe_net::rpc::serve_stream(send, recv, MAX_FRAME, |req: Request| {
            let me = self.clone();
            let peer = peer.clone();
            async move { me.handle(req, &peer).await }
        })
        .await
    }

    async fn handle(&self, req: Request, peer: &Identity) -> Response {
        let raft = &self.inner.raft;
        let coordinator = peer.role == Role::Coordinator;
        match req {
            Request::AppendEntries(w) if coordinator => {
                self.inner.last_append_ms.store(self.inner.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let entries = match w.entries.into_iter().map(|e| e.into_entry()).collect::<Result<Vec<_>, _>>() {
                    Ok(e) => e,
                    Err(e) => return Response::Forbidden(format!("undecodable entry: {e}")),
                };
                let rpc = openraft::raft::AppendEntriesRequest {
                    vote: w.vote,
                    prev_log_id: w.prev_log_id,
                    leader_commit: w.leader_commit,
                    entries,
                };
                Response::AppendEntries(raft.append_entries(rpc).await)
            }
            Request::Vote(v) if coordinator => Response::Vote(raft.vote(v).await),
            Request::InstallSnapshot(s) if coordinator => {
                self.inner.last_append_ms.store(self.inner.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                Response::InstallSnapshot(raft.install_snapshot(s).await)
            }
            Request::ReadIndex if coordinator => Response::ReadIndex(self.leader_read_index().await),
            Request::PreVote { last_log_id } if coordinator => {
                Response::PreVote(self.answer_pre_vote(last_log_id).await)
            }
            Request::AppendEntries(_)
            | Request::Vote(_)
            | Request::InstallSnapshot(_)
            | Request::ReadIndex
            | Request::PreVote { .. } => Response::Forbidden(format!("{peer} may not send Raft messages")),
            Request::Write { command, forwarded } => {
                let cmd: Command = match codec::unjson(&command) {
                    Ok(c) => c,
                    Err(e) => return Response::Write(Err(ApiError::Invalid(format!("command: {e}")))),
                };
                let r = if forwarded { self.write_as_leader(cmd).await } else { self.write(cmd).await };
                Response::Write(r.and_then(|w| {
                    Ok(WriteReply { index: w.index, result: codec::json(&w.result).map_err(ApiError::from)? })
                }))
            }
            Request::Read { linearizable } => {
                let r = if linearizable {
                    self.read_linearizable(codec::json).await
                } else {
                    Ok(self.read_local(codec::json))
                };
                Response::Read(
                    r.and_then(|(state, staleness)| Ok(ReadReply { state: state.map_err(ApiError::from)?, staleness })),
                )
            }
            Request::Status => Response::Status(Box::new(self.status().await)),
            Request::AddMember { id, node } => Response::Admin(self.add_member(id, node).await),
            Request::RemoveMember { id } => Response::Admin(self.remove_member(id).await),
            Request::TakeOver { term } if coordinator => Response::Admin(self.take_over(term, peer).await),
            Request::TakeOver { .. } => Response::Forbidden(format!("{peer} may not ask for elections")),
            // Taken by `serve_stream` when it opens a stream; later it is
            // a misuse.
            Request::Relay(_) => Response::Forbidden("a relayed stream is opened by its first frame".into()),
        }
    }

    // ---------------------------------------------------------------- relay

    /// Installs what serves relayed streams (once; later calls are ignored).
    pub fn set_relay(&self, handler: Arc<dyn RelayHandler>) {
        let _ = self.inner.relay.set(handler);
    }

    /// Opens a relayed stream to the leader and sends `open` on it. `Err`
    /// when no leader is known within `within`, this member leads itself
    /// (nothing to relay), or the leader cannot be reached.
    pub async fn open_relay(&self, open: Vec<u8>, within: Duration) -> Result<RelayStream, ApiError> {
        let deadline = Instant::now() + within;
        let leader = self.wait_leader(deadline).await?;
        if leader == self.id() {
            return Err(ApiError::NotLeader(Some(leader)));
        }
        let node = self.node_of(leader).ok_or(ApiError::NoLeader)?;
        let ttl = deadline.saturating_duration_since(Instant::now());
        let (mut send, recv) =
            self.inner.pool.open(leader, &node, ttl).await.map_err(|e| ApiError::LeaderUnreachable(e.to_string()))?;
        zoe_net::frame::write_frame(&mut send, &Request::Relay(open), MAX_FRAME)
            .await
            .map_err(|e| ApiError::LeaderUnreachable(e.to_string()))?;
        Ok(RelayStream { leader, send, recv })
    }

    /// Resolves once `leader` is no longer the leader this member knows
    /// (or this member stops). A call waiting on a deposed or dead leader
    /// gives up at once instead of at the connection's idle timeout.
    pub fn leader_moved(&self, leader: NodeId) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.raft.metrics();
        async move {
            loop {
                if rx.borrow_and_update().current_leader != Some(leader) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    // ---------------------------------------------------------------- writes

    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.inner.config.raft.write_timeout_ms)
    }

    /// Waits (until `deadline`) for a known leader.
    async fn wait_leader(&self, deadline: Instant) -> Result<NodeId, ApiError> {
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Some(l) = rx.borrow_and_update().current_leader {
                return Ok(l);
            }
            match timeout_at(deadline.into(), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ApiError::ShuttingDown),
                Err(_) => return Err(ApiError::NoLeader),
            }
        }
    }

    pub(super) fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    pub(super) fn pool(&self) -> &PeerPool {
        &self.inner.pool
    }

    /// ms without a leader's AppendEntries (or since start), counted from
    /// this member's last pre-vote at the latest.
    pub(super) fn silence_ms(&self) -> u64 {
        let now = self.inner.started.elapsed().as_millis() as u64;
        let heard = match self.inner.last_append_ms.load(Ordering::Relaxed) {
            NEVER => 0,
            t => t,
        };
        now.saturating_sub(heard.max(self.inner.stood_ms.load(Ordering::Relaxed)))
    }

    /// ms without a leader's AppendEntries (or since start), whatever this
    /// member did meanwhile: what a voter judges a pre-vote by (its own
    /// recent candidacy must not make it refuse another's, or two members
    /// standing in turn refuse each other for ever).
    pub(super) fn leader_silence_ms(&self) -> u64 {
        self.ms_since_append().unwrap_or_else(|| self.inner.started.elapsed().as_millis() as u64)
    }

    /// When this member last heard a leader, in ms after its start.
    pub(super) fn last_heard_ms(&self) -> u64 {
        self.inner.last_append_ms.load(Ordering::Relaxed)
    }

    pub(super) fn reset_silence(&self) {
        self.inner.stood_ms.store(self.inner.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The id of the last entry of this member's log.
    pub(super) async fn last_log_id(&self) -> Option<super::LogId> {
        use openraft::storage::RaftLogStorage;
        let mut log = self.inner.log.clone();
        log.get_log_state().await.ok().and_then(|s| s.last_log_id)
    }

    pub(super) fn node_of(&self, id: NodeId) -> Option<CoordNode> {
        self.inner.raft.metrics().borrow().membership_config.membership().get_node(&id).cloned()
    }

    /// Commits `cmd` through Raft and returns the leader's result of
    /// applying it. Works on any member: a follower forwards to the leader.
    ///
    /// An `Err` is either retryable (see [`ApiError::is_retryable`]: the
    /// command was certainly not applied) or of unknown outcome (timeout,
    /// leader lost mid-request): the command may have been applied.
    pub async fn write(&self, cmd: Command) -> Result<Written, ApiError> {
        let deadline = self.deadline();
        loop {
            if self.inner.closing.load(Ordering::SeqCst) {
                return Err(ApiError::ShuttingDown);
            }
            let leader = self.wait_leader(deadline).await?;
            let r = if leader == self.id() {
                self.write_as_leader(cmd.clone()).await
            } else {
                let r = self.forward_write(leader, &cmd, deadline).await;
                if let Ok(w) = &r {
                    // Read-your-writes on this member: a client that
                    // submits here and reads here at once finds what it
                    // wrote (a follower applies a commit a little after the
                    // leader). Past the deadline the write stands anyway.
                    let _ = self.wait_applied(w.index, deadline, "own write").await;
                }
                r
            };
            match r {
                Err(e @ (ApiError::NotLeader(_) | ApiError::NoLeader | ApiError::LeaderUnreachable(_))) => {
                    // Leadership moved, or the leader died, before the
                    // command was sent: safe to try again until a leader
                    // (perhaps a new one) takes it. A dead leader is retried
                    // at a slower pace while followers elect its successor.
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    let pause = if matches!(e, ApiError::LeaderUnreachable(_)) { 50 } else { 10 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }

    /// The term this coordinator leads in, if it leads.
    pub fn leader_term(&self) -> Option<u64> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(self.id())).then_some(m.current_term)
    }

    /// Commits `cmd` only while this coordinator still leads in `term`,
    /// and never forwards: what the leader concluded in one term (from
    /// agents' answers, from its view of the state) must not reach the log
    /// through the next leader after this one was deposed. A refusal is
    /// `NotLeader` (certainly not applied).
    pub async fn write_in_term(&self, term: u64, cmd: Command) -> Result<Written, ApiError> {
        if self.leader_term() != Some(term) {
            return Err(ApiError::NotLeader(self.inner.raft.metrics().borrow().current_leader));
        }
        self.write_as_leader(cmd).await
    }

    /// Proposes on this node, which must be the leader.
    async fn write_as_leader(&self, cmd: Command) -> Result<Written, ApiError> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::SeqCst) {
            return Err(ApiError::ShuttingDown);
        }
        // Keeps every log value below sled's blob threshold (see store.rs).
        let size = codec::json(&cmd).map_err(ApiError::from)?.len();
        if size > MAX_COMMAND_BYTES {
            return Err(ApiError::Invalid(format!("command of {size} bytes exceeds {MAX_COMMAND_BYTES}")));
        }
        inner.inflight.fetch_add(1, Ordering::SeqCst);
        let _guard = InflightGuard(&inner.inflight);
        let (tx, rx) = tokio::sync::oneshot::channel();
        inner.proposer.send(Pending { cmd, size, tx }).map_err(|_| ApiError::ShuttingDown)?;
        rx.await.map_err(|_| ApiError::ShuttingDown)?
    }

    async fn forward_write(&self, leader: NodeId, cmd: &Command, deadline: Instant) -> Result<Written, ApiError> {
        let node = self.node_of(leader).ok_or(ApiError::NoLeader)?;
        let command = codec::json(cmd).map_err(ApiError::from)?;
        let req = Request::Write { command, forwarded: true };
        let ttl = deadline.saturating_duration_since(Instant::now());
        let call = self.inner.pool.call(leader, &node, &req, ttl);
        // If leadership moves while we wait, stop waiting on the old leader.
        let changed = self.leader_moved(leader);
        tokio::select! {
            r = call => match r {
                Ok(Response::Write(Ok(w))) => Ok(Written { index: w.index, result: w.result()? }),
                Ok(Response::Write(Err(e))) => Err(e),
                Ok(other) => Err(ApiError::Internal(format!("unexpected answer {other:?}"))),
                Err(zoe_net::NetError::Timeout) => Err(ApiError::Timeout),
                Err(zoe_net::NetError::NotConnected(m)) => Err(ApiError::LeaderUnreachable(m)),
                Err(e) => Err(ApiError::Unreachable(e.to_string())),
            },
            _ = changed => Err(ApiError::Unreachable(format!("leader {leader} lost while forwarding; outcome unknown"))),
        }
    }

    // ----------------------------------------------------------------- reads

    /// Reads the applied state on this node without any coordination. The
    /// [`Staleness`] says how far behind it may be.
    pub fn read_local<T>(&self, f: impl FnOnce(&State) -> T) -> (T, Staleness) {
        let (v, applied) = {
            let d = self.inner.sm_data.read().expect("state machine lock");
            (f(&d.state), d.last_applied.map(|l| l.index))
        };
        let m = self.inner.raft.metrics().borrow().clone();
        let is_leader = m.state == ServerState::Leader;
        let last_contact_ms = if is_leader { m.millis_since_quorum_ack } else { self.ms_since_append() };
        (v, Staleness { applied_index: applied, leader: m.current_leader, is_leader, last_contact_ms })
    }

    fn ms_since_append(&self) -> Option<u64> {
        match self.inner.last_append_ms.load(Ordering::Relaxed) {
            NEVER => None,
            t => Some((self.inner.started.elapsed().as_millis() as u64).saturating_sub(t)),
        }
    }

    /// A linearizable read: the leader confirms with a quorum that it still
    /// leads, and this node waits until it has applied at least the
    /// leader's commit index at that moment before reading.
    pub async fn read_linearizable<T>(&self, f: impl FnOnce(&State) -> T) -> Result<(T, Staleness), ApiError> {
        let deadline = self.deadline();
        let index = loop {
            let leader = self.wait_leader(deadline).await?;
            let r = if leader == self.id() {
                self.leader_read_index().await
            } else {
                let node = self.node_of(leader).ok_or(ApiError::NoLeader)?;
                let ttl = deadline.saturating_duration_since(Instant::now());
                match self.inner.pool.call(leader, &node, &Request::ReadIndex, ttl).await {
                    Ok(Response::ReadIndex(r)) => r,
                    Ok(other) => Err(ApiError::Internal(format!("unexpected answer {other:?}"))),
                    Err(e) => Err(ApiError::Unreachable(e.to_string())),
                }
            };
            match r {
                Ok(i) => break i,
                Err(e) if e.is_retryable() || matches!(e, ApiError::Unreachable(_)) => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.wait_applied(index, deadline, "linearizable read").await?;
        Ok(self.read_local(f))
    }

    async fn leader_read_index(&self) -> Result<u64, ApiError> {
        match self.inner.raft.ensure_linearizable().await {
            Ok(l) => Ok(l.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(e)) => match e {
                openraft::error::CheckIsLeaderError::ForwardToLeader(f) => Err(ApiError::NotLeader(f.leader_id)),
                other => Err(ApiError::Raft(other.to_string())),
            },
            Err(RaftError::Fatal(_)) => Err(ApiError::ShuttingDown),
        }
    }

    // ----------------------------------------------------------------- admin

    async fn on_leader(&self, req: Request) -> Result<Option<Result<(), ApiError>>, ApiError> {
        let leader = self.wait_leader(self.deadline()).await?;
        if leader == self.id() {
            return Ok(None);
        }
        let node = self.node_of(leader).ok_or(ApiError::NoLeader)?;
        match self.inner.pool.call(leader, &node, &req, Duration::from_secs(30)).await {
            Ok(Response::Admin(r)) => Ok(Some(r)),
            Ok(other) => Err(ApiError::Internal(format!("unexpected answer {other:?}"))),
            Err(e) => Err(ApiError::Unreachable(e.to_string())),
        }
    }

    fn raft_err<E: std::fmt::Display>(e: RaftError<NodeId, E>) -> ApiError {
        match e {
            RaftError::Fatal(_) => ApiError::ShuttingDown,
            RaftError::APIError(e) => ApiError::Raft(e.to_string()),
        }
    }

    /// Adds a member: it first catches up as a learner, then becomes a
    /// voter. Idempotent: adding a current voter changes nothing.
    pub async fn add_member(&self, id: NodeId, node: CoordNode) -> Result<(), ApiError> {
        if let Some(r) = self.on_leader(Request::AddMember { id, node: node.clone() }).await? {
            return r;
        }
        let raft = &self.inner.raft;
        raft.add_learner(id, node, true).await.map_err(Self::raft_err)?;
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(Self::raft_err)?;
        tracing::info!(id, "member added");
        Ok(())
    }

    /// Removes a member from the cluster (voter and node entry).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), ApiError> {
        if let Some(r) = self.on_leader(Request::RemoveMember { id }).await? {
            return r;
        }
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(Self::raft_err)?;
        tracing::info!(id, "member removed");
        Ok(())
    }

    // ---------------------------------------------------------------- status

    pub async fn status(&self) -> Status {
        let m = self.inner.raft.metrics().borrow().clone();
        let matched: Option<BTreeMap<NodeId, Option<u64>>> =
            m.replication.as_ref().map(|r| r.iter().map(|(k, v)| (*k, v.map(|l| l.index))).collect());
        let is_leader = m.state == ServerState::Leader;
        let committed = self.inner.committed.load(Ordering::Relaxed);
        Status {
            id: m.id,
            name: self.inner.config.name.clone(),
            role: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            commit_index: if committed == NEVER { None } else { Some(committed) },
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members: super::network::members_of(&m.membership_config, matched.as_ref()),
            last_contact_ms: if is_leader { m.millis_since_quorum_ack } else { self.ms_since_append() },
            snapshots_installed: self.inner.sm.snapshots_installed(),
            initialized: m.membership_config.membership().nodes().next().is_some(),
            log_entries: self.inner.log_stats.entries.load(Ordering::Relaxed),
            log_appends: self.inner.log_stats.appends.load(Ordering::Relaxed),
            log_syncs: self.inner.log_stats.syncs.load(Ordering::Relaxed),
        }
    }

    /// Refuses new writes (retryable `ShuttingDown`) and waits up to
    /// `within` for the ones in flight to finish.
    async fn close_writes(&self, within: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let until = Instant::now() + within;
        while self.inner.inflight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until this member has applied `index`, or `deadline` passes.
    async fn wait_applied(&self, index: u64, deadline: Instant, why: &str) -> Result<(), ApiError> {
        let ttl = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(ttl))
            .applied_index_at_least(Some(index), why)
            .await
            .map(|_| ())
            .map_err(|_| ApiError::Timeout)
    }

    // -------------------------------------------------------------- hand-off

    /// A planned stop of the leader: hands leadership to an up-to-date
    /// follower so writes pause for one election round, not for a lease.
    /// Does nothing on a follower or a single member.
    ///
    /// openraft 0.9 has no leadership transfer, and a follower that heard a
    /// leader within the lease (`election_timeout_max_ms`) refuses to vote.
    /// So the leader first stops replicating to enough members that the
    /// chosen successor can win with their votes once their lease has run
    /// out, while it keeps a quorum with the others and goes on committing
    /// (in a cluster of three: it replicates to the successor only). Then it
    /// refuses new writes (retryable 503), lets the in-flight ones finish,
    /// waits until the successor holds its whole log, and asks it to stand
    /// (`Request::TakeOver`). Members that were not replicated to wait for
    /// the new leader to catch them up: a forwarded write or a linearizable
    /// read through them waits about one lease.
    pub async fn hand_off(&self) {
        let started = Instant::now();
        let m = self.inner.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return;
        }
        let term = m.current_term;
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().filter(|v| *v != self.id()).collect();
        let matched = |m: &openraft::RaftMetrics<NodeId, CoordNode>, id: NodeId| {
            m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index)
        };
        // The most up-to-date follower succeeds; the least ones are muted.
        let mut by_progress = voters.clone();
        by_progress.sort_by_key(|id| std::cmp::Reverse(matched(&m, *id)));
        let Some(&successor) = by_progress.first() else { return };
        let quorum = voters.len().div_ceil(2) + 1;
        // The leader must keep a quorum with the members it still reaches
        // (in an even-sized cluster it cannot, and the hand-off would stop
        // writes for longer than a plain stop).
        if voters.len() + 1 - (quorum - 1) < quorum {
            tracing::info!(members = voters.len() + 1, "no hand-off in an even-sized cluster");
            return;
        }
        let muted: BTreeSet<NodeId> =
            by_progress.iter().rev().filter(|id| **id != successor).take(quorum - 1).copied().collect();
        let Some(node) = self.node_of(successor) else { return };
        tracing::info!(successor, ?muted, "handing leadership over");
        self.inner.pool.mute(muted);
        let lease = Duration::from_millis(self.inner.config.raft.election_timeout_max_ms + 50);
        tokio::time::sleep(lease).await;

        self.close_writes(Duration::from_secs(2)).await;
        let closed = Instant::now();
        let mut rx = self.inner.raft.metrics();
        let caught_up = async {
            loop {
                let m = rx.borrow_and_update().clone();
                if m.state != ServerState::Leader || matched(&m, successor) >= m.last_log_index {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(1), caught_up).await.is_err() {
            tracing::warn!(successor, "the successor did not catch up; stopping without a hand-off");
            return;
        }
        let asked = self.inner.pool.call(successor, &node, &Request::TakeOver { term }, Duration::from_secs(1)).await;
        if !matches!(asked, Ok(Response::Admin(Ok(())))) {
            tracing::warn!(successor, "the successor did not stand: {asked:?}");
            return;
        }
        let moved = tokio::time::timeout(Duration::from_secs(2), self.leader_moved(self.id())).await;
        tracing::info!(
            successor,
            moved = moved.is_ok(),
            writes_paused_ms = closed.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "leadership handed over"
        );
    }

    /// `Request::TakeOver` from `peer`: stand now, if `peer` is the leader
    /// of `term` as this member knows it.
    async fn take_over(&self, term: u64, peer: &Identity) -> Result<(), ApiError> {
        let m = self.inner.raft.metrics().borrow().clone();
        let leader_name = m.current_leader.and_then(|l| self.node_of(l)).map(|n| n.name);
        if m.current_term != term || leader_name.as_deref() != Some(peer.name.as_str()) {
            return Err(ApiError::Invalid(format!("{peer} is not the leader of term {term} here")));
        }
        self.inner.raft.trigger().elect().await.map_err(|e| ApiError::Raft(e.to_string()))
    }

    // -------------------------------------------------------------- shutdown

    /// Clean shutdown: refuse new writes, let in-flight writes finish (up
    /// to 5 s), stop Raft, close connections, flush storage. openraft 0.9
    /// has no leadership transfer; followers elect a new leader after one
    /// election timeout.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        self.close_writes(Duration::from_secs(5)).await;
        if let Err(e) = inner.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        inner.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), inner.endpoint.wait_idle()).await;
        if let Err(e) = inner.log.write_commit_index() {
            tracing::warn!("final commit index: {e}");
        }
        if let Err(e) = inner.durable.sync().await {
            tracing::warn!("final flush: {e}");
        }
        tracing::info!(id = inner.id, "coordinator stopped");
    }
}
