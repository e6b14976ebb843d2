//! Workflows through the commands the leader issues: [`decide`] on the
//! state at a time, its commands applied, executions ended by hand.

use super::*;
use crate::state::{
    Applied, Capacity, ExecutionId, Placement, Plan, Registration, RunId, RunTrigger, StateError, WorkflowId,
};
use serde_json::json;
use std::collections::BTreeMap;
use zoe_common::resources::Millicores;
use zoe_common::workflow::{Workflow, validate_value};

fn zapp() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../examples/zapps/hello-batch.json")).unwrap()
}

fn doc(v: serde_json::Value) -> Workflow {
    let (w, r) = validate_value(&v);
    w.unwrap_or_else(|| panic!("{:?}", r.errors))
}

/// prepare → train ×4 (one retry) → report; cleanup on train's failure.
fn pipeline() -> Workflow {
    let mut report = json!({"name": "report", "zapp": zapp(), "depends_on": ["train"]});
    report["zapp"]["services"][0]["environment"] =
        json!([["TRAIN", "{{step.train.execution_id}}"], ["CODES", "{{step.train.exit_code}}"], ["RUN", "{{run.id}}"]]);
    doc(json!({"name": "etl", "steps": [
        {"name": "prepare", "zapp": zapp()},
        {"name": "train", "zapp": zapp(), "depends_on": ["prepare"], "fan_out": 4, "retries": 1, "backoff_s": 10},
        report,
        {"name": "cleanup", "zapp": zapp(), "depends_on": ["train"], "condition": "on_failure"},
    ]}))
}

struct World {
    st: State,
    t: Millis,
}

impl World {
    fn new() -> World {
        let mut w = World { st: State::default(), t: 1_000_000 };
        let cap = Capacity { cores: Millicores::from_whole_cores(64), memory: 64 << 30 };
        w.ok(Command::RegisterNode { registration: Registration::bare("n1", cap), time: 1 });
        w
    }

    fn ok(&mut self, c: Command) -> Applied {
        crate::state::check::ok(&mut self.st, &c)
    }

    fn refused(&mut self, c: Command) -> StateError {
        crate::state::check::refused(&mut self.st, &c)
    }

    fn create(&mut self, d: Workflow) -> WorkflowId {
        let Applied::Created(id) = self.ok(Command::CreateWorkflow { workflow: d, owner: "ada".into(), time: self.t })
        else {
            panic!()
        };
        id
    }

    fn run(&mut self, id: WorkflowId) -> RunId {
        let Applied::Created(r) =
            self.ok(Command::RunWorkflow { id, by: "ada".into(), idempotency_key: None, time: self.t })
        else {
            panic!()
        };
        r
    }

    /// The leader's decisions at `t`, applied as one batch; returns them.
    fn pass(&mut self, t: Millis) -> Vec<Command> {
        self.t = t;
        let cmds = decide(&self.st, t);
        if !cmds.is_empty() {
            self.ok(Command::Batch(cmds.clone()));
        }
        cmds
    }

    /// The executions of a step's copies, last attempt each.
    fn execs(&self, run: RunId, step: &str) -> Vec<ExecutionId> {
        self.st.runs[&run].step(step).unwrap().instances.iter().filter_map(|i| i.last()?.execution).collect()
    }

    fn step(&self, run: RunId, step: &str) -> StepStatus {
        self.st.runs[&run].step(step).unwrap().status
    }

