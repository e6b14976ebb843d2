//! Exits: containerd's event stream, what the agent does when a task ends
//! (OOM counter, task deletion, log end, the exit recorded on the
//! container's labels) and waiting for it.

use super::*;

impl Runtime {
    /// Subscribes to this namespace's events and makes sure the
    /// subscription is live: containerd sends no response headers until
    /// the first event, so the agent publishes probe events until one comes
    /// back through the stream.
    pub(super) async fn subscribe(&self) -> Result<tonic::Streaming<containerd_client::types::Envelope>> {
        let ctd = self.inner.ctd.clone();
        let filter = format!("namespace=={}", ctd.namespace());
        let mut client = ctd.events();
        let sub = client.subscribe(SubscribeRequest { filters: vec![filter] });
        tokio::pin!(sub);
        let probe = || async {
            let ev = prost_types::Any { type_url: "zoe.Probe".into(), value: Vec::new() };
            ctd.events()
                .publish(ctd.rq(PublishRequest { topic: PROBE_TOPIC.into(), event: Some(ev) }))
                .await
                .map_err(Error::ctd("publish probe event"))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            tokio::select! {
                r = &mut sub => break r.map_err(Error::ctd("subscribe to events"))?.into_inner(),
                _ = tokio::time::sleep(Duration::from_millis(25)) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(Error::Timeout { what: "the event subscription".into(), secs: 30 });
                    }
                    probe().await?;
                }
            }
        };
        loop {
            tokio::select! {
                m = stream.next() => match m {
                    Some(Ok(env)) if env.topic == PROBE_TOPIC => return Ok(stream),
                    Some(Ok(_)) => {}
                    Some(Err(s)) => return Err(Error::Containerd { op: "event stream", status: s }),
                    None => return Err(Error::EventsLost),
                },
                _ = tokio::time::sleep(Duration::from_millis(25)) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(Error::Timeout { what: "the event subscription".into(), secs: 30 });
                    }
                    probe().await?;
                }
            }
        }
    }

    /// What happens when containerd reports the init process's exit.
    pub(super) async fn handle_exit(&self, svc: Arc<Service>, exit_status: Option<u32>) {
        if svc.exit_handled.swap(true, Ordering::SeqCst) {
            return;
        }
        // Read the OOM counter while the cgroup still exists (task delete
        // removes it); the TaskOOM event may arrive after TaskExit.
        let oom = svc.saw_oom.load(Ordering::SeqCst) || svc.cgroup.oom_kills() > 0;
        let t0 = std::time::Instant::now();
        // The exit is recorded on the container before the task goes: an
        // agent killed in between restarts to a container without a task
        // and with its exit, never to one whose ending it cannot tell from
        // a start that never happened (see `reattach`).
        if let Some(code) = exit_status {
            self.record_exit(&svc.id, ExitStatus { code: Some(code), oom_killed: oom }).await;
        }
        let deleted = self.delete_task(&svc.id).await;
        let t_delete = t0.elapsed();
        svc.task_deleted.store(deleted.is_ok(), Ordering::SeqCst);
        let code = match deleted {
            Ok(Some(c)) => Some(c),
            Ok(None) => exit_status,
            Err(e) => {
                tracing::warn!(service = %svc.id, error = %e, "deleting the exited task failed");
                exit_status
            }
        }
        .or(exit_status);
        let status = ExitStatus { code, oom_killed: oom };
        // An exited container needs no address: release it now rather than
        // when the leader gets round to removing the container.
        if let Err(e) = self.inner.net.detach(&svc.id).await {
            tracing::warn!(service = %svc.id, error = %e, "releasing the container's network failed");
        }
        let pump = svc.pump.lock().await.take();
        // Independent: drain the log while containerd records the exit.
        let finish = async {
            if let Some(p) = pump {
                p.finish().await;
            }
        };
        let record = async {
            if exit_status.is_none() {
                self.record_exit(&svc.id, status).await;
            }
        };
        tokio::join!(finish, record);
        tracing::info!(
            service = %svc.id,
            code = ?code,
            oom,
            task_delete_ms = t_delete.as_secs_f64() * 1e3,
            logs_and_record_ms = (t0.elapsed() - t_delete).as_secs_f64() * 1e3,
            "exited"
        );
        svc.state.send_replace(ServiceState::Exited(status));
    }

    /// Keeps the exit on the container record, for a restarted agent.
    pub(super) async fn record_exit(&self, id: &str, status: ExitStatus) {
        let ctd = &self.inner.ctd;
        let mut labels = HashMap::new();
        if let Some(c) = status.code {
            labels.insert(LABEL_EXIT_CODE.to_string(), c.to_string());
        }
        labels.insert(LABEL_OOM.to_string(), status.oom_killed.to_string());
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let container = Container { id: id.to_string(), labels, ..Default::default() };
        let req =
            UpdateContainerRequest { container: Some(container), update_mask: Some(prost_types::FieldMask { paths }) };
        if let Err(s) = ctd.containers().update(ctd.rq(req)).await
            && s.code() != tonic::Code::NotFound
        {
            tracing::warn!(service = id, error = %s, "could not record the exit on the container");
        }
    }

    /// Waits until the service has exited.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let svc = self.service(id).ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        let mut rx = svc.state.subscribe();
        let s = rx.wait_for(|s| matches!(s, ServiceState::Exited(_))).await.map_err(|_| Error::EventsLost)?;
        match *s {
            ServiceState::Exited(e) => Ok(e),
            _ => unreachable!("wait_for returned a non-exited state"),
        }
    }

    pub(super) async fn wait_timeout(&self, svc: &Service, t: Duration) -> Option<ExitStatus> {
        let mut rx = svc.state.subscribe();
        match tokio::time::timeout(t, rx.wait_for(|s| matches!(s, ServiceState::Exited(_)))).await {
            Ok(Ok(s)) => match *s {
                ServiceState::Exited(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Dispatches task exits and OOMs to services. Holds only a weak reference
/// so that dropping the last `Runtime` ends it.
pub(super) async fn event_loop(
    weak: std::sync::Weak<Inner>,
    mut stream: tonic::Streaming<containerd_client::types::Envelope>,
) {
    loop {
        while let Some(msg) = stream.next().await {
            let Some(inner) = weak.upgrade() else { return };
            let rt = Runtime { inner };
            let env = match msg {
                Ok(e) => e,
                Err(s) => {
                    tracing::warn!(error = %s, "event stream error");
                    break;
                }
            };
            let Some(ev) = env.event else { continue };
            match ev.type_url.trim_start_matches('/') {
                TYPE_TASK_EXIT => {
                    let Ok(e) = TaskExit::decode(ev.value.as_slice()) else { continue };
                    // Exits of exec'd processes are not the service's.
                    if !e.id.is_empty() && e.id != e.container_id {
                        continue;
                    }
                    if let Some(svc) = rt.service(&e.container_id) {
                        tokio::spawn(async move { rt.handle_exit(svc, Some(e.exit_status)).await });
                    }
                }
                TYPE_TASK_OOM => {
                    if let Ok(e) = TaskOom::decode(ev.value.as_slice())
                        && let Some(svc) = rt.service(&e.container_id)
                    {
                        svc.saw_oom.store(true, Ordering::SeqCst);
                    }
                }
                _ => {}
            }
        }
        // The stream ended (containerd restarted?): subscribe again, then
        // look for exits missed in between.
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let rt = Runtime { inner };
            match rt.subscribe().await {
                Ok(s) => {
                    stream = s;
                    rt.reconcile().await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resubscribing to events failed; retrying");
                    drop(rt);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
