//! A scheduler decision as data. The scheduler computes a [`Plan`] from a
//! snapshot; the leader commits it as one `Command::ApplyPlan` (verified
//! against the state at apply time) before telling any agent to act.

use super::{
    Applied, BackendStatus, ExecutionId, ExecutionStatus, Millis, PublishedPort, ServiceId, ServiceStatus, StateError,
    not_found,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// New core allocations of running instances (dynamic core sharing).
    pub core_shares: Vec<(ServiceId, Millicores)>,
    /// The share of idle cores each node's allocations were computed with
    /// in this plan (recorded in `State::core_shares`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_shares: Vec<(String, Millicores)>,
    /// Elastic instances to stop so that a higher-priority execution's
    /// essential part fits (elastic-only preemption). Never an essential
    /// instance: the plan is refused whole if it names one. The victims
    /// stay part of their execution and are placed again by the elastic
    /// phase of a later pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preempt: Vec<ServiceId>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        // New shares alone are worth a write: once recorded, later passes
        // skip those nodes.
        self.starting.is_empty()
            && self.placements.is_empty()
            && self.core_shares.is_empty()
            && self.node_shares.is_empty()
            && self.preempt.is_empty()
    }
}

/// Applying a plan: verified whole against the state first, then carried out.
impl super::State {
    /// What the plan places on each node fits beside what is reserved there
    /// already (Σ `min` of instances that may hold a container), as Nomad's
    /// plan applier re-checks a node's resources: a plan computed on a
    /// snapshot the log has since moved past is refused, not over-commits.
    fn check_capacity(&self, plan: &Plan) -> Result<(), StateError> {
        if plan.placements.is_empty() {
            // Core shares only: nothing new is reserved (and the scan of
            // every service below is the costly part).
            return Ok(());
        }
        let mut load: BTreeMap<&str, (Millicores, u64)> = self.reserved_by_node();
        for p in &plan.placements {
            let s = self.service(p.service)?;
            let e = self.execution(s.execution_id)?;
            let g = &e.description.services[s.group_index];
            let n = self.nodes.get(&p.node).ok_or_else(|| not_found(format!("node {}", p.node)))?;
            let (cores, memory) = load.entry(n.name.as_str()).or_default();
            *cores += g.cores_min();
            *memory = memory.saturating_add(g.memory_min());
            if *cores > n.capacity.cores || *memory > n.capacity.memory {
                return Err(StateError::Conflict(format!(
                    "plan places service {} on node {}, which would reserve {} cores of {} and {} of {} bytes of memory",
                    s.id, n.name, cores, n.capacity.cores, memory, n.capacity.memory
                )));
            }
        }
        Ok(())
    }

