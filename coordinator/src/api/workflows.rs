//! Workflows and their runs (docs/workflows.md): documents validated like
//! ZApps (every problem with its JSON pointer), runs started by hand or by
//! the leader's schedule, terminated with their steps.

use super::context::{Body, Caller, Indexed, ReadParams, WriteReply, created, now_ms};
use super::error::{Detail, HttpError, HttpResult};
use super::executions::{admit_app, check_host_volume, host_volumes, idempotency_key};
use super::routes::{P, Q};
use crate::state::{Applied, Command, RunId, RunStatus, State, WorkflowId, WorkflowRecord};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
pub use zoe_api::workflow::{
    AttemptView, InstanceView, RunCreated, RunRequest, RunView, StepView, WorkflowCreated, WorkflowValid, WorkflowView,
};
use zoe_common::workflow::{Trigger, Workflow, validate_value};

/// Validates a workflow document; a 400 lists every problem.
fn validate_doc(v: &Value) -> HttpResult<(Workflow, Vec<Detail>)> {
    let (w, report) = validate_value(v);
    let warnings = report.warnings.iter().map(|i| Detail { path: i.path.clone(), message: i.message.clone() });
    match w {
        Some(w) => Ok((w, warnings.collect())),
        None => {
            let details: Vec<Detail> =
                report.errors.iter().map(|i| Detail { path: i.path.clone(), message: i.message.clone() }).collect();
            let first = details.first().map(|d| format!("{}: {}", d.path, d.message)).unwrap_or_default();
            Err(HttpError {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_workflow",
                message: format!("the workflow has {} problem(s); first: {first}", details.len()),
                details,
                retry_after_s: None,
            })
        }
    }
}

/// A workflow by id, or by name among the caller's own: 404, or 403 when
/// it is someone else's and the caller may not operate others.
fn visible<'a>(s: &'a State, caller: &Caller, key: &str) -> HttpResult<&'a WorkflowRecord> {
    let w = match key.parse::<WorkflowId>() {
        Ok(id) => s.workflows.get(&id),
        Err(_) => s.workflows.values().find(|w| w.doc.name == key && w.owner == caller.user.username),
    }
    .ok_or_else(|| HttpError::missing("workflow", key))?;
    caller.require_touch(&w.owner, format_args!("workflow {key}"), "workflows")?;
    Ok(w)
}

fn visible_run<'a>(s: &'a State, caller: &Caller, id: RunId) -> HttpResult<&'a crate::state::Run> {
    let r = s.runs.get(&id).ok_or_else(|| HttpError::missing("workflow run", id))?;
    caller.require_touch(&r.owner, format_args!("workflow run {id}"), "workflows")?;
    Ok(r)
}

fn view(s: &State, w: &WorkflowRecord) -> WorkflowView {
    let running = s.runs_of(w.id).filter(|r| r.status == RunStatus::Running).count() as u64;
    WorkflowView::of(w, running)
}

