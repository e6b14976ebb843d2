//! What the API needs from the live side of the cluster (agents, the
//! leader's in-memory platform view) and the replicated state cannot
//! answer. A coordinator's implementation is `crate::relay::Relay`: its own
//! agents when it leads, the leader's through a relayed stream when it
//! follows. Without a [`LiveSource`] the routes that need one answer 503
//! with a clear message, never a fake success.

use crate::scheduler::LiveNode;
use crate::state::Service;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::collections::BTreeMap;

/// Also sent as it is between coordinators (`crate::relay`).
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum LiveError {
    /// The node's agent is not connected (or this coordinator cannot reach it).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// Which part of a service's log to read.
#[derive(Debug, Clone, Default)]
pub struct LogRequest {
    /// Byte offset to start from (0 = the beginning).
    pub offset: u64,
    /// Keep the stream open and send new output until the service ends.
    pub follow: bool,
}

/// A piece of log output and the offset just after it.
#[derive(Debug, Clone)]
pub struct LogChunk {
    pub data: axum::body::Bytes,
    pub next_offset: u64,
}

/// Progress of an image preload on one node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PreloadProgress {
    pub node: String,
    pub done: bool,
    pub error: Option<String>,
    pub message: String,
}

/// The outcome of `zoe image load` on one node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageLoadResult {
    pub node: String,
    /// Why the node did not import the archive; `None` when it did.
    pub error: Option<String>,
}

/// An uploaded archive as it arrives: pieces of bytes, or why it stopped.
pub type ArchiveStream = BoxStream<'static, Result<axum::body::Bytes, LiveError>>;

pub trait LiveSource: Send + Sync + 'static {
    /// Live per-node view (connected, cores and memory in use, containers);
    /// `None` when no leader can say.
    fn live_nodes(&self) -> BoxFuture<'static, Option<BTreeMap<String, LiveNode>>>;

    /// What each connected node last reported in full (containers with
    /// their limits and use, images), for Zoe's statistics; `None` where
    /// there is no such source (no leader to ask, a test double).
    fn live_reports(&self) -> BoxFuture<'static, Option<BTreeMap<String, crate::agents::stats::NodeReport>>> {
        Box::pin(async { None })
    }

    /// A service's log, from its node's agent.
    fn service_logs(
        &self,
        service: &Service,
        req: LogRequest,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Result<LogChunk, LiveError>>, LiveError>>;

    /// Pulls `image` on `nodes` (all ready nodes when empty), streaming progress.
    fn preload(
        &self,
        image: String,
        nodes: Vec<String>,
    ) -> BoxFuture<'static, Result<BoxStream<'static, PreloadProgress>, LiveError>>;

    /// Streams an image archive (OCI layout or `docker save` tarball) to
    /// `nodes` (all connected nodes when empty), which import it.
    fn load_image(
        &self,
        nodes: Vec<String>,
        archive: ArchiveStream,
    ) -> BoxFuture<'static, Result<Vec<ImageLoadResult>, LiveError>> {
        let _ = (nodes, archive);
        Box::pin(async { Err(LiveError::Unavailable("this coordinator cannot reach agents".into())) })
    }
}
