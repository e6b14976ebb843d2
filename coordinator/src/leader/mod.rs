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

pub use zoe_model::pass::LeaderConfig;
pub use zoe_model::spec;

use crate::backend::{Backend, BackendEvent, SpawnError};
use crate::raft::Coordinator;
use crate::state::{Applied, Command, Millis, ServiceId, ServiceStatus};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, watch};
use zoe_common::service::ServiceSpec;
use zoe_model::pass::{self, Memory, Push};

pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// Where the leader's decisions read the time: the system's, or a test's.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Millis;
}

/// The system's wall clock, in milliseconds.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_ms()
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

/// Agent events committed in one write at most.
const MAX_EVENTS_PER_WRITE: usize = 1_000;

/// Core share updates in flight at once, over all nodes.
const CORE_UPDATES_IN_FLIGHT: usize = 16;

pub struct Leader<B: Backend> {
    node: Coordinator,
    backend: Arc<B>,
    cfg: Arc<LeaderConfig>,
    clock: Arc<dyn Clock>,
    memory: Arc<Mutex<Memory>>,
    core_updates: Arc<Mutex<CoreUpdates>>,
}

impl<B: Backend> Clone for Leader<B> {
    fn clone(&self) -> Self {
        Leader {
            node: self.node.clone(),
            backend: self.backend.clone(),
            cfg: self.cfg.clone(),
            clock: self.clock.clone(),
            memory: self.memory.clone(),
            core_updates: self.core_updates.clone(),
        }
    }
}

impl<B: Backend> Leader<B> {
    pub fn new(node: Coordinator, backend: Arc<B>, cfg: LeaderConfig) -> Leader<B> {
        Leader {
            node,
            backend,
            cfg: Arc::new(cfg),
            clock: Arc::new(SystemClock),
            memory: Arc::default(),
            core_updates: Arc::default(),
        }
    }

