//! zoe's scheduler in virtual time (issue #21's first step): the very
//! `schedule()` and `State::apply` the leader runs, driven by a
//! discrete-event loop instead of Raft and agents.
//!
//! The loop: at each event time, applications that arrive are submitted
//! and queued; the scheduler makes one pass, and what it
//! placed starts at once (a simulated node answers every spawn); every
//! running application then progresses at its speed until the next
//! arrival or completion. An application's work is its runtime at full
//! width; with `k` of its `n` instances running it goes at `k / n` of that
//! speed (the linear model of Pace et al., CCGrid 2017), or at Amdahl's
//! `1 / (s + (1 - s) · n / k)` with a serial fraction `s`. When its work
//! is done its first essential instance exits with code 0, which ends the
//! execution as a batch job ends, and the rest are stopped.
//!
//! Times are milliseconds of virtual time; nothing here reads a clock.

pub mod plot;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use zoe_common::zapp::ZApp;
use zoe_model::scheduler::{LiveNode, Platform, SchedulerConfig, dry_run, schedule};
use zoe_model::state::{Applied, Command, ExecutionId, ExecutionStatus, Millis, Registration, State};

/// One application of a workload.
#[derive(Debug, Clone)]
pub struct App {
    pub arrival: Millis,
    pub zapp: ZApp,
    /// Runtime with every instance running, in ms.
    pub work_ms: f64,
    /// The workload's class of the application (results are per class).
    pub class: Class,
    /// Who submits it (fair share orders by it).
    pub owner: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Some components elastic (Zoe's "elastic batch").
    Elastic,
    /// Every component essential.
    Rigid,
}

/// How an application's speed depends on how many of its instances run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// `k / n`.
    Linear,
    /// Amdahl's law with this serial fraction.
    Amdahl(f64),
}

impl Speed {
    /// The fraction of full speed with `k` of `n` instances running.
    pub fn rate(self, k: usize, n: usize) -> f64 {
        if k == 0 || n == 0 {
            return 0.0;
        }
        let f = k as f64 / n as f64;
        match self {
            Speed::Linear => f,
            Speed::Amdahl(s) => 1.0 / (s + (1.0 - s) / f),
        }
    }
}

/// How applications are allocated (the paper's comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// zoe's scheduler: every execution whose essential part fits is
    /// admitted, elastic parts fill what is left (`StopRule::EssentialFits`).
    Flexible,
    /// Zoe's literal rule: the pass stops at the first execution that does
    /// not lower free memory (`StopRule::Literal`).
    Literal,
    /// Every component essential, and the head of the queue blocks the rest
    /// (the literal rule on all-essential applications).
    Rigid,
    /// Elastic-greedy: the head of the queue gets its essential and then
    /// its elastic components before the next is looked at; a head whose
    /// essential part does not fit blocks the rest (`StopRule::Greedy`).
    Greedy,
}

impl Style {
    /// The workload and scheduler configuration of this style.
    pub fn prepare(self, apps: &[App], cfg: &SchedulerConfig) -> (Vec<App>, SchedulerConfig) {
        use zoe_model::scheduler::StopRule;
        let mut cfg = cfg.clone();
        cfg.stop_rule = match self {
            Style::Flexible => StopRule::EssentialFits,
            Style::Greedy => StopRule::Greedy,
            Style::Literal | Style::Rigid => StopRule::Literal,
        };
        let mut apps = apps.to_vec();
        if self == Style::Rigid {
            for a in &mut apps {
                for g in &mut a.zapp.services {
                    g.essential_count = g.total_count;
                }
            }
        }
        (apps, cfg)
    }
}

/// What happened to one application.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub app: usize,
    pub execution: ExecutionId,
    pub arrival: Millis,
    /// When its first instances started.
    pub start: Option<Millis>,
    /// When its work was done.
    pub end: Option<Millis>,
}

impl Outcome {
    pub fn turnaround_ms(&self) -> Option<Millis> {
        Some(self.end? - self.arrival)
    }
}

