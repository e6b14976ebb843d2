//! Cluster status (`can_see_status`): nodes with capacity, reserved and
//! in-use resources, labels, eligibility and drains; the scheduler's
//! queues; the coordinators and the leader. Admins toggle eligibility and
//! start or cancel drains here.

use super::layout::{self, Nav, csrf, status, time};
use super::session::{Form, Session};
use super::{WebResult, see_other};
use crate::api::context::{Body, ReadParams};
use crate::api::nodes::{self, NodeView};
use crate::api::routes::{P, Q};
use crate::api::{HttpError, cluster};
use axum::extract::Path;
use axum::response::{Html, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};
use zoe_api::stats::SchedulerStats;

pub async fn page_data(s: &Session) -> WebResult<(Vec<NodeView>, SchedulerStats, crate::raft::Status)> {
    let nodes = nodes::list(s.caller.clone(), Q(ReadParams::default())).await?.value;
    let stats = nodes::stats(s.caller.clone(), Q(ReadParams::default())).await?.value;
    let members = cluster::members(s.caller.clone()).await?.0;
    Ok((nodes, stats, members))
}

fn node_row(s: &Session, n: &NodeView) -> Markup {
    let admin = s.caller.caps().can_change_config;
    let live = n.live.as_ref();
    html! {
        article.node aria-labelledby=(format!("node-{}", n.name)) {
            header {
                h3 id=(format!("node-{}", n.name)) { (n.name) }
                (status(&n.status))
                @if !n.eligible { span.badge.st-error { "ineligible" } }
                @if n.drain.is_some() { span.badge.st-cleaning-up { "draining" } }
                @if live.is_some_and(|l| !l.connected) { span.badge.st-error { "agent disconnected" } }
            }
            div.gauges {
                (layout::gauge(&format!("{}: cores reserved", n.name), n.reserved_cores, n.cores,
                    &format!("cores reserved {} of {}", layout::cores(n.reserved_cores), layout::cores(n.cores))))
                @if let Some(l) = live {
                    (layout::gauge(&format!("{}: cores in use", n.name), l.cores_in_use, n.cores,
                        &format!("cores in use {}", layout::cores(l.cores_in_use))))
                }
                (layout::gauge(&format!("{}: memory reserved", n.name), n.reserved_memory as f64, n.memory as f64,
                    &format!("memory reserved {} of {}", layout::bytes(n.reserved_memory), layout::bytes(n.memory))))
                @if let Some(l) = live {
                    (layout::gauge(&format!("{}: memory in use", n.name), l.memory_in_use as f64, n.memory as f64,
                        &format!("memory in use {}", layout::bytes(l.memory_in_use))))
                }
            }
            dl.facts.small {
                dt { "Labels" } dd { @if n.labels.is_empty() { span.muted { "none" } } @for l in &n.labels { code.label { (l) } " " } }
                dt { "Services" } dd { (n.services) @if let Some(l) = live { " (" (l.container_count) " containers)" } }
                dt { "Addresses" } dd { (n.addresses.join(", ")) }
                dt { "Eligible" } dd { (if n.eligible { "yes" } else { "no" }) }
                @if let Some(d) = &n.drain {
                    dt { "Drain" } dd {
                        "by " (d.requested_by) " at " (time(Some(d.requested_at)))
                        @if let Some(dl) = d.deadline { ", deadline " (time(Some(dl))) }
                        @if d.force { " (forced)" }
                    }
                }
                dt { "Runtime" } dd { "containerd " (n.containerd_version) ", cgroup " (n.cgroup_mode) }
                dt { "Last registration" } dd { (time(Some(n.last_registration))) }
            }
            @if admin {
                div.actions {
                    @let eligibility = format!("/ui/nodes/{}/eligibility", n.name);
                    form.inline method="post" action=(eligibility) {
                        (csrf(s))
                        input type="hidden" name="eligible" value=(if n.eligible { "false" } else { "true" });
                        button type="submit" { (if n.eligible { "Make ineligible" } else { "Make eligible" }) }
                    }
                    @let drain = format!("/ui/nodes/{}/drain", n.name);
                    @if n.drain.is_some() {
                        form.inline method="post" action=(drain) {
                            (csrf(s))
                            input type="hidden" name="enable" value="false";
                            button type="submit" { "Cancel drain" }
                        }
                    } @else {
                        form.inline method="post" action=(drain) {
                            (csrf(s))
                            input type="hidden" name="enable" value="true";
                            label for=(format!("deadline-{}", n.name)) { "Deadline (s)" }
                            input id=(format!("deadline-{}", n.name)) name="deadline_s" type="number" min="0" placeholder="none";
                            label { input type="checkbox" name="force" value="true"; " force" }
                            button.danger type="submit" { "Drain" }
                        }
                    }
                }
            }
        }
    }
}

