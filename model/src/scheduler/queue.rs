//! Which executions the scheduler considers, and in what order (Zoe's
//! FIFO, SIZE and DYNSIZE policies, and zoe's fair share).

use super::{Policy, SchedulerConfig, fairshare};
use crate::state::{Execution, ExecutionId, ExecutionStatus, Millis, Service, ServiceStatus, State};
use std::collections::BTreeMap;

/// An execution the pass looks at: a queued one to admit, or a running one
/// with instances to (re)start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate<'a> {
    pub exec: &'a Execution,
    pub running: bool,
}

/// Where the policy ranks an execution: smaller first, then the earlier
/// submission, then the lower id, so every replica and every pass agree.
pub(super) type Rank = (f64, Millis, ExecutionId);

/// What ranks executions in one pass (fair share reads every user's usage
/// once per pass, not once per execution).
pub(super) struct Ranking<'a> {
    cfg: &'a SchedulerConfig,
    now: Millis,
    usage: BTreeMap<&'a str, f64>,
}

impl<'a> Ranking<'a> {
    pub fn new(state: &'a State, cfg: &'a SchedulerConfig, now: Millis) -> Ranking<'a> {
        let usage = if cfg.policy == Policy::FairShare {
            fairshare::usage(state, now, cfg.fair_share_half_life_s.saturating_mul(1000))
        } else {
            BTreeMap::new()
        };
        Ranking { cfg, now, usage }
    }

    /// Zoe's DYNSIZE, aged: the size shrinks by `aging_per_s` for every
    /// second the execution has waited, so a large execution cannot starve
    /// forever. Zoe reset the size to its initial value once it reached
    /// zero, which gave long waiters their priority back periodically; zoe
    /// clamps at zero instead, so the longest waiters stay first. Fair
    /// share: the owner's decayed usage.
    pub fn key(&self, e: &Execution) -> f64 {
        match self.cfg.policy {
            Policy::Fifo => 0.0,
            Policy::Size => e.description.size as f64,
            Policy::Dynsize => {
                let waited_s = self.now.saturating_sub(e.time_submit) as f64 / 1000.0;
                (e.description.dynsize() - waited_s * self.cfg.dynsize_aging_per_s).max(0.0)
            }
            Policy::FairShare => self.usage.get(e.owner.as_str()).copied().unwrap_or(0.0),
        }
    }

    pub fn rank(&self, e: &Execution) -> Rank {
        (self.key(e), e.time_submit, e.id)
    }

    /// Past the reservation threshold: such executions go first, longest
    /// waiting first, whatever the policy says.
    pub fn overdue(&self, e: &Execution) -> bool {
        self.cfg
            .reservation_after_s
            .is_some_and(|after| self.now.saturating_sub(e.time_submit) >= after.saturating_mul(1000))
    }
}

/// Whether an instance of a running execution may be placed now: never
/// placed, moving (drain, lost node: at once), or an elastic instance past
/// its restart backoff. A stopped essential instance that is not moving
/// means its execution is ending: never.
pub(super) fn instance_ready(s: &Service, cfg: &SchedulerConfig, now: Millis) -> bool {
    match s.status {
        ServiceStatus::Created => true,
        ServiceStatus::Inactive | ServiceStatus::Error if s.moving => true,
        ServiceStatus::Inactive | ServiceStatus::Error if s.essential => false,
        ServiceStatus::Inactive | ServiceStatus::Error => {
            let backoff = cfg.restart_backoff_ms(s.restart_count);
            s.time_end.is_none_or(|t| now >= t.saturating_add(backoff))
        }
        _ => false,
    }
}

/// The queue in policy order.
pub(super) fn build<'a>(state: &'a State, ranking: &Ranking, cfg: &SchedulerConfig, now: Millis) -> Vec<Candidate<'a>> {
    ordered(state, ranking, cfg, now, false)
}

/// [`build`], optionally with the queued executions still waiting out a
/// start-retry delay (which this pass skips) in their policy place.
pub(super) fn ordered<'a>(
    state: &'a State,
    ranking: &Ranking,
    cfg: &SchedulerConfig,
    now: Millis,
    with_retry_waits: bool,
) -> Vec<Candidate<'a>> {
    let ix = state.index();
    // (overdue last-first flag, rank): overdue queued executions lead, by
    // submission; the rest by the policy.
    let mut out: Vec<((bool, Rank), Candidate<'a>)> = Vec::new();
    for e in ix.executions(ExecutionStatus::Queued).filter_map(|id| state.executions.get(&id)) {
        if with_retry_waits || e.not_before.is_none_or(|t| now >= t) {
            let key = if ranking.overdue(e) { (false, (0.0, e.time_submit, e.id)) } else { (true, ranking.rank(e)) };
            out.push((key, Candidate { exec: e, running: false }));
        }
    }
    // Running executions whose every instance holds a container (most of
    // them) have nothing to place: the index lists only the others.
    for e in ix.incomplete().filter_map(|id| state.executions.get(&id)) {
        if state.services_of(e.id).any(|s| instance_ready(s, cfg, now)) {
            out.push(((true, ranking.rank(e)), Candidate { exec: e, running: true }));
        }
    }
    out.sort_by(|((oa, (sa, ta, ia)), _), ((ob, (sb, tb, ib)), _)| {
        oa.cmp(ob).then(sa.total_cmp(sb)).then(ta.cmp(tb)).then(ia.cmp(ib))
    });
    out.into_iter().map(|(_, c)| c).collect()
}
