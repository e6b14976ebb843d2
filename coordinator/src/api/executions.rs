//! Executions, their services, endpoints, logs and discovery.

use super::context::{Body, Caller, Ctx, Indexed, ReadParams, WriteReply, created, non_empty, now_ms};
use super::error::{Detail, HttpError, HttpResult};
use super::live::LogRequest;
use super::routes::{P, Q};
use crate::state::{
    AfterCleanup, Applied, Command, Execution, ExecutionId, ExecutionStatus, Quota, Service, ServiceId, State,
};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
pub use zoe_api::execution::{
    DiscoveredHost, Discovery, Endpoint, Endpoints, ExecutionCreated, ExecutionPage, ExecutionPlan,
    ExecutionResubmitted, ExecutionView, ResubmitExecution, ServiceView, StartExecution, TerminateExecution,
    TerminationAccepted, ZAppValid,
};
use zoe_common::service::HostVolume;
use zoe_common::zapp::template::{Placeholder, Template, dns_name};
use zoe_common::zapp::{ZApp, validate_value};

const MAX_NAME: usize = 256;
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

fn detail(s: &State, e: &Execution) -> ExecutionView {
    let kill_at = e.time_start.filter(|_| e.status.is_active()).and_then(|start| {
        let u = s.users.values().find(|u| u.username == e.owner)?;
        let q = s.quotas.get(&u.quota_id)?;
        (q.runtime_limit > 0).then(|| start + q.runtime_limit * 1000)
    });
    ExecutionView {
        service_details: Some(s.services_of(e.id).map(ServiceView::of).collect()),
        kill_at,
        ..ExecutionView::of(e)
    }
}

/// Finds an execution the caller may see: 404 if it does not exist, 403
/// if it is someone else's and the caller may not operate others.
fn visible<'a>(s: &'a State, caller: &Caller, id: ExecutionId) -> HttpResult<&'a Execution> {
    let e = s.executions.get(&id).ok_or_else(|| HttpError::missing("execution", id))?;
    caller.require_touch(&e.owner, format_args!("execution {id}"), "executions")?;
    Ok(e)
}

// ------------------------------------------------------------------ submit

/// Validates a ZApp given in a request body at `prefix` (e.g. `/application`).
pub fn validate_app(v: Option<&Value>, prefix: &str) -> HttpResult<(ZApp, Vec<Detail>)> {
    let Some(v) = v else { return Err(HttpError::invalid_field(prefix, "is required")) };
    let (app, report) = validate_value(v);
    let warnings =
        report.warnings.iter().map(|i| Detail { path: format!("{prefix}{}", i.path), message: i.message.clone() });
    match app {
        Some(app) => Ok((app, warnings.collect())),
        None => {
            let details: Vec<Detail> = report
                .errors
                .iter()
                .map(|i| Detail { path: format!("{prefix}{}", i.path), message: i.message.clone() })
                .collect();
            let first = details.first().map(|d| format!("{}: {}", d.path, d.message)).unwrap_or_default();
            Err(HttpError {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_zapp",
                message: format!("the ZApp has {} problem(s); first: {first}", details.len()),
                details,
                retry_after_s: None,
            })
        }
    }
}