/// An application in the simulation.
struct Running {
    /// Its entry in the outcomes.
    outcome: usize,
    /// Work left, in ms at full speed.
    left: f64,
    width: usize,
    /// Its active instances while it runs (0 while it waits): kept as
    /// plans start instances, instead of counted at every event.
    active: usize,
}

/// The cluster after one event: what is allocated (Σ `min` of the
/// instances holding a container) and how many applications are queued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub time: Millis,
    /// Cores allocated.
    pub cores: f64,
    /// Bytes of memory allocated.
    pub memory: f64,
    /// Applications queued.
    pub pending: usize,
}

/// Runs `apps` on `nodes` under `cfg` until every application is done or
/// nothing more can happen (what never fits never starts).
pub fn run(apps: &[App], nodes: &[Registration], cfg: &SchedulerConfig, speed: Speed) -> Vec<Outcome> {
    run_traced(apps, nodes, cfg, speed).0
}

/// [`run`], with the allocation and the queue's length after every event.
pub fn run_traced(
    apps: &[App],
    nodes: &[Registration],
    cfg: &SchedulerConfig,
    speed: Speed,
) -> (Vec<Outcome>, Vec<Sample>) {
    let mut st = State::default();
    let mut platform = Platform::default();
    for r in nodes {
        st.apply(&Command::RegisterNode { registration: r.clone(), time: 0 }).expect("a registration applies");
        platform.nodes.insert(r.name.clone(), LiveNode { connected: true, ..LiveNode::default() });
    }
    let mut order: Vec<usize> = (0..apps.len()).collect();
    order.sort_by_key(|&i| (apps[i].arrival, i));
    let mut next_arrival = 0;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(apps.len());
    let mut live: BTreeMap<ExecutionId, Running> = BTreeMap::new();
    let mut timeline = Vec::new();
    let mut now: f64 = order.first().map(|&i| apps[i].arrival as f64).unwrap_or(0.0);
    loop {
        let t = now.round() as Millis;
        // Arrivals.
        while next_arrival < order.len() && apps[order[next_arrival]].arrival <= t {
            let i = order[next_arrival];
            next_arrival += 1;
            let submit = Command::SubmitExecution {
                idempotency_key: None,
                name: format!("app-{i}"),
                owner: apps[i].owner.clone(),
                description: apps[i].zapp.clone(),
                size: 0.0,
                time: t,
            };
            let Ok(Applied::Created(id)) = st.apply(&submit) else { continue };
            if !could_ever_fit(&apps[i].zapp, nodes) {
                // Refused at the door, as admission control would: queued,
                // it would never start, and under a head-of-queue rule
                // (rigid, greedy, literal) it would block the queue for good.
                let reject = Command::RejectExecution { id, reason: "can never fit".into(), time: t };
                st.apply(&reject).expect("a new execution can be rejected");
                outcomes.push(Outcome { app: i, execution: id, arrival: apps[i].arrival, start: None, end: None });
                continue;
            }
            st.apply(&Command::QueueExecution { id, time: t }).expect("a new execution queues");
            let width = apps[i].zapp.services.iter().map(|g| g.total_count as usize).sum();
            live.insert(id, Running { outcome: outcomes.len(), left: apps[i].work_ms, width, active: 0 });
            outcomes.push(Outcome { app: i, execution: id, arrival: apps[i].arrival, start: None, end: None });
        }
        // One pass per event, as the leader runs one per state change: a
        // pass places essential and elastic parts alike, so a second one at
        // the same instant finds nothing more (checked: the same results).
        // A pass that preempts is followed by another at once: the victims'
        // containers stop at once here, and the preemptor takes their room.
        for _ in 0..MAX_PASSES_PER_EVENT {
            if !pass(&mut st, &platform, cfg, t, &mut live, &mut outcomes) {
                break;
            }
        }
        let (cores, memory) = st
            .index()
            .usage()
            .values()
            .fold((0.0, 0.0), |(c, m), u| (c + f64::from(u.cores.0) / 1000.0, m + u.memory as f64));
        let pending = st.index().executions(ExecutionStatus::Queued).count();
        timeline.push(Sample { time: t, cores, memory, pending });
        // Each live application's speed now: its instances only count once
        // it runs (all its essential ones are up; in the simulation they
        // start together), and queued ones (most of a long queue) run nothing.
        let rates: Vec<(ExecutionId, f64)> = live
            .iter()
            .map(|(&id, r)| {
                let k = if outcomes[r.outcome].start.is_some() { r.active } else { 0 };
                (id, speed.rate(k, r.width))
            })
            .collect();
        // The next event: an arrival or a completion.
        let next_done =
            rates.iter().filter(|(_, v)| *v > 0.0).map(|(id, v)| now + live[id].left / v).fold(f64::INFINITY, f64::min);
        let next_in = order.get(next_arrival).map(|&i| apps[i].arrival as f64).unwrap_or(f64::INFINITY);
        let next = next_done.min(next_in);
        if !next.is_finite() {
            break;
        }
        let dt = next - now;
        now = next;
        let t = now.round() as Millis;
        let mut done = Vec::new();
        for (id, v) in rates {
            let r = live.get_mut(&id).expect("listed");
            r.left -= dt * v;
            if v > 0.0 && r.left <= 1e-6 {
                done.push(id);
            }
        }
        for id in done {
            let r = live.remove(&id).expect("listed");
            finish(&mut st, id, t);
            outcomes[r.outcome].end = Some(t);
        }
    }
    outcomes.sort_by_key(|o| o.app);
    (outcomes, timeline)
}

