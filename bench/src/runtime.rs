//! The `runtime` benchmark: a `busybox true` container through the agent
//! runtime (create→running, and start+wait+delete) against `ctr run --rm`
//! on the same containerd, interleaved run by run so both see the same
//! machine; then the runtime's RSS over many consecutive runs. `ctr run
//! --seccomp` runs too: against plain `ctr run` it is the start cost of a
//! default seccomp profile, which every zoe container has. And the agent
//! runs with a user namespace too (idmapped layers, chowned upper dir),
//! as every container of a user without `can_run_as_host_root` does:
//! against the agent's plain runs it is the start cost of the mapping.
//!
//! `ctr` appears here only as the baseline: product code never runs it.

use crate::common::{pct, round2, sorted};
use anyhow::{Context, bail};
use std::process::Command;
use std::time::{Duration, Instant};
use zoe_agent::{ContainerSpec, Runtime, RuntimeConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Timed runs of each kind (agent, ctr).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Consecutive agent runs for the memory check.
    #[arg(long, default_value_t = 500)]
    rss_runs: usize,
    /// Untimed runs of each kind first (caches, shim binary, page cache).
    #[arg(long, default_value_t = 5)]
    warmup: usize,
}

fn stats(v: Vec<f64>) -> (f64, f64) {
    let v = sorted(v);
    (pct(&v, 0.5), pct(&v, 0.95))
}

/// Resident set size of this process in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn spec(id: &str, mapped: bool) -> ContainerSpec {
    ContainerSpec {
        id: id.to_string(),
        image: zoe_testkit::DEFAULT_REFERENCE.to_string(),
        command: Some(vec!["/bin/true".into()]),
        user_namespace: mapped.then_some(zoe_agent::IdMapping { root_uid: 1000, root_gid: 1000, base: 2_000_000_000 }),
        ..Default::default()
    }
}

/// One agent run: (create→running ms, start+wait+delete ms).
async fn agent_run(rt: &Runtime, id: &str, mapped: bool) -> anyhow::Result<(f64, f64)> {
    let mut t0 = Instant::now();
    let mut id = id.to_string();
    if let Err(e) = rt.spawn(&spec(&id, mapped)).await {
        // Retryable failures are retried as the leader does: under a new
        // container id (a vanished shim can leave its bundle under the old
        // one), after tearing the attempt down; the run is timed from the retry.
        if !e.is_retryable() {
            return Err(e.into());
        }
        eprintln!("retrying {id}: {e}");
        let _ = rt.stop(&id, Duration::ZERO).await;
        id.push_str("-retry");
        t0 = Instant::now();
        rt.spawn(&spec(&id, mapped)).await?;
    }
    let running = t0.elapsed();
    let exit = tokio::time::timeout(Duration::from_secs(60), rt.wait(&id)).await.context("exit within 60 s")??;
    rt.stop(&id, Duration::ZERO).await?;
    let total = t0.elapsed();
    if exit.code != Some(0) {
        bail!("{id} exited with {exit:?}");
    }
    Ok((running.as_secs_f64() * 1e3, total.as_secs_f64() * 1e3))
}

fn ctr_run(socket: &std::path::Path, ns: &str, id: &str, seccomp: bool) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut cmd = Command::new("ctr");
    cmd.arg("--address").arg(socket).args(["-n", ns, "run", "--rm"]);
    if seccomp {
        cmd.arg("--seccomp");
    }
    let out = cmd
        .args([zoe_testkit::DEFAULT_REFERENCE, id, "/bin/true"])
        .output()
        .context("running ctr (the baseline; apt-get install containerd)")?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!("ctr run failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(ms)
}

pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let socket = zoe_testkit::containerd().socket.clone();
    let ns = format!("zoe-bench-{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let image = zoe_testkit::BusyboxImage::build()?;
    let archive = dir.path().join("busybox.tar");
    image.write_oci_archive(&archive)?;
    let mut cfg = RuntimeConfig::new(&socket, dir.path().join("data"));
    cfg.namespace = ns.clone();
    let rt = Runtime::connect(cfg).await?;
    let version = rt.containerd().version().await?;
    eprintln!("containerd {} at {}, namespace {ns}", version.version, socket.display());
    rt.images().import_archive(&archive, None, None).await?;

    for i in 0..args.warmup {
        agent_run(&rt, &format!("warm-{i}"), false).await?;
        agent_run(&rt, &format!("userns-warm-{i}"), true).await?;
        ctr_run(&socket, &ns, &format!("ctr-warm-{i}"), false)?;
        ctr_run(&socket, &ns, &format!("ctr-sc-warm-{i}"), true)?;
    }
    let (mut create, mut agent, mut ctr, mut ctr_sc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut create_ns, mut agent_ns) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        let (c, a) = agent_run(&rt, &format!("run-{i}"), false).await?;
        create.push(c);
        agent.push(a);
        let (c, a) = agent_run(&rt, &format!("userns-{i}"), true).await?;
        create_ns.push(c);
        agent_ns.push(a);
        ctr.push(ctr_run(&socket, &ns, &format!("ctr-{i}"), false)?);
        ctr_sc.push(ctr_run(&socket, &ns, &format!("ctr-sc-{i}"), true)?);
        if (i + 1) % 10 == 0 {
            eprintln!("latency: {}/{} runs of each", i + 1, args.runs);
        }
    }

    // Memory: measured after a first tenth of the runs, so allocator pools
    // and connection buffers have reached their working size.
    let settle = (args.rss_runs / 10).max(1);
    let mut rss_settled = 0;
    for i in 0..args.rss_runs {
        agent_run(&rt, &format!("mem-{i}"), true).await?;
        if i + 1 == settle {
            rss_settled = rss_kib();
        }
        if (i + 1) % 100 == 0 {
            eprintln!("memory: {}/{} runs, rss {} KiB", i + 1, args.rss_runs, rss_kib());
        }
    }
    let rss_end = rss_kib();

    for i in rt.images().list().await? {
        rt.images().remove(&i.name).await?;
    }
    let ctd = rt.containerd().clone();
    drop(rt);
    let _ = ctd
        .namespaces()
        .delete(tonic::Request::new(containerd_client::services::v1::DeleteNamespaceRequest { name: ns.clone() }))
        .await;

    let (create_p50, create_p95) = stats(create);
    let (run_p50, run_p95) = stats(agent);
    let (ctr_p50, ctr_p95) = stats(ctr);
    let (ctr_sc_p50, ctr_sc_p95) = stats(ctr_sc);
    let (create_ns_p50, _) = stats(create_ns);
    let (run_ns_p50, run_ns_p95) = stats(agent_ns);
    Ok(serde_json::json!({
        "bench": "runtime",
        "containerd": version.version,
        "runs": args.runs,
        "create_to_running_ms_p50": round2(create_p50),
        "create_to_running_ms_p95": round2(create_p95),
        "run_ms_p50": round2(run_p50),
        "run_ms_p95": round2(run_p95),
        "ctr_run_ms_p50": round2(ctr_p50),
        "ctr_run_ms_p95": round2(ctr_p95),
        "ratio_run_vs_ctr": (run_p50 / ctr_p50 * 1000.0).round() / 1000.0,
        "ctr_seccomp_run_ms_p50": round2(ctr_sc_p50),
        "ctr_seccomp_run_ms_p95": round2(ctr_sc_p95),
        "seccomp_cost_ms_p50": round2(ctr_sc_p50 - ctr_p50),
        "userns_create_to_running_ms_p50": round2(create_ns_p50),
        "userns_run_ms_p50": round2(run_ns_p50),
        "userns_run_ms_p95": round2(run_ns_p95),
        "userns_cost_ms_p50": round2(run_ns_p50 - run_p50),
        "ratio_userns_run_vs_ctr": (run_ns_p50 / ctr_p50 * 1000.0).round() / 1000.0,
        "rss_runs": args.rss_runs,
        "rss_settled_kib": rss_settled,
        "rss_end_kib": rss_end,
        "rss_growth_kib": rss_end as i64 - rss_settled as i64,
    }))
}
