//! Talking to a coordinator cluster from outside: the CLI, tests and
//! benchmarks. Authenticates with a `client` (or coordinator) certificate.

use super::network::{ApiError, PeerPool, Request, Response, Status};
use super::node::{Staleness, Written};
use super::{CoordNode, NodeId, codec};
use crate::state::{Command, State};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use zoe_net::{NetError, TlsMaterial};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// A client for a set of coordinators (any of them will do).
pub struct CoordinatorClient {
    pool: Arc<PeerPool>,
    members: Vec<CoordNode>,
    /// The member that answered last; tried first next time.
    preferred: AtomicUsize,
    /// Per-attempt deadline.
    pub attempt_timeout: Duration,
}

impl CoordinatorClient {
    /// `members`: address and certificate name of each coordinator.
    pub fn new(tls: &TlsMaterial, members: Vec<CoordNode>) -> Result<Self, NetError> {
        let endpoint = tls.client_endpoint(&[super::network::ALPN])?;
        Ok(CoordinatorClient {
            pool: Arc::new(PeerPool::new(endpoint)),
            members,
            preferred: AtomicUsize::new(0),
            attempt_timeout: Duration::from_secs(5),
        })
    }

    /// The same client (sharing connections) with another per-attempt deadline.
    pub fn with_attempt_timeout(&self, attempt_timeout: Duration) -> CoordinatorClient {
        CoordinatorClient {
            pool: self.pool.clone(),
            members: self.members.clone(),
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            attempt_timeout,
        }
    }

    pub fn members(&self) -> &[CoordNode] {
        &self.members
    }

    /// One request to member `i` (an index into `members`).
    pub async fn call(&self, i: usize, req: &Request) -> Result<Response, ClientError> {
        let node = &self.members[i];
        Ok(self.pool.call(i as NodeId, node, req, self.attempt_timeout).await?)
    }

    /// One write attempt through member `i`.
    pub async fn write_via(&self, i: usize, cmd: &Command) -> Result<Written, ClientError> {
        let command = codec::json(cmd).map_err(ApiError::from)?;
        match self.call(i, &Request::Write { command, forwarded: false }).await? {
            Response::Write(Ok(w)) => Ok(Written { index: w.index, result: w.result()? }),
            Response::Write(Err(e)) => Err(e.into()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Writes, trying members in turn until one acknowledges or `within`
    /// passes. Retrying after an error of unknown outcome (a timeout, a
    /// member lost mid-request) may apply the command twice: use it for
    /// idempotent commands.
    pub async fn write(&self, cmd: &Command, within: Duration) -> Result<Written, ClientError> {
        let deadline = Instant::now() + within;
        let n = self.members.len();
        let mut i = self.preferred.load(Ordering::Relaxed) % n;
        loop {
            match self.write_via(i, cmd).await {
                Ok(w) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(w);
                }
                Err(e) => {
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(member = i, "write failed, trying the next member: {e}");
                    i = (i + 1) % n;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// Reads the whole state through member `i`.
    pub async fn read_via(&self, i: usize, linearizable: bool) -> Result<(State, Staleness), ClientError> {
        match self.call(i, &Request::Read { linearizable }).await? {
            Response::Read(Ok(r)) => Ok((r.state()?, r.staleness)),
            Response::Read(Err(e)) => Err(e.into()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn status_of(&self, i: usize) -> Result<Status, ClientError> {
        match self.call(i, &Request::Status).await? {
            Response::Status(s) => Ok(*s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    async fn admin(&self, i: usize, req: Request) -> Result<(), ClientError> {
        match self.call(i, &req).await? {
            Response::Admin(r) => Ok(r?),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Adds a member through member `i` (forwarded to the leader).
    pub async fn add_member(&self, i: usize, id: NodeId, node: CoordNode) -> Result<(), ClientError> {
        self.admin(i, Request::AddMember { id, node }).await
    }

    /// Removes a member through member `i` (forwarded to the leader).
    pub async fn remove_member(&self, i: usize, id: NodeId) -> Result<(), ClientError> {
        self.admin(i, Request::RemoveMember { id }).await
    }
}
