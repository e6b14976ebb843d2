//! The leader's lifecycle loop: it turns the replicated state into actions
//! on nodes and the nodes' answers back into replicated state.
//!
//! Every decision is committed through Raft before any agent is told to act
//! (Nomad's plan → commit → apply), and every answer is committed after. The
//! loop keeps no state that matters beyond what is in flight: a new leader
//! rebuilds everything from the replicated state (services still `starting`
//! are asked again, services `terminating` are stopped again; agents are
//! idempotent by container id), so no execution stays stuck in `starting`
//! and no container is started twice.
//!
//! Exactly-once start rests on three rules:
//! * a spawn whose outcome is unknown (no answer) is not a failure: the
//!   service stays `starting` and its node is asked again with the same
//!   container id; a new attempt (and container id) comes only after the
//!   node said it holds no container for the old one;
//! * everything the loop does is fenced by the Raft term it leads in: its
//!   writes are never forwarded and are refused once that term is over,
//!   and its requests to nodes carry the term, which agents check against
//!   the newest term they have obeyed;
//! * a new leader forgets the old term's in-flight work; the old term's
//!   tasks find their fence closed and stop.

pub use zoe_model::spec;

use crate::backend::{Backend, BackendEvent, SpawnError};
use crate::drain::{self, DrainConfig};
use crate::raft::Coordinator;
use crate::scheduler::{Platform, SchedulerConfig, schedule_explained};
use crate::state::{
    AfterCleanup, Applied, Command, ExecutionId, ExecutionStatus, Millis, Plan, ServiceId, ServiceStatus, State,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, watch};
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

/// Executions one plan admits at most. A backlog (a new leader with a
/// long queue, a burst of submissions) is admitted over several passes, so
/// that one plan stays far below the largest command the log accepts and
/// every pass stays short; the rest waits for the next pass, in queue order.
const MAX_PLAN_EXECUTIONS: usize = 2_000;

/// Keeps the first `max` admitted executions of `plan` (queue order) and
/// the placements of their services; the placements of executions already
/// running, the stops and the core shares are kept whole.
fn cap_plan(mut plan: Plan, st: &State, max: usize) -> Plan {
    if plan.starting.len() <= max {
        return plan;
    }
    let deferred: HashSet<ExecutionId> = plan.starting.split_off(max).into_iter().collect();
    plan.placements.retain(|p| st.services.get(&p.service).is_none_or(|s| !deferred.contains(&s.execution_id)));
    plan
}

pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// What the loop has asked nodes to do and not heard back about, in the
/// term it leads in.
#[derive(Debug, Default)]
struct Inflight {
    term: u64,
    spawning: HashSet<String>,
    /// container id → do not ask again before.
    stopping: HashMap<String, Instant>,
    /// Spawns that got no answer: container id → do not ask again before.
    unknown: HashMap<String, Instant>,
}

impl Inflight {
    /// Forgets a spawn, unless it belongs to an older term (whose late
    /// task must not clear the new term's bookkeeping).
    fn spawned(&mut self, term: u64, cid: &str) {
        if self.term == term {
            self.spawning.remove(cid);
        }
    }
}

/// Core share updates not sent yet: the latest share per container (with
/// its node), oldest first, and whether the sender runs.
#[derive(Debug, Default)]
struct CoreUpdates {
    /// container id → (term, node, service, share).
    pending: HashMap<String, (u64, String, ServiceId, zoe_common::resources::Millicores)>,
    order: std::collections::VecDeque<String>,
    /// Containers with an update in flight.
    sending: HashSet<String>,
    busy: bool,
}

/// Core share updates in flight at once, over all nodes.
const CORE_UPDATES_IN_FLIGHT: usize = 16;

pub struct Leader<B: Backend> {
    node: Coordinator,
    backend: Arc<B>,
    cfg: Arc<LeaderConfig>,
    inflight: Arc<Mutex<Inflight>>,
    core_updates: Arc<Mutex<CoreUpdates>>,
}

impl<B: Backend> Clone for Leader<B> {
    fn clone(&self) -> Self {
        Leader {
            node: self.node.clone(),
            backend: self.backend.clone(),
            cfg: self.cfg.clone(),
            inflight: self.inflight.clone(),
            core_updates: self.core_updates.clone(),
        }
    }
}

