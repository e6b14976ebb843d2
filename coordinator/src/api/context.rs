//! Shared request context: the coordinator handle, authentication of the
//! caller, reads (local, linearizable, blocking) and writes that report the
//! replicated index, and strict JSON body helpers.

use super::error::{HttpError, HttpResult};
use super::live::LiveSource;
use super::metrics::Metrics;
use crate::auth::{self, AuthSources, TokenRecord};
use crate::raft::Coordinator;
use crate::state::{Applied, Capabilities, Command, Role, State, User};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zoe_common::zapp::type_name;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct Ctx(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub coord: Coordinator,
    pub sources: AuthSources,
    pub live: Option<Arc<dyn LiveSource>>,
    pub metrics: Metrics,
    pub throttle: crate::auth::throttle::LoginThrottle,
    pub body_limit: usize,
    /// Turns true when the server stops: blocking queries return at once.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Where browsers reach this coordinator's UI and its service proxy
    /// (set once the listeners are bound; see [`Ctx::set_urls`]).
    pub urls: std::sync::OnceLock<Urls>,
}

/// Base URLs as browsers reach them, without a trailing slash.
#[derive(Debug, Clone, Default)]
pub struct Urls {
    pub ui: String,
    /// `None`: no proxy (`[api.proxy] listen` unset).
    pub proxy: Option<String>,
}