    /// Runs an execution's containers and has its essential instance exit;
    /// returns the exit's command.
    fn exit(&mut self, id: ExecutionId, code: i32) -> Command {
        let t = self.t;
        self.ok(Command::QueueExecution { id, time: t });
        let services: Vec<_> = self.st.services_of(id).map(|s| (s.id, s.essential)).collect();
        let placements = services
            .iter()
            .map(|(s, _)| Placement { service: *s, node: "n1".into(), cores: Millicores(100) })
            .collect();
        self.ok(Command::ApplyPlan(Plan { time: t, starting: vec![id], placements, ..Plan::default() }));
        for (s, _) in &services {
            let container_id = self.st.services[s].container_id.clone().unwrap_or_else(|| format!("c{s}"));
            self.ok(Command::ServiceStarted { id: *s, container_id, ip_address: None, ports: vec![], time: t });
        }
        let (s, _) = services.iter().find(|(_, e)| *e).unwrap();
        let container_id = self.st.services[s].container_id.clone().unwrap();
        let exited = Command::ServiceExited {
            id: *s,
            container_id,
            exit_code: Some(code),
            oom_killed: false,
            reason: "exited".into(),
            time: t,
        };
        self.ok(exited.clone());
        // Cleanup of the other instances, if any.
        for (o, _) in services.iter().filter(|(o, _)| o != s) {
            if let Some(c) = self.st.services[o].container_id.clone() {
                self.st.apply(&Command::ServiceStopped { id: *o, container_id: c, time: t }).ok();
            }
        }
        assert!(self.st.executions[&id].status.is_ended(), "{:?}", self.st.executions[&id].status);
        exited
    }
}

#[test]
fn a_pipeline_runs_its_steps_in_order_and_fans_out() {
    let mut w = World::new();
    let wf = w.create(pipeline());
    let run = w.run(wf);
    // The root step starts in the command that starts the run.
    assert_eq!(w.step(run, "prepare"), StepStatus::Running);
    assert_eq!(w.step(run, "train"), StepStatus::Waiting);
    let prep = w.execs(run, "prepare");
    assert_eq!(prep.len(), 1);
    assert!(w.pass(w.t + 100).is_empty(), "nothing to do while prepare runs");

    w.exit(prep[0], 0);
    // The exit's own command recorded the outcome and submitted the
    // dependants: the leader has nothing left to decide.
    assert_eq!(w.step(run, "prepare"), StepStatus::Succeeded);
    assert_eq!(w.step(run, "train"), StepStatus::Running);
    assert!(w.pass(w.t + 100).is_empty());
    let train = w.execs(run, "train");
    assert_eq!(train.len(), 4);
    assert!(w.st.executions[&train[3]].name.ends_with("train[3]"));

    for (i, e) in train.iter().enumerate() {
        w.exit(*e, 0);
        w.pass(w.t + 10);
        let want = if i < 3 { StepStatus::Running } else { StepStatus::Succeeded };
        assert_eq!(w.step(run, "train"), want);
    }
    assert_eq!(w.step(run, "cleanup"), StepStatus::Skipped);
    let report = w.execs(run, "report");
    let env = &w.st.executions[&report[0]].description.services[0].environment;
    let joined: Vec<String> = train.iter().map(|e| e.to_string()).collect();
    assert_eq!(env[0].1, joined.join(","));
    assert_eq!(env[1].1, "0,0,0,0");
    assert_eq!(env[2].1, run.to_string());

    w.exit(report[0], 0);
    w.pass(w.t + 10);
    let r = &w.st.runs[&run];
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(r.time_end.is_some());
    assert!(w.pass(w.t + 10).is_empty());
}

#[test]
fn a_failure_is_retried_then_takes_the_failure_branch() {
    let mut w = World::new();
    let wf = w.create(pipeline());
    let run = w.run(wf);
    let prep = w.execs(run, "prepare")[0];
    w.exit(prep, 0);
    w.pass(w.t + 10);
    let train = w.execs(run, "train");
    for e in &train[1..] {
        w.exit(*e, 0);
    }
    let t = w.t;
    w.exit(train[0], 3);
    let inst = &w.st.runs[&run].step("train").unwrap().instances[0];
    assert_eq!(inst.retry_at, Some(t + 10_000), "backoff_s 10");
    assert_eq!(inst.attempts[0].outcome.as_ref().unwrap().exit_code, Some(3));
    assert_eq!(w.step(run, "train"), StepStatus::Running, "a retry is due");
    assert!(w.pass(t + 9_999).is_empty());

    let cmds = w.pass(t + 10_000);
    assert!(matches!(cmds.as_slice(), [Command::RetryStep { attempt: 1, instance: 0, .. }]), "{cmds:?}");
    // The same decision again (a new leader on an old view) is refused.
    let e = w.refused(cmds[0].clone());
    assert!(matches!(e, StateError::Conflict(_)), "{e}");
    let retry = w.execs(run, "train")[0];
    assert_ne!(retry, train[0]);
    assert!(w.st.executions[&retry].name.ends_with("train[0]#1"));

    w.exit(retry, 1);
    w.pass(w.t + 10);
    assert_eq!(w.step(run, "train"), StepStatus::Failed, "no retry left");
    assert_eq!(w.step(run, "report"), StepStatus::Skipped);
    assert_eq!(w.step(run, "cleanup"), StepStatus::Running);
    let c = w.execs(run, "cleanup")[0];
    w.exit(c, 0);
    w.pass(w.t + 10);
    // The failure branch handled train's failure.
    assert_eq!(w.st.runs[&run].status, RunStatus::Succeeded);
}