/// What one pass found to do, collected under one read of the state.
#[derive(Debug, Default)]
struct Work {
    submitted: Vec<ExecutionId>,
    over_limit: Vec<(ExecutionId, String)>,
    /// (node, service, container)
    to_stop: Vec<(String, ServiceId, String)>,
    /// Placed but not (any more) being started by this leader.
    to_respawn: Vec<(String, ServiceSpec)>,
    /// Drain steps and lost nodes.
    drain: Vec<Command>,
    plan: Plan,
}

impl<B: Backend> Leader<B> {
    pub fn new(node: Coordinator, backend: Arc<B>, cfg: LeaderConfig) -> Leader<B> {
        Leader { node, backend, cfg: Arc::new(cfg), inflight: Arc::default(), core_updates: Arc::default() }
    }

    /// Runs until `shutdown` turns true. Idle while this coordinator is not
    /// the leader.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut applied = self.node.applied();
        let mut leadership = self.node.leadership();
        let mut events = self.backend.events();
        let mut ticker = tokio::time::interval(Duration::from_millis(self.cfg.tick_ms.max(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut led: Option<u64> = None;
        // Only a new applied entry or a change of leadership can give a
        // pass something new to do (not openraft's heartbeat metrics); the
        // entries applied while a pass runs are all handled by the next
        // one, so passes follow commits at once without spinning.
        loop {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = applied.changed() => {}
                _ = leadership.changed() => {}
                ev = events.recv() => match ev {
                    Ok(ev) => { if let Some(term) = self.node.leader_term() { self.on_event(term, ev).await; } }
                    // Missed events are recovered by reconciliation when
                    // agents re-register; nothing to do but go on.
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(missed = n, "backend events lagged"),
                    Err(broadcast::error::RecvError::Closed) => events = self.backend.events(),
                },
                _ = ticker.tick() => {}
            }
            applied.borrow_and_update();
            leadership.borrow_and_update();
            if *shutdown.borrow() {
                return;
            }
            let term = self.node.leader_term();
            if let Some(t) = term
                && led != term
            {
                tracing::info!(term = t, "became leader: resuming executions from the replicated state");
                *self.inflight.lock().expect("poisoned") = Inflight { term: t, ..Inflight::default() };
            }
            led = term;
            if let Some(t) = term {
                self.pass(t).await;
            }
        }
    }

    /// Commits `cmd` while this coordinator still leads in `term` (see
    /// [`Coordinator::write_in_term`]).
    async fn write(&self, term: u64, cmd: Command) -> Option<Applied> {
        match self.node.write_in_term(term, cmd).await {
            Ok(w) => match w.result {
                Ok(a) => Some(a),
                Err(e) => {
                    // The state moved on since we looked: the next pass sees it.
                    tracing::debug!(error = %e, "command refused");
                    None
                }
            },
            Err(crate::raft::ApiError::NotLeader(_)) => {
                tracing::debug!(term, "deposed: a write of the old term is dropped");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "write failed");
                None
            }
        }
    }

    async fn on_event(&self, term: u64, ev: BackendEvent) {
        match ev {
            BackendEvent::Exited { service, container_id, exit_code, oom_killed, reason, time } => {
                tracing::info!(service, container_id, ?exit_code, oom_killed, "service exited");
                let cmd = Command::ServiceExited { id: service, container_id, exit_code, oom_killed, reason, time };
                self.write(term, cmd).await;
            }
        }
    }

    /// One round: queue new submissions, enforce runtime limits, stop what
    /// must stop, start what was placed, and schedule.
    pub async fn pass(&self, term: u64) {
        let now = now_ms();
        let platform = self.backend.platform_state();
        let work = {
            let inflight = self.inflight.lock().expect("poisoned");
            self.node.read_local(|st| self.collect(st, &platform, &inflight, now)).0
        };
        if !work.submitted.is_empty() {
            let cmds = work.submitted.iter().map(|id| Command::QueueExecution { id: *id, time: now }).collect();
            self.write(term, Command::Batch(cmds)).await;
        }
        if !work.over_limit.is_empty() {
            let cmds = work
                .over_limit
                .iter()
                .map(|(id, reason)| Command::TerminateExecution {
                    id: *id,
                    reason: reason.clone(),
                    after: AfterCleanup::Terminated,
                    time: now,
                })
                .collect();
            self.write(term, Command::Batch(cmds)).await;
        }
        if !work.drain.is_empty() {
            self.write(term, Command::Batch(work.drain)).await;
        }
        for (node, service, container) in work.to_stop {
            self.stop(term, node, service, container);
        }
        for (node, spec) in work.to_respawn {
            self.spawn_group(term, vec![(node, spec)]);
        }
        if !work.plan.is_empty() {
            self.commit_plan(term, work.plan).await;
        }
    }