impl Ctx {
    pub fn new(
        coord: Coordinator,
        live: Option<Arc<dyn LiveSource>>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Ctx {
        let api = &coord.config().api;
        let sources = AuthSources::new(api.auth_file.clone());
        let body_limit = api.body_limit_bytes;
        let throttle = crate::auth::throttle::LoginThrottle::new(api.login.clone());
        let urls = std::sync::OnceLock::new();
        Ctx(Arc::new(Inner { coord, sources, live, metrics: Metrics::default(), throttle, body_limit, stopping, urls }))
    }

    /// Records the public URLs (once; later calls are ignored).
    pub fn set_urls(&self, urls: Urls) {
        let _ = self.0.urls.set(urls);
    }

    pub fn urls(&self) -> Urls {
        self.0.urls.get().cloned().unwrap_or_default()
    }

    pub fn coord(&self) -> &Coordinator {
        &self.0.coord
    }

    pub fn live(&self, what: &str) -> HttpResult<&Arc<dyn LiveSource>> {
        self.0.live.as_ref().ok_or_else(|| {
            HttpError::unavailable(
                "no_live_source",
                format!("{what} needs the nodes' agents, and this coordinator has no agent connection yet"),
            )
        })
    }

    pub fn live_opt(&self) -> Option<&Arc<dyn LiveSource>> {
        self.0.live.as_ref()
    }

    /// The live per-node view, `None` without a live source or a leader.
    pub async fn live_nodes(&self) -> Option<std::collections::BTreeMap<String, crate::scheduler::LiveNode>> {
        self.live_opt()?.live_nodes().await
    }

    /// The connected nodes' full reports, `None` without a live source or a leader.
    pub async fn live_reports(&self) -> Option<std::collections::BTreeMap<String, crate::agents::stats::NodeReport>> {
        self.live_opt()?.live_reports().await
    }

    pub fn throttle(&self) -> &crate::auth::throttle::LoginThrottle {
        &self.0.throttle
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Commits a command; a refused command becomes the matching 4xx.
    pub async fn write(&self, cmd: Command) -> HttpResult<(Applied, u64)> {
        let w = self.0.coord.write(cmd).await?;
        let applied = w.result?;
        Ok((applied, w.index))
    }

    /// Reads the state as the query asks: local (default), linearizable
    /// (`?consistent=true`), and blocking (`?index=N&wait=30s`: returns once
    /// the state passes index N, or when the wait ends: no guarantee of a
    /// change, as in Nomad; compare the index).
    pub async fn read<T>(&self, q: &ReadParams, f: impl FnOnce(&State) -> T) -> HttpResult<Indexed<T>> {
        if let Some(min) = q.index {
            let wait = match &q.wait {
                Some(w) => parse_duration(w).ok_or_else(|| {
                    HttpError::invalid_field("/wait", format!("`{w}` is not a duration such as 30s, 500ms or 5m"))
                })?,
                None => DEFAULT_WAIT,
            }
            .min(MAX_WAIT);
            // Nomad adds up to wait/16 of jitter so that many watchers with
            // the same wait do not all come back in the same instant.
            let jitter = {
                use rand::{Rng, SeedableRng};
                rand::rngs::SmallRng::from_os_rng().random_range(0..=(wait.as_millis() as u64 / 16))
            };
            self.wait_past(min, wait + Duration::from_millis(jitter)).await;
        }
        let (v, st) = if q.consistent.unwrap_or(false) {
            self.0.coord.read_linearizable(f).await?
        } else {
            self.0.coord.read_local(f)
        };
        Ok(Indexed {
            value: v,
            index: st.applied_index.unwrap_or(0),
            known_leader: st.leader.is_some(),
            last_contact_ms: st.last_contact_ms,
        })
    }

    /// [`Ctx::read`] of a value the read itself may refuse (a 404, a 403):
    /// the refusal is the answer.
    pub async fn read_checked<T>(
        &self,
        q: &ReadParams,
        f: impl FnOnce(&State) -> HttpResult<T>,
    ) -> HttpResult<Indexed<T>> {
        self.read(q, f).await?.checked()
    }

    /// The latest committed state (a linearizable read), for the checks
    /// before a write: a follower must not judge a request on a state that
    /// is behind (an execution submitted a moment ago through another
    /// coordinator, a quota already used up).
    pub async fn read_fresh<T>(&self, f: impl FnOnce(&State) -> T) -> HttpResult<T> {
        Ok(self.0.coord.read_linearizable(f).await?.0)
    }

    /// Reads once this node has applied `index` (a write just committed,
    /// perhaps through the leader, may not have reached it yet).
    pub async fn read_after<T>(&self, index: u64, f: impl FnOnce(&State) -> T) -> T {
        self.wait_past(index.saturating_sub(1), Duration::from_secs(5)).await;
        self.0.coord.read_local(f).0
    }

    /// Waits until this node has applied an index above `min`, or `wait` passes.
    async fn wait_past(&self, min: u64, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut rx = self.0.coord.applied();
        let mut stopping = self.0.stopping.clone();
        loop {
            let applied = *rx.borrow_and_update();
            if applied > min || *stopping.borrow_and_update() {
                return;
            }
            tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), rx.changed()) => match r {
                    Ok(Ok(())) => {}
                    _ => return,
                },
                _ = stopping.changed() => return,
            }
        }
    }

    /// Authenticates a bearer token. A token minted a moment ago on the
    /// leader may not have reached this follower yet: on a miss, one
    /// linearizable read settles it.
    async fn authenticate(&self, token: &str) -> HttpResult<(TokenRecord, User, Role)> {
        let now = now_ms();
        let find = |s: &State| {
            auth::authenticate(s, token, now).and_then(|(t, u)| s.roles.get(&u.role_id).cloned().map(|r| (t, u, r)))
        };
        let (found, st) = self.0.coord.read_local(find);
        let found = match found {
            Some(f) => Some(f),
            None if !st.is_leader => self.0.coord.read_linearizable(find).await?.0,
            None => None,
        };
        found.ok_or_else(|| HttpError::unauthorized("the token is unknown, expired or revoked; log in again"))
    }

    /// The caller a token stands for, if it is valid and its user enabled.
    /// The API adds its `can_access_api` rule on top; the web UI (session
    /// cookies) does not, as in Zoe, where that flag is about the API only.
    pub async fn caller(&self, token: &str) -> HttpResult<Caller> {
        let (token, user, role) = self.authenticate(token).await?;
        if token.kind.is_proxy() {
            return Err(HttpError::unauthorized("a proxy ticket or cookie is not an API token"));
        }
        self.enabled(token, user, role)
    }

    /// The caller a proxy token (ticket or cookie) stands for.
    pub async fn proxy_caller(&self, token: &str) -> HttpResult<Caller> {
        let (token, user, role) = self.authenticate(token).await?;
        if !token.kind.is_proxy() {
            return Err(HttpError::unauthorized("not a proxy ticket or cookie"));
        }
        self.enabled(token, user, role)
    }

    fn enabled(&self, token: TokenRecord, user: User, role: Role) -> HttpResult<Caller> {
        if !user.enabled {
            return Err(HttpError::unauthorized(format!("user {} is disabled", user.username)));
        }
        Ok(Caller { user, role, token, ctx: self.clone() })
    }

    pub async fn check_password(&self, user: &User, password: &str) -> HttpResult<bool> {
        self.0.sources.check(user, password).await.map_err(|e| match e {
            auth::AuthError::Unsupported(_) => HttpError::unauthorized(e.to_string()),
            auth::AuthError::Busy => HttpError::too_many(e.to_string(), Duration::from_secs(1)),
            other => HttpError::internal(other.to_string()),
        })
    }
}

pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// `30s`, `500ms`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num.trim().parse().ok()?;
    Some(Duration::from_millis(n.checked_mul(mult_ms)?))
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Debug, Default, Deserialize)]
pub struct ReadParams {
    pub consistent: Option<bool>,
    pub index: Option<u64>,
    pub wait: Option<String>,
}

/// Declares the query of a list route: its filters, then the read options
/// of [`ReadParams`] (spelled here once), refusing any other key; `read()`
/// gives the read options.
macro_rules! list_query {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$fm])* pub $f: $t, )*
            pub consistent: Option<bool>,
            pub index: Option<u64>,
            pub wait: Option<String>,
        }

        impl $name {
            pub fn read(&self) -> $crate::api::context::ReadParams {
                $crate::api::context::ReadParams { consistent: self.consistent, index: self.index, wait: self.wait.clone() }
            }
        }
    };
}
pub(crate) use list_query;

/// A 204 with the index of the write.
pub fn no_content(index: u64) -> Response {
    (axum::http::StatusCode::NO_CONTENT, [(INDEX_HEADER, index.to_string())]).into_response()
}

/// A value read at a replicated index.
pub struct Indexed<T> {
    pub value: T,
    pub index: u64,
    pub known_leader: bool,
    pub last_contact_ms: Option<u64>,
}

impl<T> Indexed<HttpResult<T>> {
    /// The read's own refusal (a 404, a 403) as the answer, else the value
    /// with its index.
    pub fn checked(self) -> HttpResult<Indexed<T>> {
        let value = self.value?;
        Ok(Indexed { value, index: self.index, known_leader: self.known_leader, last_contact_ms: self.last_contact_ms })
    }
}

pub const INDEX_HEADER: &str = "x-zoe-index";

fn index_headers(index: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(INDEX_HEADER, HeaderValue::from(index));
    h
}

impl<T: Serialize> IntoResponse for Indexed<T> {
    fn into_response(self) -> Response {
        let mut h = index_headers(self.index);
        h.insert("x-zoe-known-leader", HeaderValue::from_static(if self.known_leader { "true" } else { "false" }));
        if let Some(ms) = self.last_contact_ms {
            h.insert("x-zoe-last-contact", HeaderValue::from(ms));
        }
        (h, axum::Json(self.value)).into_response()
    }
}

/// A write's answer: status, body, and the index it was committed at.
pub struct WriteReply<T> {
    pub status: axum::http::StatusCode,
    pub value: T,
    pub index: u64,
}

impl<T: Serialize> IntoResponse for WriteReply<T> {
    fn into_response(self) -> Response {
        (self.status, index_headers(self.index), axum::Json(self.value)).into_response()
    }
}

pub fn ok<T>(value: T, index: u64) -> WriteReply<T> {
    WriteReply { status: axum::http::StatusCode::OK, value, index }
}

