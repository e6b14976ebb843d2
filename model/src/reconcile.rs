//! Reconciliation: what the leader concludes from a node's container
//! inventory and the replicated state (zoe-semantics §7.11). Pure: the
//! caller commits the commands and sends the stops.
//!
//! * A container the state does not expect on this node (no service holds
//!   it, or it belongs to a finished attempt) is an **orphan**: stopped at
//!   once if it has exited; reported and stopped after a grace if running
//!   (Zoe left running orphans to the admin; zoe gives the admin the grace).
//! * A running container of a service zoe knows but no longer runs here
//!   (lost with its node, moved by a drain, replaced elsewhere, ended) is
//!   **superseded**: stopped at once, so a node that comes back does not run
//!   a duplicate next to the replacement. A service still placed here (a
//!   spawn whose report is in flight) keeps the orphan grace.
//! * An expected container that has exited marks its service dead (the
//!   exit event may have been lost while no leader listened).
//! * At registration only, an expected container that is missing marks its
//!   service dead (the node lost it: reboot, containerd wiped). Not on
//!   heartbeats: a heartbeat taken just before a spawn finished would
//!   otherwise kill a service that has just started.

use crate::state::{Command, Millis, ServiceStatus, State};
use std::collections::{BTreeMap, HashMap};
use zoe_common::proto::{ContainerInfo, ContainerState};

#[derive(Debug, Default, PartialEq)]
pub struct Actions {
    /// To commit through Raft.
    pub commands: Vec<Command>,
    /// Exited orphans: remove now.
    pub stop_now: Vec<String>,
    /// Running orphans: report, stop after the grace.
    pub running_orphans: Vec<String>,
}

/// Container id → (service id, status) of the services that may hold a
/// container on one node.
pub type Expected<'a> = HashMap<&'a str, (u64, ServiceStatus)>;

fn holding(st: &State) -> impl Iterator<Item = (&str, &str, (u64, ServiceStatus))> {
    st.services
        .values()
        .filter(|s| s.status.may_hold_container())
        .filter_map(|s| Some((s.node.as_deref()?, s.container_id.as_deref()?, (s.id, s.status))))
}

/// [`Expected`] of every node, in one pass over the services (the periodic
/// reconciliation of a large cluster must not scan them once per node).
pub fn expected_by_node(st: &State) -> HashMap<&str, Expected<'_>> {
    let mut by_node: HashMap<&str, Expected<'_>> = HashMap::new();
    for (node, cid, v) in holding(st) {
        by_node.entry(node).or_default().insert(cid, v);
    }
    by_node
}

pub fn reconcile(st: &State, node: &str, containers: &[ContainerInfo], at_registration: bool, now: Millis) -> Actions {
    let expected: Expected<'_> = holding(st).filter(|(n, _, _)| *n == node).map(|(_, c, v)| (c, v)).collect();
    reconcile_expected(st, node, &expected, containers, at_registration, now)
}

/// [`reconcile`] with the node's [`Expected`] already gathered.
pub fn reconcile_expected(
    st: &State,
    node: &str,
    expected: &Expected<'_>,
    containers: &[ContainerInfo],
    at_registration: bool,
    now: Millis,
) -> Actions {
    let mut a = Actions::default();
    let present: BTreeMap<&str, &ContainerInfo> = containers.iter().map(|c| (c.container_id.as_str(), c)).collect();
    for c in containers {
        match expected.get(c.container_id.as_str()) {
            Some((sid, status)) => {
                if let ContainerState::Exited { exit_code, oom_killed } = c.state
                    && matches!(status, ServiceStatus::Active | ServiceStatus::Starting)
                {
                    a.commands.push(Command::ServiceExited {
                        id: *sid,
                        container_id: c.container_id.clone(),
                        exit_code,
                        oom_killed,
                        reason: match exit_code {
                            Some(code) => format!("exited with code {code}"),
                            None => "exited".into(),
                        },
                        time: now,
                    });
                }
            }
            None => {
                if !c.state.is_running() || superseded(st, node, c) {
                    a.stop_now.push(c.container_id.clone());
                } else {
                    a.running_orphans.push(c.container_id.clone());
                }
            }
        }
    }
    if at_registration {
        for (cid, (sid, status)) in expected {
            if present.contains_key(cid) {
                continue;
            }
            match status {
                ServiceStatus::Active => a.commands.push(Command::ServiceExited {
                    id: *sid,
                    container_id: cid.to_string(),
                    exit_code: None,
                    oom_killed: false,
                    reason: "container missing on its node at re-registration".into(),
                    time: now,
                }),
                ServiceStatus::Terminating => {
                    a.commands.push(Command::ServiceStopped { id: *sid, container_id: cid.to_string(), time: now })
                }
                // The leader loop asks again for services still starting.
                _ => {}
            }
        }
    }
    a.stop_now.sort();
    a.running_orphans.sort();
    a
}

/// The container's service exists and zoe does not expect it on this node.
fn superseded(st: &State, node: &str, c: &ContainerInfo) -> bool {
    let Some(s) = c.service_id.and_then(|id| st.services.get(&id)) else { return false };
    !(s.node.as_deref() == Some(node) && s.status.may_hold_container())
}