    pub(super) fn apply_plan(&mut self, plan: &Plan) -> Result<Applied, StateError> {
        // Verify everything first (Nomad's plan applier re-checks against the
        // current state): a stale plan is refused whole and recomputed.
        for id in &plan.starting {
            let e = self.execution(*id)?;
            if e.status != ExecutionStatus::Queued {
                return Err(StateError::Conflict(format!("plan starts execution {id}, which is {}", e.status)));
            }
        }
        for p in &plan.placements {
            let s = self.service(p.service)?;
            if !matches!(s.status, ServiceStatus::Created | ServiceStatus::Inactive | ServiceStatus::Error) {
                return Err(StateError::Conflict(format!(
                    "plan places service {} ({}), which is {}",
                    s.id, s.name, s.status
                )));
            }
            let e = self.execution(s.execution_id)?;
            let will_start = plan.starting.contains(&e.id);
            if !will_start && !matches!(e.status, ExecutionStatus::Starting | ExecutionStatus::Running) {
                return Err(StateError::Conflict(format!(
                    "plan places service {} of execution {}, which is {}",
                    s.id, e.id, e.status
                )));
            }
            let n = self.nodes.get(&p.node).ok_or_else(|| not_found(format!("node {}", p.node)))?;
            if !n.schedulable() {
                return Err(StateError::Conflict(format!(
                    "plan places service {} on node {}, which is not schedulable",
                    s.id, n.name
                )));
            }
        }
        for id in &plan.preempt {
            let s = self.service(*id)?;
            if s.essential {
                return Err(StateError::Conflict(format!(
                    "plan preempts service {} ({}), which is essential",
                    s.id, s.name
                )));
            }
            if !matches!(s.status, ServiceStatus::Starting | ServiceStatus::Active) {
                return Err(StateError::Conflict(format!(
                    "plan preempts service {} ({}), which is {}",
                    s.id, s.name, s.status
                )));
            }
        }
        self.check_capacity(plan)?;
        for (id, _) in &plan.core_shares {
            self.service(*id)?;
        }
        let ports = self.allocate_ports(plan)?;

        for id in &plan.starting {
            let e = self.execution_mut(*id).expect("verified");
            e.set_status(ExecutionStatus::Starting).expect("verified");
            e.last_scheduled = Some(plan.time);
            e.not_before = None;
        }
        for p in &plan.placements {
            self.index.touch_service(p.service);
            let s = self.services.get_mut(&p.service).expect("verified");
            if s.time_start.is_some() {
                s.restart_count += 1;
            }
            s.attempt += 1;
            s.set_status(ServiceStatus::Starting).expect("verified");
            s.moving = false;
            s.ports = ports.get(&p.service).cloned().unwrap_or_default();
            s.backend_status = BackendStatus::Undefined;
            s.node = Some(p.node.clone());
            s.cores_allocated = Some(p.cores);
            s.container_id = Some(s.container_name());
            s.error_message = None;
            s.time_end = None;
        }
        for (id, cores) in &plan.core_shares {
            let s = self.services.get_mut(id).expect("verified");
            if s.status == ServiceStatus::Active {
                s.cores_allocated = Some(*cores);
            }
        }
        for id in &plan.preempt {
            self.index.touch_service(*id);
            let s = self.services.get_mut(id).expect("verified");
            s.set_status(ServiceStatus::Terminating).expect("verified");
            s.last_exit_reason = Some("preempted by a higher-priority execution".into());
        }
        // A node's recorded share holds only while every instance placed
        // there since was given its cores under it.
        for p in &plan.placements {
            self.core_shares.remove(&p.node);
        }
        for (node, share) in &plan.node_shares {
            self.core_shares.insert(node.clone(), *share);
        }
        Ok(Applied::Done)
    }

    /// Host ports in use on a node: those of instances that may hold a container.
    pub fn used_ports(&self, node: &str) -> std::collections::BTreeSet<u16> {
        self.index().usage().get(node).map(|u| u.ports().collect()).unwrap_or_default()
    }

    /// Host ports for every placement of a plan: a host-network service
    /// publishes its own ports, which must be free; others get the lowest
    /// free ports of the range. A conflict refuses the plan.
    pub(super) fn allocate_ports(&self, plan: &Plan) -> Result<BTreeMap<ServiceId, Vec<PublishedPort>>, StateError> {
        let mut used: BTreeMap<&str, std::collections::BTreeSet<u16>> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for p in &plan.placements {
            let s = self.service(p.service)?;
            let e = self.execution(s.execution_id)?;
            let g = &e.description.services[s.group_index];
            if g.ports.is_empty() {
                continue;
            }
            let node = &self.nodes[&p.node];
            let taken = used.entry(node.name.as_str()).or_insert_with(|| self.used_ports(&node.name));
            let host_ip = node.addresses.first().cloned().unwrap_or_else(|| node.name.clone());
            let numbers: Vec<u16> = if self.network.uses_host(g.network.as_deref()) {
                let mut own: Vec<u16> = g.ports.iter().map(|x| x.port_number).collect();
                own.dedup();
                if let Some(busy) = own.iter().find(|n| taken.contains(n)) {
                    return Err(StateError::Conflict(format!("port {busy} is already in use on node {}", node.name)));
                }
                g.ports.iter().map(|x| x.port_number).collect()
            } else {
                self.network
                    .allocate(taken, g.ports.len())
                    .ok_or_else(|| StateError::Conflict(format!("no free host port left on node {}", node.name)))?
            };
            taken.extend(numbers.iter().copied());
            let published = g
                .ports
                .iter()
                .zip(numbers)
                .map(|(x, host_port)| PublishedPort {
                    port_number: x.port_number,
                    protocol: x.protocol,
                    host_ip: host_ip.clone(),
                    host_port,
                })
                .collect();
            out.insert(p.service, published);
        }
        Ok(out)
    }
}
