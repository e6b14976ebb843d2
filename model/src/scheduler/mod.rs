//! Zoe's elastic scheduler as a pure function: `schedule(state, platform,
//! config, now) -> Plan`. No I/O, no clock: the leader passes the time in,
//! commits the plan through Raft, and only then tells agents to act.
//!
//! One pass follows Zoe's simulation (zoe-semantics §7.4):
//! 1. the queue in policy order (FIFO, SIZE, DYNSIZE);
//! 2. essential instances, execution by execution, all or nothing;
//! 3. elastic instances of every admitted execution, greedily, in queue
//!    order, on what is left.
//!
//! Zoe re-simulated the elastic instances of every admitted execution before
//! trying the next one, so that essential parts of later executions take
//! precedence over not-yet-started elastic parts of earlier ones. Placing all
//! essential parts first, then all elastic parts, gives the same result
//! without the quadratic cost (admission never depends on elastic parts).
//! Zoe's literal stop rule does depend on them (it stops at the first
//! execution that does not lower the cluster's free memory); it is available
//! as [`StopRule::Literal`] and simulated the quadratic way.
//!
//! The default stop rule is [`StopRule::EssentialFits`]: an execution is
//! admitted whenever its essential part fits. Zoe's literal rule stops the
//! whole pass behind a running execution whose elastic instances cannot be
//! placed, or behind any service that reserves no memory, because neither
//! lowers free memory; with it a queue can stall while room is free. The cost
//! of admitting whatever fits is that a large execution can wait behind a
//! stream of smaller ones; DYNSIZE's ageing is the remedy Zoe designed for
//! that, and FIFO users who want strict order can pick the literal rule.

pub mod dry_run;
mod fairshare;
mod placement;
pub mod platform;
mod preemption;
mod queue;
mod reservation;

pub use dry_run::{DryRun, dry_run};
pub use platform::{LiveNode, Platform};

use crate::state::{
    Execution, ExecutionId, ExecutionStatus, Millis, Placement, Plan, Service, ServiceId, ServiceStatus, State,
};
use placement::{Request, Sim};
use queue::{Candidate, Ranking};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zoe_common::image::ImageRef;
use zoe_common::resources::Millicores;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Arrival order.
    Fifo,
    /// The ZApp's `size` hint, smaller first.
    Size,
    /// Σcores.min × Σmemory.min, smaller first, aged while waiting.
    Dynsize,
    /// The owner who used the least lately first (core-time decayed with
    /// `fair_share_half_life_s`), then arrival order.
    #[serde(rename = "fairshare")]
    FairShare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementPolicy {
    /// Spread: the node with the fewest containers.
    Average,
    /// Pack: the node with the most containers that still fits.
    Waterfill,
    /// Any node that fits, seeded.
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// Zoe's rule: stop at the first execution that does not lower free memory.
    Literal,
    /// Admit every execution whose essential part fits.
    EssentialFits,
    /// Elastic-greedy: the queue in order, each execution's essential then
    /// elastic instances before the next one; the first execution whose
    /// essential part does not fit stops the pass.
    Greedy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    pub policy: Policy,
    pub placement: PlacementPolicy,
    pub stop_rule: StopRule,
    /// Seed of the `random` placement.
    pub seed: u64,
    /// DYNSIZE ageing, in size units (cores × bytes) per second waited.
    /// Zoe's value: 256 MiB per second.
    pub dynsize_aging_per_s: f64,
    /// Share idle cores among running services (Zoe's dynamic core sharing).
    pub core_sharing: bool,
    /// Restart backoff of elastic instances: base × 2^restarts, capped.
    pub restart_backoff_base_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// Elastic-only preemption (`preemption.rs`): a blocked execution may
    /// stop elastic instances of executions it outranks, never essential ones.
    pub preemption: bool,
    /// Half-life of the usage the `fairshare` policy orders users by.
    pub fair_share_half_life_s: u64,
    /// An execution queued this long goes first and, if blocked, holds a
    /// reservation with backfill (`reservation.rs`); unset: no reservation.
    pub reservation_after_s: Option<u64>,
}

