//! Fair share between users: the queue goes to the user who has used the
//! least lately. Usage is core-time decayed with a half-life (Slurm's
//! fair-share factor in its simplest form): what a user ran an hour ago
//! weighs half what they run now when the half-life is an hour.
//!
//! Derived from the state alone, so every replica and every pass agree:
//! the containers that have ended are charged in `State::usage` (raw
//! core-time by hour), and the ones still running are added here from
//! their start time to `now`.

use crate::state::usage::decay;
use crate::state::{BackendStatus, ExecutionStatus, Millis, State};
use std::collections::BTreeMap;

/// Each user's decayed usage at `now`, in core-seconds.
pub(super) fn usage(state: &State, now: Millis, half_life_ms: Millis) -> BTreeMap<&str, f64> {
    let mut out: BTreeMap<&str, f64> =
        state.usage.iter().map(|(user, u)| (user.as_str(), u.decayed(now, half_life_ms))).collect();
    let ix = state.index();
    let half_life_s = half_life_ms.max(1) as f64 / 1000.0;
    for status in [ExecutionStatus::Starting, ExecutionStatus::Running, ExecutionStatus::CleaningUp] {
        for e in ix.executions(status).filter_map(|id| state.executions.get(&id)) {
            let mut core_s = 0.0;
            for s in state.services_of(e.id) {
                if s.backend_status != BackendStatus::Started || !s.status.may_hold_container() {
                    continue;
                }
                let Some(start) = s.time_start else { continue };
                let cores =
                    f64::from(s.cores_allocated.unwrap_or_else(|| e.description.services[s.group_index].cores_min()).0)
                        / 1000.0;
                // ∫ cores · 2^(-age / h) over the time it has run.
                let ran = 1.0 - decay(now.saturating_sub(start), half_life_ms);
                core_s += cores * half_life_s / std::f64::consts::LN_2 * ran;
            }
            if core_s > 0.0 {
                *out.entry(e.owner.as_str()).or_default() += core_s;
            }
        }
    }
    out
}
