//! `zoe dev`'s data directory: a one-coordinator, one-agent cluster on
//! loopback, made of the same pieces as a real one. The certificates and
//! both configuration files are ordinary files in the directory, written
//! on the first start and loaded with the same loaders as
//! `zoe coordinator --config` and `zoe agent --config`, so what `zoe dev`
//! runs is exactly what an operator could run by hand.
//!
//! ```text
//! DIR/tls/            ca.pem, ca-key.pem, dev.pem (coordinator), node.pem (agent), admin.pem (client)
//! DIR/coordinator.toml
//! DIR/agent.toml
//! DIR/coordinator/    Raft log and state (sled)
//! DIR/agent/          the agent's logs and records
//! DIR/containerd/     a private containerd, when the system one does not answer
//! DIR/admin.token     the first admin's API token (0600)
//! ```

use crate::api::Ctx;
use crate::auth;
use crate::config::CoordinatorConfig;
use crate::raft::Coordinator;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zoe_net::{CertificateAuthority, Identity, Role};

/// The coordinator's name (and certificate) in a dev cluster.
pub const COORDINATOR_NAME: &str = "dev";
/// The node's name: what `zoe node ls` shows.
pub const NODE_NAME: &str = "local";
/// The containerd namespace `zoe dev` uses by default, apart from a real agent's `zoe`.
pub const DEFAULT_NAMESPACE: &str = "zoe-dev";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Pki(#[from] zoe_net::NetError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Bootstrap(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevError {
    let what = what.into();
    move |source| DevError::Io { what, source }
}

/// What a dev cluster is started with.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The REST API's address (plain HTTP: loopback only).
    pub api: SocketAddr,
    pub containerd_socket: PathBuf,
    pub namespace: String,
    /// ZApp shop packages the web UI serves (`[api.web] shop_dir`).
    pub shop_dir: Option<PathBuf>,
    /// The service proxy's address (`[api.proxy] listen`); `None`: off.
    /// Browsers reach it as `localhost`, the UI as `127.0.0.1`: two host
    /// names, so the UI's cookie never goes to a service's pages.
    pub proxy: Option<SocketAddr>,
}

/// The layout of a dev data directory.
#[derive(Debug, Clone)]
pub struct DevLayout {
    pub dir: PathBuf,
}

