//! One pass of the leader, decided (Nomad's scheduler worker with its
//! heartbeater and reconciler beside it): from one snapshot of the
//! replicated state, what the back-end reports live ([`Platform`]) and what
//! the leader remembers of its own term ([`Memory`]), [`decide`] says what
//! to commit, as one batch, and what to ask of nodes. Nothing here does
//! I/O or reads a clock: the caller passes `now`, commits [`Pass::batch`],
//! then carries out the rest, so every decision of the leader is tested
//! table by table without Raft or agents (`pass/tests.rs`).

use crate::drain::{self, DrainConfig};
use crate::network;
use crate::reconcile;
use crate::scheduler::{Platform, SchedulerConfig, schedule_explained};
use crate::spec;
use crate::state::{AfterCleanup, Command, ExecutionId, ExecutionStatus, Millis, NodeStatus, Plan, ServiceId, State};
use crate::state::{ServiceStatus, ServiceStatus::*};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use zoe_common::proto::{HostEntry, NodeNetwork};
use zoe_common::resources::Millicores;
use zoe_common::service::ServiceSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaderConfig {
    pub scheduler: SchedulerConfig,
    pub drain: DrainConfig,
    /// A pass runs at least this often, and after every state change.
    pub tick_ms: u64,
    /// Retries of a transient start failure: base × 2^failures, capped; the
    /// execution ends in error after `max_start_attempts` (Zoe retried
    /// forever, immediately).
    pub start_retry_base_ms: u64,
    pub start_retry_max_ms: u64,
    pub max_start_attempts: u32,
    /// Runtime limit in seconds for users without a quota (0 = none).
    pub default_runtime_limit_s: u64,
    /// Zoe's deployment name: in `DEPLOY_NAME` and container labels.
    pub deployment: String,
    /// Host directory holding one workspace per user, mounted at
    /// /mnt/workspace; none when unset.
    pub workspace_base: Option<String>,
    pub fs_gid: u32,
    /// `ZOE_UID` for owners with no user record.
    pub default_fs_uid: u32,
    /// Wait before asking a node again to stop a container that did not stop.
    pub stop_retry_ms: u64,
    /// Wait before asking a node again about a spawn whose outcome is unknown.
    pub spawn_retry_ms: u64,
}

impl LeaderConfig {
    pub fn spec_settings(&self) -> spec::SpecSettings<'_> {
        spec::SpecSettings {
            deployment: &self.deployment,
            workspace_base: self.workspace_base.as_deref(),
            fs_gid: self.fs_gid,
            default_fs_uid: self.default_fs_uid,
        }
    }
}

impl Default for LeaderConfig {
    fn default() -> LeaderConfig {
        LeaderConfig {
            scheduler: SchedulerConfig::default(),
            drain: DrainConfig::default(),
            tick_ms: 1_000,
            start_retry_base_ms: 2_000,
            start_retry_max_ms: 120_000,
            max_start_attempts: 6,
            default_runtime_limit_s: 0,
            deployment: "zoe".into(),
            workspace_base: None,
            fs_gid: 5001,
            default_fs_uid: 1000,
            stop_retry_ms: 5_000,
            spawn_retry_ms: 1_000,
        }
    }
}

/// How the back-end's nodes are judged: its heartbeat protocol sets them
/// (`[agents]` for the agent back-end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// A ready node not heard from for this long is marked down.
    pub down_after_ms: u64,
    /// After an election, nodes are not judged for this long, so a new
    /// leader does not declare down every node whose agent has not found
    /// it yet.
    pub failover_grace_ms: u64,
    /// A running container the state does not know is stopped after this.
    pub orphan_grace_ms: u64,
}

/// Every connected node's inventory is reconciled this often.
pub const RECONCILE_EVERY_MS: Millis = 5_000;

/// Executions one plan admits at most. A backlog (a new leader with a
/// long queue, a burst of submissions) is admitted over several passes, so
/// that one plan stays far below the largest command the log accepts and
/// every pass stays short; the rest waits for the next pass, in queue order.
pub const MAX_PLAN_EXECUTIONS: usize = 2_000;

