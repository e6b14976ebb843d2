//! The leader loop's [`Backend`] and the API's [`LiveSource`] over agent
//! connections: each command is one bidirectional stream the leader opens.

use super::AgentBackend;
use crate::api::live::{ArchiveStream, ImageLoadResult, LiveError, LiveSource, LogChunk, LogRequest, PreloadProgress};
use crate::backend::{Backend, BackendError, BackendEvent, SpawnError, Spawned};
use crate::scheduler::{LiveNode, Platform};
use crate::state::{ExecutionId, Service, ServiceId};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use zoe_common::proto::{self, AgentCommand, CommandReply, CommandRequest, HostEntry, NodeNetwork, WireSpec};
use zoe_common::resources::Millicores;
use zoe_common::service::{ImageSummary, ServiceSpec};
use zoe_model::pass::Liveness;
use zoe_net::frame::{read_frame, write_frame};

/// Network pushes are small: an answer takes no longer than this.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(15);

impl AgentBackend {
    /// Opens a command stream to `node` and sends the command, stamped
    /// with `term` (0: not a leader's decision).
    async fn open(&self, node: &str, term: u64, command: AgentCommand) -> Result<quinn::RecvStream, BackendError> {
        let (conn, _) = self.connection(node).ok_or_else(|| BackendError::Unreachable(node.to_string()))?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| BackendError::Unreachable(format!("{node}: {e}")))?;
        let id = self.next_command.fetch_add(1, Ordering::Relaxed);
        write_frame(&mut send, &CommandRequest { id, term, command }, proto::MAX_FRAME)
            .await
            .map_err(|e| BackendError::Unreachable(format!("{node}: {e}")))?;
        let _ = send.finish();
        Ok(recv)
    }

    /// Sends a command that is no leader's decision (reads, pings, image
    /// transfers) and waits for its final answer.
    pub async fn call(
        &self,
        node: &str,
        command: AgentCommand,
        timeout: Duration,
    ) -> Result<CommandReply, BackendError> {
        self.call_fenced(0, node, command, timeout).await
    }

    /// Sends a command decided in `term` unless this coordinator no longer
    /// leads in it, and waits for its final answer. A node that already
    /// obeys a newer leader refuses it: both are [`BackendError::Deposed`],
    /// and certainly not carried out. Term 0 is no leader's decision
    /// ([`Self::call`]): nothing to fence.
    pub async fn call_fenced(
        &self,
        term: u64,
        node: &str,
        command: AgentCommand,
        timeout: Duration,
    ) -> Result<CommandReply, BackendError> {
        let fenced = term != 0;
        if fenced && self.coord.leader_term() != Some(term) {
            return Err(BackendError::Deposed(term));
        }
        let fut = async {
            let mut recv = self.open(node, term, command).await?;
            loop {
                match read_frame::<_, CommandReply>(&mut recv, proto::MAX_FRAME).await {
                    Ok(Some(r)) if r.is_final() => return Ok(r),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(BackendError::Unreachable(format!("{node}: no answer"))),
                    Err(e) => return Err(BackendError::Unreachable(format!("{node}: {e}"))),
                }
            }
        };
        let reply = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| BackendError::Failed(format!("{node}: no answer within {} s", timeout.as_secs())))??;
        match reply {
            CommandReply::StaleTerm { newest } if fenced => {
                tracing::info!(node, term, newest, "the node obeys a newer leader");
                Err(BackendError::Deposed(term))
            }
            r => Ok(r),
        }
    }

    /// Stops and removes a container (orphans included), as decided in
    /// `term`.
    pub async fn terminate(&self, term: u64, node: &str, container_id: &str) -> Result<(), BackendError> {
        let grace = self.settings.stop_grace_ms;
        let cmd = AgentCommand::Terminate { container_id: container_id.to_string(), grace_ms: grace };
        match self.call_fenced(term, node, cmd, Duration::from_millis(grace + 45_000)).await? {
            CommandReply::Done => Ok(()),
            CommandReply::Failed { message, .. } => Err(BackendError::Failed(message)),
            other => Err(BackendError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// One command round trip (the protocol benchmark's RTT).
    pub async fn ping(&self, node: &str) -> Result<(), BackendError> {
        match self.call(node, AgentCommand::Ping, Duration::from_secs(5)).await? {
            CommandReply::Pong => Ok(()),
            other => Err(BackendError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    fn platform(&self) -> Platform {
        let reg = self.reg.lock().expect("lock");
        let seen = reg.last_seen.clone().into_iter().collect();
        let nodes = reg
            .nodes
            .iter()
            .map(|(k, n)| {
                (
                    k.clone(),
                    LiveNode {
                        connected: true,
                        images: n.image_names.clone(),
                        cores_in_use: Millicores(n.stats.cores_in_use_millis),
                        memory_in_use: n.stats.memory_in_use,
                        container_count: n.stats.container_count,
                        zoe_containers: n.zoe_containers,
                        session: n.session,
                        registered: n.registered.clone(),
                        inventory: n.inventory.clone(),
                    },
                )
            })
            .collect();
        Platform { nodes, seen }
    }

    /// A command answered by `Done`, or why not.
    async fn done(&self, node: &str, command: AgentCommand, timeout: Duration) -> Result<(), BackendError> {
        match self.call(node, command, timeout).await? {
            CommandReply::Done => Ok(()),
            CommandReply::Failed { message, .. } => Err(BackendError::Failed(message)),
            other => Err(BackendError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    pub fn log_stream(
        self: Arc<Self>,
        node: String,
        container_id: String,
        req: LogRequest,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Result<LogChunk, LiveError>>, LiveError>> {
        Box::pin(async move {
            let cmd = AgentCommand::Logs { container_id, from: req.offset, follow: req.follow };
            let recv = self.open(&node, 0, cmd).await.map_err(|e| LiveError::Unavailable(e.to_string()))?;
            let stream = futures::stream::unfold(Some(recv), |state| async move {
                let mut recv = state?;
                match read_frame::<_, CommandReply>(&mut recv, proto::MAX_FRAME).await {
                    Ok(Some(CommandReply::Log { data, next })) => {
                        Some((Ok(LogChunk { data: data.into(), next_offset: next }), Some(recv)))
                    }
                    Ok(Some(CommandReply::Failed { message, .. })) => Some((Err(LiveError::NotFound(message)), None)),
                    Ok(Some(_)) | Ok(None) => None,
                    Err(e) => Some((Err(LiveError::Failed(e.to_string())), None)),
                }
            });
            Ok(stream.boxed())
        })
    }
}

impl Backend for AgentBackend {
    async fn spawn_service(&self, term: u64, node: &str, spec: ServiceSpec) -> Result<Spawned, SpawnError> {
        let timeout = Duration::from_millis(self.settings.spawn_timeout_ms);
        match self.call_fenced(term, node, AgentCommand::Spawn(WireSpec(spec)), timeout).await {
            // The host ports allocated at placement stand: they are what
            // the agent published (or the container's own, on the host's
            // network).
            Ok(CommandReply::Started { container_id, ip_address }) => {
                Ok(Spawned { container_id, ip_address, ports: Vec::new() })
            }
            Ok(CommandReply::Failed { retryable: true, message }) => Err(SpawnError::Retryable(message)),
            Ok(CommandReply::Failed { retryable: false, message }) => Err(SpawnError::Fatal(message)),
            Ok(other) => Err(SpawnError::Unknown(format!("unexpected answer {other:?}"))),
            Err(BackendError::Deposed(t)) => Err(SpawnError::Deposed(t)),
            // Lost connection, no answer in time: the agent may have
            // started it. Not a failure (see `SpawnError::Unknown`).
            Err(e) => Err(SpawnError::Unknown(e.to_string())),
        }
    }

    async fn terminate_service(
        &self,
        term: u64,
        node: &str,
        _service: ServiceId,
        container_id: &str,
    ) -> Result<(), BackendError> {
        self.terminate(term, node, container_id).await
    }

    async fn remove_container(&self, term: u64, node: &str, container_id: &str) -> Result<(), BackendError> {
        self.terminate(term, node, container_id).await
    }

    async fn update_service(
        &self,
        term: u64,
        node: &str,
        _service: ServiceId,
        container_id: &str,
        cores: Millicores,
        memory: Option<u64>,
    ) -> Result<(), BackendError> {
        let cmd = AgentCommand::Update { container_id: container_id.to_string(), cores_millis: Some(cores.0), memory };
        match self.call_fenced(term, node, cmd, Duration::from_secs(30)).await? {
            CommandReply::Done => Ok(()),
            CommandReply::Failed { message, .. } => Err(BackendError::Failed(message)),
            other => Err(BackendError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    fn platform_state(&self) -> Platform {
        self.platform()
    }

    fn liveness(&self) -> Liveness {
        self.settings.liveness()
    }

    async fn configure_network(&self, node: &str, network: NodeNetwork) -> Result<(), BackendError> {
        self.done(node, AgentCommand::Network(network), NETWORK_TIMEOUT).await
    }

    async fn set_hosts(&self, node: &str, execution: ExecutionId, entries: Vec<HostEntry>) -> Result<(), BackendError> {
        self.done(node, AgentCommand::Hosts { execution_id: execution, entries }, NETWORK_TIMEOUT).await
    }

    async fn list_images(&self, node: &str) -> Result<Vec<ImageSummary>, BackendError> {
        match self.call(node, AgentCommand::ListImages, Duration::from_secs(30)).await? {
            CommandReply::Images(l) => Ok(l),
            CommandReply::Failed { message, .. } => Err(BackendError::Failed(message)),
            other => Err(BackendError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    async fn preload_image(&self, node: &str, reference: &str) -> Result<(), BackendError> {
        let cmd = AgentCommand::Preload { reference: reference.to_string() };
        self.done(node, cmd, Duration::from_millis(self.settings.spawn_timeout_ms)).await
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<BackendEvent> {
        self.events.subscribe()
    }
}

/// The API's live view. Implemented on an `Arc` so streams can outlive the
/// request that started them.
pub struct AgentLive(pub Arc<AgentBackend>);

impl LiveSource for AgentLive {
    fn live_nodes(&self) -> BoxFuture<'static, Option<BTreeMap<String, LiveNode>>> {
        let nodes = self.0.is_leader().then(|| self.0.platform().nodes);
        Box::pin(async move { nodes })
    }

    fn live_reports(&self) -> BoxFuture<'static, Option<BTreeMap<String, super::stats::NodeReport>>> {
        let reports = self.0.live_reports();
        Box::pin(async move { reports })
    }

    fn service_logs(
        &self,
        service: &Service,
        req: LogRequest,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Result<LogChunk, LiveError>>, LiveError>> {
        let (Some(node), Some(cid)) = (service.node.clone(), service.container_id.clone()) else {
            return Box::pin(async { Err(LiveError::NotFound("the service has never run".into())) });
        };
        if !self.0.is_leader() {
            return Box::pin(async {
                Err(LiveError::Unavailable("agents are connected to the leader; ask it".into()))
            });
        }
        self.0.clone().log_stream(node, cid, req)
    }

    fn preload(
        &self,
        image: String,
        nodes: Vec<String>,
    ) -> BoxFuture<'static, Result<BoxStream<'static, PreloadProgress>, LiveError>> {
        let b = self.0.clone();
        Box::pin(async move {
            if !b.is_leader() {
                return Err(LiveError::Unavailable("agents are connected to the leader; ask it".into()));
            }
            let nodes = if nodes.is_empty() { b.platform().nodes.into_keys().collect() } else { nodes };
            let mut streams = Vec::new();
            for node in nodes {
                let cmd = AgentCommand::Preload { reference: image.clone() };
                let s: BoxStream<'static, PreloadProgress> = match b.open(&node, 0, cmd).await {
                    Err(e) => futures::stream::once(async move {
                        PreloadProgress { node, done: true, error: Some(e.to_string()), message: String::new() }
                    })
                    .boxed(),
                    Ok(recv) => futures::stream::unfold(Some((recv, node)), |st| async move {
                        let (mut recv, node) = st?;
                        let p = |done, error, message| PreloadProgress { node: node.clone(), done, error, message };
                        match read_frame::<_, CommandReply>(&mut recv, proto::MAX_FRAME).await {
                            Ok(Some(CommandReply::Progress(x))) => {
                                let m = format!("{} {} {}/{}", x.image, x.phase, x.done, x.total);
                                Some((p(false, None, m), Some((recv, node))))
                            }
                            Ok(Some(CommandReply::Done)) => Some((p(true, None, "done".into()), None)),
                            Ok(Some(CommandReply::Failed { message, .. })) => {
                                Some((p(true, Some(message), String::new()), None))
                            }
                            Ok(Some(other)) => {
                                Some((p(true, Some(format!("unexpected {other:?}")), String::new()), None))
                            }
                            Ok(None) => Some((p(true, Some("agent closed the stream".into()), String::new()), None)),
                            Err(e) => Some((p(true, Some(e.to_string()), String::new()), None)),
                        }
                    })
                    .boxed(),
                };
                streams.push(s);
            }
            Ok(futures::stream::select_all(streams).boxed())
        })
    }

    fn load_image(
        &self,
        nodes: Vec<String>,
        mut archive: ArchiveStream,
    ) -> BoxFuture<'static, Result<Vec<ImageLoadResult>, LiveError>> {
        let b = self.0.clone();
        Box::pin(async move {
            if !b.is_leader() {
                return Err(LiveError::Unavailable("agents are connected to the leader; ask it".into()));
            }
            let nodes: Vec<String> = if nodes.is_empty() { b.platform().nodes.into_keys().collect() } else { nodes };
            if nodes.is_empty() {
                return Err(LiveError::Unavailable("no node is connected".into()));
            }
            let upload = format!("load-{}", &crate::auth::random_secret()[..16]);
            let mut errors: BTreeMap<String, Option<String>> = nodes.into_iter().map(|n| (n, None)).collect();
            let mut offset = 0u64;
            let mut buf: Vec<u8> = Vec::with_capacity(proto::IMAGE_CHUNK);
            let mut ended = false;
            loop {
                // Fill one piece, unless the upload has ended.
                while buf.len() < proto::IMAGE_CHUNK && !ended {
                    match archive.next().await {
                        Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                        Some(Err(e)) => return Err(e),
                        None => ended = true,
                    }
                }
                let take = buf.len().min(proto::IMAGE_CHUNK);
                let data: Vec<u8> = buf.drain(..take).collect();
                let last = ended && buf.is_empty();
                // The import itself runs on the last piece: allow it the spawn timeout.
                let timeout =
                    if last { Duration::from_millis(b.settings.spawn_timeout_ms) } else { Duration::from_secs(60) };
                let live: Vec<String> = errors.iter().filter(|(_, e)| e.is_none()).map(|(n, _)| n.clone()).collect();
                if live.is_empty() {
                    break;
                }
                let sends = live.into_iter().map(|node| {
                    let cmd = AgentCommand::ImageChunk { upload: upload.clone(), offset, data: data.clone(), last };
                    let b = b.clone();
                    async move {
                        let r = match b.call(&node, cmd, timeout).await {
                            Ok(CommandReply::Done) => None,
                            Ok(CommandReply::Failed { message, .. }) => Some(message),
                            Ok(other) => Some(format!("unexpected answer {other:?}")),
                            Err(e) => Some(e.to_string()),
                        };
                        (node, r)
                    }
                });
                for (node, r) in futures::future::join_all(sends).await {
                    if r.is_some() {
                        errors.insert(node, r);
                    }
                }
                offset += data.len() as u64;
                if last {
                    break;
                }
            }
            Ok(errors.into_iter().map(|(node, error)| ImageLoadResult { node, error }).collect())
        })
    }
}