    /// The same leader reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Leader<B> {
        self.clock = clock;
        self
    }

    /// The term's memory, if `term` is still the one it is for: work of a
    /// term that is over must not touch the new term's bookkeeping.
    fn memory_of(&self, term: u64) -> Option<std::sync::MutexGuard<'_, Memory>> {
        let m = self.memory.lock().expect("poisoned");
        (m.term == term).then_some(m)
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
        let mut again = false;
        // Only a new applied entry, a change of leadership or a node's
        // report can give a pass something new to do (not openraft's
        // heartbeat metrics); the entries applied while a pass runs are all
        // handled by the next one, so passes follow commits at once without
        // spinning.
        loop {
            if !again {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = applied.changed() => {}
                    _ = leadership.changed() => {}
                    ev = events.recv() => match ev {
                        Ok(ev) => {
                            // Exits come in bursts (a wave of batch jobs, a
                            // pipeline's fan-out): those already queued are
                            // committed in the same write, not one by one.
                            let mut evs = vec![ev];
                            while evs.len() < MAX_EVENTS_PER_WRITE {
                                match events.try_recv() {
                                    Ok(e) => evs.push(e),
                                    Err(_) => break,
                                }
                            }
                            if let Some(term) = self.node.leader_term() { self.on_events(term, evs).await; }
                        }
                        // Missed events are recovered by reconciliation;
                        // nothing to do but go on.
                        Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(missed = n, "backend events lagged"),
                        Err(broadcast::error::RecvError::Closed) => events = self.backend.events(),
                    },
                    _ = ticker.tick() => {}
                }
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
                *self.memory.lock().expect("poisoned") = Memory::new(t, self.clock.now());
            }
            led = term;
            again = match term {
                Some(t) => self.pass(t).await,
                None => false,
            };
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

    async fn on_events(&self, term: u64, evs: Vec<BackendEvent>) {
        let mut cmds = Vec::new();
        for ev in evs {
            match ev {
                BackendEvent::Exited { service, container_id, exit_code, oom_killed, reason, time } => {
                    tracing::info!(service, container_id, ?exit_code, oom_killed, "service exited");
                    cmds.push(Command::ServiceExited {
                        id: service,
                        container_id,
                        exit_code,
                        oom_killed,
                        reason,
                        time,
                    });
                }
                // The pass that follows reconciles its inventory.
                BackendEvent::NodeRegistered { node } => tracing::debug!(node, "node registered"),
            }
        }
        match cmds.len() {
            0 => {}
            1 => {
                self.write(term, cmds.pop().expect("one")).await;
            }
            _ => {
                self.write(term, Command::Batch(cmds)).await;
            }
        }
    }

    /// One round: decide ([`pass::decide`]) on one read of the state,
    /// ask nodes what needs no commit first (stops, spawns asked again,
    /// orphans, network pushes), commit the rest as one write, then start
    /// what the committed plan placed. Returns whether another pass should
    /// follow at once (a registration was reconciled: its node is usable).
    pub async fn pass(&self, term: u64) -> bool {
        let now = self.clock.now();
        let mut platform = self.backend.platform_state();
        let liveness = self.backend.liveness();
        let mut decided = {
            let Some(mut mem) = self.memory_of(term) else { return false };
            self.node.read_local(|st| pass::decide(st, &mut platform, &mut mem, &self.cfg, &liveness, now)).0
        };
        for c in &decided.commands {
            if let Command::SetNodeStatus { name, status: crate::state::NodeStatus::Down, .. } = c {
                tracing::warn!(node = %name, "no heartbeat for TTL + grace: marking the node down");
            }
        }
        for (execution, reason) in &decided.never_fits {
            tracing::debug!(execution, %reason, "cannot be placed");
        }
        for (node, service, container) in std::mem::take(&mut decided.stop) {
            self.stop(term, node, service, container);
        }
        for (node, spec) in std::mem::take(&mut decided.respawn) {
            self.spawn_ordered(term, vec![(0, node, spec)]);
        }
        for (node, container) in std::mem::take(&mut decided.orphans) {
            self.remove_orphan(term, node, container);
        }
        for push in std::mem::take(&mut decided.pushes) {
            self.push(term, push);
        }
        let placed: Vec<ServiceId> = decided.plan.placements.iter().map(|p| p.service).collect();
        let shares = decided.plan.core_shares.clone();
        let planned = !decided.plan.is_empty();
        let registered = std::mem::take(&mut decided.registered);
        let (committed, plan_applied) = match decided.batch() {
            None => (true, false),
            Some(batch) => match self.write(term, batch).await {
                Some(Applied::Batch(results)) => {
                    for e in results.iter().filter_map(|r| r.as_ref().err()) {
                        // The state moved on since we looked: the next pass sees it.
                        tracing::debug!(error = %e, "command refused");
                    }
                    (true, planned && results.first().is_some_and(|r| r.is_ok()))
                }
                _ => (false, false),
            },
        };
        if plan_applied {
            self.start_placed(term, &placed, &shares);
        }
        if committed && !registered.is_empty() {
            let Some(mut mem) = self.memory_of(term) else { return false };
            mem.sessions.extend(registered);
            return true;
        }
        false
    }

    /// The plan is committed: tell the nodes, execution by execution, in
    /// startup order, and send the new core shares.
    fn start_placed(&self, term: u64, placed: &[ServiceId], shares: &[(ServiceId, zoe_common::resources::Millicores)]) {
        let (groups, updates) =
            self.node.read_local(|st| (pass::starts(st, placed, &self.cfg), pass::share_updates(st, shares))).0;
        for list in groups {
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
            // Decided in a term that is over: the new leader decides again.
            let Some(mut mem) = self.memory_of(term) else { return };
            for (_, _, spec) in &list {
                mem.spawning.insert(spec.container_id.clone());
                mem.unknown.remove(&spec.container_id);
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
                        if let Some(mut mem) = this.memory_of(term) {
                            for (_, s) in &group {
                                mem.spawned(&s.container_id);
                            }
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

    async fn spawn_one(&self, term: u64, node: String, spec: ServiceSpec) {
        let (sid, cid) = (spec.service_id, spec.container_id.clone());
        if spec.network.as_deref() == Some(zoe_common::service::NETWORK_BRIDGE) {
            // The container's /etc/hosts starts with its execution's
            // instances already running.
            let execution = spec.execution_id;
            let entries = self.node.read_local(|st| zoe_model::network::execution_hosts(st, execution)).0;
            if let Err(e) = self.backend.set_hosts(&node, execution, entries).await {
                tracing::warn!(node, execution, "sending the host list before a spawn: {e}");
            }
        }
        let result = self.backend.spawn_service(term, &node, spec).await;
        let time = self.clock.now();
        let cmd = match result {
            Err(SpawnError::Deposed(_)) => {
                if let Some(mut mem) = self.memory_of(term) {
                    mem.spawned(&cid);
                }
                return;
            }
            Err(SpawnError::Unknown(m)) => {
                // The container may run: nothing is committed, and the
                // next pass asks again for the same container id.
                tracing::warn!(service = sid, node, container = %cid, error = %m, "spawn outcome unknown; will ask again");
                if let Some(mut mem) = self.memory_of(term) {
                    mem.spawn_unknown(&cid, time, self.cfg.spawn_retry_ms);
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
            Err(SpawnError::Retryable(m)) => self.start_failed(sid, true, m, time),
            Err(SpawnError::Fatal(m)) => self.start_failed(sid, false, m, time),
        };
        self.write(term, cmd).await;
        if let Some(mut mem) = self.memory_of(term) {
            mem.spawned(&cid);
        }
    }

    fn start_failed(&self, sid: ServiceId, retryable: bool, message: String, time: Millis) -> Command {
        let cmd = self.node.read_local(|st| pass::start_failed(st, &self.cfg, sid, retryable, message, time)).0;
        if let Command::ServiceStartFailed { message, retry_at, .. } = &cmd {
            tracing::warn!(service = sid, %message, retry = retry_at.is_some(), "start failed");
        }
        cmd
    }

    /// Asks `node` to stop a terminating service's container; asked again
    /// by a later pass after `stop_retry_ms` if it did not stop.
    fn stop(&self, term: u64, node: String, service: ServiceId, container: String) {
        let this = self.clone();
        tokio::spawn(async move {
            match this.backend.terminate_service(term, &node, service, &container).await {
                Ok(()) => {
                    let time = this.clock.now();
                    let cmd = Command::ServiceStopped { id: service, container_id: container.clone(), time };
                    this.write(term, cmd).await;
                    if let Some(mut mem) = this.memory_of(term) {
                        mem.stopping.remove(&container);
                    }
                }
                Err(e) => tracing::warn!(service, node, error = %e, "stop failed"),
            }
        });
    }

    fn remove_orphan(&self, term: u64, node: String, container: String) {
        let backend = self.backend.clone();
        tokio::spawn(async move {
            tracing::info!(node = %node, container = %container, "stopping orphan container");
            if let Err(e) = backend.remove_container(term, &node, &container).await {
                tracing::warn!(node = %node, container = %container, "stopping orphan failed: {e}");
            }
        });
    }

    /// Sends a network push; one the node did not acknowledge is sent
    /// again by a later pass.
    fn push(&self, term: u64, push: Push) {
        let this = self.clone();
        tokio::spawn(async move {
            let r = match &push {
                Push::Network { node, network, .. } => this.backend.configure_network(node, network.clone()).await,
                Push::Hosts { node, execution, entries, .. } => {
                    this.backend.set_hosts(node, *execution, entries.clone()).await
                }
            };
            if let Err(e) = r {
                tracing::warn!(?push, "network push failed: {e}");
                if let Some(mut mem) = this.memory_of(term) {
                    mem.push_failed(&push);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
