//! Issue #17, "every coordinator serves everything": three `zoe coordinator`
//! processes and one `zoe agent`, and every `zoe` CLI command run against a
//! follower only. Writes are forwarded to the leader; the live routes (logs
//! with `--follow`, image preload and load, live node usage, the live part
//! of the statistics) are relayed to it over the coordinators' QUIC
//! connections, since agents are connected to the leader alone.

mod harness;

use harness::zoe::{AgentSpec, CliOut, ZoeCluster};
use serde_json::Value;
use std::time::{Duration, Instant};
use zoe_testkit::DEFAULT_REFERENCE;

const BATCH: &str = include_str!("../../examples/zapps/hello-batch.json");

struct Follower<'a> {
    z: &'a ZoeCluster,
    i: usize,
}

impl Follower<'_> {
    fn out(&self, args: &[&str]) -> CliOut {
        self.z.cli_on(self.i, args)
    }

    /// Runs `zoe ARGS` on the follower; it must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.out(args);
        assert!(out.success, "zoe {args:?} on follower {}:\n{}{}", self.i, out.stdout, out.stderr);
        out.stdout
    }

    /// `zoe ARGS --json` on the follower, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.ok(&a);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("zoe {args:?}: {e}: {text}"))
    }
}

/// An answer's `id` (a number, or a token's string id).
fn id(v: &Value) -> String {
    match &v["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => panic!("no id in {v}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_command_works_against_a_follower() {
    let t0 = Instant::now();
    let registry = zoe_testkit::Registry::start().expect("local docker-registry");
    let image = zoe_testkit::BusyboxImage::build().expect("busybox image");
    let pushed = registry.push(&image, "zoe/follower", "1").expect("push");
    eprintln!("registry up after {:?}", t0.elapsed());
    let insecure = format!("[registry]\ninsecure = [\"{}\"]", registry.host());
    let mut z = ZoeCluster::builder()
        .coordinators(3)
        .agent(AgentSpec::new("n1").cores(2.0).memory_mib(2048).toml(&insecure))
        .start()
        .await;
    let leader = z.leader().await;
    let f = Follower { z: &z, i: (leader + 1) % 3 };
    let dir = z.dir().to_path_buf();
    eprintln!("cluster up after {:?}; leader {leader}, asking follower {}", t0.elapsed(), f.i);

    // Cluster and nodes: the live part comes from the leader's agents.
    assert!(f.ok(&["info"]).contains("leader"));
    let members = f.json(&["operator", "members"]);
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3), "{members}");
    let nodes = f.json(&["node", "ls"]);
    assert_eq!(nodes[0]["live"]["connected"], true, "live usage through the follower: {nodes}");
    let node = f.json(&["node", "get", "n1"]);
    assert_eq!(node["live"]["connected"], true, "{node}");
    let images = f.ok(&["node", "images", "n1"]);
    assert!(images.contains(DEFAULT_REFERENCE), "{images}");
    let stats = f.json(&["stats"]);
    assert_eq!(stats["live_available"], true, "statistics through the follower: {stats}");
    f.ok(&["node", "eligibility", "n1", "off"]);
    f.ok(&["node", "eligibility", "n1", "on"]);
    // Nothing runs there: the drain completes at once and leaves the node
    // ineligible.
    f.ok(&["node", "drain", "n1", "--deadline", "1h", "--monitor"]);
    f.ok(&["node", "eligibility", "n1", "on"]);

    // Images: pulled from the local registry, and loaded from an archive.
    let pulled = f.ok(&["image", "preload", &pushed, "--node", "n1"]);
    assert!(pulled.contains("n1: pulled"), "{pulled}");
    let archive = dir.join("busybox-oci.tar");
    f.ok(&["image", "build-sample", "--out", archive.to_str().unwrap()]);
    let loaded = f.ok(&["image", "load", archive.to_str().unwrap(), "--node", "n1"]);
    assert!(loaded.contains("n1: loaded"), "{loaded}");

    // Executions: a batch job to its end with its log followed, then every
    // other exec command.
    let zapp = dir.join("hello-batch.json");
    std::fs::write(&zapp, BATCH).unwrap();
    // (`zapp validate` is local: it asks no coordinator.)
    let v = std::process::Command::new(harness::zoe_bin()).args(["zapp", "validate"]).arg(&zapp).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let out = f.ok(&["exec", "start", "f-batch", zapp.to_str().unwrap(), "--wait", "done", "--follow"]);
    assert!(out.contains("hello from f-batch"), "the monitor's log, followed through the follower: {out}");
    let list = f.json(&["exec", "ls"]);
    let e = list["executions"].as_array().and_then(|l| l.iter().find(|e| e["name"] == "f-batch")).cloned();
    let e = e.unwrap_or_else(|| panic!("f-batch not listed: {list}"));
    let eid = id(&e);
    let got = f.json(&["exec", "get", &eid]);
    assert_eq!(got["status"], "terminated", "{got}");
    let sid = id(&got["service_details"][0]);
    assert!(f.ok(&["exec", "logs", &sid]).contains("done"));
    assert!(f.ok(&["exec", "logs", "--follow", &sid]).contains("done"), "follow on an ended service ends");
    assert_eq!(f.json(&["exec", "app", &eid])["name"], "hello-batch");
    f.ok(&["exec", "endpoints", &eid]);
    let again = f.json(&["exec", "restart", &eid, "--name", "f-again"]);
    let again = id(&again);
    f.ok(&["exec", "terminate", &again]);
    z.api().wait_status(again.parse().unwrap(), "terminated", Duration::from_secs(60)).await;
    f.ok(&["exec", "rm", &again]);
    f.ok(&["exec", "rm", &eid]);

    // Users, roles, quotas, tokens, login.
    let role = f.json(&["role", "create", "f-role", "--can-see-status", "true", "--can-access-api", "true"]);
    let rid = id(&role);
    f.ok(&["role", "ls"]);
    f.ok(&["role", "get", &rid]);
    f.ok(&["role", "update", &rid, "--can-change-config", "false"]);
    let quota = f.json(&[
        "quota",
        "create",
        "f-quota",
        "--concurrent-executions",
        "2",
        "--memory",
        "0",
        "--cores",
        "0",
        "--runtime-limit",
        "0",
    ]);
    let qid = id(&quota);
    f.ok(&["quota", "ls"]);
    f.ok(&["quota", "get", &qid]);
    f.ok(&["quota", "update", &qid, "--concurrent-executions", "3"]);
    let mut create =
        z.cli_command_on(f.i, &["user", "create", "f-user", "--role-id", &rid, "--quota-id", &qid, "--json"]);
    let out = create.env("ZOE_NEW_PASSWORD", "follower-pass-1").output().unwrap();
    assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
    let uid = id(&serde_json::from_slice(&out.stdout).unwrap());
    f.ok(&["user", "ls"]);
    f.ok(&["user", "get", &uid]);
    f.ok(&["user", "update", &uid, "--email", "f@example.org"]);
    let mut login = z.cli_command_on(f.i, &["login", "--username", "f-user"]);
    let out = login.env("ZOE_PASSWORD", "follower-pass-1").output().unwrap();
    assert!(out.status.success(), "login through the follower: {}", String::from_utf8_lossy(&out.stderr));
    let token = f.json(&["token", "create", "--name", "f-token", "--ttl", "1h"]);
    let tid = id(&token);
    f.ok(&["token", "ls"]);
    f.ok(&["token", "revoke", &tid]);
    f.ok(&["user", "rm", &uid]);
    f.ok(&["role", "rm", &rid]);
    f.ok(&["quota", "rm", &qid]);

    // Operations: a consistent snapshot saved through the follower.
    let snap = dir.join("follower.snap");
    f.ok(&["operator", "snapshot", "save", snap.to_str().unwrap()]);
    assert!(std::fs::metadata(&snap).unwrap().len() > 0);

    // The whole run went through a follower: leadership never moved to it.
    assert_eq!(z.leader().await, leader, "leadership moved during the test");
    eprintln!("every command answered by follower {} in {:?}", f.i, t0.elapsed());

    // A log followed through the follower outlives a leader kill: the relay
    // ends when its leader goes, and the CLI resumes from its offset.
    let mut ticker: Value = serde_json::from_str(BATCH).unwrap();
    ticker["services"][0]["command"] =
        Value::from("/bin/sh -c 'i=0; while [ $i -lt 20 ]; do echo tick $i; i=$((i+1)); sleep 0.4; done'");
    let tid = z.api().submit("f-ticker", &ticker).await;
    let e = z.api().wait_status(tid, "running", Duration::from_secs(60)).await;
    let sid = id(&e["service_details"][0]);
    let fi = f.i;
    let follow = z.cli_command_on(fi, &["exec", "logs", "--follow", &sid]).stdout(std::process::Stdio::piped()).spawn();
    let follow = follow.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    z.kill_coordinator(leader);
    let new = z.leader().await;
    eprintln!("leader {leader} killed, {new} leads; the follow goes on through {fi}");
    let out = tokio::task::spawn_blocking(move || follow.wait_with_output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ticks: Vec<&str> = text.lines().filter(|l| l.starts_with("tick ")).collect();
    let want: Vec<String> = (0..20).map(|i| format!("tick {i}")).collect();
    assert!(out.status.success(), "follow failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        ticks,
        want,
        "every line once, in order, across the leader change; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
