//! Users: list, get, create, update (self-service: email and password), delete.

use super::*;

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

list_query! {
    pub struct UserFilter {
        pub username: Option<String>,
        pub enabled: Option<bool>,
        pub auth_source: Option<String>,
        pub role_id: Option<u64>,
        pub quota_id: Option<u64>,
    }
}

pub async fn list_users(caller: Caller, Q(f): Q<UserFilter>) -> HttpResult<Indexed<Vec<UserView>>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    ctx.read(&f.read(), |s| {
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

pub async fn get_user(caller: Caller, P(id): P<u64>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<UserView>> {
    let ctx = &caller.ctx;
    if caller.user.id != id {
        caller.require_config()?;
    }
    ctx.read_checked(&q, |s| s.users.get(&id).map(|u| user_view(s, u)).ok_or_else(|| HttpError::missing("user", id)))
        .await
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

pub async fn create_user(caller: Caller, body: Body) -> HttpResult<WriteReply<Created>> {
    let ctx = &caller.ctx;
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
    ctx.read_fresh(|s| check_refs(s, role_id, quota_id)).await??;
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

pub async fn update_user(caller: Caller, P(id): P<u64>, body: Body) -> HttpResult<WriteReply<Option<UserView>>> {
    let ctx = &caller.ctx;
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
    let mut u = found.ok_or_else(|| HttpError::missing("user", id))?;
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
    ctx.read_fresh(|s| check_refs(s, u.role_id, u.quota_id)).await??;
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

pub async fn delete_user(caller: Caller, P(id): P<u64>) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    if id == caller.user.id {
        return Err(HttpError::conflict("you cannot delete yourself"));
    }
    let (_, index) = ctx.write(Command::DeleteUser { id }).await?;
    Ok(no_content(index))
}
