//! Coordinator RPC: the messages, and openraft's network over QUIC.
//!
//! One QUIC endpoint per coordinator serves Raft traffic (coordinators
//! only) and client/admin calls (coordinators and `client` certificates).
//! Each request opens its own bidirectional stream carrying one frame each
//! way (`zoe_net::rpc`), so a slow snapshot chunk never blocks a heartbeat.

use super::{CoordNode, NodeId, TypeConfig, WireEntry};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zoe_net::{Identity, NetError, Role};

/// ALPN of the coordinator protocol; bumped with incompatible changes.
pub const ALPN: &[u8] = b"zoe-coordinator/3";

/// Frames up to 16 MiB: snapshot chunks are at most `snapshot_chunk_bytes`.
pub const MAX_FRAME: usize = zoe_net::DEFAULT_MAX_FRAME;

/// AppendEntries with entries in their storage form (commands as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireAppend {
    pub vote: openraft::Vote<NodeId>,
    pub prev_log_id: Option<super::LogId>,
    pub leader_commit: Option<super::LogId>,
    pub(crate) entries: Vec<WireEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    // Raft, coordinators only.
    AppendEntries(WireAppend),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// The leader confirms it still leads and returns the index a
    /// linearizable read on a follower must wait for.
    ReadIndex,
    /// Would you vote for a candidate whose log ends here? Changes nothing
    /// (see `raft/election.rs`).
    PreVote {
        last_log_id: Option<super::LogId>,
    },
    // Client API.
    /// `command` is a JSON-encoded `Command`. `forwarded` is set by a
    /// follower passing the write on, so the leader never forwards again.
    Write {
        command: Vec<u8>,
        forwarded: bool,
    },
    Read {
        linearizable: bool,
    },
    Status,
    // Admin API.
    AddMember {
        id: NodeId,
        node: CoordNode,
    },
    RemoveMember {
        id: NodeId,
    },
    // Between coordinators.
    /// Opens a relayed stream (coordinators only): a follower passes one of
    /// the live routes the leader alone can answer (logs, image preload and
    /// load, live node usage) on. The payload names the call; after this
    /// frame the stream belongs to the [`super::node::RelayHandler`], which
    /// speaks its own frames on it, with QUIC's flow control as
    /// back-pressure.
    Relay(Vec<u8>),
    /// The leader of `term`, stopping, asks this member to stand for
    /// election now (see `Coordinator::hand_off`). Coordinators only; obeyed
    /// only from the member this one knows as that term's leader.
    TakeOver {
        term: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    ReadIndex(Result<u64, ApiError>),
    PreVote(bool),
    Write(Result<WriteReply, ApiError>),
    Read(Result<ReadReply, ApiError>),
    Status(Box<Status>),
    Admin(Result<(), ApiError>),
    Forbidden(String),
}

/// The answer to a write: the leader's result of applying the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteReply {
    /// Log index the command was committed at.
    pub index: u64,
    /// JSON of `Result<Applied, StateError>`.
    pub(crate) result: Vec<u8>,
}

impl WriteReply {
    pub fn result(&self) -> Result<super::CommandResult, ApiError> {
        super::codec::unjson(&self.result).map_err(ApiError::from)
    }
}

/// A read of the whole state (for tools and tests; in-process callers read
/// with a closure instead).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadReply {
    /// JSON of `State`.
    pub(crate) state: Vec<u8>,
    pub staleness: super::Staleness,
}

impl ReadReply {
    pub fn state(&self) -> Result<crate::state::State, ApiError> {
        super::codec::unjson(&self.state).map_err(ApiError::from)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    #[error("no leader elected (yet)")]
    NoLeader,
    #[error("not the leader; the leader is {0:?}")]
    NotLeader(Option<NodeId>),
    #[error("this coordinator is shutting down")]
    ShuttingDown,
    #[error("cannot reach the leader: {0}")]
    Unreachable(String),
    #[error("timed out")]
    Timeout,
    /// The leader could not be connected to: the write was not sent.
    #[error("cannot connect to the leader: {0}")]
    LeaderUnreachable(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// Errors after which the same write may be sent to another member
    /// without risk of applying it twice.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::NoLeader | ApiError::NotLeader(_) | ApiError::ShuttingDown | ApiError::LeaderUnreachable(_)
        )
    }
}