/// Whether the application's essential part fits the empty cluster, by
/// its totals and each instance in the largest node.
fn could_ever_fit(zapp: &ZApp, nodes: &[Registration]) -> bool {
    let (cores, memory) =
        nodes.iter().fold((0u64, 0u64), |(c, m), n| (c + u64::from(n.capacity.cores.0), m + n.capacity.memory));
    let (big_cores, big_memory) =
        nodes.iter().fold((0u64, 0u64), |(c, m), n| (c.max(u64::from(n.capacity.cores.0)), m.max(n.capacity.memory)));
    let mut need = (0u64, 0u64);
    for g in &zapp.services {
        let (c, m) = (u64::from(g.cores_min().0), g.memory_min());
        if g.essential_count > 0 && (c > big_cores || m > big_memory) {
            return false;
        }
        need.0 += c * u64::from(g.essential_count);
        need.1 += m * u64::from(g.essential_count);
    }
    need.0 <= cores && need.1 <= memory
}

/// Passes at one instant at most (each preemption asks for another).
const MAX_PASSES_PER_EVENT: usize = 4;

/// One pass at `t`, committed: what it placed starts at once, what it
/// preempted stops at once. Returns whether it preempted anything.
fn pass(
    st: &mut State,
    platform: &Platform,
    cfg: &SchedulerConfig,
    t: Millis,
    live: &mut BTreeMap<ExecutionId, Running>,
    outcomes: &mut [Outcome],
) -> bool {
    let plan = schedule(st, platform, cfg, t);
    let preempted = !plan.preempt.is_empty();
    let done = dry_run::commit(st, plan, t);
    for exec in done.started {
        let Some(r) = live.get_mut(&exec) else { continue };
        r.active += 1;
        let o = &mut outcomes[r.outcome];
        if o.start.is_none() {
            o.start = st.executions.get(&exec).and_then(|e| e.time_start);
        }
    }
    for exec in done.stopped {
        if let Some(r) = live.get_mut(&exec) {
            r.active = r.active.saturating_sub(1);
        }
    }
    preempted && done.applied
}

/// The application's work is done ([`dry_run::finish`]), and it leaves the
/// state.
fn finish(st: &mut State, id: ExecutionId, t: Millis) {
    dry_run::finish(st, id, t);
    // Ended executions leave the state, so a pass costs what is queued and
    // running, not the whole history.
    if st.executions.get(&id).is_some_and(|e| e.status == ExecutionStatus::Terminated) {
        let _ = st.apply(&Command::DeleteExecution { id });
    }
}

#[cfg(test)]
mod tests;
