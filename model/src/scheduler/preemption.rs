//! Elastic-only preemption: a queued execution whose essential part does
//! not fit may stop running *elastic* instances of executions it outranks
//! (the policy puts them after it: larger under SIZE, heavier users under
//! fair share; under FIFO everything running was there first, so nothing),
//! or of anyone when it holds the reservation. Essential instances are
//! never victims: an execution keeps running on its essential part, and its
//! victims grow back through the ordinary elastic phase of a later pass
//! (after their restart backoff), as any elastic instance that stopped.
//!
//! The stop goes through the plan (`Plan::preempt`), verified and committed
//! like any decision; the preemptor is admitted by a later pass, once the
//! victims' containers are gone and their capacity is really free. Until
//! then the capacity is held for it in each pass, and instances already
//! stopping count as about to be free, so a pass does not pick new victims
//! for an execution whose victims are still stopping.

use super::Requests;
use super::placement::Sim;
use super::queue::{Candidate, Rank};
use crate::state::{ExecutionStatus, ServiceId, ServiceStatus, State};

/// Releases on `trial` what instances already stopping will free.
pub(super) fn release_stopping(state: &State, trial: &mut Sim) {
    for s in state.index().waiting().filter_map(|id| state.services.get(&id)) {
        if s.status != ServiceStatus::Terminating {
            continue;
        }
        release(state, trial, s.id);
    }
}

/// Frees on `trial` what the instance holds.
pub(super) fn release(state: &State, trial: &mut Sim, sid: ServiceId) {
    let Some(s) = state.services.get(&sid) else { return };
    let (Some(node), Some(e)) = (s.node.as_deref(), state.executions.get(&s.execution_id)) else { return };
    let Some(i) = trial.node_index(node) else { return };
    let g = &e.description.services[s.group_index];
    trial.adjust(i, i64::from(g.cores_min().0), g.memory_min() as i64);
}

/// What preemption found for one blocked execution.
pub(super) enum Outcome<'a> {
    /// Its essential part fits once these elastic instances stop (none:
    /// once those already stopping have). `trial` is the pass's simulation
    /// with them freed and the execution placed.
    Fits { victims: Vec<ServiceId>, trial: Sim<'a> },
    /// Not even stopping every elastic instance it outranks would do.
    No,
}

/// Placements tried per preemptor before giving up for this pass: each
/// places its whole essential part.
const MAX_ATTEMPTS: usize = 16;

/// Victims for `c`, lowest-ranked execution first (its newest instance
/// first), as few as the totals allow, then enough for a placement.
pub(super) fn find<'a>(
    state: &State,
    sim: &Sim<'a>,
    requests: &Requests,
    c: &Candidate,
    outranks: impl Fn(Rank) -> bool,
    rank_of: impl Fn(&crate::state::Execution) -> Rank,
) -> Outcome<'a> {
    let mut trial = sim.clone();
    release_stopping(state, &mut trial);
    let mut t = trial.clone();
    if super::place_essentials(&mut t, requests, state, c.exec).is_ok() {
        return Outcome::Fits { victims: Vec::new(), trial: t };
    }
    let ix = state.index();
    let mut pool: Vec<(Rank, ServiceId)> = Vec::new();
    for status in [ExecutionStatus::Starting, ExecutionStatus::Running] {
        for e in ix.executions(status).filter_map(|id| state.executions.get(&id)) {
            if e.id == c.exec.id {
                continue;
            }
            let r = rank_of(e);
            if !outranks(r) {
                continue;
            }
            for s in state.services_of(e.id) {
                if !s.essential && matches!(s.status, ServiceStatus::Starting | ServiceStatus::Active) {
                    pool.push((r, s.id));
                }
            }
        }
    }
    // Lowest rank first: the largest key, the latest submission, the
    // newest instance.
    pool.sort_by(|(a, sa), (b, sb)| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)).then(sb.cmp(sa)));
    let (need_cores, need_memory) = essential_need(state, requests, c);
    let mut victims = Vec::new();
    let mut next = 0;
    let mut attempts = 0;
    while next < pool.len() && attempts < MAX_ATTEMPTS {
        attempts += 1;
        // Free instances until the totals would do, then try a placement;
        // if the nodes do not line up, free a few more and try again.
        let (mut fc, mut fm) = trial.free_total();
        let mut freed_this_round = 0;
        while next < pool.len() && (fc < need_cores || fm < need_memory || freed_this_round == 0) {
            let sid = pool[next].1;
            next += 1;
            release(state, &mut trial, sid);
            victims.push(sid);
            freed_this_round += 1;
            (fc, fm) = trial.free_total();
        }
        if fc < need_cores || fm < need_memory {
            break;
        }
        let mut t = trial.clone();
        if super::place_essentials(&mut t, requests, state, c.exec).is_ok() {
            return Outcome::Fits { victims, trial: t };
        }
    }
    Outcome::No
}

/// Σ cores and memory of the execution's essential instances.
pub(super) fn essential_need(state: &State, requests: &Requests, c: &Candidate) -> (i64, i64) {
    state
        .services_of(c.exec.id)
        .filter(|s| s.essential)
        .map(|s| requests.get(s))
        .fold((0, 0), |(a, b), r| (a + i64::from(r.cores), b + r.memory as i64))
}

/// Holds on `sim` what the preemptor will take: on each node, the part of
/// its placement in `trial` that the instances it waits for do not free.
pub(super) fn hold(sim: &mut Sim, trial: &Sim) {
    for i in 0..sim.nodes.len() {
        let dc = sim.nodes[i].free_cores - trial.nodes[i].free_cores;
        let dm = sim.nodes[i].free_memory - trial.nodes[i].free_memory;
        if dc > 0 || dm > 0 {
            sim.adjust(i, -dc.max(0), -dm.max(0));
        }
    }
}
