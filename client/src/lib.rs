//! The one client of zoe's REST API.
//!
//! A [`Client`] knows every coordinator address it was given and fails
//! over between them. A call that certainly did not apply (no connection,
//! no leader, shutting down) is tried on the next one; a call whose outcome
//! is unknown (lost answer, timeout) is repeated only when a repeat cannot
//! apply twice: reads, PUT/PATCH/DELETE, and POSTs carrying an
//! `Idempotency-Key` ([`Client::post_once`]). Refusals come back as
//! [`ApiFailure`], the API's error body with its status.
//!
//! Typed calls ([`Client::get_as`], [`Client::execution`], …) decode into
//! `zoe-api`'s types, so a field renamed on the server fails to compile
//! here rather than reading as zero.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use zoe_api::error::ErrorBody;

pub use reqwest;

/// Where a client points when given no address.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:5001";

/// How long a call keeps failing over and retrying before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error.
    #[error(transparent)]
    Api(#[from] ApiFailure),
    #[error("cannot reach zoe at {base}: {message}\n  hint: is a coordinator running there? set --addr or ZOE_ADDR")]
    Unreachable { base: String, message: String },
    #[error("reading the answer of {path}: {message}")]
    Decode { path: String, message: String },
    #[error("CA file: {0}")]
    Ca(String),
    #[error("HTTP client: {0}")]
    Http(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A refused or failed call: the API's error body and the HTTP status.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: Option<StatusCode>,
    pub code: String,
    pub message: String,
    /// (JSON pointer, message) per offending field.
    pub details: Vec<(String, String)>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for (p, m) in &self.details {
            write!(f, "\n  {}: {m}", if p.is_empty() { "/" } else { p })?;
        }
        let hint = match (self.status.map(|s| s.as_u16()), self.code.as_str()) {
            (Some(401), _) => Some("log in with `zoe login`, or pass --token / set ZOE_TOKEN"),
            (Some(403), _) => Some("ask an admin for a role with that capability"),
            (Some(503), "no_leader") => Some("the cluster has no leader right now; retry in a few seconds"),
            (Some(409), "quota_exceeded") => Some("terminate an execution, or ask an admin for a larger quota"),
            _ => None,
        };
        if let Some(h) = hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl ApiFailure {
    /// Reads the API's error body; anything else becomes its text.
    pub fn from_body(status: StatusCode, text: &str) -> ApiFailure {
        match serde_json::from_str::<ErrorBody>(text) {
            Ok(b) => ApiFailure {
                status: Some(status),
                code: b.error.code,
                message: b.error.message,
                details: b.error.details.into_iter().map(|d| (d.path, d.message)).collect(),
            },
            Err(_) => ApiFailure {
                status: Some(status),
                code: String::new(),
                message: format!("HTTP {status}: {text}"),
                details: Vec::new(),
            },
        }
    }
}

/// Where and as whom.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Coordinator addresses, in the order to try them (a scheme is added
    /// when missing: `http://` on loopback, `https://` elsewhere).
    pub addrs: Vec<String>,
    pub token: Option<String>,
    /// CA certificates (PEM) to trust for HTTPS instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Per-request timeout (none: only the connect timeout).
    pub timeout: Option<Duration>,
}

impl ClientConfig {
    /// One address (or several, comma-separated).
    pub fn new(addrs: &str) -> ClientConfig {
        ClientConfig { addrs: addrs.split(',').map(str::to_string).collect(), ..ClientConfig::default() }
    }

    pub fn token(mut self, token: impl Into<String>) -> ClientConfig {
        self.token = Some(token.into());
        self
    }
}

/// An answer as it came, for callers that check statuses and headers (the
/// cluster tests) rather than turn errors into messages.
#[derive(Debug, Clone)]
pub struct Raw {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body; `Null` when empty, a string when not JSON.
    pub body: Value,
}

impl Raw {
    /// The `X-Zoe-Index` header: the Raft index the answer reflects.
    pub fn index(&self) -> Option<u64> {
        index_of(&self.headers)
    }
}

fn index_of(h: &reqwest::header::HeaderMap) -> Option<u64> {
    h.get("x-zoe-index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// A new `Idempotency-Key` for one submission: its retries share it.
pub fn new_idempotency_key() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("zoe-cli-{}-{nanos:x}", std::process::id())
}

/// What a failed attempt means for a retry.
enum Attempt {
    Done(Result<reqwest::Response>),
    /// Certainly not applied (no connection, no leader): retry anywhere.
    NotApplied(Error),
    /// Maybe applied (lost answer, timeout): retry only when that is safe.
    Unknown(Error),
}

fn normalise(addr: &str) -> String {
    let a = addr.trim().trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        return a.to_string();
    }
    // Without a scheme: plain HTTP only makes sense on loopback.
    let host = a.split(':').next().unwrap_or("");
    if host == "localhost" || host.starts_with("127.") || host == "[::1]" {
        format!("http://{a}")
    } else {
        format!("https://{a}")
    }
}

pub struct Client {
    /// The first address given (shown by `zoe status`, saved by `zoe login`).
    pub base: String,
    /// Every address given, in order.
    pub bases: Vec<String>,
    /// Index of the address tried first: the last one that answered.
    preferred: AtomicUsize,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(config: &ClientConfig) -> Result<Client> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(t) = config.timeout {
            builder = builder.timeout(t);
        }
        let builder = match &config.ca_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut &pem[..]) {
                    let c = c.map_err(|e| Error::Ca(e.to_string()))?;
                    roots.add(c).map_err(|e| Error::Ca(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(Error::Ca("no CERTIFICATE block".into()));
                }
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Http(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.use_preconfigured_tls(tls)
            }
            None => {
                // The system's trust store through reqwest's platform
                // verifier; ring is the only provider in this build.
                let _ = rustls::crypto::ring::default_provider().install_default();
                builder
            }
        };
        let bases: Vec<String> = config.addrs.iter().filter(|a| !a.trim().is_empty()).map(|a| normalise(a)).collect();
        let bases = if bases.is_empty() { vec![DEFAULT_ADDR.to_string()] } else { bases };
        let http = builder.build().map_err(|e| Error::Http(e.to_string()))?;
        Ok(Client {
            base: bases[0].clone(),
            bases,
            preferred: AtomicUsize::new(0),
            token: config.token.clone().filter(|t| !t.trim().is_empty()),
            http,
        })
    }

    /// The same coordinators as someone else (another token, or none).
    pub fn with_token(&self, token: Option<String>) -> Client {
        Client {
            base: self.base.clone(),
            bases: self.bases.clone(),
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            token,
            http: self.http.clone(),
        }
    }

    /// Other coordinators, over the same connection pool and as the same caller.
    pub fn at(&self, addrs: &[String]) -> Client {
        let bases: Vec<String> = addrs.iter().map(|a| normalise(a)).collect();
        Client {
            base: bases.first().cloned().unwrap_or_else(|| DEFAULT_ADDR.to_string()),
            bases,
            preferred: AtomicUsize::new(0),
            token: self.token.clone(),
            http: self.http.clone(),
        }
    }

    /// One attempt of `method path` on `base`.
    async fn attempt(
        &self,
        base: &str,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Attempt {
        let mut req = self.on(base, method.clone(), path);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Err(e) if e.is_connect() => Attempt::NotApplied(unreachable(base, &e)),
            Err(e) => Attempt::Unknown(unreachable(base, &e)),
            Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => match Self::failure(resp).await {
                f if matches!(f.code.as_str(), "no_leader" | "shutting_down") => Attempt::NotApplied(f.into()),
                f => Attempt::Unknown(f.into()),
            },
            Ok(resp) if resp.status().is_success() => Attempt::Done(Ok(resp)),
            Ok(resp) => Attempt::Done(Err(Self::failure(resp).await.into())),
        }
    }

    /// Sends `method path` to the coordinators in turn until one takes it:
    /// calls that certainly did not apply (no connection, no leader) are
    /// retried on the next coordinator, and so are calls of unknown outcome
    /// when a repeat is harmless (GET, PUT, DELETE, PATCH, or a request
    /// with an idempotency key). Gives up after 30 s.
    async fn send_retrying(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<reqwest::Response> {
        let repeatable = key.is_some() || method != Method::POST;
        let deadline = std::time::Instant::now() + RETRY_FOR;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut k = 0usize;
        loop {
            let i = (first + k) % self.bases.len();
            let err = match self.attempt(&self.bases[i], &method, path, body, key).await {
                Attempt::Done(r) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return r;
                }
                Attempt::NotApplied(e) => e,
                Attempt::Unknown(e) if repeatable => e,
                Attempt::Unknown(e) => return Err(e),
            };
            k += 1;
            if std::time::Instant::now() >= deadline {
                return Err(err);
            }
            if k.is_multiple_of(self.bases.len()) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    async fn failure(resp: reqwest::Response) -> ApiFailure {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        ApiFailure::from_body(status, &text)
    }

    async fn json_of(path: &str, resp: reqwest::Response) -> Result<(Value, Option<u64>)> {
        let index = index_of(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| Error::Decode { path: path.into(), message: e.to_string() })?;
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| Error::Decode { path: path.into(), message: e.to_string() })?
        };
        Ok((v, index))
    }

    /// Submits a POST with a fresh idempotency key, retried (failover,
    /// 503s, lost answers) without ever applying twice.
    pub async fn post_once(&self, path: &str, body: &Value) -> Result<Value> {
        self.post_keyed(path, body, &new_idempotency_key()).await
    }

    /// A POST under the caller's idempotency key (one key per intent:
    /// retries of it, even by another process, apply once).
    pub async fn post_keyed(&self, path: &str, body: &Value, key: &str) -> Result<Value> {
        let resp = self.send_retrying(Method::POST, path, Some(body), Some(key)).await?;
        Ok(Self::json_of(path, resp).await?.0)
    }

    /// `method path` on `base`, as this client's caller.
    fn on(&self, base: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{base}{path}"));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// A request on the preferred coordinator, for streams and uploads.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.on(&self.bases[self.preferred.load(Ordering::Relaxed) % self.bases.len()], method, path)
    }

    /// Sends once (streams: logs, uploads) and returns the response if
    /// 2xx, else the API's error.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| unreachable(&self.base, &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(Self::failure(resp).await.into())
    }

    /// One exchange with coordinator `i` (of [`Client::bases`]) as it came:
    /// no failover, no retry, errors as statuses. `None` when it cannot be
    /// reached.
    pub async fn raw_on(&self, i: usize, method: Method, path: &str, body: Option<&Value>) -> Option<Raw> {
        let mut req = self.on(&self.bases[i % self.bases.len()], method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.ok()?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Some(Raw { status, headers, body })
    }

    /// A JSON call, failed over and retried where that is safe (see
    /// [`Client::send_retrying`]); `Value::Null` for an empty (204) answer.
    /// Returns the body and the `X-Zoe-Index` header.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(Value, Option<u64>)> {
        let resp = self.send_retrying(method, path, body, None).await?;
        Self::json_of(path, resp).await
    }

    /// A GET whose body is read as a stream (logs), failed over and
    /// retried like any GET until the answer starts.
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response> {
        self.send_retrying(Method::GET, path, None, None).await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.call(Method::GET, path, None).await?.0)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.call(Method::POST, path, Some(body)).await?.0)
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.call(Method::PATCH, path, Some(body)).await?.0)
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        Ok(self.call(Method::DELETE, path, None).await?.0)
    }

    /// A GET decoded as the API type `T`.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let v = self.get(path).await?;
        decode(path, v)
    }

    /// A call with a typed body, decoded as the API type `T`.
    pub async fn send_as<B: Serialize, T: DeserializeOwned>(&self, method: Method, path: &str, body: &B) -> Result<T> {
        let b = serde_json::to_value(body).map_err(|e| Error::Decode { path: path.into(), message: e.to_string() })?;
        let (v, _) = self.call(method, path, Some(&b)).await?;
        decode(path, v)
    }

    // ----------------------------------------------------- typed calls

    /// Submits once (an idempotency key guards the retries).
    pub async fn submit(
        &self,
        req: &zoe_api::execution::StartExecution,
    ) -> Result<zoe_api::execution::ExecutionCreated> {
        let path = "/api/v1/executions";
        let b = serde_json::to_value(req).map_err(|e| Error::Decode { path: path.into(), message: e.to_string() })?;
        decode(path, self.post_once(path, &b).await?)
    }

    pub async fn execution(&self, id: u64) -> Result<zoe_api::execution::ExecutionView> {
        self.get_as(&format!("/api/v1/executions/{id}")).await
    }

    pub async fn terminate(&self, id: u64, reason: Option<String>) -> Result<zoe_api::execution::TerminationAccepted> {
        let body = zoe_api::execution::TerminateExecution { reason };
        self.send_as(Method::POST, &format!("/api/v1/executions/{id}/terminate"), &body).await
    }

    pub async fn nodes(&self) -> Result<Vec<zoe_api::node::NodeView>> {
        self.get_as("/api/v1/nodes").await
    }

    pub async fn scheduler_stats(&self) -> Result<zoe_api::stats::SchedulerStats> {
        self.get_as("/api/v1/statistics/scheduler").await
    }
}

fn decode<T: DeserializeOwned>(path: &str, v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Decode { path: path.into(), message: e.to_string() })
}

fn unreachable(base: &str, e: &reqwest::Error) -> Error {
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::Unreachable { base: base.to_string(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme() {
        assert_eq!(normalise("127.0.0.1:5001"), "http://127.0.0.1:5001");
        assert_eq!(normalise("zoe.example.org:5001/"), "https://zoe.example.org:5001");
        assert_eq!(normalise("https://x:1"), "https://x:1");
    }

    #[test]
    fn an_error_body_becomes_a_failure_with_its_pointers() {
        let text = r#"{"error":{"code":"invalid","message":"/name: is required","details":[{"path":"/name","message":"is required"}]}}"#;
        let f = ApiFailure::from_body(StatusCode::BAD_REQUEST, text);
        assert_eq!((f.code.as_str(), f.details.len()), ("invalid", 1));
        let g = ApiFailure::from_body(StatusCode::BAD_GATEWAY, "<html>");
        assert!(g.message.contains("502"), "{}", g.message);
    }
}
