//! Workflows and their runs (docs/workflows.md).

use crate::error::Detail;
use serde_json::Value;
use zoe_common::workflow::cron::Spec;
use zoe_model::state::{Run, RunTrigger, WorkflowRecord};

crate::api_type! {
    pub struct WorkflowCreated {
        pub id: u64,
        pub warnings: Vec<Detail>,
    }
}

crate::api_type! {
    /// `POST /workflows/validate`.
    pub struct WorkflowValid {
        pub valid: bool,
        pub warnings: Vec<Detail>,
    }
}

crate::api_type! {
    /// `POST /workflows/{id}/runs` and `POST /runs/{id}/terminate`.
    #[derive(Default)]
    pub struct RunRequest {
        pub reason: Option<String>,
    }
}

crate::api_type! {
    pub struct RunCreated {
        pub id: u64,
        pub workflow_id: u64,
        pub status: String,
    }
}

crate::api_type! {
    pub struct WorkflowView {
        pub id: u64,
        pub name: String,
        pub owner: String,
        pub description: Option<String>,
        /// The cron spec, when it runs on a schedule.
        pub schedule: Option<String>,
        pub time_zone: Option<String>,
        pub catch_up: Option<String>,
        pub prohibit_overlap: bool,
        pub steps: Vec<String>,
        /// Epoch milliseconds.
        pub time_created: u64,
        pub last_slot: Option<u64>,
        pub next_slot: Option<u64>,
        pub slots_skipped: u64,
        pub runs_started: u64,
        pub runs_running: u64,
        /// The document as created.
        pub document: Value,
    }
}

impl WorkflowView {
    pub fn of(w: &WorkflowRecord, runs_running: u64) -> WorkflowView {
        let s = w.doc.schedule.as_ref();
        let next_slot = s
            .and_then(|s| Spec::parse(&s.cron, &s.time_zone).ok())
            .and_then(|spec| spec.next_after(w.last_slot.unwrap_or(w.time_created), w.time_created));
        WorkflowView {
            id: w.id,
            name: w.doc.name.clone(),
            owner: w.owner.clone(),
            description: w.doc.description.clone(),
            schedule: s.map(|s| s.cron.clone()),
            time_zone: s.map(|s| s.time_zone.clone()),
            catch_up: s.map(|s| s.catch_up.as_str().to_string()),
            prohibit_overlap: s.is_some_and(|s| s.prohibit_overlap),
            steps: w.doc.steps.iter().map(|s| s.name.clone()).collect(),
            time_created: w.time_created,
            last_slot: w.last_slot,
            next_slot,
            slots_skipped: w.slots_skipped,
            runs_started: w.runs_started,
            runs_running,
            document: serde_json::to_value(&w.doc).unwrap_or(Value::Null),
        }
    }
}

crate::api_type! {
    pub struct RunView {
        pub id: u64,
        pub workflow_id: u64,
        pub workflow: String,
        pub owner: String,
        /// `manual`, `schedule`, `execution_end` or `volume_size`.
        pub trigger: String,
        pub started_by: Option<String>,
        /// The schedule slot (epoch ms) a scheduled run fired for.
        pub slot: Option<u64>,
        /// The execution whose end started the run (`execution_end`).
        pub execution: Option<u64>,
        /// What a `volume_size` trigger saw: `volume/path on node: bytes`.
        pub volume: Option<String>,
        pub status: String,
        pub time_start: u64,
        pub time_end: Option<u64>,
        pub reason: Option<String>,
        pub steps: Vec<StepView>,
    }
}

crate::api_type! {
    pub struct StepView {
        pub name: String,
        pub status: String,
        pub depends_on: Vec<String>,
        pub condition: String,
        pub fan_out: u32,
        pub instances: Vec<InstanceView>,
    }
}

crate::api_type! {
    pub struct InstanceView {
        pub attempts: Vec<AttemptView>,
        pub retry_at: Option<u64>,
    }
}

crate::api_type! {
    pub struct AttemptView {
        pub execution: Option<u64>,
        pub time_start: u64,
        pub time_end: Option<u64>,
        /// `None` while it runs.
        pub ok: Option<bool>,
        pub exit_code: Option<i32>,
        pub message: Option<String>,
    }
}

impl RunView {
    pub fn of(r: &Run, w: Option<&WorkflowRecord>) -> RunView {
        let (trigger, started_by, slot, execution) = match &r.trigger {
            RunTrigger::Manual { by } => ("manual", Some(by.clone()), None, None),
            RunTrigger::Schedule { slot } => ("schedule", None, Some(*slot), None),
            RunTrigger::Execution { execution } => ("execution_end", None, None, Some(*execution)),
            RunTrigger::Volume { .. } => ("volume_size", None, None, None),
        };
        let volume = match (&r.trigger, w) {
            (RunTrigger::Volume { trigger, node, bytes }, Some(w)) => match w.doc.triggers.get(*trigger as usize) {
                Some(zoe_common::workflow::Trigger::VolumeSize(t)) => {
                    Some(format!("{}/{} on {node}: {bytes} bytes", t.volume, t.path))
                }
                _ => Some(format!("on {node}: {bytes} bytes")),
            },
            (RunTrigger::Volume { node, bytes, .. }, None) => Some(format!("on {node}: {bytes} bytes")),
            _ => None,
        };
        RunView {
            id: r.id,
            workflow_id: r.workflow_id,
            workflow: r.workflow.clone(),
            owner: r.owner.clone(),
            trigger: trigger.into(),
            started_by,
            slot,
            execution,
            volume,
            status: r.status.as_str().into(),
            time_start: r.time_start,
            time_end: r.time_end,
            reason: r.reason.clone(),
            steps: r
                .steps
                .iter()
                .map(|s| {
                    let spec = w.and_then(|w| w.doc.step(&s.name));
                    StepView {
                        name: s.name.clone(),
                        status: s.status.as_str().into(),
                        depends_on: spec.map(|p| p.depends_on.clone()).unwrap_or_default(),
                        condition: spec.map(|p| p.condition.as_str()).unwrap_or("on_success").into(),
                        fan_out: spec.map_or(1, |p| p.fan_out),
                        instances: s
                            .instances
                            .iter()
                            .map(|i| InstanceView {
                                retry_at: i.retry_at,
                                attempts: i
                                    .attempts
                                    .iter()
                                    .map(|a| AttemptView {
                                        execution: a.execution,
                                        time_start: a.time_start,
                                        time_end: a.outcome.as_ref().map(|o| o.time),
                                        ok: a.outcome.as_ref().map(|o| o.ok),
                                        exit_code: a.outcome.as_ref().and_then(|o| o.exit_code),
                                        message: a.outcome.as_ref().and_then(|o| o.message.clone()),
                                    })
                                    .collect(),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}