    fn collect(&self, st: &State, platform: &Platform, inflight: &Inflight, now: Millis) -> Work {
        let mut w = Work::default();
        let connected = |n: &str| platform.connected(n);
        // Runtime limits by owner, looked up once per pass (not once per
        // running execution); none at all is the common case.
        let limits: HashMap<&str, u64> = st
            .users
            .values()
            .map(|u| {
                let limit = st.quotas.get(&u.quota_id).map(|q| q.runtime_limit);
                (u.username.as_str(), limit.unwrap_or(self.cfg.default_runtime_limit_s))
            })
            .collect();
        let any_limit = self.cfg.default_runtime_limit_s > 0 || limits.values().any(|l| *l > 0);
        for e in st.executions.values() {
            match e.status {
                ExecutionStatus::Submitted => w.submitted.push(e.id),
                ExecutionStatus::Running if any_limit => {
                    let limit_s = limits.get(e.owner.as_str()).copied().unwrap_or(self.cfg.default_runtime_limit_s);
                    if let Some(start) = e.time_start
                        && limit_s > 0
                        && now.saturating_sub(start) > limit_s * 1000
                    {
                        w.over_limit.push((e.id, format!("runtime limit of {limit_s} s reached")));
                    }
                }
                _ => {}
            }
        }
        for s in st.services.values() {
            // Most services are running: only these two statuses need work.
            if !matches!(s.status, ServiceStatus::Terminating | ServiceStatus::Starting) {
                continue;
            }
            let (Some(node), Some(cid)) = (s.node.as_deref(), s.container_id.as_deref()) else { continue };
            if !connected(node) {
                // Wait for the agent to come back (or for the node to be
                // declared down); asking now would only fail.
                continue;
            }
            match s.status {
                ServiceStatus::Terminating => {
                    if inflight.stopping.get(cid).is_none_or(|t| Instant::now() >= *t) {
                        w.to_stop.push((node.to_string(), s.id, cid.to_string()));
                    }
                }
                ServiceStatus::Starting
                    if !inflight.spawning.contains(cid)
                        && inflight.unknown.get(cid).is_none_or(|t| Instant::now() >= *t) =>
                {
                    if let Some(e) = st.executions.get(&s.execution_id) {
                        w.to_respawn.push((node.to_string(), spec::service_spec(st, e, s, &self.cfg.spec_settings())));
                    }
                }
                _ => {}
            }
        }
        w.drain = drain::actions(st, platform, &self.cfg.drain, now);
        let (plan, waiting) = schedule_explained(st, platform, &self.cfg.scheduler, now);
        for wt in waiting.iter().filter(|w| w.never_fits) {
            tracing::debug!(execution = wt.execution, reason = %wt.reason, "cannot be placed");
        }
        w.plan = cap_plan(plan, st, MAX_PLAN_EXECUTIONS);
        w
    }

