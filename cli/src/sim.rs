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
/// `--svg FILE` draws their turnaround CDFs, `--allocation-svg` and
/// `--queue-svg` the CPU allocation and the queue's length over time.
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
    /// Queue policy: fifo, size, dynsize or fairshare, each optionally with
    /// +preempt (elastic-only preemption) and +reserve (a reservation for
    /// what waited over --reservation-after, with backfill); several:
    /// comma-separated, e.g. size,size+preempt+reserve.
    #[arg(long, default_value = "fifo")]
    policy: String,
    /// Allocation: flexible (zoe's), greedy (elastic-greedy: head of the
    /// queue, essential then elastic), literal (Zoe's stop rule) or rigid
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
    /// Write the fraction of cores allocated over time (one line per run).
    #[arg(long, value_name = "FILE")]
    allocation_svg: Option<std::path::PathBuf>,
    /// Write the number of queued applications over time (one line per run).
    #[arg(long, value_name = "FILE")]
    queue_svg: Option<std::path::PathBuf>,
    /// Users submitting (Zipf: the k-th submits in proportion to 1/k).
    #[arg(long, default_value_t = 10)]
    users: usize,
    /// Fair share's half-life of usage, in seconds.
    #[arg(long, default_value_t = 86_400)]
    half_life: u64,
    /// Read the applications from this CSV trace instead of generating them
    /// (`arrival_s,essential,total,runtime_s[,class[,owner]]`; one core and
    /// 2 GiB per component; --applications, --load and --users are unused).
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    /// +reserve: an application queued this many seconds holds a reservation.
    #[arg(long, default_value_t = 3_600)]
    reservation_after: u64,
}

/// Spans of the timelines (JSON and plots).
const TIMELINE_BINS: usize = 200;

const POLICIES: [(&str, Policy); 4] =
    [("fifo", Policy::Fifo), ("size", Policy::Size), ("dynsize", Policy::Dynsize), ("fairshare", Policy::FairShare)];
const STYLES: [(&str, Style); 4] =
    [("flexible", Style::Flexible), ("greedy", Style::Greedy), ("literal", Style::Literal), ("rigid", Style::Rigid)];

/// A `--policy` entry: the queue policy and the mechanisms added to it.
#[derive(Debug, Clone, Copy)]
struct PolicySpec {
    policy: Policy,
    preempt: bool,
    reserve: bool,
}

fn parse_policy(name: &str) -> Result<PolicySpec> {
    let mut parts = name.split('+');
    let policy = pick("--policy", parts.next().unwrap_or_default(), &POLICIES)?;
    let mut spec = PolicySpec { policy, preempt: false, reserve: false };
    for m in parts {
        match m {
            "preempt" => spec.preempt = true,
            "reserve" => spec.reserve = true,
            other => bail!("--policy {name:?}: unknown +{other}; one of +preempt, +reserve"),
        }
    }
    Ok(spec)
}

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
    timeline: report::Timeline,
    users: Vec<report::UserReport>,
    /// Jain's index of the users' mean slowdowns.
    fairness: f64,
}

pub fn run(a: SimArgs) -> Result<ExitCode> {
    // All parsed before anything runs: a typo fails at once, not after minutes.
    let policies: Vec<(&str, PolicySpec)> =
        a.policy.split(',').map(str::trim).map(|p| Ok((p, parse_policy(p)?))).collect::<Result<_>>()?;
    let styles: Vec<(&str, Style)> =
        a.style.split(',').map(str::trim).map(|s| Ok((s, pick("--style", s, &STYLES)?))).collect::<Result<_>>()?;
    if !(a.load > 0.0 && a.load.is_finite()) || !(0.0..1.0).contains(&a.serial) || a.nodes == 0 {
        bail!("--load must be positive, --serial in [0, 1), --nodes at least 1");
    }
    let trace = match &a.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let apps = zoe_sim::workload::parse_trace(&text, 2 << 30)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(apps)
        }
        None => None,
    };
    let workload = match (&a.trace, &trace) {
        (Some(p), Some(t)) => {
            format!(
                "trace {} ({} applications), {} nodes of 32 cores, serial {}",
                p.display(),
                t.len(),
                a.nodes,
                a.serial
            )
        }
        _ => format!(
            "{} applications, {} nodes of 32 cores, load {}, seed {}, serial {}, {} users",
            a.applications, a.nodes, a.load, a.seed, a.serial, a.users
        ),
    };
    let mut runs = Vec::new();
    for &(p, policy) in &policies {
        for &(st, style) in &styles {
            let mut x = Experiment::new(a.applications, a.load, a.seed, a.nodes);
            x.shape.users = a.users;
            x.policy = policy.policy;
            x.preemption = policy.preempt;
            x.reservation_after_s = policy.reserve.then_some(a.reservation_after);
            x.fair_share_half_life_s = a.half_life;
            x.style = style;
            x.trace = trace.clone();
            x.speed = if a.serial > 0.0 { Speed::Amdahl(a.serial) } else { Speed::Linear };
            eprintln!("simulating {workload} ({st} {p})");
            let (apps, out, samples) = x.run_traced();
            let users = report::by_user(&apps, &out);
            let (cores, memory) = (f64::from(a.nodes) * 32.0, f64::from(a.nodes) * 128.0 * (1u64 << 30) as f64);
            runs.push(Run {
                policy: p.to_string(),
                style: st.to_string(),
                reports: report::by_class(&apps, &out),
                users: users.0,
                fairness: users.1,
                timeline: report::timeline(&samples, cores, memory, TIMELINE_BINS),
            });
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
        let title = format!("Turnaround CDF: {workload}");
        std::fs::write(path, plot::cdf_svg(&title, &series))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let over_time = |path: &std::path::Path, what: &str, y: &str, pick: fn(&report::Timeline) -> &Vec<f64>| {
        let lines: Vec<plot::Line> = runs
            .iter()
            .map(|r| plot::Line {
                label: format!("{} {}", r.style, r.policy),
                xs: r.timeline.hours.clone(),
                ys: pick(&r.timeline).clone(),
            })
            .collect();
        let title = format!("{what}: {workload}");
        std::fs::write(path, plot::lines_svg(&title, "hours since the first arrival", y, &lines))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
        anyhow::Ok(())
    };
    if let Some(path) = &a.allocation_svg {
        over_time(path, "CPU allocated", "fraction of the cluster's cores", |t| &t.cpu_allocated)?;
    }
    if let Some(path) = &a.queue_svg {
        over_time(path, "Queue length", "applications queued", |t| &t.pending)?;
    }
    if a.json {
        let params = json!({
            "applications": a.applications, "nodes": a.nodes, "seed": a.seed, "load": a.load, "serial": a.serial,
            "users": a.users, "half_life_s": a.half_life, "reservation_after_s": a.reservation_after,
            "trace": a.trace.as_ref().map(|p| p.display().to_string()), "workload": workload,
        });
        let runs: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({ "policy": r.policy, "style": r.style, "classes": r.reports, "users": r.users,
                        "fairness": r.fairness, "timeline": r.timeline })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "parameters": params, "runs": runs }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("# {workload}, half-life {} s, reservation after {} s", a.half_life, a.reservation_after);
    println!(
        "{:<20} {:<8} {:<8} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7}",
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
                "{:<20} {:<8} {:<8} {:>6} {:>6} {:>8.0}s {:>8.0}s {:>8.0}s {:>8.0}s {:>8.0}s {:>8.2} {:>8.2} {:>7}",
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
