//! Whole-cluster fixtures: real `zoe coordinator` and `zoe agent`
//! processes, the real containerd of the tests, the REST API and the CLI.
//!
//! # `ZoeCluster`
//!
//! ```ignore
//! let z = ZoeCluster::builder()
//!     .coordinators(3)                                   // 1 or 3
//!     .agent(AgentSpec::new("n1").cores(2.0).memory_mib(2048).label("ssd"))
//!     .agent(AgentSpec::new("n2").cores(2.0).memory_mib(2048))
//!     .leader("start_retry_base_ms = 500")              // extra `[leader]` keys
//!     .start()
//!     .await;
//! let id = z.api().submit("run", zapp_json).await;
//! z.api().wait_execution(id, |e| e["status"] == "terminated", Duration::from_secs(60)).await;
//! ```
//!
//! - Coordinators come from [`super::Cluster`] (its certificates, Raft
//!   settings, `kill`/`spawn`/`wait_leader`/`wait_converged`), each with an
//!   `[api]` on its own reserved 127.0.0.1 port (never the default 5001,
//!   which concurrent tests would race for), an `[agents]` listener on the
//!   Raft port + 1 (reserved with it) with test liveness timings
//!   ([`agent_section`]) and a `[leader]` ticking every 200 ms.
//! - Each agent is a `zoe agent` process with its own node name (its
//!   certificate's), labels, and its own containerd namespace, prepared
//!   with busybox ([`zoe_testkit::DEFAULT_REFERENCE`]) before it starts.
//!   [`AgentSpec::cores`] / [`AgentSpec::memory_mib`] set what it reports
//!   (the agent's `[advertise]`), so scheduling scenarios do not depend on
//!   the host's size. The parent cgroup still has the machine's limit.
//! - The ACL is bootstrapped at start: [`ZoeCluster::api`] is an
//!   authenticated admin REST client that fails over between coordinators,
//!   and [`ZoeCluster::cli`] runs the `zoe` binary with `--addr`/`--token`.
//! - [`ZoeCluster::containers`] lists what containerd really runs in every
//!   agent namespace (ground truth), [`ZoeCluster::audit`] compares it with
//!   the replicated state (no orphan, no duplicate).
//!   [`Sampler`] lists it over and over while faults are injected.
//! - An agent drives the tests' shared containerd, or one of the test's own
//!   ([`AgentSpec::containerd`]) that the test may restart.
//! - On drop: agents and coordinators are killed, every agent namespace is
//!   emptied and deleted; when the test panicked, the tails of all the logs
//!   are printed first.
//!
//! The lower-level fixtures (a [`Pki`], an in-process coordinator, single
//! [`AgentProc`]esses, namespace preparation and inspection) are public too:
//! tests that call the agent back-end directly use them.

use super::{Cluster, Node, Port, Tuning, reserve_port, zoe_bin};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zoe_coordinator::agents::AgentBackend;
use zoe_coordinator::config::CoordinatorConfig;
use zoe_coordinator::raft::Coordinator;
use zoe_coordinator::state::{ServiceStatus, State};
use zoe_net::{CertificateAuthority, Identity, Role, TlsMaterial};
use zoe_testkit::DEFAULT_REFERENCE;

// ------------------------------------------------------------ small fixtures

