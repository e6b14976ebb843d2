//! Cluster: members, leader and Raft indexes; adding and removing coordinators.

use super::context::{Body, Caller, Ctx, WriteReply, ok};
use super::error::{HttpError, HttpResult};
use super::routes::P;
use crate::raft::{CoordNode, Status};
use axum::extract::State as Ax;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Public facts about this cluster (no token needed).
pub async fn info(Ax(ctx): Ax<Ctx>) -> axum::Json<Value> {
    let st = ctx.coord().status().await;
    let (cluster, _) = ctx.coord().read_local(|s| s.meta.get("cluster.name").cloned());
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "api_version": super::API_VERSION,
        "application_format_version": zoe_common::zapp::FORMAT_VERSION,
        "deployment_name": cluster.unwrap_or_else(|| "zoe".into()),
        "coordinator": { "id": st.id, "name": st.name, "role": st.role },
        "leader": st.leader,
        "applied_index": st.applied_index,
    }))
}

pub async fn members(Ax(ctx): Ax<Ctx>, caller: Caller) -> HttpResult<axum::Json<Status>> {
    caller.require_status()?;
    Ok(axum::Json(ctx.coord().status().await))
}

pub async fn add_member(Ax(ctx): Ax<Ctx>, caller: Caller, body: Body) -> HttpResult<WriteReply<Value>> {
    caller.require_config()?;
    body.only(&["id", "addr", "name"])?;
    let id = body.u64("id")?.ok_or_else(|| HttpError::invalid_field("/id", "is required"))?;
    let addr = body.req_str("addr")?;
    let name = body.req_str("name")?;
    if zoe_net::Identity::new(zoe_net::Role::Coordinator, name.clone()).is_err() {
        return Err(HttpError::invalid_field("/name", "not a valid certificate name (a-z, 0-9, '-')"));
    }
    ctx.coord().add_member(id, CoordNode { addr: addr.clone(), name: name.clone() }).await?;
    let st = ctx.coord().status().await;
    Ok(ok(json!({ "id": id, "addr": addr, "name": name }), st.applied_index.unwrap_or(0)))
}

pub async fn remove_member(Ax(ctx): Ax<Ctx>, caller: Caller, P(id): P<u64>) -> HttpResult<Response> {
    caller.require_config()?;
    let st = ctx.coord().status().await;
    if !st.members.iter().any(|m| m.id == id) {
        return Err(HttpError::not_found(format!("coordinator {id} is not a member")));
    }
    ctx.coord().remove_member(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
