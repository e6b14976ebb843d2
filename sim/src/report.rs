//! What a run found, per class of application: turnaround (arrival to
//! end) and queue time (arrival to first start), in seconds; slowdown
//! (turnaround over the work's runtime at full width, 1 at best); and
//! starvation (applications that waited over a day before they started).

use crate::{App, Class, Outcome};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    pub class: &'static str,
    pub applications: usize,
    /// Applications whose work was done.
    pub done: usize,
    pub turnaround_s_mean: f64,
    pub turnaround_s_p50: f64,
    pub turnaround_s_p95: f64,
    pub turnaround_s_p99: f64,
    pub queue_s_p50: f64,
    pub queue_s_p95: f64,
    /// The longest wait before a start.
    pub queue_s_max: f64,
    pub slowdown_p50: f64,
    pub slowdown_p95: f64,
    pub slowdown_p99: f64,
    /// The 95th percentile of the runtimes at full width, over every
    /// application of the class: no policy's p95 turnaround over them all
    /// can be lower (each turnaround is at least its runtime).
    pub runtime_s_p95: f64,
    /// Applications that waited over a day before they started (or never
    /// started within a day of arriving).
    pub waited_over_a_day: usize,
    /// The turnarounds themselves, sorted (for plots; not in the JSON).
    #[serde(skip)]
    pub turnarounds_s: Vec<f64>,
}

const DAY_MS: u64 = 24 * 3600 * 1000;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// One report per class present in `apps`, elastic first.
pub fn by_class(apps: &[App], out: &[Outcome]) -> Vec<ClassReport> {
    let mut reports = Vec::new();
    // Where the trace ended: how long a never-started application waited.
    let end = out.iter().filter_map(|o| o.end).max().unwrap_or(0);
    for (class, name) in [(Class::Elastic, "elastic"), (Class::Rigid, "rigid")] {
        let mine: Vec<&Outcome> = out.iter().filter(|o| apps[o.app].class == class).collect();
        if mine.is_empty() {
            continue;
        }
        let mut ta: Vec<f64> = mine.iter().filter_map(|o| o.turnaround_ms()).map(|ms| ms as f64 / 1e3).collect();
        ta.sort_by(f64::total_cmp);
        let mut slow: Vec<f64> =
            mine.iter().filter_map(|o| Some(o.turnaround_ms()? as f64 / apps[o.app].work_ms.max(1.0))).collect();
        slow.sort_by(f64::total_cmp);
        let starved = mine
            .iter()
            .filter(|o| match o.start {
                Some(s) => s - o.arrival > DAY_MS,
                None => end.saturating_sub(o.arrival) > DAY_MS,
            })
            .count();
        let mut q: Vec<f64> = mine.iter().filter_map(|o| Some((o.start? - o.arrival) as f64 / 1e3)).collect();
        q.sort_by(f64::total_cmp);
        let mut work: Vec<f64> = mine.iter().map(|o| apps[o.app].work_ms / 1e3).collect();
        work.sort_by(f64::total_cmp);
        let mean = if ta.is_empty() { 0.0 } else { ta.iter().sum::<f64>() / ta.len() as f64 };
        reports.push(ClassReport {
            class: name,
            applications: mine.len(),
            done: ta.len(),
            turnaround_s_mean: round3(mean),
            turnaround_s_p50: round3(pct(&ta, 0.5)),
            turnaround_s_p95: round3(pct(&ta, 0.95)),
            turnaround_s_p99: round3(pct(&ta, 0.99)),
            queue_s_p50: round3(pct(&q, 0.5)),
            queue_s_p95: round3(pct(&q, 0.95)),
            queue_s_max: round3(q.last().copied().unwrap_or(0.0)),
            slowdown_p50: round3(pct(&slow, 0.5)),
            slowdown_p95: round3(pct(&slow, 0.95)),
            slowdown_p99: round3(pct(&slow, 0.99)),
            runtime_s_p95: round3(pct(&work, 0.95)),
            waited_over_a_day: starved,
            turnarounds_s: ta,
        });
    }
    reports
}

