//! `zoe sim`: the scheduler in virtual time on a generated workload.

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use std::process::ExitCode;
use zoe_coordinator::scheduler::Policy;
use zoe_sim::workload::Experiment;
use zoe_sim::{Speed, Style, plot, report};

/// Run zoe's scheduler, unchanged, in virtual time on the paper's workload
/// (Pace et al., CCGrid 2017): no cluster, no containers.
///
/// Prints the turnaround, queue time and slowdown per class of application
/// (elastic, rigid), with the seed and parameters. Several policies and
/// styles (comma-separated) run on the same workload side by side;
/// `--svg FILE` draws their turnaround CDFs.
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
    /// Queue policy: fifo, size or dynsize (several: comma-separated).
    #[arg(long, default_value = "fifo")]
    policy: String,
    /// Allocation: flexible (zoe's), literal (Zoe's stop rule) or rigid
    /// (every component essential, the head of the queue blocks); several:
    /// comma-separated.
    #[arg(long, default_value = "flexible")]
    style: String,
    /// Serial fraction for Amdahl's speed model (0: linear).
    #[arg(long, default_value_t = 0.0)]
    serial: f64,
    #[arg(long)]
    json: bool,
    /// Write the turnaround CDFs (one line per run and class) to this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
}

const POLICIES: [(&str, Policy); 3] = [("fifo", Policy::Fifo), ("size", Policy::Size), ("dynsize", Policy::Dynsize)];
const STYLES: [(&str, Style); 3] =
    [("flexible", Style::Flexible), ("literal", Style::Literal), ("rigid", Style::Rigid)];

/// The value `name` stands for in `flag`'s table, or a message that lists them.
fn pick<T: Copy>(flag: &str, name: &str, table: &[(&str, T)]) -> Result<T> {
    match table.iter().find(|(n, _)| *n == name) {
        Some((_, v)) => Ok(*v),
        None => {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            bail!("{flag} {name:?}: one of {}", names.join(", "))
        }
    }
}

/// One run of the comparison.
struct Run {
    policy: String,
    style: String,
    reports: Vec<report::ClassReport>,
}

pub fn run(a: SimArgs) -> Result<ExitCode> {
    // All parsed before anything runs: a typo fails at once, not after minutes.
    let policies: Vec<(&str, Policy)> =
        a.policy.split(',').map(str::trim).map(|p| Ok((p, pick("--policy", p, &POLICIES)?))).collect::<Result<_>>()?;
    let styles: Vec<(&str, Style)> =
        a.style.split(',').map(str::trim).map(|s| Ok((s, pick("--style", s, &STYLES)?))).collect::<Result<_>>()?;
    if !(a.load > 0.0 && a.load.is_finite()) || !(0.0..1.0).contains(&a.serial) || a.nodes == 0 {
        bail!("--load must be positive, --serial in [0, 1), --nodes at least 1");
    }
    let mut runs = Vec::new();
    for &(p, policy) in &policies {
        for &(st, style) in &styles {
            let mut x = Experiment::new(a.applications, a.load, a.seed, a.nodes);
            x.policy = policy;
            x.style = style;
            x.speed = if a.serial > 0.0 { Speed::Amdahl(a.serial) } else { Speed::Linear };
            eprintln!(
                "simulating {} applications on {} nodes (seed {}, load {}, {st} {p})",
                a.applications, a.nodes, a.seed, a.load
            );
            let (apps, out) = x.run();
            runs.push(Run { policy: p.to_string(), style: st.to_string(), reports: report::by_class(&apps, &out) });
        }
    }
    if let Some(path) = &a.svg {
        let series: Vec<plot::Series> = runs
            .iter()
            .flat_map(|r| {
                r.reports.iter().map(|c| plot::Series {
                    label: format!("{} {} ({})", r.style, r.policy, c.class),
                    sorted: c.turnarounds_s.clone(),
                    total: c.applications,
                })
            })
            .collect();
        let title = format!(
            "Turnaround CDF: {} applications, load {}, {} nodes, seed {}",
            a.applications, a.load, a.nodes, a.seed
        );
        std::fs::write(path, plot::cdf_svg(&title, &series))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if a.json {
        let params = json!({ "applications": a.applications, "nodes": a.nodes, "seed": a.seed, "load": a.load, "serial": a.serial });
        let runs: Vec<_> =
            runs.iter().map(|r| json!({ "policy": r.policy, "style": r.style, "classes": r.reports })).collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "parameters": params, "runs": runs }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:<8} {:<8} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7}",
        "POLICY",
        "STYLE",
        "CLASS",
        "APPS",
        "DONE",
        "TA MEAN",
        "TA P50",
        "TA P95",
        "TA P99",
        "QUEUE MAX",
        "SLOW P50",
        "SLOW P95",
        "OVER 1D"
    );
    for r in &runs {
        for c in &r.reports {
            println!(
                "{:<8} {:<8} {:<8} {:>6} {:>6} {:>8.0}s {:>8.0}s {:>8.0}s {:>8.0}s {:>8.0}s {:>8.2} {:>8.2} {:>7}",
                r.policy,
                r.style,
                c.class,
                c.applications,
                c.done,
                c.turnaround_s_mean,
                c.turnaround_s_p50,
                c.turnaround_s_p95,
                c.turnaround_s_p99,
                c.queue_s_max,
                c.slowdown_p50,
                c.slowdown_p95,
                c.waited_over_a_day
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
