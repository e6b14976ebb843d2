//! The leader loop on a real single-member coordinator (Raft on sled, mutual
//! TLS), with a recording test double in place of the agents: it checks
//! what the loop asks of nodes and how it commits their answers. The real
//! agent path is covered by the cluster tests.

use super::*;
use crate::backend::{BackendError, Spawned};
use crate::config::{CoordinatorConfig, PeerConfig, TlsFiles};
use crate::scheduler::{LiveNode, Platform};
use crate::state::{AfterCleanup, Capacity, ExecutionId, ExecutionStatus, Registration, State};
use std::future::Future;
use std::time::Instant;
use zoe_common::resources::Millicores;
use zoe_common::service::ImageSummary;
use zoe_net::{CertificateAuthority, Identity, Role};

/// Answers like an agent would, and records what it was asked.
#[derive(Default)]
struct RecordingBackend {
    calls: Mutex<Vec<String>>,
    /// container ids whose start fails: (fails left, retryable?)
    failures: Mutex<HashMap<String, (u32, bool)>>,
    /// instance names whose start fails, any attempt.
    fail_instances: Mutex<HashMap<String, bool>>,
    /// container ids whose spawn gets no answer this many times (the
    /// container starts, the answer is lost).
    unanswered: Mutex<HashMap<String, u32>>,
    /// A second connected node and its session (none by default).
    other: Mutex<Option<(String, u64)>>,
    events: Mutex<Option<broadcast::Sender<BackendEvent>>>,
}

