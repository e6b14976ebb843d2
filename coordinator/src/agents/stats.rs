//! Zoe's ClusterStats and NodeStats (zoe-semantics §7.9): capacity and
//! `reserved` from the replicated state, `allocated` and `in use` from what
//! the agents measure and report with their heartbeats.

use crate::state::{NodeStatus, State};
use std::collections::BTreeMap;
use zoe_common::proto::LiveStats;
use zoe_common::service::ImageSummary;

pub use zoe_api::stats::{ClusterStats, NodeStats, ServiceStats};

/// What the leader holds in memory about one node, for the stats.
pub struct ReportView<'a> {
    pub connected: bool,
    pub stats: &'a LiveStats,
    pub images: &'a [ImageSummary],
    pub timestamp: u64,
}

/// An owned copy of what the leader holds about one connected node, taken
/// without holding the state (the API computes the stats from a state
/// read of its own). Relayed to followers as it is (`crate::relay`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub stats: LiveStats,
    pub images: Vec<ImageSummary>,
    pub timestamp: u64,
}

impl NodeReport {
    pub fn view(&self) -> ReportView<'_> {
        ReportView { connected: true, stats: &self.stats, images: &self.images, timestamp: self.timestamp }
    }
}

fn cores(m: u32) -> f64 {
    f64::from(m) / 1000.0
}

pub fn cluster_stats(st: &State, live: &BTreeMap<String, ReportView<'_>>) -> ClusterStats {
    let reserved = st.reserved_by_node();
    let mut out = ClusterStats::default();
    for n in st.nodes.values() {
        let (rc, rm) = reserved.get(n.name.as_str()).copied().unwrap_or_default();
        let mut ns = NodeStats {
            name: n.name.clone(),
            status: "offline".into(),
            node_status: n.status.as_str().into(),
            cores_total: n.capacity.cores.as_cores(),
            memory_total: n.capacity.memory,
            cores_reserved: rc.as_cores(),
            memory_reserved: rm,
            labels: n.labels.clone(),
            ..Default::default()
        };
        if let Some(l) = live.get(&n.name) {
            if l.connected && n.status == NodeStatus::Ready {
                ns.status = "online".into();
            }
            ns.timestamp = l.timestamp;
            ns.host_cores_in_use = cores(l.stats.cores_in_use_millis);
            ns.host_memory_in_use = l.stats.memory_in_use;
            ns.images = l.images.to_vec();
            for c in &l.stats.containers {
                let running = c.state.is_running();
                if running {
                    ns.container_count += 1;
                    ns.cores_in_use += cores(c.cores_in_use_millis);
                    ns.memory_in_use += c.memory_in_use;
                    ns.cores_allocated += c.core_limit_millis.map(cores).unwrap_or(0.0);
                    ns.memory_allocated += c.memory_limit.unwrap_or(0);
                }
                ns.service_stats.insert(
                    c.container_id.clone(),
                    ServiceStats {
                        service_id: c.service_id,
                        core_limit: c.core_limit_millis.map(cores),
                        mem_limit: c.memory_limit,
                        cores_in_use: cores(c.cores_in_use_millis),
                        memory_in_use: c.memory_in_use,
                        running,
                    },
                );
            }
        }
        out.container_count += ns.container_count;
        out.cores_total += ns.cores_total;
        out.memory_total += ns.memory_total;
        out.cores_reserved += ns.cores_reserved;
        out.memory_reserved += ns.memory_reserved;
        out.cores_allocated += ns.cores_allocated;
        out.memory_allocated += ns.memory_allocated;
        out.cores_in_use += ns.cores_in_use;
        out.memory_in_use += ns.memory_in_use;
        out.nodes.push(ns);
    }
    out
}