/// What the leader remembers of its own term between passes: what it has
/// asked nodes and not heard back about, and what it has seen of them.
/// Never replicated: a new leader starts with an empty one, and the
/// replicated state is enough to go on (services still `starting` are asked
/// again, `terminating` ones stopped again; nodes answer idempotently).
#[derive(Debug, Default)]
pub struct Memory {
    pub term: u64,
    pub leader_since: Millis,
    /// Spawns asked and not answered yet (container ids).
    pub spawning: HashSet<String>,
    /// Stops asked: container id → do not ask again before.
    pub stopping: HashMap<String, Millis>,
    /// Spawns that got no answer: container id → do not ask again before.
    pub unknown: HashMap<String, Millis>,
    /// (node, container) → when first seen running unknown to the state.
    pub orphans: HashMap<(String, String), Millis>,
    /// node → the session whose registration inventory is reconciled and
    /// committed. A node is used only in the session recorded here.
    pub sessions: HashMap<String, u64>,
    pub last_sweep: Millis,
    /// What each node's session has been sent (and not refused).
    pub networks: HashMap<String, (u64, NodeNetwork)>,
    pub hosts: HashMap<(String, ExecutionId), (u64, Vec<HostEntry>)>,
}

impl Memory {
    pub fn new(term: u64, now: Millis) -> Memory {
        Memory { term, leader_since: now, last_sweep: now, ..Memory::default() }
    }

    /// A spawn was answered (or will not be sent).
    pub fn spawned(&mut self, cid: &str) {
        self.spawning.remove(cid);
    }

    /// A spawn got no answer: ask again, same container id, after `retry_ms`.
    pub fn spawn_unknown(&mut self, cid: &str, now: Millis, retry_ms: u64) {
        self.spawning.remove(cid);
        self.unknown.insert(cid.to_string(), now + retry_ms);
    }

    /// A push was not acknowledged: forget it, so the next pass sends it again.
    pub fn push_failed(&mut self, push: &Push) {
        match push {
            Push::Network { node, session, network } => {
                if self.networks.get(node) == Some(&(*session, network.clone())) {
                    self.networks.remove(node);
                }
            }
            Push::Hosts { node, session, execution, entries } => {
                let key = (node.clone(), *execution);
                if self.hosts.get(&key).is_some_and(|(s, e)| s == session && e == entries) {
                    self.hosts.remove(&key);
                }
            }
        }
    }
}

/// Something to tell a node about the cluster network.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    Network { node: String, session: u64, network: NodeNetwork },
    Hosts { node: String, session: u64, execution: ExecutionId, entries: Vec<HostEntry> },
}

/// What one pass decided.
#[derive(Debug, Default)]
pub struct Pass {
    /// Committed first in the batch, so it is verified against the state it
    /// was computed on (unless a write slipped in between).
    pub plan: Plan,
    /// Committed after the plan, in the same batch: reconciliation, nodes
    /// marked down, queue moves, runtime limits, drain steps.
    pub commands: Vec<Command>,
    /// Sessions whose registration this pass reconciled: recorded in
    /// [`Memory::sessions`] once the batch is committed.
    pub registered: Vec<(String, u64)>,
    /// Terminating services to stop: (node, service, container).
    pub stop: Vec<(String, ServiceId, String)>,
    /// Placed services still starting that no spawn of this term is
    /// starting: asked again with the same container id.
    pub respawn: Vec<(String, ServiceSpec)>,
    /// Containers no service holds: (node, container).
    pub orphans: Vec<(String, String)>,
    pub pushes: Vec<Push>,
    /// Queued executions no node could ever hold as they are, with why
    /// (for the leader's log).
    pub never_fits: Vec<(ExecutionId, String)>,
}

