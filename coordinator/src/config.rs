//! The coordinator's configuration file (TOML).
//!
//! ```toml
//! id = 1
//! name = "c1"                      # the name in this node's certificate
//! listen = "0.0.0.0:4647"          # QUIC: Raft, client and admin RPC
//! advertise = "10.0.0.1:4647"      # optional; default = listen
//! data_dir = "/var/lib/zoe/coordinator"
//!
//! [tls]
//! ca = "/etc/zoe/tls/ca.pem"
//! cert = "/etc/zoe/tls/coordinator.pem"
//! key = "/etc/zoe/tls/coordinator-key.pem"
//!
//! [[peers]]                        # the initial members, this node included
//! id = 1
//! addr = "10.0.0.1:4647"
//! name = "c1"
//!
//! [raft]                           # optional tuning, defaults shown
//! heartbeat_ms = 100
//! election_timeout_min_ms = 400
//! election_timeout_max_ms = 800
//! snapshot_every_logs = 10000
//! trailing_logs = 5000
//!
//! [api]                            # optional REST API settings, defaults shown
//! listen = "127.0.0.1:5001"        # plain HTTP only on loopback; set tls_* otherwise
//! tls_cert = "coordinator.pem"     # optional: serve HTTPS with this certificate
//! tls_key = "coordinator-key.pem"
//! body_limit_bytes = 4194304       # larger request bodies get 413
//! auth_file = "zoepass.csv"        # optional read-only `username,password` file
//! registries = ["registry.example:5000", "zoe.local"]  # images ZApps may name; default: any
//! memory_default_bytes = 4294967296  # limit of a service whose ZApp gives no memory
//!
//! [api.login]                      # optional login throttling, defaults shown
//! failures_per_user = 10           # then 429 for that username until the window ends
//! attempts_per_client = 30         # logins per client address per window
//! window_s = 300
//!
//!
//! [api.web]                        # optional web UI, served by the API's listener under /ui/
//! enabled = true
//! shop_dir = "/var/lib/zoe/shop"   # ZApp shop packages (Zoe's manifest format); unset = empty shop
//!
//! [api.proxy]                      # optional reverse proxy to services' web ports (off when unset)
//! listen = "0.0.0.0:5002"          # its own listener: a separate origin from the UI and API
//! url = "https://proxy.zoe.example:5002"   # how browsers reach it; default: from listen
//! ui_url = "https://zoe.example:5001"      # how browsers reach the UI (for logins); default: from [api] listen
//!
//! [agents]                         # optional agent protocol settings, defaults shown
//! listen = "0.0.0.0:4648"          # default: the Raft listen address, port + 1
//! advertise = "10.0.0.1:4648"      # what followers redirect agents to; default = listen
//! heartbeat_ms = 2000
//! ttl_ms = 10000                   # a node is marked down after ttl + grace without heartbeats
//! grace_ms = 10000
//! failover_grace_ms = 30000        # after an election, nodes are not judged for this long
//! orphan_grace_ms = 60000          # running containers unknown to zoe are stopped after this
//! stop_grace_ms = 10000
//! spawn_timeout_ms = 600000
//!
//! [leader]                         # optional leader loop and scheduler settings
//! tick_ms = 1000                   # see `leader::LeaderConfig` for all keys
//!
//! [leader.scheduler]               # optional; see `scheduler::SchedulerConfig`, docs/scheduling.md
//! policy = "size"                  # fifo | size | dynsize | fairshare
//! preemption = true                # elastic-only preemption
//! reservation_after_s = 3600       # a reservation for what waited this long; unset: none
//!
//! [backup]                         # optional scheduled snapshots on the leader
//! dir = "/var/lib/zoe/backups"     # unset: none
//! interval_s = 3600
//! keep = 24
//!
//! [gc]                             # optional garbage collection on the leader, defaults shown
//! interval_s = 60
//! execution_retention_s = 604800   # ended executions are deleted 7 days after they ended; 0 = never
//! ```

