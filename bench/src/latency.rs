//! `zoe-bench latency`: submit → running of a one-service busybox ZApp
//! (`sleep 30`) on a real agent, against `ctr run -d` on the same
//! containerd, interleaved run by run so both see the same machine.
//!
//! One `zoe coordinator` process and one `zoe agent` process on the test
//! containerd (a private one unless `ZOE_TEST_CONTAINERD` names one), in a
//! namespace of their own. A zoe sample runs from just before the HTTP
//! submission until the API (a blocking query on the execution, woken by
//! every state change) shows the execution `running`: submitted, queued,
//! placed by a committed plan, started by the agent, and that answer
//! committed. The execution is then terminated and waited for (untimed).
//! A ctr sample is the wall time of `ctr run -d`, which returns once the
//! task is running; the container is then removed (untimed).
//!
//! `ctr` appears here only as the baseline: product code never runs it.

use crate::common::{
    Api, Cluster, bootstrap_admin, busybox_app, cleanup_namespace, import_busybox, pct, round2, sorted, start_agent,
    zoe_bin,
};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Timed runs of each kind.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed runs of each kind first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// The zoe binary.
    #[arg(long, env = "ZOE_BIN")]
    zoe: Option<PathBuf>,
}

const TERMINAL: &[&str] = &["terminated", "finished", "error"];

/// Waits through blocking queries until the execution's status is one of
/// `want`; returns it.
async fn wait_status(api: &Api, id: u64, want: &[&str], within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    let mut index = 0;
    loop {
        let (e, idx) = api.get(&format!("/api/v1/executions/{id}?index={index}&wait=5s")).await?;
        let status = e["status"].as_str().unwrap_or_default().to_string();
        if want.contains(&status.as_str()) {
            return Ok(status);
        }
        if TERMINAL.contains(&status.as_str()) {
            bail!("execution {id} ended as {status}: {}", e["error_message"]);
        }
        if Instant::now() > deadline {
            bail!("execution {id} still {status} after {within:?}");
        }
        index = idx.unwrap_or(index);
    }
}

/// One zoe sample in ms; the execution is terminated afterwards.
async fn zoe_run(api: &Api, i: usize) -> Result<f64> {
    let app = busybox_app("sleep 30");
    let t = Instant::now();
    let id = api.submit(&format!("latency-{i}"), &app).await?;
    wait_status(api, id, &["running"], Duration::from_secs(60)).await?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    api.post(&format!("/api/v1/executions/{id}/terminate"), &json!({})).await?;
    // The next run must not share the machine with this one.
    let _ = wait_status(api, id, TERMINAL, Duration::from_secs(60)).await;
    Ok(ms)
}

fn ctr(socket: &Path, ns: &str, args: &[&str]) -> Result<std::process::Output> {
    Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", ns])
        .args(args)
        .output()
        .context("running ctr (the baseline; apt-get install containerd)")
}

/// One ctr sample in ms: `ctr run -d` returns once the task runs.
fn ctr_run(socket: &Path, ns: &str, id: &str) -> Result<f64> {
    let t = Instant::now();
    let out = ctr(socket, ns, &["run", "-d", zoe_testkit::DEFAULT_REFERENCE, id, "sleep", "30"])?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!("ctr run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    ctr(socket, ns, &["task", "kill", "-s", "SIGKILL", id])?;
    // The task must have exited before it can be deleted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctr(socket, ns, &["task", "delete", id])?.status.success() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    ctr(socket, ns, &["container", "delete", id])?;
    Ok(ms)
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let zoe = zoe_bin(args.zoe.clone())?;
    let socket = zoe_testkit::containerd().socket.clone();
    let ns = zoe_testkit::unique_namespace("bench-latency");
    let ctr_ns = format!("{ns}-ctr");
    let mut cluster = Cluster::new(1, zoe.clone(), "zoe-bench-latency-", "stop_grace_ms = 500\n")?;
    let dir = cluster.dir.clone();
    import_busybox(&socket, &ns, &dir).await?;
    import_busybox(&socket, &ctr_ns, &dir.join("ctr")).await?;
    cluster.spawn_all()?;
    let r = bench(&args, &cluster, &zoe, &socket, &ns, &ctr_ns).await;
    if r.is_err() {
        cluster.dump_logs();
    }
    drop(cluster);
    cleanup_namespace(&socket, &ns, &dir).await;
    cleanup_namespace(&socket, &ctr_ns, &dir).await;
    r
}

async fn bench(
    args: &Args,
    cluster: &Cluster,
    zoe: &Path,
    socket: &Path,
    ns: &str,
    ctr_ns: &str,
) -> Result<serde_json::Value> {
    let api = bootstrap_admin(cluster, &Api::new(&cluster.members[0].api)?, Duration::from_secs(60)).await?;
    let _agent = start_agent(cluster, zoe, socket, ns, &api).await?;
    eprintln!("agent registered; {} warm-up and {} timed runs of each", args.warmup, args.runs);

    for i in 0..args.warmup {
        zoe_run(&api, 1000 + i).await?;
        ctr_run(socket, ctr_ns, &format!("warm-{i}"))?;
    }
    let (mut zoe_ms, mut ctr_ms) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        zoe_ms.push(zoe_run(&api, i).await?);
        ctr_ms.push(ctr_run(socket, ctr_ns, &format!("run-{i}"))?);
        eprintln!("  run {}: zoe {:.1} ms, ctr {:.1} ms", i + 1, zoe_ms[i], ctr_ms[i]);
    }
    let (z, c) = (sorted(zoe_ms), sorted(ctr_ms));
    let (z50, c50) = (pct(&z, 0.5), pct(&c, 0.5));
    Ok(json!({
        "bench": "latency",
        "runs": args.runs,
        "submit_to_running_ms_p50": round2(z50),
        "submit_to_running_ms_p95": round2(pct(&z, 0.95)),
        "ctr_run_ms_p50": round2(c50),
        "ctr_run_ms_p95": round2(pct(&c, 0.95)),
        "ratio_vs_ctr": (z50 / c50 * 1000.0).round() / 1000.0,
    }))
}
