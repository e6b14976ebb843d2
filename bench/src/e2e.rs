//! `zoe-bench e2e`: the whole path at scale. Three real `zoe coordinator`
//! processes (Raft, REST API, agent listener, leader loop), `--agents`
//! hollow agents in this process ([`crate::hollow`]: the real protocol,
//! fake containers), and `--executions` one-service executions submitted
//! through the REST API as fast as `--concurrency` HTTP clients can, with
//! the bootstrap admin's token.
//!
//! Measured: submissions per second (HTTP 201 = committed through Raft),
//! and the time from the first submission until a follower's replicated
//! state shows every execution `running` (each one placed by a committed
//! plan, started by its agent, and that answer committed) as
//! `containers_per_s`; per execution, `time_start - time_submit` from the
//! replicated state (p50/p99).

use crate::common::{Api, Cluster, bootstrap_admin, busybox_app, cpu_s, pct, round2, sorted, zoe_bin};
use crate::hollow;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// One-service executions to submit.
    #[arg(long, default_value_t = 20_000)]
    executions: usize,
    /// Hollow agents.
    #[arg(long, default_value_t = 1_000)]
    agents: usize,
    /// Concurrent HTTP submitters.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Coordinators.
    #[arg(long, default_value_t = 3)]
    coordinators: usize,
    /// Give up waiting for all to run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// The zoe binary.
    #[arg(long, env = "ZOE_BIN")]
    zoe: Option<PathBuf>,
}

/// `zoe_executions{status="running"}` from a coordinator's /metrics.
async fn running_count(api: &Api) -> Result<usize> {
    let text = api.get_text("/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix("zoe_executions{status=\"running\"} "))
        .and_then(|v| v.trim().parse().ok())
        .context("no running gauge in /metrics")
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let extra = "heartbeat_ms = 2000\nfailover_grace_ms = 600000\n";
    let mut cluster = Cluster::new(args.coordinators, zoe_bin(args.zoe.clone())?, "zoe-bench-e2e-", extra)?;
    cluster.spawn_all()?;
    let r = bench(&args, &cluster).await;
    if r.is_err() {
        cluster.dump_logs();
    }
    r
}

async fn bench(args: &Args, cluster: &Cluster) -> Result<serde_json::Value> {
    let anon = Api::new(&cluster.members[0].api)?;
    let admin = bootstrap_admin(cluster, &anon, Duration::from_secs(60)).await?;
    // The default quota allows 5 concurrent executions: lift it.
    let quota = format!("/api/v1/quotas/{}", zoe_coordinator::state::user::QUOTA_DEFAULT);
    admin.patch(&quota, &json!({ "concurrent_executions": 0, "cores": 0, "memory": 0 })).await?;
    let (info, _) = admin.get("/api/v1/info").await?;
    let leader = info["leader"].as_u64().context("no leader")? as usize - 1;
    let follower = (leader + 1) % cluster.members.len();
    let to_leader = admin.at(&cluster.members[leader].api);
    let to_follower = admin.at(&cluster.members[follower].api);
    eprintln!(
        "{} coordinators up, leader c{}; starting {} hollow agents",
        cluster.members.len(),
        leader + 1,
        args.agents
    );

    let t = Instant::now();
    let fleet = hollow::start(&cluster.ca, cluster.members[leader].agents.parse()?, args.agents)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let up = fleet.counters.up.load(Ordering::Relaxed);
        if up >= args.agents {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {up} of {} hollow agents registered", args.agents);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{} hollow agents registered in {:.1} s", args.agents, t.elapsed().as_secs_f64());
    // Let registrations and their reconciliation settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("submitting {} executions with {} concurrent clients", args.executions, args.concurrency);
    let app = Arc::new(busybox_app("sleep 3600"));
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0: Vec<f64> = (0..cluster.members.len()).map(|i| cluster.cpu_s(i)).collect();
    let bench_cpu0 = cpu_s("self");
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (api, app, next, n) = (to_leader.clone(), app.clone(), next.clone(), args.executions);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(lat);
                }
                let s = Instant::now();
                api.submit(&format!("e2e-{i}"), &app).await?;
                lat.push(s.elapsed().as_secs_f64() * 1e3);
            }
        }));
    }
    let progress = {
        let (api, next, n) = (to_follower.clone(), next.clone(), args.executions);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let running = running_count(&api).await.unwrap_or(0);
                eprintln!(
                    "  {:5.1} s: {} submitted, {running} running",
                    t0.elapsed().as_secs_f64(),
                    next.load(Ordering::Relaxed).min(n)
                );
            }
        })
    };
    let mut submit_lat = Vec::new();
    for task in tasks {
        submit_lat.extend(task.await??);
    }
    let submit_s = t0.elapsed().as_secs_f64();
    eprintln!("all submitted in {submit_s:.1} s ({:.0}/s)", args.executions as f64 / submit_s);

    let deadline = t0 + Duration::from_secs(args.timeout_s);
    let all_running_s = loop {
        if running_count(&to_follower).await? >= args.executions {
            break t0.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            progress.abort();
            bail!("not all running after {} s", args.timeout_s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    progress.abort();
    let cpu: Vec<f64> = (0..cluster.members.len()).map(|i| round2(cluster.cpu_s(i) - cpu0[i])).collect();
    let bench_cpu = round2(cpu_s("self") - bench_cpu0);
    eprintln!(
        "CPU seconds: coordinators {cpu:?} (leader c{}), this process (hollow agents, clients) {bench_cpu}",
        leader + 1
    );
    let spawned = fleet.counters.spawned.load(Ordering::Relaxed);
    let updated = fleet.counters.updated.load(Ordering::Relaxed);
    eprintln!(
        "all {} running after {all_running_s:.1} s ({spawned} spawn and {updated} update commands answered)",
        args.executions
    );

    // Per execution: submit → running from the replicated timestamps.
    let mut to_running = Vec::with_capacity(args.executions);
    let mut cursor: Option<u64> = None;
    loop {
        let q = match cursor {
            Some(c) => format!("/api/v1/executions?limit=1000&cursor={c}"),
            None => "/api/v1/executions?limit=1000".to_string(),
        };
        let (page, _) = to_follower.get(&q).await?;
        for e in page["executions"].as_array().context("executions")? {
            if let (Some(s), Some(r)) = (e["time_submit"].as_u64(), e["time_start"].as_u64()) {
                to_running.push(r.saturating_sub(s) as f64);
            }
        }
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let to_running = sorted(to_running);
    let submit_lat = sorted(submit_lat);
    let n = args.executions as f64;
    let out = json!({
        "bench": "e2e",
        "coordinators": cluster.members.len(),
        "hollow_agents": args.agents,
        "executions": args.executions,
        "concurrency": args.concurrency,
        "containers_per_s": (n / all_running_s).round(),
        "all_running_s": round2(all_running_s),
        "submits_per_s": (n / submit_s).round(),
        "submit_ms_p50": round2(pct(&submit_lat, 0.5)),
        "submit_ms_p99": round2(pct(&submit_lat, 0.99)),
        "submit_to_running_ms_p50": pct(&to_running, 0.5),
        "submit_to_running_ms_p99": pct(&to_running, 0.99),
        "spawn_commands": spawned,
        "update_commands": updated,
        "leader_cpu_s": cpu[leader],
        "coordinators_cpu_s": cpu,
        "bench_cpu_s": bench_cpu,
    });
    drop(fleet);
    Ok(out)
}
