//! Users, roles, quotas (Zoe's administration), API tokens, login and the
//! one-time ACL bootstrap.

use super::context::{Body, Caller, ClientAddr, Ctx, Indexed, ReadParams, WriteReply, bearer, created, now_ms, ok};
use super::error::{HttpError, HttpResult};
use super::routes::{P, Q};
use crate::auth::{self, AuthSources, TokenKind, TokenRecord};
use crate::state::user::{QUOTA_DEFAULT, ROLE_ADMIN, ROLE_USER};
use crate::state::{Applied, Capabilities, Command, Quota, Role, State, User};
use axum::extract::State as Ax;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
pub use zoe_api::acl::{
    Bootstrap, CreateToken, CreateUser, Created, Login, QuotaFields, QuotaView, RoleFields, TokenCreated, TokenView,
    UpdateUser, UserView,
};
use zoe_common::resources::Millicores;

/// Sessions from `POST /login` last this long.
pub const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Tokens (API and session) one user may hold at once; a login at the cap
/// ends the user's oldest sessions instead of failing.
pub const MAX_TOKENS_PER_USER: usize = 100;
/// Longest lifetime of a token created by a caller holding a session (a
/// stolen session must not mint a token for ever); the default there too.
pub const MAX_TTL_FROM_SESSION_MS: u64 = 30 * 24 * 3600 * 1000;
/// Token names, in characters.
pub const MAX_TOKEN_NAME: usize = 256;
/// The user the bootstrap token creates.
pub const BOOTSTRAP_ADMIN: &str = "admin";

fn no_content(index: u64) -> Response {
    (StatusCode::NO_CONTENT, [(super::context::INDEX_HEADER, index.to_string())]).into_response()
}

fn created_id(applied: Applied) -> HttpResult<u64> {
    match applied {
        Applied::Created(id) => Ok(id),
        other => Err(HttpError::internal(format!("expected a new id, got {other:?}"))),
    }
}

// -------------------------------------------------------------------- users

fn user_view(s: &State, u: &User) -> UserView {
    UserView {
        id: u.id,
        username: u.username.clone(),
        email: u.email.clone(),
        fs_uid: u.fs_uid,
        role_id: u.role_id,
        role: s.roles.get(&u.role_id).map(|r| r.name.clone()),
        quota_id: u.quota_id,
        quota: s.quotas.get(&u.quota_id).map(|q| q.name.clone()),
        enabled: u.enabled,
        auth_source: u.auth_source.clone(),
        priority: u.priority,
        has_password: u.password_hash.is_some(),
    }
}

fn check_username(name: &str) -> HttpResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(HttpError::invalid_field("/username", "use 1-64 characters a-z, 0-9, '-', '_' and '.'"))
    }
}

fn check_source(src: &str) -> HttpResult<()> {
    if AuthSources::known().contains(&src) {
        Ok(())
    } else {
        Err(HttpError::invalid_field(
            "/auth_source",
            format!("unknown auth source `{src}`; one of: {}", AuthSources::known().join(", ")),
        ))
    }
}

fn check_password(pw: &str) -> HttpResult<()> {
    if pw.chars().count() < 8 {
        return Err(HttpError::invalid_field("/password", "at least 8 characters"));
    }
    Ok(())
}

async fn hash(pw: String) -> HttpResult<String> {
    tokio::task::spawn_blocking(move || auth::hash_password(&pw))
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?
        .map_err(|e| HttpError::internal(e.to_string()))
}

