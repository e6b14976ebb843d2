//! The paper's workload (Pace et al., CCGrid 2017, §V): 80 % elastic batch
//! applications (1–4 essential components with probabilities 0.4, 0.2,
//! 0.2, 0.2, the rest elastic) and 20 % rigid ones (every component
//! essential); components per application from a bounded Pareto (α 1.2,
//! 1 to 2,000), runtimes lognormal (median 10 min, σ 2), arrivals in
//! bursts of 5 at the rate that offers load ρ of the cluster's cores.
//! Seeded: the same parameters give the same workload.

use crate::{App, Class};
use zoe_common::zapp::ZApp;
use zoe_model::state::Millis;

/// The generator's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub applications: usize,
    pub seed: u64,
    /// Offered load: Σ components × runtime over cores × time.
    pub load: f64,
    pub cores: u64,
    pub elastic_share: f64,
    pub pareto_alpha: f64,
    pub max_components: u32,
    pub runtime_median_s: f64,
    pub runtime_sigma: f64,
    pub burst: usize,
    /// Memory of one component (one core each).
    pub component_memory: u64,
    /// Users submitting, the k-th with weight 1/k (Zipf): a few heavy
    /// users, many light ones (fair share is about them).
    pub users: usize,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            applications: 20_000,
            seed: 1,
            load: 0.9,
            cores: 25 * 32,
            elastic_share: 0.8,
            pareto_alpha: 1.2,
            max_components: 2_000,
            runtime_median_s: 600.0,
            runtime_sigma: 2.0,
            burst: 5,
            component_memory: 2 << 30,
            users: 10,
        }
    }
}

/// SplitMix64: small, seeded, and enough for a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }

    /// Bounded Pareto on [lo, hi] by inversion.
    fn pareto(&mut self, alpha: f64, lo: f64, hi: f64) -> f64 {
        let u = self.unit();
        let r = (lo / hi).powf(alpha);
        lo / (1.0 - u * (1.0 - r)).powf(1.0 / alpha)
    }
}

/// A batch ZApp of one group: `essential` of `total` one-core components.
pub fn batch_zapp(name: &str, essential: u32, total: u32, memory: u64) -> ZApp {
    let text = format!(
        r#"{{"name":"{name}","version":3,"will_end":true,"size":1,"services":[
 {{"name":"worker","image":"zoe.local/busybox:1","monitor":true,"essential_count":{essential},"total_count":{total},
   "startup_order":0,"resources":{{"memory":{{"min":{memory},"max":{memory}}},"cores":{{"min":1,"max":1}}}},
   "environment":[],"volumes":[],"command":null,"ports":[]}}]}}"#
    );
    zoe_common::zapp::parse(&text).expect("a generated ZApp is valid").0
}