/// Fills in the steps given as `{"shop": {"id", "parameters"}}` with the
/// shop entry's ZApp and the parameters (by name), as the shop's form
/// does, so that the stored document holds the ZApp each step runs. The
/// entry must be visible to the caller's role.
async fn resolve_shop(caller: &Caller, doc: &mut Value) -> HttpResult<()> {
    let Some(steps) = doc.get_mut("steps").and_then(Value::as_array_mut) else { return Ok(()) };
    let wanted: Vec<usize> = (0..steps.len())
        .filter(|i| steps[*i].get("shop").is_some_and(Value::is_object) && steps[*i].get("zapp").is_none())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let Some(dir) = caller.ctx.coord().config().api.web.shop_dir.clone() else {
        return Err(HttpError::invalid_field(&format!("/steps/{}/shop", wanted[0]), "this cluster has no ZApp shop"));
    };
    let cat = tokio::task::spawn_blocking(move || crate::web::shop::load(&dir))
        .await
        .map_err(|e| HttpError::internal(format!("reading the shop: {e}")))?;
    for i in wanted {
        let at = format!("/steps/{i}/shop");
        let shop = steps[i]["shop"].as_object().cloned().unwrap_or_default();
        if let Some(k) = shop.keys().find(|k| *k != "id" && *k != "parameters") {
            return Err(HttpError::invalid_field(&format!("{at}/{k}"), "unknown field; one of: id, parameters"));
        }
        let id = shop.get("id").and_then(Value::as_str).ok_or_else(|| {
            HttpError::invalid_field(&format!("{at}/id"), "the shop entry's id (e.g. `hello-0`) is required")
        })?;
        let entry = cat
            .get(id)
            .filter(|e| e.visible_to(&caller.role))
            .ok_or_else(|| HttpError::invalid_field(&format!("{at}/id"), format!("no ZApp `{id}` in the shop")))?;
        let mut fields = std::collections::HashMap::new();
        let params = match shop.get("parameters") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(HttpError::invalid_field(&format!("{at}/parameters"), "must be an object")),
        };
        for (name, v) in &params {
            let here = format!("{at}/parameters/{name}");
            let Some(k) = entry.parameters.iter().position(|p| p.name == *name) else {
                let known: Vec<&str> = entry.parameters.iter().map(|p| p.name.as_str()).collect();
                return Err(HttpError::invalid_field(
                    &here,
                    format!("unknown parameter; one of: {}", known.join(", ")),
                ));
            };
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(HttpError::invalid_field(&here, "must be a string or a number")),
            };
            fields.insert(crate::web::shop::param_field(k), text);
        }
        let app = crate::web::shop::apply(entry, |f| fields.get(f).map(String::as_str)).map_err(|errors| {
            let first = &errors[0];
            let name = first
                .field
                .strip_prefix('p')
                .and_then(|k| k.parse::<usize>().ok())
                .and_then(|k| entry.parameters.get(k))
                .map_or(String::new(), |p| format!("/parameters/{}", p.name));
            HttpError::invalid_field(&format!("{at}{name}"), first.message.clone())
        })?;
        let step = steps[i].as_object_mut().expect("an object");
        step.remove("shop");
        step.insert("zapp".into(), serde_json::to_value(&app).map_err(|e| HttpError::internal(e.to_string()))?);
    }
    Ok(())
}

pub async fn validate(caller: Caller, body: Body) -> HttpResult<axum::Json<WorkflowValid>> {
    let mut doc = Value::Object(body.0);
    resolve_shop(&caller, &mut doc).await?;
    let (_, warnings) = validate_doc(&doc)?;
    Ok(axum::Json(WorkflowValid { valid: true, warnings }))
}

/// `POST /workflows`: the body is the document; shop steps are filled in
/// ([`resolve_shop`]). Each step's ZApp passes
/// the checks a submission would (registries, host access, ceilings) now,
/// as the caller; quotas are checked when each step's execution is created.
pub async fn create(caller: Caller, body: Body) -> HttpResult<WriteReply<WorkflowCreated>> {
    let ctx = &caller.ctx;
    let mut raw = Value::Object(body.0);
    resolve_shop(&caller, &mut raw).await?;
    let (mut doc, warnings) = validate_doc(&raw)?;
    for (i, step) in doc.steps.iter_mut().enumerate() {
        step.zapp = admit_app(ctx, &caller, step.zapp.clone(), &format!("/steps/{i}/zapp"))?;
    }
    // Watching a host volume's size is reading it: only where a node
    // offers that volume to the caller, as for a ZApp mounting it.
    if doc.triggers.iter().any(|t| matches!(t, Trigger::VolumeSize(_))) {
        let volumes = ctx.coord().read_local(host_volumes).0;
        for (i, t) in doc.triggers.iter().enumerate() {
            if let Trigger::VolumeSize(v) = t {
                check_host_volume(&caller, &volumes, &v.volume, &format!("/triggers/{i}/volume_size/volume"))?;
            }
        }
    }
    // Watching others' executions is seeing them: can_operate_others.
    for (i, t) in doc.triggers.iter().enumerate() {
        let Trigger::ExecutionEnd(t) = t else { continue };
        if let Some(o) = t.owner.as_deref()
            && o != caller.user.username
            && !caller.caps().can_operate_others
        {
            return Err(HttpError::forbidden_field(
                &format!("/triggers/{i}/execution_end/owner"),
                format!(
                    "user {} may not watch executions of {} (needs can_operate_others)",
                    caller.user.username,
                    if o == "*" { "every user" } else { o }
                ),
            ));
        }
    }
    let cmd = Command::CreateWorkflow { workflow: doc, owner: caller.user.username.clone(), time: now_ms() };
    match ctx.write(cmd).await? {
        (Applied::Created(id), index) => Ok(created(WorkflowCreated { id, warnings }, index)),
        (other, _) => Err(HttpError::internal(format!("workflow applied as {other:?}"))),
    }
}