    async fn commit_plan(&self, term: u64, plan: Plan) {
        let shares = plan.core_shares.clone();
        let placed: Vec<ServiceId> = plan.placements.iter().map(|p| p.service).collect();
        if self.write(term, Command::ApplyPlan(plan)).await.is_none() {
            return;
        }
        // The plan is committed: now tell the nodes, execution by execution,
        // in startup order.
        let (groups, updates) = self
            .node
            .read_local(|st| {
                let mut by_exec: BTreeMap<ExecutionId, Vec<(i64, String, ServiceSpec)>> = BTreeMap::new();
                for sid in &placed {
                    let Some(s) = st.services.get(sid) else { continue };
                    let (Some(e), Some(node)) = (st.executions.get(&s.execution_id), s.node.clone()) else { continue };
                    if s.status == ServiceStatus::Starting {
                        by_exec.entry(e.id).or_default().push((
                            s.startup_order,
                            node,
                            spec::service_spec(st, e, s, &self.cfg.spec_settings()),
                        ));
                    }
                }
                let updates: Vec<(String, ServiceId, String, zoe_common::resources::Millicores)> = shares
                    .iter()
                    .filter_map(|(sid, cores)| {
                        let s = st.services.get(sid)?;
                        Some((s.node.clone()?, *sid, s.container_id.clone()?, *cores))
                    })
                    .collect();
                (by_exec, updates)
            })
            .0;
        for (_, mut list) in groups {
            list.sort_by_key(|(order, _, spec)| (*order, spec.service_id));
            self.spawn_ordered(term, list);
        }
        for (node, sid, cid, cores) in updates {
            self.update_cores(term, node, sid, cid, cores);
        }
    }

