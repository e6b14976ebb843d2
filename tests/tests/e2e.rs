//! Issue #9's end-to-end scenario: three `zoe coordinator` processes and two
//! `zoe agent` processes (one containerd namespace each), the example ZApps
//! submitted through the `zoe` CLI, the leader killed with SIGKILL while they
//! start, and at the end containerd's containers compared with the
//! replicated state.

mod harness;

use harness::reserve_port;
use harness::zoe::{AgentSpec, CliOut, ZoeCluster};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use zoe_testkit::DEFAULT_REFERENCE;

const BATCH: &str = include_str!("../../examples/zapps/hello-batch.json");
const WEB: &str = include_str!("../../examples/zapps/web-service.json");

/// Runs the CLI against the leader until it succeeds: a command may land
/// while the cluster has no leader (that is what the test provokes).
async fn cli_ok(z: &ZoeCluster, args: &[&str]) -> CliOut {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = z.cli_on(z.leader().await, args);
        if out.success {
            return out;
        }
        assert!(Instant::now() < deadline, "zoe {args:?} kept failing: {}{}", out.stdout, out.stderr);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `zoe exec start --json`: the new execution's id.
async fn start(z: &ZoeCluster, name: &str, zapp: &Path) -> u64 {
    let out = cli_ok(z, &["exec", "start", "--json", name, zapp.to_str().unwrap()]).await;
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
}

/// One plain HTTP/1.0 GET on 127.0.0.1; the whole answer.
async fn http_get(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_runs_the_example_zapps_through_a_leader_kill() {
    let t0 = Instant::now();
    let mut z = ZoeCluster::builder()
        .coordinators(3)
        .agent(AgentSpec::new("n1").cores(2.0).memory_mib(2048))
        .agent(AgentSpec::new("n2").cores(2.0).memory_mib(2048))
        .start()
        .await;
    eprintln!("cluster up after {:?}", t0.elapsed());

    // The examples run the busybox image the agents' namespaces hold.
    let batch: Value = serde_json::from_str(BATCH).unwrap();
    let web: Value = serde_json::from_str(WEB).unwrap();
    for app in [&batch, &web] {
        assert_eq!(app["services"][0]["image"], DEFAULT_REFERENCE, "{}", app["name"]);
    }
    // The web service uses host networking on a fixed port (8080); tests
    // share the machine, so its copy listens on a reserved port instead.
    let port = reserve_port();
    let web_text = WEB.replace("8080", &port.port.to_string());
    let dir = z.dir().to_path_buf();
    let (batch_file, web_file) = (dir.join("hello-batch.json"), dir.join("web-service.json"));
    std::fs::write(&batch_file, BATCH).unwrap();
    std::fs::write(&web_file, web_text).unwrap();

    let b = start(&z, "e2e-batch", &batch_file).await;
    let w = start(&z, "e2e-web", &web_file).await;

    // kill -9 the leader while both executions start.
    let old = z.leader().await;
    z.kill_coordinator(old);
    let new = z.leader().await;
    assert_ne!(new, old);
    eprintln!("leader {old} killed, {new} leads after {:?}", t0.elapsed());

    // The batch one runs to its end and its log is kept.
    let e = z.api().wait_status(b, "terminated", Duration::from_secs(90)).await;
    let svc = &e["service_details"][0];
    assert_eq!(svc["last_exit_code"], 0, "{e:#}");
    let sid = svc["id"].as_u64().unwrap().to_string();
    let log = cli_ok(&z, &["exec", "logs", &sid]).await.stdout;
    assert!(log.contains(&format!("hello from e2e-batch, run {b} of ")), "batch log: {log:?}");
    assert!(log.contains("done"), "batch log: {log:?}");

    // The long-running one serves its page on the host's port.
    z.api().wait_status(w, "running", Duration::from_secs(90)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        match http_get(port.port).await {
            Some(r) if r.contains("served by") => break r,
            r => assert!(Instant::now() < deadline, "no page on 127.0.0.1:{}: {r:?}", port.port),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.starts_with("HTTP/1.") && page.contains(" 200 "), "{page}");
    eprintln!("web page served after {:?}", t0.elapsed());

    cli_ok(&z, &["exec", "terminate", &w.to_string()]).await;
    z.api().wait_status(w, "terminated", Duration::from_secs(60)).await;
    assert!(http_get(port.port).await.is_none_or(|r| !r.contains("served by")), "still served after terminate");

    // Converged: containerd and the state agree, and nothing runs any more.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let problems = z.audit().await;
        let running: Vec<_> = z.containers().await.into_iter().filter(|c| c.running).collect();
        if problems.is_empty() && running.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not converged: {problems:#?}; running: {running:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("converged after {:?}", t0.elapsed());
}
