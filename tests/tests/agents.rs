//! Agents and coordinators over the real protocol: real `zoe agent`
//! processes on the test containerd (one namespace each), mutual TLS with a
//! throwaway CA, coordinators either in this process (to call the back-end
//! directly) or as real `zoe coordinator` processes (failover, through
//! [`harness::zoe::ZoeCluster`]).

mod harness;

use futures::StreamExt;
use harness::zoe::{
    AgentProc, AgentSpec, Pki, ZoeCluster, cleanup_namespace, container_exists, inproc_coordinator, prepare_namespace,
    task_running, wait_until,
};
use std::time::{Duration, Instant};
use zoe_common::proto::{self, Registration, SessionOpen, SessionReply};
use zoe_common::resources::Millicores;
use zoe_common::service::ServiceSpec;
use zoe_coordinator::agents::{ClusterStats, client};
use zoe_coordinator::api::live::LogRequest;
use zoe_coordinator::backend::{Backend, BackendEvent};
use zoe_coordinator::state::{Applied, ExecutionStatus};
use zoe_net::{CertificateAuthority, Role, TlsMaterial};
use zoe_testkit::DEFAULT_REFERENCE;

const BATCH: &str = include_str!("../../examples/zapps/hello-batch.json");

// ------------------------------------------------------------------ helpers

async fn stats(pki: &Pki, addrs: &[String]) -> Option<ClusterStats> {
    client::cluster_stats(&pki.client_tls(), addrs).await.ok()
}

fn online(s: &ClusterStats, node: &str) -> bool {
    s.nodes.iter().any(|n| n.name == node && n.status == "online" && n.timestamp > 0)
}

fn spec(service_id: u64, container_id: &str, argv: &[&str]) -> ServiceSpec {
    let instance = format!("s{service_id}");
    ServiceSpec {
        cores: Millicores(500),
        memory_limit: Some(64 << 20),
        ..ServiceSpec::plain(service_id, 1, container_id, &instance, DEFAULT_REFERENCE, argv)
    }
}

// --------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_register_report_stats_and_run_commands() {
    let pki = Pki::new();
    let (c, backend, ports) = inproc_coordinator(&pki, 600_000).await;
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
    let term = c.leader_term().expect("the only coordinator leads");
    let mut events = backend.events();
    let sp = backend
        .spawn_service(term, "n1", spec(1001, "zt-long-1", &["sh", "-c", "echo hello-from-zoe; sleep 120"]))
        .await;
    let sp = sp.expect("spawn");
    assert_eq!(sp.container_id, "zt-long-1");
    assert_eq!(sp.ip_address.as_deref(), Some("127.0.0.1"));
    let again = backend.spawn_service(term, "n1", spec(1001, "zt-long-1", &["true"])).await.expect("idempotent spawn");
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
    backend.update_service(term, "n1", 1001, "zt-long-1", Millicores(250), Some(48 << 20)).await.expect("update");
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
    backend.spawn_service(term, "n2", spec(1002, "zt-exit-3", &["sh", "-c", "exit 3"])).await.expect("spawn");
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
    backend.terminate_service(term, "n1", 1001, "zt-long-1").await.expect("terminate");
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
        idempotency_key: None,
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
        let mk = |id: &str, argv: &[&str]| zoe_agent::ContainerSpec::running(id, DEFAULT_REFERENCE, argv, "77", "7777");
        rt.spawn(&mk("orphan-run", &["sleep", "300"])).await.unwrap();
        rt.spawn(&mk("orphan-done", &["true"])).await.unwrap();
        rt.wait("orphan-done").await.unwrap();
        rt.shutdown().await;
    }
    assert!(task_running(&ns, "orphan-run").await);
    let (c, backend, ports) = inproc_coordinator(&pki, 3_000).await;
    // Reconciliation is the leader loop's.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let cfg = c.config().leader.clone();
    tokio::spawn(zoe_coordinator::leader::Leader::new(c.clone(), backend.clone(), cfg).run(stopped));
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

/// A registration of an empty node with this capacity.
fn session_open(cores_millis: u32, memory_bytes: u64) -> SessionOpen {
    SessionOpen {
        registration: Registration {
            addresses: vec!["127.0.0.1".into()],
            cores_millis,
            memory_bytes,
            labels: Default::default(),
            host_volumes: Default::default(),
            containerd_version: "test".into(),
            cgroup_mode: "v1".into(),
            images: vec![],
            containers: vec![],
            agent_version: "test".into(),
        },
        stats: Default::default(),
    }
}