use crate::raft::{CoordNode, NodeId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zoe_common::config::Settings;

pub use zoe_common::config::{ConfigError, Invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    pub id: NodeId,
    pub name: String,
    pub listen: SocketAddr,
    #[serde(default)]
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub tls: TlsFiles,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub raft: RaftTuning,
    #[serde(default)]
    pub api: ApiSettings,
    /// The agent listener, liveness and reconciliation (`[agents]`).
    #[serde(default)]
    pub agents: crate::agents::AgentSettings,
    /// The leader's lifecycle loop and scheduler (`[leader]`).
    #[serde(default)]
    pub leader: crate::leader::LeaderConfig,
    /// Scheduled snapshots on the leader (`[backup]`).
    #[serde(default)]
    pub backup: crate::backup::BackupSettings,
    #[serde(default)]
    pub gc: crate::gc::GcSettings,
}

/// The REST API's listener and limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Default 127.0.0.1:5001. When left unset and that port is taken, the
    /// coordinator runs without its API (with a warning) instead of failing,
    /// so several dev coordinators can share a host; an explicit address
    /// that cannot be bound is an error.
    pub listen: Option<SocketAddr>,
    /// Certificate and key (PEM) for HTTPS; both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Request bodies larger than this are refused with 413.
    pub body_limit_bytes: usize,
    /// Zoe's read-only text-file auth source: lines `username,password`.
    pub auth_file: Option<PathBuf>,
    /// The web UI (`[api.web]`).
    pub web: WebSettings,
    /// The reverse proxy to services (`[api.proxy]`).
    pub proxy: ProxySettings,
    /// Login throttling (`[api.login]`).
    pub login: crate::auth::throttle::LoginLimits,
    /// Registries whose images ZApps may name (`host` or `host:port`);
    /// empty: any. Agents check again with their own `[security] registries`.
    pub registries: Vec<String>,
    /// The memory limit of a service whose ZApp gives none (`min` and
    /// `max` null), set at submission so that its quota counts it; at most
    /// the quota's per-service ceiling, for users it binds.
    pub memory_default_bytes: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: None,
            tls_cert: None,
            tls_key: None,
            body_limit_bytes: 4 * 1024 * 1024,
            auth_file: None,
            web: WebSettings::default(),
            proxy: ProxySettings::default(),
            login: Default::default(),
            registries: Vec::new(),
            memory_default_bytes: 4 << 30,
        }
    }
}

impl ApiSettings {
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5001);

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or(Self::DEFAULT_LISTEN)
    }
}

/// The web UI, served by the API's listener under `/ui/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSettings {
    pub enabled: bool,
    /// Directory of ZApp shop packages: each sub-directory with a
    /// `manifest.json` (Zoe's `zapp-shop-path`). Unset: the shop is empty.
    pub shop_dir: Option<PathBuf>,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings { enabled: true, shop_dir: None }
    }
}

/// The authenticating reverse proxy to services' web ports
/// (`/{execution}/{service}/{port}/...`), on a listener of its own so that
/// a service's pages never share an origin with the UI (see
/// `docs/security.md`). It serves HTTPS with `[api] tls_cert` when set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Unset: no proxy.
    pub listen: Option<SocketAddr>,
    /// The proxy's base URL as browsers reach it (links, redirects).
    /// Default: `http(s)://<listen>`. Its host name must differ from the
    /// UI's: browsers send a host's cookies to all its ports.
    pub url: Option<String>,
    /// The UI's base URL as browsers reach it, where the proxy sends a
    /// visitor without a proxy cookie to log in. Default: `http(s)://<[api] listen>`.
    pub ui_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: NodeId,
    pub addr: String,
    pub name: String,
}

/// Raft timing and log retention. The defaults follow Nomad's ratio of a
/// heartbeat well inside the election timeout, scaled down for a LAN.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every_logs: u64,
    /// Log entries kept behind the latest snapshot, so a briefly lagging
    /// follower catches up from the log instead of a whole snapshot.
    pub trailing_logs: u64,
    /// Snapshot chunk size when streaming to a lagging follower.
    pub snapshot_chunk_bytes: u64,
    /// How long a write may wait for a leader before it fails.
    pub write_timeout_ms: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every_logs: 10_000,
            trailing_logs: 5_000,
            snapshot_chunk_bytes: 1024 * 1024,
            write_timeout_ms: 10_000,
        }
    }
}

impl CoordinatorConfig {
    /// Reads and checks a config file. Relative paths inside it are taken
    /// relative to the file's directory, so a config and its certificates
    /// can move together.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        zoe_common::config::load(path)
    }

    /// The address other members use to reach this node.
    pub fn advertised_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    pub fn self_node(&self) -> CoordNode {
        CoordNode { addr: self.advertised_addr(), name: self.name.clone() }
    }
}