/// The health view of a coordinator and of its members: the API's types.
pub use zoe_api::cluster::{MemberStatus, Status};

// ------------------------------------------------------------- connections

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Cached connections to other coordinators, keyed by node id.
pub struct PeerPool {
    endpoint: quinn::Endpoint,
    conns: Mutex<HashMap<NodeId, quinn::Connection>>,
    /// Members openraft's replication does not reach (a leader handing off
    /// lets their leader lease run out); see `Coordinator::hand_off`.
    muted: Mutex<std::collections::BTreeSet<NodeId>>,
}

impl PeerPool {
    pub fn new(endpoint: quinn::Endpoint) -> Self {
        PeerPool { endpoint, conns: Mutex::new(HashMap::new()), muted: Mutex::default() }
    }

    /// Stops (or with an empty set, resumes) replication to `ids`.
    pub fn mute(&self, ids: std::collections::BTreeSet<NodeId>) {
        *self.muted.lock().expect("pool lock") = ids;
    }

    fn is_muted(&self, id: NodeId) -> bool {
        self.muted.lock().expect("pool lock").contains(&id)
    }

    /// The cached connection to a member, or a new one; every failure to
    /// get one is [`NetError::NotConnected`] (nothing sent).
    async fn connection(&self, id: NodeId, node: &CoordNode) -> Result<quinn::Connection, NetError> {
        self.connect(id, node).await.map_err(|e| match e {
            e @ NetError::NotConnected(_) => e,
            other => NetError::NotConnected(format!("{}: {other}", node.addr)),
        })
    }

    async fn connect(&self, id: NodeId, node: &CoordNode) -> Result<quinn::Connection, NetError> {
        if let Some(c) = self.conns.lock().expect("pool lock").get(&id)
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let addr: SocketAddr = tokio::net::lookup_host(&node.addr)
            .await?
            .next()
            .ok_or_else(|| NetError::Identity(format!("{} resolves to nothing", node.addr)))?;
        // The server name is the peer's identity SAN, so webpki checks that
        // the certificate really is that coordinator's.
        let server_name = Identity::new(Role::Coordinator, node.name.clone())?.san();
        // A dead peer never answers the handshake; give up well before the
        // request deadline so callers can try another member.
        let connecting = self.endpoint.connect(addr, &server_name)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.map_err(|_| NetError::Timeout)??;
        self.conns.lock().expect("pool lock").insert(id, conn.clone());
        Ok(conn)
    }

    /// Sends one request to a member, with a deadline.
    ///
    /// A call that fails or times out drops the cached connection, so the
    /// next call dials again. A peer that was restarted (or paused) keeps
    /// its old connection looking alive until the idle timeout; reusing it
    /// meant the leader's heartbeats never reached the rejoining member,
    /// which then timed out, raised the term and deposed a healthy leader.
    pub async fn call(&self, id: NodeId, node: &CoordNode, req: &Request, ttl: Duration) -> Result<Response, NetError> {
        self.on_connection(id, node, ttl, |c| async move {
            zoe_net::rpc::call::<Request, Response>(&c, req, MAX_FRAME).await
        })
        .await
    }

    /// Opens a bidirectional stream to a member, for a conversation longer
    /// than one request. A failure forgets the connection, as `call` does.
    pub async fn open(
        &self,
        id: NodeId,
        node: &CoordNode,
        ttl: Duration,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), NetError> {
        self.on_connection(id, node, ttl, |c| async move { c.open_bi().await.map_err(NetError::from) }).await
    }