impl Pass {
    /// The pass's one write: the plan, then the other commands. `None` when
    /// there is nothing to commit.
    pub fn batch(&mut self) -> Option<Command> {
        let mut cmds = Vec::with_capacity(self.commands.len() + 1);
        if !self.plan.is_empty() {
            cmds.push(Command::ApplyPlan(std::mem::take(&mut self.plan)));
        }
        cmds.append(&mut self.commands);
        (!cmds.is_empty()).then_some(Command::Batch(cmds))
    }
}

/// Decides one pass (see the module documentation). `platform` is the
/// back-end's view; nodes in a session whose registration is not yet
/// reconciled are taken out of it for this pass (reconciled, not used), so
/// no spawn reaches a node before what it reported at registration is
/// committed.
pub fn decide(
    st: &State,
    platform: &mut Platform,
    mem: &mut Memory,
    cfg: &LeaderConfig,
    live: &Liveness,
    now: Millis,
) -> Pass {
    let mut p = Pass::default();
    reconcile_nodes(st, platform, mem, live, now, &mut p);
    judge_liveness(st, platform, mem, live, now, &mut p);
    executions(st, cfg, now, &mut p);
    p.commands.extend(crate::workflow::decide(st, now));
    services(st, platform, mem, cfg, now, &mut p);
    p.commands.extend(drain::actions(st, platform, &cfg.drain, now));
    let (plan, waiting) = schedule_explained(st, platform, &cfg.scheduler, now);
    p.never_fits = waiting.into_iter().filter(|w| w.never_fits).map(|w| (w.execution, w.reason)).collect();
    p.plan = cap_plan(plan, st, MAX_PLAN_EXECUTIONS);
    network_pushes(st, platform, mem, &mut p);
    p
}

/// Registrations first (new sessions: missing containers are lost), then
/// every [`RECONCILE_EVERY_MS`] a sweep of every node's latest inventory.
fn reconcile_nodes(st: &State, platform: &mut Platform, mem: &mut Memory, live: &Liveness, now: Millis, p: &mut Pass) {
    let fresh: Vec<(String, u64)> = platform
        .nodes
        .iter()
        .filter(|(n, l)| l.connected && mem.sessions.get(*n) != Some(&l.session))
        .map(|(n, l)| (n.clone(), l.session))
        .collect();
    let sweep = now.saturating_sub(mem.last_sweep) >= RECONCILE_EVERY_MS;
    if fresh.is_empty() && !sweep {
        return;
    }
    let expected = reconcile::expected_by_node(st);
    let none = reconcile::Expected::new();
    for (node, _) in &fresh {
        let l = platform.nodes.get_mut(node).expect("listed above");
        let a = reconcile::reconcile_expected(
            st,
            node,
            expected.get(node.as_str()).unwrap_or(&none),
            &l.registered,
            true,
            now,
        );
        l.connected = false;
        orphans(node, a, mem, live, now, p);
    }
    p.registered = fresh;
    if sweep {
        mem.last_sweep = now;
        for (node, l) in platform.nodes.iter().filter(|(_, l)| l.connected) {
            let e = expected.get(node.as_str()).unwrap_or(&none);
            let a = reconcile::reconcile_expected(st, node, e, &l.inventory, false, now);
            orphans(node, a, mem, live, now, p);
        }
    }
}

/// Takes one node's reconciliation: its commands, its exited orphans at
/// once, and its running ones once they have outlived the grace.
fn orphans(node: &str, a: reconcile::Actions, mem: &mut Memory, live: &Liveness, now: Millis, p: &mut Pass) {
    p.commands.extend(a.commands);
    p.orphans.extend(a.stop_now.into_iter().map(|c| (node.to_string(), c)));
    for cid in &a.running_orphans {
        let first = *mem.orphans.entry((node.to_string(), cid.clone())).or_insert(now);
        if now.saturating_sub(first) >= live.orphan_grace_ms {
            p.orphans.push((node.to_string(), cid.clone()));
        }
    }
    mem.orphans.retain(|(n, c), _| n != node || a.running_orphans.contains(c));
}

