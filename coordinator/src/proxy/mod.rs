//! The service proxy: `/{execution}/{service}/{port}/...` on a listener of
//! its own (`[api.proxy]`), forwarded to that port of that instance from
//! whichever coordinator the browser reached (Zoe put Træfik there).
//!
//! Invariants:
//! - it answers on a different origin from the UI and API, so a service's
//!   page never runs script beside a UI session;
//! - only the execution's owner, or a role with `can_operate_others`,
//!   gets through: with an API token (`Authorization: Bearer`, scripts) or
//!   with the proxy cookie of that execution;
//! - the cookie is set here from a one-use ticket the UI mints for a
//!   logged-in user ([`TICKET_PATH`]): the UI's own cookie never comes here,
//!   and no zoe cookie or `Authorization` header goes on to a service;
//! - a service that is not running answers a 502 page naming the
//!   execution and its status, at once.

pub mod forward;
pub mod target;

use crate::api::context::{Caller, ClientAddr, bearer};
use crate::api::{Ctx, HttpError};
use crate::auth::{self, TokenKind, TokenRecord};
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, html};
use target::{Route, Unreachable};

/// Where the UI sends a browser with its ticket.
pub const TICKET_PATH: &str = "/_zoe/ticket";
/// A ticket is good for one use within this long.
pub const TICKET_TTL_MS: u64 = 60_000;
/// The proxy cookie's lifetime (a login session's).
pub const COOKIE_TTL_MS: u64 = crate::api::admin::SESSION_TTL_MS;

/// The proxy cookie of one execution; its path keeps it to that execution.
pub fn cookie_name(execution: u64) -> String {
    format!("{}proxy_{execution}", forward::COOKIE_PREFIX)
}

#[derive(Clone)]
struct Proxy {
    ctx: Ctx,
    https: bool,
}

/// The proxy's routes.
pub fn router(ctx: Ctx, https: bool) -> Router {
    Router::new().route(TICKET_PATH, get(ticket)).fallback(handle).with_state(Proxy { ctx, https })
}

/// `%`-encodes a path and query for use inside a query value.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (title) " · zoe" } }
            body { h1 { (title) } p { (message) } }
        }
    };
    (status, [(header::CACHE_CONTROL, "no-store")], axum::response::Html(body.into_string())).into_response()
}

fn error_page(e: &HttpError) -> Response {
    page(e.status, e.status.canonical_reason().unwrap_or("Error"), &e.message)
}

#[derive(serde::Deserialize)]
struct TicketQuery {
    ticket: String,
    to: String,
}

/// Trades a UI ticket for the proxy cookie of its execution.
async fn ticket(State(p): State<Proxy>, Query(q): Query<TicketQuery>) -> Response {
    match exchange(&p, &q).await {
        Ok((cookie, to)) => {
            let secure = if p.https { "; Secure" } else { "" };
            let set = format!(
                "{}={cookie}; Path=/{}/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                cookie_name(to.execution),
                to.execution,
                COOKIE_TTL_MS / 1000
            );
            (StatusCode::SEE_OTHER, [(header::LOCATION, q.to.clone()), (header::SET_COOKIE, set)]).into_response()
        }
        Err(e) => error_page(&e),
    }
}

async fn exchange(p: &Proxy, q: &TicketQuery) -> Result<(String, Route), HttpError> {
    // A route starts with `/` and a number: `to` is a path on this origin.
    let route = Route::parse(&q.to).ok_or_else(|| HttpError::invalid_field("/to", "not a service path"))?;
    let caller = p.ctx.proxy_caller(&q.ticket).await?;
    if caller.token.kind != TokenKind::ProxyTicket || caller.token.execution != Some(route.execution) {
        return Err(HttpError::unauthorized("this ticket is not for that execution; open the link from the UI again"));
    }
    // One use: whoever removes the ticket first gets the cookie.
    let key = TokenRecord::meta_key(&caller.token.id);
    let stored = p.ctx.read_fresh(|s| s.meta.get(&key).cloned()).await?;
    let Some(stored) = stored else {
        return Err(HttpError::unauthorized("this ticket was used already; open the link from the UI again"));
    };
    // Only a lost race means "used": a write whose outcome is unknown (a
    // timeout, no leader) stays the retryable error it is.
    p.ctx.write(auth::remove_record(key, stored)).await.map_err(|e| {
        if e.status == StatusCode::CONFLICT {
            HttpError::unauthorized("this ticket was used already; open the link from the UI again")
        } else {
            e
        }
    })?;
    let scope =
        crate::api::admin::Scope { credentials: caller.token.credentials.clone(), execution: Some(route.execution) };
    let (made, _) = crate::api::admin::issue_token(
        &p.ctx,
        caller.user.id,
        "proxy",
        TokenKind::Proxy,
        Some(COOKIE_TTL_MS),
        scope,
        Vec::new(),
    )
    .await?;
    Ok((made.token, route))
}

