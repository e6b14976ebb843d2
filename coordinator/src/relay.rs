//! The live routes on a follower: agents are connected to the leader only,
//! so a follower relays what needs them (service logs, `follow` included;
//! image preload and load; live node usage and reports) to the leader over
//! the coordinators' own QUIC connections, and streams the answer back.
//!
//! One relayed call is one QUIC stream (opened with `Request::Relay`), in
//! frames of this module's [`Down`] and [`Up`]. Back-pressure is QUIC's flow
//! control: the leader writes a log chunk only as fast as the follower reads
//! it, and the follower reads only as fast as its HTTP client does; an
//! upload moves as fast as the agents import it. A client that goes away
//! drops the follower's stream, which stops the leader's.
//!
//! The leader answers a relayed call with its local [`AgentLive`] only, never by
//! relaying again: a member that lost leadership answers "unavailable" and
//! the client retries, as it does with any 503.

use crate::agents::AgentLive;
use crate::agents::stats::NodeReport;
use crate::api::live::{ArchiveStream, ImageLoadResult, LiveError, LiveSource, LogChunk, LogRequest, PreloadProgress};
use crate::raft::Coordinator;
use crate::raft::node::{RelayHandler, RelayStream};
use crate::scheduler::LiveNode;
use crate::state::Service;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use zoe_common::resources::Millicores;
use zoe_net::frame::{read_frame, write_frame};

/// Largest relayed frame: a log chunk or an archive piece with room to spare.
const MAX_FRAME: usize = zoe_common::proto::MAX_FRAME + 64 * 1024;

/// How long a follower looks for the leader before answering "unavailable".
const FIND_LEADER: Duration = Duration::from_secs(3);

/// A live view is decoration on a page: past this, the page goes without.
const VIEW_TIMEOUT: Duration = Duration::from_secs(2);

/// Archive pieces relayed at once: the agents' import piece size.
const PIECE: usize = zoe_common::proto::IMAGE_CHUNK;

/// Resolves once the leader a relayed stream reached stops leading.
type Moved = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The call, the first frame's payload.
#[derive(Debug, Serialize, Deserialize)]
enum Call {
    Nodes,
    Reports,
    Logs {
        node: String,
        container_id: String,
        offset: u64,
        follow: bool,
    },
    Preload {
        image: String,
        nodes: Vec<String>,
    },
    /// Followed by [`Up`] frames: the archive.
    Load {
        nodes: Vec<String>,
    },
}

/// Follower to leader, after the call.
#[derive(Debug, Serialize, Deserialize)]
enum Up {
    Piece(Vec<u8>),
    End,
}

/// Leader to follower.
#[derive(Debug, Serialize, Deserialize)]
enum Down {
    Nodes(Option<BTreeMap<String, WireNode>>),
    Reports(Option<BTreeMap<String, NodeReport>>),
    Log {
        data: Vec<u8>,
        next_offset: u64,
    },
    Progress {
        node: String,
        done: bool,
        error: Option<String>,
        message: String,
    },
    Loaded(Vec<(String, Option<String>)>),
    /// The call started, and so far nothing is wrong (logs, preload).
    Ready,
    Failed(LiveError),
}

/// [`LiveNode`] in frames. `Millicores` serialises as Zoe's float cores,
/// which a non-self-describing encoding cannot read back.
#[derive(Debug, Serialize, Deserialize)]
struct WireNode {
    connected: bool,
    images: Vec<String>,
    cores_in_use_millis: u32,
    memory_in_use: u64,
    container_count: u32,
    zoe_containers: u32,
}

impl From<LiveNode> for WireNode {
    fn from(n: LiveNode) -> Self {
        WireNode {
            connected: n.connected,
            images: n.images.iter().cloned().collect(),
            cores_in_use_millis: n.cores_in_use.0,
            memory_in_use: n.memory_in_use,
            container_count: n.container_count,
            zoe_containers: n.zoe_containers,
        }
    }
}

impl From<WireNode> for LiveNode {
    fn from(n: WireNode) -> Self {
        LiveNode {
            connected: n.connected,
            images: std::sync::Arc::new(n.images.into_iter().collect()),
            cores_in_use: Millicores(n.cores_in_use_millis),
            memory_in_use: n.memory_in_use,
            container_count: n.container_count,
            zoe_containers: n.zoe_containers,
            // The API's view of a node: no session or inventory.
            ..LiveNode::default()
        }
    }
}

