//! Quotas as Zoe defined them (concurrent executions, cores, memory; 0 =
//! unlimited), checked at submission. The runtime limit is enforced by the
//! leader's lifecycle loop (`leader`).
//!
//! Differences from Zoe, on purpose: executions `cleaning up` still hold
//! their containers, so they count; each limit is checked on its own (Zoe
//! skipped both resource checks when one of them was 0).

use crate::state::{State, User};
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