impl Default for SchedulerConfig {
    fn default() -> SchedulerConfig {
        SchedulerConfig {
            policy: Policy::Fifo,
            placement: PlacementPolicy::Average,
            stop_rule: StopRule::EssentialFits,
            seed: 0,
            dynsize_aging_per_s: (256u64 << 20) as f64,
            core_sharing: true,
            restart_backoff_base_ms: 1_000,
            restart_backoff_max_ms: 60_000,
            preemption: false,
            fair_share_half_life_s: 24 * 3600,
            reservation_after_s: None,
        }
    }
}

impl SchedulerConfig {
    pub fn restart_backoff_ms(&self, restarts: u32) -> u64 {
        self.restart_backoff_base_ms.saturating_mul(1u64 << restarts.min(20)).min(self.restart_backoff_max_ms)
    }
}

/// Why a queued execution was not admitted in this pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub execution: ExecutionId,
    pub reason: String,
    /// No schedulable node could hold the instance even empty.
    pub never_fits: bool,
}

/// Preemptors a pass tries (each search is a few trial placements).
const MAX_PREEMPTORS: usize = 4;

/// One scheduling pass.
pub fn schedule(state: &State, platform: &Platform, config: &SchedulerConfig, now: Millis) -> Plan {
    schedule_explained(state, platform, config, now).0
}

/// Zoe's three scheduler queues (`/statistics/scheduler`), from the same
/// ordering code the passes use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Queues {
    /// Zoe's `queue`, in the order the next pass considers it: queued
    /// executions (those waiting out a start-retry delay included) and
    /// running ones with instances to (re)start.
    pub pending: Vec<ExecutionId>,
    /// Zoe's `running_queue`: running executions with every instance placed.
    pub running: Vec<ExecutionId>,
    /// Zoe's `termination_queue`: executions being cleaned up.
    pub termination: Vec<ExecutionId>,
}

pub fn queues(state: &State, cfg: &SchedulerConfig, now: Millis) -> Queues {
    let ranking = Ranking::new(state, cfg, now);
    let pending: Vec<ExecutionId> = queue::ordered(state, &ranking, cfg, now, true).iter().map(|c| c.exec.id).collect();
    let in_pending: std::collections::BTreeSet<ExecutionId> = pending.iter().copied().collect();
    let with_status = |st: ExecutionStatus| state.executions.values().filter(move |e| e.status == st).map(|e| e.id);
    Queues {
        running: with_status(ExecutionStatus::Running).filter(|id| !in_pending.contains(id)).collect(),
        termination: with_status(ExecutionStatus::CleaningUp).collect(),
        pending,
    }
}