/// The cluster over time, in `bins` equal spans from the first arrival to
/// the last event: the time-weighted mean of each span.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// Each span's middle, in hours since the first arrival.
    pub hours: Vec<f64>,
    /// Fraction of the cluster's cores and memory allocated.
    pub cpu_allocated: Vec<f64>,
    pub memory_allocated: Vec<f64>,
    /// Applications queued.
    pub pending: Vec<f64>,
}

/// Bins `samples` (each holding until the next) into `bins` spans.
pub fn timeline(samples: &[crate::Sample], cores: f64, memory: f64, bins: usize) -> Timeline {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else { return Timeline::default() };
    let span = (last.time - first.time).max(1) as f64;
    let width = span / bins.max(1) as f64;
    let mut sums = vec![[0.0f64; 3]; bins.max(1)];
    for w in samples.windows(2) {
        let (s, until) = (&w[0], w[1].time as f64 - first.time as f64);
        let from = s.time as f64 - first.time as f64;
        // A sample can span several bins: split its time among them.
        let last_bin = sums.len() - 1;
        let (b0, b1) = (((from / width) as usize).min(last_bin), ((until / width) as usize).min(last_bin));
        for (b, sum) in sums.iter_mut().enumerate().take(b1 + 1).skip(b0) {
            let lo = from.max(b as f64 * width);
            let hi = if b == last_bin { until } else { until.min((b + 1) as f64 * width) };
            let dt = (hi - lo).max(0.0);
            sum[0] += s.cores * dt;
            sum[1] += s.memory * dt;
            sum[2] += s.pending as f64 * dt;
        }
    }
    let mut out = Timeline::default();
    for (b, [c, m, p]) in sums.iter().enumerate() {
        out.hours.push(round3((b as f64 + 0.5) * width / 3.6e6));
        out.cpu_allocated.push(round3(c / width / cores.max(1.0)));
        out.memory_allocated.push(round3(m / width / memory.max(1.0)));
        out.pending.push(round3(p / width));
    }
    out
}

/// What one user's applications met (fair share is judged on these).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserReport {
    pub user: String,
    pub applications: usize,
    /// Σ work of the user's applications, in core-hours at full width.
    pub work_core_h: f64,
    pub slowdown_mean: f64,
    pub queue_s_mean: f64,
}

/// One report per user, heaviest submitter first, over the applications
/// that finished; and Jain's fairness index of their mean slowdowns (1:
/// every user slowed down alike; 1/n: one user bears it all).
pub fn by_user(apps: &[App], out: &[Outcome]) -> (Vec<UserReport>, f64) {
    let mut users: std::collections::BTreeMap<&str, (usize, f64, f64, f64)> = std::collections::BTreeMap::new();
    for o in out {
        let a = &apps[o.app];
        let (Some(ta), Some(start)) = (o.turnaround_ms(), o.start) else { continue };
        let width: u32 = a.zapp.services.iter().map(|g| g.total_count).sum();
        let u = users.entry(a.owner.as_str()).or_default();
        u.0 += 1;
        u.1 += a.work_ms / 3.6e6 * f64::from(width);
        u.2 += ta as f64 / a.work_ms.max(1.0);
        u.3 += (start - o.arrival) as f64 / 1e3;
    }
    let mut reports: Vec<UserReport> = users
        .into_iter()
        .map(|(user, (n, work, slow, queue))| UserReport {
            user: user.to_string(),
            applications: n,
            work_core_h: round3(work),
            slowdown_mean: round3(slow / n as f64),
            queue_s_mean: round3(queue / n as f64),
        })
        .collect();
    reports.sort_by(|a, b| b.applications.cmp(&a.applications).then(a.user.cmp(&b.user)));
    let xs: Vec<f64> = reports.iter().map(|u| u.slowdown_mean).collect();
    let (sum, sq) = xs.iter().fold((0.0, 0.0), |(s, q), x| (s + x, q + x * x));
    let jain = if sq > 0.0 { sum * sum / (xs.len() as f64 * sq) } else { 1.0 };
    (reports, round3(jain))
}