fn lost(e: impl std::fmt::Display) -> LiveError {
    LiveError::Unavailable(format!("relay to the leader: {e}"))
}

// ------------------------------------------------------------- follower

/// The API's live source on every coordinator: the local agents when this
/// member leads, the leader through a relayed stream otherwise.
pub struct Relay {
    local: AgentLive,
    coord: Coordinator,
}

impl Relay {
    pub fn new(coord: Coordinator, local: AgentLive) -> Relay {
        Relay { local, coord }
    }

    fn leads(&self) -> bool {
        self.local.0.is_leader()
    }

    /// Opens a stream to the leader carrying `call`.
    fn open(&self, call: Call) -> BoxFuture<'static, Result<RelayStream, LiveError>> {
        let coord = self.coord.clone();
        Box::pin(async move {
            let open = zoe_net::frame::encode(&call, MAX_FRAME).map_err(lost)?;
            // `encode` puts a length prefix first; the payload is the rest.
            coord.open_relay(open[4..].to_vec(), FIND_LEADER).await.map_err(lost)
        })
    }

    /// One answer frame, within `VIEW_TIMEOUT`, as `pick` reads it; `None`
    /// when anything fails.
    fn view<T: Send + 'static>(&self, call: Call, pick: fn(Down) -> Option<T>) -> BoxFuture<'static, Option<T>> {
        let open = self.open(call);
        Box::pin(async move {
            let once = async move {
                let mut s = open.await.ok()?;
                read_frame::<_, Down>(&mut s.recv, MAX_FRAME).await.ok()?
            };
            pick(tokio::time::timeout(VIEW_TIMEOUT, once).await.ok()??)
        })
    }

    /// Opens `call` and waits for `Ready` (or the reason it did not start).
    /// The stream comes with a future that resolves once its leader no
    /// longer leads.
    fn started(&self, call: Call) -> BoxFuture<'static, Result<(quinn::RecvStream, Moved), LiveError>> {
        let open = self.open(call);
        let coord = self.coord.clone();
        Box::pin(async move {
            let RelayStream { leader, send, mut recv } = open.await?;
            // Nothing more goes up; the stream's receiving side stays open.
            drop(send);
            let moved: Moved = Box::pin(coord.leader_moved(leader));
            match read_frame::<_, Down>(&mut recv, MAX_FRAME).await {
                Ok(Some(Down::Ready)) => Ok((recv, moved)),
                Ok(Some(Down::Failed(e))) => Err(e),
                Ok(Some(other)) => Err(LiveError::Failed(format!("unexpected relay answer {other:?}"))),
                Ok(None) => Err(lost("the leader closed the stream")),
                Err(e) => Err(lost(e)),
            }
        })
    }
}