fn check_refs(s: &State, role_id: u64, quota_id: u64) -> HttpResult<()> {
    if !s.roles.contains_key(&role_id) {
        return Err(HttpError::invalid_field("/role_id", format!("role {role_id} does not exist")));
    }
    if !s.quotas.contains_key(&quota_id) {
        return Err(HttpError::invalid_field("/quota_id", format!("quota {quota_id} does not exist")));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    pub username: Option<String>,
    pub enabled: Option<bool>,
    pub auth_source: Option<String>,
    pub role_id: Option<u64>,
    pub quota_id: Option<u64>,
    pub consistent: Option<bool>,
    pub index: Option<u64>,
    pub wait: Option<String>,
}

pub async fn list_users(Ax(ctx): Ax<Ctx>, caller: Caller, Q(f): Q<UserFilter>) -> HttpResult<Indexed<Vec<UserView>>> {
    caller.require_config()?;
    let rp = ReadParams { consistent: f.consistent, index: f.index, wait: f.wait.clone() };
    ctx.read(&rp, |s| {
        s.users
            .values()
            .filter(|u| {
                f.username.as_ref().is_none_or(|x| u.username == *x)
                    && f.enabled.is_none_or(|x| u.enabled == x)
                    && f.auth_source.as_ref().is_none_or(|x| u.auth_source == *x)
                    && f.role_id.is_none_or(|x| u.role_id == x)
                    && f.quota_id.is_none_or(|x| u.quota_id == x)
            })
            .map(|u| user_view(s, u))
            .collect()
    })
    .await
}

pub async fn get_user(
    Ax(ctx): Ax<Ctx>,
    caller: Caller,
    P(id): P<u64>,
    Q(q): Q<ReadParams>,
) -> HttpResult<Indexed<UserView>> {
    if caller.user.id != id {
        caller.require_config()?;
    }
    let r = ctx
        .read(&q, |s| {
            s.users
                .get(&id)
                .map(|u| user_view(s, u))
                .ok_or_else(|| HttpError::not_found(format!("user {id} not found")))
        })
        .await?;
    r.checked()
}

/// A user's `fs_uid`: the host uid of the root of the user's containers
/// and of the workspace's files, so never the host's root.
fn fs_uid(u: u64) -> HttpResult<u32> {
    match u32::try_from(u) {
        Ok(0) => Err(HttpError::invalid_field("/fs_uid", "0 is the host's root; give the user a uid of its own")),
        Ok(u) => Ok(u),
        Err(_) => Err(HttpError::invalid_field("/fs_uid", "too large for a uid")),
    }
}

pub async fn create_user(Ax(ctx): Ax<Ctx>, caller: Caller, body: Body) -> HttpResult<WriteReply<Created>> {
    caller.require_config()?;
    body.only(CreateUser::FIELDS)?;
    let username = body.req_str("username")?;
    check_username(&username)?;
    let auth_source = body.str("auth_source")?.unwrap_or_else(|| "internal".into());
    check_source(&auth_source)?;
    let role_id = body.u64("role_id")?.unwrap_or(ROLE_USER);
    let quota_id = body.u64("quota_id")?.unwrap_or(QUOTA_DEFAULT);
    let password_hash = match body.str("password")? {
        Some(_) if auth_source != "internal" => {
            return Err(HttpError::invalid_field(
                "/password",
                "only users of the internal auth source have a password here",
            ));
        }
        Some(pw) => {
            check_password(&pw)?;
            Some(hash(pw).await?)
        }
        None => None,
    };
    let fs_uid = match body.u64("fs_uid")? {
        Some(u) => fs_uid(u)?,
        None => ctx.read_fresh(|s| s.users.values().map(|u| u.fs_uid + 1).max().unwrap_or(1000).max(1000)).await?,
    };
    let priority = body.i64("priority")?.unwrap_or(0);
    let refs = ctx.read_fresh(|s| check_refs(s, role_id, quota_id)).await?;
    refs?;
    let user = User {
        id: 0,
        username,
        email: body.str("email")?,
        fs_uid,
        role_id,
        quota_id,
        enabled: body.bool("enabled")?.unwrap_or(true),
        auth_source,
        password_hash,
        priority: i32::try_from(priority).map_err(|_| HttpError::invalid_field("/priority", "out of range"))?,
    };
    let (applied, index) = ctx.write(Command::CreateUser { user }).await?;
    Ok(created(Created { id: created_id(applied)? }, index))
}

pub async fn update_user(
    Ax(ctx): Ax<Ctx>,
    caller: Caller,
    P(id): P<u64>,
    body: Body,
) -> HttpResult<WriteReply<Option<UserView>>> {
    let admin = caller.caps().can_change_config;
    if !admin {
        if caller.user.id != id {
            caller.require_config()?;
        }
        // Zoe: users may change their own email (and here, password).
        body.only(&["email", "password"])?;
    }
    body.only(UpdateUser::FIELDS)?;
    let found = ctx.read_fresh(|s| s.users.get(&id).cloned()).await?;
    let mut u = found.ok_or_else(|| HttpError::not_found(format!("user {id} not found")))?;
    if let Some(e) = body.str("email")? {
        u.email = Some(e);
    }
    if let Some(src) = body.str("auth_source")? {
        check_source(&src)?;
        if src != "internal" {
            u.password_hash = None;
        }
        u.auth_source = src;
    }
    if let Some(pw) = body.str("password")? {
        if u.auth_source != "internal" {
            return Err(HttpError::invalid_field(
                "/password",
                "only users of the internal auth source have a password here",
            ));
        }
        check_password(&pw)?;
        u.password_hash = Some(hash(pw).await?);
    }
    if let Some(r) = body.u64("role_id")? {
        if id == caller.user.id && r != u.role_id {
            return Err(HttpError::conflict("you cannot change your own role; ask another admin"));
        }
        u.role_id = r;
    }
    if let Some(q) = body.u64("quota_id")? {
        u.quota_id = q;
    }
    if let Some(uid) = body.u64("fs_uid")? {
        u.fs_uid = fs_uid(uid)?;
    }
    if let Some(en) = body.bool("enabled")? {
        if id == caller.user.id && !en {
            return Err(HttpError::conflict("you cannot disable yourself"));
        }
        u.enabled = en;
    }
    if let Some(p) = body.i64("priority")? {
        u.priority = i32::try_from(p).map_err(|_| HttpError::invalid_field("/priority", "out of range"))?;
    }
    let refs = ctx.read_fresh(|s| check_refs(s, u.role_id, u.quota_id)).await?;
    refs?;
    // A new password (or source) ends the user's login sessions, in the
    // same log entry: whoever knew the old one is logged out. The session
    // making the change, if it is one, stays.
    let credentials_changed = body.get("password").is_some() || body.get("auth_source").is_some();
    let sessions = if credentials_changed {
        let now = now_ms();
        let keep = caller.token.id.clone();
        let stamp = auth::credentials_stamp(&u);
        ctx.read_fresh(|s| {
            let mut cmds = Vec::new();
            for (r, v) in live_tokens(s, id, now) {
                if r.id == keep {
                    // The caller's own session goes on under the new stamp
                    // (unless revoked meanwhile: compare-and-set).
                    if r.credentials.is_some()
                        && let Ok(value) = serde_json::to_string(&TokenRecord { credentials: Some(stamp.clone()), ..r })
                    {
                        let key = TokenRecord::meta_key(&keep);
                        cmds.push(Command::CompareAndSetMeta { key, expected: Some(v), value: Some(value) });
                    }
                } else if r.kind == TokenKind::Session {
                    cmds.push(remove_token(&r.id, v));
                }
            }
            cmds
        })
        .await?
    } else {
        Vec::new()
    };
    let update = Command::UpdateUser { user: u };
    let cmd = if sessions.is_empty() { update } else { Command::Batch([update].into_iter().chain(sessions).collect()) };
    let (applied, index) = ctx.write(cmd).await?;
    // In a batch each command stands alone: the update's own refusal is
    // the answer.
    if let crate::state::Applied::Batch(results) = applied
        && let Some(Err(e)) = results.into_iter().next()
    {
        return Err(e.into());
    }
    let view = ctx.read_after(index, |s| s.users.get(&id).map(|u| user_view(s, u))).await;
    Ok(ok(view, index))
}

pub async fn delete_user(Ax(ctx): Ax<Ctx>, caller: Caller, P(id): P<u64>) -> HttpResult<Response> {
    caller.require_config()?;
    if id == caller.user.id {
        return Err(HttpError::conflict("you cannot delete yourself"));
    }
    let (_, index) = ctx.write(Command::DeleteUser { id }).await?;
    Ok(no_content(index))
}

// -------------------------------------------------------------------- roles

fn apply_flags(body: &Body, c: &mut Capabilities) -> HttpResult<()> {
    for f in &Capabilities::FLAGS {
        if let Some(b) = body.bool(f.name)? {
            *c.get_mut(f.name).expect("a listed flag") = b;
        }
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameFilter {
    pub name: Option<String>,
    pub consistent: Option<bool>,
    pub index: Option<u64>,
    pub wait: Option<String>,
}

impl NameFilter {
    fn read(&self) -> ReadParams {
        ReadParams { consistent: self.consistent, index: self.index, wait: self.wait.clone() }
    }
}

pub async fn list_roles(Ax(ctx): Ax<Ctx>, caller: Caller, Q(f): Q<NameFilter>) -> HttpResult<Indexed<Vec<Role>>> {
    caller.require_config()?;
    ctx.read(&f.read(), |s| {
        s.roles.values().filter(|r| f.name.as_ref().is_none_or(|n| r.name == *n)).cloned().collect()
    })
    .await
}

pub async fn get_role(
    Ax(ctx): Ax<Ctx>,
    _caller: Caller,
    P(id): P<u64>,
    Q(q): Q<ReadParams>,
) -> HttpResult<Indexed<Role>> {
    let r = ctx
        .read(&q, |s| s.roles.get(&id).cloned().ok_or_else(|| HttpError::not_found(format!("role {id} not found"))))
        .await?;
    r.checked()
}

fn role_keys() -> Vec<&'static str> {
    <RoleFields as zoe_api::schema::Doc>::fields().unwrap_or_default()
}

pub async fn create_role(Ax(ctx): Ax<Ctx>, caller: Caller, body: Body) -> HttpResult<WriteReply<Created>> {
    caller.require_config()?;
    body.only(&role_keys())?;
    let mut role = Role { id: 0, name: body.req_str("name")?, capabilities: Capabilities::default() };
    apply_flags(&body, &mut role.capabilities)?;
    let (applied, index) = ctx.write(Command::CreateRole { role }).await?;
    Ok(created(Created { id: created_id(applied)? }, index))
}

pub async fn update_role(Ax(ctx): Ax<Ctx>, caller: Caller, P(id): P<u64>, body: Body) -> HttpResult<WriteReply<Role>> {
    caller.require_config()?;
    body.only(&role_keys())?;
    let found = ctx.read_fresh(|s| s.roles.get(&id).cloned()).await?;
    let mut role = found.ok_or_else(|| HttpError::not_found(format!("role {id} not found")))?;
    if id == ROLE_ADMIN {
        return Err(HttpError::conflict("the admin role cannot be changed"));
    }
    if let Some(n) = body.str("name")? {
        role.name = n;
    }
    apply_flags(&body, &mut role.capabilities)?;
    let (_, index) = ctx.write(Command::UpdateRole { role: role.clone() }).await?;
    Ok(ok(role, index))
}

pub async fn delete_role(Ax(ctx): Ax<Ctx>, caller: Caller, P(id): P<u64>) -> HttpResult<Response> {
    caller.require_config()?;
    let (_, index) = ctx.write(Command::DeleteRole { id }).await?;
    Ok(no_content(index))
}

// ------------------------------------------------------------------- quotas

/// The keys a new quota must give (a forgotten one must not mean "unlimited").
const QUOTA_KEYS: [&str; 5] = ["name", "concurrent_executions", "memory", "cores", "runtime_limit"];

fn apply_quota(body: &Body, q: &mut Quota) -> HttpResult<()> {
    if let Some(n) = body.str("name")? {
        q.name = n;
    }
    if let Some(c) = body.u64("concurrent_executions")? {
        q.concurrent_executions =
            u32::try_from(c).map_err(|_| HttpError::invalid_field("/concurrent_executions", "too large"))?;
    }
    if let Some(m) = body.u64("memory")? {
        q.memory = m;
    }
    if let Some(c) = body.f64("cores")? {
        q.cores = Millicores::from_cores(c).map_err(|e| HttpError::invalid_field("/cores", e.to_string()))?;
    }
    if let Some(r) = body.u64("runtime_limit")? {
        q.runtime_limit = r;
    }
    if let Some(c) = body.f64("service_cores")? {
        q.service_cores =
            Millicores::from_cores(c).map_err(|e| HttpError::invalid_field("/service_cores", e.to_string()))?;
    }
    if let Some(m) = body.u64("service_memory")? {
        q.service_memory = m;
    }
    Ok(())
}

pub async fn list_quotas(Ax(ctx): Ax<Ctx>, caller: Caller, Q(f): Q<NameFilter>) -> HttpResult<Indexed<Vec<QuotaView>>> {
    caller.require_config()?;
    ctx.read(&f.read(), |s| {
        s.quotas.values().filter(|q| f.name.as_ref().is_none_or(|n| q.name == *n)).map(QuotaView::of).collect()
    })
    .await
}

pub async fn get_quota(
    Ax(ctx): Ax<Ctx>,
    _caller: Caller,
    P(id): P<u64>,
    Q(q): Q<ReadParams>,
) -> HttpResult<Indexed<QuotaView>> {
    let r = ctx
        .read(&q, |s| {
            s.quotas.get(&id).map(QuotaView::of).ok_or_else(|| HttpError::not_found(format!("quota {id} not found")))
        })
        .await?;
    r.checked()
}

pub async fn create_quota(Ax(ctx): Ax<Ctx>, caller: Caller, body: Body) -> HttpResult<WriteReply<Created>> {
    caller.require_config()?;
    body.only(QuotaFields::FIELDS)?;
    // Every limit is required: a forgotten field must not mean "unlimited".
    for k in QUOTA_KEYS {
        if body.get(k).is_none() {
            return Err(HttpError::invalid_field(&format!("/{k}"), "is required (0 means unlimited)"));
        }
    }
    let mut quota = Quota {
        id: 0,
        name: String::new(),
        concurrent_executions: 0,
        memory: 0,
        cores: Millicores(0),
        runtime_limit: 0,
        service_cores: Millicores(0),
        service_memory: 0,
    };
    apply_quota(&body, &mut quota)?;
    let (applied, index) = ctx.write(Command::CreateQuota { quota }).await?;
    Ok(created(Created { id: created_id(applied)? }, index))
}

pub async fn update_quota(
    Ax(ctx): Ax<Ctx>,
    caller: Caller,
    P(id): P<u64>,
    body: Body,
) -> HttpResult<WriteReply<QuotaView>> {
    caller.require_config()?;
    body.only(QuotaFields::FIELDS)?;
    let found = ctx.read_fresh(|s| s.quotas.get(&id).cloned()).await?;
    let mut q = found.ok_or_else(|| HttpError::not_found(format!("quota {id} not found")))?;
    apply_quota(&body, &mut q)?;
    let (_, index) = ctx.write(Command::UpdateQuota { quota: q.clone() }).await?;
    Ok(ok(QuotaView::of(&q), index))
}

pub async fn delete_quota(Ax(ctx): Ax<Ctx>, caller: Caller, P(id): P<u64>) -> HttpResult<Response> {
    caller.require_config()?;
    let (_, index) = ctx.write(Command::DeleteQuota { id }).await?;
    Ok(no_content(index))
}

// ------------------------------------------------------------------- tokens

fn token_view(s: &State, t: &TokenRecord) -> TokenView {
    TokenView {
        id: t.id.clone(),
        user_id: t.user_id,
        username: s.users.get(&t.user_id).map(|u| u.username.clone()),
        name: t.name.clone(),
        kind: t.kind.as_str().to_string(),
        created: t.created,
        expires: t.expires,
    }
}

fn remove_token(id: &str, value: String) -> Command {
    auth::remove_record(TokenRecord::meta_key(id), value)
}

/// Stores a new token and returns its one-time secret, together with
/// `also` (removals of other tokens) in the same log entry.
async fn issue_token(
    ctx: &Ctx,
    user_id: u64,
    name: &str,
    kind: TokenKind,
    ttl_ms: Option<u64>,
    credentials: Option<String>,
    also: Vec<Command>,
) -> HttpResult<(TokenCreated, u64)> {
    let now = now_ms();
    let mut t = auth::mint(user_id, name, kind, now, ttl_ms);
    t.record.credentials = credentials;
    let value = serde_json::to_string(&t.record).map_err(|e| HttpError::internal(e.to_string()))?;
    let store = Command::SetMeta { key: TokenRecord::meta_key(&t.record.id), value };
    let cmd = if also.is_empty() { store } else { Command::Batch(also.into_iter().chain([store]).collect()) };
    let (_, index) = ctx.write(cmd).await?;
    let created = TokenCreated {
        id: t.record.id,
        token: t.secret,
        user_id,
        name: name.to_string(),
        kind: kind.as_str().to_string(),
        expires: t.record.expires,
    };
    Ok((created, index))
}

/// A user's tokens that can still authenticate, oldest first, with their
/// stored values.
fn live_tokens(s: &State, user_id: u64, now: u64) -> Vec<(TokenRecord, String)> {
    let mut v: Vec<(TokenRecord, String)> = auth::token_entries(s)
        .filter_map(|(_, value)| auth::parse_record(value).map(|r| (r, value.clone())))
        .filter(|(r, _)| r.user_id == user_id && r.expires.is_none_or(|e| e > now))
        .collect();
    v.sort_by_key(|(r, _)| r.created);
    v
}

pub async fn create_token(Ax(ctx): Ax<Ctx>, caller: Caller, body: Body) -> HttpResult<WriteReply<TokenCreated>> {
    body.only(CreateToken::FIELDS)?;
    let name = body.str("name")?.unwrap_or_else(|| "api".into());
    if name.chars().count() > MAX_TOKEN_NAME {
        return Err(HttpError::invalid_field("/name", format!("at most {MAX_TOKEN_NAME} characters")));
    }
    let user_id = match body.u64("user_id")? {
        Some(u) if u != caller.user.id => {
            caller.require_config()?;
            let exists = ctx.read_fresh(|s| s.users.contains_key(&u)).await?;
            if !exists {
                return Err(HttpError::not_found(format!("user {u} not found")));
            }
            u
        }
        _ => caller.user.id,
    };
    let mut ttl = body.u64("ttl_s")?.map(|s| s.saturating_mul(1000));
    if caller.token.kind == TokenKind::Session {
        match ttl {
            Some(t) if t > MAX_TTL_FROM_SESSION_MS => {
                return Err(HttpError::invalid_field(
                    "/ttl_s",
                    format!(
                        "a login session may create tokens of at most {} days",
                        MAX_TTL_FROM_SESSION_MS / 86_400_000
                    ),
                ));
            }
            None => ttl = Some(MAX_TTL_FROM_SESSION_MS),
            Some(_) => {}
        }
    }
    // Expired records count until the GC removes them: a loop of short-
    // lived tokens cannot outgrow the collector.
    let held = ctx.read_fresh(|s| auth::token_records(s).iter().filter(|r| r.user_id == user_id).count()).await?;
    if held >= MAX_TOKENS_PER_USER {
        return Err(HttpError::conflict(format!(
            "the user holds {held} tokens, the most allowed; revoke some (zoe token ls, zoe token revoke)"
        )));
    }
    // Created by a login session (or a token one created), for oneself:
    // it ends with the credentials the session was opened with.
    let stamped =
        user_id == caller.user.id && (caller.token.kind == TokenKind::Session || caller.token.credentials.is_some());
    let credentials = stamped.then(|| auth::credentials_stamp(&caller.user));
    let (v, index) = issue_token(&ctx, user_id, &name, TokenKind::Api, ttl, credentials, Vec::new()).await?;
    Ok(created(v, index))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFilter {
    pub user_id: Option<u64>,
    pub consistent: Option<bool>,
    pub index: Option<u64>,
    pub wait: Option<String>,
}

pub async fn list_tokens(
    Ax(ctx): Ax<Ctx>,
    caller: Caller,
    Q(f): Q<TokenFilter>,
) -> HttpResult<Indexed<Vec<TokenView>>> {
    let admin = caller.caps().can_change_config;
    let only = match f.user_id {
        Some(u) if u != caller.user.id => {
            caller.require_config()?;
            Some(u)
        }
        Some(u) => Some(u),
        None if admin => None,
        None => Some(caller.user.id),
    };
    let now = now_ms();
    let rp = ReadParams { consistent: f.consistent, index: f.index, wait: f.wait.clone() };
    ctx.read(&rp, |s| {
        auth::token_records(s)
            .iter()
            .filter(|t| only.is_none_or(|u| t.user_id == u) && t.expires.is_none_or(|e| e > now))
            .map(|t| token_view(s, t))
            .collect()
    })
    .await
}

pub async fn revoke_token(Ax(ctx): Ax<Ctx>, caller: Caller, P(id): P<String>) -> HttpResult<Response> {
    let key = TokenRecord::meta_key(&id);
    let found =
        ctx.read_fresh(|s| s.meta.get(&key).and_then(|v| auth::parse_record(v).map(|r| (r, v.clone())))).await?;
    let (t, value) = found.ok_or_else(|| HttpError::not_found(format!("token {id} not found")))?;
    if t.user_id != caller.user.id {
        caller.require_config()?;
    }
    let (_, index) = ctx.write(remove_token(&id, value)).await?;
    Ok(no_content(index))
}

// -------------------------------------------------------- login, whoami, ACL

fn basic(parts_header: Option<&axum::http::HeaderValue>) -> Option<(String, String)> {
    use base64_lite::decode;
    let v = parts_header?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(decode(b64.trim())?).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// A tiny base64 decoder (standard and URL-safe alphabets) for HTTP Basic
/// credentials, no extra dependency. The browser test decodes WebDriver
/// screenshots with it too.
pub mod base64_lite {
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => (c - b'A') as u32,
                b'a'..=b'z' => (c - b'a') as u32 + 26,
                b'0'..=b'9' => (c - b'0') as u32 + 52,
                b'+' | b'-' => 62,
                b'/' | b'_' => 63,
                _ => return None,
            })
        };
        let s = s.trim_end_matches('=').as_bytes();
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        for chunk in s.chunks(4) {
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                n |= val(*c)? << (18 - 6 * i);
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            match chunk.len() {
                4 => out.extend_from_slice(&bytes),
                3 => out.extend_from_slice(&bytes[..2]),
                2 => out.push(bytes[0]),
                _ => return None,
            }
        }
        Some(out)
    }
}