/// The workload of `shape`.
pub fn generate(shape: &Shape) -> Vec<App> {
    let mut rng = Rng(shape.seed);
    // Owners from a stream of their own, so that adding them left the
    // rest of the workload of a seed as it was.
    let mut owners = Rng(shape.seed ^ 0x6F77_6E65_7273);
    let zipf: Vec<f64> = (1..=shape.users.max(1)).map(|k| 1.0 / k as f64).collect();
    let zipf_total: f64 = zipf.iter().sum();
    let mut apps = Vec::with_capacity(shape.applications);
    let mut offered = 0.0;
    for i in 0..shape.applications {
        let total = rng.pareto(shape.pareto_alpha, 1.0, shape.max_components as f64).floor().max(1.0) as u32;
        let elastic = rng.unit() < shape.elastic_share;
        let essential = if elastic {
            let u = rng.unit();
            let e = if u < 0.4 {
                1
            } else if u < 0.6 {
                2
            } else if u < 0.8 {
                3
            } else {
                4
            };
            e.min(total)
        } else {
            total
        };
        let runtime_s = shape.runtime_median_s * (shape.runtime_sigma * rng.normal()).exp();
        offered += total as f64 * runtime_s;
        let name = if elastic { format!("elastic-{i}") } else { format!("rigid-{i}") };
        let class = if elastic { Class::Elastic } else { Class::Rigid };
        let mut zapp = batch_zapp(&name, essential, total, shape.component_memory);
        // The size SIZE orders by: the work, in core-seconds at full width
        // (the paper's known-size assumption).
        zapp.size = (total as f64 * runtime_s).round().max(1.0) as u64;
        let mut u = owners.unit() * zipf_total;
        let user = zipf.iter().position(|w| {
            u -= w;
            u <= 0.0
        });
        let owner = format!("user-{}", user.unwrap_or(zipf.len() - 1) + 1);
        apps.push(App { arrival: 0, zapp, work_ms: runtime_s * 1e3, class, owner });
    }
    // Arrivals spread so that the offered core-seconds are `load` of what
    // the cluster has over the span, in bursts of `burst`.
    let span_s = offered / (shape.load * shape.cores as f64);
    let bursts = apps.len().div_ceil(shape.burst.max(1));
    let gap_s = span_s / bursts.max(1) as f64;
    let mut t = 0.0;
    for chunk in apps.chunks_mut(shape.burst.max(1)) {
        for a in chunk {
            a.arrival = (t * 1e3) as Millis;
        }
        // Exponential gaps between bursts (Poisson bursts).
        t += -gap_s * rng.unit().ln();
    }
    apps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_follows_the_shape_and_the_seed() {
        let shape = Shape { applications: 2_000, ..Shape::default() };
        let a = generate(&shape);
        assert_eq!(a.len(), 2_000);
        let elastic = a.iter().filter(|x| x.class == Class::Elastic).count() as f64 / 2_000.0;
        assert!((0.7..0.9).contains(&elastic), "{elastic}");
        let widths: Vec<u32> = a.iter().map(|x| x.zapp.services[0].total_count).collect();
        assert!(widths.iter().all(|w| (1..=2_000).contains(w)));
        let mut runtimes: Vec<f64> = a.iter().map(|x| x.work_ms / 1e3).collect();
        runtimes.sort_by(f64::total_cmp);
        let median = runtimes[runtimes.len() / 2];
        assert!((400.0..900.0).contains(&median), "median runtime {median} s");
        assert!(a.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        assert_eq!(a[0].arrival, a[4].arrival, "bursts of 5");
        let b = generate(&shape);
        assert_eq!(a.iter().map(|x| x.arrival).collect::<Vec<_>>(), b.iter().map(|x| x.arrival).collect::<Vec<_>>());
    }
}

/// One run of the paper's setup: `nodes` of 32 cores and 128 GiB, the
/// workload of `shape`, one queue policy, allocation style and speed model
/// (no core sharing: the speed model counts instances).
#[derive(Debug, Clone)]
pub struct Experiment {
    pub shape: Shape,
    pub nodes: u32,
    pub policy: zoe_model::scheduler::Policy,
    pub style: crate::Style,
    pub speed: crate::Speed,
    /// Preemption, fair share's half-life, the reservation threshold (the
    /// scheduler's settings that are not the policy).
    pub preemption: bool,
    pub fair_share_half_life_s: u64,
    pub reservation_after_s: Option<u64>,
    /// Applications of a trace, instead of the generator's.
    pub trace: Option<Vec<App>>,
}

impl Experiment {
    pub fn new(applications: usize, load: f64, seed: u64, nodes: u32) -> Experiment {
        let shape = Shape { applications, seed, load, cores: nodes as u64 * 32, ..Shape::default() };
        Experiment {
            shape,
            nodes,
            policy: zoe_model::scheduler::Policy::Fifo,
            style: crate::Style::Flexible,
            speed: crate::Speed::Linear,
            preemption: false,
            fair_share_half_life_s: 24 * 3600,
            reservation_after_s: None,
            trace: None,
        }
    }

    /// The workload, as generated (unstyled), and what happened to each
    /// application.
    pub fn run(&self) -> (Vec<App>, Vec<crate::Outcome>) {
        let (apps, out, _) = self.run_traced();
        (apps, out)
    }

    /// [`Experiment::run`], with the timeline of the cluster.
    pub fn run_traced(&self) -> (Vec<App>, Vec<crate::Outcome>, Vec<crate::Sample>) {
        use zoe_common::resources::Millicores;
        use zoe_model::scheduler::SchedulerConfig;
        use zoe_model::state::{Capacity, Registration};
        let apps = self.trace.clone().unwrap_or_else(|| generate(&self.shape));
        let capacity = Capacity { cores: Millicores::from_whole_cores(32), memory: 128 << 30 };
        let nodes: Vec<Registration> =
            (0..self.nodes).map(|i| Registration::bare(format!("node-{i:02}"), capacity)).collect();
        let base = SchedulerConfig {
            policy: self.policy,
            core_sharing: false,
            preemption: self.preemption,
            fair_share_half_life_s: self.fair_share_half_life_s,
            reservation_after_s: self.reservation_after_s,
            ..SchedulerConfig::default()
        };
        let (styled, cfg) = self.style.prepare(&apps, &base);
        let (out, timeline) = crate::run_traced(&styled, &nodes, &cfg, self.speed);
        (apps, out, timeline)
    }
}

/// A line of a trace that could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("trace line {line}: {message}")]
pub struct TraceError {
    pub line: usize,
    pub message: String,
}

/// A trace instead of the generator: CSV lines
/// `arrival_s,essential,total,runtime_s[,class[,owner]]` (a first line
/// starting with `arrival` is a header; `#` starts a comment), one batch
/// application of `total` one-core components each, `essential` of them
/// essential, whose work takes `runtime_s` at full width; `class` is
/// `elastic` or `rigid` (default: rigid when every component is
/// essential). Its `size` is its work in core-seconds, as the generator's.
pub fn parse_trace(text: &str, component_memory: u64) -> Result<Vec<App>, TraceError> {
    let mut apps = Vec::new();
    for (k, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() || (k == 0 && line.starts_with("arrival")) {
            continue;
        }
        let err = |message: String| TraceError { line: k + 1, message };
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if !(4..=6).contains(&f.len()) {
            return Err(err(format!("{} fields; arrival_s,essential,total,runtime_s[,class[,owner]]", f.len())));
        }
        let num =
            |i: usize, what: &str| f[i].parse::<f64>().map_err(|_| err(format!("{what} {:?} is not a number", f[i])));
        let (arrival, essential, total, runtime) =
            (num(0, "arrival_s")?, num(1, "essential")?, num(2, "total")?, num(3, "runtime_s")?);
        if !(arrival >= 0.0 && runtime > 0.0 && total >= 1.0 && (1.0..=total).contains(&essential)) {
            return Err(err("needs arrival_s >= 0, runtime_s > 0 and 1 <= essential <= total".into()));
        }
        let (essential, total) = (essential as u32, total as u32);
        let class = match f.get(4).copied() {
            None | Some("") => {
                if essential == total {
                    Class::Rigid
                } else {
                    Class::Elastic
                }
            }
            Some("elastic") => Class::Elastic,
            Some("rigid") => Class::Rigid,
            Some(other) => return Err(err(format!("class {other:?}: elastic or rigid"))),
        };
        let owner = f.get(5).filter(|o| !o.is_empty()).map_or("user-1".to_string(), |o| o.to_string());
        let mut zapp = batch_zapp(&format!("trace-{}", apps.len()), essential, total, component_memory);
        zapp.size = (f64::from(total) * runtime).round().max(1.0) as u64;
        apps.push(App { arrival: (arrival * 1e3) as Millis, zapp, work_ms: runtime * 1e3, class, owner });
    }
    Ok(apps)
}

#[cfg(test)]
mod trace_tests {
    use super::*;

    #[test]
    fn a_trace_reads_its_applications_and_refuses_a_bad_line_by_number() {
        let text = "arrival_s,essential,total,runtime_s,class,owner\n0,1,4,100\n# a comment\n2.5,3,3,10,,ada\n";
        let apps = parse_trace(text, 1 << 30).unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!((apps[0].class, apps[0].zapp.size, apps[0].owner.as_str()), (Class::Elastic, 400, "user-1"));
        assert_eq!((apps[1].arrival, apps[1].class, apps[1].owner.as_str()), (2_500, Class::Rigid, "ada"));
        let e = parse_trace("0,1,4,100\n1,5,4,100\n", 1 << 30).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(parse_trace("0,1,4,x", 1 << 30).unwrap_err().to_string().contains("runtime_s \"x\""));
    }
}
