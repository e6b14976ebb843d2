//! A scheduler decision as data. The scheduler computes a [`Plan`] from a
//! snapshot; the leader commits it as one `Command::ApplyPlan` (verified
//! against the state at apply time) before telling any agent to act.

use super::{ExecutionId, Millis, ServiceId};
use serde::{Deserialize, Serialize};
use zoe_common::resources::Millicores;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub service: ServiceId,
    pub node: String,
    /// Cores the container may use at start (`cores.min`, or more with sharing).
    pub cores: Millicores,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub time: Millis,
    /// Executions admitted now: `queued` → `starting`.
    pub starting: Vec<ExecutionId>,
    /// Instances to start, essential and elastic.
    pub placements: Vec<Placement>,
    /// Instances to stop (elastic instances making room, drains).
    pub stops: Vec<ServiceId>,
    /// New core allocations of running instances (dynamic core sharing).
    pub core_shares: Vec<(ServiceId, Millicores)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.starting.is_empty() && self.placements.is_empty() && self.stops.is_empty() && self.core_shares.is_empty()
    }
}