/// One scheduling pass, with the reasons queued executions keep waiting.
pub fn schedule_explained(
    state: &State,
    platform: &Platform,
    cfg: &SchedulerConfig,
    now: Millis,
) -> (Plan, Vec<Waiting>) {
    let ranking = Ranking::new(state, cfg, now);
    let queue = queue::build(state, &ranking, cfg, now);
    let mut plan = Plan { time: now, ..Plan::default() };
    let mut waiting = Vec::new();
    if queue.is_empty() && !cfg.core_sharing {
        return (plan, waiting);
    }
    let requests = Requests::new(state, &queue);
    let mut sim = Sim::new(state, platform, cfg, now, requests.floor);

    let mut admitted: Vec<Candidate> = Vec::new();
    let mut essential: Vec<(ServiceId, usize)> = Vec::new();
    // Elastic instances placed as the pass goes (elastic-greedy), instead
    // of after every essential part.
    let mut greedy: Option<Vec<(ServiceId, usize)>> = None;
    let mut hold: Option<reservation::Reservation> = None;
    match cfg.stop_rule {
        StopRule::EssentialFits => {
            let mut preemptions = 0;
            for c in &queue {
                if c.running {
                    essential.extend(place_moving_essentials(&mut sim, &requests, state, c.exec));
                    admitted.push(*c);
                    continue;
                }
                if let Some(r) = &mut hold
                    && !r.may_backfill(state, &requests, c, now)
                {
                    waiting.push(Waiting {
                        execution: c.exec.id,
                        reason: format!("held back by the reservation for execution {}", r.holder),
                        never_fits: false,
                    });
                    continue;
                }
                let mut w = match place_essentials(&mut sim, &requests, state, c.exec) {
                    Ok(placed) => {
                        essential.extend(placed);
                        admitted.push(*c);
                        continue;
                    }
                    Err(w) => w,
                };
                // Queue order puts executions past the reservation threshold
                // first: the first of them that is blocked holds it.
                let holder = hold.is_none() && !w.never_fits && ranking.overdue(c.exec);
                if holder {
                    hold = Some(reservation::Reservation::new(state, &sim, &requests, c, now, cfg.preemption));
                }
                if cfg.preemption && !w.never_fits && preemptions < MAX_PREEMPTORS {
                    preemptions += 1;
                    let mine = ranking.rank(c.exec);
                    let outranks = |r: queue::Rank| {
                        holder || r.0.total_cmp(&mine.0).then(r.1.cmp(&mine.1)).then(r.2.cmp(&mine.2)).is_gt()
                    };
                    if let preemption::Outcome::Fits { victims, trial } =
                        preemption::find(state, &sim, &requests, c, outranks, |e| ranking.rank(e))
                    {
                        w.reason = if victims.is_empty() {
                            "waiting for instances that are stopping to make room".to_string()
                        } else {
                            format!("waiting for {} preempted elastic instances to stop", victims.len())
                        };
                        plan.preempt.extend(victims);
                        preemption::hold(&mut sim, &trial);
                        // One preemptor a pass: the capacity that instances
                        // already stopping will free is counted once.
                        preemptions = MAX_PREEMPTORS;
                    }
                }
                waiting.push(w);
            }
        }
        StopRule::Greedy => {
            let mut placed = Vec::new();
            for (k, c) in queue.iter().enumerate() {
                if c.running {
                    essential.extend(place_moving_essentials(&mut sim, &requests, state, c.exec));
                } else {
                    match place_essentials(&mut sim, &requests, state, c.exec) {
                        Ok(p) => essential.extend(p),
                        Err(w) => {
                            waiting.push(w);
                            for rest in queue[k + 1..].iter().filter(|r| !r.running) {
                                waiting.push(Waiting {
                                    execution: rest.exec.id,
                                    reason: "waiting behind the head of the queue (elastic-greedy)".into(),
                                    never_fits: false,
                                });
                            }
                            break;
                        }
                    }
                }
                placed.extend(place_elastics(&mut sim, &requests, state, std::slice::from_ref(c), cfg, now));
                admitted.push(*c);
            }
            greedy = Some(placed);
        }
        StopRule::Literal => {
            let mut free = sim.free_memory();
            for (k, c) in queue.iter().enumerate() {
                let mut trial = sim.clone();
                let placed = if c.running {
                    Ok(place_moving_essentials(&mut trial, &requests, state, c.exec))
                } else {
                    place_essentials(&mut trial, &requests, state, c.exec)
                };
                let mut candidate = admitted.clone();
                if placed.is_ok() {
                    candidate.push(*c);
                }
                let mut with_elastic = trial.clone();
                place_elastics(&mut with_elastic, &requests, state, &candidate, cfg, now);
                let now_free = with_elastic.free_memory();
                if now_free >= free {
                    // No progress: Zoe stops here, and so does everything behind.
                    for rest in &queue[k..] {
                        if !rest.running {
                            waiting.push(Waiting {
                                execution: rest.exec.id,
                                reason: "waiting behind an execution that cannot progress (literal stop rule)".into(),
                                never_fits: false,
                            });
                        }
                    }
                    break;
                }
                free = now_free;
                sim = trial;
                if let Ok(p) = placed {
                    essential.extend(p);
                }
                admitted = candidate;
            }
        }
    }
    // While a reservation holds, nothing grows into what the holder waits
    // for, unless the holder can take it back (preemption).
    let elastic = match greedy {
        Some(placed) => placed,
        None if hold.is_some() && !cfg.preemption => Vec::new(),
        None => place_elastics(&mut sim, &requests, state, &admitted, cfg, now),
    };

    plan.starting = admitted.iter().filter(|c| !c.running).map(|c| c.exec.id).collect();
    let placed: Vec<(ServiceId, usize)> = essential.into_iter().chain(elastic).collect();
    let (shares, node_shares) =
        if cfg.core_sharing { core_shares(state, &sim, &placed) } else { (BTreeMap::new(), Vec::new()) };
    plan.node_shares = node_shares;
    for (sid, i) in &placed {
        let base = state.services.get(sid).map_or(0, |s| requests.get(s).cores);
        let cores = shares.get(sid).copied().unwrap_or(Millicores(base));
        plan.placements.push(Placement { service: *sid, node: sim.nodes[*i].node.name.clone(), cores });
    }
    for (sid, cores) in shares {
        if let Some(s) = state.services.get(&sid)
            && s.status == ServiceStatus::Active
            && s.cores_allocated != Some(cores)
        {
            plan.core_shares.push((sid, cores));
        }
    }
    (plan, waiting)
}

