//! Which executions the scheduler considers, and in what order (Zoe's
//! FIFO, SIZE and DYNSIZE policies).

use super::{Policy, SchedulerConfig};
use crate::state::{Execution, ExecutionStatus, Millis, Service, ServiceStatus, State};

/// An execution the pass looks at: a queued one to admit, or a running one
/// with instances to (re)start.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate<'a> {
    pub exec: &'a Execution,
    pub running: bool,
}

/// Zoe's DYNSIZE, aged: the size shrinks by `aging_per_s` for every second
/// the execution has waited, so a large execution cannot starve forever.
/// Zoe reset the size to its initial value once it reached zero, which gave
/// long waiters their priority back periodically; zoe clamps at zero
/// instead, so the longest waiters stay first.
pub(super) fn effective_size(e: &Execution, cfg: &SchedulerConfig, now: Millis) -> f64 {
    match cfg.policy {
        Policy::Fifo => 0.0,
        Policy::Size => e.description.size as f64,
        Policy::Dynsize => {
            let waited_s = now.saturating_sub(e.time_submit) as f64 / 1000.0;
            (e.description.dynsize() - waited_s * cfg.dynsize_aging_per_s).max(0.0)
        }
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

/// The queue in policy order: ties go to the earlier submission, then the
/// lower id, so every replica and every pass agree.
pub(super) fn build<'a>(state: &'a State, cfg: &SchedulerConfig, now: Millis) -> Vec<Candidate<'a>> {
    ordered(state, cfg, now, false)
}

/// [`build`], optionally with the queued executions still waiting out a
/// start-retry delay (which this pass skips) in their policy place.
pub(super) fn ordered<'a>(
    state: &'a State,
    cfg: &SchedulerConfig,
    now: Millis,
    with_retry_waits: bool,
) -> Vec<Candidate<'a>> {
    let ix = state.index();
    let mut out: Vec<(f64, Candidate<'a>)> = Vec::new();
    for e in ix.executions(ExecutionStatus::Queued).filter_map(|id| state.executions.get(&id)) {
        if with_retry_waits || e.not_before.is_none_or(|t| now >= t) {
            out.push((effective_size(e, cfg, now), Candidate { exec: e, running: false }));
        }
    }
    // Running executions whose every instance holds a container (most of
    // them) have nothing to place: the index lists only the others.
    for e in ix.incomplete().filter_map(|id| state.executions.get(&id)) {
        if state.services_of(e.id).any(|s| instance_ready(s, cfg, now)) {
            out.push((effective_size(e, cfg, now), Candidate { exec: e, running: true }));
        }
    }
    out.sort_by(|(sa, a), (sb, b)| {
        sa.total_cmp(sb).then(a.exec.time_submit.cmp(&b.exec.time_submit)).then(a.exec.id.cmp(&b.exec.id))
    });
    out.into_iter().map(|(_, c)| c).collect()
}
