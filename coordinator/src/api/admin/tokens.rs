//! API tokens: list, create (the secret shown once), revoke.

use super::*;

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

pub(super) fn remove_token(id: &str, value: String) -> Command {
    auth::remove_record(TokenRecord::meta_key(id), value)
}

/// What a new token is tied to besides its user.
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// The owner's credentials stamp: a new password ends the token.
    pub credentials: Option<String>,
    /// The one execution a proxy token opens.
    pub execution: Option<u64>,
}

/// Stores a new token and returns its one-time secret, together with
/// `also` (removals of other tokens) in the same log entry.
pub(crate) async fn issue_token(
    ctx: &Ctx,
    user_id: u64,
    name: &str,
    kind: TokenKind,
    ttl_ms: Option<u64>,
    scope: Scope,
    also: Vec<Command>,
) -> HttpResult<(TokenCreated, u64)> {
    let now = now_ms();
    let mut t = auth::mint(user_id, name, kind, now, ttl_ms);
    t.record.credentials = scope.credentials;
    t.record.execution = scope.execution;
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
pub(super) fn live_tokens(s: &State, user_id: u64, now: u64) -> Vec<(TokenRecord, String)> {
    let mut v: Vec<(TokenRecord, String)> = auth::token_entries(s)
        .filter_map(|(_, value)| auth::parse_record(value).map(|r| (r, value.clone())))
        .filter(|(r, _)| r.user_id == user_id && r.expires.is_none_or(|e| e > now))
        .collect();
    v.sort_by_key(|(r, _)| r.created);
    v
}

pub async fn create_token(caller: Caller, body: Body) -> HttpResult<WriteReply<TokenCreated>> {
    let ctx = &caller.ctx;
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
                return Err(HttpError::missing("user", u));
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
    let (v, index) =
        issue_token(ctx, user_id, &name, TokenKind::Api, ttl, Scope { credentials, execution: None }, Vec::new())
            .await?;
    Ok(created(v, index))
}

list_query! {
    pub struct TokenFilter {
        pub user_id: Option<u64>,
    }
}

pub async fn list_tokens(caller: Caller, Q(f): Q<TokenFilter>) -> HttpResult<Indexed<Vec<TokenView>>> {
    let ctx = &caller.ctx;
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
    ctx.read(&f.read(), |s| {
        auth::token_records(s)
            .iter()
            .filter(|t| only.is_none_or(|u| t.user_id == u) && t.expires.is_none_or(|e| e > now))
            .map(|t| token_view(s, t))
            .collect()
    })
    .await
}

pub async fn revoke_token(caller: Caller, P(id): P<String>) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    let key = TokenRecord::meta_key(&id);
    let found =
        ctx.read_fresh(|s| s.meta.get(&key).and_then(|v| auth::parse_record(v).map(|r| (r, v.clone())))).await?;
    let (t, value) = found.ok_or_else(|| HttpError::missing("token", &id))?;
    if t.user_id != caller.user.id {
        caller.require_config()?;
    }
    let (_, index) = ctx.write(remove_token(&id, value)).await?;
    Ok(no_content(index))
}