impl LiveSource for Relay {
    fn live_nodes(&self) -> BoxFuture<'static, Option<BTreeMap<String, LiveNode>>> {
        if self.leads() {
            return self.local.live_nodes();
        }
        self.view(Call::Nodes, |d| match d {
            Down::Nodes(n) => n.map(|m| m.into_iter().map(|(k, v)| (k, v.into())).collect()),
            _ => None,
        })
    }

    fn live_reports(&self) -> BoxFuture<'static, Option<BTreeMap<String, NodeReport>>> {
        if self.leads() {
            return self.local.live_reports();
        }
        self.view(Call::Reports, |d| match d {
            Down::Reports(r) => r,
            _ => None,
        })
    }

    fn service_logs(
        &self,
        service: &Service,
        req: LogRequest,
    ) -> BoxFuture<'static, Result<BoxStream<'static, Result<LogChunk, LiveError>>, LiveError>> {
        if self.leads() {
            return self.local.service_logs(service, req);
        }
        let (Some(node), Some(container_id)) = (service.node.clone(), service.container_id.clone()) else {
            return self.local.service_logs(service, req);
        };
        let started = self.started(Call::Logs { node, container_id, offset: req.offset, follow: req.follow });
        Box::pin(async move {
            let st = started.await?;
            let chunks = futures::stream::unfold(Some(st), |st| async move {
                let (mut recv, mut moved) = st?;
                // A dead leader's stream would hang until QUIC's idle
                // timeout; the client resumes from its offset instead.
                let frame = tokio::select! {
                    f = read_frame::<_, Down>(&mut recv, MAX_FRAME) => f,
                    () = &mut moved => return Some((Err(lost("the leader changed")), None)),
                };
                match frame {
                    Ok(Some(Down::Log { data, next_offset })) => {
                        Some((Ok(LogChunk { data: data.into(), next_offset }), Some((recv, moved))))
                    }
                    Ok(Some(Down::Failed(e))) => Some((Err(e), None)),
                    Ok(Some(_)) | Ok(None) => None,
                    Err(e) => Some((Err(lost(e)), None)),
                }
            });
            Ok(chunks.boxed())
        })
    }

    fn preload(
        &self,
        image: String,
        nodes: Vec<String>,
    ) -> BoxFuture<'static, Result<BoxStream<'static, PreloadProgress>, LiveError>> {
        if self.leads() {
            return self.local.preload(image, nodes);
        }
        let started = self.started(Call::Preload { image, nodes });
        Box::pin(async move {
            let (recv, _) = started.await?;
            let events = futures::stream::unfold(Some(recv), |st| async move {
                let mut recv = st?;
                let failed = |error: String| PreloadProgress {
                    node: String::new(),
                    done: true,
                    error: Some(error),
                    message: String::new(),
                };
                match read_frame::<_, Down>(&mut recv, MAX_FRAME).await {
                    Ok(Some(Down::Progress { node, done, error, message })) => {
                        Some((PreloadProgress { node, done, error, message }, Some(recv)))
                    }
                    Ok(Some(Down::Failed(e))) => Some((failed(e.to_string()), None)),
                    Ok(Some(_)) | Ok(None) => None,
                    Err(e) => Some((failed(lost(e).to_string()), None)),
                }
            });
            Ok(events.boxed())
        })
    }

    fn load_image(
        &self,
        nodes: Vec<String>,
        mut archive: ArchiveStream,
    ) -> BoxFuture<'static, Result<Vec<ImageLoadResult>, LiveError>> {
        if self.leads() {
            return self.local.load_image(nodes, archive);
        }
        let open = self.open(Call::Load { nodes });
        let coord = self.coord.clone();
        Box::pin(async move {
            let RelayStream { leader, mut send, mut recv } = open.await?;
            let mut buf: Vec<u8> = Vec::with_capacity(PIECE);
            loop {
                let next = archive.next().await;
                if let Some(Ok(bytes)) = &next {
                    buf.extend_from_slice(bytes);
                }
                let ended = next.is_none();
                if let Some(Err(e)) = next {
                    // The leader sees the stream reset, not an `End`: it
                    // imports nothing.
                    let _ = send.reset(0u32.into());
                    return Err(e);
                }
                while buf.len() >= PIECE || (ended && !buf.is_empty()) {
                    let take = buf.len().min(PIECE);
                    let piece: Vec<u8> = buf.drain(..take).collect();
                    write_frame(&mut send, &Up::Piece(piece), MAX_FRAME).await.map_err(lost)?;
                }
                if ended {
                    break;
                }
            }
            write_frame(&mut send, &Up::End, MAX_FRAME).await.map_err(lost)?;
            let _ = send.finish();
            let answer = tokio::select! {
                a = read_frame::<_, Down>(&mut recv, MAX_FRAME) => a,
                () = coord.leader_moved(leader) => Ok(None),
            };
            match answer {
                Ok(Some(Down::Loaded(r))) => {
                    Ok(r.into_iter().map(|(node, error)| ImageLoadResult { node, error }).collect())
                }
                Ok(Some(Down::Failed(e))) => Err(e),
                Ok(Some(other)) => Err(LiveError::Failed(format!("unexpected relay answer {other:?}"))),
                // The import may have happened: say so rather than "failed".
                Ok(None) | Err(_) => Err(LiveError::Unavailable(
                    "lost the leader before it answered; the image may or may not be loaded".into(),
                )),
            }
        })
    }
}

// --------------------------------------------------------------- leader