/// Relative paths inside the file are taken relative to the file's
/// directory, so a config and its certificates can move together.
impl Settings for CoordinatorConfig {
    fn paths(&mut self) -> Vec<&mut PathBuf> {
        let api = &mut self.api;
        let mut v = vec![&mut self.data_dir, &mut self.tls.ca, &mut self.tls.cert, &mut self.tls.key];
        v.extend(
            [&mut api.tls_cert, &mut api.tls_key, &mut api.auth_file, &mut api.web.shop_dir].into_iter().flatten(),
        );
        v
    }

    fn validate(&self) -> Result<(), Invalid> {
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            return Err(Invalid::new("raft.election_timeout_min_ms", "must exceed raft.heartbeat_ms (> 0)"));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(Invalid::new("raft.election_timeout_max_ms", "must exceed raft.election_timeout_min_ms"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.peers {
            if !ids.insert(p.id) {
                return Err(Invalid::new("peers", format!("id {} listed twice", p.id)));
            }
            if p.id == self.id && p.name != self.name {
                let why = format!("entry for this node (id {}) names {:?}, not {:?}", p.id, p.name, self.name);
                return Err(Invalid::new("peers", why));
            }
        }
        if !self.peers.is_empty() && !ids.contains(&self.id) {
            return Err(Invalid::new("peers", format!("must include this node (id {})", self.id)));
        }
        let api = &self.api;
        if api.tls_cert.is_some() != api.tls_key.is_some() {
            return Err(Invalid::new("api.tls_cert", "goes with api.tls_key"));
        }
        // Tokens and passwords travel in headers: plain HTTP only where no
        // one else can listen (Nomad's dev mode does the same). The service
        // proxy carries the same tokens, and cookies besides.
        for (field, addr) in [("api.listen", Some(api.listen_addr())), ("api.proxy.listen", api.proxy.listen)] {
            if let Some(a) = addr
                && api.tls_cert.is_none()
                && !a.ip().is_loopback()
            {
                let why = format!("{a} is not a loopback address: set api.tls_cert and api.tls_key to serve HTTPS");
                return Err(Invalid::new(field, why));
            }
        }
        for (field, url) in [("api.proxy.url", &api.proxy.url), ("api.proxy.ui_url", &api.proxy.ui_url)] {
            if let Some(u) = url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return Err(Invalid::new(field, format!("`{u}` is not an http:// or https:// URL")));
            }
        }
        if api.body_limit_bytes < 1024 {
            return Err(Invalid::new("api.body_limit_bytes", "must be at least 1024"));
        }
        if api.memory_default_bytes < 6 << 20 {
            return Err(Invalid::new("api.memory_default_bytes", "must be at least 6 MiB (runc's minimum)"));
        }
        if self.leader.scheduler.fair_share_half_life_s == 0 {
            return Err(Invalid::new("leader.scheduler.fair_share_half_life_s", "must be at least 1 s"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Policy, StopRule};

    #[test]
    fn the_sample_config_loads_and_selects_the_scheduler_policies() {
        let sample = include_str!("../../systemd/coordinator.toml");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, sample).unwrap();
        let cfg = CoordinatorConfig::load(&path).unwrap();
        assert_eq!(cfg.leader.scheduler, crate::scheduler::SchedulerConfig::default(), "the sample shows the defaults");
        let chosen = sample
            .replace("policy = \"fifo\"", "policy = \"fairshare\"")
            .replace("stop_rule = \"essential_fits\"", "stop_rule = \"greedy\"")
            .replace("preemption = false", "preemption = true")
            .replace("# reservation_after_s = 3600", "reservation_after_s = 3600");
        std::fs::write(&path, chosen).unwrap();
        let s = CoordinatorConfig::load(&path).unwrap().leader.scheduler;
        assert_eq!(
            (s.policy, s.stop_rule, s.preemption, s.reservation_after_s),
            (Policy::FairShare, StopRule::Greedy, true, Some(3600))
        );
        std::fs::write(&path, sample.replace("fair_share_half_life_s = 86400", "fair_share_half_life_s = 0")).unwrap();
        assert!(CoordinatorConfig::load(&path).unwrap_err().to_string().contains("fair_share_half_life_s"));
    }
}