    /// Queues a container's new core share for its node. Shares are
    /// background work, sent at most [`CORE_UPDATES_IN_FLIGHT`] at a time
    /// cluster-wide; a share computed while an older one for the same
    /// container still waits replaces it. Under a burst of placements (each
    /// changes the share of every container on its node) the nodes get the
    /// latest shares, not every intermediate one.
    fn update_cores(
        &self,
        term: u64,
        node: String,
        sid: ServiceId,
        cid: String,
        cores: zoe_common::resources::Millicores,
    ) {
        {
            let mut u = self.core_updates.lock().expect("poisoned");
            if u.pending.insert(cid.clone(), (term, node, sid, cores)).is_none() {
                u.order.push_back(cid);
            }
            if u.busy {
                return;
            }
            u.busy = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut inflight = futures::stream::FuturesUnordered::new();
            loop {
                {
                    let mut u = this.core_updates.lock().expect("poisoned");
                    // A container's next share waits for its previous one
                    // to be answered, so they cannot arrive out of order.
                    let mut later = Vec::new();
                    while inflight.len() < CORE_UPDATES_IN_FLIGHT {
                        let Some(cid) = u.order.pop_front() else { break };
                        if u.sending.contains(&cid) {
                            later.push(cid);
                            continue;
                        }
                        let Some((term, node, sid, cores)) = u.pending.remove(&cid) else { continue };
                        u.sending.insert(cid.clone());
                        let backend = this.backend.clone();
                        inflight.push(async move {
                            if let Err(e) = backend.update_service(term, &node, sid, &cid, cores, None).await {
                                tracing::warn!(service = sid, error = %e, "core share update failed");
                            }
                            cid
                        });
                    }
                    u.order.extend(later);
                    if inflight.is_empty() {
                        u.busy = false;
                        return;
                    }
                }
                if let Some(cid) = inflight.next().await {
                    this.core_updates.lock().expect("poisoned").sending.remove(&cid);
                }
            }
        });
    }

    /// Starts an execution's instances group by group of `startup_order`:
    /// a group starts when the previous one has been started.
    fn spawn_ordered(&self, term: u64, list: Vec<(i64, String, ServiceSpec)>) {
        let this = self.clone();
        {
            let mut inflight = self.inflight.lock().expect("poisoned");
            if inflight.term != term {
                // Decided in a term that is over: the new leader decides again.
                return;
            }
            for (_, _, spec) in &list {
                inflight.spawning.insert(spec.container_id.clone());
                inflight.unknown.remove(&spec.container_id);
            }
        }
        tokio::spawn(async move {
            let mut groups: Vec<Vec<(String, ServiceSpec)>> = Vec::new();
            let mut last = None;
            for (order, node, spec) in list {
                if last != Some(order) {
                    groups.push(Vec::new());
                    last = Some(order);
                }
                groups.last_mut().expect("pushed").push((node, spec));
            }
            for (k, group) in groups.into_iter().enumerate() {
                if k > 0 {
                    // If an earlier group failed, the execution is being
                    // cleaned up: do not start the rest.
                    let ids: Vec<ServiceId> = group.iter().map(|(_, s)| s.service_id).collect();
                    let still = this
                        .node
                        .read_local(|st| {
                            ids.iter()
                                .all(|id| st.services.get(id).is_some_and(|s| s.status == ServiceStatus::Starting))
                        })
                        .0;
                    if !still {
                        let mut inflight = this.inflight.lock().expect("poisoned");
                        for (_, s) in &group {
                            inflight.spawned(term, &s.container_id);
                        }
                        continue;
                    }
                }
                futures::future::join_all(group.into_iter().map(|(node, spec)| {
                    use tracing::Instrument;
                    // One grep for an execution id follows it from the
                    // leader's decision to the agent's start (same fields).
                    let span = tracing::info_span!(
                        "spawn",
                        execution_id = spec.execution_id,
                        service_id = spec.service_id,
                        node = %node
                    );
                    this.spawn_one(term, node, spec).instrument(span)
                }))
                .await;
            }
        });
    }

    fn spawn_group(&self, term: u64, list: Vec<(String, ServiceSpec)>) {
        self.spawn_ordered(term, list.into_iter().map(|(n, s)| (0, n, s)).collect());
    }

    async fn spawn_one(&self, term: u64, node: String, spec: ServiceSpec) {
        let (sid, cid) = (spec.service_id, spec.container_id.clone());
        let result = self.backend.spawn_service(term, &node, spec).await;
        let time = now_ms();
        let cmd = match result {
            Err(SpawnError::Deposed(_)) => {
                self.inflight.lock().expect("poisoned").spawned(term, &cid);
                return;
            }
            Err(SpawnError::Unknown(m)) => {
                // The container may run: nothing is committed, and the
                // next pass asks again for the same container id.
                tracing::warn!(service = sid, node, container = %cid, error = %m, "spawn outcome unknown; will ask again");
                let mut inflight = self.inflight.lock().expect("poisoned");
                if inflight.term == term {
                    inflight.spawning.remove(&cid);
                    let again = Instant::now() + Duration::from_millis(self.cfg.spawn_retry_ms);
                    inflight.unknown.insert(cid, again);
                }
                return;
            }
            Ok(started) => Command::ServiceStarted {
                id: sid,
                container_id: started.container_id,
                ip_address: started.ip_address,
                ports: started.ports,
                time,
            },
            Err(err) => {
                let failures = self
                    .node
                    .read_local(|st| {
                        st.services.get(&sid).and_then(|s| st.executions.get(&s.execution_id)).map(|e| e.start_failures)
                    })
                    .0
                    .unwrap_or(0);
                let (message, retry_at) = match err {
                    SpawnError::Fatal(m) => (m, None),
                    SpawnError::Unknown(_) | SpawnError::Deposed(_) => unreachable!("handled above"),
                    SpawnError::Retryable(m) if failures + 1 >= self.cfg.max_start_attempts => {
                        (format!("gave up after {} attempts: {m}", failures + 1), None)
                    }
                    SpawnError::Retryable(m) => {
                        let backoff = self
                            .cfg
                            .start_retry_base_ms
                            .saturating_mul(1 << failures.min(20))
                            .min(self.cfg.start_retry_max_ms);
                        (m, Some(time + backoff))
                    }
                };
                tracing::warn!(service = sid, node, %message, retry = retry_at.is_some(), "start failed");
                Command::ServiceStartFailed { id: sid, message, retry_at, time }
            }
        };
        self.write(term, cmd).await;
        self.inflight.lock().expect("poisoned").spawned(term, &cid);
    }

    fn stop(&self, term: u64, node: String, service: ServiceId, container: String) {
        let retry = Instant::now() + Duration::from_millis(self.cfg.stop_retry_ms);
        {
            let mut inflight = self.inflight.lock().expect("poisoned");
            if inflight.term != term {
                return;
            }
            inflight.stopping.insert(container.clone(), retry);
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.backend.terminate_service(term, &node, service, &container).await {
                Ok(()) => {
                    let cmd = Command::ServiceStopped { id: service, container_id: container.clone(), time: now_ms() };
                    this.write(term, cmd).await;
                    let mut inflight = this.inflight.lock().expect("poisoned");
                    if inflight.term == term {
                        inflight.stopping.remove(&container);
                    }
                }
                // Asked again after `stop_retry_ms`.
                Err(e) => tracing::warn!(service, node, error = %e, "stop failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests;
