//! `zoe sim`: the scheduler in virtual time on a generated workload.

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use std::process::ExitCode;
use zoe_coordinator::scheduler::Policy;
use zoe_sim::workload::Experiment;
use zoe_sim::{Speed, Style, report};

/// Run zoe's scheduler, unchanged, in virtual time on the paper's workload
/// (Pace et al., CCGrid 2017): no cluster, no containers.
///
/// Prints the turnaround and queue time per class of application
/// (elastic, rigid), with the seed and parameters.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Applications to generate.
    #[arg(long, default_value_t = 2_000)]
    applications: usize,
    /// Offered load ρ (core-seconds asked over core-seconds available).
    #[arg(long, default_value_t = 0.9)]
    load: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nodes of 32 cores and 128 GiB.
    #[arg(long, default_value_t = 25)]
    nodes: u32,
    /// Queue policy: fifo, size or dynsize.
    #[arg(long, default_value = "fifo")]
    policy: String,
    /// Allocation: flexible (zoe's), literal (Zoe's stop rule) or rigid
    /// (every component essential, the head of the queue blocks).
    #[arg(long, default_value = "flexible")]
    style: String,
    /// Serial fraction for Amdahl's speed model (0: linear).
    #[arg(long, default_value_t = 0.0)]
    serial: f64,
    #[arg(long)]
    json: bool,
}

pub fn run(a: SimArgs) -> Result<ExitCode> {
    let policy = match a.policy.as_str() {
        "fifo" => Policy::Fifo,
        "size" => Policy::Size,
        "dynsize" => Policy::Dynsize,
        other => bail!("--policy {other:?}: one of fifo, size, dynsize"),
    };
    let style = match a.style.as_str() {
        "flexible" => Style::Flexible,
        "literal" => Style::Literal,
        "rigid" => Style::Rigid,
        other => bail!("--style {other:?}: one of flexible, literal, rigid"),
    };
    if !(a.load > 0.0 && a.load.is_finite()) || !(0.0..1.0).contains(&a.serial) || a.nodes == 0 {
        bail!("--load must be positive, --serial in [0, 1), --nodes at least 1");
    }
    let mut x = Experiment::new(a.applications, a.load, a.seed, a.nodes);
    x.policy = policy;
    x.style = style;
    x.speed = if a.serial > 0.0 { Speed::Amdahl(a.serial) } else { Speed::Linear };
    eprintln!(
        "simulating {} applications on {} nodes (seed {}, load {}, {} {})",
        a.applications, a.nodes, a.seed, a.load, a.style, a.policy
    );
    let (apps, out) = x.run();
    let reports = report::by_class(&apps, &out);
    if a.json {
        let params = json!({ "applications": a.applications, "nodes": a.nodes, "seed": a.seed, "load": a.load, "policy": a.policy, "style": a.style, "serial": a.serial });
        println!("{}", serde_json::to_string_pretty(&json!({ "parameters": params, "classes": reports }))?);
    } else {
        println!(
            "{:<8} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "CLASS", "APPS", "DONE", "TA MEAN", "TA P50", "TA P95", "TA P99", "QUEUE MAX"
        );
        for r in &reports {
            println!(
                "{:<8} {:>6} {:>6} {:>9.0}s {:>9.0}s {:>9.0}s {:>9.0}s {:>9.0}s",
                r.class,
                r.applications,
                r.done,
                r.turnaround_s_mean,
                r.turnaround_s_p50,
                r.turnaround_s_p95,
                r.turnaround_s_p99,
                r.queue_s_max
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
