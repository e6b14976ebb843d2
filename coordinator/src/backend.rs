//! Zoe's back-end contract (zoe-semantics §8.1), as the leader uses it. The
//! agent protocol is the implementation; another back-end could be added by
//! implementing this trait.

use crate::scheduler::Platform;
use crate::state::{Millis, PublishedPort, ServiceId};
use std::future::Future;
use zoe_common::resources::Millicores;
use zoe_common::service::{ImageSummary, ServiceSpec};

/// A started container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    pub container_id: String,
    pub ip_address: Option<String>,
    pub ports: Vec<PublishedPort>,
}

/// Why a start failed. The distinction drives the execution: a retryable
/// failure sends it back to the queue with a backoff, a fatal one ends it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// Might work later or elsewhere (node unreachable, runtime busy, pull timed out).
    #[error("{0}")]
    Retryable(String),
    /// Will not work as asked (image missing everywhere, bad spec).
    #[error("{0}")]
    Fatal(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("node {0} is not connected")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
}

/// Something a node reported on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
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

pub trait Backend: Send + Sync + 'static {
    /// Creates and starts the service's container on `node`. Idempotent by
    /// `spec.container_id`: asking again for a container that already runs
    /// answers with it.
    fn spawn_service(&self, node: &str, spec: ServiceSpec) -> impl Future<Output = Result<Spawned, SpawnError>> + Send;

    /// Stops (grace, then kill) and removes the container. Stopping a
    /// container that is gone is success.
    fn terminate_service(
        &self,
        node: &str,
        service: ServiceId,
        container_id: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Changes a running container's limits (dynamic core sharing).
    fn update_service(
        &self,
        node: &str,
        service: ServiceId,
        container_id: &str,
        cores: Millicores,
        memory: Option<u64>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The live side of the cluster: connected nodes, images, usage.
    fn platform_state(&self) -> Platform;

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
