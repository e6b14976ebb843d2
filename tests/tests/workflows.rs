//! Workflows (issue #20) with real processes: three coordinators, two
//! agents on the real containerd. A pipeline (prepare → train ×4, one copy
//! failing and retried → report on success, cleanup on failure) and an
//! `@every 2s` periodic workflow run at the same time, and the leader is
//! killed with `kill -9` in the middle of both (later, the next leader is
//! paused with SIGSTOP past an election, then resumed). What must hold:
//! * the pipeline runs as specified: each step's executions, attempts,
//!   exit codes, the failure branch taken, templates filled in;
//! * no step and no slot runs twice: one execution per attempt, one run
//!   per slot, no container of a service ever seen under two ids;
//! * no slot is skipped: the slots are every 2 s from the workflow's
//!   creation up to the last one, without a gap (`catch_up: all`);
//! * the end of an execution named `import` starts one run of a workflow
//!   with that trigger.

mod harness;

use harness::zoe::{AgentSpec, Sampler, ZoeCluster, seed};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const IMAGE: &str = zoe_testkit::DEFAULT_REFERENCE;

fn zapp(name: &str, command: &str, env: Value) -> Value {
    json!({
        "name": name, "version": 3, "will_end": true, "size": 1,
        "services": [{
            "name": "job", "image": IMAGE, "monitor": true,
            "essential_count": 1, "total_count": 1, "startup_order": 0,
            "resources": {"memory": {"min": 16 << 20, "max": 32 << 20}, "cores": {"min": 0.1, "max": null}},
            "environment": env, "volumes": [], "ports": [],
            "command": command
        }]
    })
}

fn pipeline() -> Value {
    json!({
        "name": "etl",
        "description": "prepare, train four ways, report or clean up",
        "steps": [
            {"name": "prepare", "zapp": zapp("prepare", "/bin/sh -c 'sleep 1'", json!([]))},
            {"name": "train", "depends_on": ["prepare"], "fan_out": 4, "retries": 1, "backoff_s": 1,
             "zapp": zapp("train", "/bin/sh -c 'sleep 2; test \"$IDX\" != 3'",
                json!([["IDX", "{{fan_out.index}}"], ["PREPARED", "{{step.prepare.execution_id}}"]]))},
            {"name": "report", "depends_on": ["train"],
             "zapp": zapp("report", "/bin/sh -c 'exit 0'", json!([]))},
            {"name": "cleanup", "depends_on": ["train"], "condition": "on_failure",
             "zapp": zapp("cleanup", "/bin/sh -c 'echo $TRAINED $CODES'",
                json!([["TRAINED", "{{step.train.execution_id}}"], ["CODES", "{{step.train.exit_code}}"]]))},
        ]
    })
}

/// Runs when an execution named `import` of its owner succeeds.
fn after_import() -> Value {
    json!({
        "name": "after-import",
        "triggers": [{"execution_end": {"name": "import", "status": "succeeded"}}],
        "steps": [{"name": "index", "zapp": zapp("index", "/bin/sh -c 'exit 0'", json!([]))}]
    })
}

fn periodic() -> Value {
    json!({
        "name": "tick",
        "schedule": {"cron": "@every 2s", "catch_up": "all"},
        "steps": [{"name": "tick", "zapp": zapp("tick", "/bin/sh -c 'exit 0'", json!([]))}]
    })
}

async fn run(z: &ZoeCluster, id: u64) -> Value {
    z.api().ok(Method::GET, &format!("/api/v1/runs/{id}"), None).await
}

