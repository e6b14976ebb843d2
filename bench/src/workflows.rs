//! `zoe-bench workflows`: pipelines at scale. Three real `zoe coordinator`
//! processes, `--agents` hollow agents whose containers exit 0 after
//! `--step-ms` ([`crate::hollow::start_exiting`]), one workflow of five
//! steps (a → b, a → c, b + c → d, d → e) and `--runs` runs of it started
//! at once through the REST API.
//!
//! Measured, per step that depends on others, on the bench's clock: from
//! the end of the last step it waits for (the hollow agent's exit of that
//! step's container) to the arrival of its own container's spawn at a
//! hollow agent. That is more than the step's submission (which is in the
//! same log entry as the exit, `docs/workflows.md`): it adds queueing,
//! the scheduler's plan and its commit, and the spawn's trip. Also the
//! time until every run has succeeded.

use crate::common::{Api, Cluster, bootstrap_admin, busybox_app, cpu_s, pct, round2, sorted, zoe_bin};
use crate::hollow;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent pipeline runs.
    #[arg(long, default_value_t = 1_000)]
    runs: usize,
    /// Hollow agents.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// How long each step's container runs.
    #[arg(long, default_value_t = 1_000)]
    step_ms: u64,
    /// Concurrent HTTP clients starting runs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 3)]
    coordinators: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// The zoe binary.
    #[arg(long, env = "ZOE_BIN")]
    zoe: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<Value> {
    let extra = "heartbeat_ms = 2000\nfailover_grace_ms = 600000\n";
    let mut cluster = Cluster::new(args.coordinators, zoe_bin(args.zoe.clone())?, "zoe-bench-wf-", extra)?;
    cluster.spawn_all()?;
    let r = bench(&args, &cluster).await;
    if r.is_err() {
        cluster.dump_logs();
    }
    r
}

fn document() -> Value {
    let mut app = busybox_app("hollow");
    // A step ends: exit 0 of an essential service is success only then.
    app["will_end"] = json!(true);
    let step = |name: &str, deps: &[&str]| json!({"name": name, "zapp": app, "depends_on": deps});
    json!({
        "name": "bench",
        "steps": [step("a", &[]), step("b", &["a"]), step("c", &["a"]), step("d", &["b", "c"]), step("e", &["d"])]
    })
}

/// `zoe-<execution>-<instance>-<attempt>`: the execution of a container.
fn execution_of(container: &str) -> Option<u64> {
    container.strip_prefix("zoe-")?.split('-').next()?.parse().ok()
}