/// Requests of every instance the pass may place, computed once per
/// service group (the instances of a group ask the same), so a pass over a
/// long queue of wide executions allocates per group, not per instance.
struct Requests<'a> {
    /// Where each execution's groups start in `groups`.
    first: BTreeMap<ExecutionId, u32>,
    groups: Vec<Request<'a>>,
    /// Smallest cores and memory asked for.
    floor: (u32, u64),
}

impl<'a> Requests<'a> {
    fn new(state: &'a State, queue: &[Candidate<'a>]) -> Requests<'a> {
        let mut first = BTreeMap::new();
        let mut groups = Vec::new();
        let mut floor = (u32::MAX, u64::MAX);
        for c in queue {
            let app = &c.exec.description;
            let owner = c.exec.owner.as_str();
            // Only host volumes ask who the owner is; finding the user scans
            // them all, once per queued execution per pass otherwise.
            let wants_volumes = app.services.iter().any(|g| g.volumes.iter().any(|v| v.host_volume.is_some()));
            let role = wants_volumes
                .then(|| state.user_by_name(owner).and_then(|u| state.roles.get(&u.role_id)))
                .flatten()
                .map_or("", |r| r.name.as_str());
            first.insert(c.exec.id, groups.len() as u32);
            for g in &app.services {
                let host = state.network.uses_host(g.network.as_deref());
                let mut host_ports: Vec<u16> =
                    if host { g.ports.iter().map(|p| p.port_number).collect() } else { Vec::new() };
                host_ports.dedup();
                let r = Request {
                    cores: g.cores_min().0,
                    memory: g.memory_min(),
                    labels: g.labels(),
                    image: ImageRef::parse(&g.image).map(|r| r.canonical()).unwrap_or_else(|_| g.image.clone()),
                    host_ports,
                    range_ports: if host { 0 } else { g.ports.len() },
                    host_volumes: g.volumes.iter().filter_map(|v| v.host_volume.as_deref()).collect(),
                    owner,
                    role,
                };
                if g.total_count > 0 {
                    floor = (floor.0.min(r.cores), floor.1.min(r.memory));
                }
                groups.push(r);
            }
        }
        if floor == (u32::MAX, u64::MAX) {
            floor = (0, 0);
        }
        Requests { first, groups, floor }
    }

    /// The request of an instance of a queued execution.
    fn get(&self, s: &Service) -> &Request<'a> {
        let first = self.first.get(&s.execution_id).expect("request of a queued execution");
        &self.groups[*first as usize + s.group_index]
    }
}

/// All essential instances of an execution, or none.
fn place_essentials(
    sim: &mut Sim,
    requests: &Requests,
    state: &State,
    e: &Execution,
) -> Result<Vec<(ServiceId, usize)>, Waiting> {
    let mut placed: Vec<(ServiceId, usize)> = Vec::new();
    for s in state.services_of(e.id).filter(|s| s.essential) {
        let r = requests.get(s);
        match sim.place(r) {
            Some(i) => placed.push((s.id, i)),
            None => {
                for (sid, i) in placed.iter().rev() {
                    sim.unplace(*i, requests.get(&state.services[sid]));
                }
                let never = !sim.could_ever_fit(r);
                let need =
                    format!("{} cores, {} memory", Millicores(r.cores), zoe_common::resources::human_bytes(r.memory));
                let labels =
                    if r.labels.is_empty() { String::new() } else { format!(", labels {}", r.labels.join(",")) };
                let reason = if never {
                    format!("no schedulable node could ever hold {} ({need}{labels})", s.name)
                } else {
                    format!("waiting for room for {} ({need}{labels})", s.name)
                };
                return Err(Waiting { execution: e.id, reason, never_fits: never });
            }
        }
    }
    Ok(placed)
}

