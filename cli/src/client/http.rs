//! Talking to a coordinator's REST API: where (address, CA), as whom
//! (token), and turning the API's JSON errors into messages that say what
//! to do next.

use anyhow::{Context, Result, anyhow};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
pub use zoe_client::{Client, ClientConfig, DEFAULT_ADDR};

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

/// A client for the coordinators `conn` (or the config file) names, as
/// the token it gives.
pub fn connect(conn: &Conn) -> Result<Client> {
    let file = FileConfig::load()?;
    let addr = conn.addr.clone().or(file.addr).unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let token = conn.token.clone().or(file.token);
    let ca_pem = match conn.ca_file.clone().or(file.ca_file) {
        Some(path) => Some(std::fs::read(&path).with_context(|| format!("CA file {}", path.display()))?),
        None => None,
    };
    let config = ClientConfig { ca_pem, token, ..ClientConfig::new(&addr) };
    Ok(Client::new(&config)?)
}
