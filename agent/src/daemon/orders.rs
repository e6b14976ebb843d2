//! The leader's commands, one stream each: fenced by the leader's term,
//! carried out on the runtime, answered with progress and one final reply.

use super::heartbeat::summarize_images;
use super::*;

impl Agent {
    pub(super) async fn command_stream(self: Arc<Self>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
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
    pub(super) fn fence(&self, req: &CommandRequest) -> Option<u64> {
        if !matches!(req.command, AgentCommand::Spawn(_) | AgentCommand::Terminate { .. } | AgentCommand::Update { .. })
        {
            return None;
        }
        let before = self.newest_term.fetch_max(req.term, std::sync::atomic::Ordering::SeqCst);
        (req.term < before).then_some(before)
    }

    pub(super) async fn execute(self: Arc<Self>, cmd: AgentCommand, tx: tokio::sync::mpsc::Sender<CommandReply>) {
        let reply = match cmd {
            AgentCommand::Ping => CommandReply::Pong,
            AgentCommand::Spawn(spec) => {
                use tracing::Instrument;
                let span = tracing::info_span!(
                    "spawn",
                    execution_id = spec.0.execution_id,
                    service_id = spec.0.service_id,
                    container_id = %spec.0.container_id
                );
                self.spawn(spec.0).instrument(span).await
            }
            AgentCommand::Terminate { container_id, grace_ms } => {
                self.stopping.lock().expect("lock").insert(container_id.clone());
                match self.rt.stop(&container_id, Duration::from_millis(grace_ms)).await {
                    Ok(_) => CommandReply::Done,
                    Err(e) => CommandReply::Failed { retryable: true, message: e.to_string() },
                }
            }
            AgentCommand::Update { container_id, cores_millis, memory } => {
                match self.rt.update(&container_id, cores_millis.map(Millicores), memory).await {
                    Ok(()) => CommandReply::Done,
                    Err(e) => CommandReply::Failed { retryable: false, message: e.to_string() },
                }
            }
            AgentCommand::ListImages => match self.rt.images().list().await {
                Ok(l) => CommandReply::Images(summarize_images(l)),
                Err(e) => CommandReply::Failed { retryable: true, message: e.to_string() },
            },
            AgentCommand::Preload { reference } => {
                let progress = progress_to(&tx);
                match self.rt.images().pull(&reference, Some(progress)).await {
                    Ok(_) => {
                        self.refresh_slow().await;
                        CommandReply::Done
                    }
                    Err(e) => CommandReply::Failed { retryable: e.is_retryable(), message: e.to_string() },
                }
            }
            AgentCommand::Logs { container_id, from, follow } => {
                self.logs(&container_id, from, follow, &tx).await;
                return;
            }
            AgentCommand::Network(n) => match self.rt.network().configure(n).await {
                Ok(()) => CommandReply::Done,
                Err(e) => CommandReply::Failed {
                    retryable: !matches!(e, crate::network::NetError::Invalid(_)),
                    message: e.to_string(),
                },
            },
            AgentCommand::Hosts { execution_id, entries } => {
                self.rt.network().set_hosts(&execution_id.to_string(), entries);
                CommandReply::Done
            }
            AgentCommand::ImageChunk { upload, offset, data, last } => {
                self.image_chunk(&upload, offset, &data, last, &tx).await
            }
        };
        let _ = tx.send(reply).await;
    }

    /// Writes one piece of an uploaded archive under `<data_dir>/uploads`;
    /// the last piece imports it and removes the file.
    pub(super) async fn image_chunk(
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
        let progress = progress_to(tx);
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

    pub(super) async fn logs(&self, id: &str, from: u64, follow: bool, tx: &tokio::sync::mpsc::Sender<CommandReply>) {
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
    pub(super) async fn spawn(self: &Arc<Self>, spec: ServiceSpec) -> CommandReply {
        let id = spec.container_id.clone();
        let lock = self.spawn_locks.lock().expect("lock").entry(id.clone()).or_default().clone();
        let _guard = lock.lock().await;
        let mut agent_spec = to_container_spec(&spec);
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

    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), Error> {
        if self.rt.images().exists(image).await? {
            return Ok(());
        }
        tracing::info!(image, "pulling");
        self.rt.images().pull(image, None).await?;
        Ok(())
    }
}

/// Image progress as replies on the command's stream; dropped when the
/// stream is behind (progress is advisory, the final reply is not).
fn progress_to(tx: &tokio::sync::mpsc::Sender<CommandReply>) -> crate::image::ProgressFn {
    let tx = tx.clone();
    Arc::new(move |p: &crate::image::Progress| {
        let _ = tx.try_send(CommandReply::Progress(ImageProgress {
            image: p.image.clone(),
            phase: format!("{:?}", p.phase).to_lowercase(),
            done: p.done,
            total: p.total,
        }));
    })
}

/// The leader's wire spec as the runtime's spec. The leader has resolved
/// the network: `bridge` is the cluster network with the ports it
/// allocated; anything else is the host's (ports are the container's own).
pub fn to_container_spec(s: &ServiceSpec) -> ContainerSpec {
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
    ContainerSpec {
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
            env: vec![("K".into(), "v".into())],
            cores: Millicores(500),
            cores_min: Millicores(250),
            memory_limit: Some(32 << 20),
            identity: zoe_common::service::Identity { fs_uid: 1000, fs_gid: 5001, ..Default::default() },
            ..ServiceSpec::plain(9, 4, "zoe-4-w1-0", "w1", "docker.io/library/busybox:latest", &["sleep", "5"])
        };
        let a = to_container_spec(&s);
        assert_eq!(a.network, NetworkMode::Host);
        let m = a.user_namespace.expect("a user namespace unless host_root");
        assert_eq!((m.root_uid, m.root_gid), (1000, 5001));
        let root = ServiceSpec {
            identity: zoe_common::service::Identity { host_root: true, ..s.identity.clone() },
            ..s.clone()
        };
        assert_eq!(to_container_spec(&root).user_namespace, None);
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
        let b = to_container_spec(&bridged);
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