#[test]
fn an_unhandled_failure_fails_the_run() {
    let mut w = World::new();
    let wf = w.create(doc(json!({"name": "one", "steps": [
        {"name": "a", "zapp": zapp()},
        {"name": "b", "zapp": zapp(), "depends_on": ["a"]},
        {"name": "c", "zapp": zapp(), "depends_on": ["a"], "condition": "always"},
    ]})));
    let run = w.run(wf);
    let a = w.execs(run, "a")[0];
    w.exit(a, 2);
    w.pass(w.t + 10);
    assert_eq!(w.step(run, "b"), StepStatus::Skipped);
    assert_eq!(w.step(run, "c"), StepStatus::Running, "always runs");
    let c = w.execs(run, "c")[0];
    w.exit(c, 0);
    w.pass(w.t + 10);
    // `always` after a failure counts as handling it.
    assert_eq!(w.st.runs[&run].status, RunStatus::Succeeded);

    let wf2 = w.create(doc(json!({"name": "two", "steps": [{"name": "a", "zapp": zapp()}]})));
    let run = w.run(wf2);
    let a = w.execs(run, "a")[0];
    w.exit(a, 2);
    w.pass(w.t + 10);
    assert_eq!(w.st.runs[&run].status, RunStatus::Failed);
}

#[test]
fn terminating_a_run_terminates_its_executions() {
    let mut w = World::new();
    let wf = w.create(pipeline());
    let run = w.run(wf);
    let prep = w.execs(run, "prepare")[0];
    w.exit(prep, 0);
    w.pass(w.t + 10);
    let train = w.execs(run, "train");
    w.exit(train[0], 0);
    w.ok(Command::TerminateRun { run, reason: "by ada".into(), time: w.t });
    let r = &w.st.runs[&run];
    assert_eq!(r.status, RunStatus::Terminated);
    assert_eq!(r.step("train").unwrap().status, StepStatus::Terminated);
    assert_eq!(r.step("report").unwrap().status, StepStatus::Terminated);
    for e in &train[1..] {
        assert!(w.st.executions[e].status.is_ended(), "submitted executions end at once");
    }
    assert!(w.pass(w.t + 10).is_empty(), "nothing of a terminated run goes on");
    w.ok(Command::TerminateRun { run, reason: "again".into(), time: w.t });
    w.ok(Command::DeleteRun { run });
    assert!(!w.st.runs.contains_key(&run));
    // Delete is refused while a run goes on, allowed after.
    let run2 = w.run(wf);
    assert!(matches!(w.refused(Command::DeleteWorkflow { id: wf }), StateError::Conflict(_)));
    assert!(matches!(w.refused(Command::DeleteRun { run: run2 }), StateError::Conflict(_)));
    w.ok(Command::TerminateRun { run: run2, reason: "x".into(), time: w.t });
    w.ok(Command::DeleteWorkflow { id: wf });
    assert!(w.st.runs.is_empty());
}

