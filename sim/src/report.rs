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
            waited_over_a_day: starved,
            turnarounds_s: ta,
        });
    }
    reports
}
