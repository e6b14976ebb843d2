//! The live side of the cluster, as agents report it: what the replicated
//! state does not hold because it changes every heartbeat.

use crate::state::Millis;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use zoe_common::proto::ContainerInfo;
use zoe_common::resources::Millicores;

/// What the leader currently knows from one node's agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveNode {
    /// The agent is connected to this leader now. A node the replicated state
    /// calls ready but whose agent has not (re)connected gets no placement.
    pub connected: bool,
    /// Canonical references of the images the node holds (shared with the
    /// back-end's registry: a pass's snapshot does not copy them).
    pub images: Arc<BTreeSet<String>>,
    pub cores_in_use: Millicores,
    pub memory_in_use: u64,
    /// Containers running on the node (zoe's and any other).
    pub container_count: u32,
    /// zoe's containers the node still holds, running or exited and not yet
    /// removed: a drain is complete only when this is 0 too.
    pub zoe_containers: u32,
    /// The node's connection to this leader: a new one is a new
    /// registration, whose inventory is reconciled before the node is used.
    pub session: u64,
    /// The containers the node held when it registered in `session`.
    pub registered: Arc<Vec<ContainerInfo>>,
    /// The containers of its latest heartbeat.
    pub inventory: Arc<Vec<ContainerInfo>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    /// The nodes connected now.
    pub nodes: BTreeMap<String, LiveNode>,
    /// When each node was last heard from under this leader, connected or
    /// not (liveness).
    pub seen: BTreeMap<String, Millis>,
}

impl Platform {
    pub fn connected(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.connected)
    }
}
