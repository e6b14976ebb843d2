//! Zoe's scheduler statistics and ClusterStats (zoe-semantics §7.9):
//! capacity and `reserved` from the replicated state, `allocated` and `in
//! use` from what the agents measure.

use std::collections::{BTreeMap, BTreeSet};
use zoe_common::service::ImageSummary;
use zoe_model::scheduler::Policy;

crate::string_enum_schema!(Policy => ["fifo", "size", "dynsize", "fairshare"]);

crate::api_type! {
    /// `GET /statistics/scheduler`: Zoe's three queues in the order the
    /// scheduler's passes use them, plus zoe's `submitted` and `starting`.
    pub struct SchedulerStats {
        pub queue_length: usize,
        pub running_length: usize,
        pub termination_queue_length: usize,
        pub queue: Vec<u64>,
        pub running_queue: Vec<u64>,
        pub termination_queue: Vec<u64>,
        pub submitted: Vec<u64>,
        pub starting: Vec<u64>,
        pub policy: Policy,
        pub platform_stats: ClusterStats,
        /// Whether the agents' live numbers reached this coordinator.
        pub live_available: bool,
    }
}

/// `ClusterStats` and `NodeStats` from one list of the numbers both give,
/// for the whole cluster and for one node.
macro_rules! stats_types {
    ($($(#[$fm:meta])* $f:ident: $t:ty),* $(,)?) => {
        crate::api_type! {
            #[derive(Default)]
            pub struct ClusterStats {
                pub nodes: Vec<NodeStats>,
                $($(#[$fm])* pub $f: $t),*
            }
        }

        crate::api_type! {
            #[derive(Default)]
            pub struct NodeStats {
                pub name: String,
                /// `online` when its agent is connected to the leader, else `offline`.
                pub status: String,
                /// The replicated node status (`ready` / `down`).
                pub node_status: String,
                $($(#[$fm])* pub $f: $t,)*
                /// Whole-host measured use (includes non-zoe processes).
                pub host_cores_in_use: f64,
                pub host_memory_in_use: u64,
                pub labels: BTreeSet<String>,
                /// Keyed by container id.
                pub service_stats: BTreeMap<String, ServiceStats>,
                pub images: Vec<ImageSummary>,
                /// When the numbers were measured (ms since the epoch); 0 = never.
                pub timestamp: u64,
            }
        }
    };
}

stats_types! {
    container_count: u32,
    /// What zoe may hand out (capacity after the agents' reserve).
    cores_total: f64,
    memory_total: u64,
    /// Σ ZApp minimums of the services placed.
    cores_reserved: f64,
    memory_reserved: u64,
    /// Σ current container limits.
    cores_allocated: f64,
    memory_allocated: u64,
    /// Σ measured use of zoe's containers.
    cores_in_use: f64,
    memory_in_use: u64,
}

crate::api_type! {
    #[derive(Default)]
    pub struct ServiceStats {
        pub service_id: Option<u64>,
        pub core_limit: Option<f64>,
        pub mem_limit: Option<u64>,
        pub cores_in_use: f64,
        pub memory_in_use: u64,
        pub running: bool,
    }
}

impl crate::schema::Schema for ImageSummary {
    fn schema(s: &mut crate::schema::Schemas) -> serde_json::Value {
        s.named("ImageSummary", |s| {
            crate::schema::object(vec![
                ("names", Vec::<String>::schema(s), false),
                ("digest", String::schema(s), false),
                ("size", u64::schema(s), false),
            ])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_schema_lists_every_policy() {
        for p in [Policy::Fifo, Policy::Size, Policy::Dynsize, Policy::FairShare] {
            let v = serde_json::to_value(p).unwrap();
            let schema = <Policy as crate::Schema>::schema(&mut crate::Schemas::default());
            assert!(schema["enum"].as_array().unwrap().contains(&v), "{v}");
        }
    }
}