/// Logs in with a username and password (JSON body or HTTP Basic) and
/// answers a session token. Throttled per username and per client address
/// (429 with `Retry-After`, `auth::throttle`).
pub async fn login(
    Ax(ctx): Ax<Ctx>,
    client: ClientAddr,
    headers: axum::http::HeaderMap,
    body: Body,
) -> HttpResult<WriteReply<TokenCreated>> {
    body.only(Login::FIELDS)?;
    let (username, password) = match basic(headers.get(axum::http::header::AUTHORIZATION)) {
        Some(c) => c,
        None => (body.req_str("username")?, body.req_str("password")?),
    };
    let attempt = ctx.throttle().admit(&username, client.0).map_err(|auth::throttle::RetryAfter(wait)| {
        HttpError::too_many(format!("too many failed logins; try again in {} s", wait.as_secs().max(1)), wait)
    })?;
    let denied = || HttpError::unauthorized("wrong username or password");
    let found = ctx.read_fresh(|s| s.user_by_name(&username).cloned()).await?;
    let Some(user) = found else {
        // Spend the same argon2 time as for a real user, so response times
        // do not tell which usernames exist.
        let _ = auth::verify_password_bounded(password, None).await;
        return Err(denied());
    };
    if !ctx.check_password(&user, &password).await? {
        return Err(denied());
    }
    ctx.throttle().succeeded(attempt);
    if !user.enabled {
        return Err(HttpError::unauthorized(format!("user {username} is disabled")));
    }
    // At the cap, the oldest sessions make room (API tokens are never
    // removed behind their owner's back).
    let now = now_ms();
    let evict = ctx
        .read_fresh(|s| {
            let live = live_tokens(s, user.id, now);
            let over = (live.len() + 1).saturating_sub(MAX_TOKENS_PER_USER);
            live.into_iter()
                .filter(|(r, _)| r.kind == TokenKind::Session)
                .take(over)
                .map(|(r, v)| remove_token(&r.id, v))
                .collect::<Vec<_>>()
        })
        .await?;
    // Stamped with the credentials the password was checked against (read
    // before the check): a password changed meanwhile makes it invalid.
    let stamp = Some(auth::credentials_stamp(&user));
    let (v, index) =
        issue_token(&ctx, user.id, "login", TokenKind::Session, Some(SESSION_TTL_MS), stamp, evict).await?;
    Ok(created(v, index))
}

