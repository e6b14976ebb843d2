//! Home, executions (list, upload, inspect with live updates, actions) and
//! the service log viewer. Reads and actions go through the REST API's
//! handlers with the session's caller.

use super::layout::{self, Nav, button, csrf, page, status, time};
use super::session::{Form, Session};
use super::{Web, WebResult, see_other};
use crate::api::HttpError;
use crate::api::context::{Body, ReadParams};
use crate::api::executions::{self, Endpoint, ExecutionView, ListParams, LogParams, ServiceView};
use crate::api::routes::{P, Q};
use crate::state::ExecutionStatus;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Executions per page of the list.
pub const PAGE_SIZE: usize = 25;
const ACTIVE: &str = "submitted,queued,starting,running,cleaning up";

fn list_params(owner: Option<String>, status: Option<&str>, limit: usize, cursor: Option<u64>) -> ListParams {
    ListParams { owner, status: status.map(str::to_string), limit: Some(limit), cursor, ..ListParams::default() }
}

fn body(v: Value) -> Body {
    Body(match v {
        Value::Object(m) => m,
        _ => Map::new(),
    })
}

// -------------------------------------------------------------------- home

pub async fn home(State(web): State<Web>, s: Session) -> WebResult<Html<String>> {
    let ctx = web.ctx();
    let me = s.caller.user.username.clone();
    let active = executions::list(s.caller.clone(), Q(list_params(Some(me.clone()), Some(ACTIVE), 100, None)))
        .await?
        .value
        .executions;
    let mut kill_at = Vec::new();
    for e in &active {
        let d = executions::get(s.caller.clone(), P(e.id), Q(ReadParams::default())).await?;
        kill_at.push(d.value.kill_at);
    }
    let recent =
        executions::list(s.caller.clone(), Q(list_params(Some(me.clone()), None, 5, None))).await?.value.executions;
    let qid = s.caller.user.quota_id;
    let ((quota, used), _) = ctx.coord().read_local(|st| (st.quotas.get(&qid).cloned(), crate::quota::usage(st, &me)));
    let caps = s.caller.caps();
    let limit = |n: f64, text: String| if n > 0.0 { text } else { "unlimited".to_string() };
    let content = html! {
        section aria-labelledby="quota-title" {
            h2 #quota-title { "Quota" }
            @match &quota {
                None => p { "Your quota no longer exists; ask an admin." }
                Some(q) => {
                    p.muted { "Quota " strong { (q.name) } "; running executions count until they are terminated." }
                    div.gauges {
                        (layout::gauge("Executions", used.executions as f64, q.concurrent_executions as f64,
                            &format!("{} of {}", used.executions, limit(q.concurrent_executions as f64, q.concurrent_executions.to_string()))))
                        (layout::gauge("Cores", used.cores.as_cores(), q.cores.as_cores(),
                            &format!("{} of {}", layout::cores(used.cores.as_cores()), limit(q.cores.as_cores(), layout::cores(q.cores.as_cores())))))
                        (layout::gauge("Memory", used.memory as f64, q.memory as f64,
                            &format!("{} of {}", layout::bytes(used.memory), limit(q.memory as f64, layout::bytes(q.memory)))))
                    }
                    p { "Runtime limit: "
                        @if q.runtime_limit > 0 { (format!("{} h", q.runtime_limit as f64 / 3600.0)) } @else { "none" } }
                }
            }
        }
        section aria-labelledby="running-title" {
            h2 #running-title { "Your active executions" }
            @if active.is_empty() {
                p { "None. Start one from the " a href="/ui/shop" { "ZApp shop" } "." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "ZApp" } th scope="col" { "Status" }
                        th scope="col" { "Started" } th scope="col" { "Killed at (runtime limit)" } } }
                    tbody {
                        @for (e, k) in active.iter().zip(&kill_at) {
                            tr {
                                td { a href=(format!("/ui/executions/{}", e.id)) { (e.name) } }
                                td { (e.zapp) }
                                td { (status(&e.status)) }
                                td { (time(e.time_start)) }
                                td { (time(*k)) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="recent-title" {
            h2 #recent-title { "Recent executions" }
            (exec_table(&recent, false))
            p { a href="/ui/executions" { "All executions" } }
        }
        section aria-labelledby="role-title" {
            h2 #role-title { "Your role: " (s.caller.role.name) }
            ul.caps {
                @for (flag, on) in crate::state::Capabilities::FLAGS.iter().map(|f| (f.label, caps.get(f.name).unwrap_or(false))) {
                    li class=(if on { "yes" } else { "no" }) { (if on { "may " } else { "may not " }) (flag) }
                }
            }
        }
    };
    Ok(page(&s, Nav::Home, &format!("Welcome, {}", s.caller.user.username), content))
}

fn exec_table(list: &[ExecutionView], owner: bool) -> Markup {
    html! {
        @if list.is_empty() {
            p { "No executions." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Name" }
                    @if owner { th scope="col" { "Owner" } }
                    th scope="col" { "ZApp" } th scope="col" { "Status" } th scope="col" { "Submitted" } th scope="col" { "Ended" }
                } }
                tbody {
                    @for e in list {
                        tr {
                            td { (e.id) }
                            td { a href=(format!("/ui/executions/{}", e.id)) { (e.name) } }
                            @if owner { td { (e.owner) } }
                            td { (e.zapp) }
                            td { (status(&e.status)) }
                            td { (time(Some(e.time_submit))) }
                            td { (time(e.time_end)) }
                        }
                    }
                }
            }
        }
    }
}

// -------------------------------------------------------------------- list

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub cursor: Option<u64>,
    pub owner: Option<String>,
}

pub async fn list(s: Session, Query(q): Query<ListQuery>) -> WebResult<Html<String>> {
    let filter = q.status.as_deref().filter(|x| !x.is_empty());
    let statuses = match filter {
        Some("active") => Some(ACTIVE),
        other => other,
    };
    let others = s.caller.caps().can_operate_others;
    let owner = if others { q.owner.clone().filter(|o| !o.is_empty()) } else { Some(s.caller.user.username.clone()) };
    let pg =
        executions::list(s.caller.clone(), Q(list_params(owner.clone(), statuses, PAGE_SIZE, q.cursor))).await?.value;
    let link = |cursor: Option<u64>| {
        let mut parts = Vec::new();
        if let Some(f) = filter {
            parts.push(format!("status={}", enc(f)));
        }
        if let (true, Some(o)) = (others, &owner) {
            parts.push(format!("owner={}", enc(o)));
        }
        if let Some(c) = cursor {
            parts.push(format!("cursor={c}"));
        }
        format!("/ui/executions?{}", parts.join("&"))
    };
    let mut options = vec![("", "all"), ("active", "active")];
    options.extend(ExecutionStatus::ALL.iter().map(|st| (st.as_str(), st.as_str())));
    let content = html! {
        form.filters method="get" action="/ui/executions" {
            label for="status" { "Status" }
            select #status name="status" {
                @for (v, label) in &options {
                    option value=(v) selected[filter.unwrap_or("") == *v] { (label) }
                }
            }
            @if others {
                label for="owner" { "Owner" }
                input #owner name="owner" value=(owner.clone().unwrap_or_default()) placeholder="everyone";
            }
            button type="submit" { "Filter" }
        }
        (exec_table(&pg.executions, others))
        nav.pager aria-label="Pages" {
            @if q.cursor.is_some() { a href=(link(None)) { "« Newest" } }
            @if let Some(c) = pg.next_cursor { a href=(link(Some(c))) { "Older »" } }
        }
        section aria-labelledby="upload-title" {
            h2 #upload-title { "Start from a ZApp file" }
            form.card method="post" action="/ui/executions" enctype="multipart/form-data" {
                (csrf(&s))
                label for="exec-name" { "Execution name" }
                input #exec-name name="name" required maxlength="256";
                label for="zapp-file" { "ZApp JSON file" }
                input #zapp-file name="zapp" type="file" accept=".json,application/json" required;
                button type="submit" { "Start" }
            }
        }
    };
    Ok(page(&s, Nav::Executions, "Executions", content))
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn upload(f: Form) -> WebResult<Response> {
    let name = f.fields.get("name").unwrap_or("").to_string();
    let file =
        f.fields.file("zapp").ok_or_else(|| HttpError::invalid_field("/application", "choose a ZApp JSON file"))?;
    let app: Value = serde_json::from_slice(file).map_err(|e| {
        HttpError::invalid_field(
            "/application",
            format!("not valid JSON: line {}, column {}: {e}", e.line(), e.column()),
        )
    })?;
    submit(&f.session, name, app).await
}

/// Submits through the API's handler and goes to the new execution's page.
pub async fn submit(s: &Session, name: String, app: Value) -> WebResult<Response> {
    let r = executions::submit(
        s.caller.clone(),
        axum::http::HeaderMap::new(),
        body(json!({ "name": name, "application": app })),
    )
    .await?;
    let id = r.value.id;
    Ok(see_other(&format!("/ui/executions/{id}")))
}

// ----------------------------------------------------------------- inspect

struct Inspect {
    detail: ExecutionView,
    endpoints: Vec<Endpoint>,
    index: u64,
}

async fn inspect_data(s: &Session, id: u64, rp: ReadParams) -> WebResult<Inspect> {
    let d = executions::get(s.caller.clone(), P(id), Q(rp)).await?;
    let ep = executions::get_endpoints(s.caller.clone(), P(id), Q(ReadParams::default())).await?;
    let endpoints = ep.value.endpoints;
    Ok(Inspect { detail: d.value, endpoints, index: d.index })
}

fn parts(s: &Session, i: &Inspect) -> Vec<(&'static str, Markup)> {
    vec![
        ("summary", summary_part(&i.detail)),
        ("actions", actions_part(s, &i.detail)),
        ("endpoints", endpoints_part(&i.endpoints)),
        ("services", services_part(i.detail.service_details.as_deref().unwrap_or_default())),
    ]
}

fn summary_part(d: &ExecutionView) -> Markup {
    let e = d;
    html! {
        dl.facts {
            dt { "Status" } dd { (status(&e.status)) }
            dt { "Owner" } dd { (e.owner) }
            dt { "ZApp" } dd { (e.zapp) }
            dt { "Submitted" } dd { (time(Some(e.time_submit))) }
            dt { "Started" } dd { (time(e.time_start)) }
            dt { "Ended" } dd { (time(e.time_end)) }
            @if d.kill_at.is_some() { dt { "Will be killed at" } dd { (time(d.kill_at)) } }
            @if let Some(m) = &e.error_message { dt { "Reason" } dd { (m) } }
        }
    }
}

fn actions_part(s: &Session, d: &ExecutionView) -> Markup {
    let e = d;
    let active = ExecutionStatus::parse(&e.status).is_some_and(|st| st.is_active());
    html! {
        div.actions {
            @if active { (button(s, &format!("/ui/executions/{}/terminate", e.id), "Terminate", "danger")) }
            (button(s, &format!("/ui/executions/{}/restart", e.id), "Start again", ""))
            @if !active && s.caller.caps().can_delete_executions {
                (button(s, &format!("/ui/executions/{}/delete", e.id), "Delete", "danger"))
            }
            a.button href=(format!("/ui/executions/{}/zapp.json", e.id)) download { "Download ZApp JSON" }
        }
    }
}

/// The path of a proxy URL (`https://proxy:5002/7/nb0/8888/` → `/7/nb0/8888/`).
fn proxy_path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string())
}