/// A throwaway CA in a temporary directory that also holds the configs.
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca: CertificateAuthority,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("zoe-agents-").tempdir().unwrap();
        let ca = CertificateAuthority::generate("test").unwrap();
        ca.write(dir.path()).unwrap();
        Pki { dir, ca }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<file>.pem` / `<file>-key.pem` for role/name, signed by `signer`.
    pub fn issue_with(&self, signer: &CertificateAuthority, role: Role, name: &str, file: &str) {
        issue_files(signer, self.path(), role, name, file);
    }

    /// Writes `<role>-<name>.pem` / `<role>-<name>-key.pem`.
    pub fn issue(&self, role: Role, name: &str) {
        self.issue_with(&self.ca, role, name, &format!("{role}-{name}"));
    }

    pub fn material(&self, signer: &CertificateAuthority, role: Role, name: &str) -> TlsMaterial {
        super::issue_material(signer, &self.ca, role, name)
    }

    /// A client certificate of this CA.
    pub fn client_tls(&self) -> TlsMaterial {
        self.material(&self.ca, Role::Client, "tests")
    }
}

fn issue_files(signer: &CertificateAuthority, dir: &Path, role: Role, name: &str, file: &str) {
    signer
        .issue(&Identity::new(role, name).unwrap(), &[], &["127.0.0.1".parse().unwrap()])
        .unwrap()
        .write(dir, file)
        .unwrap();
}

/// The `[agents]` section with fast liveness settings for tests.
pub fn agent_section(listen: &str, orphan_grace_ms: u64) -> String {
    format!(
        "[agents]\nlisten = \"{listen}\"\nheartbeat_ms = 500\nttl_ms = 2000\ngrace_ms = 1000\n\
         failover_grace_ms = 2000\norphan_grace_ms = {orphan_grace_ms}\nstop_grace_ms = 2000\nspawn_timeout_ms = 60000\n"
    )
}

pub struct CoordPorts {
    pub raft: Port,
    pub agents: Port,
}

/// Writes `c<id>.toml` for an in-process coordinator (its API on an
/// ephemeral port) and issues its certificate.
pub fn coordinator_toml(pki: &Pki, id: u64, peers: &[(u64, &CoordPorts)], orphan_grace_ms: u64) -> PathBuf {
    let name = format!("c{id}");
    pki.issue(Role::Coordinator, &name);
    let me = peers.iter().find(|(i, _)| *i == id).unwrap().1;
    let mut text = format!(
        "id = {id}\nname = \"{name}\"\nlisten = \"127.0.0.1:{raft}\"\ndata_dir = \"{name}-data\"\n\n\
         [tls]\nca = \"ca.pem\"\ncert = \"coordinator-{name}.pem\"\nkey = \"coordinator-{name}-key.pem\"\n\n\
         [raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\n\
         [leader]\ntick_ms = 200\n\n{agents}\n",
        raft = me.raft.port,
        agents = agent_section(&format!("127.0.0.1:{}", me.agents.port), orphan_grace_ms),
    );
    for (pid, p) in peers {
        text += &format!("[[peers]]\nid = {pid}\naddr = \"127.0.0.1:{}\"\nname = \"c{pid}\"\n\n", p.raft.port);
    }
    let path = pki.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// One coordinator in this process, with its agent back-end, as leader
/// (no leader loop: start one if the test wants scheduling).
pub async fn inproc_coordinator(pki: &Pki, orphan_grace_ms: u64) -> (Coordinator, Arc<AgentBackend>, CoordPorts) {
    let ports = CoordPorts { raft: reserve_port(), agents: reserve_port() };
    let path = coordinator_toml(pki, 1, &[(1, &ports)], orphan_grace_ms);
    let cfg = CoordinatorConfig::load(&path).unwrap();
    let settings = cfg.agents.clone();
    let c = Coordinator::start(cfg).await.unwrap();
    wait_until("the coordinator to lead", Duration::from_secs(20), || async {
        c.leadership().borrow().leader == Some(1)
    })
    .await;
    let b = AgentBackend::start(c.clone(), settings).await.unwrap();
    wait_until("the back-end to see leadership", Duration::from_secs(10), || async { b.is_leader() }).await;
    (c, b, ports)
}

/// Polls `f` every 100 ms; panics after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// The tests' shared containerd ([`zoe_testkit::containerd`]).
pub fn shared_socket() -> PathBuf {
    zoe_testkit::containerd().socket.clone()
}

/// Imports busybox into a fresh namespace (before its agent starts). The
/// OCI archive is built once per `dir`.
pub async fn prepare_namespace(ns: &str, dir: &Path) {
    prepare_namespace_at(&shared_socket(), ns, dir).await
}

/// [`prepare_namespace`] on the containerd at `socket`.
pub async fn prepare_namespace_at(socket: &Path, ns: &str, dir: &Path) {
    let mut cfg = zoe_agent::RuntimeConfig::new(socket, dir.join(format!("prep-{ns}")));
    cfg.namespace = ns.to_string();
    let rt = zoe_agent::Runtime::connect(cfg).await.unwrap();
    let archive = dir.join("busybox-oci.tar");
    if !archive.exists() {
        let tmp = dir.join(format!("busybox-oci.tar.{ns}"));
        zoe_testkit::BusyboxImage::build().unwrap().write_oci_archive(&tmp).unwrap();
        std::fs::rename(&tmp, &archive).unwrap();
    }
    rt.images().import_archive(&archive, None, None).await.unwrap();
    rt.shutdown().await;
}

/// Stops and removes every container of a namespace, as if its machine
/// died (a killed agent's containers otherwise keep running). Best effort.
pub async fn stop_namespace_containers(ns: &str, dir: &Path) {
    stop_namespace_containers_at(&shared_socket(), ns, dir).await
}

/// [`stop_namespace_containers`] on the containerd at `socket`.
pub async fn stop_namespace_containers_at(socket: &Path, ns: &str, dir: &Path) {
    let Some(rt) = stop_all(socket, ns, dir).await else { return };
    rt.shutdown().await;
}

async fn stop_all(socket: &Path, ns: &str, dir: &Path) -> Option<zoe_agent::Runtime> {
    let mut cfg = zoe_agent::RuntimeConfig::new(socket, dir.join(format!("cleanup-{ns}")));
    cfg.namespace = ns.to_string();
    let rt = zoe_agent::Runtime::connect(cfg).await.ok()?;
    for s in rt.services() {
        let _ = rt.stop(&s.id, Duration::from_secs(1)).await;
    }
    if let Ok(orphans) = rt.orphans().await {
        for o in orphans {
            let _ = rt.stop(&o.id, Duration::from_secs(1)).await;
        }
    }
    Some(rt)
}

/// Stops everything left in a namespace and deletes it (best effort).
pub async fn cleanup_namespace(ns: &str, dir: &Path) {
    cleanup_namespace_at(&shared_socket(), ns, dir).await
}

/// [`cleanup_namespace`] on the containerd at `socket`.
pub async fn cleanup_namespace_at(socket: &Path, ns: &str, dir: &Path) {
    let Some(rt) = stop_all(socket, ns, dir).await else { return };
    let _ = rt.images().remove(DEFAULT_REFERENCE).await;
    let ctd = rt.containerd().clone();
    rt.shutdown().await;
    let req = containerd_client::services::v1::DeleteNamespaceRequest { name: ns.to_string() };
    let _ = ctd.namespaces().delete(req).await;
}

/// A running container's task status, straight from containerd.
pub async fn task_running(ns: &str, id: &str) -> bool {
    let ctd = zoe_agent::Containerd::connect(&zoe_testkit::containerd().socket, ns).await.unwrap();
    let req = containerd_client::services::v1::GetRequest { container_id: id.to_string(), exec_id: String::new() };
    match ctd.tasks().get(ctd.rq(req)).await {
        Ok(r) => {
            r.into_inner().process.is_some_and(|p| p.status == containerd_client::types::v1::Status::Running as i32)
        }
        Err(_) => false,
    }
}

pub async fn container_exists(ns: &str, id: &str) -> bool {
    let ctd = zoe_agent::Containerd::connect(&zoe_testkit::containerd().socket, ns).await.unwrap();
    let req = containerd_client::services::v1::GetContainerRequest { id: id.to_string() };
    ctd.containers().get(ctd.rq(req)).await.is_ok()
}

/// One container as containerd sees it: its node (empty from
/// [`namespace_containers`]), id, whether its task runs, and zoe's
/// ownership labels when it has them. The chaos checker's type, so samples
/// go to it as they are.
pub type ContainerView = zoe_tests::history::Container;

/// Every container of namespace `ns` with its task's state, by id.
pub async fn namespace_containers(ns: &str) -> Vec<ContainerView> {
    namespace_containers_at(&shared_socket(), ns).await.unwrap()
}

/// [`namespace_containers`] on the containerd at `socket`; an error when it
/// cannot be reached (being restarted).
pub async fn namespace_containers_at(socket: &Path, ns: &str) -> Result<Vec<ContainerView>, String> {
    use containerd_client::services::v1::{GetRequest, ListContainersRequest};
    let ctd = zoe_agent::Containerd::connect(socket, ns).await.map_err(|e| e.to_string())?;
    let list =
        ctd.containers().list(ctd.rq(ListContainersRequest { filters: vec![] })).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for c in list.into_inner().containers {
        let req = GetRequest { container_id: c.id.clone(), exec_id: String::new() };
        let running = match ctd.tasks().get(ctd.rq(req)).await {
            Ok(r) => {
                r.into_inner().process.is_some_and(|p| p.status == containerd_client::types::v1::Status::Running as i32)
            }
            Err(_) => false,
        };
        let label = |k: &str| c.labels.get(k).and_then(|v| v.parse().ok());
        out.push(ContainerView {
            node: String::new(),
            id: c.id.clone(),
            running,
            service: label(zoe_agent::spec::LABEL_SERVICE),
            execution: label(zoe_agent::spec::LABEL_EXECUTION),
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Lists every agent namespace's containers every `every` until stopped:
/// the ground truth of what ran, for the tests that inject faults. Keeps a
/// sample only when it differs from the one before.
pub struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Vec<ContainerView>)>>,
}

impl Sampler {
    pub fn start(z: &ZoeCluster, every: Duration) -> Sampler {
        let nodes: Vec<(String, String, PathBuf)> =
            z.agents.iter().map(|a| (a.name.clone(), a.ns.clone(), a.socket.clone())).collect();
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples: Vec<(Instant, Vec<ContainerView>)> = Vec::new();
            loop {
                let at = Instant::now();
                let mut now = Vec::new();
                for (node, ns, socket) in &nodes {
                    // A containerd being restarted is not sampled.
                    for mut c in namespace_containers_at(socket, ns).await.unwrap_or_default() {
                        c.node = node.clone();
                        now.push(c);
                    }
                }
                if samples.last().is_none_or(|(_, last)| *last != now) {
                    samples.push((at, now));
                }
                tokio::select! {
                    _ = stop_rx.changed() => return samples,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        Sampler { stop, task }
    }

    /// Stops sampling; returns the samples, oldest first.
    pub async fn finish(self) -> Vec<(Instant, Vec<ContainerView>)> {
        let _ = self.stop.send(true);
        self.task.await.expect("the container sampler panicked")
    }
}

/// The seed of a randomized test: `ZOE_TEST_SEED` (or the test's own
/// variable) when set, else a fresh one; printed either way so any run
/// can be replayed.
pub fn seed(test: &str, var: &str) -> u64 {
    use rand::{Rng, SeedableRng};
    let seed = [var, "ZOE_TEST_SEED"]
        .iter()
        .find_map(|v| std::env::var(v).ok().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| rand::rngs::SmallRng::from_os_rng().random());
    eprintln!("{test} seed: {seed} (replay with {var}={seed})");
    seed
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ------------------------------------------------------------------- agents

/// How to start one `zoe agent`.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Node name (its certificate's).
    pub name: String,
    pub labels: Vec<String>,
    /// Reported capacity (`[advertise]`); the machine's when `None`.
    pub cores: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// TOML appended to the configuration (e.g. a `[registry]` table).
    pub extra: String,
    /// The containerd socket it drives; the tests' shared one when `None`.
    pub containerd: Option<PathBuf>,
}

impl AgentSpec {
    pub fn new(name: &str) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            labels: Vec::new(),
            cores: None,
            memory_bytes: None,
            extra: String::new(),
            containerd: None,
        }
    }
    pub fn toml(mut self, t: &str) -> AgentSpec {
        self.extra.push_str(t);
        self.extra.push('\n');
        self
    }
    pub fn label(mut self, l: &str) -> AgentSpec {
        self.labels.push(l.into());
        self
    }
    pub fn cores(mut self, c: f64) -> AgentSpec {
        self.cores = Some(c);
        self
    }
    pub fn memory_mib(mut self, m: u64) -> AgentSpec {
        self.memory_bytes = Some(m << 20);
        self
    }
    /// Drives the containerd at `socket` (one the test owns, to restart it).
    pub fn containerd(mut self, socket: &Path) -> AgentSpec {
        self.containerd = Some(socket.to_path_buf());
        self
    }
}

/// A `zoe agent` process on namespace `ns`; killed on drop (its log is
/// printed when the test panicked).
pub struct AgentProc {
    pub name: String,
    pub ns: String,
    /// The containerd it drives.
    pub socket: PathBuf,
    child: Option<Child>,
    config: PathBuf,
    pub log: PathBuf,
    /// Print the whole log on a panic (single-agent tests) rather than
    /// leaving it to the owner.
    dump_on_panic: bool,
}

impl AgentProc {
    /// Starts `zoe agent` for node `name` (certificate file `cert` in the
    /// PKI's directory), labelled `zone-<name>`.
    pub fn start(pki: &Pki, name: &str, cert: &str, coordinators: &[String], ns: &str) -> AgentProc {
        let spec = AgentSpec::new(name).label(&format!("zone-{name}"));
        let mut a = AgentProc::with_spec(pki.path(), &spec, cert, coordinators, ns);
        a.dump_on_panic = true;
        a
    }

    /// Writes the agent's configuration into `dir` and starts it.
    pub fn with_spec(dir: &Path, spec: &AgentSpec, cert: &str, coordinators: &[String], ns: &str) -> AgentProc {
        let name = &spec.name;
        let socket = spec.containerd.clone().unwrap_or_else(shared_socket);
        let data = dir.join(format!("agent-{name}-{ns}"));
        let quote = |v: &[String]| v.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let mut toml = format!(
            "coordinators = [{}]\ndata_dir = \"{}\"\nlabels = [{}]\nheartbeat_ms = 500\n\
             reconnect_min_ms = 100\nreconnect_max_ms = 1000\nstop_grace_ms = 2000\n\
             [containerd]\nsocket = \"{}\"\nnamespace = \"{ns}\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"{cert}.pem\"\nkey = \"{cert}-key.pem\"\n",
            quote(coordinators),
            data.display(),
            quote(&spec.labels),
            socket.display(),
        );
        if spec.cores.is_some() || spec.memory_bytes.is_some() {
            toml += "[advertise]\n";
            if let Some(c) = spec.cores {
                toml += &format!("cores = {c:?}\n");
            }
            if let Some(m) = spec.memory_bytes {
                toml += &format!("memory_bytes = {m}\n");
            }
        }
        toml += &spec.extra;
        let config = dir.join(format!("agent-{name}-{ns}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("agent-{name}-{ns}.log"));
        let mut a = AgentProc {
            name: name.clone(),
            ns: ns.to_string(),
            socket,
            child: None,
            config,
            log,
            dump_on_panic: false,
        };
        a.spawn();
        a
    }

    /// (Re)starts the process with the same configuration and data.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent {} already running", self.name);
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(zoe_bin())
            .args(["agent", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,quinn=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn zoe agent");
        self.child = Some(child);
    }

    /// kill -9 (its containers keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to the process.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if self.child.is_some() && self.dump_on_panic && std::thread::panicking() {
            eprintln!("--- agent log ({}) ---\n{}", self.ns, self.log_text());
        }
        self.kill();
    }
}

// ---------------------------------------------------------------- REST API

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
}

/// An authenticated REST client over every coordinator's API. Requests go
/// to the preferred coordinator (the last leader [`ZoeCluster::leader`]
/// found: live node data is only the leader's) or the next that answers;
/// "no leader"/"unavailable" answers and refused connections (a killed
/// coordinator) are retried on the next one for up to 30 s, so tests
/// survive failovers without ceremony.
#[derive(Clone)]
pub struct Api {
    /// zoe's one API client, over every coordinator (no token: each call
    /// goes as [`Api::token`]).
    pub client: Arc<zoe_client::Client>,
    /// `http://127.0.0.1:<port>` of coordinator index `i`.
    pub urls: Vec<String>,
    pub token: Option<String>,
    /// Index tried first.
    pub prefer: Arc<std::sync::atomic::AtomicUsize>,
}

