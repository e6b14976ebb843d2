//! Quotas as Zoe defined them (concurrent executions, cores, memory,
//! runtime limit; 0 = unlimited), checked at submission, and the runtime
//! limit check the leader's lifecycle loop runs.
//!
//! Differences from Zoe, on purpose: executions `cleaning up` still hold
//! their containers, so they count; each limit is checked on its own (Zoe
//! skipped both resource checks when one of them was 0); the runtime limit
//! counts from the start, not the submission.

use crate::state::{ExecutionId, Millis, State, User};
use zoe_common::resources::{Millicores, human_bytes};
use zoe_common::zapp::ZApp;

/// Why a submission would exceed the user's quota, in words for the user.
pub fn check_submit(state: &State, user: &User, app: &ZApp) -> Result<(), String> {
    let Some(q) = state.quotas.get(&user.quota_id) else {
        return Err(format!("user {} has quota {}, which does not exist; ask an admin", user.username, user.quota_id));
    };
    let active: Vec<_> =
        state.executions.values().filter(|e| e.owner == user.username && e.status.is_active()).collect();
    if q.concurrent_executions > 0 && active.len() >= q.concurrent_executions as usize {
        return Err(format!(
            "quota `{}` allows {} active execution(s) and user {} has {}; terminate one first",
            q.name,
            q.concurrent_executions,
            user.username,
            active.len()
        ));
    }
    let (mut cores, mut mem) = app.total_reservation();
    let (new_cores, new_mem) = (cores, mem);
    for e in &active {
        let (c, m) = e.description.total_reservation();
        cores += c;
        mem = mem.saturating_add(m);
    }
    if q.cores > Millicores(0) && cores > q.cores {
        return Err(format!(
            "quota `{}` allows {} cores in all; active executions reserve {} and this one needs {}",
            q.name,
            q.cores,
            Millicores(cores.0 - new_cores.0),
            new_cores
        ));
    }
    if q.memory > 0 && mem > q.memory {
        return Err(format!(
            "quota `{}` allows {} of memory in all; active executions reserve {} and this one needs {}",
            q.name,
            human_bytes(q.memory),
            human_bytes(mem - new_mem),
            human_bytes(new_mem)
        ));
    }
    Ok(())
}

/// Executions running longer than their owner's quota allows (counted from
/// `time_start`), with the reason to record when terminating them. For the
/// leader's lifecycle loop.
pub fn runtime_exceeded(state: &State, now: Millis) -> Vec<(ExecutionId, String)> {
    let limit_of = |owner: &str| {
        let u = state.users.values().find(|u| u.username == owner)?;
        let q = state.quotas.get(&u.quota_id)?;
        (q.runtime_limit > 0).then_some((q.runtime_limit, q.name.clone()))
    };
    state
        .executions
        .values()
        .filter(|e| e.status.is_active() && e.status != crate::state::ExecutionStatus::CleaningUp)
        .filter_map(|e| {
            let start = e.time_start?;
            let (limit_s, qname) = limit_of(&e.owner)?;
            (now.saturating_sub(start) > limit_s * 1000)
                .then(|| (e.id, format!("runtime limit of quota `{qname}` ({limit_s} s) reached")))
        })
        .collect()
}