/// `part()`, or a muted line saying `none` when there is nothing to show.
fn or_none(empty: bool, none: &str, part: impl FnOnce() -> Markup) -> Markup {
    if empty {
        html! { p.muted { (none) } }
    } else {
        part()
    }
}

fn endpoints_part(eps: &[Endpoint]) -> Markup {
    or_none(eps.is_empty(), "No published ports (yet).", || {
        html! {
            ul.endpoints {
                @for ep in eps {
                    li {
                        (ep.service) " · " (ep.port) " (" (ep.protocol) "): "
                        @if let Some(p) = &ep.proxy_url {
                            a.button href=(super::proxy::link(&proxy_path_of(p))) target="_blank" rel="noopener" { "Open" }
                            " · direct: "
                        }
                        (layout::link(&ep.url))
                    }
                }
            }
        }
    })
}

fn services_part(svcs: &[ServiceView]) -> Markup {
    or_none(svcs.is_empty(), "No services yet.", || {
        html! {
            table.services {
                thead { tr {
                    th scope="col" { "Service" } th scope="col" { "Kind" } th scope="col" { "Status" }
                    th scope="col" { "Container" } th scope="col" { "Node" } th scope="col" { "Restarts" }
                    th scope="col" { "Exit" } th scope="col" { "Log" }
                } }
                tbody {
                    @for v in svcs {
                        tr {
                            td { (v.name) }
                            td { (if v.essential { "essential" } else { "elastic" }) }
                            td { (status(&v.status)) }
                            td { (v.backend_status) }
                            td { (v.node.as_deref().unwrap_or("–")) }
                            td { (v.restart_count) }
                            td {
                                @if let Some(c) = v.last_exit_code { "code " (c) " " }
                                @if let Some(r) = &v.last_exit_reason { (r) }
                                @if let Some(m) = &v.error_message { span.error { (m) } }
                            }
                            td { a href=(format!("/ui/services/{}/logs", v.id)) aria-label=(format!("Log of {}", v.name)) { "Log" } }
                        }
                    }
                }
            }
        }
    })
}

