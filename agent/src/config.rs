//! The agent process's configuration file (TOML).
//!
//! ```toml
//! coordinators = ["10.0.0.1:4648", "c2@10.0.0.2:4648"]  # agent listeners; `name@` pins the coordinator's name
//! data_dir = "/var/lib/zoe/agent"
//! addresses = ["10.0.0.5"]        # how users reach services on this node (default: 127.0.0.1)
//! labels = ["gpu", "ssd"]
//! heartbeat_ms = 2000
//! stop_grace_ms = 10000            # SIGTERM → SIGKILL when the leader stops a service
//! reconnect_min_ms = 200           # backoff between coordinator attempts (with jitter)
//! reconnect_max_ms = 5000
//!
//! [containerd]
//! socket = "/run/containerd/containerd.sock"
//! namespace = "zoe"
//! parent_cgroup = "zoe"
//!
//! [tls]
//! ca = "/etc/zoe/tls/ca.pem"
//! cert = "/etc/zoe/tls/agent.pem"   # its name (agent.NAME.zoe) is the node's name
//! key = "/etc/zoe/tls/agent-key.pem"
//!
//! [security]                      # what this node allows whatever a coordinator sends
//! host_paths = ["/srv/zoe/workspaces"]  # bind sources allowed (and below); default none
//! host_network = true             # false on nodes of a bridged cluster
//! pids_max = 4096
//! memory_default_bytes = 4294967296     # limit of a container whose spec has none
//!
//! [[host_volume]]                 # directories offered to ZApps by name ("host_volume": "datasets")
//! name = "datasets"
//! path = "/srv/datasets"
//! read_only = true                # whatever the ZApp asks
//! roles = ["user", "superuser"]   # who may mount it (roles or users); both empty: everyone
//! users = []
//! report_size = false             # walk it every 5 heartbeats for workflows' volume_size triggers
//!
//! [reserve]                       # kept back for the OS, the agent, other daemons
//! cores = 0.5
//! memory_bytes = 536870912
//!
//! [advertise]                     # optional: report this capacity instead of the
//! cores = 2.0                     # machine's (total − reserve), e.g. for tests or
//! memory_bytes = 2147483648       # agents sharing a host; the parent cgroup keeps
//!                                 # the machine's limit
//!
//! [registry]
//! insecure = ["127.0.0.1:5000"]   # registries spoken to over plain HTTP
//!
//! [network]                       # bridged containers (docs/networking.md)
//! cni_path = "/usr/lib/cni"        # the CNI plugins
//! netns_dir = "/run/zoe/netns"     # where container namespaces are pinned
//! bridge = "zoe0"                  # the node's bridge
//! ```
//!
//! Relative paths are relative to the configuration file's directory.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use zoe_common::config::Settings;

pub use zoe_common::config::{ConfigError, Invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Agent listeners of the coordinators, `host:port` or `name@host:port`.
    pub coordinators: Vec<String>,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub labels: BTreeSet<String>,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_stop_grace_ms")]
    pub stop_grace_ms: u64,
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    pub containerd: ContainerdSettings,
    pub tls: TlsFiles,
    #[serde(default)]
    pub reserve: ReserveSettings,
    #[serde(default)]
    pub advertise: AdvertiseSettings,
    #[serde(default)]
    pub registry: RegistrySettings,
    #[serde(default)]
    pub network: crate::network::NetSettings,
    /// What this node allows, whatever a coordinator sends (`[security]`).
    #[serde(default)]
    pub security: crate::security::SecuritySettings,
    /// Directories offered to ZApps by name (`[[host_volume]]`).
    #[serde(default, rename = "host_volume")]
    pub host_volumes: Vec<zoe_common::service::HostVolume>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerdSettings {
    pub socket: PathBuf,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_namespace")]
    pub parent_cgroup: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReserveSettings {
    pub cores: f64,
    pub memory_bytes: u64,
}

/// Capacity reported to the coordinators instead of the machine's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvertiseSettings {
    pub cores: Option<f64>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    pub insecure: Vec<String>,
}

fn default_heartbeat_ms() -> u64 {
    2_000
}
fn default_stop_grace_ms() -> u64 {
    10_000
}
fn default_reconnect_min_ms() -> u64 {
    200
}
fn default_reconnect_max_ms() -> u64 {
    5_000
}
fn default_namespace() -> String {
    "zoe".into()
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        zoe_common::config::load(path)
    }
}

impl Settings for AgentConfig {
    fn paths(&mut self) -> Vec<&mut PathBuf> {
        vec![
            &mut self.data_dir,
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.containerd.socket,
            &mut self.network.cni_path,
            &mut self.network.netns_dir,
        ]
    }

