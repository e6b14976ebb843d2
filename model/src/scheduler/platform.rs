//! The live side of the cluster, as agents report it: what the replicated
//! state does not hold because it changes every heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use zoe_common::resources::Millicores;

/// What the leader currently knows from one node's agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveNode {
    /// The agent is connected to this leader now. A node the replicated state
    /// calls ready but whose agent has not (re)connected gets no placement.
    pub connected: bool,
    /// Canonical references of the images the node holds.
    pub images: BTreeSet<String>,
    pub cores_in_use: Millicores,
    pub memory_in_use: u64,
    /// Containers running on the node (zoe's and any other).
    pub container_count: u32,
    /// zoe's containers the node still holds, running or exited and not yet
    /// removed: a drain is complete only when this is 0 too.
    pub zoe_containers: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    pub nodes: BTreeMap<String, LiveNode>,
}

impl Platform {
    pub fn connected(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.connected)
    }
}