#[test]
fn a_step_past_its_timeout_is_terminated_and_fails() {
    let mut w = World::new();
    let wf = w.create(doc(json!({"name": "t", "steps": [{"name": "a", "zapp": zapp(), "timeout_s": 5}]})));
    let run = w.run(wf);
    let t0 = w.t;
    let a = w.execs(run, "a")[0];
    w.ok(Command::QueueExecution { id: a, time: t0 });
    assert!(w.pass(t0 + 4_999).iter().all(|c| !matches!(c, Command::TerminateExecution { .. })));
    let cmds = w.pass(t0 + 5_000);
    assert!(matches!(cmds.as_slice(), [Command::TerminateExecution { id, .. }] if *id == a), "{cmds:?}");
    w.pass(t0 + 5_010);
    let r = &w.st.runs[&run];
    assert_eq!(r.status, RunStatus::Failed);
    let o = r.steps[0].instances[0].attempts[0].outcome.as_ref().unwrap();
    assert!(o.message.as_deref().unwrap_or_default().contains("timed out"), "{o:?}");
}

fn periodic(cron: &str, catch_up: &str, overlap: bool) -> Workflow {
    doc(json!({"name": "p", "schedule": {"cron": cron, "catch_up": catch_up, "prohibit_overlap": overlap},
        "steps": [{"name": "a", "zapp": zapp()}]}))
}

fn slots(w: &World, wf: WorkflowId) -> Vec<Millis> {
    w.st.runs_of(wf)
        .map(|r| match r.trigger {
            RunTrigger::Schedule { slot } => slot,
            _ => panic!("not a scheduled run"),
        })
        .collect()
}

#[test]
fn every_slot_fires_once() {
    let mut w = World::new();
    let t0 = w.t;
    let wf = w.create(periodic("@every 2s", "skip", false));
    assert!(w.pass(t0 + 1_999).is_empty());
    let cmds = w.pass(t0 + 2_000);
    assert_eq!(
        cmds,
        vec![Command::CommitSlot { workflow: wf, slot: t0 + 2_000, fire: true, dropped: 0, time: t0 + 2_000 }]
    );
    // A second leader deciding on the view before that commit: refused.
    assert!(matches!(w.refused(cmds[0].clone()), StateError::Conflict(_)));
    assert!(w.pass(t0 + 3_500).is_empty());
    w.pass(t0 + 4_100);
    w.pass(t0 + 6_000);
    assert_eq!(slots(&w, wf), vec![t0 + 2_000, t0 + 4_000, t0 + 6_000]);
    assert_eq!(w.st.workflows[&wf].runs_started, 3);
}

#[test]
fn catch_up_policies_after_downtime() {
    // (policy, downtime end, slots fired, slots skipped)
    let t0 = 1_000_000;
    let cases: &[(&str, Millis, &[Millis], u64)] = &[
        ("all", 9_000, &[2_000, 4_000, 6_000, 8_000], 0),
        ("once", 9_000, &[8_000], 3),
        ("skip", 9_000, &[8_000], 3),
        ("skip", 200_000, &[200_000], 99),
        ("once", 200_000, &[200_000], 99),
    ];
    for (policy, end, fired, skipped) in cases {
        let mut w = World::new();
        let wf = w.create(periodic("@every 2s", policy, false));
        w.pass(t0 + end);
        let want: Vec<Millis> = fired.iter().map(|s| t0 + s).collect();
        assert_eq!(slots(&w, wf), want, "{policy} until {end}");
        assert_eq!(w.st.workflows[&wf].slots_skipped, *skipped, "{policy} until {end}");
        assert!(w.pass(t0 + end).is_empty(), "{policy}: nothing left due");
    }
}

#[test]
fn prohibit_overlap_skips_slots_while_a_run_goes_on() {
    let mut w = World::new();
    let t0 = w.t;
    let wf = w.create(periodic("@every 2s", "all", true));
    w.pass(t0 + 2_000);
    w.pass(t0 + 4_000);
    assert_eq!(slots(&w, wf), vec![t0 + 2_000]);
    assert_eq!(w.st.workflows[&wf].slots_skipped, 1);
    let run = *w.st.runs.keys().next().unwrap();
    let a = w.execs(run, "a")[0];
    w.exit(a, 0);
    w.pass(t0 + 5_000);
    w.pass(t0 + 6_000);
    assert_eq!(slots(&w, wf), vec![t0 + 2_000, t0 + 6_000]);
}