async fn bench(args: &Args, cluster: &Cluster) -> Result<Value> {
    let anon = Api::new(&cluster.members[0].api)?;
    let admin = bootstrap_admin(cluster, &anon, Duration::from_secs(60)).await?;
    let quota = format!("/api/v1/quotas/{}", zoe_coordinator::state::user::QUOTA_DEFAULT);
    admin.patch(&quota, &json!({ "concurrent_executions": 0, "cores": 0, "memory": 0 })).await?;
    let (info, _) = admin.get("/api/v1/info").await?;
    let leader = info["leader"].as_u64().context("no leader")? as usize - 1;
    let to_leader = admin.at(&cluster.members[leader].api);

    let exits = hollow::Exits {
        after: Duration::from_millis(args.step_ms),
        at: Arc::new(Mutex::new(HashMap::new())),
        spawned: Arc::new(Mutex::new(HashMap::new())),
    };
    let fleet =
        hollow::start_exiting(&cluster.ca, cluster.members[leader].agents.parse()?, args.agents, Some(exits.clone()))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while fleet.counters.up.load(Ordering::Relaxed) < args.agents {
        if Instant::now() > deadline {
            bail!("only {} of {} hollow agents registered", fleet.counters.up.load(Ordering::Relaxed), args.agents);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("{} hollow agents up; starting {} runs of a 5-step pipeline", args.agents, args.runs);

    let wf = to_leader.post("/api/v1/workflows", &document()).await?["id"].as_u64().context("workflow id")?;
    let cpu0: Vec<f64> = (0..cluster.members.len()).map(|i| cluster.cpu_s(i)).collect();
    let bench_cpu0 = cpu_s("self");
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (api, next, n) = (to_leader.clone(), next.clone(), args.runs);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                api.post(&format!("/api/v1/workflows/{wf}/runs"), &json!({})).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    eprintln!("{} runs started in {:.1} s", args.runs, t0.elapsed().as_secs_f64());
    let deadline = t0 + Duration::from_secs(args.timeout_s);
    let all_done_s = loop {
        let (w, _) = to_leader.get(&format!("/api/v1/workflows/{wf}")).await?;
        let running = w["runs_running"].as_u64().unwrap_or(u64::MAX);
        if running == 0 {
            break t0.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!("{running} runs still going after {} s", args.timeout_s);
        }
        eprintln!("  {:5.1} s: {running} runs going", t0.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(1000)).await;
    };
    let cpu: Vec<f64> = (0..cluster.members.len()).map(|i| round2(cluster.cpu_s(i) - cpu0[i])).collect();
    let bench_cpu = round2(cpu_s("self") - bench_cpu0);

    let (runs, _) = to_leader.get(&format!("/api/v1/workflows/{wf}/runs?limit={}", args.runs)).await?;
    let runs = runs.as_array().context("runs")?;
    let ended: HashMap<u64, u64> =
        exits.at.lock().expect("lock").iter().filter_map(|(cid, at)| Some((execution_of(cid)?, *at))).collect();
    let spawned: HashMap<u64, u64> = {
        let mut m: HashMap<u64, u64> = HashMap::new();
        for (cid, at) in exits.spawned.lock().expect("lock").iter() {
            if let Some(e) = execution_of(cid) {
                let v = m.entry(e).or_insert(*at);
                *v = (*v).min(*at);
            }
        }
        m
    };
    let mut lat = Vec::new();
    let mut failed = 0;
    for r in runs {
        if r["status"] != "succeeded" {
            failed += 1;
            continue;
        }
        let steps = r["steps"].as_array().context("steps")?;
        let exec_of = |name: &str| -> Option<u64> {
            let s = steps.iter().find(|s| s["name"] == name)?;
            s["instances"][0]["attempts"].as_array()?.last()?["execution"].as_u64()
        };
        for s in steps {
            let deps: Vec<&str> = s["depends_on"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if deps.is_empty() {
                continue;
            }
            let last_end = deps.iter().filter_map(|d| exec_of(d)).filter_map(|e| ended.get(&e)).max();
            let started = exec_of(s["name"].as_str().unwrap_or_default()).and_then(|e| spawned.get(&e));
            if let (Some(end), Some(start)) = (last_end, started) {
                lat.push(start.saturating_sub(*end) as f64);
            }
        }
    }
    let lat = sorted(lat);
    if failed > 0 {
        bail!("{failed} runs did not succeed");
    }
    eprintln!(
        "all {} runs succeeded after {all_done_s:.1} s; step end → dependants' spawn at an agent p50 {} ms, p99 {} ms",
        args.runs,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    let out = json!({
        "bench": "workflows",
        "coordinators": cluster.members.len(),
        "hollow_agents": args.agents,
        "runs": args.runs,
        "steps_per_run": 5,
        "step_ms": args.step_ms,
        "all_succeeded_s": round2(all_done_s),
        "dependencies_measured": lat.len(),
        "end_to_dependant_spawn_ms_p50": pct(&lat, 0.5),
        "end_to_dependant_spawn_ms_p99": pct(&lat, 0.99),
        "end_to_dependant_spawn_ms_max": lat.last().copied().unwrap_or(0.0),
        "leader_cpu_s": cpu[leader],
        "coordinators_cpu_s": cpu,
        "bench_cpu_s": bench_cpu,
    });
    drop(fleet);
    Ok(out)
}