/// Marks down the ready nodes not heard from for too long, once the
/// post-election grace is over.
fn judge_liveness(st: &State, platform: &Platform, mem: &Memory, live: &Liveness, now: Millis, p: &mut Pass) {
    if now.saturating_sub(mem.leader_since) < live.failover_grace_ms {
        return;
    }
    for n in st.nodes.values().filter(|n| n.status == NodeStatus::Ready) {
        // Everyone starts with a clean slate under a new leader.
        let last = platform.seen.get(&n.name).copied().unwrap_or(0).max(mem.leader_since);
        if now.saturating_sub(last) > live.down_after_ms {
            p.commands.push(Command::SetNodeStatus { name: n.name.clone(), status: NodeStatus::Down, time: now });
        }
    }
}

/// Queues new submissions and ends executions over their runtime limit.
fn executions(st: &State, cfg: &LeaderConfig, now: Millis, p: &mut Pass) {
    // Runtime limits by owner, looked up once per pass (not once per
    // running execution); none at all is the common case.
    let limits: HashMap<&str, u64> = st
        .users
        .values()
        .map(|u| {
            let limit = st.quotas.get(&u.quota_id).map(|q| q.runtime_limit);
            (u.username.as_str(), limit.unwrap_or(cfg.default_runtime_limit_s))
        })
        .collect();
    let any_limit = cfg.default_runtime_limit_s > 0 || limits.values().any(|l| *l > 0);
    let ix = st.index();
    for id in ix.executions(ExecutionStatus::Submitted) {
        p.commands.push(Command::QueueExecution { id, time: now });
    }
    if !any_limit {
        return;
    }
    for e in ix.executions(ExecutionStatus::Running).filter_map(|id| st.executions.get(&id)) {
        let limit_s = limits.get(e.owner.as_str()).copied().unwrap_or(cfg.default_runtime_limit_s);
        if let Some(start) = e.time_start
            && limit_s > 0
            && now.saturating_sub(start) > limit_s * 1000
        {
            p.commands.push(Command::TerminateExecution {
                id: e.id,
                reason: format!("runtime limit of {limit_s} s reached"),
                after: AfterCleanup::Terminated,
                time: now,
            });
        }
    }
}

/// Services waiting on a node: stops to ask (again), spawns to ask again.
fn services(st: &State, platform: &Platform, mem: &mut Memory, cfg: &LeaderConfig, now: Millis, p: &mut Pass) {
    // Most services are running: only those starting or terminating need
    // work, and the state's index lists them.
    for s in st.index().waiting().filter_map(|id| st.services.get(&id)) {
        let (Some(node), Some(cid)) = (s.node.as_deref(), s.container_id.as_deref()) else { continue };
        if !platform.connected(node) {
            // Wait for the agent to come back (or for the node to be
            // declared down); asking now would only fail.
            continue;
        }
        match s.status {
            Terminating if mem.stopping.get(cid).is_none_or(|t| now >= *t) => {
                mem.stopping.insert(cid.to_string(), now + cfg.stop_retry_ms);
                p.stop.push((node.to_string(), s.id, cid.to_string()));
            }
            Starting if !mem.spawning.contains(cid) && mem.unknown.get(cid).is_none_or(|t| now >= *t) => {
                if let Some(e) = st.executions.get(&s.execution_id) {
                    mem.spawning.insert(cid.to_string());
                    mem.unknown.remove(cid);
                    p.respawn.push((node.to_string(), spec::service_spec(st, e, s, &cfg.spec_settings())));
                }
            }
            _ => {}
        }
    }
}

