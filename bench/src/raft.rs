//! `zoe-bench raft`: durable commit throughput and latency of a 3-member
//! coordinator cluster (three real `zoe coordinator` processes on
//! 127.0.0.1, mutual TLS, sled with fsync), and failover time.
//!
//! Phases:
//! 1. baseline: fsync latency of the disk under the data dirs (4 KiB write
//!    + fdatasync), the physical floor of a durable commit;
//! 2. 1 writer: sequential writes to the leader (p50/p99 latency, commits/s);
//! 3. 64 writers: concurrent writes to the leader (commits/s, latency);
//! 4. failover, N trials: kill -9 the leader, then write through the other
//!    members until one write is acknowledged; the time from the kill to
//!    that acknowledgement is one sample. The killed member is restarted
//!    and caught up before the next trial;
//! 5. planned stop, N trials: one writer writes back to back through any
//!    member while the leader gets SIGTERM (it hands leadership over, see
//!    `Coordinator::hand_off`); one sample is the longest time between two
//!    acknowledged writes from the signal to its exit plus 300 ms.
//!
//! The `zoe` binary is taken from `--zoe`, `ZOE_BIN`, or next to this
//! executable (built with `cargo build -p zoe-cli` in the same profile if
//! missing).

use crate::common::{Cluster, pct, sorted, zoe_bin};
use anyhow::{Result, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zoe_coordinator::raft::{CoordNode, CoordinatorClient};
use zoe_coordinator::state::Command as Cmd;
use zoe_net::{Identity, Role, TlsMaterial};

#[derive(clap::Args)]
pub struct Args {
    /// Sequential writes with one writer.
    #[arg(long, default_value_t = 2000)]
    writes_1: usize,
    /// Total writes shared by the concurrent writers.
    #[arg(long, default_value_t = 30000)]
    writes_64: usize,
    /// Concurrent writers in the throughput phase.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Failover trials (kill -9 the leader each time).
    #[arg(long, default_value_t = 10)]
    failover_trials: usize,
    /// Planned-stop trials (SIGTERM the leader while a writer writes).
    #[arg(long, default_value_t = 5)]
    handoff_trials: usize,
    /// Raft heartbeat interval (ms) of the benchmarked cluster.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// Election timeout range (ms) of the benchmarked cluster.
    #[arg(long, default_value_t = 250)]
    election_min_ms: u64,
    #[arg(long, default_value_t = 500)]
    election_max_ms: u64,
    /// The zoe binary.
    #[arg(long, env = "ZOE_BIN")]
    zoe: Option<PathBuf>,
}

fn setup(args: &Args) -> Result<(Cluster, CoordinatorClient)> {
    let raft = format!(
        "[raft]\nheartbeat_ms = {}\nelection_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n",
        args.heartbeat_ms, args.election_min_ms, args.election_max_ms
    );
    let mut c = Cluster::new(3, zoe_bin(args.zoe.clone())?, "zoe-bench-raft-", &raft)?;
    let client_cert = c.ca.issue(&Identity::new(Role::Client, "bench")?, &[], &[])?;
    let tls = TlsMaterial::from_pem(
        c.ca.cert_pem().as_bytes(),
        client_cert.cert_pem.as_bytes(),
        client_cert.key_pem.as_bytes(),
    )?;
    let members = c.members.iter().map(|n| CoordNode { addr: n.addr.clone(), name: n.name.clone() }).collect();
    let client = CoordinatorClient::new(&tls, members)?;
    c.spawn_all()?;
    Ok((c, client))
}

/// Index of the member every running member agrees leads.
async fn wait_leader(c: &Cluster, client: &CoordinatorClient, within: Duration) -> Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        let mut leader = None;
        let mut agree = true;
        for i in 0..3 {
            if !c.running(i) {
                continue;
            }
            match client.status_of(i).await {
                Ok(s) => {
                    if s.role == "Leader" {
                        leader = Some(s.id);
                    }
                    agree &= s.leader.is_some() && (leader.is_none() || s.leader == leader);
                }
                Err(_) => agree = false,
            }
        }
        if let (Some(l), true) = (leader, agree) {
            return Ok(l as usize - 1);
        }
        if Instant::now() > deadline {
            bail!("no leader within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until all three members have applied the same index.
async fn caught_up(client: &CoordinatorClient, trial: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut applied = Vec::new();
        for i in 0..3 {
            applied.push(client.status_of(i).await.ok().and_then(|s| s.applied_index));
        }
        if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("members did not catch up before trial {trial}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn set(k: String) -> Cmd {
    Cmd::SetMeta { key: k, value: "x".repeat(32) }
}

/// fsync floor: 4 KiB append + fdatasync, 200 times.
fn fsync_baseline(dir: &Path) -> Result<Vec<f64>> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let buf = [7u8; 4096];
    let mut out = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    std::fs::remove_file(path)?;
    Ok(out)
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let (mut c, client) = setup(&args)?;
    let client = Arc::new(client);
    let fsync = sorted(fsync_baseline(&c.dir)?);
    eprintln!("fsync baseline: p50 {:.2} ms, p99 {:.2} ms", pct(&fsync, 0.5), pct(&fsync, 0.99));
    let leader = wait_leader(&c, &client, Duration::from_secs(30)).await?;
    eprintln!("leader: c{}", leader + 1);
    // Warm up connections and the leader's caches.
    for k in 0..100 {
        client.write_via(leader, &set(format!("warm-{k}"))).await?;
    }

    // 1 writer.
    let mut lat = Vec::with_capacity(args.writes_1);
    let t = Instant::now();
    for k in 0..args.writes_1 {
        let s = Instant::now();
        client.write_via(leader, &set(format!("one-{k}"))).await?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let rate_1 = args.writes_1 as f64 / t.elapsed().as_secs_f64();
    let lat_1 = sorted(lat);
    eprintln!("1 writer: {rate_1:.0} commits/s, p50 {:.2} ms, p99 {:.2} ms", pct(&lat_1, 0.5), pct(&lat_1, 0.99));

    // N writers.
    let per = args.writes_64 / args.writers;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for k in 0..per {
                let s = Instant::now();
                client.write_via(leader, &set(format!("many-{w}-{k}"))).await?;
                lat.push(s.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await??);
    }
    let rate_n = (per * args.writers) as f64 / t.elapsed().as_secs_f64();
    for i in 0..3 {
        if let Ok(s) = client.status_of(i).await {
            eprintln!(
                "  c{} ({}): {} entries in {} appends, {} syncs ({:.1} entries/sync)",
                i + 1,
                s.role,
                s.log_entries,
                s.log_appends,
                s.log_syncs,
                s.log_entries as f64 / s.log_syncs.max(1) as f64
            );
        }
    }
    let lat_n = sorted(lat);
    eprintln!(
        "{} writers: {rate_n:.0} commits/s, p50 {:.2} ms, p99 {:.2} ms",
        args.writers,
        pct(&lat_n, 0.5),
        pct(&lat_n, 0.99)
    );

    // Failover.
    let mut failovers = Vec::new();
    for trial in 0..args.failover_trials {
        let leader = wait_leader(&c, &client, Duration::from_secs(30)).await?;
        // Every member caught up before the kill, so any of them may win.
        caught_up(&client, trial).await?;
        let t0 = Instant::now();
        c.kill(leader);
        let mut i = (leader + 1) % 3;
        let fast = client.with_attempt_timeout(Duration::from_millis(500));
        loop {
            if fast.write_via(i, &set(format!("failover-{trial}"))).await.is_ok() {
                break;
            }
            i = (i + 1) % 3;
            if i == leader {
                i = (i + 1) % 3;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("no write acknowledged 30 s after killing the leader");
            }
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        eprintln!("failover {}: {ms:.0} ms", trial + 1);
        failovers.push(ms);
        c.spawn(leader)?;
    }
    let fo = sorted(failovers.clone());

    // Planned stop.
    let mut gaps = Vec::new();
    for trial in 0..args.handoff_trials {
        let leader = wait_leader(&c, &client, Duration::from_secs(30)).await?;
        caught_up(&client, trial).await?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (client, stop) = (client.with_attempt_timeout(Duration::from_millis(500)), stop.clone());
            tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut k = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if client.write(&set(format!("handoff-{trial}-{k}")), Duration::from_secs(10)).await.is_ok() {
                        acks.push(Instant::now());
                    }
                    k += 1;
                }
                acks
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let signalled = Instant::now();
        let clean = tokio::task::block_in_place(|| c.terminate(leader, Duration::from_secs(20)));
        let exited = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acks = writer.await?;
        let window: Vec<Instant> = acks.into_iter().filter(|t| *t >= signalled).collect();
        let mut gap = window.first().map_or(f64::MAX, |t| (*t - signalled).as_secs_f64() * 1e3);
        for w in window.windows(2) {
            gap = gap.max((w[1] - w[0]).as_secs_f64() * 1e3);
        }
        eprintln!(
            "planned stop {}: longest write gap {gap:.0} ms ({} writes acknowledged; exited {} after {:.0} ms)",
            trial + 1,
            window.len(),
            if clean { "cleanly" } else { "only on kill -9" },
            (exited - signalled).as_secs_f64() * 1e3
        );
        gaps.push(gap);
        c.spawn(leader)?;
    }
    let hg = sorted(gaps.clone());

    Ok(json!({
        "bench": "raft",
        "members": 3,
        "heartbeat_ms": args.heartbeat_ms,
        "election_timeout_ms": [args.election_min_ms, args.election_max_ms],
        "fsync_ms_p50": pct(&fsync, 0.5),
        "fsync_ms_p99": pct(&fsync, 0.99),
        "commits_per_s_1": rate_1,
        "commit_ms_p50_1": pct(&lat_1, 0.5),
        "commit_ms_p99_1": pct(&lat_1, 0.99),
        "writers": args.writers,
        "commits_per_s_64": rate_n,
        "commit_ms_p50_64": pct(&lat_n, 0.5),
        "commit_ms_p99_64": pct(&lat_n, 0.99),
        "failover_ms_median": pct(&fo, 0.5),
        "failover_ms": failovers,
        "handoff_gap_ms_median": pct(&hg, 0.5),
        "handoff_gap_ms_max": hg.last().copied(),
        "handoff_gap_ms": gaps,
    }))
}
