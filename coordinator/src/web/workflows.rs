//! Workflows in the web UI: the list, one workflow with its runs, and a
//! run's page, whose step graph is drawn on the server as SVG (no script:
//! the content security policy allows none inline, and a graph of at most
//! 100 steps needs no client-side layout).

use super::layout::{Nav, button, page, status, time};
use super::session::{Form, Session};
use super::{WebResult, see_other};
use crate::api::context::ReadParams;
use crate::api::routes::{P, Q};
use crate::api::workflows::{self, RunView, RunsParams, StepView};
use axum::extract::Path;
use axum::response::{Html, Response};
use maud::{Markup, html};
use std::collections::BTreeMap;

pub async fn list(s: Session) -> WebResult<Html<String>> {
    let ws = workflows::list(s.caller.clone(), Q(ReadParams::default())).await?.value;
    let content = html! {
        p.muted { "Create workflows with " code { "zoe workflow create FILE" } " or the API (docs/workflows.md)." }
        @if ws.is_empty() {
            p { "No workflows." }
        } @else {
            table {
                thead { tr { th { "ID" } th { "Name" } th { "Owner" } th { "Steps" } th { "Schedule" } th { "Next slot" } th { "Runs" } th { "Running" } } }
                tbody {
                    @for w in &ws {
                        tr {
                            td { a href=(format!("/ui/workflows/{}", w.id)) { (w.id) } }
                            td { a href=(format!("/ui/workflows/{}", w.id)) { (w.name) } }
                            td { (w.owner) }
                            td { (w.steps.join(", ")) }
                            td { (w.schedule.clone().unwrap_or_else(|| "–".into())) }
                            td { (time(w.next_slot)) }
                            td { (w.runs_started) }
                            td { (w.runs_running) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&s, Nav::Workflows, "Workflows", content))
}

pub async fn workflow(s: Session, Path(id): Path<u64>) -> WebResult<Html<String>> {
    let w = workflows::get(s.caller.clone(), P(id.to_string()), Q(ReadParams::default())).await?.value;
    let runs = workflows::runs(
        s.caller.clone(),
        P(id.to_string()),
        Q(RunsParams { limit: Some(50), ..RunsParams::default() }),
    )
    .await?
    .value;
    let content = html! {
        dl.summary {
            dt { "Owner" } dd { (w.owner) }
            @if let Some(d) = &w.description { dt { "Description" } dd { (d) } }
            dt { "Steps" } dd { (w.steps.join(", ")) }
            dt { "Schedule" } dd {
                @match &w.schedule {
                    Some(c) => { code { (c) } " (" (w.time_zone.clone().unwrap_or_default()) ", catch-up " (w.catch_up.clone().unwrap_or_default()) @if w.prohibit_overlap { ", no overlap" } ")" }
                    None => { "none (runs by hand)" }
                }
            }
            dt { "Next slot" } dd { (time(w.next_slot)) }
            dt { "Slots skipped" } dd { (w.slots_skipped) }
        }
        (button(&s, &format!("/ui/workflows/{id}/run"), "Run now", "primary"))
        h2 { "Runs" }
        (run_table(&runs))
    };
    Ok(page(&s, Nav::Workflows, &format!("Workflow {}: {}", w.id, w.name), content))
}

fn run_table(runs: &[RunView]) -> Markup {
    html! {
        @if runs.is_empty() { p { "No runs yet." } } @else {
            table {
                thead { tr { th { "Run" } th { "Status" } th { "Trigger" } th { "Started" } th { "Ended" } } }
                tbody {
                    @for r in runs {
                        tr {
                            td { a href=(format!("/ui/runs/{}", r.id)) { (r.id) } }
                            td { (status(&r.status)) }
                            td { (r.trigger) @if let Some(by) = &r.started_by { " by " (by) } }
                            td { (time(Some(r.time_start))) }
                            td { (time(r.time_end)) }
                        }
                    }
                }
            }
        }
    }
}

fn empty() -> crate::api::context::Body {
    crate::api::context::Body(serde_json::Map::new())
}

pub async fn run_now(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    let r = workflows::run(f.session.caller, P(id.to_string()), Default::default(), empty()).await?;
    Ok(see_other(&format!("/ui/runs/{}", r.value.id)))
}

pub async fn run_page(s: Session, Path(id): Path<u64>) -> WebResult<Html<String>> {
    let r = workflows::get_run(s.caller.clone(), P(id), Q(ReadParams::default())).await?.value;
    let content = html! {
        dl.summary {
            dt { "Workflow" } dd { a href=(format!("/ui/workflows/{}", r.workflow_id)) { (r.workflow) } }
            dt { "Status" } dd { (status(&r.status)) }
            dt { "Trigger" } dd { (r.trigger) @if let Some(by) = &r.started_by { " by " (by) } @if let Some(slot) = r.slot { " for slot " (time(Some(slot))) } @if let Some(e) = r.execution { " of execution " a href=(format!("/ui/executions/{e}")) { (e) } } @if let Some(v) = &r.volume { " (" (v) ")" } }
            dt { "Started" } dd { (time(Some(r.time_start))) }
            dt { "Ended" } dd { (time(r.time_end)) }
            @if let Some(why) = &r.reason { dt { "Reason" } dd { (why) } }
        }
        @if r.status == "running" {
            (button(&s, &format!("/ui/runs/{id}/terminate"), "Terminate run", "danger"))
        }
        h2 { "Steps" }
        figure { (dag_svg(&r)) }
        table {
            thead { tr { th { "Step" } th { "Status" } th { "Attempts" } th { "Execution" } th { "Exit" } th { "Message" } } }
            tbody {
                @for st in &r.steps {
                    @for (i, inst) in st.instances.iter().enumerate() {
                        @let last = inst.attempts.last();
                        tr {
                            td { (st.name) @if st.fan_out > 1 { "[" (i) "]" } }
                            td { (status(&st.status)) }
                            td { (inst.attempts.len()) }
                            td { @if let Some(e) = last.and_then(|a| a.execution) { a href=(format!("/ui/executions/{e}")) { (e) } } @else { "–" } }
                            td { (last.and_then(|a| a.exit_code).map(|c| c.to_string()).unwrap_or_else(|| "–".into())) }
                            td { (last.and_then(|a| a.message.clone()).unwrap_or_default()) }
                        }
                    }
                    @if st.instances.is_empty() {
                        tr { td { (st.name) } td { (status(&st.status)) } td { "0" } td { "–" } td { "–" } td {} }
                    }
                }
            }
        }
    };
    Ok(page(&s, Nav::Workflows, &format!("Run {id} of {}", r.workflow), content))
}

pub async fn terminate(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    let mut body = empty();
    body.0.insert("reason".into(), "from the web UI".into());
    workflows::terminate_run(f.session.caller, P(id), body).await?;
    Ok(see_other(&format!("/ui/runs/{id}")))
}

const BOX_W: u32 = 170;
const BOX_H: u32 = 54;
const GAP_X: u32 = 60;
const GAP_Y: u32 = 24;

fn colour(status: &str) -> &'static str {
    match status {
        "succeeded" => "#d4f4dd",
        "failed" => "#f9d0d0",
        "running" => "#d6e6ff",
        "skipped" | "terminated" => "#e6e6e6",
        _ => "#ffffff",
    }
}

/// Each step in a column by its depth (the longest chain of steps before
/// it), rows in document order; an arrow from each dependency, dashed when
/// the step runs on failure, dotted when it always runs. Each box links to
/// its (first copy's latest) execution.
pub fn dag_svg(r: &RunView) -> Markup {
    let index: BTreeMap<&str, usize> = r.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut depth = vec![0u32; r.steps.len()];
    // Steps are at most 100 and acyclic: relaxing n times settles.
    for _ in 0..r.steps.len() {
        for (i, s) in r.steps.iter().enumerate() {
            for d in &s.depends_on {
                if let Some(&j) = index.get(d.as_str()) {
                    depth[i] = depth[i].max(depth[j] + 1);
                }
            }
        }
    }
    let mut rows: BTreeMap<u32, u32> = BTreeMap::new();
    let pos: Vec<(u32, u32)> = depth
        .iter()
        .map(|&d| {
            let row = rows.entry(d).or_insert(0);
            let p = (10 + d * (BOX_W + GAP_X), 10 + *row * (BOX_H + GAP_Y));
            *row += 1;
            p
        })
        .collect();
    let width = 20 + (depth.iter().max().copied().unwrap_or(0) + 1) * (BOX_W + GAP_X) - GAP_X;
    let height = 20 + rows.values().max().copied().unwrap_or(1) * (BOX_H + GAP_Y) - GAP_Y;
    let label = |s: &StepView| {
        let done = s
            .instances
            .iter()
            .filter(|i| i.attempts.last().and_then(|a| a.ok).is_some() && i.retry_at.is_none())
            .count();
        if s.fan_out > 1 { format!("{} · {done}/{} done", s.status, s.fan_out) } else { s.status.clone() }
    };
    html! {
        svg.dag xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="The run's steps and their dependencies" {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#555" {}
                }
            }
            @for (i, s) in r.steps.iter().enumerate() {
                @for d in &s.depends_on {
                    @if let Some(&j) = index.get(d.as_str()) {
                        @let (x1, y1) = (pos[j].0 + BOX_W, pos[j].1 + BOX_H / 2);
                        @let (x2, y2) = (pos[i].0, pos[i].1 + BOX_H / 2);
                        @let dash = match s.condition.as_str() { "on_failure" => "6 4", "always" => "2 3", _ => "none" };
                        path d=(format!("M {x1} {y1} C {} {y1}, {} {y2}, {x2} {y2}", x1 + GAP_X / 2, x2 - GAP_X / 2)) fill="none" stroke="#555" stroke-width="1.5" stroke-dasharray=(dash) marker-end="url(#arrow)" {}
                    }
                }
            }
            @for (i, s) in r.steps.iter().enumerate() {
                @let (x, y) = pos[i];
                @let exec = s.instances.first().and_then(|i| i.attempts.last()).and_then(|a| a.execution);
                @let body = html! {
                    rect x=(x) y=(y) width=(BOX_W) height=(BOX_H) rx="6" fill=(colour(&s.status)) stroke="#333" {}
                    text x=(x + 10) y=(y + 22) font-family="sans-serif" font-size="14" font-weight="bold" fill="#111" { (s.name) @if s.fan_out > 1 { " ×" (s.fan_out) } }
                    text x=(x + 10) y=(y + 42) font-family="sans-serif" font-size="12" fill="#333" { (label(s)) }
                    title { (s.name) ": " (s.status) " (" (s.condition) ")" }
                };
                @match exec {
                    Some(e) => { a href=(format!("/ui/executions/{e}")) { (body) } }
                    None => { g { (body) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::workflows::{AttemptView, InstanceView};

    fn step(name: &str, deps: &[&str], status: &str, cond: &str, exec: Option<u64>) -> StepView {
        StepView {
            name: name.into(),
            status: status.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            condition: cond.into(),
            fan_out: 1,
            instances: exec
                .map(|e| {
                    vec![InstanceView {
                        attempts: vec![AttemptView {
                            execution: Some(e),
                            time_start: 0,
                            time_end: None,
                            ok: None,
                            exit_code: None,
                            message: None,
                        }],
                        retry_at: None,
                    }]
                })
                .unwrap_or_default(),
        }
    }

    #[test]
    fn the_dag_has_a_box_per_step_an_arrow_per_dependency_and_links() {
        let r = RunView {
            id: 9,
            workflow_id: 1,
            workflow: "etl".into(),
            owner: "ada".into(),
            trigger: "manual".into(),
            started_by: Some("ada".into()),
            slot: None,
            execution: None,
            volume: None,
            status: "running".into(),
            time_start: 0,
            time_end: None,
            reason: None,
            steps: vec![
                step("prepare", &[], "succeeded", "on_success", Some(11)),
                step("train", &["prepare"], "running", "on_success", Some(12)),
                step("cleanup<x>", &["train"], "waiting", "on_failure", None),
            ],
        };
        let svg = dag_svg(&r).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert_eq!(svg.matches("marker-end").count(), 2, "{svg}");
        assert!(svg.contains("href=\"/ui/executions/12\""), "{svg}");
        assert!(svg.contains("stroke-dasharray=\"6 4\""), "on_failure is dashed: {svg}");
        assert!(svg.contains("cleanup&lt;x&gt;"), "names are escaped: {svg}");
        // Three columns: prepare, train, cleanup.
        assert!(svg.contains(&format!("x=\"{}\"", 10 + 2 * (BOX_W + GAP_X))), "{svg}");
    }
}