pub fn http_client() -> reqwest::Client {
    http_builder().build().unwrap()
}

/// What [`http_client`] is built from, for a test that changes a setting.
pub fn http_builder() -> reqwest::ClientBuilder {
    // reqwest is built without a default crypto provider; plain HTTP still
    // needs a TLS configuration to build the client.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(30))
}

impl Api {
    pub fn new(urls: Vec<String>) -> Api {
        let config = zoe_client::ClientConfig {
            addrs: urls.clone(),
            timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let client = Arc::new(zoe_client::Client::new(&config).expect("an API client"));
        Api { client, urls, token: None, prefer: Default::default() }
    }

    /// The client as this caller.
    pub fn as_caller(&self) -> zoe_client::Client {
        self.client.with_token(self.token.clone())
    }

    /// One attempt against coordinator index `i`; `None` when it cannot be reached.
    pub async fn call_on(&self, i: usize, method: Method, path: &str, body: Option<&Value>) -> Option<Resp> {
        let r = self.as_caller().raw_on(i, method, path, body).await?;
        Some(Resp { status: r.status, body: r.body })
    }

    /// A request through any coordinator, retried over failovers (see [`Api`]).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        loop {
            let first = self.prefer.load(std::sync::atomic::Ordering::Relaxed);
            for k in 0..self.urls.len() {
                let i = (first + k) % self.urls.len();
                match self.call_on(i, method.clone(), path, body.as_ref()).await {
                    Some(r)
                        if r.status == StatusCode::SERVICE_UNAVAILABLE
                            && matches!(
                                r.body["error"]["code"].as_str(),
                                Some("no_leader" | "unavailable" | "shutting_down")
                            ) =>
                    {
                        last = Some(r)
                    }
                    Some(r) => return r,
                    None => {}
                }
            }
            assert!(Instant::now() < deadline, "{method} {path}: no coordinator answered within 30 s (last: {last:?})");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A request that must succeed (2xx); returns the body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let r = self.call(method.clone(), path, body).await;
        assert!(r.status.is_success(), "{method} {path}: {} {}", r.status, r.body);
        r.body
    }

