//! Stopping a service: signal, wait, then tear down in the order that does
//! not race containerd's GC (task, snapshot, container).

use super::*;

impl Runtime {
    pub(super) async fn container_exists(&self, id: &str) -> Result<bool> {
        let ctd = &self.inner.ctd;
        match ctd.containers().get(ctd.rq(GetContainerRequest { id: id.to_string() })).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::Containerd { op: "get container", status: s }),
        }
    }

    pub(super) async fn remove_snapshot(&self, key: &str) -> Result<()> {
        let ctd = &self.inner.ctd;
        let req = RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: key.to_string() };
        match ctd.snapshots().remove(ctd.rq(req)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::Containerd { op: "remove snapshot", status: s }),
        }
    }

    pub(super) async fn delete_task(&self, id: &str) -> Result<Option<u32>> {
        let ctd = &self.inner.ctd;
        match ctd.tasks().delete(ctd.rq(DeleteTaskRequest { container_id: id.to_string() })).await {
            Ok(r) => Ok(Some(r.into_inner().exit_status)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::Containerd { op: "delete task", status: s }),
        }
    }

    /// Task, snapshot, container: the Go client's order. The reverse races
    /// the GC ("snapshot does not exist").
    pub(super) async fn teardown(&self, id: &str, task_gone: bool) -> Result<()> {
        if !task_gone {
            self.delete_task(id).await?;
        }
        self.remove_snapshot(id).await?;
        let ctd = &self.inner.ctd;
        match ctd.containers().delete(ctd.rq(DeleteContainerRequest { id: id.to_string() })).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Error::Containerd { op: "delete container", status: s }),
        }
        let _ = std::fs::remove_dir_all(self.run_dir(id));
        // DEL always runs on stop; a failure is logged and the next agent
        // start reclaims what is left.
        if let Err(e) = self.inner.net.detach(id).await {
            tracing::warn!(service = id, error = %e, "releasing the container's network failed");
        }
        // runc leaves nothing behind for a deleted task, but a task that
        // never started may leave an empty cgroup; removing it is cheap.
        Ok(())
    }

    pub(super) async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let ctd = &self.inner.ctd;
        let req = KillRequest { container_id: id.to_string(), exec_id: String::new(), signal, all };
        match ctd.tasks().kill(ctd.rq(req)).await {
            Ok(_) => Ok(()),
            // Already gone: what we wanted.
            Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(Error::Containerd { op: "kill task", status: s }),
        }
    }

    /// Stops a service and removes its container: SIGTERM to its main
    /// process, `grace` to exit, then SIGKILL to every process in it; then
    /// task, snapshot and container are deleted. Stopping a service that
    /// is already gone is success. Logs stay on disk. Returns how it ended
    /// when the agent saw it end.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<Option<ExitStatus>> {
        let Some(svc) = self.service(id) else {
            // Not ours (an orphan) or already stopped: make sure nothing is
            // left. Kill is asynchronous; the task can only be deleted once
            // it has stopped, so wait for it (Tasks.Wait returns at once for
            // a stopped task and NotFound for none).
            self.kill(id, SIGKILL, true).await?;
            let ctd = &self.inner.ctd;
            let mut tasks = ctd.tasks();
            let wait = tasks.wait(ctd.rq(WaitRequest { container_id: id.to_string(), exec_id: String::new() }));
            match tokio::time::timeout(Duration::from_secs(30), wait).await {
                Ok(Ok(_)) => {}
                Ok(Err(s)) if s.code() == tonic::Code::NotFound => {}
                Ok(Err(s)) => return Err(Error::Containerd { op: "wait task", status: s }),
                Err(_) => return Err(Error::Timeout { what: format!("{id} to die after SIGKILL"), secs: 30 }),
            }
            self.teardown(id, false).await?;
            return Ok(None);
        };
        let mut exit = match *svc.state.borrow() {
            ServiceState::Exited(e) => Some(e),
            _ => None,
        };
        if exit.is_none() {
            self.kill(id, SIGTERM, false).await?;
            exit = self.wait_timeout(&svc, grace).await;
        }
        if exit.is_none() {
            tracing::info!(service = id, grace_ms = grace.as_millis() as u64, "grace period over; killing");
            self.kill(id, SIGKILL, true).await?;
            exit = self.wait_timeout(&svc, Duration::from_secs(30)).await;
            if exit.is_none() {
                return Err(Error::Timeout { what: format!("{id} to die after SIGKILL"), secs: 30 });
            }
        }
        // The exit handler deleted the task before reporting the exit.
        self.teardown(id, svc.task_deleted.load(Ordering::SeqCst)).await?;
        self.inner.services.lock().expect("lock").remove(id);
        Ok(exit)
    }
}
