//! `zoe-bench sim`: how fast zoe-sim runs the paper's workload (issue
//! #21's target: 20,000 applications on 25 nodes in < 10 s on one core),
//! with the turnarounds it found, per class.

use serde_json::json;
use std::time::Instant;
use zoe_common::resources::Millicores;
use zoe_coordinator::scheduler::{Policy, SchedulerConfig, StopRule};
use zoe_coordinator::state::{Capacity, Registration};
use zoe_sim::workload::{Shape, generate};
use zoe_sim::{Speed, run as simulate};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 20_000)]
    applications: usize,
    /// Offered load ρ.
    #[arg(long, default_value_t = 0.9)]
    load: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nodes of 32 cores and 128 GiB.
    #[arg(long, default_value_t = 25)]
    nodes: u32,
}

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let shape = Shape {
        applications: args.applications,
        seed: args.seed,
        load: args.load,
        cores: args.nodes as u64 * 32,
        ..Shape::default()
    };
    eprintln!("generating {} applications (seed {}, load {})", shape.applications, shape.seed, shape.load);
    let apps = generate(&shape);
    let nodes: Vec<Registration> = (0..args.nodes)
        .map(|i| {
            Registration::bare(
                format!("node-{i:02}"),
                Capacity { cores: Millicores::from_whole_cores(32), memory: 128 << 30 },
            )
        })
        .collect();
    let cfg = SchedulerConfig {
        policy: Policy::Fifo,
        stop_rule: StopRule::EssentialFits,
        core_sharing: false,
        ..SchedulerConfig::default()
    };
    eprintln!("simulating on {} nodes (FIFO, flexible)", args.nodes);
    let t = Instant::now();
    let out = simulate(&apps, &nodes, &cfg, Speed::Linear);
    let wall = t.elapsed().as_secs_f64();
    let classes = zoe_sim::report::by_class(&apps, &out);
    let done = out.iter().filter(|o| o.end.is_some()).count();
    eprintln!("{done} of {} done in {wall:.2} s of wall time", out.len());
    Ok(json!({
        "bench": "sim",
        "applications": args.applications,
        "nodes": args.nodes,
        "load": args.load,
        "seed": args.seed,
        "done": done,
        "wall_s": (wall * 100.0).round() / 100.0,
        "classes": classes,
    }))
}
