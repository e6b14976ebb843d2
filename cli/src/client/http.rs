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
    /// Coordinator API address (any coordinator will do) [default: http://127.0.0.1:5001, or the config file's].
    #[arg(long, global = true, env = "ZOE_ADDR", value_name = "URL")]
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
    pub base: String,
    token: Option<String>,
    http: reqwest::Client,
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
        Ok(Client { base: normalise(&addr), token, http: builder.build()? })
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends and returns the response if 2xx, else the API's error.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            let mut msg = format!("cannot reach zoe at {}: {e}", self.base);
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            anyhow!("{msg}\n  hint: is a coordinator running there? set --addr or ZOE_ADDR")
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let e = &v["error"];
        let failure = ApiFailure {
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
        };
        Err(failure.into())
    }

    /// A JSON call; `Value::Null` for an empty (204) answer. Returns the
    /// body and the `X-Zoe-Index` header.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(Value, Option<u64>)> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req).await?;
        let index = resp.headers().get("x-zoe-index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let bytes = resp.bytes().await?;
        let v = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((v, index))
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

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_get_a_scheme() {
        assert_eq!(super::normalise("127.0.0.1:5001"), "http://127.0.0.1:5001");
        assert_eq!(super::normalise("zoe.example.org:5001/"), "https://zoe.example.org:5001");
        assert_eq!(super::normalise("https://x:1"), "https://x:1");
    }
}