    /// Submits a ZApp (format 3 JSON); returns the execution id.
    pub async fn submit(&self, name: &str, app: &Value) -> u64 {
        let b = self.ok(Method::POST, "/api/v1/executions", Some(json!({"name": name, "application": app}))).await;
        b["id"].as_u64().unwrap_or_else(|| panic!("no id in {b}"))
    }

    /// Submits with an `Idempotency-Key`, retrying on every coordinator
    /// through any 503 (`timeout` and `unavailable`, whose outcome is
    /// unknown, included) and lost connections, as a careful client does:
    /// the key makes the retries safe. Returns the execution id.
    pub async fn submit_once(&self, name: &str, app: &Value) -> u64 {
        let key = format!("{name}-{:016x}", {
            use rand::{Rng, SeedableRng};
            rand::rngs::SmallRng::from_os_rng().random::<u64>()
        });
        let body = json!({"name": name, "application": app});
        let client = self.as_caller();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match client.post_keyed("/api/v1/executions", &body, &key).await {
                Ok(b) => return b["id"].as_u64().unwrap_or_else(|| panic!("no id in {b}")),
                Err(zoe_client::Error::Api(f)) if f.status != Some(StatusCode::SERVICE_UNAVAILABLE) => {
                    panic!("POST /api/v1/executions (key {key}): {f}")
                }
                Err(e) => e,
            };
            assert!(Instant::now() < deadline, "submission {key}: no coordinator took it within 60 s (last: {last})");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The execution with its `service_details`.
    pub async fn execution(&self, id: u64) -> Value {
        self.ok(Method::GET, &format!("/api/v1/executions/{id}"), None).await
    }

    /// The execution's services (`service_details`).
    pub async fn services(&self, id: u64) -> Vec<Value> {
        self.execution(id).await["service_details"].as_array().cloned().unwrap_or_default()
    }

    pub async fn terminate(&self, id: u64) -> Value {
        self.ok(Method::POST, &format!("/api/v1/executions/{id}/terminate"), None).await
    }

    /// Polls the execution until `pred` holds; returns it. Panics (with the
    /// last view) after `within`.
    pub async fn wait_execution(&self, id: u64, pred: impl Fn(&Value) -> bool, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let e = self.execution(id).await;
            if pred(&e) {
                return e;
            }
            assert!(Instant::now() < deadline, "execution {id}: condition not met within {within:?}; last view: {e:#}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the execution's status is `status`.
    pub async fn wait_status(&self, id: u64, status: &str, within: Duration) -> Value {
        self.wait_execution(id, |e| e["status"] == status, within).await
    }
}

/// What a `zoe` CLI run printed.
#[derive(Debug)]
pub struct CliOut {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

// ------------------------------------------------------------- ZoeCluster

/// Builder of a [`ZoeCluster`].
pub struct ZoeClusterBuilder {
    coordinators: usize,
    agents: Vec<AgentSpec>,
    leader: String,
    orphan_grace_ms: u64,
    extra: String,
    proxy: bool,
}

impl ZoeClusterBuilder {
    /// Every coordinator runs the service proxy, reached as `localhost`
    /// (its UI as `127.0.0.1`: another host, so other cookies).
    pub fn proxy(mut self) -> Self {
        self.proxy = true;
        self
    }

    /// Number of coordinators (default 1).
    pub fn coordinators(mut self, n: usize) -> Self {
        self.coordinators = n;
        self
    }
    pub fn agent(mut self, a: AgentSpec) -> Self {
        self.agents.push(a);
        self
    }
    /// Extra `[leader]` keys (TOML lines), after `tick_ms = 200`.
    pub fn leader(mut self, keys: &str) -> Self {
        self.leader.push_str(keys);
        self.leader.push('\n');
        self
    }
    /// Extra TOML tables for every coordinator's configuration, appended
    /// after the others (e.g. `[api.web]` keys).
    pub fn coordinator_toml(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
    /// How long an unknown running container lives (default 10 min: tests
    /// that do not check orphan handling never race it).
    pub fn orphan_grace_ms(mut self, ms: u64) -> Self {
        self.orphan_grace_ms = ms;
        self
    }

    /// Starts everything, bootstraps the ACL, and waits until every agent
    /// is connected to the leader.
    pub async fn start(self) -> ZoeCluster {
        let api_ports: Vec<Port> = (0..self.coordinators).map(|_| reserve_port()).collect();
        let proxy_ports: Vec<Port> =
            if self.proxy { (0..self.coordinators).map(|_| reserve_port()).collect() } else { Vec::new() };
        let extra = |nd: &Node| {
            let api = &api_ports[(nd.id - 1) as usize];
            let proxy = proxy_ports.get((nd.id - 1) as usize).map_or(String::new(), |p| {
                format!(
                    "[api.proxy]\nlisten = \"127.0.0.1:{0}\"\nurl = \"http://localhost:{0}\"\nui_url = \"http://127.0.0.1:{1}\"\n\n",
                    p.port, api.port
                )
            });
            format!(
                "[api]\nlisten = \"127.0.0.1:{}\"\n\n{proxy}[leader]\ntick_ms = 200\n{}\n{}\n{}",
                api.port,
                self.leader,
                agent_section(&format!("127.0.0.1:{}", nd.port.port + 1), self.orphan_grace_ms),
                self.extra,
            )
        };
        let coords = Cluster::start_with(self.coordinators, Tuning::default(), extra);
        let dir = coords.dir.path().to_path_buf();
        let agent_addrs: Vec<String> =
            coords.nodes.iter().map(|n| format!("{}@127.0.0.1:{}", n.name, n.port.port + 1)).collect();
        let urls: Vec<String> = api_ports.iter().map(|p| format!("http://127.0.0.1:{}", p.port)).collect();
        let proxy_urls = proxy_ports.iter().map(|p| format!("http://localhost:{}", p.port)).collect();
        let mut z = ZoeCluster {
            agents: Vec::new(),
            api: Api::new(urls),
            proxy_urls,
            _ports: (api_ports, proxy_ports),
            coords,
            dir: dir.clone(),
        };
        let namespaces: Vec<String> =
            self.agents.iter().map(|a| zoe_testkit::unique_namespace(&format!("zc-{}", a.name))).collect();
        for (spec, ns) in self.agents.iter().zip(&namespaces) {
            prepare_namespace_at(&spec.containerd.clone().unwrap_or_else(shared_socket), ns, &dir).await;
        }
        for (spec, ns) in self.agents.iter().zip(&namespaces) {
            let cert = format!("agent-{}", spec.name);
            issue_files(&z.coords.ca, &dir, Role::Agent, &spec.name, &cert);
            z.agents.push(AgentProc::with_spec(&dir, spec, &cert, &agent_addrs, ns));
        }
        z.leader().await;
        z.bootstrap().await;
        let names: Vec<String> = self.agents.iter().map(|a| a.name.clone()).collect();
        z.wait_agents_connected(&names, Duration::from_secs(60)).await;
        z
    }
}

/// Coordinators, agents, an admin REST client; see the module doc.
pub struct ZoeCluster {
    /// The agent processes, in the builder's order.
    pub agents: Vec<AgentProc>,
    pub api: Api,
    /// The service proxy of coordinator index `i` (with [`ZoeClusterBuilder::proxy`]).
    pub proxy_urls: Vec<String>,
    /// Held so no other test takes them: the API's, the proxy's.
    _ports: (Vec<Port>, Vec<Port>),
    /// The coordinator processes (index `i` is coordinator id `i + 1`).
    pub coords: Cluster,
    dir: PathBuf,
}

impl ZoeCluster {
    pub fn builder() -> ZoeClusterBuilder {
        ZoeClusterBuilder {
            coordinators: 1,
            agents: Vec::new(),
            leader: String::new(),
            orphan_grace_ms: 600_000,
            extra: String::new(),
            proxy: false,
        }
    }

    /// A new user of the built-in `user` role, and a client as them.
    pub async fn user_api(&self, name: &str) -> Api {
        let password = format!("{name}-password-1");
        self.api.ok(Method::POST, "/api/v1/users", Some(json!({ "username": name, "password": password }))).await;
        let mut api = self.api.clone();
        api.token = None;
        let r = api.ok(Method::POST, "/api/v1/login", Some(json!({ "username": name, "password": password }))).await;
        api.token = Some(r["token"].as_str().expect("a session token").to_string());
        api
    }

    /// The admin REST client.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The directory holding certificates, configurations and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Exchanges the first leader's bootstrap token for an admin token.
    async fn bootstrap(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let token = loop {
            if let Some(t) = self
                .coords
                .nodes
                .iter()
                .find_map(|n| std::fs::read_to_string(n.data_dir.join(zoe_coordinator::auth::BOOTSTRAP_FILE)).ok())
            {
                break t.trim().to_string();
            }
            assert!(Instant::now() < deadline, "no bootstrap token file within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let r = self.api.call(Method::POST, "/api/v1/acl/bootstrap", Some(json!({ "token": token }))).await;
        assert_eq!(r.status, StatusCode::CREATED, "ACL bootstrap: {}", r.body);
        self.api.token = Some(r.body["token"].as_str().expect("admin token").to_string());
    }

    /// Waits until the named nodes are ready and connected to the leader.
    pub async fn wait_agents_connected(&self, names: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.leader().await;
            let r = self.api.call(Method::GET, "/api/v1/nodes", None).await;
            let nodes = r.body.as_array().cloned().unwrap_or_default();
            let up = |n: &String| {
                nodes
                    .iter()
                    .any(|v| v["name"] == n.as_str() && v["status"] == "ready" && v["live"]["connected"] == true)
            };
            if names.iter().all(up) {
                return;
            }
            assert!(Instant::now() < deadline, "agents {names:?} not all connected within {within:?}: {}", r.body);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Index of the agreed leader (waits up to 30 s for one); the API
    /// client tries it first from now on.
    pub async fn leader(&self) -> usize {
        let l = self.coords.wait_leader(Duration::from_secs(30)).await;
        self.api.prefer.store(l, std::sync::atomic::Ordering::Relaxed);
        l
    }

    /// Waits until the coordinators other than index `out` (paused, or cut
    /// off) agree on a leader among themselves; returns its index.
    pub async fn leader_besides(&self, out: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut views = Vec::new();
            for i in (0..self.coords.nodes.len()).filter(|i| *i != out && self.coords.running(*i)) {
                views.push(self.coords.status(i).await);
            }
            let leader = views.iter().flatten().find(|s| s.role == "Leader").map(|s| s.id);
            if let Some(l) = leader
                && views.iter().all(|v| v.as_ref().is_some_and(|s| s.leader == Some(l)))
            {
                return self.coords.index_of(l);
            }
            assert!(Instant::now() < deadline, "no leader besides coordinator index {out}: {views:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9 coordinator index `i`.
    pub fn kill_coordinator(&mut self, i: usize) {
        self.coords.kill(i);
    }

    /// Starts coordinator index `i` again (same data dir).
    pub fn restart_coordinator(&mut self, i: usize) {
        self.coords.spawn(i);
    }

    /// kill -9 agent index `i` (its containers keep running).
    pub fn kill_agent(&mut self, i: usize) {
        self.agents[i].kill();
    }

    pub fn restart_agent(&mut self, i: usize) {
        self.agents[i].spawn();
    }

    /// The replicated state once all running coordinators agree.
    pub async fn state(&self) -> State {
        self.coords.wait_converged(Duration::from_secs(30)).await
    }

    /// Every container of every agent namespace, as containerd sees it.
    pub async fn containers(&self) -> Vec<ContainerView> {
        let mut out = Vec::new();
        for a in &self.agents {
            for mut c in namespace_containers_at(&a.socket, &a.ns).await.unwrap() {
                c.node = a.name.clone();
                out.push(c);
            }
        }
        out
    }

    /// Compares containerd with the replicated state; returns what is wrong
    /// (empty when consistent):
    /// - a service the state says is active has exactly one running
    ///   container, on its node, with its container id;
    /// - a running container belongs to a service that may hold one
    ///   (starting, active or terminating) with that container id;
    /// - no service is running in two containers.
    pub async fn audit(&self) -> Vec<String> {
        let st = self.state().await;
        let containers = self.containers().await;
        audit(&st, &containers)
    }

    /// Runs the `zoe` CLI against this cluster (`--addr` of a running
    /// coordinator, the admin `--token`, no user config file).
    pub fn cli(&self, args: &[&str]) -> CliOut {
        let out = self.cli_command(args).output().expect("run zoe");
        CliOut {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The `zoe` command [`ZoeCluster::cli`] runs, to spawn it (a
    /// `--monitor` that runs while the test goes on).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let i = (0..self.coords.nodes.len()).find(|i| self.coords.running(*i)).expect("a running coordinator");
        self.cli_command_on(i, args)
    }

    /// Runs the `zoe` CLI against coordinator index `i` (e.g. the leader).
    pub fn cli_on(&self, i: usize, args: &[&str]) -> CliOut {
        let out = self.cli_command_on(i, args).output().expect("run zoe");
        CliOut {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The `zoe` command with every coordinator in `--addr`, as an operator
    /// configures it to ride out restarts.
    pub fn cli_command_all(&self, args: &[&str]) -> Command {
        self.cli_command_at(&self.api.urls.join(","), args)
    }

    /// The `zoe` command against coordinator index `i` only.
    pub fn cli_command_on(&self, i: usize, args: &[&str]) -> Command {
        self.cli_command_at(&self.api.urls[i], args)
    }

    fn cli_command_at(&self, addr: &str, args: &[&str]) -> Command {
        let mut c = Command::new(zoe_bin());
        c.args(args)
            .args(["--addr", addr])
            .args(["--token", self.api.token.as_deref().unwrap_or("")])
            .env("ZOE_CONFIG", self.dir.join("no-cli-config.toml"))
            .env_remove("ZOE_ADDR")
            .env_remove("ZOE_TOKEN")
            .stdin(Stdio::null());
        c
    }

    /// Prints the tails of all agent logs (the coordinators' are printed by
    /// [`Cluster`] on a panic).
    pub fn dump_agent_logs(&self) {
        for a in &self.agents {
            eprintln!("----- agent {} ({}) last 60 lines -----\n{}", a.name, a.log.display(), tail(&a.log, 60));
        }
    }
}

/// See [`ZoeCluster::audit`].
pub fn audit(st: &State, containers: &[ContainerView]) -> Vec<String> {
    let mut problems = Vec::new();
    let running: Vec<&ContainerView> = containers.iter().filter(|c| c.running).collect();
    let mut by_service: BTreeMap<u64, Vec<&ContainerView>> = BTreeMap::new();
    for c in &running {
        match c.service {
            Some(s) => by_service.entry(s).or_default().push(c),
            None => problems.push(format!("running container {} on {} has no zoe labels", c.id, c.node)),
        }
    }
    for (sid, cs) in &by_service {
        if cs.len() > 1 {
            let ids: Vec<_> = cs.iter().map(|c| format!("{}@{}", c.id, c.node)).collect();
            problems.push(format!("service {sid} runs in {} containers: {ids:?}", cs.len()));
        }
        for c in cs {
            match st.services.get(sid) {
                None => problems.push(format!("container {} on {} runs for unknown service {sid}", c.id, c.node)),
                Some(s) => {
                    let may_hold = matches!(
                        s.status,
                        ServiceStatus::Starting | ServiceStatus::Active | ServiceStatus::Terminating
                    );
                    if !may_hold || s.container_id.as_deref() != Some(c.id.as_str()) {
                        problems.push(format!(
                            "container {} on {} runs for service {sid} which is {:?} with container {:?} on {:?}",
                            c.id, c.node, s.status, s.container_id, s.node
                        ));
                    }
                }
            }
        }
    }
    for s in st.services.values().filter(|s| s.status == ServiceStatus::Active) {
        let ok = s
            .container_id
            .as_ref()
            .is_some_and(|cid| running.iter().any(|c| &c.id == cid && Some(c.node.as_str()) == s.node.as_deref()));
        if !ok {
            problems.push(format!(
                "service {} ({}) is active with container {:?} on {:?}, which does not run",
                s.id, s.name, s.container_id, s.node
            ));
        }
    }
    problems
}

impl Drop for ZoeCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_agent_logs();
        }
        for a in &mut self.agents {
            a.kill();
        }
        // Containerd cleanup is async; this may run inside the test's
        // runtime, so it gets a thread and a runtime of its own.
        let namespaces: Vec<(PathBuf, String)> = self.agents.iter().map(|a| (a.socket.clone(), a.ns.clone())).collect();
        let dir = self.dir.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for (socket, ns) in &namespaces {
                    cleanup_namespace_at(socket, ns, &dir).await;
                }
            });
        })
        .join();
        unmount_under(&self.dir);
    }
}

/// Unmounts (lazily) everything mounted under `dir`, deepest first. A
/// killed agent leaves the image layers it mounted for its containers
/// (idmapped, under its data dir) behind; nothing else unmounts them, and
/// they piled up by the hundred over a session's cluster tests.
pub fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|p| p.starts_with(&prefix)).collect();
    points.sort_unstable_by(|a, b| b.cmp(a));
    points.dedup();
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}
