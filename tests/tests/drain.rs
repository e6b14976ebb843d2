//! Node drain, eligibility and node loss with real processes: `zoe
//! coordinator`s, two `zoe agent`s (nodes `a` and `b`), the real containerd,
//! the REST API and the `zoe` CLI (issue #8).
//!
//! Work is put on `a` by making `b` ineligible while it is placed; then `b`
//! is eligible again and `a` is drained or lost. What containerd really runs
//! in each agent's namespace is the ground truth throughout.

mod harness;

use harness::zoe::{AgentSpec, ContainerView, ZoeCluster, stop_namespace_containers};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `[leader]` keys: a lost node's work is replaced 2 s after it is marked
/// down (TTL 2 s + grace 1 s, see `harness::zoe::agent_section`).
const FAST_LOSS: &str = "[leader.drain]\nlost_after_ms = 2000";

/// A long-running ZApp: one group of 3 instances, `web0` essential and
/// `web1`, `web2` elastic.
fn long_running() -> Value {
    json!({
        "name": "web", "version": 3, "will_end": false, "size": 1,
        "services": [{
            "name": "web", "image": "zoe.local/busybox:1", "monitor": true,
            "essential_count": 1, "total_count": 3, "startup_order": 0,
            "resources": { "memory": { "min": 16777216, "max": null }, "cores": { "min": 0.1, "max": null } },
            "environment": [], "volumes": [], "command": "/bin/sh -c 'sleep 3600'", "ports": []
        }]
    })
}

/// A batch ZApp that runs `secs` seconds and exits 0.
fn batch(secs: u64, on_eviction: Option<&str>) -> Value {
    let mut v = json!({
        "name": "job", "version": 3, "will_end": true, "size": 1,
        "services": [{
            "name": "job", "image": "zoe.local/busybox:1", "monitor": true,
            "essential_count": 1, "total_count": 1, "startup_order": 0,
            "resources": { "memory": { "min": 16777216, "max": null }, "cores": { "min": 0.1, "max": null } },
            "environment": [], "volumes": [], "command": format!("/bin/sh -c 'sleep {secs}; echo done'"), "ports": []
        }]
    });
    if let Some(p) = on_eviction {
        v["on_eviction"] = json!(p);
    }
    v
}

async fn start(coordinators: usize) -> ZoeCluster {
    ZoeCluster::builder()
        .coordinators(coordinators)
        .agent(AgentSpec::new("a").cores(2.0).memory_mib(2048))
        .agent(AgentSpec::new("b").cores(2.0).memory_mib(2048))
        .leader(FAST_LOSS)
        .start()
        .await
}

fn cli_ok(z: &ZoeCluster, args: &[&str]) -> String {
    let o = z.cli(args);
    assert!(o.success, "zoe {args:?} failed: {}{}", o.stdout, o.stderr);
    o.stdout
}

/// Submits the executions while only `a` is eligible, waits until they run,
/// then makes `b` eligible again.
async fn place_on_a(z: &ZoeCluster, apps: &[Value]) -> Vec<u64> {
    cli_ok(z, &["node", "eligibility", "b", "off"]);
    let mut ids = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        ids.push(z.api().submit(&format!("e{i}"), app).await);
    }
    for id in &ids {
        // Every instance active (elastic ones included), all on a.
        z.api()
            .wait_execution(
                *id,
                |e| {
                    e["status"] == "running"
                        && e["service_details"]
                            .as_array()
                            .is_some_and(|s| s.iter().all(|s| s["status"] == "active" && s["node"] == "a"))
                },
                Duration::from_secs(60),
            )
            .await;
    }
    cli_ok(z, &["node", "eligibility", "b", "on"]);
    ids
}

async fn node(z: &ZoeCluster, name: &str) -> Value {
    z.api().ok(Method::GET, &format!("/api/v1/nodes/{name}"), None).await
}

async fn drain_status(z: &ZoeCluster, name: &str) -> Value {
    z.api().ok(Method::GET, &format!("/api/v1/nodes/{name}/drain"), None).await
}