#[test]
fn cron_slots_follow_the_calendar() {
    let mut w = World::new();
    // 2026-12-07T00:00:00Z
    let midnight = 1_796_601_600_000;
    w.t = midnight + 5 * 60_000;
    let wf = w.create(periodic("*/15 * * * *", "skip", false));
    assert!(w.pass(midnight + 14 * 60_000).is_empty());
    w.pass(midnight + 15 * 60_000 + 300);
    assert_eq!(slots(&w, wf), vec![midnight + 15 * 60_000]);
    // Under `skip`, a slot more than a minute late is dropped.
    w.pass(midnight + 32 * 60_000);
    assert_eq!(slots(&w, wf), vec![midnight + 15 * 60_000]);
    assert_eq!(w.st.workflows[&wf].slots_skipped, 1);
    assert_eq!(w.st.workflows[&wf].last_slot, Some(midnight + 30 * 60_000));
}

#[test]
fn replayed_commands_start_nothing_twice() {
    let mut w = World::new();
    let wf = w.create(pipeline());
    let run = w.run(wf);
    let prep = w.execs(run, "prepare")[0];
    let exited = w.exit(prep, 0);
    let n = w.st.executions.len();
    assert_eq!(n, 5, "prepare and train's four copies");
    // The exit reported again (a new leader reconciling an inventory):
    // nothing more starts.
    w.ok(exited);
    assert_eq!(w.st.executions.len(), n);
    // A StepEnded decided on the view before the exit was applied comes
    // too late: refused.
    let e = w.refused(Command::StepEnded { run, step: "prepare".into(), instance: 0, time: w.t });
    assert!(matches!(e, StateError::Conflict(_)), "{e}");
    // A keyed manual run, retried: one run.
    let key = Some("k1".to_string());
    let a = w.ok(Command::RunWorkflow { id: wf, by: "ada".into(), idempotency_key: key.clone(), time: w.t });
    let b = w.ok(Command::RunWorkflow { id: wf, by: "ada".into(), idempotency_key: key, time: w.t });
    assert_eq!(a, b);
    assert_eq!(w.st.runs.len(), 2);
}

#[test]
fn bad_documents_and_unknown_records_are_refused() {
    let mut w = World::new();
    let mut d = pipeline();
    d.steps[0].depends_on = vec!["report".into()];
    let e = w.refused(Command::CreateWorkflow { workflow: d, owner: "ada".into(), time: 1 });
    assert!(e.to_string().contains("cycle"), "{e}");
    let wf = w.create(pipeline());
    let e = w.refused(Command::CreateWorkflow { workflow: pipeline(), owner: "ada".into(), time: 1 });
    assert!(matches!(e, StateError::Conflict(_)));
    // Another owner may use the same name.
    w.ok(Command::CreateWorkflow { workflow: pipeline(), owner: "bob".into(), time: 1 });
    assert!(matches!(
        w.refused(Command::RunWorkflow { id: 999, by: "x".into(), idempotency_key: None, time: 1 }),
        StateError::NotFound(_)
    ));
    let run = w.run(wf);
    let e = w.refused(Command::StepEnded { run, step: "prepare".into(), instance: 0, time: w.t });
    assert!(e.to_string().contains("still"), "{e}");
    let e = w.refused(Command::StepEnded { run, step: "nope".into(), instance: 0, time: w.t });
    assert!(matches!(e, StateError::NotFound(_)));
}

