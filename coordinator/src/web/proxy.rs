//! The UI half of the service proxy's login: `/ui/proxy?to=/{execution}/
//! {service}/{port}/...` turns a UI session into a one-use ticket and sends
//! the browser to the proxy's origin, which trades it for its own cookie
//! (see [`crate::proxy`]). The UI cookie itself never leaves this origin.

use super::session::{SESSION_COOKIE, cookie};
use super::{Web, WebError, layout, see_other};
use crate::api::HttpError;
use crate::api::admin::{Scope, issue_token};
use crate::auth::{self, TokenKind};
use crate::proxy::{TICKET_PATH, TICKET_TTL_MS, encode, target};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;

#[derive(serde::Deserialize)]
pub struct OpenQuery {
    to: String,
    /// Set on the interstitial's own link (see [`open`]).
    #[serde(default)]
    again: bool,
}

/// The UI's link to a service page.
pub fn link(to: &str) -> String {
    format!("/ui/proxy?to={}", encode(to))
}

pub async fn open(State(web): State<Web>, headers: HeaderMap, Query(q): Query<OpenQuery>) -> Response {
    let Some(route) = target::Route::parse(&q.to) else {
        return WebError::Http(HttpError::invalid_field("/to", "not a service path /{execution}/{service}/{port}/"))
            .into_response();
    };
    let Some(proxy) = web.ctx().urls().proxy else {
        let e = HttpError::not_found("this coordinator runs no service proxy (set [api.proxy] listen)");
        return WebError::Http(e).into_response();
    };
    let session = match cookie(&headers, SESSION_COOKIE).filter(|t| !t.is_empty()) {
        Some(t) => web.ctx().caller(t).await.ok(),
        None => None,
    };
    let Some(caller) = session else {
        if q.again {
            return see_other(&format!("/ui/login?next={}", encode(&link(&q.to))));
        }
        // The session cookie is SameSite=Strict: a browser coming from the
        // proxy's origin (another site) does not send it. One click on this
        // origin's own link does, so a logged-in user is not asked again.
        let again = format!("{}&again=true", link(&q.to));
        let body = layout::bare_page(
            "Open a service",
            html! {
                p { "Open " code { (q.to) } " through zoe's service proxy." }
                p { a.button href=(again) { "Continue" } }
            },
        );
        return body.into_response();
    };
    let owner = web.ctx().read_fresh(|s| target::find(s, &route).map(|(e, _)| e.owner.clone())).await;
    let owner = match owner {
        Ok(Ok(o)) => o,
        Ok(Err(u)) => {
            return WebError::Http(HttpError::not_found(format!("execution {}: {u}", route.execution))).into_response();
        }
        Err(e) => return WebError::Http(e).into_response(),
    };
    if !caller.may_touch(&owner) {
        let why = format!("user {} may not open services of {owner}'s executions", caller.user.username);
        return WebError::Http(HttpError::forbidden(why)).into_response();
    }
    let scope = Scope { credentials: Some(auth::credentials_stamp(&caller.user)), execution: Some(route.execution) };
    match issue_token(
        web.ctx(),
        caller.user.id,
        "proxy ticket",
        TokenKind::ProxyTicket,
        Some(TICKET_TTL_MS),
        scope,
        vec![],
    )
    .await
    {
        Ok((t, _)) => see_other(&format!("{proxy}{TICKET_PATH}?ticket={}&to={}", encode(&t.token), encode(&q.to))),
        Err(e) => WebError::Http(e).into_response(),
    }
}