/// Running containers in node `name`'s namespace, straight from containerd.
async fn running_on(z: &ZoeCluster, name: &str) -> Vec<ContainerView> {
    let ns = &z.agents.iter().find(|a| a.name == name).unwrap().ns;
    harness::zoe::namespace_containers(ns).await.into_iter().filter(|c| c.running).collect()
}

/// Waits for the drain of `a` to complete. Every time the API says it is
/// complete, containerd is asked afterwards: `a`'s namespace must be empty
/// by then (a completed drain with a container left is the bug Nomad users
/// reported). Returns the final drain view.
async fn wait_drain_complete(z: &ZoeCluster, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let d = drain_status(z, "a").await;
        if d["draining"] == false {
            assert!(!d["last_drain"].is_null(), "the drain ended without completing: {d:#}");
            let left = running_on(z, "a").await;
            assert!(left.is_empty(), "drain reported complete while a still runs {left:?}");
            let all = harness::zoe::namespace_containers(&z.agents[0].ns).await;
            assert!(all.is_empty(), "drain reported complete while a still holds containers {all:?}");
            return d;
        }
        assert!(Instant::now() < deadline, "drain not complete within {within:?}: {d:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the requeued batch execution runs again, on b, and then
/// until the long-running one has its three instances on b; returns the
/// long-running one.
async fn wait_moved_to_b(z: &ZoeCluster, requeued: u64, lr: u64, within: Duration) -> Value {
    let e = z
        .api()
        .wait_execution(requeued, |e| e["status"] == "running" && on_node(e, "b").len() == 1, Duration::from_secs(40))
        .await;
    assert_eq!(e["service_details"][0]["node"], "b");
    z.api().wait_execution(lr, |e| on_node(e, "b").len() == 3, within).await
}

fn on_node<'a>(e: &'a Value, node: &str) -> Vec<&'a Value> {
    e["service_details"].as_array().unwrap().iter().filter(|s| s["node"] == node && s["status"] == "active").collect()
}