impl DevLayout {
    pub fn new(dir: &Path) -> DevLayout {
        DevLayout { dir: dir.to_path_buf() }
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }
    pub fn coordinator_config(&self) -> PathBuf {
        self.dir.join("coordinator.toml")
    }
    pub fn agent_config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }
    pub fn containerd_dir(&self) -> PathBuf {
        self.dir.join("containerd")
    }
    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join(ADMIN_TOKEN_FILE)
    }

    /// Creates the directory, and on the first start a CA with a
    /// coordinator, an agent and a client certificate. Returns whether
    /// they were created now.
    pub fn ensure_certs(&self) -> Result<bool, DevError> {
        let tls = self.tls_dir();
        if tls.join("ca.pem").exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(&tls).map_err(io(format!("creating {}", tls.display())))?;
        let ca = CertificateAuthority::generate("zoe-dev")?;
        let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let localhost = ["localhost".to_string()];
        ca.issue(&Identity::new(Role::Coordinator, COORDINATOR_NAME)?, &localhost, &loopback)?
            .write(&tls, COORDINATOR_NAME)?;
        ca.issue(&Identity::new(Role::Agent, NODE_NAME)?, &[], &loopback)?.write(&tls, NODE_NAME)?;
        ca.issue(&Identity::new(Role::Client, "admin")?, &[], &[])?.write(&tls, "admin")?;
        // The CA last: its presence is what marks the set as complete.
        ca.write(&tls)?;
        Ok(true)
    }

    /// Writes both configuration files. The Raft and agent ports are
    /// picked once (free UDP ports on loopback) and kept afterwards: the
    /// Raft membership stored in the data dir names them.
    pub fn write_configs(&self, opts: &DevOptions) -> Result<(), DevError> {
        let (raft, agents) = match CoordinatorConfig::load(&self.coordinator_config()) {
            Ok(c) => (c.listen, c.agents.listen.unwrap_or_else(|| SocketAddr::new(c.listen.ip(), c.listen.port() + 1))),
            Err(_) => (free_udp_port()?, free_udp_port()?),
        };
        let coordinator = format!(
            "# Written by `zoe dev` at every start (the ports are kept); compare systemd/coordinator.toml.\n\
             id = 1\nname = \"{COORDINATOR_NAME}\"\nlisten = \"{raft}\"\ndata_dir = \"coordinator\"\n\n\
             [tls]\nca = \"tls/ca.pem\"\ncert = \"tls/{COORDINATOR_NAME}.pem\"\nkey = \"tls/{COORDINATOR_NAME}-key.pem\"\n\n\
             [[peers]]\nid = 1\naddr = \"{raft}\"\nname = \"{COORDINATOR_NAME}\"\n\n\
             [api]\nlisten = \"{api}\"\n\n{proxy}{web}[agents]\nlisten = \"{agents}\"\n\n[leader]\ndeployment = \"dev\"\n",
            api = opts.api,
            proxy = opts.proxy.map_or(String::new(), |p| {
                format!(
                    "[api.proxy]\nlisten = \"{p}\"\nurl = \"http://localhost:{}\"\nui_url = \"http://{}\"\n\n",
                    p.port(),
                    opts.api
                )
            }),
            web = opts
                .shop_dir
                .as_ref()
                .map_or(String::new(), |d| format!("[api.web]\nshop_dir = {:?}\n\n", d.display().to_string())),
        );
        let agent = format!(
            "# Written by `zoe dev` at every start; see systemd/agent.toml.\n\
             coordinators = [\"{COORDINATOR_NAME}@{agents}\"]\ndata_dir = \"agent\"\naddresses = [\"127.0.0.1\"]\n\n\
             [containerd]\nsocket = {socket:?}\nnamespace = {ns:?}\nparent_cgroup = {ns:?}\n\n\
             [tls]\nca = \"tls/ca.pem\"\ncert = \"tls/{NODE_NAME}.pem\"\nkey = \"tls/{NODE_NAME}-key.pem\"\n",
            socket = opts.containerd_socket.display().to_string(),
            ns = opts.namespace,
        );
        for (path, text) in [(self.coordinator_config(), coordinator), (self.agent_config(), agent)] {
            std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    /// The first admin's API token: read from `admin.token`, or on a new
    /// cluster obtained by exchanging the bootstrap token in-process (as
    /// `POST /api/v1/acl/bootstrap` would) and saved with mode 0600.
    /// Returns the token and whether it is new.
    pub async fn admin_token(&self, coord: &Coordinator) -> Result<(String, bool), DevError> {
        let file = self.admin_token_file();
        if let Ok(t) = std::fs::read_to_string(&file) {
            return Ok((t.trim().to_string(), false));
        }
        let bootstrap_file = coord.config().data_dir.join(auth::BOOTSTRAP_FILE);
        // The API server mints the bootstrap token once this node leads.
        let deadline = Instant::now() + Duration::from_secs(60);
        let bootstrap = loop {
            match std::fs::read_to_string(&bootstrap_file) {
                Ok(t) if !t.trim().is_empty() => break t.trim().to_string(),
                _ if Instant::now() > deadline => {
                    return Err(DevError::Bootstrap(format!(
                        "no bootstrap token in {} after 60 s, and no {}: if this cluster was bootstrapped \
                         before, its admin token is lost; remove {} to start afresh",
                        bootstrap_file.display(),
                        file.display(),
                        self.dir.display()
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let (_keep, stopping) = tokio::sync::watch::channel(false);
        let ctx = Ctx::new(coord.clone(), None, stopping);
        let (v, _) = crate::api::admin::exchange_bootstrap_token(&ctx, &bootstrap)
            .await
            .map_err(|e| DevError::Bootstrap(format!("ACL bootstrap: {}", e.message)))?;
        write_secret(&file, &v.token)?;
        Ok((v.token, true))
    }
}

/// Writes a file readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<(), DevError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    f.write_all(format!("{text}\n").as_bytes()).map_err(io(format!("writing {}", path.display())))
}

fn free_udp_port() -> Result<SocketAddr, DevError> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("finding a free UDP port"))?;
    s.local_addr().map_err(io("finding a free UDP port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_load_and_keep_their_ports() {
        let dir = tempfile::tempdir().unwrap();
        let l = DevLayout::new(dir.path());
        assert!(l.ensure_certs().unwrap());
        assert!(!l.ensure_certs().unwrap());
        let opts = DevOptions {
            api: "127.0.0.1:5999".parse().unwrap(),
            proxy: Some("127.0.0.1:5998".parse().unwrap()),
            containerd_socket: "/run/containerd/containerd.sock".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            shop_dir: Some("/srv/shop".into()),
        };
        l.write_configs(&opts).unwrap();
        let a = CoordinatorConfig::load(&l.coordinator_config()).unwrap();
        assert_eq!(a.api.listen, Some(opts.api));
        assert_eq!(a.api.proxy.listen, opts.proxy);
        assert_eq!(a.api.proxy.url.as_deref(), Some("http://localhost:5998"));
        assert_eq!(a.api.web.shop_dir.as_deref(), Some(Path::new("/srv/shop")));
        assert_eq!(a.data_dir, dir.path().join("coordinator"));
        l.write_configs(&DevOptions { api: "127.0.0.1:6000".parse().unwrap(), ..opts }).unwrap();
        let b = CoordinatorConfig::load(&l.coordinator_config()).unwrap();
        assert_eq!((a.listen, a.agents.listen), (b.listen, b.agents.listen));
        assert_eq!(b.api.listen, Some("127.0.0.1:6000".parse().unwrap()));
        let agent = std::fs::read_to_string(l.agent_config()).unwrap();
        assert!(agent.contains(&format!("{COORDINATOR_NAME}@{}", b.agents.listen.unwrap())));
    }
}
