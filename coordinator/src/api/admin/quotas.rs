//! Quotas (Zoe's limits; 0 is unlimited).

use super::*;

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

pub async fn list_quotas(caller: Caller, Q(f): Q<NameFilter>) -> HttpResult<Indexed<Vec<QuotaView>>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    ctx.read(&f.read(), |s| {
        s.quotas.values().filter(|q| f.name.as_ref().is_none_or(|n| q.name == *n)).map(QuotaView::of).collect()
    })
    .await
}

pub async fn get_quota(caller: Caller, P(id): P<u64>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<QuotaView>> {
    let ctx = &caller.ctx;
    ctx.read_checked(&q, |s| s.quotas.get(&id).map(QuotaView::of).ok_or_else(|| HttpError::missing("quota", id))).await
}

pub async fn create_quota(caller: Caller, body: Body) -> HttpResult<WriteReply<Created>> {
    let ctx = &caller.ctx;
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

pub async fn update_quota(caller: Caller, P(id): P<u64>, body: Body) -> HttpResult<WriteReply<QuotaView>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    body.only(QuotaFields::FIELDS)?;
    let found = ctx.read_fresh(|s| s.quotas.get(&id).cloned()).await?;
    let mut q = found.ok_or_else(|| HttpError::missing("quota", id))?;
    apply_quota(&body, &mut q)?;
    let (_, index) = ctx.write(Command::UpdateQuota { quota: q.clone() }).await?;
    Ok(ok(QuotaView::of(&q), index))
}

pub async fn delete_quota(caller: Caller, P(id): P<u64>) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let (_, index) = ctx.write(Command::DeleteQuota { id }).await?;
    Ok(no_content(index))
}
