//! Cluster: members, leader and Raft indexes; adding and removing coordinators.

use super::context::{Body, Caller, Ctx, WriteReply, ok};
use super::error::{HttpError, HttpResult};
use super::routes::{P, Q};
use crate::raft::{CoordNode, Status};
use axum::extract::State as Ax;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use zoe_api::acl::AddMember;
use zoe_api::cluster::{CoordinatorRef, Info, Restored};

/// Public facts about this cluster (no token needed).
pub async fn info(Ax(ctx): Ax<Ctx>) -> axum::Json<Info> {
    let st = ctx.coord().status().await;
    let (cluster, _) = ctx.coord().read_local(|s| s.meta.get("cluster.name").cloned());
    axum::Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: super::API_VERSION.into(),
        application_format_version: zoe_common::zapp::FORMAT_VERSION,
        deployment_name: cluster.unwrap_or_else(|| "zoe".into()),
        coordinator: CoordinatorRef { id: st.id, name: st.name, role: st.role },
        leader: st.leader,
        applied_index: st.applied_index,
    })
}

pub async fn members(caller: Caller) -> HttpResult<axum::Json<Status>> {
    let ctx = &caller.ctx;
    caller.require_status()?;
    Ok(axum::Json(ctx.coord().status().await))
}

pub async fn add_member(caller: Caller, body: Body) -> HttpResult<WriteReply<AddMember>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let AddMember { id, addr, name } = body.parse()?;
    let addr = super::context::non_empty("/addr", addr)?;
    let name = super::context::non_empty("/name", name)?;
    if zoe_net::Identity::new(zoe_net::Role::Coordinator, name.clone()).is_err() {
        return Err(HttpError::invalid_field("/name", "not a valid certificate name (a-z, 0-9, '-')"));
    }
    ctx.coord().add_member(id, CoordNode { addr: addr.clone(), name: name.clone() }).await?;
    let st = ctx.coord().status().await;
    Ok(ok(AddMember { id, addr, name }, st.applied_index.unwrap_or(0)))
}

pub async fn remove_member(caller: Caller, P(id): P<u64>) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let st = ctx.coord().status().await;
    if !st.members.iter().any(|m| m.id == id) {
        return Err(HttpError::not_found(format!("coordinator {id} is not a member")));
    }
    ctx.coord().remove_member(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Largest snapshot file a restore accepts (the API's usual body limit is
/// for JSON requests, far smaller than a cluster's state).
const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

/// `GET /cluster/snapshot`: the whole replicated state as a checksummed
/// snapshot file, read linearizably (can_change_config: it holds password
/// and token hashes).
pub async fn snapshot(caller: Caller) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let (state, staleness) = ctx.coord().read_linearizable(|st| st.clone()).await?;
    let file = crate::state::backup::encode(&state, staleness.applied_index, super::context::now_ms());
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], file).into_response())
}

/// Query of `POST /cluster/snapshot/restore`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// Replace a cluster that already holds executions or nodes.
    pub force: Option<bool>,
}

/// `POST /cluster/snapshot/restore`: replaces the whole state with a
/// snapshot file (checked first: format and checksum). Refused (409) on a
/// cluster that holds executions or nodes unless `force=true`. Users and
/// tokens come from the snapshot: log in with the backed-up cluster's.
pub async fn restore(
    caller: Caller,
    Q(q): Q<RestoreParams>,
    body: axum::body::Body,
) -> HttpResult<axum::Json<Restored>> {
    let ctx = &caller.ctx;
    use crate::state::{Command, backup};
    caller.require_config()?;
    let bytes = axum::body::to_bytes(body, MAX_SNAPSHOT_BYTES).await.map_err(|e| {
        HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("reading the snapshot: {e}"))
    })?;
    let file = backup::decode(&bytes).map_err(|e| HttpError::bad_request(e.to_string()))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| HttpError::bad_request(format!("not UTF-8: {e}")))?;
    if !q.force.unwrap_or(false) {
        let (execs, nodes) = ctx.read_fresh(|s| (s.executions.len(), s.nodes.len())).await?;
        if execs + nodes > 0 {
            return Err(HttpError::conflict(format!(
                "this cluster holds {execs} execution(s) and {nodes} node(s); restore onto a fresh cluster, or pass force=true to replace them"
            )));
        }
    }
    let upload = format!("restore-{}", &crate::auth::random_secret()[..16]);
    let mut offset = 0usize;
    while offset < text.len() {
        let mut end = (offset + backup::RESTORE_CHUNK).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cmd =
            Command::RestoreChunk { upload: upload.clone(), offset: offset as u64, data: text[offset..end].into() };
        ctx.coord().write(cmd).await?.result?;
        offset = end;
    }
    let w = ctx.coord().write(Command::RestoreCommit { upload }).await?;
    w.result?;
    Ok(axum::Json(Restored {
        restored: true,
        index: w.index,
        snapshot_index: file.index,
        snapshot_time: file.time,
        executions: file.state.executions.len(),
        users: file.state.users.len(),
        nodes: file.state.nodes.len(),
    }))
}
