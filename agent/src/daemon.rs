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

use crate::config::{AgentConfig, CoordinatorAddr};
use crate::error::Error;
use crate::network::PortMapping;
use crate::runtime::{Runtime, RuntimeConfig, ServiceState};
use crate::spec::{BindMount, NetworkMode, Ownership, Resources, ServiceSpec as AgentSpec};
use rand::Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use zoe_common::proto::{
    self, AgentEvent, AgentMessage, Command, CommandReply, CommandRequest, ContainerInfo, ContainerState,
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

#[derive(Default)]
struct SlowCache {
    images: Vec<ImageSummary>,
    orphans: Vec<ContainerInfo>,
    /// Images already sent to the current session.
    images_sent: Option<Vec<ImageSummary>>,
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
            if failures as usize % list.len().max(1) == 0 || list.len() == 1 {
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

    async fn connect(&self, target: &CoordinatorAddr) -> Result<quinn::Connection, String> {
        let addr = tokio::net::lookup_host(&target.addr)
            .await
            .map_err(|e| format!("resolving {}: {e}", target.addr))?
            .next()
            .ok_or_else(|| format!("{} resolves to nothing", target.addr))?;
        let connecting = self.endpoint.connect(addr, &target.server_name).map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
        // The server name may have been an address: the role must be
        // checked too, or any certificate of the CA with that IP would do.
        let id = zoe_net::peer_identity(&conn).map_err(|e| e.to_string())?;
        if id.role != Role::Coordinator {
            conn.close(0u32.into(), b"not a coordinator");
            return Err(format!("{} presented a {} certificate", target.addr, id.role));
        }
        Ok(conn)
    }

    async fn session(self: Arc<Self>, target: &CoordinatorAddr) -> Outcome {
        let conn = match self.connect(target).await {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e),
        };
        let open = match self.registration().await {
            Ok(o) => o,
            Err(e) => return Outcome::Failed(format!("inventory: {e}")),
        };
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(format!("opening the session: {e}")),
        };
        if let Err(e) = write_frame(&mut send, &open, proto::MAX_FRAME).await {
            return Outcome::Failed(format!("sending the registration: {e}"));
        }
        // In TLS 1.3 a coordinator refusing our certificate does so after
        // the handshake "succeeded": the first read is where it shows.
        let reply = match tokio::time::timeout(Duration::from_secs(15), read_frame(&mut recv, proto::MAX_FRAME)).await {
            Err(_) => return Outcome::Failed("no answer to the registration".into()),
            Ok(Err(e)) => {
                return Outcome::Failed(format!(
                    "registration refused or connection lost ({e}); is the certificate from this cluster's CA?"
                ));
            }
            Ok(Ok(None)) => return Outcome::Failed("coordinator closed the session".into()),
            Ok(Ok(Some(r))) => r,
        };
        let heartbeat = match reply {
            SessionReply::Accepted { node, heartbeat_ms } => {
                tracing::info!(coordinator = %target.addr, node, "registered with the leader");
                Duration::from_millis(heartbeat_ms.max(100))
            }
            SessionReply::NotLeader { leader } => {
                conn.close(0u32.into(), b"following the leader");
                return Outcome::Redirect(leader);
            }
            SessionReply::Refused { reason } => return Outcome::Failed(format!("refused: {reason}")),
        };
        self.slow.lock().expect("lock").images_sent = Some(open.registration.images.clone());

        // Commands arrive on streams the leader opens.
        let commands = {
            let me = self.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let me = me.clone();
                    tokio::spawn(async move { me.command_stream(send, recv).await });
                }
            })
        };
        let (lm_tx, mut lm_rx) = tokio::sync::mpsc::channel::<LeaderMessage>(16);
        let reader = tokio::spawn(async move {
            loop {
                match read_frame::<_, LeaderMessage>(&mut recv, proto::MAX_FRAME).await {
                    Ok(Some(m)) => {
                        if lm_tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("bad frame from the coordinator: {e}");
                        return;
                    }
                }
            }
        });
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut seq = 0u64;
        let outcome = loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    let stats = self.live_stats(seq % SLOW_EVERY == 0).await;
                    if let Err(e) = write_frame(&mut send, &AgentMessage::Heartbeat { seq, stats }, proto::MAX_FRAME).await {
                        break Outcome::Ended(format!("heartbeat: {e}"));
                    }
                }
                _ = self.outbox_ready.notified() => {
                    let events: Vec<AgentEvent> = self.outbox.lock().expect("lock").drain(..).collect();
                    let mut failed = None;
                    for (k, ev) in events.iter().enumerate() {
                        if let Err(e) = write_frame(&mut send, &AgentMessage::Event(ev.clone()), proto::MAX_FRAME).await {
                            // Keep what was not sent; the inventory at the next
                            // registration covers the rest anyway.
                            let mut ob = self.outbox.lock().expect("lock");
                            for ev in events[k..].iter().rev() {
                                ob.push_front(ev.clone());
                            }
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(e) = failed {
                        break Outcome::Ended(format!("event: {e}"));
                    }
                }
                m = lm_rx.recv() => match m {
                    Some(LeaderMessage::HeartbeatAck { .. }) => {}
                    Some(LeaderMessage::NotLeader { leader }) => break Outcome::Redirect(leader),
                    None => break Outcome::Ended(match conn.close_reason() {
                        Some(r) => r.to_string(),
                        None => "session stream closed".into(),
                    }),
                },
                r = conn.closed() => break Outcome::Ended(r.to_string()),
            }
        };
        reader.abort();
        commands.abort();
        conn.close(0u32.into(), b"session over");
        outcome
    }

    async fn registration(&self) -> Result<SessionOpen, Error> {
        let version = self.rt.containerd().version().await?.version;
        let (cores, memory) = {
            let s = self.rt.node_stats();
            (s.capacity_cpu, s.capacity_memory_bytes)
        };
        self.refresh_slow().await;
        let stats = self.live_stats(false).await;
        let images = self.slow.lock().expect("lock").images.clone();
        let registration = Registration {
            addresses: self.addresses(),
            cores_millis: cores.0,
            memory_bytes: memory,
            labels: self.cfg.labels.clone(),
            host_volumes: self.cfg.host_volumes.clone(),
            containerd_version: version,
            cgroup_mode: match crate::cgroup::version() {
                crate::cgroup::CgroupVersion::V1 => "v1".into(),
                crate::cgroup::CgroupVersion::V2 => "v2".into(),
            },
            images,
            containers: stats.containers.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        };
        Ok(SessionOpen { registration, stats })
    }

    fn addresses(&self) -> Vec<String> {
        if self.cfg.addresses.is_empty() { vec!["127.0.0.1".into()] } else { self.cfg.addresses.clone() }
    }

    /// Lists images and foreign containers (containerd round trips).
    async fn refresh_slow(&self) {
        let images = match self.rt.images().list().await {
            Ok(list) => Some(summarize_images(list)),
            Err(e) => {
                tracing::warn!("listing images: {e}");
                None
            }
        };
        let orphans = match self.rt.orphans().await {
            Ok(list) => Some(
                list.into_iter()
                    .map(|o| ContainerInfo {
                        container_id: o.id,
                        service_id: None,
                        state: if o.running {
                            ContainerState::Running
                        } else {
                            ContainerState::Exited { exit_code: None, oom_killed: false }
                        },
                        cores_in_use_millis: 0,
                        memory_in_use: 0,
                        core_limit_millis: None,
                        memory_limit: None,
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!("listing foreign containers: {e}");
                None
            }
        };
        let mut slow = self.slow.lock().expect("lock");
        if let Some(i) = images {
            slow.images = i;
        }
        if let Some(o) = orphans {
            slow.orphans = o;
        }
    }

    async fn live_stats(&self, refresh_slow: bool) -> LiveStats {
        if refresh_slow {
            self.refresh_slow().await;
        }
        let node = self.rt.node_stats();
        let now = Instant::now();
        let mut containers = Vec::new();
        let mut prev = self.cpu_prev.lock().expect("lock");
        let mut seen = HashSet::new();
        for s in self.rt.services() {
            let service_id = s.owner.service_id.parse().ok();
            let state = match s.state {
                ServiceState::Starting => ContainerState::Starting,
                ServiceState::Running { .. } => ContainerState::Running,
                ServiceState::Exited(e) => {
                    ContainerState::Exited { exit_code: e.code.map(|c| c as i32), oom_killed: e.oom_killed }
                }
            };
            let (mut cores, mut mem, mut core_limit, mut mem_limit) = (0, 0, None, None);
            if state.is_running() {
                if let Ok(u) = self.rt.usage(&s.id) {
                    mem = u.memory_bytes;
                    if let Some((ns, at)) = prev.get(&s.id) {
                        let dt = now.duration_since(*at).as_nanos().max(1) as f64;
                        cores = ((u.cpu_ns.saturating_sub(*ns)) as f64 / dt * 1000.0) as u32;
                    }
                    prev.insert(s.id.clone(), (u.cpu_ns, now));
                    seen.insert(s.id.clone());
                }
                if let Ok(l) = self.rt.limits(&s.id) {
                    core_limit =
                        l.cpu_quota_us.filter(|q| *q > 0).map(|q| (q as u64 * 1000 / l.cpu_period_us.max(1)) as u32);
                    mem_limit = l.memory_limit_bytes;
                }
            }
            containers.push(ContainerInfo {
                container_id: s.id,
                service_id,
                state,
                cores_in_use_millis: cores,
                memory_in_use: mem,
                core_limit_millis: core_limit,
                memory_limit: mem_limit,
            });
        }
        prev.retain(|k, _| seen.contains(k));
        drop(prev);
        let mut slow = self.slow.lock().expect("lock");
        containers.extend(slow.orphans.iter().cloned());
        let images = if slow.images_sent.as_ref() != Some(&slow.images) {
            slow.images_sent = Some(slow.images.clone());
            Some(slow.images.clone())
        } else {
            None
        };
        let running = containers.iter().filter(|c| c.state.is_running()).count() as u32;
        LiveStats {
            cores_total_millis: node.cores * 1000,
            memory_total: node.memory_total_bytes,
            cores_in_use_millis: (f64::from(node.cpu_usage_percent) / 100.0 * f64::from(node.cores) * 1000.0) as u32,
            memory_in_use: node.memory_total_bytes.saturating_sub(node.memory_available_bytes),
            container_count: running,
            containers,
            images,
        }
    }

    fn watch_exit(self: &Arc<Self>, id: &str) {
        if !self.watched.lock().expect("lock").insert(id.to_string()) {
            return;
        }
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let r = me.rt.wait(&id).await;
            me.watched.lock().expect("lock").remove(&id);
            let Ok(exit) = r else { return };
            if me.stopping.lock().expect("lock").contains(&id) {
                return;
            }
            let Ok(status) = me.rt.status(&id) else { return };
            let Ok(service_id) = status.owner.service_id.parse::<u64>() else { return };
            let reason = match (exit.oom_killed, exit.code) {
                (true, _) => "out of memory".to_string(),
                (false, Some(c)) => format!("exited with code {c}"),
                (false, None) => "exited (code unknown)".to_string(),
            };
            let time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            me.outbox.lock().expect("lock").push_back(AgentEvent::Exited {
                service_id,
                container_id: id,
                exit_code: exit.code.map(|c| c as i32),
                oom_killed: exit.oom_killed,
                reason,
                time_ms,
            });
            me.outbox_ready.notify_one();
        });
    }

    async fn command_stream(self: Arc<Self>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let req = match read_frame::<_, CommandRequest>(&mut recv, proto::MAX_FRAME).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("malformed command frame: {e}");
                let _ = recv.stop(zoe_net::rpc::STREAM_BAD_FRAME.into());
                let _ = send.reset(zoe_net::rpc::STREAM_BAD_FRAME.into());
                return;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<CommandReply>(16);
        let id = req.id;
        if let Some(newest) = self.fence(&req) {
            tracing::warn!(command = id, term = req.term, newest, "refused a deposed leader's command");
            let _ = write_frame(&mut send, &CommandReply::StaleTerm { newest }, proto::MAX_FRAME).await;
            let _ = send.finish();
            return;
        }
        let me = self.clone();
        let work = tokio::spawn(async move { me.execute(req.command, tx).await });
        while let Some(reply) = rx.recv().await {
            if write_frame(&mut send, &reply, proto::MAX_FRAME).await.is_err() {
                // The leader went away (or stopped following a log).
                work.abort();
                return;
            }
        }
        let _ = send.finish();
        tracing::debug!(command = id, "command answered");
    }

    /// The newest term obeyed, when `req` changes containers and comes
    /// from an older one; otherwise `None` (and a newer term is recorded).
    fn fence(&self, req: &CommandRequest) -> Option<u64> {
        if !matches!(req.command, Command::Spawn(_) | Command::Terminate { .. } | Command::Update { .. }) {
            return None;
        }
        let before = self.newest_term.fetch_max(req.term, std::sync::atomic::Ordering::SeqCst);
        (req.term < before).then_some(before)
    }

    async fn execute(self: Arc<Self>, cmd: Command, tx: tokio::sync::mpsc::Sender<CommandReply>) {
        let reply = match cmd {
            Command::Ping => CommandReply::Pong,
            Command::Spawn(spec) => {
                use tracing::Instrument;
                let span = tracing::info_span!(
                    "spawn",
                    execution_id = spec.0.execution_id,
                    service_id = spec.0.service_id,
                    container_id = %spec.0.container_id
                );
                self.spawn(spec.0).instrument(span).await
            }
            Command::Terminate { container_id, grace_ms } => {
                self.stopping.lock().expect("lock").insert(container_id.clone());
                match self.rt.stop(&container_id, Duration::from_millis(grace_ms)).await {
                    Ok(_) => CommandReply::Done,
                    Err(e) => CommandReply::Failed { retryable: true, message: e.to_string() },
                }
            }
            Command::Update { container_id, cores_millis, memory } => {
                match self.rt.update(&container_id, cores_millis.map(Millicores), memory).await {
                    Ok(()) => CommandReply::Done,
                    Err(e) => CommandReply::Failed { retryable: false, message: e.to_string() },
                }
            }
            Command::ListImages => match self.rt.images().list().await {
                Ok(l) => CommandReply::Images(summarize_images(l)),
                Err(e) => CommandReply::Failed { retryable: true, message: e.to_string() },
            },
            Command::Preload { reference } => {
                let ptx = tx.clone();
                let progress: crate::image::ProgressFn = Arc::new(move |p: &crate::image::Progress| {
                    let _ = ptx.try_send(CommandReply::Progress(ImageProgress {
                        image: p.image.clone(),
                        phase: format!("{:?}", p.phase).to_lowercase(),
                        done: p.done,
                        total: p.total,
                    }));
                });
                match self.rt.images().pull(&reference, Some(progress)).await {
                    Ok(_) => {
                        self.refresh_slow().await;
                        CommandReply::Done
                    }
                    Err(e) => CommandReply::Failed { retryable: e.is_retryable(), message: e.to_string() },
                }
            }
            Command::Logs { container_id, from, follow } => {
                self.logs(&container_id, from, follow, &tx).await;
                return;
            }
            Command::Network(n) => match self.rt.network().configure(n).await {
                Ok(()) => CommandReply::Done,
                Err(e) => CommandReply::Failed {
                    retryable: !matches!(e, crate::network::NetError::Invalid(_)),
                    message: e.to_string(),
                },
            },
            Command::Hosts { execution_id, entries } => {
                self.rt.network().set_hosts(&execution_id.to_string(), entries);
                CommandReply::Done
            }
            Command::ImageChunk { upload, offset, data, last } => {
                self.image_chunk(&upload, offset, &data, last, &tx).await
            }
        };
        let _ = tx.send(reply).await;
    }

    /// Writes one piece of an uploaded archive under `<data_dir>/uploads`;
    /// the last piece imports it and removes the file.
    async fn image_chunk(
        &self,
        upload: &str,
        offset: u64,
        data: &[u8],
        last: bool,
        tx: &tokio::sync::mpsc::Sender<CommandReply>,
    ) -> CommandReply {
        use tokio::io::AsyncWriteExt;
        let failed = |message: String| CommandReply::Failed { retryable: false, message };
        if !proto::valid_upload_name(upload) {
            return failed(format!("bad upload name {upload:?}"));
        }
        let dir = self.cfg.data_dir.join("uploads");
        let path = dir.join(format!("{upload}.tar"));
        let written = async {
            tokio::fs::create_dir_all(&dir).await?;
            let mut f = if offset == 0 {
                tokio::fs::File::create(&path).await?
            } else {
                let f = tokio::fs::OpenOptions::new().append(true).open(&path).await?;
                let len = f.metadata().await?.len();
                if len != offset {
                    return Err(std::io::Error::other(format!(
                        "upload {upload} has {len} bytes, piece starts at {offset}"
                    )));
                }
                f
            };
            f.write_all(data).await?;
            f.flush().await
        };
        if let Err(e) = written.await {
            let _ = tokio::fs::remove_file(&path).await;
            return failed(format!("writing {}: {e}", path.display()));
        }
        if !last {
            return CommandReply::Done;
        }
        let ptx = tx.clone();
        let progress: crate::image::ProgressFn = Arc::new(move |p: &crate::image::Progress| {
            let _ = ptx.try_send(CommandReply::Progress(ImageProgress {
                image: p.image.clone(),
                phase: format!("{:?}", p.phase).to_lowercase(),
                done: p.done,
                total: p.total,
            }));
        });
        let result = self.rt.images().import_archive(&path, None, Some(progress)).await;
        let _ = tokio::fs::remove_file(&path).await;
        match result {
            Ok(images) => {
                self.refresh_slow().await;
                tracing::info!(upload, images = ?images.iter().map(|i| &i.name).collect::<Vec<_>>(), "image archive imported");
                CommandReply::Done
            }
            Err(e) => failed(e.to_string()),
        }
    }

    async fn logs(&self, id: &str, from: u64, follow: bool, tx: &tokio::sync::mpsc::Sender<CommandReply>) {
        use futures::StreamExt;
        if follow {
            let mut stream = match self.rt.follow_logs(id, from) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(CommandReply::Failed { retryable: false, message: e.to_string() }).await;
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        if tx.send(CommandReply::Log { data: c.data, next: c.next }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(CommandReply::Failed { retryable: false, message: e.to_string() }).await;
                        return;
                    }
                }
            }
        } else {
            let mut at = from;
            loop {
                match self.rt.logs(id, at, proto::LOG_CHUNK).await {
                    Ok(c) if c.data.is_empty() => break,
                    Ok(c) => {
                        at = c.next;
                        if tx.send(CommandReply::Log { data: c.data, next: c.next }).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(CommandReply::Failed { retryable: false, message: e.to_string() }).await;
                        return;
                    }
                }
            }
        }
        let _ = tx.send(CommandReply::Done).await;
    }

    /// Starts a service; asking again for a container that exists answers
    /// with it (a new leader repeats the spawns it cannot know finished).
    async fn spawn(self: &Arc<Self>, spec: ServiceSpec) -> CommandReply {
        let id = spec.container_id.clone();
        let lock = self.spawn_locks.lock().expect("lock").entry(id.clone()).or_default().clone();
        let _guard = lock.lock().await;
        let mut agent_spec = to_agent_spec(&spec);
        let refused = crate::security::mount_host_volumes(&mut agent_spec, &spec, &self.cfg.host_volumes)
            .and_then(|()| crate::security::enforce(&mut agent_spec, &self.cfg.security))
            .err();
        // A bridged container's own address; otherwise the node's.
        let ip = || match agent_spec.network {
            NetworkMode::Bridge { .. } => self.rt.network().ip_of(&id),
            NetworkMode::Host => self.addresses().into_iter().next(),
        };
        let reply = if let Some(e) = refused {
            tracing::warn!(service = %id, "refused by this node's [security]: {e}");
            CommandReply::Failed { retryable: false, message: e.to_string() }
        } else if self.rt.status(&id).is_ok() {
            self.watch_exit(&id);
            CommandReply::Started { container_id: id.clone(), ip_address: ip() }
        } else {
            match self.ensure_image(&spec.image).await {
                Err(e) => CommandReply::Failed { retryable: e.is_retryable(), message: e.to_string() },
                Ok(()) => match self.rt.spawn(&agent_spec).await {
                    Ok(_) => {
                        self.watch_exit(&id);
                        CommandReply::Started { container_id: id.clone(), ip_address: ip() }
                    }
                    Err(e) => CommandReply::Failed { retryable: e.is_retryable(), message: e.to_string() },
                },
            }
        };
        drop(_guard);
        self.spawn_locks.lock().expect("lock").remove(&id);
        reply
    }

    async fn ensure_image(&self, image: &str) -> Result<(), Error> {
        if self.rt.images().exists(image).await? {
            return Ok(());
        }
        tracing::info!(image, "pulling");
        self.rt.images().pull(image, None).await?;
        Ok(())
    }
}

