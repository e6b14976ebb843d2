//! Login sessions, whoami and the one-time ACL bootstrap.

use super::*;

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
    let (v, index) = issue_token(
        &ctx,
        user.id,
        "login",
        TokenKind::Session,
        Some(SESSION_TTL_MS),
        Scope { credentials: stamp, execution: None },
        evict,
    )
    .await?;
    Ok(created(v, index))
}

use zoe_api::acl::{TokenRef, WhoAmI};

pub async fn whoami(caller: Caller) -> axum::Json<WhoAmI> {
    let t = &caller.token;
    let token = TokenRef { id: t.id.clone(), kind: t.kind.as_str().into(), expires: t.expires };
    axum::Json(WhoAmI {
        user_id: caller.user.id,
        username: caller.user.username.clone(),
        role: caller.role.clone(),
        token,
    })
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
    let (v, _) = issue_token(ctx, admin_id, "bootstrap", TokenKind::Api, None, Scope::default(), Vec::new()).await?;
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
        Ok(HeaderParts(bearer(&parts.headers)?))
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
