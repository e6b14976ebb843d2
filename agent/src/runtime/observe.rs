//! A running service's limits, usage and logs, and the node's stats.

use super::*;

impl Runtime {
    /// Changes the CPU and memory limits of a running service (Zoe's
    /// dynamic core sharing) and checks the cgroup took them.
    pub async fn update(&self, id: &str, cpu: Option<Millicores>, memory_bytes: Option<u64>) -> Result<()> {
        let svc = self.service(id).ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        if !matches!(*svc.state.borrow(), ServiceState::Running { .. }) {
            return Err(Error::NotRunning(id.to_string()));
        }
        let res = linux_resources(
            &crate::spec::Resources { cpu, memory_bytes, pids: None, shm_bytes: None },
            false,
            self.inner.cpu_cap,
        )?;
        let value = serde_json::to_vec(&res)
            .map_err(|e| Error::InvalidSpec { field: "resources".into(), reason: e.to_string() })?;
        let ctd = &self.inner.ctd;
        let req = UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(prost_types::Any { type_url: RESOURCES_TYPE_URL.into(), value }),
            annotations: HashMap::new(),
        };
        ctd.tasks().update(ctd.rq(req)).await.map_err(Error::ctd("update task"))?;
        let got = svc.cgroup.limits()?;
        if let Some(c) = cpu {
            let want = crate::spec::cfs_quota(c, self.inner.cpu_cap);
            if got.cpu_quota_us != Some(want) {
                return Err(Error::UpdateNotApplied {
                    id: id.to_string(),
                    file: "cpu quota".into(),
                    actual: format!("{:?}", got.cpu_quota_us),
                    wanted: want.to_string(),
                });
            }
        }
        if let Some(m) = memory_bytes {
            // The kernel rounds limits down to whole pages.
            let page = 4096;
            if got.memory_limit_bytes != Some(m / page * page) {
                return Err(Error::UpdateNotApplied {
                    id: id.to_string(),
                    file: "memory limit".into(),
                    actual: format!("{:?}", got.memory_limit_bytes),
                    wanted: m.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Limits of a service as its cgroup has them now.
    pub fn limits(&self, id: &str) -> Result<crate::cgroup::CgroupLimits> {
        let svc = self.service(id).ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        svc.cgroup.limits()
    }

    /// CPU and memory use of a running service, from its cgroup.
    pub fn usage(&self, id: &str) -> Result<Usage> {
        let svc = self.service(id).ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        if !svc.cgroup.exists() {
            return Err(Error::NotRunning(id.to_string()));
        }
        svc.cgroup.usage()
    }

    /// Node resources and capacity.
    pub fn node_stats(&self) -> NodeStats {
        self.inner.node.lock().expect("lock").sample()
    }

    /// Reads a service's log from a logical offset (see [`crate::logs`]).
    pub async fn logs(&self, id: &str, from: u64, max: usize) -> Result<LogChunk> {
        let dir = self.log_dir(id);
        if !dir.exists() {
            return Err(Error::ServiceNotFound(id.to_string()));
        }
        tokio::task::spawn_blocking(move || crate::logs::read_from(&dir, from, max))
            .await
            .map_err(|e| Error::Host(format!("log reader: {e}")))?
    }

    /// Follows a service's log from an offset, `tail -f` style; the stream
    /// ends after the service exited and everything was read.
    pub fn follow_logs(&self, id: &str, from: u64) -> Result<futures::stream::BoxStream<'static, Result<LogChunk>>> {
        let dir = self.log_dir(id);
        let progress = self.service(id).map(|s| s.log_progress.subscribe());
        if progress.is_none() && !dir.exists() {
            return Err(Error::ServiceNotFound(id.to_string()));
        }
        Ok(crate::logs::follow(dir, from, progress))
    }
}