impl RecordingBackend {
    fn sender(&self) -> broadcast::Sender<BackendEvent> {
        self.events.lock().unwrap().get_or_insert_with(|| broadcast::channel(64).0).clone()
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Backend for RecordingBackend {
    fn spawn_service(
        &self,
        _term: u64,
        node: &str,
        spec: ServiceSpec,
    ) -> impl Future<Output = Result<Spawned, SpawnError>> + Send {
        self.calls.lock().unwrap().push(format!("spawn {} {} on {node}", spec.instance, spec.container_id));
        let lost = match self.unanswered.lock().unwrap().get_mut(&spec.container_id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let fail = match self.fail_instances.lock().unwrap().get(&spec.instance) {
            Some(retryable) => Some(*retryable),
            None => {
                let mut f = self.failures.lock().unwrap();
                match f.get_mut(&spec.container_id) {
                    Some((n, retryable)) if *n > 0 => {
                        *n -= 1;
                        Some(*retryable)
                    }
                    _ => None,
                }
            }
        };
        let cid = spec.container_id.clone();
        async move {
            if lost {
                return Err(SpawnError::Unknown("connection lost".into()));
            }
            match fail {
                Some(true) => Err(SpawnError::Retryable("runtime busy".into())),
                Some(false) => Err(SpawnError::Fatal("image not found".into())),
                None => Ok(Spawned { container_id: cid, ip_address: Some("127.0.0.1".into()), ports: vec![] }),
            }
        }
    }
    fn terminate_service(
        &self,
        _term: u64,
        node: &str,
        _s: ServiceId,
        c: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.calls.lock().unwrap().push(format!("terminate {c} on {node}"));
        async { Ok(()) }
    }
    fn remove_container(
        &self,
        _term: u64,
        node: &str,
        c: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.calls.lock().unwrap().push(format!("remove {c} on {node}"));
        async { Ok(()) }
    }
    fn update_service(
        &self,
        _term: u64,
        _node: &str,
        _s: ServiceId,
        c: &str,
        cores: Millicores,
        _m: Option<u64>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.calls.lock().unwrap().push(format!("update {c} {cores}"));
        async { Ok(()) }
    }
    fn platform_state(&self) -> Platform {
        let mut p = Platform::default();
        p.nodes.insert("n1".into(), LiveNode { connected: true, ..LiveNode::default() });
        p.seen.insert("n1".into(), now_ms());
        if let Some((name, session)) = self.other.lock().unwrap().clone() {
            p.nodes.insert(name.clone(), LiveNode { connected: true, session, ..LiveNode::default() });
            p.seen.insert(name, now_ms());
        }
        p
    }
    fn liveness(&self) -> zoe_model::pass::Liveness {
        crate::agents::AgentSettings::default().liveness()
    }
    fn configure_network(
        &self,
        node: &str,
        _n: zoe_common::proto::NodeNetwork,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.calls.lock().unwrap().push(format!("network on {node}"));
        async { Ok(()) }
    }
    fn set_hosts(
        &self,
        node: &str,
        e: crate::state::ExecutionId,
        _h: Vec<zoe_common::proto::HostEntry>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        self.calls.lock().unwrap().push(format!("hosts {e} on {node}"));
        async { Ok(()) }
    }
    fn list_images(&self, _node: &str) -> impl Future<Output = Result<Vec<ImageSummary>, BackendError>> + Send {
        async { Ok(vec![]) }
    }
    fn preload_image(&self, _node: &str, _r: &str) -> impl Future<Output = Result<(), BackendError>> + Send {
        async { Ok(()) }
    }
    fn events(&self) -> broadcast::Receiver<BackendEvent> {
        self.sender().subscribe()
    }
}

struct Fixture {
    node: Coordinator,
    backend: Arc<RecordingBackend>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A single-member coordinator, leading, with node `n1` registered.
async fn coordinator() -> (Coordinator, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate("leader-test").unwrap();
    ca.write(dir.path()).unwrap();
    ca.issue(&Identity::new(Role::Coordinator, "c1").unwrap(), &[], &["127.0.0.1".parse().unwrap()])
        .unwrap()
        .write(dir.path(), "c1")
        .unwrap();
    let port = free_port();
    let config = CoordinatorConfig {
        id: 1,
        name: "c1".into(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        advertise: None,
        data_dir: dir.path().join("data"),
        tls: TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("c1.pem"),
            key: dir.path().join("c1-key.pem"),
        },
        peers: vec![PeerConfig { id: 1, addr: format!("127.0.0.1:{port}"), name: "c1".into() }],
        raft: Default::default(),
        api: Default::default(),
        agents: Default::default(),
        leader: Default::default(),
        backup: Default::default(),
        gc: Default::default(),
    };
    let node = Coordinator::start(config).await.unwrap();
    let capacity = Capacity { cores: Millicores::from_whole_cores(2), memory: 4 << 30 };
    let registration = Registration { addresses: vec!["127.0.0.1".into()], ..Registration::bare("n1", capacity) };
    node.write(Command::RegisterNode { registration, time: now_ms() }).await.unwrap().result.unwrap();
    (node, dir)
}

async fn fixture(cfg: LeaderConfig) -> Fixture {
    let (node, dir) = coordinator().await;
    let backend = Arc::new(RecordingBackend::default());
    let (stop, rx) = watch::channel(false);
    tokio::spawn(Leader::new(node.clone(), backend.clone(), cfg).run(rx));
    Fixture { node, backend, stop, _dir: dir }
}

impl Fixture {
    async fn submit(&self, text: &str) -> ExecutionId {
        let app = zoe_common::zapp::parse(text).unwrap().0;
        let cmd = Command::SubmitExecution {
            idempotency_key: None,
            name: "t".into(),
            owner: "ada".into(),
            description: app,
            size: 0.0,
            time: now_ms(),
        };
        match self.node.write(cmd).await.unwrap().result.unwrap() {
            Applied::Created(id) => id,
            other => panic!("{other:?}"),
        }
    }

    async fn wait_for(&self, what: &str, f: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.node.read_local(&f).0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for {what}; calls: {:#?}", self.backend.calls());
    }

    fn status(&self, id: ExecutionId) -> ExecutionStatus {
        self.node.read_local(|st| st.executions[&id].status).0
    }
}

const BATCH: &str = include_str!("../../../examples/zapps/hello-batch.json");
const SPARK: &str = include_str!("../../../examples/zapps/spark-like.json");

fn fast() -> LeaderConfig {
    LeaderConfig {
        tick_ms: 50,
        start_retry_base_ms: 50,
        start_retry_max_ms: 200,
        stop_retry_ms: 200,
        ..LeaderConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_execution_is_queued_placed_started_and_ends_with_its_exit() {
    let f = fixture(fast()).await;
    let id = f.submit(BATCH).await;
    f.wait_for("running", |st| st.executions[&id].status == ExecutionStatus::Running).await;
    let (sid, cid) = f
        .node
        .read_local(|st| {
            let s = st.services_of(id).next().unwrap();
            (s.id, s.container_id.clone().unwrap())
        })
        .0;
    assert_eq!(f.backend.calls(), vec![format!("spawn hello0 {cid} on n1")]);
    f.backend
        .sender()
        .send(BackendEvent::Exited {
            service: sid,
            container_id: cid,
            exit_code: Some(0),
            oom_killed: false,
            reason: "exited".into(),
            time: now_ms(),
        })
        .unwrap();
    f.wait_for("terminated", |st| st.executions[&id].status == ExecutionStatus::Terminated).await;
    f.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_order_and_terminate() {
    let mut cfg = fast();
    cfg.scheduler.core_sharing = false;
    let f = fixture(cfg).await;
    let id = f.submit(SPARK).await;
    f.wait_for("running", |st| st.executions[&id].status == ExecutionStatus::Running).await;
    let calls = f.backend.calls();
    let head = calls.iter().position(|c| c.starts_with("spawn head0")).unwrap();
    let first_worker = calls.iter().position(|c| c.starts_with("spawn worker")).unwrap();
    assert!(head < first_worker, "head (startup_order 0) before workers (1): {calls:#?}");
    // 2 cores: head 0.2 + 5 workers × 0.1 all fit: elastic instances start too.
    f.wait_for("all six active", |st| st.services_of(id).all(|s| s.status == ServiceStatus::Active)).await;

    f.node
        .write(Command::TerminateExecution {
            id,
            reason: "user request".into(),
            after: AfterCleanup::Terminated,
            time: now_ms(),
        })
        .await
        .unwrap();
    f.wait_for("terminated", |st| st.executions[&id].status == ExecutionStatus::Terminated).await;
    let stops = f.backend.calls().iter().filter(|c| c.starts_with("terminate")).count();
    assert_eq!(stops, 6);
    assert_eq!(f.node.read_local(|st| st.executions[&id].error_message.clone()).0.as_deref(), Some("user request"));
    f.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_requeue_with_backoff_then_succeed_and_fatal_ones_error() {
    let f = fixture(fast()).await;
    let id = f.submit(BATCH).await;
    // The first two attempts' containers fail transiently.
    let base = format!("zoe-{id}-hello0-");
    f.backend.failures.lock().unwrap().insert(format!("{base}1"), (1, true));
    f.backend.failures.lock().unwrap().insert(format!("{base}2"), (1, true));
    f.wait_for("running", |st| st.executions[&id].status == ExecutionStatus::Running).await;
    let spawns = f.backend.calls().iter().filter(|c| c.starts_with("spawn")).count();
    assert_eq!(spawns, 3, "{:#?}", f.backend.calls());
    assert_eq!(f.node.read_local(|st| st.executions[&id].start_failures).0, 0, "reset once running");

    f.backend.fail_instances.lock().unwrap().insert("hello0".into(), false);
    let id2 = f.submit(BATCH).await;
    f.wait_for("error", |st| st.executions[&id2].status == ExecutionStatus::Error).await;
    let msg = f.node.read_local(|st| st.executions[&id2].error_message.clone()).0.unwrap();
    assert!(msg.contains("image not found"), "{msg}");
    assert_eq!(f.status(id), ExecutionStatus::Running);
    f.stop.send(true).unwrap();
}

/// A spawn that gets no answer may have started its container: the leader
/// commits no failure, keeps the service `starting`, and asks again with
/// the same container id until the node answers (issue #17: a lost answer
/// used to requeue the execution under a new container id while the first
/// container ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_spawn_is_asked_again_with_the_same_container_id() {
    let mut cfg = fast();
    cfg.spawn_retry_ms = 50;
    let f = fixture(cfg).await;
    let id = f.submit(BATCH).await;
    let cid = format!("zoe-{id}-hello0-1");
    f.backend.unanswered.lock().unwrap().insert(cid.clone(), 2);
    f.wait_for("running", |st| st.executions[&id].status == ExecutionStatus::Running).await;
    let spawn = format!("spawn hello0 {cid} on n1");
    assert_eq!(f.backend.calls(), vec![spawn.clone(), spawn.clone(), spawn], "same id each time, nothing else");
    let (attempt, failures, cid_now) = f
        .node
        .read_local(|st| {
            let s = st.services_of(id).next().unwrap();
            (s.attempt, st.executions[&id].start_failures, s.container_id.clone())
        })
        .0;
    assert_eq!((attempt, failures, cid_now.as_deref()), (1, 0, Some(cid.as_str())));
    f.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_give_up_after_the_cap() {
    let mut cfg = fast();
    cfg.max_start_attempts = 3;
    let f = fixture(cfg).await;
    f.backend.fail_instances.lock().unwrap().insert("hello0".into(), true);
    let id = f.submit(BATCH).await;
    f.wait_for("error", |st| st.executions[&id].status == ExecutionStatus::Error).await;
    let msg = f.node.read_local(|st| st.executions[&id].error_message.clone()).0.unwrap();
    assert!(msg.contains("gave up after 3 attempts"), "{msg}");
    f.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_limit_terminates_running_executions() {
    let mut cfg = fast();
    cfg.default_runtime_limit_s = 1;
    let f = fixture(cfg).await;
    let id = f.submit(include_str!("../../../examples/zapps/web-service.json")).await;
    f.wait_for("running", |st| st.executions[&id].status == ExecutionStatus::Running).await;
    f.wait_for("terminated", |st| st.executions[&id].status == ExecutionStatus::Terminated).await;
    let msg = f.node.read_local(|st| st.executions[&id].error_message.clone()).0.unwrap();
    assert!(msg.contains("runtime limit"), "{msg}");
    f.stop.send(true).unwrap();
}

/// A pass that both reconciles a node's new session and commits a plan
/// starts what the plan placed, in startup order, at once (it once left
/// them to the next pass's respawns, which ignore startup order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_reconciles_a_registration_still_starts_its_plan() {
    let (node, _dir) = coordinator().await;
    let backend = Arc::new(RecordingBackend::default());
    let mut cfg = fast();
    cfg.scheduler.core_sharing = false;
    let leader = Leader::new(node.clone(), backend.clone(), cfg);
    let term = node.leader_term().expect("leads");
    *leader.memory.lock().unwrap() = Memory::new(term, now_ms());
    *backend.other.lock().unwrap() = Some(("n2".into(), 1));
    let f = Fixture { node: node.clone(), backend: backend.clone(), stop: watch::channel(false).0, _dir };
    let id = f.submit(SPARK).await;
    // Queues the execution and reconciles both sessions (n1's and n2's).
    assert!(leader.pass(term).await);
    assert_eq!(f.status(id), ExecutionStatus::Queued);
    // n2 comes back in a new session while the plan is made.
    *backend.other.lock().unwrap() = Some(("n2".into(), 2));
    assert!(leader.pass(term).await, "the registration asks for another pass");
    assert_eq!(f.status(id), ExecutionStatus::Starting);
    // No further pass: only the plan's own start can spawn.
    f.wait_for("all six active", |st| st.services_of(id).all(|s| s.status == ServiceStatus::Active)).await;
    let calls = backend.calls();
    let head = calls.iter().position(|c| c.starts_with("spawn head0")).unwrap();
    let first_worker = calls.iter().position(|c| c.starts_with("spawn worker")).unwrap();
    assert!(head < first_worker, "head (startup_order 0) before workers (1): {calls:#?}");
}

/// A batch ZApp of `essential` of `total` instances of `cores` each, with a size hint.
fn sized(name: &str, essential: u32, total: u32, cores: f64, size: u64) -> String {
    format!(
        r#"{{"name":"{name}","version":3,"will_end":true,"size":{size},"services":[{{"name":"{name}","image":"zoe.local/busybox:1",
        "monitor":true,"essential_count":{essential},"total_count":{total},"startup_order":0,
        "resources":{{"memory":{{"min":16777216,"max":16777216}},"cores":{{"min":{cores},"max":null}}}},
        "environment":[],"volumes":[],"command":"sleep 1000","ports":[]}}]}}"#
    )
}

/// Elastic-only preemption through the leader's loop: A (large, 1 essential
/// + 3 elastic of 0.5 core) fills the node's 2 cores; B (small, 1 core)
/// arrives. The plan names two of A's elastic instances, the leader stops
/// them on their node like any terminating instance, and the next pass
/// starts B; A's essential instance is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_stops_elastic_instances_through_the_plan_and_starts_the_smaller_execution() {
    let mut cfg = fast();
    cfg.scheduler.core_sharing = false;
    cfg.scheduler.policy = crate::scheduler::Policy::Size;
    cfg.scheduler.preemption = true;
    let f = fixture(cfg).await;
    let a = f.submit(&sized("big", 1, 4, 0.5, 10_000)).await;
    f.wait_for("A whole", |st| st.services_of(a).all(|s| s.status == ServiceStatus::Active)).await;
    let b = f.submit(&sized("small", 1, 1, 1.0, 10)).await;
    f.wait_for("B running", |st| st.executions[&b].status == ExecutionStatus::Running).await;
    let (essential_up, preempted) = f
        .node
        .read_local(|st| {
            let essential_up = st.services_of(a).filter(|s| s.essential).all(|s| s.status == ServiceStatus::Active);
            let preempted = st
                .services_of(a)
                .filter(|s| s.last_exit_reason.as_deref().is_some_and(|r| r.contains("preempted")))
                .inspect(|s| assert!(!s.essential))
                .count();
            (essential_up, preempted)
        })
        .0;
    assert!(essential_up);
    assert_eq!(preempted, 2);
    assert_eq!(f.status(a), ExecutionStatus::Running);
    let stops = f.backend.calls().iter().filter(|c| c.starts_with("terminate")).count();
    assert_eq!(stops, 2, "{:#?}", f.backend.calls());
    f.stop.send(true).unwrap();
}
