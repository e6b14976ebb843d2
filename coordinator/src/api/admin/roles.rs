//! Roles and their capability flags.

use super::*;

fn apply_flags(body: &Body, c: &mut Capabilities) -> HttpResult<()> {
    for f in &Capabilities::FLAGS {
        if let Some(b) = body.bool(f.name)? {
            *c.get_mut(f.name).expect("a listed flag") = b;
        }
    }
    Ok(())
}

list_query! {
    pub struct NameFilter {
        pub name: Option<String>,
    }
}

pub async fn list_roles(caller: Caller, Q(f): Q<NameFilter>) -> HttpResult<Indexed<Vec<Role>>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    ctx.read(&f.read(), |s| {
        s.roles.values().filter(|r| f.name.as_ref().is_none_or(|n| r.name == *n)).cloned().collect()
    })
    .await
}

pub async fn get_role(caller: Caller, P(id): P<u64>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<Role>> {
    let ctx = &caller.ctx;
    ctx.read_checked(&q, |s| s.roles.get(&id).cloned().ok_or_else(|| HttpError::missing("role", id))).await
}

fn role_keys() -> Vec<&'static str> {
    <RoleFields as zoe_api::schema::Doc>::fields().unwrap_or_default()
}

pub async fn create_role(caller: Caller, body: Body) -> HttpResult<WriteReply<Created>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    body.only(&role_keys())?;
    let mut role = Role { id: 0, name: body.req_str("name")?, capabilities: Capabilities::default() };
    apply_flags(&body, &mut role.capabilities)?;
    let (applied, index) = ctx.write(Command::CreateRole { role }).await?;
    Ok(created(Created { id: created_id(applied)? }, index))
}

pub async fn update_role(caller: Caller, P(id): P<u64>, body: Body) -> HttpResult<WriteReply<Role>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    body.only(&role_keys())?;
    let found = ctx.read_fresh(|s| s.roles.get(&id).cloned()).await?;
    let mut role = found.ok_or_else(|| HttpError::missing("role", id))?;
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

pub async fn delete_role(caller: Caller, P(id): P<u64>) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let (_, index) = ctx.write(Command::DeleteRole { id }).await?;
    Ok(no_content(index))
}
