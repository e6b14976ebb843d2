//! Talking to a coordinator's REST API: where (address, CA), as whom
//! (token), and turning the API's JSON errors into messages that say what
//! to do next.

use anyhow::{Context, Result, anyhow};
use clap::Args;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ADDR: &str = "http://127.0.0.1:5001";

/// Connection options shared by every command that talks to a coordinator.
#[derive(Args, Clone, Debug, Default)]
pub struct Conn {
    /// Coordinator API address(es), comma-separated (any coordinator will
    /// do; calls fail over to the next) [default: http://127.0.0.1:5001, or the config file's].
    #[arg(long, global = true, env = "ZOE_ADDR", value_name = "URL[,URL...]")]
    pub addr: Option<String>,
    /// API token (`zoe login` or `zoe token create` gives one) [default: the config file's].
    #[arg(long, global = true, env = "ZOE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for HTTPS, e.g. the cluster's ca.pem [default: system roots].
    #[arg(long, global = true, env = "ZOE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `~/.config/zoe/config.toml` (or `$XDG_CONFIG_HOME/zoe/config.toml`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<String>,
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
}

pub fn config_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ZOE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("zoe").join("config.toml"))
}

impl FileConfig {
    pub fn load() -> Result<FileConfig> {
        let Some(p) = config_path() else { return Ok(FileConfig::default()) };
        match std::fs::read_to_string(&p) {
            Ok(t) => toml::from_str(&t).with_context(|| format!("{}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(e) => Err(e).with_context(|| format!("{}", p.display())),
        }
    }

    /// Writes the file with mode 0600: it holds a token.
    pub fn save(&self) -> Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = config_path().ok_or_else(|| anyhow!("no HOME: cannot find where to save the config"))?;
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("{}", d.display()))?;
        }
        let text = toml::to_string(self)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("{}", p.display()))?;
        f.write_all(text.as_bytes())?;
        Ok(p)
    }
}

/// A failed API call, with the exit code it maps to.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: Option<StatusCode>,
    pub code: String,
    pub message: String,
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

pub struct Client {
    /// The first address given (shown by `zoe status`, saved by `zoe login`).
    pub base: String,
    /// Every address given, in order.
    pub bases: Vec<String>,
    /// Index of the address tried first: the last one that answered.
    preferred: std::sync::atomic::AtomicUsize,
    token: Option<String>,
    http: reqwest::Client,
}

/// How long a call keeps failing over and retrying before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// A new `Idempotency-Key` for one submission: its retries share it.
pub fn new_idempotency_key() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("zoe-cli-{}-{nanos:x}", std::process::id())
}

/// What a failed attempt means for a retry.
enum Attempt {
    Done(Result<reqwest::Response>),
    /// Certainly not applied (no connection, no leader): retry anywhere.
    NotApplied(anyhow::Error),
    /// Maybe applied (lost answer, timeout): retry only when that is safe.
    Unknown(anyhow::Error),
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

impl Client {
    pub fn new(conn: &Conn) -> Result<Client> {
        let file = FileConfig::load()?;
        let addr = conn.addr.clone().or(file.addr).unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let token = conn.token.clone().or(file.token).filter(|t| !t.trim().is_empty());
        let ca = conn.ca_file.clone().or(file.ca_file);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        let builder = match ca {
            Some(path) => {
                let pem = std::fs::read(&path).with_context(|| format!("CA file {}", path.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut &pem[..]) {
                    roots.add(c.with_context(|| format!("CA file {}", path.display()))?)?;
                }
                if roots.is_empty() {
                    anyhow::bail!("CA file {}: no CERTIFICATE block", path.display());
                }
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
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
        let bases: Vec<String> = addr.split(',').filter(|a| !a.trim().is_empty()).map(normalise).collect();
        let base = bases.first().cloned().unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let preferred = std::sync::atomic::AtomicUsize::new(0);
        Ok(Client { base, bases, preferred, token, http: builder.build()? })
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
        let mut req = self.http.request(method.clone(), format!("{base}{path}"));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
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
        let first = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        let mut k = 0usize;
        loop {
            let i = (first + k) % self.bases.len();
            let err = match self.attempt(&self.bases[i], &method, path, body, key).await {
                Attempt::Done(r) => {
                    self.preferred.store(i, std::sync::atomic::Ordering::Relaxed);
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
            if k % self.bases.len() == 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    /// Submits a POST with a fresh idempotency key, retried (failover,
    /// 503s, lost answers) without ever applying twice.
    pub async fn post_once(&self, path: &str, body: &Value) -> Result<Value> {
        let key = new_idempotency_key();
        let resp = self.send_retrying(Method::POST, path, Some(body), Some(&key)).await?;
        let bytes = resp.bytes().await?;
        Ok(if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? })
    }

    async fn failure(resp: reqwest::Response) -> ApiFailure {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let e = &v["error"];
        ApiFailure {
            status: Some(status),
            code: e["code"].as_str().unwrap_or("").to_string(),
            message: e["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}: {text}")),
            details: e["details"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|x| {
                            (
                                x["path"].as_str().unwrap_or("").to_string(),
                                x["message"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let base = &self.bases[self.preferred.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()];
        let r = self.http.request(method, format!("{base}{path}"));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
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

    /// A JSON call, failed over and retried where that is safe (see
    /// [`Client::send_retrying`]); `Value::Null` for an empty (204) answer.
    /// Returns the body and the `X-Zoe-Index` header.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(Value, Option<u64>)> {
        let resp = self.send_retrying(method, path, body, None).await?;
        let index = resp.headers().get("x-zoe-index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let bytes = resp.bytes().await?;
        let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((v, index))
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
}

fn unreachable(base: &str, e: &reqwest::Error) -> anyhow::Error {
    let mut msg = format!("cannot reach zoe at {base}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    anyhow!("{msg}\n  hint: is a coordinator running there? set --addr or ZOE_ADDR")
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_get_a_scheme() {
        assert_eq!(super::normalise("127.0.0.1:5001"), "http://127.0.0.1:5001");
        assert_eq!(super::normalise("zoe.example.org:5001/"), "https://zoe.example.org:5001");
        assert_eq!(super::normalise("https://x:1"), "https://x:1");
    }
}