fn check_name(name: &str) -> HttpResult<()> {
    if name.chars().count() > MAX_NAME {
        return Err(HttpError::invalid_field("/name", format!("at most {MAX_NAME} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(HttpError::invalid_field("/name", "must not contain control characters"));
    }
    Ok(())
}

/// The `Idempotency-Key` request header, if any: 1 to 255 visible ASCII
/// characters.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> HttpResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let bad = || HttpError::invalid_field("Idempotency-Key", "1 to 255 visible ASCII characters");
    let k = v.to_str().map_err(|_| bad())?;
    if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(k.to_string()))
}

/// What a ZApp may take from the host, by the caller's role: a raw host
/// path reads and writes whatever the agent can (the CA key, other users'
/// workspaces), the host's network reaches loopback services and sniffs
/// them. `at` is the ZApp's JSON pointer in the request.
fn check_host_access(
    caller: &Caller,
    app: &ZApp,
    at: &str,
    registries: &[String],
    volumes: &BTreeMap<String, Vec<HostVolume>>,
) -> HttpResult<()> {
    let caps = caller.caps();
    for (i, g) in app.services.iter().enumerate() {
        // The validator already parsed every image; one that does not parse
        // here was refused before.
        if let Ok(r) = zoe_common::image::ImageRef::parse(&g.image)
            && !r.registry_allowed(registries)
        {
            return Err(HttpError::forbidden_field(
                &format!("{at}/services/{i}/image"),
                format!("registry {} is not in this cluster's allow-list ([api] registries)", r.registry()),
            ));
        }
        for (j, v) in g.volumes.iter().enumerate() {
            let here = format!("{at}/services/{i}/volumes/{j}");
            if v.path.is_some() && !caps.can_mount_host_paths {
                return Err(HttpError::forbidden_field(
                    &format!("{here}/path"),
                    format!(
                        "role {} may not mount host paths (needs can_mount_host_paths): name a host volume the nodes offer instead; the user's workspace is mounted at {} without a volume",
                        caller.role.name,
                        zoe_common::zapp::WORKSPACE_MOUNT
                    ),
                ));
            }
            if let Some(name) = &v.host_volume {
                check_host_volume(caller, volumes, name, &format!("{here}/host_volume"))?;
            }
        }
        if g.network.as_deref() == Some(zoe_common::service::NETWORK_HOST) && !caps.can_use_host_network {
            return Err(HttpError::forbidden_field(
                &format!("{at}/services/{i}/network"),
                format!("role {} may not use the host's network (needs can_use_host_network)", caller.role.name),
            ));
        }
    }
    Ok(())
}

/// A host volume must be offered to the caller by at least one node
/// (placement then keeps to those nodes): otherwise the execution would
/// wait for ever.
pub(super) fn check_host_volume(
    caller: &Caller,
    volumes: &BTreeMap<String, Vec<HostVolume>>,
    name: &str,
    at: &str,
) -> HttpResult<()> {
    match volumes.get(name) {
        None => Err(HttpError::invalid_field(at, format!("no node offers a host volume named `{name}`"))),
        Some(offers) if !offers.iter().any(|v| v.allows(&caller.user.username, &caller.role.name)) => {
            Err(HttpError::forbidden_field(
                at,
                format!(
                    "host volume `{name}` is not offered to user {} or role {}",
                    caller.user.username, caller.role.name
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

/// Every node's host volumes by name (a volume's definition may differ
/// from node to node).
pub(super) fn host_volumes(st: &crate::state::State) -> BTreeMap<String, Vec<HostVolume>> {
    let mut by_name: BTreeMap<String, Vec<HostVolume>> = BTreeMap::new();
    for n in st.nodes.values() {
        for v in n.host_volumes.values() {
            by_name.entry(v.name.clone()).or_default().push(v.clone());
        }
    }
    by_name
}

/// Without `can_customize_resources`, no instance may ask (as `min` or
/// `max`, an absent `max` being no limit at all) more than the quota's
/// per-service ceilings: 403 naming the field.
fn check_ceilings(caller: &Caller, quota: Option<&Quota>, app: &ZApp, at: &str) -> HttpResult<()> {
    let Some(q) = quota else { return Ok(()) };
    if caller.caps().can_customize_resources || (q.service_cores.0 == 0 && q.service_memory == 0) {
        return Ok(());
    }
    let refuse = |path: String, what: String| {
        HttpError::forbidden_field(
            &path,
            format!(
                "{what}, above quota `{}`'s per-service ceiling (changing it needs can_customize_resources)",
                q.name
            ),
        )
    };
    for (i, g) in app.services.iter().enumerate() {
        let r = &g.resources;
        let p = |k: &str, m: &str| format!("{at}/services/{i}/resources/{k}/{m}");
        if q.service_cores.0 > 0 {
            let c = q.service_cores;
            if let Some(min) = r.cores.min.filter(|m| *m > c) {
                return Err(refuse(p("cores", "min"), format!("{min} cores asked, {c} allowed")));
            }
            match r.cores.max {
                Some(max) if max > c => {
                    return Err(refuse(p("cores", "max"), format!("{max} cores asked, {c} allowed")));
                }
                None => return Err(refuse(p("cores", "max"), format!("no core limit asked, {c} allowed"))),
                Some(_) => {}
            }
        }
        if q.service_memory > 0 {
            let m = q.service_memory;
            let human = zoe_common::resources::human_bytes;
            for (key, v) in [("min", r.memory.min), ("max", r.memory.max)] {
                if let Some(v) = v.filter(|v| *v > m) {
                    return Err(refuse(p("memory", key), format!("{} asked, {} allowed", human(v), human(m))));
                }
            }
            // No max and no min: the node's default limit, which the
            // ceiling does not bound.
            if r.memory.max.is_none() && r.memory.min.is_none() {
                return Err(refuse(p("memory", "max"), format!("no memory limit asked, {} allowed", human(m))));
            }
        }
    }
    Ok(())
}

/// What the caller's role and quota allow a ZApp (registries, host
/// access, per-service ceilings), with the default memory limit set: the
/// checks of a submission, also made on each step of a workflow when it is
/// created, since its steps are submitted later without a caller.
pub fn admit_app(ctx: &Ctx, caller: &Caller, app: ZApp, at: &str) -> HttpResult<ZApp> {
    let api = &ctx.coord().config().api;
    let uses_volumes = app.services.iter().any(|g| g.volumes.iter().any(|v| v.host_volume.is_some()));
    let ((quota, volumes), _) = ctx.coord().read_local(|s| {
        (s.quotas.get(&caller.user.quota_id).cloned(), if uses_volumes { host_volumes(s) } else { BTreeMap::new() })
    });
    check_host_access(caller, &app, at, &api.registries, &volumes)?;
    let mut app = app;
    let ceiling = quota.as_ref().map_or(0, |q| q.service_memory);
    app.set_default_memory_limit(if ceiling > 0 && !caller.caps().can_customize_resources {
        api.memory_default_bytes.min(ceiling)
    } else {
        api.memory_default_bytes
    });
    check_ceilings(caller, quota.as_ref(), &app, at)?;
    Ok(app)
}

async fn submit_app(
    ctx: &Ctx,
    caller: &Caller,
    name: String,
    app: ZApp,
    idempotency_key: Option<String>,
    at: &str,
) -> HttpResult<(ExecutionId, u64)> {
    check_name(&name)?;
    let app = admit_app(ctx, caller, app, at)?;
    let size = app.size as f64;
    let owner = caller.user.username.clone();
    let cmd = Command::SubmitExecution { idempotency_key, name, owner, description: app, size, time: now_ms() };
    // The quota is checked where it is exact, in the state machine as the
    // submission applies (a check before the write could not see concurrent
    // submissions, and would cost a quorum round trip).
    let w = ctx.coord().write(cmd).await?;
    match w.result {
        Ok(Applied::Created(id)) => Ok((id, w.index)),
        Err(e) => Err(e.into()),
        Ok(other) => Err(HttpError::internal(format!("submission applied as {other:?}"))),
    }
}

/// `POST /executions`. With an `Idempotency-Key` header, a retry of the
/// same request (after a timeout, a lost connection, a 503) answers the
/// first one's execution instead of creating another.
pub async fn submit(
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: Body,
) -> HttpResult<WriteReply<ExecutionCreated>> {
    let ctx = &caller.ctx;
    let key = idempotency_key(&headers)?;
    let req: StartExecution = body.parse()?;
    let name = non_empty("/name", req.name)?;
    let (app, warnings) = validate_app(Some(&req.application), "/application")?;
    let (id, index) = submit_app(ctx, &caller, name, app, key, "/application").await?;
    Ok(created(ExecutionCreated { id, warnings }, index))
}

pub async fn validate(_caller: Caller, body: Body) -> HttpResult<axum::Json<ZAppValid>> {
    let v = Value::Object(body.0);
    let (_, warnings) = validate_app(Some(&v), "")?;
    Ok(axum::Json(ZAppValid { valid: true, warnings }))
}

/// `POST /zapp/plan`: a dry run of submitting the ZApp now, as the caller:
/// one pass on a copy of the state with the leader's live view of the
/// nodes, then, if it would wait, a short simulation of the queue for a
/// start estimate (`scheduler::dry_run`). Nothing is written.
pub async fn plan(caller: Caller, body: Body) -> HttpResult<axum::Json<ExecutionPlan>> {
    let ctx = &caller.ctx;
    let v = Value::Object(body.0);
    let (app, _) = validate_app(Some(&v), "")?;
    // What a submission would be refused (registries, host access, quota
    // ceilings) is refused here too, with the same 4xx, not planned.
    let app = admit_app(ctx, &caller, app, "")?;
    let nodes = ctx.live_nodes().await.ok_or_else(|| {
        HttpError::unavailable("no_live_source", "a dry run needs the leader's live view of the nodes")
    })?;
    let platform = crate::scheduler::Platform { nodes, ..Default::default() };
    let cfg = ctx.coord().config().leader.scheduler.clone();
    let owner = caller.user.username.clone();
    // A copy, so that the simulation holds no lock on the replica.
    let (state, _) = ctx.coord().read_local(|s| s.clone());
    let now = now_ms();
    let r = tokio::task::spawn_blocking(move || crate::scheduler::dry_run(&state, &platform, &cfg, app, &owner, now))
        .await
        .map_err(|e| HttpError::internal(format!("dry run: {e}")))??;
    Ok(axum::Json(ExecutionPlan {
        fits_now: r.fits_now,
        never_fits: r.never_fits,
        placements: r.placements.into_iter().map(|(s, n)| format!("{s}@{n}")).collect(),
        queue_position: r.queue_position as u64,
        queue_length: r.queue_length as u64,
        reason: r.reason,
        start_in_s: r.start_in_s,
        estimate: r.estimate,
    }))
}

pub async fn resubmit(
    caller: Caller,
    P(id): P<ExecutionId>,
    body: Body,
) -> HttpResult<WriteReply<ExecutionResubmitted>> {
    let ctx = &caller.ctx;
    let req: ResubmitExecution = body.parse()?;
    let (old_name, app) =
        ctx.read_fresh(|s| visible(s, &caller, id).map(|e| (e.name.clone(), e.description.clone()))).await??;
    let name = req.name.unwrap_or(old_name);
    let (new_id, index) = submit_app(ctx, &caller, name, app, None, "").await?;
    Ok(created(ExecutionResubmitted { id: new_id, resubmitted_from: id }, index))
}

// ------------------------------------------------------------------- reads

super::context::list_query! {
    pub struct ListParams {
        /// Comma-separated statuses.
        pub status: Option<String>,
        pub name: Option<String>,
        pub owner: Option<String>,
        pub submitted_after: Option<u64>,
        pub submitted_before: Option<u64>,
        pub started_after: Option<u64>,
        pub started_before: Option<u64>,
        pub ended_after: Option<u64>,
        pub ended_before: Option<u64>,
        pub limit: Option<usize>,
        /// Only executions with a smaller id (the `next_cursor` of the previous page).
        pub cursor: Option<u64>,
    }
}

fn in_range(t: Option<u64>, after: Option<u64>, before: Option<u64>) -> bool {
    match (after, before) {
        (None, None) => true,
        _ => t.is_some_and(|t| after.is_none_or(|a| t >= a) && before.is_none_or(|b| t < b)),
    }
}

pub async fn list(caller: Caller, Q(p): Q<ListParams>) -> HttpResult<Indexed<ExecutionPage>> {
    let ctx = &caller.ctx;
    let statuses = match &p.status {
        None => None,
        Some(s) => Some(
            s.split(',')
                .map(|x| {
                    ExecutionStatus::parse(x.trim()).ok_or_else(|| {
                        HttpError::invalid_field(
                            "/status",
                            format!(
                                "unknown status `{x}`; one of: {}",
                                ExecutionStatus::ALL.map(|s| s.as_str()).join(", ")
                            ),
                        )
                    })
                })
                .collect::<HttpResult<Vec<_>>>()?,
        ),
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(HttpError::invalid_field("/limit", format!("between 1 and {MAX_LIMIT}")));
    }
    // Without can_operate_others a user lists only their own executions.
    let owner = if caller.caps().can_operate_others { p.owner.clone() } else { Some(caller.user.username.clone()) };
    if let Some(o) = &p.owner
        && !caller.caps().can_operate_others
        && *o != caller.user.username
    {
        return Err(HttpError::forbidden(format!(
            "user {} may only list their own executions (needs can_operate_others)",
            caller.user.username
        )));
    }
    let rp = p.read();
    ctx.read(&rp, |s| {
        let upper = p.cursor.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut next_cursor = None;
        for e in s.executions.range(..upper).rev().map(|(_, e)| e) {
            let keep = owner.as_ref().is_none_or(|o| e.owner == *o)
                && p.name.as_ref().is_none_or(|n| e.name == *n)
                && statuses.as_ref().is_none_or(|st| st.contains(&e.status))
                && in_range(Some(e.time_submit), p.submitted_after, p.submitted_before)
                && in_range(e.time_start, p.started_after, p.started_before)
                && in_range(e.time_end, p.ended_after, p.ended_before);
            if !keep {
                continue;
            }
            if out.len() == limit {
                next_cursor = out.last().map(|x: &ExecutionView| x.id);
                break;
            }
            out.push(ExecutionView::of(e));
        }
        ExecutionPage { executions: out, next_cursor }
    })
    .await
}

pub async fn get(caller: Caller, P(id): P<ExecutionId>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<ExecutionView>> {
    let ctx = &caller.ctx;
    ctx.read_checked(&q, |s| visible(s, &caller, id).map(|e| detail(s, e))).await
}

pub async fn app(caller: Caller, P(id): P<ExecutionId>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<ZApp>> {
    let ctx = &caller.ctx;
    ctx.read_checked(&q, |s| visible(s, &caller, id).map(|e| e.description.clone())).await
}

/// URLs from each port's `url_template`, filled with the address and port
/// the container is published at. Ports not published (yet) are left out.
fn endpoints(s: &State, e: &Execution, proxy: Option<&str>) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for svc in s.services_of(e.id) {
        let Some(group) = e.description.services.get(svc.group_index) else { continue };
        for published in &svc.ports {
            let Some(port) = group.ports.iter().find(|p| p.port_number == published.port_number) else { continue };
            let Ok(t) = Template::parse(&port.url_template) else { continue };
            let ip_port = format!("{}:{}", published.host_ip, published.host_port);
            let url = t.render(|p| match p {
                Placeholder::IpPort => ip_port.clone(),
                // `url` is the direct address; `proxy_url` the proxied one
                // (Zoe failed on this placeholder without Træfik).
                Placeholder::ProxyPath => String::new(),
                other => other.to_string(),
            });
            let proxied = group.proxied_ports().any(|p| p == port.port_number);
            let proxy_url = proxy
                .filter(|_| proxied)
                .map(|base| format!("{base}{}/", crate::proxy::target::proxy_path(e.id, &svc.name, port.port_number)));
            out.push(Endpoint {
                service: svc.name.clone(),
                port: port.name.clone(),
                protocol: port.protocol.as_str().to_string(),
                url,
                proxy_url,
            });
        }
    }
    out
}

pub async fn get_endpoints(
    caller: Caller,
    P(id): P<ExecutionId>,
    Q(q): Q<ReadParams>,
) -> HttpResult<Indexed<Endpoints>> {
    let ctx = &caller.ctx;
    let proxy = ctx.urls().proxy;
    ctx.read_checked(&q, |s| {
        visible(s, &caller, id).map(|e| Endpoints {
            execution_id: id,
            status: e.status.as_str().to_string(),
            endpoints: endpoints(s, e, proxy.as_deref()),
        })
    })
    .await
}

// ------------------------------------------------------------------ writes

pub async fn terminate(
    caller: Caller,
    P(id): P<ExecutionId>,
    body: Body,
) -> HttpResult<WriteReply<TerminationAccepted>> {
    let ctx = &caller.ctx;
    let req: TerminateExecution = body.parse()?;
    ctx.read_fresh(|s| visible(s, &caller, id).map(|_| ())).await??;
    let reason = match req.reason {
        Some(r) => format!("terminated by {}: {r}", caller.user.username),
        None => format!("terminated by {} through the API", caller.user.username),
    };
    let (_, index) =
        ctx.write(Command::TerminateExecution { id, reason, after: AfterCleanup::Terminated, time: now_ms() }).await?;
    let status = ctx.read_after(index, |s| s.executions.get(&id).map(|e| e.status.as_str().to_string())).await;
    Ok(WriteReply { status: StatusCode::ACCEPTED, value: TerminationAccepted { id, status }, index })
}

pub async fn delete(caller: Caller, P(id): P<ExecutionId>) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    caller.require(caller.caps().can_delete_executions, "delete executions (needs can_delete_executions)")?;
    ctx.read_fresh(|s| visible(s, &caller, id).map(|_| ())).await??;
    let (_, index) = ctx.write(Command::DeleteExecution { id }).await?;
    Ok(super::context::no_content(index))
}

// ---------------------------------------------------------------- services

fn visible_service<'a>(s: &'a State, caller: &Caller, id: ServiceId) -> HttpResult<&'a Service> {
    let svc = s.services.get(&id).ok_or_else(|| HttpError::missing("service", id))?;
    visible(s, caller, svc.execution_id)?;
    Ok(svc)
}

pub async fn get_service(caller: Caller, P(id): P<ServiceId>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<ServiceView>> {
    let ctx = &caller.ctx;
    ctx.read_checked(&q, |s| visible_service(s, &caller, id).map(ServiceView::of)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    pub offset: Option<u64>,
    pub follow: Option<bool>,
}

/// The service's log as `text/plain`, streamed; with `follow=true` the
/// stream stays open until the service ends.
pub async fn logs(caller: Caller, P(id): P<ServiceId>, Q(p): Q<LogParams>) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    let (found, _) = ctx.coord().read_local(|s| visible_service(s, &caller, id).cloned());
    let svc = found?;
    let live = ctx.live("reading service logs")?;
    let req = LogRequest { offset: p.offset.unwrap_or(0), follow: p.follow.unwrap_or(false) };
    let stream = live.service_logs(&svc, req).await.map_err(|e| match e {
        super::live::LiveError::NotFound(m) => HttpError::not_found(m),
        super::live::LiveError::Unavailable(m) => HttpError::unavailable("agent_unavailable", m),
        super::live::LiveError::Failed(m) => HttpError::unavailable("agent_failed", m),
    })?;
    let body = axum::body::Body::from_stream(stream.map(|c| {
        c.map(|c| c.data).map(Ok::<_, std::io::Error>).unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }));
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// DNS names of a group's instances (`all` for every group).
pub async fn discovery(
    caller: Caller,
    P((id, group)): P<(ExecutionId, String)>,
    Q(q): Q<ReadParams>,
) -> HttpResult<Indexed<Discovery>> {
    let ctx = &caller.ctx;
    ctx.read_checked(&q, |s| {
        let e = visible(s, &caller, id)?;
        if group != "all" && !e.description.services.iter().any(|g| g.name == group) {
            return Err(HttpError::not_found(format!("execution {id} has no service group `{group}`")));
        }
        let members: Vec<_> = s.services_of(id).filter(|svc| group == "all" || svc.group == group).collect();
        let names: Vec<String> = members.iter().map(|svc| dns_name(&svc.name, id)).collect();
        // The same names the containers' /etc/hosts carry, with the
        // addresses behind them (none for an instance not running).
        let hosts: Vec<DiscoveredHost> = members
            .iter()
            .map(|svc| DiscoveredHost {
                name: svc.name.clone(),
                dns_name: dns_name(&svc.name, id),
                ip_address: svc.ip_address.clone(),
            })
            .collect();
        Ok(Discovery { service_type: group.clone(), execution_id: id, dns_names: names, hosts })
    })
    .await
}
