//! Node drain and node loss as pure decisions: given the replicated state,
//! the live platform and the time, which commands move work off nodes.
//! The leader writes them; the scheduler then places what moved elsewhere
//! (a draining node is ineligible, a lost one is down).
//!
//! Learned from Nomad users (nomad-semantics §2, §12): a drain is complete
//! only when the node's agent reports no zoe container left, not when the
//! state says so; batch work is left to finish until the deadline rather
//! than killed at once; long-running work moves one execution at a time so
//! users see one short interruption each; a node that misses heartbeats is
//! given a grace before its work is replaced, so a blip restarts nothing.

use crate::scheduler::Platform;
use crate::state::{
    AfterCleanup, Command, ExecutionId, ExecutionStatus, Millis, NodeStatus, Service, ServiceId, ServiceStatus, State,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// Long-running executions moved off one draining node at a time.
    pub max_parallel_moves: usize,
    /// How long a node stays `down` before its instances are declared lost
    /// and replaced (Nomad's `disconnect` grace).
    pub lost_after_ms: u64,
    /// When a node is lost, executions that would end on their own start
    /// over elsewhere instead of ending in error, unless their ZApp says
    /// otherwise (`on_eviction`).
    pub requeue_lost_batch: bool,
}

impl Default for DrainConfig {
    fn default() -> DrainConfig {
        DrainConfig { max_parallel_moves: 1, lost_after_ms: 30_000, requeue_lost_batch: false }
    }
}

/// What the drain of one node still has to do, for `--monitor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    /// Instances zoe still has on the node.
    pub remaining: Vec<String>,
    /// Instances moved off the node (stopped there, waiting for or placed on another).
    pub moving: Vec<String>,
    /// Everything this drain has moved, and where each instance is now.
    pub moved: Vec<Moved>,
    /// Executions left to finish on their own until the deadline.
    pub waiting_to_finish: Vec<ExecutionId>,
    /// Milliseconds to the deadline, if any.
    pub deadline_in_ms: Option<i64>,
    /// zoe containers the agent last reported on the node (running, or
    /// exited and not yet removed); `None` while it is not connected.
    pub containers_reported: Option<u32>,
}

/// One instance a drain moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub service: ServiceId,
    /// `<execution id>/<instance name>`.
    pub instance: String,
    /// Where it runs now (`None`: not placed yet, or ended).
    pub node: Option<String>,
    pub status: ServiceStatus,
}

fn holds(s: &Service, node: &str) -> bool {
    s.node.as_deref() == Some(node) && s.status.may_hold_container()
}

/// The commands that advance every drain and handle every lost node now.
/// Empty when nothing is to be done, so a quiet cluster writes nothing.
pub fn actions(st: &State, platform: &Platform, cfg: &DrainConfig, now: Millis) -> Vec<Command> {
    let mut out = Vec::new();
    for n in st.nodes.values() {
        if n.status == NodeStatus::Down {
            let lost = now.saturating_sub(n.status_since) >= cfg.lost_after_ms;
            if lost && st.services.values().any(|s| holds(s, &n.name)) {
                out.push(Command::NodeLost { name: n.name.clone(), requeue_batch: cfg.requeue_lost_batch, time: now });
            }
            continue;
        }
        let Some(drain) = &n.drain else { continue };
        let deadline_passed = drain.deadline.is_some_and(|d| now >= d);
        let hurry = drain.force || deadline_passed;
        let reason = if drain.force {
            "node drain (forced)"
        } else if deadline_passed {
            "node drain deadline"
        } else {
            "node drain"
        };
        let mut on_node: BTreeMap<ExecutionId, Vec<&Service>> = BTreeMap::new();
        let mut any_holder = false;
        for s in st.services.values().filter(|s| holds(s, &n.name)) {
            any_holder = true;
            if matches!(s.status, ServiceStatus::Starting | ServiceStatus::Active) {
                on_node.entry(s.execution_id).or_default().push(s);
            }
        }
        // Executions whose move off this node has begun and not yet landed.
        let mut moving: BTreeSet<ExecutionId> = st
            .services
            .values()
            .filter(|s| s.moving && s.essential && s.node.as_deref() == Some(n.name.as_str()))
            .map(|s| s.execution_id)
            .collect();
        let mut moves = Vec::new();
        for (exec_id, services) in &on_node {
            let Some(e) = st.executions.get(exec_id) else { continue };
            // Elastic instances go first: nobody waits on them.
            moves.extend(services.iter().filter(|s| !s.essential).map(|s| s.id));
            let essential: Vec<_> = services.iter().filter(|s| s.essential).map(|s| s.id).collect();
            if essential.is_empty() {
                continue;
            }
            if !e.description.will_end {
                if hurry || moving.contains(exec_id) || moving.len() < cfg.max_parallel_moves {
                    moving.insert(*exec_id);
                    moves.extend(essential);
                }
            } else if hurry && matches!(e.status, ExecutionStatus::Starting | ExecutionStatus::Running) {
                // The ZApp may ask to start over elsewhere instead of ending.
                let after = if e.description.requeue_on_eviction(false) {
                    AfterCleanup::Requeue
                } else {
                    AfterCleanup::Terminated
                };
                out.push(Command::TerminateExecution {
                    id: *exec_id,
                    reason: format!("{reason} on {}", n.name),
                    after,
                    time: now,
                });
            }
        }
        if !moves.is_empty() {
            out.push(Command::MoveServices { ids: moves, reason: format!("{reason} on {}", n.name), time: now });
        }
        // Done only when the agent itself reports no container left: none
        // running, and none of zoe's waiting to be removed.
        let agent_empty =
            platform.nodes.get(&n.name).is_some_and(|l| l.connected && l.container_count == 0 && l.zoe_containers == 0);
        if !any_holder && agent_empty {
            out.push(Command::CompleteDrain { name: n.name.clone(), time: now });
        }
    }
    out
}

/// Where a node's drain stands.
pub fn progress(st: &State, platform: &Platform, node: &str, now: Millis) -> Option<DrainProgress> {
    let n = st.nodes.get(node)?;
    let drain = n.drain.as_ref()?;
    let mut p = DrainProgress {
        deadline_in_ms: drain.deadline.map(|d| d as i64 - now as i64),
        containers_reported: platform
            .nodes
            .get(node)
            .filter(|l| l.connected)
            .map(|l| l.container_count.max(l.zoe_containers)),
        ..DrainProgress::default()
    };
    let mut waiting = BTreeSet::new();
    for s in st.services.values().filter(|s| s.node.as_deref() == Some(node)) {
        let label = format!("{}/{}", s.execution_id, s.name);
        if s.moving {
            p.moving.push(label);
        } else if s.status.may_hold_container() {
            p.remaining.push(label);
            if s.essential && st.executions.get(&s.execution_id).is_some_and(|e| e.description.will_end) {
                waiting.insert(s.execution_id);
            }
        }
    }
    p.waiting_to_finish = waiting.into_iter().collect();
    p.moved = drain
        .moved
        .iter()
        .filter_map(|id| st.services.get(id))
        .map(|s| Moved {
            service: s.id,
            instance: format!("{}/{}", s.execution_id, s.name),
            node: s.node.clone().filter(|n| n != node && s.status.may_hold_container()),
            status: s.status,
        })
        .collect();
    Some(p)
}

#[cfg(test)]
mod tests;