pub fn created<T>(value: T, index: u64) -> WriteReply<T> {
    WriteReply { status: axum::http::StatusCode::CREATED, value, index }
}

// ------------------------------------------------------------------ callers

/// An authenticated caller, with the context its call is served in (what
/// every handler needs besides the caller: one extractor for both).
#[derive(Clone)]
pub struct Caller {
    pub user: User,
    pub role: Role,
    pub token: TokenRecord,
    pub ctx: Ctx,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user", &self.user)
            .field("role", &self.role)
            .field("token", &self.token)
            .finish()
    }
}

impl Caller {
    pub fn caps(&self) -> Capabilities {
        self.role.capabilities
    }

    pub fn require(&self, ok: bool, what: &str) -> HttpResult<()> {
        if ok {
            Ok(())
        } else {
            Err(HttpError::forbidden(format!("user {} (role {}) may not {what}", self.user.username, self.role.name)))
        }
    }

    /// Users, roles and quotas administration.
    pub fn require_config(&self) -> HttpResult<()> {
        self.require(self.caps().can_change_config, "change the configuration (needs can_change_config)")
    }

    pub fn require_status(&self) -> HttpResult<()> {
        self.require(self.caps().can_see_status, "see the cluster status (needs can_see_status)")
    }

    /// The caller owns it or may operate others' executions.
    pub fn may_touch(&self, owner: &str) -> bool {
        self.user.username == owner || self.caps().can_operate_others
    }

    /// 403 unless [`Caller::may_touch`] `what` (e.g. "execution 7"), one of
    /// others' `kind` (e.g. "executions"). Who owns it is the owner's
    /// business: the answer does not say.
    pub fn require_touch(&self, owner: &str, what: impl std::fmt::Display, kind: &str) -> HttpResult<()> {
        if self.may_touch(owner) {
            return Ok(());
        }
        Err(HttpError::forbidden(format!(
            "{what} belongs to another user; user {} may not operate others' {kind}",
            self.user.username
        )))
    }
}

pub fn bearer(headers: &HeaderMap) -> HttpResult<Option<String>> {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let v = v.to_str().map_err(|_| HttpError::unauthorized("the Authorization header is not text"))?;
    match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            Ok(Some(t.trim().to_string()))
        }
        _ => Err(HttpError::unauthorized("use `Authorization: Bearer <token>`")),
    }
}

impl FromRequestParts<Ctx> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Caller, HttpError> {
        let token = bearer(&parts.headers)?.ok_or_else(|| {
            HttpError::unauthorized("this route needs a token: `Authorization: Bearer <token>` (see `zoe login`)")
        })?;
        let caller = ctx.caller(&token).await?;
        if !caller.role.capabilities.can_access_api {
            return Err(HttpError::forbidden(format!(
                "role {} may not use the API (can_access_api is off)",
                caller.role.name
            )));
        }
        Ok(caller)
    }
}

impl OptionalFromRequestParts<Ctx> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Option<Caller>, HttpError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            <Caller as FromRequestParts<Ctx>>::from_request_parts(parts, ctx).await.map(Some)
        } else {
            Ok(None)
        }
    }
}

// -------------------------------------------------------------------- bodies

/// A JSON object body, parsed by hand so that every problem becomes a 400
/// with a pointer (and an oversized body a 413), never a bare rejection.
pub struct Body(pub Map<String, Value>);

impl axum::extract::FromRequest<Ctx> for Body {
    type Rejection = HttpError;

