//! Workflows and their runs (issue #20): replicated records and the
//! commands' handlers. Every decision that must happen exactly once (a
//! schedule slot, an attempt of a step) is recorded in the same `apply`
//! that creates what it starts, so a command proposed twice (a deposed
//! leader's last write, a new leader resuming) is refused by the state
//! instead of starting anything twice. The end of a step's execution
//! moves its run on inside the command that ended it
//! ([`State::step_execution_ended`], called by `apply`): the dependants
//! are submitted in the same log entry as the exit. Time-driven decisions
//! (due slots, retries, timeouts) are the leader's, in
//! `crate::workflow::decide`.

use super::{AfterCleanup, Applied, ExecutionId, ExecutionStatus, Millis, State, StateError, not_found};
use serde::{Deserialize, Serialize};
use zoe_common::workflow::{Condition, Trigger, Workflow, template_keys};
use zoe_common::zapp::ZApp;

pub type WorkflowId = u64;
pub type RunId = u64;

/// Retries wait `backoff_s × 2^n`, at most this long.
pub const MAX_BACKOFF_MS: Millis = 3_600_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub id: WorkflowId,
    pub owner: String,
    pub doc: Workflow,
    pub time_created: Millis,
    /// The latest schedule slot committed (fired or skipped): a slot at or
    /// before it is never fired again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<Millis>,
    /// Slots dropped: overlapping a run, or missed while no leader could
    /// fire them.
    #[serde(default)]
    pub slots_skipped: u64,
    #[serde(default)]
    pub runs_started: u64,
    /// The `volume_size` triggers (by index) whose path is above its size:
    /// passed, fired, and not fired again until it went back below.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub volume_above: std::collections::BTreeSet<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RunTrigger {
    Manual {
        by: String,
    },
    Schedule {
        slot: Millis,
    },
    /// The end of this execution (an `execution_end` trigger).
    Execution {
        execution: ExecutionId,
    },
    /// A `volume_size` trigger: the size a node reported.
    Volume {
        trigger: u32,
        node: String,
        bytes: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Terminated,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Terminated => "terminated",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Some step it depends on has not ended.
    Waiting,
    Running,
    Succeeded,
    Failed,
    /// Its condition did not hold.
    Skipped,
    /// The run was terminated before it ended.
    Terminated,
}

impl StepStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, StepStatus::Waiting | StepStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Waiting => "waiting",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Terminated => "terminated",
        }
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub workflow_id: WorkflowId,
    pub workflow: String,
    pub owner: String,
    pub trigger: RunTrigger,
    pub status: RunStatus,
    pub time_start: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_end: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The client's `Idempotency-Key` of a run started by hand: a retry
    /// of the request answers this run instead of starting another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// In the workflow's step order.
    pub steps: Vec<StepRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    pub name: String,
    pub status: StepStatus,
    /// One per fan-out copy, once the step started.
    pub instances: Vec<StepInstance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInstance {
    pub attempts: Vec<Attempt>,
    /// The last attempt failed and another is due then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Millis>,
}