enum Outcome {
    Redirect(Option<String>),
    Ended(String),
    Failed(String),
}

fn summarize_images(list: Vec<crate::image::ImageInfo>) -> Vec<ImageSummary> {
    let mut by_digest: std::collections::BTreeMap<String, ImageSummary> = Default::default();
    for i in list {
        let e = by_digest.entry(i.digest.clone()).or_insert_with(|| ImageSummary {
            names: Vec::new(),
            digest: i.digest.clone(),
            size: i.size,
        });
        e.names.push(i.name);
    }
    by_digest.into_values().collect()
}

/// The leader's wire spec as the runtime's spec. The leader has resolved
/// the network: `bridge` is the cluster network with the ports it
/// allocated; anything else is the host's (ports are the container's own).
pub fn to_agent_spec(s: &ServiceSpec) -> AgentSpec {
    let network = if s.network.as_deref() == Some(zoe_common::service::NETWORK_BRIDGE) {
        NetworkMode::Bridge {
            ports: s
                .ports
                .iter()
                .filter(|p| p.host_port != 0)
                .map(|p| PortMapping {
                    host_port: p.host_port,
                    container_port: p.port_number,
                    protocol: p.protocol.as_str().to_string(),
                })
                .collect(),
        }
    } else {
        NetworkMode::Host
    };
    AgentSpec {
        id: s.container_id.clone(),
        image: s.image.clone(),
        entrypoint: None,
        command: s.command.clone(),
        env: s.env.iter().cloned().collect(),
        working_dir: s.working_dir.clone(),
        user: None,
        hostname: Some(s.hostname.clone()),
        // Host volumes are the node's to resolve (`security::mount_host_volumes`).
        mounts: s
            .mounts
            .iter()
            .filter(|m| m.host_volume.is_none())
            .map(|m| BindMount {
                source: m.source.clone().into(),
                target: m.target.clone(),
                read_only: m.read_only,
                host_volume: None,
            })
            .collect(),
        owner: Ownership {
            execution_id: s.execution_id.to_string(),
            service_id: s.service_id.to_string(),
            instance_name: s.instance.clone(),
        },
        labels: s.labels.clone(),
        resources: Resources {
            cpu: (s.cores.0 > 0).then_some(s.cores),
            memory_bytes: s.memory_limit,
            pids: None,
            shm_bytes: s.shm,
        },
        network,
        // The subordinate range is the node's: `security::enforce` sets it.
        user_namespace: (!s.identity.host_root).then_some(crate::idmap::IdMapping {
            root_uid: s.identity.fs_uid,
            root_gid: s.identity.fs_gid,
            base: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spec_maps_to_runtime_spec() {
        let s = ServiceSpec {
            service_id: 9,
            execution_id: 4,
            container_id: "zoe-4-w1-0".into(),
            instance: "w1".into(),
            image: "docker.io/library/busybox:latest".into(),
            command: Some(vec!["sleep".into(), "5".into()]),
            env: vec![("K".into(), "v".into())],
            working_dir: None,
            hostname: "w1".into(),
            mounts: vec![],
            labels: Default::default(),
            cores: Millicores(500),
            cores_min: Millicores(250),
            memory_limit: Some(32 << 20),
            shm: None,
            ports: vec![],
            network: None,
            identity: zoe_common::service::Identity { fs_uid: 1000, fs_gid: 5001, ..Default::default() },
        };
        let a = to_agent_spec(&s);
        assert_eq!(a.network, NetworkMode::Host);
        let m = a.user_namespace.expect("a user namespace unless host_root");
        assert_eq!((m.root_uid, m.root_gid), (1000, 5001));
        let root = ServiceSpec {
            identity: zoe_common::service::Identity { host_root: true, ..s.identity.clone() },
            ..s.clone()
        };
        assert_eq!(to_agent_spec(&root).user_namespace, None);
        let bridged = ServiceSpec {
            network: Some("bridge".into()),
            ports: vec![
                zoe_common::service::PortSpec {
                    port_number: 8080,
                    protocol: zoe_common::zapp::Protocol::Tcp,
                    host_port: 20001,
                },
                // Not published (no host port): not mapped.
                zoe_common::service::PortSpec {
                    port_number: 9,
                    protocol: zoe_common::zapp::Protocol::Udp,
                    host_port: 0,
                },
            ],
            ..s.clone()
        };
        let b = to_agent_spec(&bridged);
        assert_eq!(
            b.network,
            NetworkMode::Bridge {
                ports: vec![PortMapping { host_port: 20001, container_port: 8080, protocol: "tcp".into() }]
            }
        );
        assert_eq!(a.id, "zoe-4-w1-0");
        assert_eq!(a.owner.service_id, "9");
        assert_eq!(a.resources.cpu, Some(Millicores(500)));
        assert_eq!(a.env.get("K").map(String::as_str), Some("v"));
        crate::spec::validate_id(&a.id).unwrap();
    }
}
