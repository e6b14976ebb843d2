//! `zoe-bench storage`: does a coordinator's disk and memory stay bounded
//! over a long life? Three real `zoe coordinator` processes take N commands
//! (1,000,000 by default) from concurrent writers; the live state stays the
//! same size (the commands overwrite a fixed set of keys), so everything the
//! data directories and the processes grow by beyond it is what compaction
//! (snapshots, log purge, sled's segment reuse) failed to reclaim.
//!
//! At every tenth of the run it prints each member's data directory size
//! and RSS; at the end it reports them against the live state's size (its
//! JSON, what a snapshot holds). openraft dropped its own sled example over
//! unbounded memory and disk growth: this is how zoe shows where it stands.

use crate::common::{Cluster, zoe_bin};
use anyhow::Result;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use zoe_coordinator::raft::{CoordNode, CoordinatorClient};
use zoe_coordinator::state::Command as Cmd;
use zoe_net::{Identity, Role, TlsMaterial};

#[derive(clap::Args)]
pub struct Args {
    /// Commands to apply in all.
    #[arg(long, default_value_t = 1_000_000)]
    commands: usize,
    /// Distinct keys they overwrite: the live state's size.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Raft log entries between snapshots (the coordinator's default).
    #[arg(long, default_value_t = 10_000)]
    snapshot_every_logs: u64,
    /// The zoe binary.
    #[arg(long, env = "ZOE_BIN")]
    zoe: Option<PathBuf>,
}

/// Bytes under `dir`, recursively (what `du --apparent-size` says).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Resident set size of a process, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

struct Sample {
    commands: usize,
    disk: Vec<u64>,
    rss: Vec<u64>,
}

fn sample(c: &Cluster, commands: usize) -> Sample {
    Sample {
        commands,
        disk: c.members.iter().map(|m| dir_bytes(&m.data_dir)).collect(),
        rss: (0..c.members.len()).map(|i| c.pid(i).map_or(0, rss)).collect(),
    }
}

fn mib(b: u64) -> f64 {
    (b as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

pub async fn run(args: Args) -> Result<serde_json::Value> {
    let raft = format!("[raft]\nsnapshot_every_logs = {}\n", args.snapshot_every_logs);
    let mut c = Cluster::new(3, zoe_bin(args.zoe.clone())?, "zoe-bench-storage-", &raft)?;
    let cert = c.ca.issue(&Identity::new(Role::Client, "bench")?, &[], &[])?;
    let tls = TlsMaterial::from_pem(c.ca.cert_pem().as_bytes(), cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())?;
    let members = c.members.iter().map(|n| CoordNode { addr: n.addr.clone(), name: n.name.clone() }).collect();
    let client = Arc::new(CoordinatorClient::new(&tls, members)?);
    c.spawn_all()?;
    let value = "v".repeat(args.value_bytes);
    // Wait for a leader: the first write that succeeds.
    let t0 = Instant::now();
    while client.write(&Cmd::SetMeta { key: "k-0".into(), value: value.clone() }, Duration::from_secs(5)).await.is_err()
    {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(60), "no leader within 60 s");
    }
    let start = sample(&c, 0);
    eprintln!(
        "started: data dirs {:?} MiB, RSS {:?} MiB",
        start.disk.iter().map(|b| mib(*b)).collect::<Vec<_>>(),
        start.rss.iter().map(|b| mib(*b)).collect::<Vec<_>>()
    );

    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.writers {
        let (client, next, value) = (client.clone(), next.clone(), value.clone());
        let (total, keys) = (args.commands, args.keys);
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    return anyhow::Ok(());
                }
                let cmd = Cmd::SetMeta { key: format!("k-{}", k % keys), value: value.clone() };
                client.write(&cmd, Duration::from_secs(30)).await?;
            }
        }));
    }
    let mut samples = vec![start];
    let step = (args.commands / 10).max(1);
    let mut mark = step;
    while mark <= args.commands {
        while next.load(Ordering::Relaxed) < mark && !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let s = sample(&c, mark);
        eprintln!(
            "{:>8} commands ({:.0}/s): data dirs {:?} MiB, RSS {:?} MiB",
            mark,
            mark as f64 / t.elapsed().as_secs_f64(),
            s.disk.iter().map(|b| mib(*b)).collect::<Vec<_>>(),
            s.rss.iter().map(|b| mib(*b)).collect::<Vec<_>>()
        );
        samples.push(s);
        mark += step;
    }
    for task in tasks {
        task.await??;
    }
    let rate = args.commands as f64 / t.elapsed().as_secs_f64();
    // Let the last snapshot and purge settle, then measure once more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let end = sample(&c, args.commands);
    let (state, _) = client.read_via(0, true).await?;
    let live = serde_json::to_vec(&state)?.len() as u64;
    let statuses: Vec<_> = futures::future::join_all((0..3).map(|i| client.status_of(i))).await;
    let log_kept: Vec<u64> = statuses
        .iter()
        .map(|s| s.as_ref().map_or(0, |s| s.last_log_index.unwrap_or(0) - s.purged_index.unwrap_or(0)))
        .collect();
    eprintln!(
        "end: live state {} MiB; data dirs {:?} MiB; RSS {:?} MiB; log entries kept {:?}",
        mib(live),
        end.disk.iter().map(|b| mib(*b)).collect::<Vec<_>>(),
        end.rss.iter().map(|b| mib(*b)).collect::<Vec<_>>(),
        log_kept
    );
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    // Growth over the second half of the run: bounded means flat.
    let half = &samples[samples.len() / 2];
    Ok(json!({
        "bench": "storage",
        "commands": args.commands,
        "keys": args.keys,
        "value_bytes": args.value_bytes,
        "writers": args.writers,
        "commands_per_s": rate,
        "live_state_bytes": live,
        "data_dir_bytes_max": max(&end.disk),
        "data_dir_bytes": end.disk,
        "data_dir_over_live": max(&end.disk) as f64 / live.max(1) as f64,
        "data_dir_bytes_at_half_max": max(&half.disk),
        "rss_bytes_max": max(&end.rss),
        "rss_bytes": end.rss,
        "rss_bytes_at_start_max": max(&samples[0].rss),
        "rss_bytes_at_half_max": max(&half.rss),
        "log_entries_kept": log_kept,
        "samples": samples.iter().map(|s| json!({"commands": s.commands, "data_dir_bytes": s.disk, "rss_bytes": s.rss})).collect::<Vec<_>>(),
    }))
}