#[test]
fn the_end_of_an_execution_triggers_a_run_once() {
    let mut w = World::new();
    let wf = w.create(doc(json!({"name": "after", "triggers": [{"execution_end": {"name": "import"}}],
        "steps": [{"name": "a", "zapp": zapp()}]})));
    let submit = |w: &mut World, name: &str, owner: &str| {
        let Applied::Created(id) = w.ok(Command::SubmitExecution {
            name: name.into(),
            owner: owner.into(),
            description: serde_json::from_value(zapp()).unwrap(),
            size: 1.0,
            time: w.t,
            idempotency_key: None,
        }) else {
            panic!()
        };
        id
    };
    // Another name, another owner, a failure: nothing.
    let other = submit(&mut w, "export", "ada");
    w.exit(other, 0);
    let bobs = submit(&mut w, "import", "bob");
    w.exit(bobs, 0);
    let failed = submit(&mut w, "import", "ada");
    w.exit(failed, 1);
    assert_eq!(w.st.runs.len(), 0);
    let import = submit(&mut w, "import", "ada");
    w.exit(import, 0);
    let runs: Vec<_> = w.st.runs_of(wf).collect();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger, RunTrigger::Execution { execution: import });
    assert_eq!(runs[0].steps[0].status, StepStatus::Running, "started in the exit's command");
    // The run's own step ending does not trigger it again (its name is
    // not `import`, and a step's execution never triggers anyway).
    let a = w.execs(runs[0].id, "a")[0];
    w.exit(a, 0);
    assert_eq!(w.st.runs_of(wf).count(), 1);
    assert_eq!(w.st.runs_of(wf).next().unwrap().status, RunStatus::Succeeded);
}

#[test]
fn a_workflow_does_not_trigger_itself() {
    let mut w = World::new();
    // Any execution of ada's, whatever its name: its own steps' too.
    let wf = w.create(doc(json!({"name": "loop", "triggers": [{"execution_end": {"status": "any"}}],
        "steps": [{"name": "a", "zapp": zapp()}]})));
    let run = w.run(wf);
    let a = w.execs(run, "a")[0];
    w.exit(a, 0);
    assert_eq!(w.st.runs_of(wf).count(), 1);
    // Nor do its steps' executions terminated with their run.
    let run = w.run(wf);
    w.ok(Command::TerminateRun { run, reason: "x".into(), time: w.t });
    assert_eq!(w.st.runs_of(wf).count(), 2);
    assert!(w.st.step_executions.is_empty());
}

#[test]
fn a_volume_passing_its_size_fires_once_until_it_goes_below() {
    let mut w = World::new();
    let wf = w.create(doc(json!({"name": "big",
        "triggers": [{"volume_size": {"volume": "data", "path": "in", "min_bytes": 1000}}],
        "steps": [{"name": "a", "zapp": zapp()}]})));
    let report = |n1: u64, n2: Option<u64>| {
        let size = |volume: &str, path: &str, bytes| zoe_common::proto::VolumeSize {
            volume: volume.into(),
            path: path.into(),
            bytes,
        };
        let mut m = BTreeMap::new();
        m.insert("n1".to_string(), vec![size("data", "in", n1)]);
        if let Some(b) = n2 {
            m.insert("n2".to_string(), vec![size("data", "in", b)]);
        }
        // Another path and another volume say nothing about this one.
        m.insert("n3".to_string(), vec![size("data", "", 1 << 40), size("other", "in", 1 << 40)]);
        m
    };
    // (n1, n2, commands expected)
    let steps: &[(u64, Option<u64>, &str)] = &[
        (10, None, ""),
        (999, Some(5), ""),
        (10, Some(1000), "passed n2"),
        (2000, Some(3000), ""),
        (999, None, "below"),
        (5, Some(5), ""),
        (1500, None, "passed n1"),
    ];
    for (n1, n2, want) in steps {
        let cmds = volume_triggers(&w.st, &report(*n1, *n2), w.t);
        let got = match cmds.as_slice() {
            [] => String::new(),
            [Command::VolumePassed { node, .. }] => format!("passed {node}"),
            [Command::VolumeBelow { .. }] => "below".to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(got, *want, "{n1} {n2:?}");
        for c in cmds {
            w.ok(c.clone());
            // Decided again (a new leader on the same view): refused.
            w.refused(c);
        }
    }
    let runs: Vec<_> = w.st.runs_of(wf).map(|r| r.trigger.clone()).collect();
    assert_eq!(
        runs,
        vec![
            RunTrigger::Volume { trigger: 0, node: "n2".into(), bytes: 1000 },
            RunTrigger::Volume { trigger: 0, node: "n1".into(), bytes: 1500 },
        ]
    );
}
