//! The web UI every coordinator serves under `/ui/`, next to the REST API
//! on the same listener and origin.
//!
//! Pages are rendered on the server (maud: escaped by construction); a
//! small hand-written script (`assets/zoe.js`) follows executions with
//! blocking queries and streams service logs. Every action calls the REST
//! API's own handler functions with the session's [`Caller`], so the web
//! UI applies exactly the API's permission rules and validation.
//!
//! - [`session`]: the session cookie, CSRF tokens, form bodies, login;
//! - [`layout`]: the page shell and formatting helpers;
//! - [`pages`]: home, executions, logs;
//! - [`shop`]: the ZApp shop catalogue; [`shop_pages`] its pages;
//! - [`status`]: cluster status; [`admin`]: users, roles, quotas, tokens;
//! - [`workflows`]: workflows, their runs, a run's step graph (SVG).

pub mod admin;
pub mod layout;
pub mod pages;
pub mod proxy;
pub mod session;
pub mod shop;
pub mod shop_pages;
pub mod status;
pub mod workflows;

use crate::api::{Ctx, HttpError};
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::path::PathBuf;
use std::sync::Arc;

/// What the web handlers share.
#[derive(Clone)]
pub struct Web(Arc<WebInner>);

pub struct WebInner {
    pub ctx: Ctx,
    pub shop_dir: Option<PathBuf>,
    /// Served over HTTPS: cookies get `Secure`.
    pub https: bool,
}

impl Web {
    pub fn ctx(&self) -> &Ctx {
        &self.0.ctx
    }

    /// The shop as the directory holds it now (read off the async workers).
    pub async fn catalogue(&self) -> shop::Catalogue {
        match self.0.shop_dir.clone() {
            None => shop::Catalogue::default(),
            Some(dir) => tokio::task::spawn_blocking(move || shop::load(&dir)).await.unwrap_or_default(),
        }
    }
}

/// An error shown to a person: a page with the status and message, or a
/// redirect to the login page.
#[derive(Debug)]
pub enum WebError {
    Login,
    Http(HttpError),
}

impl From<HttpError> for WebError {
    fn from(e: HttpError) -> WebError {
        WebError::Http(e)
    }
}

pub type WebResult<T> = Result<T, WebError>;

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::Login => Redirect::to("/ui/login").into_response(),
            WebError::Http(e) => {
                if e.status.is_server_error() {
                    tracing::warn!(status = %e.status, code = e.code, "web: {}", e.message);
                }
                let body = layout::error_page(&e);
                (e.status, body).into_response()
            }
        }
    }
}

const CSS: &str = include_str!("assets/zoe.css");
const JS: &str = include_str!("assets/zoe.js");

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(ty: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

async fn not_found(uri: axum::http::Uri) -> WebError {
    WebError::Http(HttpError::not_found(format!("no page {}", uri.path())))
}

/// Headers on every web response: no framing, no sniffing, and a content
/// security policy that allows only this origin's script and style, so
/// that even a missed escape could not run injected script.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The web UI's routes (`/` and `/ui/...`), to merge with the API's router.
/// Empty when `[api.web] enabled = false`.
pub fn router(ctx: Ctx) -> Router {
    let api = ctx.coord().config().api.clone();
    if !api.web.enabled {
        return Router::new();
    }
    let web = Web(Arc::new(WebInner { shop_dir: api.web.shop_dir, https: api.tls_cert.is_some(), ctx }));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::home))
        .route("/ui/static/zoe.css", get(css))
        .route("/ui/static/zoe.js", get(js))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/proxy", get(proxy::open))
        .route("/ui/shop", get(shop_pages::catalogue))
        .route("/ui/shop/{id}", get(shop_pages::form).post(shop_pages::start))
        .route("/ui/shop/{id}/logo", get(shop_pages::logo))
        .route("/ui/executions", get(pages::list).post(pages::upload))
        .route("/ui/executions/{id}", get(pages::inspect))
        .route("/ui/executions/{id}/live", get(pages::live))
        .route("/ui/executions/{id}/zapp.json", get(pages::zapp_json))
        .route("/ui/executions/{id}/terminate", post(pages::terminate))
        .route("/ui/executions/{id}/restart", post(pages::restart))
        .route("/ui/executions/{id}/delete", post(pages::delete))
        .route("/ui/services/{id}/logs", get(pages::log_page))
        .route("/ui/services/{id}/log", get(pages::log_stream))
        .route("/ui/workflows", get(workflows::list))
        .route("/ui/workflows/{id}", get(workflows::workflow))
        .route("/ui/workflows/{id}/run", post(workflows::run_now))
        .route("/ui/runs/{id}", get(workflows::run_page))
        .route("/ui/runs/{id}/terminate", post(workflows::terminate))
        .route("/ui/status", get(status::page))
        .route("/ui/nodes/{name}/eligibility", post(status::eligibility))
        .route("/ui/nodes/{name}/drain", post(status::drain))
        .route("/ui/admin", get(admin::page))
        .route("/ui/admin/users", post(admin::create_user))
        .route("/ui/admin/users/{id}", post(admin::update_user))
        .route("/ui/admin/users/{id}/delete", post(admin::delete_user))
        .route("/ui/admin/roles", post(admin::create_role))
        .route("/ui/admin/roles/{id}", post(admin::update_role))
        .route("/ui/admin/roles/{id}/delete", post(admin::delete_role))
        .route("/ui/admin/quotas", post(admin::create_quota))
        .route("/ui/admin/quotas/{id}", post(admin::update_quota))
        .route("/ui/admin/quotas/{id}/delete", post(admin::delete_quota))
        .route("/ui/admin/tokens", post(admin::create_token))
        .route("/ui/admin/tokens/{id}/revoke", post(admin::revoke_token))
        // Unknown pages under /ui/ get an HTML 404; the rest is the API's.
        .route("/ui/{*rest}", get(not_found))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(web)
}

/// `303 See Other` to `to`: the answer to a successful form post.
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}
