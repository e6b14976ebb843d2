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

/// What a user's active executions hold against their quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub executions: usize,
    pub cores: Millicores,
    pub memory: u64,
}

/// The quota usage of `username`: active executions, the cores they
/// reserve and the memory they may use (see [`ZApp::quota_footprint`]).
pub fn usage(state: &State, username: &str) -> Usage {
    let mut u = Usage::default();
    // Status first: it is cheaper than comparing names.
    for e in state.executions.values().filter(|e| e.status.is_active() && e.owner == username) {
        let (c, m) = e.description.quota_footprint();
        u.executions += 1;
        u.cores += c;
        u.memory = u.memory.saturating_add(m);
    }
    u
}

/// Why a submission would exceed the user's quota; its text is for the
/// user (the API answers it as `409 quota_exceeded`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum QuotaError {
    #[error("user {user} has quota {quota_id}, which does not exist; ask an admin")]
    Missing { user: String, quota_id: u64 },
    #[error("quota `{quota}` allows {limit} active execution(s) and user {user} has {active}; terminate one first")]
    Executions { quota: String, limit: u32, user: String, active: usize },
    #[error("quota `{quota}` allows {limit} cores in all; active executions reserve {used} and this one needs {asked}")]
    Cores { quota: String, limit: Millicores, used: Millicores, asked: Millicores },
    #[error(
        "quota `{quota}` allows {} of memory in all; active executions may use {} and this one {}",
        human_bytes(*.limit), human_bytes(*.used), human_bytes(*.asked)
    )]
    Memory { quota: String, limit: u64, used: u64, asked: u64 },
}

/// Whether `user` may submit `app` under their quota.
pub fn check_submit(state: &State, user: &User, app: &ZApp) -> Result<(), QuotaError> {
    let Some(q) = state.quotas.get(&user.quota_id) else {
        return Err(QuotaError::Missing { user: user.username.clone(), quota_id: user.quota_id });
    };
    // Unlimited (an admin's, typically): nothing to count. This runs on
    // every submission, in every member's apply, and counting scans every
    // execution.
    if q.concurrent_executions == 0 && q.cores == Millicores(0) && q.memory == 0 {
        return Ok(());
    }
    let used = usage(state, &user.username);
    if q.concurrent_executions > 0 && used.executions >= q.concurrent_executions as usize {
        return Err(QuotaError::Executions {
            quota: q.name.clone(),
            limit: q.concurrent_executions,
            user: user.username.clone(),
            active: used.executions,
        });
    }
    let (new_cores, new_mem) = app.quota_footprint();
    let cores = used.cores + new_cores;
    let mem = used.memory.saturating_add(new_mem);
    if q.cores > Millicores(0) && cores > q.cores {
        return Err(QuotaError::Cores { quota: q.name.clone(), limit: q.cores, used: used.cores, asked: new_cores });
    }
    if q.memory > 0 && mem > q.memory {
        return Err(QuotaError::Memory { quota: q.name.clone(), limit: q.memory, used: used.memory, asked: new_mem });
    }
    Ok(())
}
