//! `zoe exec plan`: what the scheduler would do with a ZApp submitted now,
//! without submitting it. The ZApp is submitted to a copy of the state and
//! one pass is computed on it, as the leader would; when it would wait, a
//! short simulation of the queue on that copy says when it would start:
//! running executions end when their `size` hints say (the work in
//! core-seconds over the cores they hold, as the reservation reads them),
//! what the passes place starts at once and what they preempt stops at
//! once. Nothing here commits or talks to a node.

use super::{Platform, SchedulerConfig, queues, schedule_explained};
use crate::state::{Applied, Command, ExecutionId, ExecutionStatus, Millis, Plan, ServiceStatus, State, StateError};
use zoe_common::zapp::ZApp;

/// What a submission now would meet.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRun {
    /// The first pass would admit it.
    pub fits_now: bool,
    /// Where its instances would go: (instance name, node), when it fits now.
    pub placements: Vec<(String, String)>,
    /// Its place in the pending queue (1 = next), and the queue's length
    /// with it.
    pub queue_position: usize,
    pub queue_length: usize,
    /// Why it would wait, when it would.
    pub reason: Option<String>,
    /// No schedulable node could ever hold one of its essential instances.
    pub never_fits: bool,
    /// Seconds from now until it would start (0 when it fits now); `None`
    /// when the simulation cannot say.
    pub start_in_s: Option<f64>,
    /// How the estimate was made, or why there is none.
    pub estimate: String,
}

/// Passes the estimate simulates at most.
const MAX_STEPS: usize = 2_000;

pub fn dry_run(
    state: &State,
    platform: &Platform,
    cfg: &SchedulerConfig,
    app: ZApp,
    owner: &str,
    now: Millis,
) -> Result<DryRun, StateError> {
    let mut st = state.clone();
    let size = app.size as f64;
    let submit = Command::SubmitExecution {
        idempotency_key: None,
        name: "plan".into(),
        owner: owner.into(),
        description: app,
        size,
        time: now,
    };
    let Applied::Created(id) = st.apply(&submit)? else {
        return Err(StateError::Invalid("the dry run's submission created nothing".into()));
    };
    st.apply(&Command::QueueExecution { id, time: now })?;
    let pending = queues(&st, cfg, now).pending;
    let (plan, waiting) = schedule_explained(&st, platform, cfg, now);
    let mine = waiting.iter().find(|w| w.execution == id);
    let mut out = DryRun {
        fits_now: plan.starting.contains(&id),
        placements: Vec::new(),
        queue_position: pending.iter().position(|e| *e == id).map_or(0, |p| p + 1),
        queue_length: pending.len(),
        reason: mine.map(|w| w.reason.clone()),
        never_fits: mine.is_some_and(|w| w.never_fits),
        start_in_s: None,
        estimate: String::new(),
    };
    if out.fits_now {
        for p in &plan.placements {
            if let Some(s) = st.services.get(&p.service).filter(|s| s.execution_id == id) {
                out.placements.push((s.name.clone(), p.node.clone()));
            }
        }
        out.start_in_s = Some(0.0);
        out.estimate = "it fits now".into();
        return Ok(out);
    }
    if out.never_fits {
        out.estimate = "it can never start on these nodes".into();
        return Ok(out);
    }
    (out.start_in_s, out.estimate) = simulate(st, platform, cfg, id, plan, now);
    Ok(out)
}