pub async fn page(s: Session) -> WebResult<Html<String>> {
    let (nodes, stats, members) = page_data(&s).await?;
    // Zoe's three queues plus zoe's `submitted` and `starting`.
    let p = &stats.platform_stats;
    let (cores, cores_reserved) = (p.cores_total, p.cores_reserved);
    let (memory, memory_reserved) = (p.memory_total, p.memory_reserved);
    let queues = [
        ("submitted", &stats.submitted),
        ("queued", &stats.queue),
        ("starting", &stats.starting),
        ("running", &stats.running_queue),
        ("cleaning up", &stats.termination_queue),
    ];
    let content = html! {
        section aria-labelledby="sched-title" {
            h2 #sched-title { "Scheduler" }
            div.gauges {
                (layout::gauge("Cores reserved", cores_reserved, cores,
                    &format!("cores reserved {} of {}", layout::cores(cores_reserved), layout::cores(cores))))
                (layout::gauge("Memory reserved", memory_reserved as f64, memory as f64,
                    &format!("memory reserved {} of {}", layout::bytes(memory_reserved), layout::bytes(memory))))
            }
            table.queues {
                thead { tr { th scope="col" { "Queue" } th scope="col" { "Count" } th scope="col" { "Executions" } } }
                tbody {
                    @for (label, list) in queues {
                        tr {
                            th scope="row" { (label) }
                            td { (list.len()) }
                            td { @for id in list.iter().take(30) { a href=(format!("/ui/executions/{id}")) { (id) } " " } @if list.len() > 30 { "…" } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="nodes-title" {
            h2 #nodes-title { "Nodes (" (nodes.len()) ")" }
            @if nodes.is_empty() { p { "No node has registered yet." } }
            div.nodes { @for n in &nodes { (node_row(&s, n)) } }
        }
        section aria-labelledby="coord-title" {
            h2 #coord-title { "Coordinators" }
            p { "This is " strong { (members.name) } " (" (members.role) "), term " (members.term)
                ", applied index " (members.applied_index.unwrap_or(0)) "." }
            table {
                thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Address" } th scope="col" { "Role" } } }
                tbody {
                    @for m in &members.members {
                        tr {
                            td { (m.id) }
                            td { (m.name) }
                            td { (m.addr) }
                            td {
                                @if members.leader == Some(m.id) { strong { "leader" } }
                                @else if m.voter { "follower" } @else { "learner" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&s, Nav::Status, "Cluster status", content))
}

fn form_body(pairs: Vec<(&str, Value)>) -> Body {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Body(m)
}

pub async fn eligibility(Path(name): Path<String>, f: Form) -> WebResult<Response> {
    let eligible = f.fields.get("eligible") == Some("true");
    let b = form_body(vec![("eligible", json!(eligible))]);
    nodes::eligibility(f.session.caller, P(name), b).await?;
    Ok(see_other("/ui/status"))
}

pub async fn drain(Path(name): Path<String>, f: Form) -> WebResult<Response> {
    let enable = f.fields.get("enable") == Some("true");
    let mut pairs = vec![("enable", json!(enable))];
    if enable {
        if let Some(d) = f.fields.get("deadline_s").map(str::trim).filter(|d| !d.is_empty()) {
            let d: u64 = d.parse().map_err(|_| HttpError::invalid_field("/deadline_s", "a whole number of seconds"))?;
            pairs.push(("deadline_s", json!(d)));
        }
        pairs.push(("force", json!(f.fields.get("force") == Some("true"))));
    }
    nodes::drain(f.session.caller, P(name), form_body(pairs)).await?;
    Ok(see_other("/ui/status"))
}
