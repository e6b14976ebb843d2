//! `zoe-bench scheduler`: the pure scheduler's throughput. One pass over a
//! large queue on a large cluster, per queue policy, measured in placements
//! per second on one core (the pass is single-threaded).

use serde_json::{Value, json};
use std::time::Instant;
use zoe_common::resources::Millicores;
use zoe_common::zapp::ZApp;
use zoe_coordinator::scheduler::{LiveNode, Platform, Policy, SchedulerConfig, schedule};
use zoe_coordinator::state::{Applied, Capacity, Command, Registration, State};

#[derive(clap::Args)]
pub struct Args {
    /// Nodes in the simulated cluster.
    #[arg(long, default_value_t = 5_000)]
    nodes: u32,
    /// Single-service executions in the first scenario.
    #[arg(long, default_value_t = 50_000)]
    executions: u32,
    /// Executions of the second scenario, each with `--services` instances.
    #[arg(long, default_value_t = 1_000)]
    wide_executions: u32,
    #[arg(long, default_value_t = 20)]
    services: u32,
    /// Passes per case; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

const GIB: u64 = 1 << 30;

/// A batch ZApp of one group: `essential` of `total` instances of one core
/// and 1 GiB each (at least).
fn app(essential: u32, total: u32, size: u64) -> ZApp {
    serde_json::from_value(json!({
        "name": "bench", "version": 3, "will_end": true, "size": size,
        "services": [{
            "name": "task", "image": "zoe.local/busybox:1", "monitor": true,
            "essential_count": essential, "total_count": total, "startup_order": 0,
            "resources": { "memory": { "min": GIB, "max": null }, "cores": { "min": 1, "max": null } },
            "environment": [], "volumes": [], "command": null, "ports": []
        }]
    }))
    .expect("a ZApp")
}

fn cluster(nodes: u32) -> (State, Platform) {
    let mut st = State::default();
    let mut platform = Platform::default();
    for i in 0..nodes {
        let name = format!("node-{i:05}");
        let capacity = Capacity { cores: Millicores::from_whole_cores(32), memory: 128 * GIB };
        let registration = Registration {
            addresses: vec![format!("10.0.{}.{}", i / 250, i % 250)],
            ..Registration::bare(name.clone(), capacity)
        };
        st.apply(&Command::RegisterNode { registration, time: 1 }).expect("register");
        platform.nodes.insert(name, LiveNode { connected: true, ..LiveNode::default() });
    }
    (st, platform)
}

fn submit(st: &mut State, n: u32, essential: u32, total: u32) {
    for i in 0..n {
        let a = app(essential, total, u64::from(i % 97));
        let size = a.dynsize();
        let time = 10 + u64::from(i);
        let Applied::Created(id) = st
            .apply(&Command::SubmitExecution {
                idempotency_key: None,
                name: format!("e{i}"),
                owner: "bench".into(),
                description: a,
                size,
                time,
            })
            .expect("submit")
        else {
            unreachable!()
        };
        st.apply(&Command::QueueExecution { id, time }).expect("queue");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn measure(label: &str, st: &State, platform: &Platform, policy: Policy, repeat: usize) -> (f64, f64, usize) {
    let cfg = SchedulerConfig { policy, core_sharing: false, ..SchedulerConfig::default() };
    let mut times = Vec::new();
    let mut placed = 0;
    for r in 0..repeat {
        let t = Instant::now();
        let plan = schedule(st, platform, &cfg, 1_000_000);
        let dt = t.elapsed().as_secs_f64();
        placed = plan.placements.len();
        eprintln!("  {label} {policy:?} pass {}: {placed} placements in {:.1} ms", r + 1, dt * 1e3);
        times.push(dt);
    }
    let pass = median(times);
    (placed as f64 / pass, pass * 1e3, placed)
}

pub fn run(args: Args) -> anyhow::Result<Value> {
    eprintln!("building a {}-node cluster with {} queued single-service executions", args.nodes, args.executions);
    let (mut narrow, platform) = cluster(args.nodes);
    submit(&mut narrow, args.executions, 1, 1);
    eprintln!(
        "building {} executions × {} services (5 essential, the rest elastic)",
        args.wide_executions, args.services
    );
    let (mut wide, _) = cluster(args.nodes);
    submit(&mut wide, args.wide_executions, args.services.min(5), args.services);

    let mut out = serde_json::Map::new();
    let mut worst = f64::INFINITY;
    for (policy, key) in [(Policy::Fifo, "fifo"), (Policy::Size, "size"), (Policy::Dynsize, "dynsize")] {
        let (rate, ms, placed) = measure("single-service", &narrow, &platform, policy, args.repeat);
        out.insert(format!("placements_per_s_{key}"), json!(rate.round()));
        out.insert(format!("pass_ms_{key}"), json!((ms * 10.0).round() / 10.0));
        out.insert(format!("placements_{key}"), json!(placed));
        worst = worst.min(rate);
        let (rate, ms, placed) = measure("wide", &wide, &platform, policy, args.repeat);
        out.insert(format!("placements_per_s_wide_{key}"), json!(rate.round()));
        out.insert(format!("pass_ms_wide_{key}"), json!((ms * 10.0).round() / 10.0));
        out.insert(format!("placements_wide_{key}"), json!(placed));
        worst = worst.min(rate);
    }
    out.insert("placements_per_s".into(), json!(worst.round()));
    out.insert("nodes".into(), json!(args.nodes));
    out.insert("executions".into(), json!(args.executions));
    Ok(Value::Object(out))
}
