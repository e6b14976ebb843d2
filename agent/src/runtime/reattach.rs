//! After an agent restart: the services containerd still holds are
//! attached again (their logs and exits), orphans listed, and what ended
//! while the agent was away reconciled.

use super::*;

impl Runtime {
    /// Rebuilds the table of services from containerd: zoe-labelled
    /// containers become services again (running ones keep running; their
    /// logs are picked up again), exits that happened meanwhile are
    /// collected. Nothing is restarted.
    pub(super) async fn reattach(&self) -> Result<()> {
        let ctd = &self.inner.ctd;
        let containers = self.list_containers().await?;
        for c in containers {
            let Some(service_id) = c.labels.get(LABEL_SERVICE) else { continue };
            let owner = Ownership {
                execution_id: c.labels.get(LABEL_EXECUTION).cloned().unwrap_or_default(),
                service_id: service_id.clone(),
                instance_name: c.labels.get(LABEL_INSTANCE).cloned().unwrap_or_default(),
            };
            let svc = self.new_service(&c.id, &c.image, owner);
            self.inner.services.lock().expect("lock").insert(c.id.clone(), svc.clone());
            let task = ctd.tasks().get(ctd.rq(GetRequest { container_id: c.id.clone(), exec_id: String::new() })).await;
            let process = match task {
                Ok(r) => r.into_inner().process,
                Err(s) if s.code() == tonic::Code::NotFound => None,
                Err(s) => return Err(Error::Containerd { op: "get task", status: s }),
            };
            let recorded = c.labels.contains_key(LABEL_OOM);
            let never_started = match &process {
                Some(p) => p.status == TaskStatus::Created as i32,
                None => !recorded,
            };
            if never_started {
                // An agent died between creating the container and
                // starting its task: nothing of the service ever ran. Left
                // registered, it would pass for a start (or an exit with no
                // code); removed, the leader's repeated spawn creates it
                // again under the same id, and it runs once.
                tracing::info!(service = %c.id, "removing a container whose start never happened");
                self.inner.services.lock().expect("lock").remove(&c.id);
                if let Err(e) = self.stop(&c.id, Duration::ZERO).await {
                    tracing::warn!(service = %c.id, error = %e, "removing a never-started container failed");
                }
                continue;
            }
            match process {
                Some(p) if p.status == TaskStatus::Stopped as i32 => {
                    self.attach_logs(&svc).await;
                    self.handle_exit(svc, Some(p.exit_status)).await;
                }
                Some(p) => {
                    self.attach_logs(&svc).await;
                    svc.state.send_if_modified(|s| {
                        if *s == ServiceState::Starting {
                            *s = ServiceState::Running { pid: p.pid };
                            true
                        } else {
                            false
                        }
                    });
                }
                None => {
                    svc.exit_handled.store(true, Ordering::SeqCst);
                    let code = c.labels.get(LABEL_EXIT_CODE).and_then(|v| v.parse().ok());
                    let oom = c.labels.get(LABEL_OOM).is_some_and(|v| v == "true");
                    svc.state.send_replace(ServiceState::Exited(ExitStatus { code, oom_killed: oom }));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn attach_logs(&self, svc: &Arc<Service>) {
        let run = self.run_dir(&svc.id);
        let fifos = Fifos { stdout: run.join("stdout"), stderr: run.join("stderr") };
        if !fifos.stdout.exists() || !fifos.stderr.exists() {
            tracing::warn!(service = %svc.id, "log pipes are gone; its output is lost until it exits");
            return;
        }
        match LogPump::start(&fifos, &svc.log_dir, self.inner.cfg.logs, svc.log_progress.clone()).await {
            Ok(p) => *svc.pump.lock().await = Some(p),
            Err(e) => tracing::warn!(service = %svc.id, error = %e, "could not reopen the log pipes"),
        }
    }

    /// Every container in the agent's namespace, zoe's or not.
    pub(super) async fn list_containers(&self) -> Result<Vec<containerd_client::services::v1::Container>> {
        let ctd = &self.inner.ctd;
        Ok(ctd
            .containers()
            .list(ctd.rq(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(Error::ctd("list containers"))?
            .into_inner()
            .containers)
    }

    /// Containers in the namespace without zoe's labels.
    pub async fn orphans(&self) -> Result<Vec<Orphan>> {
        let ctd = &self.inner.ctd;
        let containers = self.list_containers().await?;
        let mut out = Vec::new();
        for c in containers {
            if c.labels.contains_key(LABEL_SERVICE) {
                continue;
            }
            let running = match ctd
                .tasks()
                .get(ctd.rq(GetRequest { container_id: c.id.clone(), exec_id: String::new() }))
                .await
            {
                Ok(r) => r.into_inner().process.is_some_and(|p| p.status == TaskStatus::Running as i32),
                Err(_) => false,
            };
            out.push(Orphan { id: c.id, image: c.image, labels: c.labels.into_iter().collect(), running });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Rechecks running services against containerd (after the event
    /// stream was lost, exits may have gone unseen).
    pub(super) async fn reconcile(&self) {
        let running: Vec<Arc<Service>> = self
            .inner
            .services
            .lock()
            .expect("lock")
            .values()
            .filter(|s| !matches!(*s.state.borrow(), ServiceState::Exited(_)))
            .cloned()
            .collect();
        let ctd = &self.inner.ctd;
        for svc in running {
            let r = ctd.tasks().get(ctd.rq(GetRequest { container_id: svc.id.clone(), exec_id: String::new() })).await;
            match r {
                Ok(r) => {
                    if let Some(p) = r.into_inner().process
                        && p.status == TaskStatus::Stopped as i32
                    {
                        let rt = self.clone();
                        tokio::spawn(async move { rt.handle_exit(svc, Some(p.exit_status)).await });
                    }
                }
                Err(s) if s.code() == tonic::Code::NotFound => {
                    let rt = self.clone();
                    tokio::spawn(async move { rt.handle_exit(svc, None).await });
                }
                Err(_) => {}
            }
        }
    }
}