/// The caller of a proxied request: its API token, else its proxy cookie
/// for the route's execution; `None` when it brings neither.
async fn caller_of(p: &Proxy, headers: &HeaderMap, route: &Route) -> Result<Option<Caller>, HttpError> {
    if let Some(token) = bearer(headers)? {
        let caller = p.ctx.caller(&token).await?;
        caller.require(caller.caps().can_access_api, "use tokens (can_access_api is off)")?;
        return Ok(Some(caller));
    }
    let Some(cookie) = crate::web::session::cookie(headers, &cookie_name(route.execution)) else {
        return Ok(None);
    };
    let caller = p.ctx.proxy_caller(cookie).await?;
    if caller.token.kind != TokenKind::Proxy || caller.token.execution != Some(route.execution) {
        return Err(HttpError::unauthorized("this proxy cookie is for another execution"));
    }
    Ok(Some(caller))
}

async fn handle(State(p): State<Proxy>, req: Request) -> Response {
    let Some(route) = Route::parse(req.uri().path()) else {
        return page(
            StatusCode::NOT_FOUND,
            "Not a service path",
            "The service proxy serves /{execution}/{service}/{port}/ only; follow a link from the UI or `zoe exec endpoints`.",
        );
    };
    let caller = match caller_of(&p, req.headers(), &route).await {
        Ok(Some(c)) => c,
        Ok(None) => return log_in_first(&p, &req),
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED && matches!(*req.method(), Method::GET | Method::HEAD) {
                return log_in_first(&p, &req);
            }
            return error_page(&e);
        }
    };
    let found = p.ctx.coord().read_local(|s| {
        target::find(s, &route).map(|(e, svc)| (e.owner.clone(), e.name.clone(), target::upstream(e, svc, &route)))
    });
    let not_found =
        |u: Unreachable| page(StatusCode::NOT_FOUND, "Not found", &format!("Execution {}: {u}.", route.execution));
    let (owner, name, upstream) = match found.0 {
        Ok(f) => f,
        Err(u) => return not_found(u),
    };
    if !caller.may_touch(&owner) {
        let why = format!("User {} may not open services of {owner}'s executions.", caller.user.username);
        return page(StatusCode::FORBIDDEN, "Forbidden", &why);
    }
    let upstream = match upstream {
        Ok(u) => u,
        Err(u @ Unreachable::NotRunning { .. }) => {
            let why = format!("{} of execution {} ({name}): {u}.", route.service, route.execution);
            return page(StatusCode::BAD_GATEWAY, "Service not running", &why);
        }
        Err(u) => return not_found(u),
    };
    let prefix = route.prefix();
    let fwd = forward::Forwarded {
        prefix: &prefix,
        client: ClientAddr::of(req.extensions()).0,
        proto: if p.https { "https" } else { "http" },
    };
    match forward::forward(req, &upstream, &fwd).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(execution = route.execution, service = %route.service, "proxy: {e}");
            let why = format!("{} of execution {} ({name}) did not answer: {e}.", route.service, route.execution);
            page(StatusCode::BAD_GATEWAY, "Service unreachable", &why)
        }
    }
}

/// A browser without credentials goes to the UI, which logs it in if
/// needed and sends it back with a ticket; a script gets a 401.
fn log_in_first(p: &Proxy, req: &Request) -> Response {
    let ui = p.ctx.urls().ui;
    let wants_page = matches!(*req.method(), Method::GET | Method::HEAD);
    if !wants_page || ui.is_empty() {
        return page(
            StatusCode::UNAUTHORIZED,
            "Log in first",
            "Open this service from the zoe UI, or send `Authorization: Bearer <token>`.",
        );
    }
    let to = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let location = format!("{ui}/ui/proxy?to={}", encode(to));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}
