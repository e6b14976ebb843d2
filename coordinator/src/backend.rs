//! Zoe's back-end contract (zoe-semantics §8.1), as the leader uses it:
//! transport to nodes and a cache of what they report live. Every decision
//! (liveness, reconciliation, placement, network pushes) is the leader's
//! (`zoe_model::pass`); a back-end only carries requests and reports. The
//! agent protocol is the implementation; another back-end is added by
//! implementing this trait.

use crate::scheduler::Platform;
use crate::state::{ExecutionId, Millis, PublishedPort, ServiceId};
use std::future::Future;
use zoe_common::proto::{HostEntry, NodeNetwork};
use zoe_common::resources::Millicores;
use zoe_common::service::{ImageSummary, ServiceSpec};
use zoe_model::pass::Liveness;

/// A started container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    pub container_id: String,
    pub ip_address: Option<String>,
    pub ports: Vec<PublishedPort>,
}

/// Why a start did not report a container. Only the first two are
/// failures: the node said so, and holds no container for the attempt, so
/// a retryable one sends the execution back to the queue with a backoff
/// (and the next attempt a new container id) and a fatal one ends it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The node tried and gave up (runtime busy, pull timed out); might
    /// work later or elsewhere.
    #[error("{0}")]
    Retryable(String),
    /// Will not work as asked (image missing everywhere, bad spec).
    #[error("{0}")]
    Fatal(String),
    /// No answer (connection lost, timeout): the container may well be
    /// running. Never a failure: the service stays `starting` and the node
    /// is asked again with the same container id, which it answers
    /// idempotently.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Not sent: this coordinator no longer leads in the term the decision
    /// was made in. The new leader takes over.
    #[error("not sent: leadership of term {0} is over")]
    Deposed(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("node {0} is not connected")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
    #[error("not sent: leadership of term {0} is over")]
    Deposed(u64),
}

/// Something a node reported on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// A node (re)registered: a new session, whose inventory the leader
    /// reconciles before using the node.
    NodeRegistered { node: String },
    /// A container ended without being asked to.
    Exited {
        service: ServiceId,
        container_id: String,
        exit_code: Option<i32>,
        oom_killed: bool,
        reason: String,
        time: Millis,
    },
}

/// The calls that change what runs on a node carry the Raft term in which
/// the leader decided them (a fencing token): a back-end sends nothing for
/// a term this coordinator no longer leads in ([`SpawnError::Deposed`]),
/// and nodes refuse a term older than one they have already obeyed, so a
/// deposed leader's late request can never undo or repeat the new
/// leader's work.
pub trait Backend: Send + Sync + 'static {
    /// Creates and starts the service's container on `node`. Idempotent by
    /// `spec.container_id`: asking again for a container that exists
    /// (running, or exited and not removed) answers with it.
    fn spawn_service(
        &self,
        term: u64,
        node: &str,
        spec: ServiceSpec,
    ) -> impl Future<Output = Result<Spawned, SpawnError>> + Send;

    /// Stops (grace, then kill) and removes the container. Stopping a
    /// container that is gone is success.
    fn terminate_service(
        &self,
        term: u64,
        node: &str,
        service: ServiceId,
        container_id: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Stops and removes a container no service holds (an orphan), as
    /// decided in `term`.
    fn remove_container(
        &self,
        term: u64,
        node: &str,
        container_id: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Changes a running container's limits (dynamic core sharing).
    fn update_service(
        &self,
        term: u64,
        node: &str,
        service: ServiceId,
        container_id: &str,
        cores: Millicores,
        memory: Option<u64>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The live side of the cluster: connected nodes with their sessions,
    /// inventories, images and usage, and when each node was last heard.
    fn platform_state(&self) -> Platform;

    /// How this back-end's nodes are to be judged (its heartbeat protocol).
    fn liveness(&self) -> Liveness;

    /// Gives a node its part of the cluster network (bridge mode).
    fn configure_network(
        &self,
        node: &str,
        network: NodeNetwork,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Gives a node an execution's host list (bridge mode).
    fn set_hosts(
        &self,
        node: &str,
        execution: ExecutionId,
        entries: Vec<HostEntry>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Names of the nodes currently connected.
    fn node_list(&self) -> Vec<String> {
        self.platform_state().nodes.into_iter().filter(|(_, n)| n.connected).map(|(k, _)| k).collect()
    }

    fn list_images(&self, node: &str) -> impl Future<Output = Result<Vec<ImageSummary>, BackendError>> + Send;

    /// Makes an image available on a node (pull).
    fn preload_image(&self, node: &str, reference: &str) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Events from nodes, for the leader loop. Each call gives a new receiver.
    fn events(&self) -> tokio::sync::broadcast::Receiver<BackendEvent>;
}
