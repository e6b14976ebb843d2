//! The agent's session with the leader: connecting (a follower redirects
//! to the leader), registering with the full inventory, then heartbeats
//! and events until the session ends.

use super::*;

/// Why no connection to a coordinator was made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("resolving {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} resolves to nothing")]
    NoAddress(String),
    #[error("{0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("handshake timed out")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    #[error("{0}")]
    Identity(#[from] zoe_net::NetError),
    #[error("{addr} presented a {role} certificate")]
    NotCoordinator { addr: String, role: Role },
}

impl Agent {
    pub(super) async fn connect(&self, target: &CoordinatorAddr) -> Result<quinn::Connection, ConnectError> {
        let addr = tokio::net::lookup_host(&target.addr)
            .await
            .map_err(|source| ConnectError::Resolve { addr: target.addr.clone(), source })?
            .next()
            .ok_or_else(|| ConnectError::NoAddress(target.addr.clone()))?;
        let connecting = self.endpoint.connect(addr, &target.server_name)?;
        let conn =
            tokio::time::timeout(Duration::from_secs(5), connecting).await.map_err(|_| ConnectError::Timeout)??;
        // The server name may have been an address: the role must be
        // checked too, or any certificate of the CA with that IP would do.
        let id = zoe_net::peer_identity(&conn)?;
        if id.role != Role::Coordinator {
            conn.close(0u32.into(), b"not a coordinator");
            return Err(ConnectError::NotCoordinator { addr: target.addr.clone(), role: id.role });
        }
        Ok(conn)
    }

    pub(super) async fn session(self: Arc<Self>, target: &CoordinatorAddr) -> Outcome {
        let conn = match self.connect(target).await {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e.to_string()),
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
                    let stats = self.live_stats(seq.is_multiple_of(SLOW_EVERY)).await;
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

    pub(super) async fn registration(&self) -> Result<SessionOpen, Error> {
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

    pub(super) fn addresses(&self) -> Vec<String> {
        if self.cfg.addresses.is_empty() { vec!["127.0.0.1".into()] } else { self.cfg.addresses.clone() }
    }
}

pub(super) enum Outcome {
    Redirect(Option<String>),
    Ended(String),
    Failed(String),
}
