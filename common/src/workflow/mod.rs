//! Workflows (issue #20, Zoe's vision): ZApps run on a schedule and/or as
//! a pipeline of steps that depend on each other. A workflow document is
//! JSON, validated like a ZApp ([`validate`]: every problem with its JSON
//! pointer); the replicated records of workflows and their runs, and the
//! leader's decisions on them, live in `zoe-model`.

pub mod cron;
mod validate;

pub use validate::{parse, template_keys, validate_value};

use crate::zapp::ZApp;
use serde::{Deserialize, Serialize};

/// Steps one workflow may have.
pub const MAX_STEPS: usize = 100;
/// Parallel copies of one step.
pub const MAX_FAN_OUT: u32 = 1_000;
pub const MAX_RETRIES: u32 = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Fire a run on this schedule; without one, runs start by hand or by
    /// trigger only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Start a run when one of these happens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    pub steps: Vec<Step>,
}

/// Something that starts a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Trigger {
    /// The end of an execution (not one of a workflow's own steps).
    ExecutionEnd(ExecutionEnd),
    /// A path in a host volume passing a size, on any node that offers the
    /// volume with `report_size` (the vision's "when the directory passes
    /// 5 GB"). Fires when it passes, again only once it went back below.
    VolumeSize(VolumeSizeTrigger),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSizeTrigger {
    /// The host volume's name (`[[host_volume]]` on the agents).
    pub volume: String,
    /// An entry at the top of the volume; absent: the whole volume.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub min_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionEnd {
    /// Only executions of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only this user's executions (default: the workflow's owner; `*`:
    /// anyone's). Others' need `can_operate_others` when the workflow is
    /// created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub status: EndStatus,
}

/// How the execution must have ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndStatus {
    /// Terminated with every essential instance's exit code 0.
    #[default]
    Succeeded,
    Failed,
    Any,
}

impl EndStatus {
    pub const ALL: [EndStatus; 3] = [EndStatus::Succeeded, EndStatus::Failed, EndStatus::Any];

    pub fn as_str(self) -> &'static str {
        match self {
            EndStatus::Succeeded => "succeeded",
            EndStatus::Failed => "failed",
            EndStatus::Any => "any",
        }
    }
}

impl ExecutionEnd {
    /// Whether an execution `name` of `owner` that ended (`ok` or not)
    /// fires this trigger of a workflow owned by `workflow_owner`.
    pub fn matches(&self, name: &str, owner: &str, ok: bool, workflow_owner: &str) -> bool {
        let who = self.owner.as_deref().unwrap_or(workflow_owner);
        (who == "*" || who == owner)
            && self.name.as_deref().is_none_or(|n| n == name)
            && match self.status {
                EndStatus::Succeeded => ok,
                EndStatus::Failed => !ok,
                EndStatus::Any => true,
            }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Five-field cron, `@hourly`-style macro, or `@every 30s`.
    pub cron: String,
    /// `UTC` or a fixed offset such as `+02:00`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// A slot that comes while a run of this workflow is still going is
    /// skipped (Nomad's `prohibit_overlap`).
    #[serde(default)]
    pub prohibit_overlap: bool,
    #[serde(default)]
    pub catch_up: CatchUp,
}

fn utc() -> String {
    "UTC".into()
}

/// What becomes of slots missed while no leader could fire them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed slots are dropped; the latest one still fires if it is at
    /// most [`SKIP_LATE_MS`] late (a leader election's worth).
    #[default]
    Skip,
    /// The latest missed slot fires once, however late; older ones are dropped.
    Once,
    /// Every missed slot fires, in order ([`MAX_CATCH_UP`] per leader pass).
    All,
}

impl CatchUp {
    pub const ALL: [CatchUp; 3] = [CatchUp::Skip, CatchUp::Once, CatchUp::All];

    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
            CatchUp::All => "all",
        }
    }
}

/// How late the latest slot may be and still fire under [`CatchUp::Skip`].
pub const SKIP_LATE_MS: u64 = 60_000;
/// Missed slots committed per leader pass under [`CatchUp::All`].
pub const MAX_CATCH_UP: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    pub zapp: ZApp,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub condition: Condition,
    /// Parallel executions of the step's ZApp; the step succeeds when all
    /// of them do.
    #[serde(default = "one")]
    pub fan_out: u32,
    /// Further attempts of a failed execution, `backoff_s × 2^n` apart.
    #[serde(default)]
    pub retries: u32,
    #[serde(default = "ten")]
    pub backoff_s: u64,
    /// An execution still going after this long is terminated and fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
}

fn one() -> u32 {
    1
}

fn ten() -> u64 {
    10
}

/// When a step runs, once every step it depends on has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// All of them succeeded.
    #[default]
    OnSuccess,
    /// At least one of them failed.
    OnFailure,
    /// Whatever happened.
    Always,
}

impl Condition {
    pub const ALL: [Condition; 3] = [Condition::OnSuccess, Condition::OnFailure, Condition::Always];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::OnSuccess => "on_success",
            Condition::OnFailure => "on_failure",
            Condition::Always => "always",
        }
    }
}

impl Workflow {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The steps in an order where each comes after those it depends on,
    /// or the names along a cycle. Unknown names count as no dependency
    /// here (validation reports them).
    pub fn topological(&self) -> Result<Vec<usize>, Vec<String>> {
        let index = |n: &str| self.steps.iter().position(|s| s.name == n);
        // 0 unvisited, 1 on the path, 2 done.
        let mut mark = vec![0u8; self.steps.len()];
        let mut order = Vec::with_capacity(self.steps.len());
        fn visit(
            w: &Workflow,
            i: usize,
            mark: &mut [u8],
            order: &mut Vec<usize>,
            path: &mut Vec<usize>,
            index: &dyn Fn(&str) -> Option<usize>,
        ) -> Result<(), Vec<String>> {
            match mark[i] {
                2 => return Ok(()),
                1 => {
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..].iter().map(|&p| w.steps[p].name.clone()).collect();
                    cycle.push(w.steps[i].name.clone());
                    return Err(cycle);
                }
                _ => {}
            }
            mark[i] = 1;
            path.push(i);
            for d in &w.steps[i].depends_on {
                if let Some(j) = index(d) {
                    visit(w, j, mark, order, path, index)?;
                }
            }
            path.pop();
            mark[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..self.steps.len() {
            visit(self, i, &mut mark, &mut order, &mut Vec::new(), &index)?;
        }
        Ok(order)
    }

    /// Steps that (transitively) come before `step`.
    pub fn ancestors(&self, step: &str) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        let mut todo: Vec<&str> = vec![step];
        while let Some(s) = todo.pop() {
            for d in self.step(s).map(|s| s.depends_on.as_slice()).unwrap_or(&[]) {
                if !seen.contains(d) {
                    seen.push(d.clone());
                    todo.push(d);
                }
            }
        }
        seen
    }
}
