//! What a run found, per class of application: turnaround (arrival to
//! end) and queue time (arrival to first start), in seconds.

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
}

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
    for (class, name) in [(Class::Elastic, "elastic"), (Class::Rigid, "rigid")] {
        let mine: Vec<&Outcome> = out.iter().filter(|o| apps[o.app].class == class).collect();
        if mine.is_empty() {
            continue;
        }
        let mut ta: Vec<f64> = mine.iter().filter_map(|o| o.turnaround_ms()).map(|ms| ms as f64 / 1e3).collect();
        ta.sort_by(f64::total_cmp);
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
        });
    }
    reports
}
