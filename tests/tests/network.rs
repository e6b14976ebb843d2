//! Container networking across two "hosts": network namespaces made by the
//! test (zoe_testkit::netns), one `zoe agent` process inside each, both on
//! the test containerd, a coordinator in this process reachable over the
//! test's own veth. Real CNI plugins, real containers, real routes.
//!
//! Traffic only ever goes to 127.0.0.1 and to addresses inside the
//! namespaces this test creates.

mod harness;

use futures::StreamExt;
use harness::zoe::{Pki, cleanup_namespace, prepare_namespace, wait_until};
use harness::{reserve_port, zoe_bin};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;
use zoe_coordinator::agents::AgentBackend;
use zoe_coordinator::api::live::LogRequest;
use zoe_coordinator::backend::Backend;
use zoe_coordinator::config::CoordinatorConfig;
use zoe_coordinator::raft::Coordinator;
use zoe_coordinator::state::{Applied, Command, ExecutionStatus, State};
use zoe_net::Role;
use zoe_testkit::netns::{Lan, Netns, remove_pinned};

const WAIT: Duration = Duration::from_secs(90);

/// A `zoe agent` inside a host namespace; killed on drop.
struct HostAgent {
    child: Option<Child>,
    log: PathBuf,
}

impl HostAgent {
    fn start(pki: &Pki, host: &Netns, name: &str, addr: &str, coordinator: &str, ns: &str) -> HostAgent {
        pki.issue(Role::Agent, name);
        let dir = pki.path();
        let toml = format!(
            "coordinators = [\"{coordinator}\"]\ndata_dir = \"{data}\"\naddresses = [\"{addr}\"]\nlabels = [\"{name}\"]\n\
             heartbeat_ms = 500\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nstop_grace_ms = 1000\n\
             [containerd]\nsocket = \"{socket}\"\nnamespace = \"{ns}\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"agent-{name}.pem\"\nkey = \"agent-{name}-key.pem\"\n",
            data = dir.join(format!("agent-{name}")).display(),
            socket = zoe_testkit::containerd().socket.display(),
        );
        let config = dir.join(format!("agent-{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("agent-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = host
            .command(zoe_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,quinn=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn zoe agent");
        HostAgent { child: Some(child), log }
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("--- {} ---\n{}", self.log.display(), std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Unpins whatever the agents left (a failed test) on drop.
struct Pinned(Vec<PathBuf>);

impl Drop for Pinned {
    fn drop(&mut self) {
        for p in &self.0 {
            remove_pinned(p);
        }
    }
}

fn service(name: &str, count: u32, order: u32, label: &str, command: &str, ports: Value, env: Value) -> Value {
    json!({
        "name": name, "image": zoe_testkit::DEFAULT_REFERENCE, "monitor": true,
        "essential_count": count, "total_count": count, "startup_order": order,
        "resources": { "memory": { "min": 16777216, "max": 33554432 }, "cores": { "min": 0.1, "max": null } },
        "environment": env, "volumes": [], "command": command, "ports": ports, "labels": [label],
    })
}

fn http_service() -> Value {
    service(
        "head",
        1,
        0,
        "h1",
        "/bin/sh -c 'mkdir -p /www && echo hello-from-$EXECUTION_ID > /www/index.html && exec httpd -f -p 8080 -h /www'",
        json!([{ "name": "http", "port_number": 8080, "protocol": "tcp", "url_template": "http://{ip_port}/" }]),
        json!([]),
    )
}

/// A head on host 1 and two workers on host 2 that fetch the head's page
/// by its cluster name and by its bare instance name.
fn cluster_app() -> Value {
    let worker = service(
        "worker",
        2,
        1,
        "h2",
        "/bin/sh -c 'until wget -q -O /tmp/a http://$HEAD:8080/index.html && wget -q -O /tmp/b http://head0:8080/index.html; \
         do sleep 0.3; done; echo got $(cat /tmp/a) $(cat /tmp/b); exec sleep 3600'",
        json!([]),
        json!([["HEAD", "{dns_name#head0}"]]),
    );
    json!({ "name": "netapp", "version": 3, "will_end": false, "size": 128, "services": [http_service(), worker] })
}

async fn submit(c: &Coordinator, name: &str, app: Value) -> u64 {
    let description = zoe_common::zapp::parse(&app.to_string()).expect("valid ZApp").0;
    let cmd = Command::SubmitExecution {
        idempotency_key: None,
        name: name.into(),
        owner: "ada".into(),
        description,
        size: 0.0,
        time: zoe_coordinator::leader::now_ms(),
    };
    match c.write(cmd).await.unwrap().result.unwrap() {
        Applied::Created(id) => id,
        other => panic!("{other:?}"),
    }
}

fn state(c: &Coordinator) -> State {
    c.read_local(|st| st.clone()).0
}

async fn http_get(addr: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(5), io).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// The head's published address as the state has it (node address, host port).
fn head_endpoint(st: &State, exec: u64) -> (String, u16) {
    let head = st.services_of(exec).find(|s| s.name == "head0").expect("head0");
    let p = head.ports.first().expect("a published port");
    (p.host_ip.clone(), p.host_port)
}

fn leftovers(host: &Netns, data: &Path, ns: &str) -> Vec<String> {
    let mut out: Vec<String> =
        host.ip_out(&["-o", "link", "show", "master", "zoe0"]).lines().map(|l| format!("veth {l}")).collect();
    for e in std::fs::read_dir(Path::new("/run/zoe/netns").join(ns)).into_iter().flatten().flatten() {
        out.push(format!("namespace {}", e.path().display()));
    }
    for e in std::fs::read_dir(data.join("net").join(ns).join("ipam").join("zoe")).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.parse::<std::net::IpAddr>().is_ok() {
            out.push(format!("lease {n}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zapp_spans_two_hosts_by_name_with_published_ports() {
    let lan = Lan::new("znt", 2);
    let pki = Pki::new();
    let (raft, agents) = (reserve_port(), reserve_port());
    pki.issue(Role::Coordinator, "c1");
    let listen = format!("{}:{}", lan.own_addr(), agents.port);
    let toml = format!(
        "id = 1\nname = \"c1\"\nlisten = \"127.0.0.1:{raft}\"\ndata_dir = \"c1-data\"\n\n\
         [tls]\nca = \"ca.pem\"\ncert = \"coordinator-c1.pem\"\nkey = \"coordinator-c1-key.pem\"\n\n\
         [raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\n[leader]\ntick_ms = 200\n\n\
         [agents]\nlisten = \"{listen}\"\nheartbeat_ms = 500\nttl_ms = 4000\ngrace_ms = 2000\nfailover_grace_ms = 2000\n\
         orphan_grace_ms = 600000\nstop_grace_ms = 1000\nspawn_timeout_ms = 60000\n\n\
         [agents.network]\nbridge = true\ncidr = \"10.88.0.0/16\"\n\n\
         [[peers]]\nid = 1\naddr = \"127.0.0.1:{raft}\"\nname = \"c1\"\n",
        raft = raft.port,
    );
    let path = pki.path().join("c1.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = CoordinatorConfig::load(&path).unwrap();
    let (settings, leader_cfg) = (cfg.agents.clone(), cfg.leader.clone());
    let c = Coordinator::start(cfg).await.unwrap();
    wait_until("the coordinator to lead", WAIT, || async { c.leadership().borrow().leader == Some(1) }).await;
    let backend: Arc<AgentBackend> = AgentBackend::start(c.clone(), settings).await.unwrap();
    wait_until("the back-end to lead", WAIT, || async { backend.is_leader() }).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(zoe_coordinator::leader::Leader::new(c.clone(), backend.clone(), leader_cfg).run(stopped));

    let nss = [zoe_testkit::unique_namespace("net-h1"), zoe_testkit::unique_namespace("net-h2")];
    let _pinned = Pinned(nss.iter().map(|n| Path::new("/run/zoe/netns").join(n)).collect());
    for ns in &nss {
        prepare_namespace(ns, pki.path()).await;
    }
    let coord = format!("c1@{listen}");
    let a1 = HostAgent::start(&pki, &lan.hosts[0], "h1", &lan.host_addr(0), &coord, &nss[0]);
    let a2 = HostAgent::start(&pki, &lan.hosts[1], "h2", &lan.host_addr(1), &coord, &nss[1]);
    wait_until("both hosts connected", WAIT, || async {
        let p = backend.platform_state();
        p.connected("h1") && p.connected("h2")
    })
    .await;
    // Each host routes the other's subnet through the other's address.
    let st = state(&c);
    let (s1, s2) = (st.nodes["h1"].subnet.clone().unwrap(), st.nodes["h2"].subnet.clone().unwrap());
    wait_until("routes between the hosts", WAIT, || async {
        lan.hosts[0].ip_out(&["route"]).contains(&format!("{s2} via {}", lan.host_addr(1)))
            && lan.hosts[1].ip_out(&["route"]).contains(&format!("{s1} via {}", lan.host_addr(0)))
    })
    .await;

    // Head on h1, two workers on h2; the workers reach the head by name.
    let e1 = submit(&c, "net-1", cluster_app()).await;
    wait_until("execution 1 running", WAIT, || async { state(&c).executions[&e1].status == ExecutionStatus::Running })
        .await;
    let st = state(&c);
    let head = st.services_of(e1).find(|s| s.name == "head0").unwrap();
    assert_eq!(head.node.as_deref(), Some("h1"));
    let head_ip: std::net::Ipv4Addr = head.ip_address.as_deref().expect("head0's address").parse().unwrap();
    let (net, len) = zoe_agent::network::parse_cidr(&s1).unwrap();
    assert_eq!(zoe_agent::network::parse_cidr(&format!("{head_ip}/{len}")).unwrap().0, net, "{head_ip} in {s1}");
    let want = format!("got hello-from-{e1} hello-from-{e1}");
    for w in st.services_of(e1).filter(|s| s.name.starts_with("worker")) {
        assert_eq!(w.node.as_deref(), Some("h2"));
        let cid = w.container_id.clone().unwrap();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let mut log = backend
                    .clone()
                    .log_stream("h2".into(), cid.clone(), LogRequest { offset: 0, follow: false })
                    .await
                    .expect("log");
                let mut text = String::new();
                while let Some(c) = log.next().await {
                    text.push_str(&String::from_utf8_lossy(&c.unwrap().data));
                }
                if text.contains(&want) {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        assert!(found.is_ok(), "{} never fetched the head's page by name", w.name);
    }

    // The head's published port answers on h1's address, from here.
    let (host_ip, host_port) = head_endpoint(&st, e1);
    assert_eq!(host_ip, lan.host_addr(0));
    assert!((20_000..=32_767).contains(&host_port), "{host_port}");
    let page = http_get(&format!("{host_ip}:{host_port}")).await.expect("published port");
    assert!(page.contains(&format!("hello-from-{e1}")), "{page}");

    // A second execution on h1 also listens on container port 8080.
    let web = json!({ "name": "web", "version": 3, "will_end": false, "size": 128, "services": [http_service()] });
    let e2 = submit(&c, "net-2", web).await;
    wait_until("execution 2 running", WAIT, || async { state(&c).executions[&e2].status == ExecutionStatus::Running })
        .await;
    let (ip2, port2) = head_endpoint(&state(&c), e2);
    assert_eq!(ip2, lan.host_addr(0));
    assert_ne!(port2, host_port);
    for (addr, e) in [(format!("{ip2}:{port2}"), e2), (format!("{host_ip}:{host_port}"), e1)] {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match http_get(&addr).await {
                Ok(p) if p.contains(&format!("hello-from-{e}")) => break,
                other => assert!(std::time::Instant::now() < deadline, "{addr}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Terminated: nothing of either execution's networking is left.
    for e in [e1, e2] {
        let cmd = Command::TerminateExecution {
            id: e,
            reason: "test over".into(),
            after: zoe_coordinator::state::AfterCleanup::Terminated,
            time: zoe_coordinator::leader::now_ms(),
        };
        c.write(cmd).await.unwrap();
    }
    wait_until("both executions terminated", WAIT, || async {
        let st = state(&c);
        [e1, e2].iter().all(|e| st.executions[e].status == ExecutionStatus::Terminated)
    })
    .await;
    for (i, ns) in nss.iter().enumerate() {
        let data = pki.path().join(format!("agent-h{}", i + 1));
        let left = leftovers(&lan.hosts[i], &data, ns);
        assert!(left.is_empty(), "h{}: {left:?}", i + 1);
    }

    let _ = stop.send(true);
    drop(a1);
    drop(a2);
    for ns in &nss {
        cleanup_namespace(ns, pki.path()).await;
    }
}
