//! Nodes: the machines agents run on, as the replicated state knows them.
//! Live usage (cores and memory in use) is not here: agents stream it to the
//! leader, which keeps it in memory; only what must survive a failover is
//! replicated.

use super::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use zoe_common::resources::Millicores;
use zoe_common::service::HostVolume;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Registered and heartbeating.
    Ready,
    /// Missed heartbeats past TTL + grace.
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node may hand out (total minus the agent's reserve).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub cores: Millicores,
    pub memory: u64,
}

/// A drain in progress, as the admin asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub requested_by: String,
    pub requested_at: Millis,
    /// After this, work that will end on its own is stopped too.
    pub deadline: Option<Millis>,
    /// Stop everything now.
    pub force: bool,
    /// Instances this drain has moved off the node so far (the record of
    /// what moved, for `--monitor`; they may be running elsewhere by now).
    #[serde(default)]
    pub moved: Vec<super::ServiceId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The name in the agent's certificate: its identity.
    pub name: String,
    pub addresses: Vec<String>,
    pub capacity: Capacity,
    pub labels: BTreeSet<String>,
    /// The host volumes it offers, by name (placement needs them).
    #[serde(default)]
    pub host_volumes: BTreeMap<String, HostVolume>,
    /// The scheduler places nothing new on an ineligible node.
    pub eligible: bool,
    pub status: NodeStatus,
    /// When `status` last changed (node loss waits a grace after `down`).
    #[serde(default)]
    pub status_since: Millis,
    pub drain: Option<Drain>,
    /// When the last drain completed (the node stays ineligible after it).
    #[serde(default)]
    pub drain_completed_at: Option<Millis>,
    /// The drain that completed last, as it stood then.
    #[serde(default)]
    pub last_drain: Option<Drain>,
    pub first_registration: Millis,
    pub last_registration: Millis,
    pub containerd_version: String,
    pub cgroup_mode: String,
    /// The node's share of the container CIDR, assigned at its first
    /// registration and kept for good.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Images the node holds (canonical references), for image-aware placement.
    pub images: BTreeSet<String>,
}

impl Node {
    /// Nomad's rule: ready, not draining, eligible.
    pub fn schedulable(&self) -> bool {
        self.status == NodeStatus::Ready && self.drain.is_none() && self.eligible
    }
}

/// What an agent says about itself when it (re)registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    pub addresses: Vec<String>,
    pub capacity: Capacity,
    pub labels: BTreeSet<String>,
    pub host_volumes: BTreeMap<String, HostVolume>,
    pub containerd_version: String,
    pub cgroup_mode: String,
    pub images: BTreeSet<String>,
}

impl Registration {
    /// A node of `capacity` with nothing more to say (no address, label,
    /// host volume or image): what tests and the scheduler benchmark start
    /// from, adding what they need.
    pub fn bare(name: impl Into<String>, capacity: Capacity) -> Registration {
        Registration {
            name: name.into(),
            addresses: vec![],
            capacity,
            labels: BTreeSet::new(),
            host_volumes: BTreeMap::new(),
            containerd_version: "test".into(),
            cgroup_mode: "v1".into(),
            images: BTreeSet::new(),
        }
    }
}