/// Essential instances of a running execution that are moving (drain, lost
/// node): each on its own, since the rest of the execution is running.
fn place_moving_essentials(
    sim: &mut Sim,
    requests: &Requests,
    state: &State,
    e: &Execution,
) -> Vec<(ServiceId, usize)> {
    let mut placed = Vec::new();
    for s in state.services_of(e.id).filter(|s| s.essential && s.moving && !s.status.may_hold_container()) {
        let r = requests.get(s);
        if let Some(i) = sim.place(r) {
            placed.push((s.id, i));
        }
    }
    placed
}

/// Elastic instances of admitted executions, greedily, in queue order.
fn place_elastics(
    sim: &mut Sim,
    requests: &Requests,
    state: &State,
    admitted: &[Candidate],
    cfg: &SchedulerConfig,
    now: Millis,
) -> Vec<(ServiceId, usize)> {
    let mut placed = Vec::new();
    for c in admitted {
        for s in state.services_of(c.exec.id).filter(|s| !s.essential) {
            if !queue::instance_ready(s, cfg, now) {
                continue;
            }
            let r = requests.get(s);
            if let Some(i) = sim.place(r) {
                placed.push((s.id, i));
            }
        }
    }
    placed
}

/// Zoe's dynamic core sharing: on each node, the cores nobody reserved are
/// split equally among the services there; each may use `cores.min` plus its
/// share (capped by `cores.max` and the node). Services labelled `gpu` keep
/// their minimum (their runtime does not take live CPU updates well), but
/// still count in the split, as in Zoe.
///
/// An instance's allocation depends on its node's share alone, so a node
/// that takes no placement in this pass and whose share is the one its
/// allocations were computed with (`State::core_shares`) is skipped: a pass
/// costs the nodes that changed, not every running instance. Returns the
/// allocations and the share of each node computed.
fn core_shares(
    state: &State,
    sim: &Sim,
    placed: &[(ServiceId, usize)],
) -> (BTreeMap<ServiceId, Millicores>, Vec<(String, Millicores)>) {
    let mut placed_on: BTreeMap<usize, Vec<&Service>> = BTreeMap::new();
    for (sid, i) in placed {
        if let Some(s) = state.services.get(sid) {
            placed_on.entry(*i).or_default().push(s);
        }
    }
    let usage = state.index().usage();
    let mut out = BTreeMap::new();
    let mut node_shares = Vec::new();
    for (i, n) in sim.nodes.iter().enumerate() {
        let name = n.node.name.as_str();
        let new = placed_on.get(&i).map_or(&[][..], |v| v.as_slice());
        let sharing = usage.get(name).map(|u| u.sharing());
        let count = sharing.map_or(0, |s| s.len()) + new.len();
        if count == 0 {
            continue;
        }
        let free = n.free_cores.max(0) as u64;
        let share = (free / count as u64) as u32;
        if new.is_empty() && state.core_shares.get(name) == Some(&Millicores(share)) {
            continue;
        }
        node_shares.push((name.to_string(), Millicores(share)));
        let running = sharing.into_iter().flatten().filter_map(|id| state.services.get(id));
        for s in running.chain(new.iter().copied()) {
            let Some(e) = state.executions.get(&s.execution_id) else { continue };
            let g = &e.description.services[s.group_index];
            let min = g.cores_min();
            let cores = if g.labels().iter().any(|l| l == "gpu") {
                min
            } else {
                let cap = g.resources.cores.max.unwrap_or(n.node.capacity.cores).min(n.node.capacity.cores).max(min);
                Millicores(min.0.saturating_add(share)).min(cap)
            };
            out.insert(s.id, cores);
        }
    }
    (out, node_shares)
}

#[cfg(test)]
mod tests;
