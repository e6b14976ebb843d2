//! A reservation for a blocked execution that has waited too long, so that
//! a stream of smaller ones cannot starve it (EASY backfilling, Lifka 1995).
//!
//! An execution queued for longer than `reservation_after_s` goes to the
//! head of the queue. If its essential part does not fit, it holds the
//! reservation, and another execution starts only if it is expected to end
//! before the holder's *shadow time*, the earliest time its essential part
//! fits once running executions end as expected, or if its essential part
//! fits in what the holder will leave free at the shadow time (EASY's
//! backfill). Without preemption no elastic instance grows meanwhile
//! (growth would take what the holder waits for); with preemption they
//! grow, since the holder may take them back at once, and the shadow time
//! counts them as free.
//!
//! Expected ends come from the ZApp's `size`, read as the application's
//! work in core-seconds (the known-size assumption of Pace et al.; the
//! simulator's workload sets it so). A running execution is expected to end
//! at its start plus its size over the cores it holds now; a candidate for
//! backfill to run for its size over its essential cores (the width it is
//! sure to have). What the holder leaves free is counted in totals, not
//! node by node. Where any running execution's size is 0
//! (unknown, as in most real ZApps) the shadow time is unknown and nothing
//! is backfilled: the reservation is then a plain hold of what frees up.

use super::Requests;
use super::placement::Sim;
use super::preemption;
use super::queue::Candidate;
use crate::state::{ExecutionId, ExecutionStatus, Millis, State};

#[derive(Debug, Clone)]
pub(super) struct Reservation {
    pub holder: ExecutionId,
    /// When the holder's essential part is expected to fit; `None`: unknown.
    pub shadow: Option<Millis>,
    /// Cores (millicores) and memory free at the shadow time beyond what
    /// the holder needs, less what backfills that run past it have taken.
    extra: (i64, i64),
}

impl Reservation {
    pub fn new(
        state: &State,
        sim: &Sim,
        requests: &Requests,
        holder: &Candidate,
        now: Millis,
        reclaim_elastic: bool,
    ) -> Reservation {
        let found = shadow(state, sim, requests, holder, now, reclaim_elastic);
        Reservation { holder: holder.exec.id, shadow: found.map(|f| f.0), extra: found.map_or((0, 0), |f| f.1) }
    }

    /// Whether `c` may start beside the reservation: it is expected to be
    /// done by the shadow time, or its essential part fits in what the
    /// holder leaves (which it then takes).
    pub fn may_backfill(&mut self, state: &State, requests: &Requests, c: &Candidate, now: Millis) -> bool {
        let Some(shadow) = self.shadow else { return false };
        let (cores, memory) = preemption::essential_need(state, requests, c);
        let size = c.exec.description.size;
        if size == 0 || cores <= 0 {
            return false;
        }
        let run_ms = size as f64 * 1e6 / cores as f64;
        if now as f64 + run_ms <= shadow as f64 {
            return true;
        }
        if cores <= self.extra.0 && memory <= self.extra.1 {
            self.extra = (self.extra.0 - cores, self.extra.1 - memory);
            return true;
        }
        false
    }
}

/// The earliest time the holder's essential part fits as running
/// executions end when expected, with what is free beyond its need then;
/// `None` when an end is unknown. With `reclaim_elastic`, running elastic
/// instances count as free at once (the holder may preempt them).
fn shadow(
    state: &State,
    sim: &Sim,
    requests: &Requests,
    holder: &Candidate,
    now: Millis,
    reclaim_elastic: bool,
) -> Option<(Millis, (i64, i64))> {
    let ix = state.index();
    let mut ends: Vec<(Millis, ExecutionId)> = Vec::new();
    for status in [ExecutionStatus::Starting, ExecutionStatus::Running] {
        for e in ix.executions(status).filter_map(|id| state.executions.get(&id)) {
            let millicores: u64 = state
                .services_of(e.id)
                .filter(|s| s.status.may_hold_container())
                .map(|s| u64::from(e.description.services[s.group_index].cores_min().0))
                .sum();
            if e.description.size == 0 || millicores == 0 {
                return None;
            }
            let run_ms = (e.description.size as f64 * 1e6 / millicores as f64) as Millis;
            let end = e.time_start.unwrap_or(now).saturating_add(run_ms).max(now);
            ends.push((end, e.id));
        }
    }
    ends.sort_unstable();
    let mut trial = sim.clone();
    preemption::release_stopping(state, &mut trial);
    let holding = |s: &crate::state::Service| {
        s.status.may_hold_container() && s.status != crate::state::ServiceStatus::Terminating
    };
    if reclaim_elastic {
        for (_, id) in &ends {
            for s in state.services_of(*id).filter(|s| !s.essential && holding(s)) {
                preemption::release(state, &mut trial, s.id);
            }
        }
    }
    let (need_cores, need_memory) = preemption::essential_need(state, requests, holder);
    let fits = |trial: &Sim| {
        let (fc, fm) = trial.free_total();
        (fc >= need_cores
            && fm >= need_memory
            && super::place_essentials(&mut trial.clone(), requests, state, holder.exec).is_ok())
        .then_some((fc - need_cores, fm - need_memory))
    };
    if let Some(extra) = fits(&trial) {
        return Some((now, extra));
    }
    for (end, id) in ends {
        for s in state.services_of(id).filter(|s| (s.essential || !reclaim_elastic) && holding(s)) {
            preemption::release(state, &mut trial, s.id);
        }
        if let Some(extra) = fits(&trial) {
            return Some((end, extra));
        }
    }
    None
}