/// (a) Drain with a deadline: the elastic and essential instances of the
/// long-running execution move to b (the essential one restarted, its
/// execution never ends), the batch job finishes on a, the drain completes
/// only when a's namespace is empty, and a stays ineligible. `--monitor
/// --json` follows it to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_long_running_work_and_lets_batch_finish() {
    let z = start(1).await;
    let ids = place_on_a(&z, &[long_running(), batch(10, None)]).await;
    let (lr, job) = (ids[0], ids[1]);

    // Start the drain and follow it with the CLI, as an admin would.
    let monitor = z
        .cli_command(&["node", "drain", "a", "--deadline", "2m", "--monitor", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The long-running execution lands on b, all three instances, without ending.
    let e = z.api().wait_execution(lr, |e| on_node(e, "b").len() == 3, Duration::from_secs(30)).await;
    assert_eq!(e["status"], "running");
    let web0 = e["service_details"].as_array().unwrap().iter().find(|s| s["name"] == "web0").unwrap();
    assert_eq!(web0["restart_count"], 1, "the essential instance moved as a restart: {web0}");
    // Meanwhile the batch job still runs on a, and the drain waits for it.
    let d = drain_status(&z, "a").await;
    if z.api().execution(job).await["status"] == "running" {
        assert_eq!(d["draining"], true, "{d:#}");
        assert_eq!(d["drain"]["requested_by"], "admin");
        assert!(d["drain"]["deadline"].as_u64().is_some());
        assert_eq!(d["progress"]["waiting_to_finish"], json!([job]), "{d:#}");
        assert!(!running_on(&z, "a").await.is_empty());
    }

    // The job runs to completion, on a: it was not moved or stopped.
    let e = z.api().wait_status(job, "terminated", Duration::from_secs(60)).await;
    assert_eq!(e["service_details"][0]["node"], "a");
    assert_eq!(e["service_details"][0]["last_exit_code"], 0, "{e:#}");
    let d = wait_drain_complete(&z, Duration::from_secs(30)).await;
    assert_eq!(d["last_drain"]["moved"].as_array().unwrap().len(), 3, "{d:#}");
    let a = node(&z, "a").await;
    assert_eq!((a["eligible"].clone(), a["schedulable"].clone()), (json!(false), json!(false)), "{a:#}");

    // The monitor ends by itself, successfully, its last line the completed drain.
    let out = tokio::task::spawn_blocking(move || monitor.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "monitor failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 2, "{stdout}");
    assert!(lines.iter().any(|l| l["draining"] == true && !l["progress"].is_null()), "{stdout}");
    assert_eq!(lines.last().unwrap()["draining"], false);
    assert_eq!(lines.last().unwrap()["last_drain"]["moved"].as_array().unwrap().len(), 3);

    // Still ineligible: a new execution goes to b.
    let more = z.api().submit("later", &batch(600, None)).await;
    let e = z.api().wait_status(more, "running", Duration::from_secs(30)).await;
    assert_eq!(e["service_details"][0]["node"], "b");
    assert_eq!(z.audit().await, Vec::<String>::new());
}

/// (b) A short deadline: at the deadline the batch job is terminated with
/// "node drain deadline"; one whose ZApp says `on_eviction: "requeue"`
/// starts over on b instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_short_deadline_batch_work_ends_or_requeues_per_zapp() {
    let z = start(1).await;
    let ids = place_on_a(&z, &[long_running(), batch(600, None), batch(600, Some("requeue"))]).await;
    let (lr, ended, requeued) = (ids[0], ids[1], ids[2]);
    let out = cli_ok(&z, &["node", "drain", "a", "--deadline", "3s"]);
    assert!(out.contains("node a: draining"), "{out}");

    let e = z.api().wait_status(ended, "terminated", Duration::from_secs(40)).await;
    assert_eq!(e["error_message"], "node drain deadline on a", "{e:#}");
    let e = wait_moved_to_b(&z, requeued, lr, Duration::from_secs(30)).await;
    assert_eq!(e["status"], "running");
    wait_drain_complete(&z, Duration::from_secs(30)).await;
    assert_eq!(node(&z, "a").await["eligible"], false);
    assert_eq!(z.audit().await, Vec::<String>::new());
}

/// (c) The drain is replicated: kill -9 the leader while the drain waits
/// for a batch job; the new leader carries it to completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_survives_a_leader_kill_9() {
    let mut z = start(3).await;
    let ids = place_on_a(&z, &[long_running(), batch(12, None)]).await;
    let (lr, job) = (ids[0], ids[1]);
    cli_ok(&z, &["node", "drain", "a", "--deadline", "2m"]);
    z.api().wait_execution(lr, |e| on_node(e, "b").len() == 3, Duration::from_secs(30)).await;
    // Mid-way: the long-running work has moved, the batch job still runs.
    assert_eq!(z.api().execution(job).await["status"], "running");
    let leader = z.leader().await;
    z.kill_coordinator(leader);
    let new_leader = z.leader().await;
    assert_ne!(new_leader, leader);

    let d = drain_status(&z, "a").await;
    assert_eq!(d["drain"]["requested_by"], "admin", "the drain survived: {d:#}");
    assert_eq!(d["drain"]["moved"].as_array().unwrap().len(), 3);
    let e = z.api().wait_status(job, "terminated", Duration::from_secs(60)).await;
    assert_eq!(e["service_details"][0]["last_exit_code"], 0, "{e:#}");
    wait_drain_complete(&z, Duration::from_secs(40)).await;
    assert_eq!(node(&z, "a").await["eligible"], false);
    assert_eq!(z.api().execution(lr).await["status"], "running");
    assert_eq!(z.audit().await, Vec::<String>::new());
}