    /// Runs `f` on the member's connection within `ttl`.
    async fn on_connection<T, F, Fut>(&self, id: NodeId, node: &CoordNode, ttl: Duration, f: F) -> Result<T, NetError>
    where
        F: FnOnce(quinn::Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, NetError>>,
    {
        let fut = async {
            let conn = self.connection(id, node).await?;
            // openraft drops an append that outlives its own timeout (the
            // heartbeat interval) before ours fires: the guard forgets the
            // connection however the call ends, unless it succeeded.
            let mut guard = ForgetOnDrop { pool: self, id, conn: Some(conn.clone()) };
            let r = f(conn).await;
            if r.is_ok() {
                guard.conn = None;
            }
            r
        };
        tokio::time::timeout(ttl, fut).await.map_err(|_| NetError::Timeout)?
    }

    /// Drops `conn` from the cache, unless another call already replaced it.
    fn forget(&self, id: NodeId, conn: &quinn::Connection) {
        let mut conns = self.conns.lock().expect("pool lock");
        if conns.get(&id).is_some_and(|c| c.stable_id() == conn.stable_id()) {
            // Not closed: calls still in flight on it finish on their own.
            conns.remove(&id);
        }
    }
}

struct ForgetOnDrop<'a> {
    pool: &'a PeerPool,
    id: NodeId,
    conn: Option<quinn::Connection>,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.forget(self.id, &c);
        }
    }
}

// ------------------------------------------------------- openraft network

/// openraft's network factory: one [`PeerClient`] per target.
#[derive(Clone)]
pub struct Network {
    pub pool: Arc<PeerPool>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &CoordNode) -> PeerClient {
        PeerClient { target, node: node.clone(), pool: self.pool.clone() }
    }
}

pub struct PeerClient {
    target: NodeId,
    node: CoordNode,
    pool: Arc<PeerPool>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, CoordNode, RaftError<NodeId, E>>;

impl PeerClient {
    async fn send(&self, req: Request, option: &RPCOption) -> Result<Response, NetError> {
        let replication = matches!(req, Request::AppendEntries(_) | Request::InstallSnapshot(_));
        if replication && self.pool.is_muted(self.target) {
            return Err(NetError::NotConnected("muted for a leadership hand-off".into()));
        }
        self.pool.call(self.target, &self.node, &req, option.hard_ttl()).await
    }

    fn unreachable<E: std::error::Error>(e: NetError) -> RPCError<NodeId, CoordNode, E> {
        RPCError::Unreachable(Unreachable::new(&e))
    }

    fn unexpected<E: std::error::Error>(r: &Response) -> RPCError<NodeId, CoordNode, E> {
        let msg = match r {
            Response::Forbidden(m) => format!("refused by peer: {m}"),
            other => format!("unexpected answer: {other:?}"),
        };
        RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let entries = rpc
            .entries
            .iter()
            .map(WireEntry::from_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let req = Request::AppendEntries(WireAppend {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            leader_commit: rpc.leader_commit,
            entries,
        });
        match self.send(req, &option).await.map_err(Self::unreachable)? {
            Response::AppendEntries(Ok(r)) => Ok(r),
            Response::AppendEntries(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
            }
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self.send(Request::InstallSnapshot(rpc), &option).await.map_err(Self::unreachable)? {
            Response::InstallSnapshot(Ok(r)) => Ok(r),
            Response::InstallSnapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
            }
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self.send(Request::Vote(rpc), &option).await.map_err(Self::unreachable)? {
            Response::Vote(Ok(r)) => Ok(r),
            Response::Vote(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
            }
            other => Err(Self::unexpected(&other)),
        }
    }
}

/// Membership as a list, for status output.
pub(crate) fn members_of(
    m: &super::StoredMembership,
    matched: Option<&BTreeMap<NodeId, Option<u64>>>,
) -> Vec<MemberStatus> {
    let voters: std::collections::BTreeSet<NodeId> = m.membership().voter_ids().collect();
    m.membership()
        .nodes()
        .map(|(id, n)| MemberStatus {
            id: *id,
            name: n.name.clone(),
            addr: n.addr.clone(),
            voter: voters.contains(id),
            matched_index: matched.and_then(|mm| mm.get(id).copied().flatten()),
        })
        .collect()
}
