//! `zoe-bench sim`: how fast zoe-sim runs the paper's workload (issue
//! #21's target: 20,000 applications on 25 nodes in < 10 s on one core),
//! with the turnarounds it found, per class. The wall time includes
//! generating the workload (a fraction of a second).

use serde_json::json;
use std::time::Instant;
use zoe_sim::workload::Experiment;

/// The target's setup (ρ 0.9 on 25 nodes); `zoe sim` varies the rest.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 20_000)]
    applications: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const LOAD: f64 = 0.9;
const NODES: u32 = 25;

pub fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let x = Experiment::new(args.applications, LOAD, args.seed, NODES);
    eprintln!(
        "simulating {} applications on {} nodes (seed {}, load {}, FIFO, flexible)",
        args.applications, NODES, args.seed, LOAD
    );
    let t = Instant::now();
    let (apps, out) = x.run();
    let wall = t.elapsed().as_secs_f64();
    let classes = zoe_sim::report::by_class(&apps, &out);
    let done = out.iter().filter(|o| o.end.is_some()).count();
    eprintln!("{done} of {} done in {wall:.2} s of wall time", out.len());
    Ok(json!({
        "bench": "sim",
        "applications": args.applications,
        "nodes": NODES,
        "load": LOAD,
        "seed": args.seed,
        "done": done,
        "wall_s": (wall * 100.0).round() / 100.0,
        "classes": classes,
    }))
}