pub async fn inspect(s: Session, Path(id): Path<u64>) -> WebResult<Html<String>> {
    let i = inspect_data(&s, id, ReadParams::default()).await?;
    let p = parts(&s, &i);
    let get = |name: &str| p.iter().find(|(n, _)| *n == name).map(|(_, m)| m.clone()).unwrap_or_default();
    let content = html! {
        div data-live=(format!("/ui/executions/{id}/live")) data-index=(i.index) {
            p.live-note.muted aria-live="polite" data-live-state { "Updates live." }
            div data-part="summary" { (get("summary")) }
            div data-part="actions" { (get("actions")) }
            section aria-labelledby="ep-title" {
                h2 #ep-title { "Endpoints" }
                div data-part="endpoints" { (get("endpoints")) }
            }
            section aria-labelledby="svc-title" {
                h2 #svc-title { "Services" }
                div data-part="services" { (get("services")) }
            }
        }
    };
    Ok(page(&s, Nav::Executions, &format!("Execution {id}: {}", i.detail.name), content))
}

#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    pub index: Option<u64>,
}

/// The inspect page's parts as HTML, once the state passes `index` (a
/// blocking query, at most 25 s): `{"index": N, "parts": {name: html}}`.
pub async fn live(s: Session, Path(id): Path<u64>, Query(q): Query<LiveQuery>) -> WebResult<Response> {
    let rp = ReadParams { consistent: None, index: q.index, wait: Some("25s".into()) };
    let i = inspect_data(&s, id, rp).await?;
    let parts: Map<String, Value> =
        parts(&s, &i).into_iter().map(|(n, m)| (n.to_string(), Value::String(m.into_string()))).collect();
    Ok(axum::Json(json!({ "index": i.index, "status": i.detail.status, "parts": parts })).into_response())
}