/// Serves relayed calls on the leader from its local agents.
pub struct RelayServer(pub AgentLive);

impl RelayHandler for RelayServer {
    fn serve(&self, open: Vec<u8>, send: quinn::SendStream, recv: quinn::RecvStream) -> BoxFuture<'static, ()> {
        let live = AgentLive(self.0.0.clone());
        async move {
            if let Err(e) = serve(live, open, send, recv).await {
                tracing::debug!("relayed call ended: {e}");
            }
        }
        .boxed()
    }
}

async fn serve(
    live: AgentLive,
    open: Vec<u8>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> Result<(), zoe_net::FrameError> {
    let call: Call = match zoe_net::frame::decode(&open) {
        Ok(c) => c,
        Err(e) => {
            let _ = send.reset(zoe_net::rpc::STREAM_BAD_FRAME.into());
            return Err(e);
        }
    };
    let leads = live.0.is_leader();
    let not_leader = || Down::Failed(LiveError::Unavailable("this coordinator no longer leads; ask again".into()));
    match call {
        Call::Nodes => {
            let n = live.live_nodes().await.map(|m| m.into_iter().map(|(k, v)| (k, v.into())).collect());
            write_frame(&mut send, &Down::Nodes(n), MAX_FRAME).await?;
        }
        Call::Reports => {
            write_frame(&mut send, &Down::Reports(live.live_reports().await), MAX_FRAME).await?;
        }
        Call::Logs { .. } | Call::Preload { .. } | Call::Load { .. } if !leads => {
            write_frame(&mut send, &not_leader(), MAX_FRAME).await?;
        }
        Call::Logs { node, container_id, offset, follow } => {
            let req = LogRequest { offset, follow };
            match live.0.clone().log_stream(node, container_id, req).await {
                Err(e) => write_frame(&mut send, &Down::Failed(e), MAX_FRAME).await?,
                Ok(mut chunks) => {
                    write_frame(&mut send, &Down::Ready, MAX_FRAME).await?;
                    loop {
                        // A follower whose client left stops the stream; a
                        // quiet `follow` would otherwise notice only at its
                        // next line.
                        let next = tokio::select! {
                            c = chunks.next() => c,
                            _ = send.stopped() => None,
                        };
                        let Some(c) = next else { break };
                        let d = match c {
                            Ok(c) => Down::Log { data: c.data.to_vec(), next_offset: c.next_offset },
                            Err(e) => Down::Failed(e),
                        };
                        // Waits while the follower's window is full; fails
                        // (and drops the agent's stream) once it is gone.
                        write_frame(&mut send, &d, MAX_FRAME).await?;
                    }
                }
            }
        }
        Call::Preload { image, nodes } => match live.preload(image, nodes).await {
            Err(e) => write_frame(&mut send, &Down::Failed(e), MAX_FRAME).await?,
            Ok(mut events) => {
                write_frame(&mut send, &Down::Ready, MAX_FRAME).await?;
                while let Some(p) = events.next().await {
                    let d = Down::Progress { node: p.node, done: p.done, error: p.error, message: p.message };
                    write_frame(&mut send, &d, MAX_FRAME).await?;
                }
            }
        },
        Call::Load { nodes } => {
            let pieces = futures::stream::unfold(Some(recv), |st| async move {
                let mut recv = st?;
                match read_frame::<_, Up>(&mut recv, MAX_FRAME).await {
                    Ok(Some(Up::Piece(p))) => Some((Ok(axum::body::Bytes::from(p)), Some(recv))),
                    Ok(Some(Up::End)) => None,
                    // Ended without `End`: a cut-off upload is not an image.
                    Ok(None) => Some((Err(LiveError::Failed("the upload was cut off".into())), None)),
                    Err(e) => Some((Err(LiveError::Failed(format!("the upload: {e}"))), None)),
                }
            });
            let d = match live.load_image(nodes, pieces.boxed()).await {
                Ok(r) => Down::Loaded(r.into_iter().map(|r| (r.node, r.error)).collect()),
                Err(e) => Down::Failed(e),
            };
            write_frame(&mut send, &d, MAX_FRAME).await?;
        }
    }
    let _ = send.finish();
    Ok(())
}