pub async fn whoami(caller: Caller) -> axum::Json<Value> {
    axum::Json(json!({
        "user_id": caller.user.id,
        "username": caller.user.username,
        "role": caller.role,
        "token": { "id": caller.token.id, "kind": caller.token.kind, "expires": caller.token.expires },
    }))
}

/// Exchanges the one-time bootstrap token (as the bearer token, or
/// `{"token": ...}`) for the first admin's API token. Refused once used.
pub async fn bootstrap(Ax(ctx): Ax<Ctx>, parts: HeaderParts, body: Body) -> HttpResult<WriteReply<TokenCreated>> {
    body.only(Bootstrap::FIELDS)?;
    let token = match body.str("token")? {
        Some(t) => t,
        None => parts
            .0
            .ok_or_else(|| HttpError::unauthorized("send the bootstrap token as `Authorization: Bearer <token>`"))?,
    };
    let (v, index) = exchange_bootstrap_token(&ctx, &token).await?;
    Ok(created(v, index))
}

/// The ACL bootstrap itself: checks the one-time token, creates the first
/// admin and returns its API token (`{"token": ...}`) with the log index.
/// `zoe dev` calls it in-process to hand out an admin token at once.
pub async fn exchange_bootstrap_token(ctx: &Ctx, token: &str) -> HttpResult<(TokenCreated, u64)> {
    let ((valid, done, admin), _) = ctx
        .coord()
        .read_linearizable(|s| {
            (
                auth::is_bootstrap_token(s, token),
                s.meta.contains_key(auth::META_BOOTSTRAPPED),
                s.user_by_name(BOOTSTRAP_ADMIN).map(|u| (u.id, u.role_id)),
            )
        })
        .await?;
    if done {
        return Err(HttpError::conflict(
            "the cluster is already bootstrapped; ask an admin for a token or log in with `zoe login`",
        ));
    }
    if !valid {
        return Err(HttpError::unauthorized(
            "not the bootstrap token; it is in the bootstrap-token file of the first leader's data dir",
        ));
    }
    // Creating the user by its unique name orders concurrent attempts; an
    // attempt that died after this step is finished by the next one.
    let admin_id = match admin {
        Some((id, role)) if role == ROLE_ADMIN => id,
        Some(_) => return Err(HttpError::conflict(format!("a non-admin user `{BOOTSTRAP_ADMIN}` exists already"))),
        None => {
            let user = User {
                id: 0,
                username: BOOTSTRAP_ADMIN.into(),
                email: None,
                fs_uid: 1000,
                role_id: ROLE_ADMIN,
                quota_id: QUOTA_DEFAULT,
                enabled: true,
                auth_source: "internal".into(),
                password_hash: None,
                priority: 0,
            };
            created_id(ctx.write(Command::CreateUser { user }).await?.0)?
        }
    };
    let (v, _) = issue_token(ctx, admin_id, "bootstrap", TokenKind::Api, None, None, Vec::new()).await?;
    ctx.write(Command::SetMeta { key: auth::META_BOOTSTRAP.into(), value: String::new() }).await?;
    let (_, index) =
        ctx.write(Command::SetMeta { key: auth::META_BOOTSTRAPPED.into(), value: now_ms().to_string() }).await?;
    tracing::info!(user = BOOTSTRAP_ADMIN, "ACL bootstrap done");
    Ok((v, index))
}

/// The bearer token of a request, if any (without checking it).
pub struct HeaderParts(pub Option<String>);

impl axum::extract::FromRequestParts<Ctx> for HeaderParts {
    type Rejection = HttpError;
    async fn from_request_parts(parts: &mut Parts, _: &Ctx) -> Result<HeaderParts, HttpError> {
        Ok(HeaderParts(bearer(parts)?))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_basic_credentials() {
        assert_eq!(super::base64_lite::decode("YWRhOnMzY3JldA==").unwrap(), b"ada:s3cret");
        assert_eq!(super::base64_lite::decode("YQ").unwrap(), b"a");
        assert!(super::base64_lite::decode("!!").is_none());
    }
}