/// Runs the queue forward from `plan` until `id` starts.
fn simulate(
    mut st: State,
    platform: &Platform,
    cfg: &SchedulerConfig,
    id: ExecutionId,
    mut plan: Plan,
    now: Millis,
) -> (Option<f64>, String) {
    let mut t = now;
    for _ in 0..MAX_STEPS {
        commit(&mut st, plan, t);
        if st.executions.get(&id).is_some_and(|e| e.status != ExecutionStatus::Queued) {
            return (Some((t - now) as f64 / 1000.0), "simulated from the running executions' size hints".into());
        }
        // The next end among running executions, by their size hints.
        let mut next: Option<(Millis, ExecutionId)> = None;
        for e in st.executions.values().filter(|e| e.status == ExecutionStatus::Running) {
            let millicores: u64 = st
                .services_of(e.id)
                .filter(|s| s.status.may_hold_container())
                .map(|s| u64::from(e.description.services[s.group_index].cores_min().0))
                .sum();
            if e.description.size == 0 || millicores == 0 {
                return (None, format!("execution {} runs without a size hint: its end is unknown", e.id));
            }
            let end = e
                .time_start
                .unwrap_or(t)
                .saturating_add((e.description.size as f64 * 1e6 / millicores as f64) as Millis)
                .max(t);
            if next.is_none_or(|(n, _)| end < n) {
                next = Some((end, e.id));
            }
        }
        let Some((end, ending)) = next else {
            return (None, "nothing running would end to make room".into());
        };
        t = end;
        finish(&mut st, ending, t);
        plan = schedule_explained(&st, platform, cfg, t).0;
    }
    (None, format!("not within {MAX_STEPS} simulated passes"))
}

/// What [`commit`] did: whether the state took the plan, and the
/// executions of the instances it started and of those it stopped, one
/// entry per instance.
#[derive(Debug, Default)]
pub struct Committed {
    pub applied: bool,
    pub started: Vec<ExecutionId>,
    pub stopped: Vec<ExecutionId>,
}

/// Commits a plan as if every node answered at once, in a simulation (the
/// dry run's and zoe-sim's): placed instances start, preempted ones stop.
pub fn commit(st: &mut State, plan: Plan, t: Millis) -> Committed {
    let mut done = Committed::default();
    let placed: Vec<_> = plan.placements.iter().map(|p| p.service).collect();
    let preempted = plan.preempt.clone();
    if plan.is_empty() || st.apply(&Command::ApplyPlan(plan)).is_err() {
        return done;
    }
    done.applied = true;
    for sid in placed {
        let Some(s) = st.services.get(&sid) else { continue };
        let (exec, Some(cid)) = (s.execution_id, s.container_id.clone()) else { continue };
        let started = Command::ServiceStarted { id: sid, container_id: cid, ip_address: None, ports: vec![], time: t };
        if st.apply(&started).is_ok() {
            done.started.push(exec);
        }
    }
    for sid in preempted {
        let Some(s) = st.services.get(&sid) else { continue };
        let (exec, Some(cid)) = (s.execution_id, s.container_id.clone()) else { continue };
        if st.apply(&Command::ServiceStopped { id: sid, container_id: cid, time: t }).is_ok() {
            done.stopped.push(exec);
        }
    }
    done
}

/// The execution's work is done, in a simulation (the dry run's and
/// zoe-sim's): its first running essential instance exits 0 (a batch job's
/// end; with none, the execution is terminated), and what that stops has
/// stopped by `t`.
pub fn finish(st: &mut State, id: ExecutionId, t: Millis) {
    let first = st
        .services_of(id)
        .find(|s| s.essential && s.status == ServiceStatus::Active)
        .and_then(|s| Some((s.id, s.container_id.clone()?)));
    if let Some((sid, cid)) = first {
        let exited = Command::ServiceExited {
            id: sid,
            container_id: cid,
            exit_code: Some(0),
            oom_killed: false,
            reason: "done".into(),
            time: t,
        };
        let _ = st.apply(&exited);
    } else {
        let _ = st.apply(&Command::TerminateExecution {
            id,
            reason: "done".into(),
            after: crate::state::AfterCleanup::Terminated,
            time: t,
        });
    }
    let stopping: Vec<_> = st
        .services_of(id)
        .filter(|s| s.status == ServiceStatus::Terminating)
        .filter_map(|s| Some((s.id, s.container_id.clone()?)))
        .collect();
    for (sid, cid) in stopping {
        let _ = st.apply(&Command::ServiceStopped { id: sid, container_id: cid, time: t });
    }
}