    async fn from_request(req: axum::extract::Request, ctx: &Ctx) -> Result<Body, HttpError> {
        let limit = ctx.0.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
            // axum does not export http-body-util's LengthLimitError; its
            // text is stable and the only way to tell "too big" from "broken".
            let mut too_big = e.to_string().contains("length limit");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                too_big |= s.to_string().contains("length limit");
                src = s.source();
            }
            if too_big {
                HttpError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is larger than this coordinator's limit of {limit} bytes"),
                )
            } else {
                HttpError::bad_request(format!("could not read the request body: {e}"))
            }
        })?;
        if bytes.is_empty() {
            return Ok(Body(Map::new()));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            HttpError::invalid_field("", format!("not valid JSON: line {}, column {}: {e}", e.line(), e.column()))
        })?;
        match v {
            Value::Object(m) => Ok(Body(m)),
            other => Err(HttpError::invalid_field("", format!("expected a JSON object, got {}", type_name(&other)))),
        }
    }
}

/// A required string with something in it.
pub fn non_empty(path: &str, s: String) -> HttpResult<String> {
    if s.trim().is_empty() { Err(HttpError::invalid_field(path, "must not be empty")) } else { Ok(s) }
}

/// A JSON pointer (RFC 6901) from serde's path to the failing value.
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

impl Body {
    /// The body as the API type `T`: a key `T` does not take is refused
    /// with the list it does take, a missing one as required, a wrong type
    /// at its pointer.
    pub fn parse<T: serde::de::DeserializeOwned + zoe_api::schema::Doc>(self) -> HttpResult<T> {
        if let Some(fields) = T::fields() {
            self.only(&fields)?;
        }
        // `null` is "not given", as `Body::get` reads it. Taken, not
        // copied: a submission's ZApp can be large.
        let given: Map<String, Value> = self.0.into_iter().filter(|(_, v)| !v.is_null()).collect();
        serde_path_to_error::deserialize(Value::Object(given)).map_err(|e| {
            let at = pointer(e.path());
            let msg = e.inner().to_string();
            match msg.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
                Some(field) => HttpError::invalid_field(&format!("{at}/{field}"), "is required"),
                None => HttpError::invalid_field(&at, msg),
            }
        })
    }

    /// Refuses keys outside `allowed`: a typo must not be silently ignored.
    pub fn only(&self, allowed: &[&str]) -> HttpResult<()> {
        for k in self.0.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(HttpError::invalid_field(
                    &format!("/{k}"),
                    format!("unknown field; expected one of: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    pub fn str(&self, k: &str) -> HttpResult<Option<String>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => {
                Err(HttpError::invalid_field(&format!("/{k}"), format!("expected a string, got {}", type_name(v))))
            }
        }
    }

    pub fn req_str(&self, k: &str) -> HttpResult<String> {
        match self.str(k)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(HttpError::invalid_field(&format!("/{k}"), "must not be empty")),
            None => Err(HttpError::invalid_field(&format!("/{k}"), "is required")),
        }
    }

    pub fn u64(&self, k: &str) -> HttpResult<Option<u64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                HttpError::invalid_field(
                    &format!("/{k}"),
                    format!("expected a non-negative integer, got {}", type_name(v)),
                )
            }),
        }
    }

    pub fn f64(&self, k: &str) -> HttpResult<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(Some)
                .ok_or_else(|| HttpError::invalid_field(&format!("/{k}"), "expected a non-negative number")),
        }
    }

    pub fn i64(&self, k: &str) -> HttpResult<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                HttpError::invalid_field(&format!("/{k}"), format!("expected an integer, got {}", type_name(v)))
            }),
        }
    }

    pub fn bool(&self, k: &str) -> HttpResult<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => {
                Err(HttpError::invalid_field(&format!("/{k}"), format!("expected a boolean, got {}", type_name(v))))
            }
        }
    }
}

/// The client's address as the TCP connection shows it (never a
/// forwarded-for header, which the client writes itself); `None` when the
/// server was not started with connection info (a handler called in-process).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl ClientAddr {
    pub fn of(ext: &axum::http::Extensions) -> ClientAddr {
        ClientAddr(ext.get::<axum::extract::ConnectInfo<Peer>>().map(|c| c.0.0.ip()))
    }
}

/// The connection info the API server records for each connection (plain
/// TCP or TLS alike): the peer's socket address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'a, tokio::net::TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::of(&parts.extensions))
    }
}
