//! What a heartbeat says: node and container stats, with the slow parts
//! (orphans, images) refreshed every few beats, and exits as they happen.

use super::*;

impl Agent {
    /// Lists images and foreign containers (containerd round trips).
    pub(super) async fn refresh_slow(&self) {
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
        let watched: Vec<zoe_common::service::HostVolume> =
            self.cfg.host_volumes.iter().filter(|v| v.report_size).cloned().collect();
        let sizes = if watched.is_empty() {
            Vec::new()
        } else {
            tokio::task::spawn_blocking(move || volume_sizes(&watched)).await.unwrap_or_default()
        };
        let mut slow = self.slow.lock().expect("lock");
        slow.volume_sizes = sizes;
        if let Some(i) = images {
            slow.images = i;
        }
        if let Some(o) = orphans {
            slow.orphans = o;
        }
    }

    pub(super) async fn live_stats(&self, refresh_slow: bool) -> LiveStats {
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
            volume_sizes: slow.volume_sizes.clone(),
        }
    }

    pub(super) fn watch_exit(self: &Arc<Self>, id: &str) {
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
}

#[derive(Default)]
pub(super) struct SlowCache {
    /// Sizes in the host volumes with `report_size`, as of the last walk.
    pub(super) volume_sizes: Vec<zoe_common::proto::VolumeSize>,
    pub(super) images: Vec<ImageSummary>,
    pub(super) orphans: Vec<ContainerInfo>,
    /// Images already sent to the current session.
    pub(super) images_sent: Option<Vec<ImageSummary>>,
}

pub(super) fn summarize_images(list: Vec<crate::image::ImageInfo>) -> Vec<ImageSummary> {
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

/// Files walked per volume and walk at most: a huge tree is reported as
/// far as this went (a lower bound) rather than stalling the agent.
const MAX_ENTRIES: u64 = 1_000_000;

/// The size of each `report_size` volume (`path` `""`) and of each entry
/// at its top, in bytes of regular files; symbolic links are not followed.
pub(super) fn volume_sizes(volumes: &[zoe_common::service::HostVolume]) -> Vec<zoe_common::proto::VolumeSize> {
    let mut out = Vec::new();
    for v in volumes {
        let Ok(rd) = std::fs::read_dir(&v.path) else {
            tracing::warn!(volume = %v.name, path = %v.path, "host volume cannot be read for its size");
            continue;
        };
        let mut budget = MAX_ENTRIES;
        let mut total = 0;
        let mut entries: Vec<(String, u64)> = Vec::new();
        for e in rd.flatten() {
            let bytes = tree_size(&e.path(), &mut budget);
            total += bytes;
            entries.push((e.file_name().to_string_lossy().into_owned(), bytes));
        }
        entries.sort();
        out.push(zoe_common::proto::VolumeSize { volume: v.name.clone(), path: String::new(), bytes: total });
        out.extend(entries.into_iter().map(|(path, bytes)| zoe_common::proto::VolumeSize {
            volume: v.name.clone(),
            path,
            bytes,
        }));
    }
    out
}

fn tree_size(root: &std::path::Path, budget: &mut u64) -> u64 {
    let mut total = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.is_file() {
            total += m.len();
        } else if m.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            todo.extend(rd.flatten().map(|e| e.path()));
        }
    }
    total
}

#[cfg(test)]
mod volume_tests {
    #[test]
    fn sizes_of_a_volume_and_its_top_entries() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("in/deep")).unwrap();
        std::fs::write(d.path().join("in/a"), vec![0u8; 1000]).unwrap();
        std::fs::write(d.path().join("in/deep/b"), vec![0u8; 24]).unwrap();
        std::fs::write(d.path().join("top"), vec![0u8; 5]).unwrap();
        std::os::unix::fs::symlink("/usr", d.path().join("in/link")).unwrap();
        let v = zoe_common::service::HostVolume {
            name: "data".into(),
            path: d.path().display().to_string(),
            read_only: false,
            roles: vec![],
            users: vec![],
            report_size: true,
        };
        let got: Vec<(String, u64)> = super::volume_sizes(&[v]).into_iter().map(|s| (s.path, s.bytes)).collect();
        assert_eq!(got, vec![("".into(), 1029), ("in".into(), 1024), ("top".into(), 5)]);
    }
}