    fn validate(&self) -> Result<(), Invalid> {
        if self.coordinators.is_empty() {
            return Err(Invalid::new("coordinators", "list at least one coordinator address"));
        }
        for c in &self.coordinators {
            CoordinatorAddr::parse(c).map_err(|e| Invalid::new("coordinators", e.to_string()))?;
        }
        self.security.validate()?;
        let mut names = BTreeSet::new();
        for v in &self.host_volumes {
            let what = || format!("host_volume {:?}", v.name);
            if !zoe_common::zapp::is_plain_name(&v.name) {
                return Err(Invalid::new(what(), "a name of letters, digits, `-`, `_` and `.`"));
            }
            if !names.insert(v.name.as_str()) {
                return Err(Invalid::new(what(), "defined twice"));
            }
            if !crate::security::plain_absolute(Path::new(&v.path)) {
                return Err(Invalid::new(what(), format!("path {} must be absolute, without `..`", v.path)));
            }
        }
        if self.heartbeat_ms < 100 {
            return Err(Invalid::new("heartbeat_ms", "at least 100"));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(Invalid::new("reconnect_min_ms", "must be > 0 and <= reconnect_max_ms"));
        }
        let b = &self.network.bridge;
        if b.is_empty() || b.len() > 15 || b.contains(['/', ' ']) {
            return Err(Invalid::new(
                "network.bridge",
                format!("{b:?} is not a valid interface name (1 to 15 characters)"),
            ));
        }
        if !(self.reserve.cores >= 0.0 && self.reserve.cores.is_finite()) {
            return Err(Invalid::new("reserve.cores", "a non-negative number"));
        }
        if let Some(c) = self.advertise.cores
            && !(c > 0.0 && c.is_finite())
        {
            return Err(Invalid::new("advertise.cores", "a positive number"));
        }
        if self.advertise.memory_bytes == Some(0) {
            return Err(Invalid::new("advertise.memory_bytes", "a positive number"));
        }
        Ok(())
    }
}

/// An address of a coordinator that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{addr:?}: {why}")]
pub struct AddrError {
    pub addr: String,
    pub why: String,
}

/// A coordinator's agent listener, with the TLS server name to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorAddr {
    /// `host:port`.
    pub addr: String,
    /// The name the coordinator's certificate must carry: its identity SAN
    /// (`coordinator.NAME.zoe`) when the name is known, else the host.
    pub server_name: String,
}

impl CoordinatorAddr {
    /// `host:port` or `name@host:port`.
    pub fn parse(s: &str) -> Result<CoordinatorAddr, AddrError> {
        let bad = |why: String| AddrError { addr: s.to_string(), why };
        let (name, addr) = match s.split_once('@') {
            Some((n, a)) => (Some(n), a),
            None => (None, s),
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("expected host:port".into()))?;
        port.parse::<u16>().map_err(|_| bad("bad port".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("empty host".into()));
        }
        let server_name = match name {
            Some(n) => zoe_net::Identity::new(zoe_net::Role::Coordinator, n).map_err(|e| bad(e.to_string()))?.san(),
            None => host.to_string(),
        };
        Ok(CoordinatorAddr { addr: addr.to_string(), server_name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        let a = CoordinatorAddr::parse("10.0.0.1:4648").unwrap();
        assert_eq!(a.server_name, "10.0.0.1");
        let b = CoordinatorAddr::parse("c2@10.0.0.2:4648").unwrap();
        assert_eq!(b.server_name, "coordinator.c2.zoe");
        assert_eq!(b.addr, "10.0.0.2:4648");
        assert!(CoordinatorAddr::parse("nohost").is_err());
        assert!(CoordinatorAddr::parse("Bad_Name@1.2.3.4:1").is_err());
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(
            &p,
            "coordinators = [\"127.0.0.1:4648\"]\ndata_dir = \"data\"\n[containerd]\nsocket = \"/run/c.sock\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a-key.pem\"\n",
        )
        .unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.heartbeat_ms, 2000);
        assert_eq!(c.containerd.namespace, "zoe");
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.advertise.cores, None);
        std::fs::write(
            &p,
            "coordinators = [\"127.0.0.1:4648\"]\ndata_dir = \"data\"\n[containerd]\nsocket = \"/run/c.sock\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a-key.pem\"\n[advertise]\ncores = 0\n",
        )
        .unwrap();
        assert!(AgentConfig::load(&p).unwrap_err().to_string().contains("advertise.cores"));
        std::fs::write(&p, "coordinators = []\nbogus = 1\n").unwrap();
        assert!(AgentConfig::load(&p).is_err());
    }
}