/// (d) Node loss: kill a's agent. Its work is replaced only after TTL +
/// grace (down) and the loss grace, then per policy: the long-running
/// execution moves to b, the batch job ends in error ("node a lost"), one
/// with `on_eviction: "requeue"` starts over on b. `stop_containers` says
/// whether the machine died with them (stopped) or was only cut off (left
/// running). The agent comes back: the node is ready and nothing runs twice.
async fn node_loss(stop_containers: bool) {
    let mut z = start(1).await;
    let ids = place_on_a(&z, &[long_running(), batch(600, None), batch(600, Some("requeue"))]).await;
    let (lr, ended, requeued) = (ids[0], ids[1], ids[2]);
    let before = z.api().execution(lr).await;

    let t0 = Instant::now();
    z.kill_agent(0);
    if stop_containers {
        stop_namespace_containers(&z.agents[0].ns, z.dir()).await;
    }
    let e = z.api().wait_status(ended, "error", Duration::from_secs(40)).await;
    // TTL 2 s + grace 1 s, then 2 s of loss grace: not before.
    assert!(t0.elapsed() >= Duration::from_secs(4), "replaced after only {:?}", t0.elapsed());
    assert!(e["error_message"].as_str().unwrap().contains("node a lost"), "{e:#}");
    assert_eq!(node(&z, "a").await["status"], "down");
    let e = wait_moved_to_b(&z, requeued, lr, Duration::from_secs(40)).await;
    assert_eq!(e["status"], "running", "the long-running execution moved without ending");
    let old: Vec<&str> =
        before["service_details"].as_array().unwrap().iter().map(|s| s["container_id"].as_str().unwrap()).collect();
    assert!(on_node(&e, "b").iter().all(|s| !old.contains(&s["container_id"].as_str().unwrap())));

    // The agent comes back: ready again; whatever still ran on a is stopped
    // at once (the orphan grace is 10 min here), so nothing runs twice.
    z.restart_agent(0);
    z.wait_agents_connected(&["a".to_string()], Duration::from_secs(30)).await;
    assert_eq!(node(&z, "a").await["status"], "ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = running_on(&z, "a").await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "replaced containers still run on a: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(z.audit().await, Vec::<String>::new());
    assert_eq!(on_node(&z.api().execution(lr).await, "b").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_with_its_containers_stopped_is_replaced_per_policy() {
    node_loss(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_coming_back_stops_its_replaced_containers() {
    node_loss(false).await;
}

/// (e) Cancelling a drain: with --keep-ineligible the node stays out of
/// placement; without, it is eligible again; either way nothing more moves
/// (the batch job keeps its container on a).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_drain_stops_it_and_restores_eligibility() {
    let z = start(1).await;
    let ids = place_on_a(&z, &[batch(600, None)]).await;
    let job = ids[0];
    let container = z.api().execution(job).await["service_details"][0]["container_id"].clone();

    cli_ok(&z, &["node", "drain", "a"]);
    assert_eq!(drain_status(&z, "a").await["draining"], true);
    let out = cli_ok(&z, &["node", "drain", "a", "--cancel", "--keep-ineligible"]);
    assert!(out.contains("drain cancelled (still ineligible)"), "{out}");
    let a = node(&z, "a").await;
    assert_eq!((a["drain"].clone(), a["eligible"].clone()), (Value::Null, json!(false)), "{a:#}");
    // Cancelling twice is an error, not a silent eligibility change.
    let o = z.cli(&["node", "drain", "a", "--cancel"]);
    assert!(!o.success && o.stderr.contains("not draining"), "{}{}", o.stdout, o.stderr);

    cli_ok(&z, &["node", "drain", "a", "--deadline", "1h"]);
    let out = cli_ok(&z, &["node", "drain", "a", "--cancel"]);
    assert!(out.contains("eligible again"), "{out}");
    let a = node(&z, "a").await;
    assert_eq!((a["drain"].clone(), a["eligible"].clone()), (Value::Null, json!(true)), "{a:#}");

    // Nothing more moves: a few leader passes later the job is where it was.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e = z.api().execution(job).await;
    assert_eq!(e["status"], "running");
    assert_eq!(e["service_details"][0]["node"], "a");
    assert_eq!(e["service_details"][0]["container_id"], container);
    assert_eq!(running_on(&z, "a").await.len(), 1);
    // And a takes new work again.
    cli_ok(&z, &["node", "eligibility", "b", "off"]);
    let more = z.api().submit("more", &batch(600, None)).await;
    let e = z.api().wait_status(more, "running", Duration::from_secs(30)).await;
    assert_eq!(e["service_details"][0]["node"], "a");
    assert_eq!(z.audit().await, Vec::<String>::new());
}