pub async fn zapp_json(s: Session, Path(id): Path<u64>) -> WebResult<Response> {
    let app = executions::app(s.caller.clone(), P(id), Q(ReadParams::default())).await?;
    download(&format!("execution-{id}.json"), &app.value)
}

/// A JSON document as a file download.
pub fn download(filename: &str, v: &impl serde::Serialize) -> WebResult<Response> {
    let text = serde_json::to_string_pretty(v).map_err(|e| HttpError::internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        text,
    )
        .into_response())
}

pub async fn terminate(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    executions::terminate(f.session.caller, P(id), body(json!({ "reason": "from the web UI" }))).await?;
    Ok(see_other(&format!("/ui/executions/{id}")))
}

pub async fn restart(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    let r = executions::resubmit(f.session.caller, P(id), body(json!({}))).await?;
    Ok(see_other(&format!("/ui/executions/{}", r.value.id)))
}

pub async fn delete(Path(id): Path<u64>, f: Form) -> WebResult<Response> {
    executions::delete(f.session.caller, P(id)).await?;
    Ok(see_other("/ui/executions"))
}

// -------------------------------------------------------------------- logs

pub async fn log_page(s: Session, Path(id): Path<u64>) -> WebResult<Html<String>> {
    let v = executions::get_service(s.caller.clone(), P(id), Q(ReadParams::default())).await?.value;
    let content = html! {
        p {
            "Service " strong { (v.name) } " of "
            a href=(format!("/ui/executions/{}", v.execution_id)) { "execution " (v.execution_id) }
            ", " (status(&v.status)) " on " (v.node.as_deref().unwrap_or("no node yet")) "."
        }
        p.muted data-log-state aria-live="polite" { "Connecting…" }
        pre.log tabindex="0" role="log" aria-label=(format!("Log of {}", v.name)) data-log=(format!("/ui/services/{id}/log")) {}
        noscript { p { "Without JavaScript, open " a href=(format!("/ui/services/{id}/log")) { "the log as text" } "." } }
    };
    Ok(page(&s, Nav::Executions, &format!("Log of {}", v.name), content))
}

#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    pub offset: Option<u64>,
    pub follow: Option<bool>,
}

/// The log as text, streamed (followed unless `follow=false`). Errors are
/// plain text too: the log viewer shows them as they are.
pub async fn log_stream(s: Session, Path(id): Path<u64>, Query(q): Query<LogQuery>) -> Response {
    let p = LogParams { offset: q.offset, follow: Some(q.follow.unwrap_or(true)) };
    match executions::logs(s.caller, P(id), Q(p)).await {
        Ok(mut r) => {
            // The stream must reach the browser as it comes.
            r.headers_mut().insert("x-accel-buffering", header::HeaderValue::from_static("no"));
            r
        }
        Err(e) => (e.status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], e.message).into_response(),
    }
}
