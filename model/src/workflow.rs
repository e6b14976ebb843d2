//! The leader's decisions on workflows, as a pure function of the state
//! and the time: which schedule slots are due, which retries are due and
//! which steps ran past their timeout. The pass commits what [`decide`]
//! returns in its batch; the state refuses a slot or an attempt that is
//! already recorded, so deciding twice (a new leader, a stale view) starts
//! nothing twice. A step's end needs no decision: the command that ends
//! its execution records it and moves the run on (`State::apply`); a
//! `StepEnded` is proposed only for an attempt whose execution ended
//! without that (deleted, or a state restored from an older snapshot).

use crate::state::{AfterCleanup, Command, ExecutionStatus, Millis, RunStatus, State, StepStatus};
use std::collections::BTreeMap;
use zoe_common::proto::VolumeSize;
use zoe_common::workflow::cron::Spec;
use zoe_common::workflow::{CatchUp, MAX_CATCH_UP, SKIP_LATE_MS, Trigger};

pub fn decide(st: &State, now: Millis) -> Vec<Command> {
    let mut out = Vec::new();
    slots(st, now, &mut out);
    runs(st, now, &mut out);
    out
}

fn slots(st: &State, now: Millis, out: &mut Vec<Command>) {
    for w in st.workflows.values() {
        let Some(sched) = &w.doc.schedule else { continue };
        // Validated when created; a spec that no longer parses fires nothing.
        let Ok(spec) = Spec::parse(&sched.cron, &sched.time_zone) else { continue };
        let from = w.last_slot.unwrap_or(w.time_created);
        let (latest, missed) = spec.due(from, w.time_created, now, MAX_CATCH_UP);
        let Some(latest) = latest else { continue };
        match sched.catch_up {
            CatchUp::All => {
                let mut at = from;
                for _ in 0..missed {
                    let Some(slot) = spec.next_after(at, w.time_created).filter(|s| *s <= now) else { break };
                    out.push(Command::CommitSlot { workflow: w.id, slot, fire: true, dropped: 0, time: now });
                    at = slot;
                }
            }
            CatchUp::Once | CatchUp::Skip => out.push(Command::CommitSlot {
                workflow: w.id,
                slot: latest,
                fire: sched.catch_up == CatchUp::Once || now - latest <= SKIP_LATE_MS,
                dropped: missed.saturating_sub(1) as u64,
                time: now,
            }),
        }
    }
}

fn runs(st: &State, now: Millis, out: &mut Vec<Command>) {
    for r in st.runs.values().filter(|r| r.status == RunStatus::Running) {
        let Some(w) = st.workflows.get(&r.workflow_id) else { continue };
        for (s, spec) in r.steps.iter().zip(&w.doc.steps) {
            if s.status != StepStatus::Running {
                continue;
            }
            for (k, inst) in s.instances.iter().enumerate() {
                let Some(a) = inst.last() else { continue };
                let instance = k as u32;
                if a.outcome.is_some() {
                    if inst.retry_at.is_some_and(|at| at <= now) {
                        out.push(Command::RetryStep {
                            run: r.id,
                            step: s.name.clone(),
                            instance,
                            attempt: inst.attempts.len() as u32,
                            time: now,
                        });
                    }
                    continue;
                }
                let Some(eid) = a.execution else { continue };
                match st.executions.get(&eid) {
                    None => out.push(Command::StepEnded { run: r.id, step: s.name.clone(), instance, time: now }),
                    Some(e) if e.status.is_ended() => {
                        out.push(Command::StepEnded { run: r.id, step: s.name.clone(), instance, time: now })
                    }
                    Some(e) => {
                        let late = spec.timeout_s.is_some_and(|t| now.saturating_sub(a.time_start) >= t * 1000);
                        if late && e.status != ExecutionStatus::CleaningUp {
                            out.push(Command::TerminateExecution {
                                id: eid,
                                reason: format!("step {} timed out after {} s", s.name, spec.timeout_s.unwrap_or(0)),
                                after: AfterCleanup::Error,
                                time: now,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// The `volume_size` triggers' moves, from the sizes each node reported
/// last (node → its volumes' sizes; a node that reported nothing for a
/// path says nothing about it): the largest size of the path on any node
/// decides. Above the size and not fired yet: `VolumePassed`; back below
/// after firing: `VolumeBelow`. The state refuses a second `VolumePassed`,
/// so a new leader deciding again fires nothing twice.
pub fn volume_triggers(st: &State, sizes: &BTreeMap<String, Vec<VolumeSize>>, now: Millis) -> Vec<Command> {
    let mut out = Vec::new();
    for w in st.workflows.values() {
        for (k, t) in w.doc.triggers.iter().enumerate() {
            let Trigger::VolumeSize(t) = t else { continue };
            let largest = sizes
                .iter()
                .flat_map(|(node, list)| list.iter().map(move |v| (node, v)))
                .filter(|(_, v)| v.volume == t.volume && v.path == t.path)
                .max_by_key(|(_, v)| v.bytes);
            let Some((node, v)) = largest else { continue };
            let trigger = k as u32;
            let above = w.volume_above.contains(&trigger);
            if v.bytes >= t.min_bytes && !above {
                out.push(Command::VolumePassed {
                    workflow: w.id,
                    trigger,
                    node: node.clone(),
                    bytes: v.bytes,
                    time: now,
                });
            } else if v.bytes < t.min_bytes && above {
                out.push(Command::VolumeBelow { workflow: w.id, trigger });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