/// What differs between the network each connected node should have and
/// what its session was sent. Recorded as sent at once (a failed push is
/// forgotten by [`Memory::push_failed`]), so a pass does not repeat a push
/// still in flight.
fn network_pushes(st: &State, platform: &Platform, mem: &mut Memory, p: &mut Pass) {
    if !st.network.bridge {
        return;
    }
    let session: HashMap<&str, u64> =
        platform.nodes.iter().filter(|(_, l)| l.connected).map(|(n, l)| (n.as_str(), l.session)).collect();
    let d = network::desired(st, &session.keys().copied().collect());
    mem.networks.retain(|n, _| d.networks.contains_key(n));
    mem.hosts.retain(|k, _| d.hosts.contains_key(k));
    for (node, network) in d.networks {
        let session = session[node.as_str()];
        if mem.networks.get(&node).is_some_and(|(s, n)| *s == session && *n == network) {
            continue;
        }
        mem.networks.insert(node.clone(), (session, network.clone()));
        p.pushes.push(Push::Network { node, session, network });
    }
    for ((node, execution), entries) in d.hosts {
        let session = session[node.as_str()];
        let key = (node, execution);
        if mem.hosts.get(&key).is_some_and(|(s, e)| *s == session && *e == entries) {
            continue;
        }
        mem.hosts.insert(key.clone(), (session, entries.clone()));
        p.pushes.push(Push::Hosts { node: key.0, session, execution, entries });
    }
}

/// Keeps the first `max` admitted executions of `plan` (queue order) and
/// the placements of their services; the placements of executions already
/// running and the core shares are kept whole.
pub fn cap_plan(mut plan: Plan, st: &State, max: usize) -> Plan {
    if plan.starting.len() <= max {
        return plan;
    }
    let deferred: HashSet<ExecutionId> = plan.starting.split_off(max).into_iter().collect();
    plan.placements.retain(|p| st.services.get(&p.service).is_none_or(|s| !deferred.contains(&s.execution_id)));
    plan
}

/// After a plan is committed: the instances it placed that are still
/// starting, by execution, each in startup order (then service id).
pub fn starts(st: &State, placed: &[ServiceId], cfg: &LeaderConfig) -> Vec<Vec<(i64, String, ServiceSpec)>> {
    let mut by_exec: BTreeMap<ExecutionId, Vec<(i64, String, ServiceSpec)>> = BTreeMap::new();
    for sid in placed {
        let Some(s) = st.services.get(sid).filter(|s| s.status == ServiceStatus::Starting) else { continue };
        let (Some(e), Some(node)) = (st.executions.get(&s.execution_id), s.node.clone()) else { continue };
        by_exec.entry(e.id).or_default().push((
            s.startup_order,
            node,
            spec::service_spec(st, e, s, &cfg.spec_settings()),
        ));
    }
    by_exec
        .into_values()
        .map(|mut list| {
            list.sort_by_key(|(order, _, spec)| (*order, spec.service_id));
            list
        })
        .collect()
}

/// After a plan is committed: its core shares with where to send them,
/// (node, service, container, cores).
pub fn share_updates(st: &State, shares: &[(ServiceId, Millicores)]) -> Vec<(String, ServiceId, String, Millicores)> {
    shares
        .iter()
        .filter_map(|(sid, cores)| {
            let s = st.services.get(sid)?;
            Some((s.node.clone()?, *sid, s.container_id.clone()?, *cores))
        })
        .collect()
}

/// A start the node refused (it holds no container for the attempt): the
/// command recording it. A retryable refusal sends the execution back to
/// the queue with an exponential backoff, until `max_start_attempts`.
pub fn start_failed(
    st: &State,
    cfg: &LeaderConfig,
    sid: ServiceId,
    retryable: bool,
    message: String,
    now: Millis,
) -> Command {
    let failures =
        st.services.get(&sid).and_then(|s| st.executions.get(&s.execution_id)).map(|e| e.start_failures).unwrap_or(0);
    let (message, retry_at) = if !retryable {
        (message, None)
    } else if failures + 1 >= cfg.max_start_attempts {
        (format!("gave up after {} attempts: {message}", failures + 1), None)
    } else {
        let backoff = cfg.start_retry_base_ms.saturating_mul(1 << failures.min(20)).min(cfg.start_retry_max_ms);
        (message, Some(now + backoff))
    };
    Command::ServiceStartFailed { id: sid, message, retry_at, time: now }
}

#[cfg(test)]
mod tests;