/// Opens a session with `tls` and returns the coordinator's answer.
async fn try_register(tls: &TlsMaterial, addr: &str) -> Result<SessionReply, String> {
    let ep = tls.client_endpoint(&[proto::ALPN]).map_err(|e| e.to_string())?;
    let conn =
        ep.connect(addr.parse().unwrap(), "127.0.0.1").map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    let open = session_open(1000, 1 << 30);
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

/// An agent's session, held open after registration.
struct RawSession {
    _conn: quinn::Connection,
    send: quinn::SendStream,
    _recv: quinn::RecvStream,
}

async fn open_session(tls: &TlsMaterial, addr: &str) -> RawSession {
    let ep = tls.client_endpoint(&[proto::ALPN]).unwrap();
    let conn = ep.connect(addr.parse().unwrap(), "127.0.0.1").unwrap().await.unwrap();
    let open = session_open(4000, 8 << 30);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    zoe_net::frame::write_frame(&mut send, &open, proto::MAX_FRAME).await.unwrap();
    let r = zoe_net::frame::read_frame::<_, SessionReply>(&mut recv, proto::MAX_FRAME).await.unwrap();
    assert!(matches!(r, Some(SessionReply::Accepted { .. })), "{r:?}");
    std::mem::forget(ep);
    RawSession { _conn: conn, send, _recv: recv }
}

impl RawSession {
    async fn report_exit(&mut self, service_id: u64, container_id: &str) {
        let ev = proto::AgentMessage::Event(proto::AgentEvent::Exited {
            service_id,
            container_id: container_id.into(),
            exit_code: Some(0),
            oom_killed: false,
            reason: "exited".into(),
            time_ms: 1,
        });
        zoe_net::frame::write_frame(&mut self.send, &ev, proto::MAX_FRAME).await.unwrap();
    }
}

/// Issue #15: an agent speaks for its own node. Node n2 reporting that a
/// service placed on n1 exited (container ids are guessable) is dropped;
/// n1's own report goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_report_exits_of_another_nodes_services() {
    use zoe_coordinator::state::{Command, Placement, Plan};
    let pki = Pki::new();
    let (c, backend, ports) = inproc_coordinator(&pki, 600_000).await;
    let addr = format!("127.0.0.1:{}", ports.agents.port);
    let mut n1 = open_session(&pki.material(&pki.ca, Role::Agent, "n1"), &addr).await;
    let mut n2 = open_session(&pki.material(&pki.ca, Role::Agent, "n2"), &addr).await;

    let app = zoe_common::zapp::parse(BATCH).unwrap().0;
    let submit = Command::SubmitExecution {
        name: "victim".into(),
        owner: "ada".into(),
        description: app,
        size: 1.0,
        time: 1,
        idempotency_key: None,
    };
    let Ok(Applied::Created(id)) = c.write(submit).await.unwrap().result else { panic!("submit refused") };
    let svc = c.read_local(|s| s.executions[&id].services[0]).0;
    c.write(Command::QueueExecution { id, time: 2 }).await.unwrap().result.unwrap();
    let plan = Plan {
        time: 3,
        starting: vec![id],
        placements: vec![Placement { service: svc, node: "n1".into(), cores: Millicores(500) }],
        ..Plan::default()
    };
    c.write(Command::ApplyPlan(plan)).await.unwrap().result.unwrap();
    let cid = c.read_local(|s| s.services[&svc].container_id.clone()).0.expect("a container id at placement");

    let mut events = backend.events();
    n2.report_exit(svc, &cid).await;
    let heard = tokio::time::timeout(Duration::from_millis(700), events.recv()).await;
    assert!(heard.is_err(), "n2's report of n1's service went through: {heard:?}");
    n1.report_exit(svc, &cid).await;
    let heard = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert!(
        matches!(heard, Ok(Ok(BackendEvent::Exited { service, .. })) if service == svc),
        "n1's own report was lost: {heard:?}"
    );
}

// ------------------------------------------------------------------ failover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_follows_a_new_leader_after_kill_9_and_its_container_keeps_running() {
    let mut z = ZoeCluster::builder().coordinators(3).agent(AgentSpec::new("n1")).start().await;
    let tls = harness::issue_material(&z.coords.ca, &z.coords.ca, Role::Client, "tests");
    let agent_addrs: Vec<String> = z.coords.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port.port + 1)).collect();
    let ns = z.agents[0].ns.clone();

    // A long-running execution through the coordinators' own leader loop.
    let text = BATCH.replace("echo done'", "echo started; sleep 600'");
    let app: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exec = z.api().submit("long", &app).await;
    let e = z.api().wait_status(exec, "running", Duration::from_secs(60)).await;
    let container = e["service_details"][0]["container_id"].as_str().expect("container id").to_string();
    assert!(task_running(&ns, &container).await);

    // kill -9 the leader.
    let leader = z.leader().await;
    let t0 = Instant::now();
    z.kill_coordinator(leader);
    let others: Vec<String> =
        agent_addrs.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, a)| a.clone()).collect();
    let mut new_leader_ok = false;
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(s) = client::cluster_stats(&tls, &others).await {
            // A fresh heartbeat at the new leader.
            if online(&s, "n1") {
                new_leader_ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t0.elapsed();
    eprintln!("agent reached the new leader after {took:?}");
    assert!(new_leader_ok, "agent never reached the new leader");
    assert!(took <= Duration::from_secs(5), "agent took {took:?} to reach the new leader");
    assert!(task_running(&ns, &container).await, "the container did not survive the failover");
    // Same container, still running, as far as the replicated state goes.
    let st = z.state().await;
    assert_eq!(st.executions[&exec].status, ExecutionStatus::Running);
    assert_eq!(
        st.services.values().find(|s| s.execution_id == exec).unwrap().container_id.as_deref(),
        Some(container.as_str())
    );
    assert_eq!(z.audit().await, Vec::<String>::new());
}