fn step<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_and_a_periodic_workflow_survive_the_leader_killed() {
    let seed = seed("workflows", "ZOE_TEST_SEED");
    let mut rng = SmallRng::seed_from_u64(seed);
    let agent = |n: &str| AgentSpec::new(n).cores(2.0).memory_mib(2048);
    let mut z = ZoeCluster::builder().coordinators(3).agent(agent("n1")).agent(agent("n2")).start().await;
    z.api().ok(Method::PATCH, "/api/v1/quotas/4", Some(json!({"concurrent_executions": 0}))).await;
    let sampler = Sampler::start(&z, Duration::from_millis(100));

    // The CLI checks documents locally, every problem with its pointer.
    let bad = z.dir().join("bad-workflow.json");
    let mut doc = pipeline();
    doc["steps"][0]["depends_on"] = json!(["cleanup"]);
    doc["steps"][2]["fan_out"] = json!(0);
    std::fs::write(&bad, doc.to_string()).unwrap();
    let out = z.cli(&["workflow", "validate", bad.to_str().unwrap()]);
    assert!(!out.success, "{out:?}");
    assert!(out.stdout.contains("/steps/2/fan_out"), "{out:?}");
    let r = z.api().call(Method::POST, "/api/v1/workflows", Some(doc)).await;
    assert_eq!(r.status, reqwest::StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "invalid_workflow");
    let mut doc = pipeline();
    doc["steps"][0]["depends_on"] = json!(["cleanup"]);
    let r = z.api().call(Method::POST, "/api/v1/workflows", Some(doc)).await;
    assert!(r.body["error"]["message"].as_str().unwrap().contains("cycle"), "{}", r.body);

    let file = z.dir().join("etl.json");
    std::fs::write(&file, pipeline().to_string()).unwrap();
    let out = z.cli(&["workflow", "validate", file.to_str().unwrap()]);
    assert!(out.success, "{out:?}");
    let out = z.cli(&["workflow", "create", file.to_str().unwrap(), "--json"]);
    assert!(out.success, "{out:?}");
    let etl = serde_json::from_str::<Value>(&out.stdout).unwrap()["id"].as_u64().unwrap();
    let tick = z.api().ok(Method::POST, "/api/v1/workflows", Some(periodic())).await["id"].as_u64().unwrap();
    let created = z.state().await.workflows[&tick].time_created;
    let after = z.api().ok(Method::POST, "/api/v1/workflows", Some(after_import())).await["id"].as_u64().unwrap();
    // A user may not watch others' executions without can_operate_others.
    let ada = z.user_api("ada").await;
    let mut watch_all = after_import();
    watch_all["triggers"][0]["execution_end"]["owner"] = json!("*");
    let r = ada.call(Method::POST, "/api/v1/workflows", Some(watch_all)).await;
    assert_eq!(r.status, reqwest::StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "/triggers/0/execution_end/owner");
    let import = z.api().submit("import", &zapp("import", "/bin/sh -c 'exit 0'", json!([]))).await;

    let out = z.cli(&["workflow", "run", "etl", "--json"]);
    assert!(out.success, "{out:?}");
    let run_id = serde_json::from_str::<Value>(&out.stdout).unwrap()["id"].as_u64().unwrap();

    // In the middle of both: train's copies are running, slots are firing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while step(&run(&z, run_id).await, "train")["status"] != "running" {
        assert!(Instant::now() < deadline, "train never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
    let leader = z.leader().await;
    z.kill_coordinator(leader);
    let next = z.leader().await;
    eprintln!("seed {seed}: kill -9 of coordinator {leader} mid-run; {next} took over");
    z.restart_coordinator(leader);

    let deadline = Instant::now() + Duration::from_secs(120);
    let r = loop {
        let r = run(&z, run_id).await;
        if r["status"] != "running" {
            break r;
        }
        assert!(Instant::now() < deadline, "seed {seed}: the run did not end: {r:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(r["status"], "succeeded", "seed {seed}: the failure branch handles train's failure: {r:#}");
    assert_eq!(step(&r, "prepare")["status"], "succeeded");
    assert_eq!(step(&r, "train")["status"], "failed");
    assert_eq!(step(&r, "report")["status"], "skipped");
    assert_eq!(step(&r, "cleanup")["status"], "succeeded");
    let train = step(&r, "train")["instances"].as_array().unwrap().clone();
    assert_eq!(train.len(), 4);
    for (i, inst) in train.iter().enumerate() {
        let attempts = inst["attempts"].as_array().unwrap();
        if i == 3 {
            assert_eq!(attempts.len(), 2, "seed {seed}: copy 3 fails, is retried once: {inst:#}");
            assert!(attempts.iter().all(|a| a["exit_code"] == 1 && a["ok"] == false), "{inst:#}");
        } else {
            assert_eq!(attempts.len(), 1, "seed {seed}: copy {i}: {inst:#}");
            assert_eq!(attempts[0]["ok"], true, "{inst:#}");
        }
    }
    // Templates: each copy got its index and prepare's execution; cleanup
    // got the copies' last executions and exit codes.
    let prepared = step(&r, "prepare")["instances"][0]["attempts"][0]["execution"].as_u64().unwrap();
    let last: Vec<String> =
        train.iter().map(|i| i["attempts"].as_array().unwrap().last().unwrap()["execution"].to_string()).collect();
    let cleanup = step(&r, "cleanup")["instances"][0]["attempts"][0]["execution"].as_u64().unwrap();
    let app = z.api().ok(Method::GET, &format!("/api/v1/executions/{cleanup}/zapp"), None).await;
    assert_eq!(app["services"][0]["environment"][0], json!(["TRAINED", last.join(",")]));
    assert_eq!(app["services"][0]["environment"][1], json!(["CODES", "0,0,0,1"]));
    let e3 = train[3]["attempts"][1]["execution"].as_u64().unwrap();
    let app = z.api().ok(Method::GET, &format!("/api/v1/executions/{e3}/zapp"), None).await;
    assert_eq!(app["services"][0]["environment"], json!([["IDX", "3"], ["PREPARED", prepared.to_string()]]));

    // The import's end started one run of after-import, which succeeded.
    let runs = z.api().ok(Method::GET, &format!("/api/v1/workflows/{after}/runs"), None).await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "seed {seed}: {runs:#?}");
    assert_eq!(runs[0]["trigger"], "execution_end");
    assert_eq!(runs[0]["execution"], import);
    assert_eq!(runs[0]["status"], "succeeded", "{:#}", runs[0]);

    // By hand, followed to its end by the CLI.
    let out = z.cli(&["workflow", "run", "after-import", "--wait"]);
    assert!(out.success, "{out:?}");
    assert!(out.stderr.contains("step index succeeded"), "{out:?}");
    let out = z.cli(&["workflow", "ls"]);
    assert!(out.success && out.stdout.contains("@every 2s") && out.stdout.contains("after-import"), "{out:?}");
    let out = z.cli(&["workflow", "get", "tick", "--json"]);
    assert!(out.success, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["workflow"]["catch_up"], "all", "{v:#}");

    // The leader paused past an election: when it resumes, whatever it
    // still decides in its old term (slots it saw due) is fenced off.
    let paused = z.leader().await;
    z.coords.signal(paused, libc::SIGSTOP);
    let next = z.leader_besides(paused).await;
    eprintln!("seed {seed}: SIGSTOP of coordinator {paused}; {next} took over; SIGCONT");
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
    z.coords.signal(paused, libc::SIGCONT);

    // The periodic workflow kept firing through both failovers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let out = z.cli(&["workflow", "history", "etl", "--limit", "5"]);
    assert!(out.success && out.stdout.contains("succeeded"), "{out:?}");
    let out = z.cli(&["workflow", "history", "--run", &run_id.to_string()]);
    assert!(out.success && out.stdout.contains("train[3]"), "{out:?}");

    let st = z.state().await;
    let slots: Vec<u64> = st
        .runs
        .values()
        .filter(|r| r.workflow_id == tick)
        .map(|r| match r.trigger {
            zoe_coordinator::state::RunTrigger::Schedule { slot } => slot,
            _ => panic!("a manual run of tick"),
        })
        .collect();
    let n = slots.len() as u64;
    let want: Vec<u64> = (1..=n).map(|k| created + 2_000 * k).collect();
    assert_eq!(slots, want, "seed {seed}: every slot once, in order, none skipped");
    assert_eq!(st.workflows[&tick].slots_skipped, 0);
    assert_eq!(st.workflows[&tick].last_slot, want.last().copied());
    // Slots are committed as they come due (a pass every 200 ms), also
    // those that came while no leader could fire them.
    let due = (until - created) / 2_000;
    assert!(n + 2 >= due && n <= due, "seed {seed}: {n} slots fired, {due} due by {until}");
    // One execution per attempt, per run of tick, and nothing else.
    let attempts: usize =
        st.runs.values().flat_map(|r| &r.steps).flat_map(|s| &s.instances).map(|i| i.attempts.len()).sum();
    let of_runs: BTreeSet<u64> = st
        .runs
        .values()
        .flat_map(|r| &r.steps)
        .flat_map(|s| &s.instances)
        .flat_map(|i| &i.attempts)
        .filter_map(|a| a.execution)
        .collect();
    assert_eq!(of_runs.len(), attempts, "seed {seed}: an attempt without its own execution");
    assert_eq!(st.executions.len(), attempts + 1, "seed {seed}: executions besides the runs' attempts and import");
    assert_eq!(st.runs.values().filter(|r| r.workflow_id == etl).count(), 1);
    assert_eq!(st.runs.values().filter(|r| r.workflow_id == after).count(), 2, "the triggered run and the one by hand");

    // Stop ticking before judging the containers.
    let r = z.api().call(Method::DELETE, &format!("/api/v1/workflows/{tick}"), None).await;
    if !r.status.is_success() {
        // A run of tick is going on: end it first.
        for r in z
            .api()
            .ok(Method::GET, &format!("/api/v1/workflows/{tick}/runs?status=running"), None)
            .await
            .as_array()
            .unwrap()
        {
            z.api().ok(Method::POST, &format!("/api/v1/runs/{}/terminate", r["id"]), Some(json!({}))).await;
        }
        z.api().ok(Method::DELETE, &format!("/api/v1/workflows/{tick}"), None).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut running: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (_, sample) in sampler.finish().await {
        for c in sample {
            if let (true, Some(sid)) = (c.running, c.service) {
                running.entry(sid).or_default().insert(c.id);
            }
        }
    }
    let twice: Vec<String> =
        running.iter().filter(|(_, c)| c.len() > 1).map(|(sid, c)| format!("service {sid} ran as {c:?}")).collect();
    assert!(twice.is_empty(), "seed {seed}: a step ran more than once:\n{}", twice.join("\n"));
    let problems = z.audit().await;
    assert!(problems.is_empty(), "seed {seed}: containerd and the state disagree:\n{}", problems.join("\n"));
}

/// A host volume path passing a size starts a run, once, and again only
/// after it went back below: the agent walks its `report_size` volume
/// every few heartbeats and the leader commits the crossing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_volume_passing_a_size_triggers_a_run() {
    let data = tempfile::tempdir().unwrap();
    let incoming = data.path().join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    std::fs::write(incoming.join("small"), vec![0u8; 1000]).unwrap();
    let volume = format!("[[host_volume]]\nname = \"data\"\npath = {:?}\nreport_size = true\n", data.path());
    let agent = AgentSpec::new("n1").cores(2.0).memory_mib(2048).toml(&volume);
    let z = ZoeCluster::builder().coordinators(1).agent(agent).start().await;
    let doc = json!({
        "name": "on-big-input",
        "triggers": [{"volume_size": {"volume": "data", "path": "incoming", "min_bytes": 1 << 20}}],
        "steps": [{"name": "process", "zapp": zapp("process", "/bin/sh -c 'exit 0'", json!([]))}]
    });
    // A volume no node offers cannot be watched: 400 naming the field.
    let mut unknown = doc.clone();
    unknown["name"] = json!("on-other-volume");
    unknown["triggers"][0]["volume_size"]["volume"] = json!("secrets");
    let r = z.api().call(Method::POST, "/api/v1/workflows", Some(unknown)).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    assert!(r.body.to_string().contains("/triggers/0/volume_size/volume"), "{}", r.body);
    let wf = z.api().ok(Method::POST, "/api/v1/workflows", Some(doc)).await["id"].as_u64().unwrap();
    let runs = |z: &ZoeCluster| {
        let api = z.api().clone();
        async move { api.ok(Method::GET, &format!("/api/v1/workflows/{wf}/runs"), None).await.as_array().unwrap().clone() }
    };
    let wait_runs = |n: usize| {
        let z = &z;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let r = runs(z).await;
                if r.len() >= n {
                    return r;
                }
                assert!(Instant::now() < deadline, "{n} run(s) expected, {} seen", r.len());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    // Walks happen every 5 heartbeats (2.5 s here): below the size, nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(runs(&z).await.is_empty());

    std::fs::write(incoming.join("big"), vec![0u8; 2 << 20]).unwrap();
    let r = wait_runs(1).await;
    assert_eq!(r[0]["trigger"], "volume_size", "{r:#?}");
    assert!(r[0]["volume"].as_str().unwrap().starts_with("data/incoming on n1: "), "{r:#?}");
    // Still above: no second run.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(runs(&z).await.len(), 1);

    // Below, then above again: a second run.
    std::fs::remove_file(incoming.join("big")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !z.state().await.workflows[&wf].volume_above.is_empty() {
        assert!(Instant::now() < deadline, "the trigger never saw the path go back below");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::write(incoming.join("bigger"), vec![0u8; 3 << 20]).unwrap();
    let r = wait_runs(2).await;
    assert_eq!(r.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = runs(&z).await;
        if r.iter().all(|r| r["status"] == "succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "runs did not succeed: {r:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
