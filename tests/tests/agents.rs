//! Agents and coordinators over the real protocol: real `zoe agent`
//! processes on the test containerd (one namespace each), mutual TLS with a
//! throwaway CA, coordinators either in this process (to call the back-end
//! directly) or as real `zoe coordinator` processes (failover).

mod harness;

use futures::StreamExt;
use harness::{Port, reserve_port, zoe_bin};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zoe_common::proto::{self, Registration, SessionOpen, SessionReply};
use zoe_common::resources::Millicores;
use zoe_common::service::ServiceSpec;
use zoe_coordinator::agents::{AgentBackend, ClusterStats, client};
use zoe_coordinator::api::live::LogRequest;
use zoe_coordinator::backend::{Backend, BackendEvent};
use zoe_coordinator::raft::{CoordNode, Coordinator, CoordinatorClient, CoordinatorConfig};
use zoe_coordinator::state::{Applied, ExecutionStatus};
use zoe_net::{CertificateAuthority, Identity, Role, TlsMaterial};
use zoe_testkit::DEFAULT_REFERENCE;

const BATCH: &str = include_str!("../../examples/zapps/hello-batch.json");

// ------------------------------------------------------------------ fixtures

struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateAuthority,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("zoe-agents-").tempdir().unwrap();
        let ca = CertificateAuthority::generate("test").unwrap();
        ca.write(dir.path()).unwrap();
        Pki { dir, ca }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<file>.pem` / `<file>-key.pem` for role/name, signed by `signer`.
    fn issue_with(&self, signer: &CertificateAuthority, role: Role, name: &str, file: &str) {
        signer
            .issue(&Identity::new(role, name).unwrap(), &[], &["127.0.0.1".parse().unwrap()])
            .unwrap()
            .write(self.path(), file)
            .unwrap();
    }

    fn issue(&self, role: Role, name: &str) {
        self.issue_with(&self.ca, role, name, &format!("{role}-{name}"));
    }

    fn material(&self, signer: &CertificateAuthority, role: Role, name: &str) -> TlsMaterial {
        let c = signer.issue(&Identity::new(role, name).unwrap(), &[], &[]).unwrap();
        TlsMaterial::from_pem(self.ca.cert_pem().as_bytes(), c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap()
    }
}

/// Fast liveness settings for tests.
fn agent_section(listen: &str, orphan_grace_ms: u64) -> String {
    format!(
        "[agents]\nlisten = \"{listen}\"\nheartbeat_ms = 500\nttl_ms = 2000\ngrace_ms = 1000\n\
         failover_grace_ms = 2000\norphan_grace_ms = {orphan_grace_ms}\nstop_grace_ms = 2000\nspawn_timeout_ms = 60000\n"
    )
}

struct CoordPorts {
    raft: Port,
    agents: Port,
}

fn coordinator_toml(pki: &Pki, id: u64, peers: &[(u64, &CoordPorts)], orphan_grace_ms: u64) -> PathBuf {
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

/// One coordinator in this process, with its agent back-end, as leader.
async fn inproc_coordinator(pki: &Pki, orphan_grace_ms: u64) -> (Coordinator, Arc<AgentBackend>, CoordPorts) {
    let ports = CoordPorts { raft: reserve_port(), agents: reserve_port() };
    let path = coordinator_toml(pki, 1, &[(1, &ports)], orphan_grace_ms);
    let cfg = CoordinatorConfig::load(&path).unwrap();
    let settings = cfg.agents.clone();
    let c = Coordinator::start(cfg).await.unwrap();
    wait_until("the coordinator to lead", Duration::from_secs(20), || async {
        c.raft().metrics().borrow().current_leader == Some(1)
    })
    .await;
    let b = AgentBackend::start(c.clone(), settings).await.unwrap();
    wait_until("the back-end to see leadership", Duration::from_secs(10), || async { b.is_leader() }).await;
    (c, b, ports)
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
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

/// Imports busybox into a fresh namespace (before its agent starts).
async fn prepare_namespace(ns: &str, dir: &Path) {
    let mut cfg = zoe_agent::RuntimeConfig::new(&zoe_testkit::containerd().socket, dir.join("prep"));
    cfg.namespace = ns.to_string();
    let rt = zoe_agent::Runtime::connect(cfg).await.unwrap();
    let archive = dir.join("busybox-oci.tar");
    if !archive.exists() {
        zoe_testkit::BusyboxImage::build().unwrap().write_oci_archive(&archive).unwrap();
    }
    rt.images().import_archive(&archive, None, None).await.unwrap();
    rt.shutdown().await;
}

/// Stops everything left in a namespace and deletes it (best effort).
async fn cleanup_namespace(ns: &str, dir: &Path) {
    let mut cfg = zoe_agent::RuntimeConfig::new(&zoe_testkit::containerd().socket, dir.join("cleanup"));
    cfg.namespace = ns.to_string();
    let Ok(rt) = zoe_agent::Runtime::connect(cfg).await else { return };
    for s in rt.services() {
        let _ = rt.stop(&s.id, Duration::from_secs(1)).await;
    }
    if let Ok(orphans) = rt.orphans().await {
        for o in orphans {
            let _ = rt.stop(&o.id, Duration::from_secs(1)).await;
        }
    }
    let _ = rt.images().remove(DEFAULT_REFERENCE).await;
    let ctd = rt.containerd().clone();
    rt.shutdown().await;
    let req = containerd_client::services::v1::DeleteNamespaceRequest { name: ns.to_string() };
    let _ = ctd.namespaces().delete(req).await;
}

/// A running container's task status, straight from containerd.
async fn task_running(ns: &str, id: &str) -> bool {
    let ctd = zoe_agent::Containerd::connect(&zoe_testkit::containerd().socket, ns).await.unwrap();
    let req = containerd_client::services::v1::GetRequest { container_id: id.to_string(), exec_id: String::new() };
    match ctd.tasks().get(ctd.rq(req)).await {
        Ok(r) => {
            r.into_inner().process.is_some_and(|p| p.status == containerd_client::types::v1::Status::Running as i32)
        }
        Err(_) => false,
    }
}

async fn container_exists(ns: &str, id: &str) -> bool {
    let ctd = zoe_agent::Containerd::connect(&zoe_testkit::containerd().socket, ns).await.unwrap();
    let req = containerd_client::services::v1::GetContainerRequest { id: id.to_string() };
    ctd.containers().get(ctd.rq(req)).await.is_ok()
}

struct AgentProc {
    child: Option<Child>,
    ns: String,
    log: PathBuf,
}

impl AgentProc {
    /// Starts `zoe agent` for node `name` (certificate file `cert`).
    fn start(pki: &Pki, name: &str, cert: &str, coordinators: &[String], ns: &str) -> AgentProc {
        let data = pki.path().join(format!("agent-{name}-{ns}"));
        let list: Vec<String> = coordinators.iter().map(|c| format!("\"{c}\"")).collect();
        let toml = format!(
            "coordinators = [{}]\ndata_dir = \"{}\"\nlabels = [\"zone-{name}\"]\nheartbeat_ms = 500\n\
             reconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
             [containerd]\nsocket = \"{}\"\nnamespace = \"{ns}\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"{cert}.pem\"\nkey = \"{cert}-key.pem\"\n",
            list.join(", "),
            data.display(),
            zoe_testkit::containerd().socket.display(),
        );
        let config = pki.path().join(format!("agent-{name}-{ns}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = pki.path().join(format!("agent-{name}-{ns}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(zoe_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,quinn=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn zoe agent");
        AgentProc { child: Some(child), ns: ns.to_string(), log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("--- agent log ({}) ---\n{}", self.ns, self.log_text());
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn client_tls(pki: &Pki) -> TlsMaterial {
    pki.material(&pki.ca, Role::Client, "tests")
}

async fn stats(pki: &Pki, addrs: &[String]) -> Option<ClusterStats> {
    client::cluster_stats(&client_tls(pki), addrs).await.ok()
}

fn online(s: &ClusterStats, node: &str) -> bool {
    s.nodes.iter().any(|n| n.name == node && n.status == "online" && n.timestamp > 0)
}

fn spec(service_id: u64, container_id: &str, argv: &[&str]) -> ServiceSpec {
    ServiceSpec {
        service_id,
        execution_id: 1,
        container_id: container_id.into(),
        instance: format!("s{service_id}"),
        image: DEFAULT_REFERENCE.into(),
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        env: vec![],
        working_dir: None,
        hostname: format!("s{service_id}"),
        mounts: vec![],
        labels: Default::default(),
        cores: Millicores(500),
        cores_min: Millicores(100),
        memory_limit: Some(64 << 20),
        shm: None,
        ports: vec![],
        network: None,
    }
}

// --------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_register_report_stats_and_run_commands() {
    let pki = Pki::new();
    let (_c, backend, ports) = inproc_coordinator(&pki, 600_000).await;
    let addr = vec![format!("127.0.0.1:{}", ports.agents.port)];
    let (ns1, ns2) = (zoe_testkit::unique_namespace("agent-n1"), zoe_testkit::unique_namespace("agent-n2"));
    prepare_namespace(&ns1, pki.path()).await;
    prepare_namespace(&ns2, pki.path()).await;
    pki.issue(Role::Agent, "n1");
    pki.issue(Role::Agent, "n2");
    let a1 = AgentProc::start(&pki, "n1", "agent-n1", &addr, &ns1);
    let a2 = AgentProc::start(&pki, "n2", "agent-n2", &addr, &ns2);

    // Both register; stats arrive; ClusterStats sums them.
    wait_until("both nodes online", Duration::from_secs(30), || async {
        stats(&pki, &addr).await.is_some_and(|s| online(&s, "n1") && online(&s, "n2"))
    })
    .await;
    let s = stats(&pki, &addr).await.unwrap();
    assert_eq!(s.nodes.len(), 2);
    assert!(s.cores_total > 0.0 && s.memory_total > 0);
    assert!((s.cores_total - s.nodes.iter().map(|n| n.cores_total).sum::<f64>()).abs() < 1e-9);
    assert_eq!(s.memory_total, s.nodes.iter().map(|n| n.memory_total).sum::<u64>());
    assert!(s.nodes.iter().all(|n| n.node_status == "ready" && !n.images.is_empty()));
    assert!(s.nodes.iter().any(|n| n.labels.contains("zone-n1")));

    // A spawn runs a real container; asking again answers with the same one.
    let mut events = backend.events();
    let sp =
        backend.spawn_service("n1", spec(1001, "zt-long-1", &["sh", "-c", "echo hello-from-zoe; sleep 120"])).await;
    let sp = sp.expect("spawn");
    assert_eq!(sp.container_id, "zt-long-1");
    assert_eq!(sp.ip_address.as_deref(), Some("127.0.0.1"));
    let again = backend.spawn_service("n1", spec(1001, "zt-long-1", &["true"])).await.expect("idempotent spawn");
    assert_eq!(again.container_id, "zt-long-1");
    assert!(task_running(&ns1, "zt-long-1").await);

    // Logs stream (follow) from the agent.
    let mut log = backend
        .clone()
        .log_stream("n1".into(), "zt-long-1".into(), LogRequest { offset: 0, follow: true })
        .await
        .expect("log stream");
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = String::new();
        while let Some(chunk) = log.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().data));
            if seen.contains("hello-from-zoe") {
                return seen;
            }
        }
        seen
    })
    .await
    .expect("log in time");
    assert!(got.contains("hello-from-zoe"), "{got:?}");
    drop(log);

    // update_service changes the cgroup; the agent reads it back in its stats.
    backend.update_service("n1", 1001, "zt-long-1", Millicores(250), Some(48 << 20)).await.expect("update");
    wait_until("the new limits in the stats", Duration::from_secs(15), || async {
        stats(&pki, &addr).await.is_some_and(|s| {
            s.nodes
                .iter()
                .filter_map(|n| n.service_stats.get("zt-long-1"))
                .any(|ss| ss.core_limit == Some(0.25) && ss.mem_limit == Some(48 << 20) && ss.service_id == Some(1001))
        })
    })
    .await;

    // An exit comes back as an event with its code.
    backend.spawn_service("n2", spec(1002, "zt-exit-3", &["sh", "-c", "exit 3"])).await.expect("spawn");
    let ev = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await.unwrap() {
                BackendEvent::Exited { container_id, exit_code, service, .. } if container_id == "zt-exit-3" => {
                    return (service, exit_code);
                }
                _ => {}
            }
        }
    })
    .await
    .expect("exit event");
    assert_eq!(ev, (1002, Some(3)));

    // Terminate stops and removes it.
    backend.terminate_service("n1", 1001, "zt-long-1").await.expect("terminate");
    assert!(!container_exists(&ns1, "zt-long-1").await);
    let images = backend.list_images("n2").await.expect("images");
    assert!(images.iter().any(|i| i.names.iter().any(|n| n == DEFAULT_REFERENCE)));
    let t = Instant::now();
    backend.ping("n2").await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));

    drop(a1);
    drop(a2);
    cleanup_namespace(&ns1, pki.path()).await;
    cleanup_namespace(&ns2, pki.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zapp_runs_through_leader_loop_and_agent_and_terminates() {
    let pki = Pki::new();
    let (c, backend, ports) = inproc_coordinator(&pki, 600_000).await;
    let addr = vec![format!("127.0.0.1:{}", ports.agents.port)];
    let ns = zoe_testkit::unique_namespace("agent-e2e");
    prepare_namespace(&ns, pki.path()).await;
    pki.issue(Role::Agent, "n1");
    let agent = AgentProc::start(&pki, "n1", "agent-n1", &addr, &ns);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let cfg = c.config().leader.clone();
    tokio::spawn(zoe_coordinator::leader::Leader::new(c.clone(), backend.clone(), cfg).run(stopped));
    wait_until("n1 connected", Duration::from_secs(30), || async { backend.platform_state().connected("n1") }).await;

    let app = zoe_common::zapp::parse(BATCH).unwrap().0;
    let cmd = zoe_coordinator::state::Command::SubmitExecution {
        name: "e2e".into(),
        owner: "ada".into(),
        description: app,
        size: 0.0,
        time: zoe_coordinator::leader::now_ms(),
    };
    let id = match c.write(cmd).await.unwrap().result.unwrap() {
        Applied::Created(id) => id,
        other => panic!("{other:?}"),
    };
    wait_until("the execution to terminate", Duration::from_secs(60), || async {
        c.read_local(|st| st.executions[&id].status).0 == ExecutionStatus::Terminated
    })
    .await;
    let (code, cid) = c
        .read_local(|st| {
            let s = st.services.values().find(|s| s.execution_id == id).unwrap();
            (s.last_exit_code, s.container_id.clone())
        })
        .0;
    assert_eq!(code, Some(0));
    // The batch container's output reached its log.
    let cid = cid.expect("container id");
    let mut log = backend.clone().log_stream("n1".into(), cid, LogRequest { offset: 0, follow: false }).await.unwrap();
    let mut text = String::new();
    while let Some(c) = log.next().await {
        text.push_str(&String::from_utf8_lossy(&c.unwrap().data));
    }
    assert!(text.contains("done"), "{text:?}");
    let _ = stop.send(true);
    drop(agent);
    cleanup_namespace(&ns, pki.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reported_and_cleaned() {
    let pki = Pki::new();
    let ns = zoe_testkit::unique_namespace("agent-orphan");
    prepare_namespace(&ns, pki.path()).await;
    // Containers made behind the coordinators' back: one running, one exited.
    {
        let mut cfg = zoe_agent::RuntimeConfig::new(&zoe_testkit::containerd().socket, pki.path().join("behind"));
        cfg.namespace = ns.clone();
        let rt = zoe_agent::Runtime::connect(cfg).await.unwrap();
        let mk = |id: &str, argv: &[&str]| zoe_agent::ServiceSpec {
            id: id.into(),
            image: DEFAULT_REFERENCE.into(),
            command: Some(argv.iter().map(|s| s.to_string()).collect()),
            owner: zoe_agent::Ownership {
                execution_id: "77".into(),
                service_id: "7777".into(),
                instance_name: id.into(),
            },
            ..Default::default()
        };
        rt.spawn(&mk("orphan-run", &["sleep", "300"])).await.unwrap();
        rt.spawn(&mk("orphan-done", &["true"])).await.unwrap();
        rt.wait("orphan-done").await.unwrap();
        rt.shutdown().await;
    }
    assert!(task_running(&ns, "orphan-run").await);
    let (_c, _backend, ports) = inproc_coordinator(&pki, 3_000).await;
    let addr = vec![format!("127.0.0.1:{}", ports.agents.port)];
    pki.issue(Role::Agent, "n1");
    let agent = AgentProc::start(&pki, "n1", "agent-n1", &addr, &ns);
    // The exited orphan goes at registration; the running one after its grace.
    wait_until("the exited orphan removed", Duration::from_secs(20), || async {
        !container_exists(&ns, "orphan-done").await
    })
    .await;
    wait_until("the running orphan reported", Duration::from_secs(20), || async {
        stats(&pki, &addr).await.is_some_and(|s| s.nodes.iter().any(|n| n.service_stats.contains_key("orphan-run")))
    })
    .await;
    wait_until("the running orphan stopped after its grace", Duration::from_secs(30), || async {
        !container_exists(&ns, "orphan-run").await
    })
    .await;
    drop(agent);
    cleanup_namespace(&ns, pki.path()).await;
}

/// Opens a session with `tls` and returns the coordinator's answer.
async fn try_register(tls: &TlsMaterial, addr: &str) -> Result<SessionReply, String> {
    let ep = tls.client_endpoint(&[proto::ALPN]).map_err(|e| e.to_string())?;
    let conn =
        ep.connect(addr.parse().unwrap(), "127.0.0.1").map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    let open = SessionOpen {
        registration: Registration {
            addresses: vec!["127.0.0.1".into()],
            cores_millis: 1000,
            memory_bytes: 1 << 30,
            labels: Default::default(),
            containerd_version: "test".into(),
            cgroup_mode: "v1".into(),
            images: vec![],
            containers: vec![],
            agent_version: "test".into(),
        },
        stats: Default::default(),
    };
    let r = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        zoe_net::frame::write_frame(&mut send, &open, proto::MAX_FRAME).await.map_err(|e| e.to_string())?;
        match zoe_net::frame::read_frame::<_, SessionReply>(&mut recv, proto::MAX_FRAME).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err("closed".to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), r).await.map_err(|_| "timeout".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_agent_certificates_of_this_ca_register_under_their_own_name() {
    let pki = Pki::new();
    let (c, _backend, ports) = inproc_coordinator(&pki, 600_000).await;
    let addr = format!("127.0.0.1:{}", ports.agents.port);
    let foreign = CertificateAuthority::generate("other").unwrap();

    let r = try_register(&pki.material(&foreign, Role::Agent, "n1"), &addr).await;
    assert!(r.is_err(), "foreign CA accepted: {r:?}");
    let r = try_register(&pki.material(&pki.ca, Role::Client, "n1"), &addr).await;
    assert!(!matches!(r, Ok(SessionReply::Accepted { .. })), "client certificate registered: {r:?}");
    let r = try_register(&pki.material(&pki.ca, Role::Coordinator, "n1"), &addr).await;
    assert!(!matches!(r, Ok(SessionReply::Accepted { .. })), "coordinator certificate registered: {r:?}");
    assert!(c.read_local(|st| st.nodes.is_empty()).0, "a refused peer left a node record");

    // The node name is the certificate's: there is no field to claim another.
    let r = try_register(&pki.material(&pki.ca, Role::Agent, "n7"), &addr).await.unwrap();
    assert_eq!(r, SessionReply::Accepted { node: "n7".into(), heartbeat_ms: 500 });
    let names: Vec<String> = c.read_local(|st| st.nodes.keys().cloned().collect()).0;
    assert_eq!(names, vec!["n7".to_string()]);
}

// ------------------------------------------------------------------ failover

struct CoordProc {
    id: u64,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
}

impl CoordProc {
    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self.child = Some(
            Command::new(zoe_bin())
                .args(["coordinator", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info,openraft=warn,sled=warn,quinn=warn")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("spawn zoe coordinator"),
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for CoordProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- coordinator {} log ---\n{}",
                self.id,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_follows_a_new_leader_after_kill_9_and_its_container_keeps_running() {
    let pki = Pki::new();
    let ports: Vec<CoordPorts> = (0..3).map(|_| CoordPorts { raft: reserve_port(), agents: reserve_port() }).collect();
    let peers: Vec<(u64, &CoordPorts)> = ports.iter().enumerate().map(|(i, p)| (i as u64 + 1, p)).collect();
    let mut coords: Vec<CoordProc> = (1..=3u64)
        .map(|id| CoordProc {
            id,
            child: None,
            config: coordinator_toml(&pki, id, &peers, 600_000),
            log: pki.path().join(format!("c{id}.log")),
        })
        .collect();
    for c in &mut coords {
        c.spawn();
    }
    let agent_addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{}", p.agents.port)).collect();
    let raft_members: Vec<CoordNode> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| CoordNode { addr: format!("127.0.0.1:{}", p.raft.port), name: format!("c{}", i + 1) })
        .collect();
    let mut rc = CoordinatorClient::new(&client_tls(&pki), raft_members).unwrap();
    rc.attempt_timeout = Duration::from_secs(3);

    let ns = zoe_testkit::unique_namespace("agent-failover");
    prepare_namespace(&ns, pki.path()).await;
    pki.issue(Role::Agent, "n1");
    let agent = AgentProc::start(&pki, "n1", "agent-n1", &agent_addrs, &ns);
    wait_until("n1 online at the leader", Duration::from_secs(40), || async {
        stats(&pki, &agent_addrs).await.is_some_and(|s| online(&s, "n1"))
    })
    .await;

    // A long-running execution through the coordinators' own leader loop.
    let text = BATCH.replace("echo done'", "echo started; sleep 600'");
    let app = zoe_common::zapp::parse(&text).unwrap().0;
    let cmd = zoe_coordinator::state::Command::SubmitExecution {
        name: "long".into(),
        owner: "ada".into(),
        description: app,
        size: 0.0,
        time: zoe_coordinator::leader::now_ms(),
    };
    let w = rc.write(&cmd, Duration::from_secs(20)).await.unwrap();
    let Ok(Applied::Created(exec)) = w.result else { panic!("{:?}", w.result) };
    let mut container = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok((st, _)) = rc.read_via(0, false).await {
            if st.executions[&exec].status == ExecutionStatus::Running {
                container =
                    st.services.values().find(|s| s.execution_id == exec).unwrap().container_id.clone().unwrap();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!container.is_empty(), "execution never ran");
    assert!(task_running(&ns, &container).await);

    // kill -9 the leader.
    let leader_id = rc.status_of(0).await.ok().and_then(|s| s.leader).expect("a leader");
    let leader = coords.iter_mut().find(|c| c.id == leader_id).unwrap();
    let t0 = Instant::now();
    leader.kill();
    let others: Vec<String> =
        agent_addrs.iter().enumerate().filter(|(i, _)| *i as u64 + 1 != leader_id).map(|(_, a)| a.clone()).collect();
    let mut new_leader_ok = false;
    while t0.elapsed() < Duration::from_secs(20) {
        if let Some(s) = stats(&pki, &others).await {
            // A fresh heartbeat at the new leader.
            if online(&s, "n1") {
                new_leader_ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t0.elapsed();
    assert!(new_leader_ok, "agent never reached the new leader");
    assert!(took <= Duration::from_secs(5), "agent took {took:?} to reach the new leader");
    assert!(task_running(&ns, &container).await, "the container did not survive the failover");
    // Same container, still running, as far as the replicated state goes.
    let (st, _) = rc.read_via(coords.iter().position(|c| c.child.is_some()).unwrap(), false).await.unwrap();
    assert_eq!(st.executions[&exec].status, ExecutionStatus::Running);
    assert_eq!(
        st.services.values().find(|s| s.execution_id == exec).unwrap().container_id.as_deref(),
        Some(container.as_str())
    );

    drop(agent);
    for c in &mut coords {
        c.kill();
    }
    cleanup_namespace(&ns, pki.path()).await;
}