impl StepInstance {
    pub fn last(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// Ended for good: its last attempt has an outcome and no retry is due.
    pub fn is_final(&self) -> bool {
        self.last().is_some_and(|a| a.outcome.is_some()) && self.retry_at.is_none()
    }

    pub fn succeeded(&self) -> bool {
        self.last().and_then(|a| a.outcome.as_ref()).is_some_and(|o| o.ok)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// `None` when no execution could be created (over quota).
    pub execution: Option<ExecutionId>,
    pub time_start: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub time: Millis,
}

impl Run {
    pub fn step(&self, name: &str) -> Option<&StepRun> {
        self.steps.iter().find(|s| s.name == name)
    }

    fn step_index(&self, name: &str) -> Result<usize, StateError> {
        self.steps.iter().position(|s| s.name == name).ok_or_else(|| not_found(format!("step {name}")))
    }
}

impl State {
    pub fn workflow(&self, id: WorkflowId) -> Result<&WorkflowRecord, StateError> {
        self.workflows.get(&id).ok_or_else(|| not_found(format!("workflow {id}")))
    }

    pub fn run(&self, id: RunId) -> Result<&Run, StateError> {
        self.runs.get(&id).ok_or_else(|| not_found(format!("workflow run {id}")))
    }

    /// The runs of a workflow, oldest first.
    pub fn runs_of(&self, id: WorkflowId) -> impl DoubleEndedIterator<Item = &Run> {
        self.runs.values().filter(move |r| r.workflow_id == id)
    }

    pub(super) fn create_workflow(&mut self, doc: &Workflow, owner: &str, time: Millis) -> Result<Applied, StateError> {
        if self.workflows.values().any(|w| w.owner == owner && w.doc.name == doc.name) {
            return Err(StateError::Conflict(format!("workflow `{}` already exists", doc.name)));
        }
        // The API validated it; the graph is checked again because `settle`
        // relies on it, and a document from another path must not loop.
        check_graph(doc)?;
        let id = self.take_id();
        self.workflows.insert(
            id,
            WorkflowRecord {
                id,
                owner: owner.to_string(),
                doc: doc.clone(),
                time_created: time,
                last_slot: None,
                slots_skipped: 0,
                runs_started: 0,
                volume_above: Default::default(),
            },
        );
        Ok(Applied::Created(id))
    }

    pub(super) fn delete_workflow(&mut self, id: WorkflowId) -> Result<Applied, StateError> {
        self.workflow(id)?;
        if self.runs_of(id).any(|r| r.status == RunStatus::Running) {
            return Err(StateError::Conflict(format!("workflow {id} has a running run; terminate it first")));
        }
        self.workflows.remove(&id);
        self.runs.retain(|_, r| r.workflow_id != id);
        Ok(Applied::Done)
    }

    /// A schedule slot: recorded, and its run started (unless `fire` is
    /// false, a slot dropped by the catch-up policy, or it would overlap a
    /// running run under `prohibit_overlap`). A slot at or before the last
    /// one is refused: this is what fires each slot once.
    pub(super) fn commit_slot(
        &mut self,
        id: WorkflowId,
        slot: Millis,
        fire: bool,
        dropped: u64,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let w = self.workflow(id)?;
        if w.last_slot.is_some_and(|l| slot <= l) {
            return Err(StateError::Conflict(format!("slot {slot} of workflow {id} is already committed")));
        }
        let overlap = w.doc.schedule.as_ref().is_some_and(|s| s.prohibit_overlap)
            && self.runs_of(id).any(|r| r.status == RunStatus::Running);
        let w = self.workflows.get_mut(&id).expect("checked");
        w.last_slot = Some(slot);
        w.slots_skipped += dropped;
        if !fire || overlap {
            w.slots_skipped += 1;
            return Ok(Applied::Done);
        }
        self.start_run(id, RunTrigger::Schedule { slot }, time)
    }

    /// A run started by hand, once per idempotency key.
    pub(super) fn run_by_hand(
        &mut self,
        id: WorkflowId,
        by: &str,
        key: Option<&str>,
        time: Millis,
    ) -> Result<Applied, StateError> {
        self.workflow(id)?;
        if let Some(k) = key
            && let Some(r) = self.runs_of(id).find(|r| r.idempotency_key.as_deref() == Some(k))
        {
            return Ok(Applied::Created(r.id));
        }
        let applied = self.start_run(id, RunTrigger::Manual { by: by.to_string() }, time)?;
        if let (Applied::Created(run), Some(k)) = (&applied, key) {
            self.runs.get_mut(run).expect("created").idempotency_key = Some(k.to_string());
        }
        Ok(applied)
    }

    pub(super) fn start_run(
        &mut self,
        id: WorkflowId,
        trigger: RunTrigger,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let w = self.workflows.get_mut(&id).ok_or_else(|| not_found(format!("workflow {id}")))?;
        w.runs_started += 1;
        let steps = w
            .doc
            .steps
            .iter()
            .map(|s| StepRun { name: s.name.clone(), status: StepStatus::Waiting, instances: Vec::new() })
            .collect();
        let (name, owner) = (w.doc.name.clone(), w.owner.clone());
        let run_id = self.take_id();
        self.runs.insert(
            run_id,
            Run {
                id: run_id,
                workflow_id: id,
                workflow: name,
                owner,
                trigger,
                status: RunStatus::Running,
                time_start: time,
                time_end: None,
                reason: None,
                idempotency_key: None,
                steps,
            },
        );
        self.settle(run_id, time);
        Ok(Applied::Created(run_id))
    }

    /// Instance `instance` of step `step` (and the step's index) of a run
    /// still going; `None` once the run has ended: a late command about it
    /// then changes nothing.
    fn running_instance(
        &self,
        run_id: RunId,
        step: &str,
        instance: u32,
    ) -> Result<Option<(usize, &StepInstance)>, StateError> {
        let r = self.run(run_id)?;
        if r.status != RunStatus::Running {
            return Ok(None);
        }
        let si = r.step_index(step)?;
        let inst = r.steps[si]
            .instances
            .get(instance as usize)
            .ok_or_else(|| not_found(format!("instance {instance} of step {step}")))?;
        Ok(Some((si, inst)))
    }

    /// The leader saw a step's execution ended with no outcome recorded
    /// (the fallback of [`State::step_execution_ended`]): its outcome is
    /// recorded (a retry scheduled if one is left), and the run moves on
    /// at once (dependants start in this same command).
    pub(super) fn step_ended(
        &mut self,
        run_id: RunId,
        step: &str,
        instance: u32,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let Some((si, inst)) = self.running_instance(run_id, step, instance)? else {
            return Ok(Applied::Done);
        };
        let Some(att) = inst.last().filter(|a| a.outcome.is_none()) else {
            return Err(StateError::Conflict(format!("step {step}[{instance}] of run {run_id} has no attempt going")));
        };
        if let Some(e) = att.execution.and_then(|e| self.executions.get(&e))
            && !e.status.is_ended()
        {
            return Err(StateError::Conflict(format!("execution {} of step {step} is still {}", e.id, e.status)));
        }
        self.record_outcome(run_id, si, instance, time);
        Ok(Applied::Done)
    }

    /// A `volume_size` trigger's path passed its size on `node`: the run
    /// starts, and the trigger waits until the path goes back below.
    /// Refused while it is above (fired already).
    pub(super) fn volume_passed(
        &mut self,
        id: WorkflowId,
        trigger: u32,
        node: &str,
        bytes: u64,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let w = self.workflow(id)?;
        if !matches!(w.doc.triggers.get(trigger as usize), Some(Trigger::VolumeSize(_))) {
            return Err(StateError::Invalid(format!("workflow {id} has no volume_size trigger {trigger}")));
        }
        if w.volume_above.contains(&trigger) {
            return Err(StateError::Conflict(format!("trigger {trigger} of workflow {id} fired already")));
        }
        self.workflows.get_mut(&id).expect("checked").volume_above.insert(trigger);
        self.start_run(id, RunTrigger::Volume { trigger, node: node.to_string(), bytes }, time)
    }

    /// The path went back below its size: the trigger may fire again.
    pub(super) fn volume_below(&mut self, id: WorkflowId, trigger: u32) -> Result<Applied, StateError> {
        let w = self.workflows.get_mut(&id).ok_or_else(|| not_found(format!("workflow {id}")))?;
        if !w.volume_above.remove(&trigger) {
            return Err(StateError::Conflict(format!("trigger {trigger} of workflow {id} is not above")));
        }
        Ok(Applied::Done)
    }

    /// Called by `apply` for each execution the command ended: runs of
    /// the workflows whose `execution_end` trigger it matches start, once
    /// per execution (an execution that ended in error and is then
    /// terminated ends twice), unless it is a step of a run itself (a
    /// workflow would trigger itself for ever).
    pub(super) fn fire_execution_triggers(&mut self, id: ExecutionId) {
        if self.step_executions.contains_key(&id) || !self.workflows.values().any(|w| !w.doc.triggers.is_empty()) {
            return;
        }
        let Some(e) = self.executions.get(&id) else { return };
        let time = e.time_end.unwrap_or(e.time_submit);
        let ok = self.outcome_of(id, time).ok;
        let fired: Vec<WorkflowId> = self
            .workflows
            .values()
            .filter(|w| {
                w.doc.triggers.iter().any(|t| match t {
                    Trigger::ExecutionEnd(t) => t.matches(&e.name, &e.owner, ok, &w.owner),
                    Trigger::VolumeSize(_) => false,
                })
            })
            .map(|w| w.id)
            .collect();
        let trigger = RunTrigger::Execution { execution: id };
        for wid in fired {
            if self.runs_of(wid).any(|r| r.trigger == trigger) {
                continue;
            }
            let _ = self.start_run(wid, trigger.clone(), time);
        }
    }

    /// Called by `apply` for each execution the command ended: the step
    /// attempt it ran, if any, gets its outcome and the run moves on.
    pub(super) fn step_execution_ended(&mut self, id: ExecutionId) {
        let Some((run_id, si, instance)) = self.step_executions.get(&id).copied() else { return };
        let Some(time) = self.executions.get(&id).and_then(|e| e.time_end) else { return };
        let going = self
            .runs
            .get(&run_id)
            .filter(|r| r.status == RunStatus::Running)
            .and_then(|r| r.steps.get(si as usize)?.instances.get(instance as usize)?.last())
            .is_some_and(|a| a.execution == Some(id) && a.outcome.is_none());
        if going {
            self.record_outcome(run_id, si as usize, instance, time);
        } else {
            self.step_executions.remove(&id);
        }
    }

    /// The outcome of a copy's attempt going (read from its ended, or
    /// deleted, execution), a retry scheduled if one is left, and the run
    /// settled.
    fn record_outcome(&mut self, run_id: RunId, si: usize, instance: u32, time: Millis) {
        let r = &self.runs[&run_id];
        let inst = &r.steps[si].instances[instance as usize];
        let att = inst.last().expect("an attempt going");
        let outcome = match att.execution.map(|e| self.executions.get(&e)) {
            Some(Some(e)) => self.outcome_of(e.id, time),
            Some(None) => Outcome { ok: false, exit_code: None, message: Some("execution deleted".into()), time },
            None => Outcome { ok: false, exit_code: None, message: Some("no execution".into()), time },
        };
        let execution = att.execution;
        let attempts = inst.attempts.len() as u32;
        let spec = self.workflows.get(&r.workflow_id).and_then(|w| w.doc.steps.get(si)).cloned();
        if let Some(e) = execution {
            self.step_executions.remove(&e);
        }
        let r = self.runs.get_mut(&run_id).expect("exists");
        let inst = &mut r.steps[si].instances[instance as usize];
        if !outcome.ok
            && let Some(spec) = spec.filter(|s| attempts <= s.retries)
        {
            let backoff = (spec.backoff_s * 1000).saturating_mul(1 << (attempts - 1).min(20)).min(MAX_BACKOFF_MS);
            inst.retry_at = Some(time + backoff);
        }
        inst.attempts.last_mut().expect("exists").outcome = Some(outcome);
        self.settle(run_id, time);
    }

    /// A failed attempt's retry, once its backoff is over.
    pub(super) fn retry_step(
        &mut self,
        run_id: RunId,
        step: &str,
        instance: u32,
        attempt: u32,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let Some((si, inst)) = self.running_instance(run_id, step, instance)? else {
            return Ok(Applied::Done);
        };
        if inst.attempts.len() as u32 != attempt || inst.retry_at.is_none_or(|at| at > time) {
            return Err(StateError::Conflict(format!(
                "attempt {attempt} of step {step}[{instance}] of run {run_id} is not due"
            )));
        }
        self.start_attempt(run_id, si, instance, time);
        self.settle(run_id, time);
        Ok(Applied::Done)
    }

    /// Ends a run: its steps' executions are terminated in the same
    /// command, and nothing of it starts again.
    pub(super) fn terminate_run(&mut self, run_id: RunId, reason: &str, time: Millis) -> Result<Applied, StateError> {
        let r = self.run(run_id)?;
        if r.status != RunStatus::Running {
            return Ok(Applied::Done);
        }
        let going: Vec<ExecutionId> = r
            .steps
            .iter()
            .flat_map(|s| &s.instances)
            .filter_map(|i| i.last().filter(|a| a.outcome.is_none()).and_then(|a| a.execution))
            .collect();
        // Their `step_executions` entries stay until they end, so that
        // their end does not pass for any execution's (a trigger).
        for e in going {
            if self.executions.get(&e).is_some_and(|e| !e.status.is_ended()) {
                self.terminate(
                    e,
                    &format!("workflow run {run_id} terminated: {reason}"),
                    AfterCleanup::Terminated,
                    time,
                )?;
            }
        }
        let r = self.runs.get_mut(&run_id).expect("checked");
        for s in &mut r.steps {
            for i in &mut s.instances {
                i.retry_at = None;
                if let Some(a) = i.attempts.last_mut().filter(|a| a.outcome.is_none()) {
                    a.outcome = Some(Outcome { ok: false, exit_code: None, message: Some("terminated".into()), time });
                }
            }
            if !s.status.is_final() {
                s.status = StepStatus::Terminated;
            }
        }
        r.status = RunStatus::Terminated;
        r.reason = Some(reason.to_string());
        r.time_end = Some(time);
        Ok(Applied::Done)
    }

    /// An ended execution's outcome: its essential instances' exit codes.
    fn outcome_of(&self, id: ExecutionId, time: Millis) -> Outcome {
        let Ok(e) = self.execution(id) else {
            return Outcome { ok: false, exit_code: None, message: Some("execution deleted".into()), time };
        };
        let code = self
            .services_of(id)
            .filter(|s| s.essential)
            .filter_map(|s| s.last_exit_code)
            .find(|c| *c != 0)
            .or_else(|| self.services_of(id).filter(|s| s.essential).find_map(|s| s.last_exit_code));
        let ok = e.status == ExecutionStatus::Terminated && code.is_none_or(|c| c == 0);
        Outcome { ok, exit_code: code, message: e.error_message.clone(), time }
    }

    /// Moves a run as far as its recorded outcomes allow: steps whose
    /// dependencies all ended start (or are skipped), steps whose copies
    /// all ended end, and the run ends with its last step. Deterministic,
    /// in the workflow's topological order, so it is part of `apply`.
    fn settle(&mut self, run_id: RunId, time: Millis) {
        let Some(r) = self.runs.get(&run_id) else { return };
        let Some(doc) = self.workflows.get(&r.workflow_id).map(|w| w.doc.clone()) else { return };
        let Ok(order) = doc.topological() else { return };
        for i in order {
            let spec = &doc.steps[i];
            let r = &self.runs[&run_id];
            let status = r.steps[i].status;
            if status == StepStatus::Waiting {
                let deps: Vec<StepStatus> =
                    spec.depends_on.iter().filter_map(|d| r.step(d)).map(|s| s.status).collect();
                if deps.iter().any(|s| !s.is_final()) {
                    continue;
                }
                let go = match spec.condition {
                    Condition::OnSuccess => deps.iter().all(|s| *s == StepStatus::Succeeded),
                    Condition::OnFailure => deps.contains(&StepStatus::Failed),
                    Condition::Always => true,
                };
                let r = self.runs.get_mut(&run_id).expect("exists");
                if !go {
                    r.steps[i].status = StepStatus::Skipped;
                    continue;
                }
                r.steps[i].status = StepStatus::Running;
                r.steps[i].instances =
                    (0..spec.fan_out).map(|_| StepInstance { attempts: Vec::new(), retry_at: None }).collect();
                for k in 0..spec.fan_out {
                    self.start_attempt(run_id, i, k, time);
                }
            }
            let r = self.runs.get_mut(&run_id).expect("exists");
            let s = &mut r.steps[i];
            if s.status == StepStatus::Running && s.instances.iter().all(StepInstance::is_final) {
                s.status = if s.instances.iter().all(StepInstance::succeeded) {
                    StepStatus::Succeeded
                } else {
                    StepStatus::Failed
                };
            }
        }
        let r = self.runs.get_mut(&run_id).expect("exists");
        if r.steps.iter().all(|s| s.status.is_final()) {
            // A failure is handled when a step that runs on failure (or
            // always) comes after it and succeeded.
            let unhandled = doc.steps.iter().zip(&r.steps).any(|(spec, s)| {
                s.status == StepStatus::Failed
                    && !doc.steps.iter().zip(&r.steps).any(|(d, ds)| {
                        d.depends_on.contains(&spec.name)
                            && d.condition != Condition::OnSuccess
                            && ds.status == StepStatus::Succeeded
                    })
            });
            r.status = if unhandled { RunStatus::Failed } else { RunStatus::Succeeded };
            r.time_end = Some(time);
        }
    }

    /// Starts one attempt of a step's copy: its ZApp with the run's
    /// templates filled in, submitted as the run's owner (quotas apply).
    fn start_attempt(&mut self, run_id: RunId, si: usize, instance: u32, time: Millis) {
        let r = &self.runs[&run_id];
        let Some(w) = self.workflows.get(&r.workflow_id) else { return };
        let spec = &w.doc.steps[si];
        let app = fill_templates(&spec.zapp, r, &w.doc, instance, spec.fan_out);
        let attempt = r.steps[si].instances[instance as usize].attempts.len();
        let name = if spec.fan_out > 1 {
            format!("{}.{}.{}[{instance}]", r.workflow, run_id, spec.name)
        } else {
            format!("{}.{}.{}", r.workflow, run_id, spec.name)
        };
        let name = if attempt > 0 { format!("{name}#{attempt}") } else { name };
        let owner = r.owner.clone();
        let size = app.size as f64;
        let (retries, backoff_s) = (spec.retries, spec.backoff_s);
        let (execution, outcome) = match self.submit(&name, &owner, &app, size, time) {
            Ok(Applied::Created(id)) => (Some(id), None),
            Ok(_) => (None, Some("no execution created".to_string())),
            Err(e) => (None, Some(e.to_string())),
        };
        if let Some(e) = execution {
            self.step_executions.insert(e, (run_id, si as u32, instance));
        }
        let r = self.runs.get_mut(&run_id).expect("exists");
        let inst = &mut r.steps[si].instances[instance as usize];
        inst.retry_at = None;
        inst.attempts.push(Attempt {
            execution,
            time_start: time,
            outcome: outcome.map(|m| Outcome { ok: false, exit_code: None, message: Some(m), time }),
        });
        // Refused at submission (quota): retried like a failure.
        if execution.is_none() && (inst.attempts.len() as u32) <= retries {
            let n = inst.attempts.len() as u32 - 1;
            inst.retry_at = Some(time + (backoff_s * 1000).saturating_mul(1 << n.min(20)).min(MAX_BACKOFF_MS));
        }
    }
}

/// Refuses a document whose steps repeat a name, name unknown steps or
/// form a cycle.
pub fn check_graph(doc: &Workflow) -> Result<(), StateError> {
    if doc.steps.is_empty() {
        return Err(StateError::Invalid("a workflow needs at least one step".into()));
    }
    for (i, s) in doc.steps.iter().enumerate() {
        if doc.steps[..i].iter().any(|t| t.name == s.name) {
            return Err(StateError::Invalid(format!("step `{}` is defined twice", s.name)));
        }
        if s.fan_out == 0 {
            return Err(StateError::Invalid(format!("step `{}` has a fan-out of 0", s.name)));
        }
        if let Some(d) = s.depends_on.iter().find(|d| doc.step(d).is_none()) {
            return Err(StateError::Invalid(format!("step `{}` depends on unknown step `{d}`", s.name)));
        }
    }
    doc.topological().map(|_| ()).map_err(|c| StateError::Invalid(format!("cycle: {}", c.join(" → "))))
}

/// The step's ZApp with `{{...}}` filled in its environment values.
fn fill_templates(app: &ZApp, r: &Run, doc: &Workflow, instance: u32, fan_out: u32) -> ZApp {
    let mut app = app.clone();
    for svc in &mut app.services {
        for env in &mut svc.environment {
            if !env.1.contains("{{") {
                continue;
            }
            let mut out = env.1.clone();
            for key in template_keys(&env.1).into_iter().map(str::to_string).collect::<Vec<_>>() {
                let value = template_value(&key, r, doc, instance, fan_out);
                out = out.replacen(&format!("{{{{{key}}}}}"), &value, 1);
            }
            env.1 = out;
        }
    }
    app
}

fn template_value(key: &str, r: &Run, doc: &Workflow, instance: u32, fan_out: u32) -> String {
    match key {
        "run.id" => return r.id.to_string(),
        "run.slot" => {
            return match r.trigger {
                RunTrigger::Schedule { slot } => slot.to_string(),
                RunTrigger::Manual { .. } | RunTrigger::Execution { .. } | RunTrigger::Volume { .. } => String::new(),
            };
        }
        "workflow.name" => return doc.name.clone(),
        "fan_out.index" => return instance.to_string(),
        "fan_out.count" => return fan_out.to_string(),
        _ => {}
    }
    let parts: Vec<&str> = key.splitn(3, '.').collect();
    let ["step", name, what] = parts.as_slice() else { return String::new() };
    let Some(s) = r.step(name) else { return String::new() };
    let each = |f: &dyn Fn(&Attempt) -> String| -> String {
        s.instances.iter().filter_map(|i| i.last()).map(f).collect::<Vec<_>>().join(",")
    };
    match *what {
        "execution_id" => each(&|a| a.execution.map(|e| e.to_string()).unwrap_or_default()),
        "exit_code" => {
            each(&|a| a.outcome.as_ref().and_then(|o| o.exit_code).map(|c| c.to_string()).unwrap_or_default())
        }
        "status" => s.status.to_string(),
        _ => String::new(),
    }
}