pub async fn list(caller: Caller, Q(q): Q<ReadParams>) -> HttpResult<Indexed<Vec<WorkflowView>>> {
    let ctx = &caller.ctx;
    ctx.read(&q, |s| {
        s.workflows
            .values()
            .filter(|w| w.owner == caller.user.username || caller.caps().can_operate_others)
            .map(|w| view(s, w))
            .collect()
    })
    .await
}

pub async fn get(caller: Caller, P(key): P<String>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<WorkflowView>> {
    let ctx = &caller.ctx;
    ctx.read_checked(&q, |s| visible(s, &caller, &key).map(|w| view(s, w))).await
}

pub async fn delete(caller: Caller, P(key): P<String>) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    let id = ctx.read_fresh(|s| visible(s, &caller, &key).map(|w| w.id)).await??;
    let (_, index) = ctx.write(Command::DeleteWorkflow { id }).await?;
    Ok(super::context::no_content(index))
}

/// `POST /workflows/{id}/runs`: a run by hand. With an `Idempotency-Key`,
/// a retried request answers the first run.
pub async fn run(
    caller: Caller,
    P(key): P<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> HttpResult<WriteReply<RunCreated>> {
    let ctx = &caller.ctx;
    let _: RunRequest = body.parse()?;
    let idempotency_key = idempotency_key(&headers)?;
    let id = ctx.read_fresh(|s| visible(s, &caller, &key).map(|w| w.id)).await??;
    let cmd = Command::RunWorkflow { id, by: caller.user.username.clone(), idempotency_key, time: now_ms() };
    match ctx.write(cmd).await? {
        (Applied::Created(run), index) => {
            let status = ctx
                .read_after(index, |s| s.runs.get(&run).map(|r| r.status.as_str().to_string()))
                .await
                .unwrap_or_default();
            Ok(created(RunCreated { id: run, workflow_id: id, status }, index))
        }
        (other, _) => Err(HttpError::internal(format!("run applied as {other:?}"))),
    }
}

super::context::list_query! {
    pub struct RunsParams {
        /// Comma-separated statuses.
        pub status: Option<String>,
        pub limit: Option<usize>,
    }
}

/// `GET /workflows/{id}/runs`: the history, newest first.
pub async fn runs(caller: Caller, P(key): P<String>, Q(p): Q<RunsParams>) -> HttpResult<Indexed<Vec<RunView>>> {
    let ctx = &caller.ctx;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(HttpError::invalid_field("/limit", "between 1 and 10000"));
    }
    let statuses: Option<Vec<String>> = p.status.as_ref().map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    if let Some(bad) =
        statuses.iter().flatten().find(|x| !["running", "succeeded", "failed", "terminated"].contains(&x.as_str()))
    {
        return Err(HttpError::invalid_field(
            "/status",
            format!("unknown status `{bad}`; one of: running, succeeded, failed, terminated"),
        ));
    }
    let rp = p.read();
    ctx.read_checked(&rp, |s| {
        let w = visible(s, &caller, &key)?;
        Ok(s.runs_of(w.id)
            .rev()
            .filter(|r| statuses.as_ref().is_none_or(|st| st.iter().any(|x| x == r.status.as_str())))
            .take(limit)
            .map(|r| RunView::of(r, Some(w)))
            .collect())
    })
    .await
}

pub async fn get_run(caller: Caller, P(id): P<RunId>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<RunView>> {
    let ctx = &caller.ctx;
    ctx.read_checked(&q, |s| visible_run(s, &caller, id).map(|r| RunView::of(r, s.workflows.get(&r.workflow_id)))).await
}

/// `POST /runs/{id}/terminate`: the run ends and its running steps'
/// executions are terminated, in one command.
pub async fn terminate_run(caller: Caller, P(id): P<RunId>, body: Body) -> HttpResult<WriteReply<RunView>> {
    let ctx = &caller.ctx;
    let req: RunRequest = body.parse()?;
    ctx.read_fresh(|s| visible_run(s, &caller, id).map(|_| ())).await??;
    let reason = match req.reason {
        Some(r) => format!("terminated by {}: {r}", caller.user.username),
        None => format!("terminated by {}", caller.user.username),
    };
    let (_, index) = ctx.write(Command::TerminateRun { run: id, reason, time: now_ms() }).await?;
    let v = ctx
        .read_after(index, |s| s.runs.get(&id).map(|r| RunView::of(r, s.workflows.get(&r.workflow_id))))
        .await
        .ok_or_else(|| HttpError::missing("workflow run", id))?;
    Ok(WriteReply { status: StatusCode::ACCEPTED, value: v, index })
}
