//! Executions: named runs of a ZApp, and their lifecycle.

use super::{Millis, StateError};
use serde::{Deserialize, Serialize};
use std::fmt;
use zoe_common::zapp::ZApp;

pub type ExecutionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Submitted,
    Queued,
    Starting,
    Running,
    CleaningUp,
    Terminated,
    Error,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 7] = [
        ExecutionStatus::Submitted,
        ExecutionStatus::Queued,
        ExecutionStatus::Starting,
        ExecutionStatus::Running,
        ExecutionStatus::CleaningUp,
        ExecutionStatus::Terminated,
        ExecutionStatus::Error,
    ];

    /// Zoe's `is_active`: the execution still holds or wants resources.
    pub fn is_active(self) -> bool {
        !matches!(self, ExecutionStatus::Terminated | ExecutionStatus::Error)
    }

    /// Ended executions may be deleted; active ones may not.
    pub fn is_ended(self) -> bool {
        !self.is_active()
    }

    /// Zoe's names, as the API and CLI show them.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Submitted => "submitted",
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Starting => "starting",
            ExecutionStatus::Running => "running",
            ExecutionStatus::CleaningUp => "cleaning up",
            ExecutionStatus::Terminated => "terminated",
            ExecutionStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<ExecutionStatus> {
        ExecutionStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s || format!("{st:?}").eq_ignore_ascii_case(&s.replace([' ', '_'], "")))
    }

    /// The lifecycle table. Everything not listed is illegal.
    ///
    /// Differences from Zoe, on purpose: `starting` and `error` can be
    /// terminated (through `cleaning up`); a transient start failure goes
    /// back to `queued` (with backoff, decided by the leader); a fatal one
    /// goes through `cleaning up` so containers are stopped before `error`.
    pub fn can_become(self, to: ExecutionStatus) -> bool {
        use ExecutionStatus::*;
        matches!(
            (self, to),
            (Submitted, Queued)
                | (Submitted, Error)
                | (Submitted, Terminated)
                | (Queued, Starting)
                | (Queued, CleaningUp)
                | (Queued, Terminated)
                | (Queued, Error)
                | (Starting, Running)
                | (Starting, Queued)
                | (Starting, CleaningUp)
                | (Running, CleaningUp)
                | (Running, Queued)
                | (CleaningUp, Terminated)
                | (CleaningUp, Error)
                | (CleaningUp, Queued)
                | (Error, CleaningUp)
                | (Error, Terminated)
        )
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an execution goes once its containers are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterCleanup {
    Terminated,
    Error,
    /// Start over (a drain deadline or a lost node with the requeue policy).
    Requeue,
}

impl AfterCleanup {
    pub fn status(self) -> ExecutionStatus {
        match self {
            AfterCleanup::Terminated => ExecutionStatus::Terminated,
            AfterCleanup::Error => ExecutionStatus::Error,
            AfterCleanup::Requeue => ExecutionStatus::Queued,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: ExecutionId,
    pub name: String,
    /// Username of the owner.
    pub owner: String,
    pub description: ZApp,
    pub status: ExecutionStatus,
    /// Zoe's `size` column: the ZApp's size hint at submission. The queue
    /// computes SIZE and DYNSIZE keys from the description itself.
    pub size: f64,
    pub time_submit: Millis,
    pub time_start: Option<Millis>,
    pub time_end: Option<Millis>,
    /// Why it ended (terminate reason, error), as Zoe's `error_message`.
    pub error_message: Option<String>,
    /// Service instances, in start order.
    pub services: Vec<u64>,
    /// Set while `cleaning up`: the status reached when every container is gone.
    pub after_cleanup: Option<AfterCleanup>,
    /// Transient start failures so far (reset when it runs).
    pub start_failures: u32,
    /// Not to be scheduled before this time (backoff after a transient failure).
    pub not_before: Option<Millis>,
    /// Last time the scheduler considered it (DYNSIZE ageing).
    pub last_scheduled: Option<Millis>,
}

impl Execution {
    pub(super) fn set_status(&mut self, to: ExecutionStatus) -> Result<(), StateError> {
        super::transition(&mut self.status, to, ExecutionStatus::can_become, || format!("execution {}", self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionStatus::{self, *};

    /// The full transition table, row by row: (from, allowed targets).
    #[test]
    fn transition_table() {
        let table: [(ExecutionStatus, &[ExecutionStatus]); 7] = [
            (Submitted, &[Queued, Error, Terminated]),
            (Queued, &[Starting, CleaningUp, Terminated, Error]),
            (Starting, &[Running, Queued, CleaningUp]),
            (Running, &[CleaningUp, Queued]),
            (CleaningUp, &[Terminated, Error, Queued]),
            (Terminated, &[]),
            (Error, &[CleaningUp, Terminated]),
        ];
        for (from, allowed) in table {
            for to in ExecutionStatus::ALL {
                if to == from {
                    continue;
                }
                assert_eq!(from.can_become(to), allowed.contains(&to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ExecutionStatus::parse("cleaning_up"), Some(CleaningUp));
        assert_eq!(ExecutionStatus::parse("nope"), None);
    }
}
