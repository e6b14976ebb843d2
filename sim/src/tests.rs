//! Scenarios whose outcome is known by hand.

use super::*;
use zoe_common::resources::Millicores;
use zoe_model::scheduler::StopRule;
use zoe_model::state::Capacity;

const GIB: u64 = 1 << 30;

fn zapp(name: &str, essential: u32, total: u32) -> ZApp {
    crate::workload::batch_zapp(name, essential, total, GIB)
}

fn one_node(cores: u32) -> Vec<Registration> {
    vec![Registration::bare("n1", Capacity { cores: Millicores::from_whole_cores(cores), memory: 256 * GIB })]
}

fn cfg() -> SchedulerConfig {
    // Instances get exactly their cores: the speed model counts instances.
    SchedulerConfig { core_sharing: false, stop_rule: StopRule::EssentialFits, ..SchedulerConfig::default() }
}

/// The scenario: one node of 32 cores; C, rigid (8 essential), runs
/// 50 s from t = 0; A, 4 essential + 28 elastic, needs 100 s at full width
/// and arrives at t = 0 too. Flexible (zoe's) starts A at once on the 24
/// free cores, grows it to 32 when C ends, and finishes it at 112.5 s;
/// rigid (A all essential) waits for C and finishes at 150 s.
#[test]
fn flexible_starts_the_elastic_application_at_once_rigid_waits() {
    let c = App { arrival: 0, zapp: zapp("app-c", 8, 8), work_ms: 50_000.0, class: Class::Rigid, owner: "u".into() };
    let flexible =
        App { arrival: 0, zapp: zapp("app-a", 4, 32), work_ms: 100_000.0, class: Class::Elastic, owner: "u".into() };
    let out = run(&[c.clone(), flexible], &one_node(32), &cfg(), Speed::Linear);
    assert_eq!((out[0].start, out[0].end), (Some(0), Some(50_000)));
    assert_eq!((out[1].start, out[1].end), (Some(0), Some(112_500)));

    let rigid =
        App { arrival: 0, zapp: zapp("app-a", 32, 32), work_ms: 100_000.0, class: Class::Rigid, owner: "u".into() };
    let out = run(&[c, rigid], &one_node(32), &cfg(), Speed::Linear);
    assert_eq!((out[1].start, out[1].end), (Some(50_000), Some(150_000)));
    assert_eq!(out[1].turnaround_ms(), Some(150_000));
}

#[test]
fn what_never_fits_never_starts_and_the_rest_still_runs() {
    let huge = App { arrival: 0, zapp: zapp("huge", 64, 64), work_ms: 1_000.0, class: Class::Rigid, owner: "u".into() };
    let small =
        App { arrival: 10, zapp: zapp("small", 2, 2), work_ms: 1_000.0, class: Class::Rigid, owner: "u".into() };
    let out = run(&[huge, small], &one_node(32), &cfg(), Speed::Linear);
    assert_eq!((out[0].start, out[0].end), (None, None));
    assert_eq!((out[1].start, out[1].end), (Some(10), Some(1_010)));
}

#[test]
fn speed_models() {
    assert_eq!(Speed::Linear.rate(24, 32), 0.75);
    assert_eq!(Speed::Linear.rate(0, 32), 0.0);
    // Amdahl with a serial fraction of 0.5 at half width: 1 / (0.5 + 0.5 * 2).
    assert!((Speed::Amdahl(0.5).rate(16, 32) - 1.0 / 1.5).abs() < 1e-12);
    assert_eq!(Speed::Amdahl(0.5).rate(32, 32), 1.0);
}

#[test]
fn the_rigid_style_makes_every_component_essential_and_blocks_the_queue() {
    let c = App { arrival: 0, zapp: zapp("app-c", 8, 8), work_ms: 50_000.0, class: Class::Rigid, owner: "u".into() };
    let a =
        App { arrival: 0, zapp: zapp("app-a", 4, 32), work_ms: 100_000.0, class: Class::Elastic, owner: "u".into() };
    // Small and later: it would fit beside C, but the rigid head (A) blocks it.
    let b = App { arrival: 1_000, zapp: zapp("app-b", 2, 2), work_ms: 1_000.0, class: Class::Rigid, owner: "u".into() };
    let (apps, rigid) = Style::Rigid.prepare(&[c.clone(), a.clone(), b.clone()], &cfg());
    let out = run(&apps, &one_node(32), &rigid, Speed::Linear);
    assert_eq!(out[1].end, Some(150_000));
    assert_eq!(out[2].start, Some(150_000), "behind the blocked head");
    let (apps, flexible) = Style::Flexible.prepare(&[c, a, b], &cfg());
    let out = run(&apps, &one_node(32), &flexible, Speed::Linear);
    assert_eq!(out[1].start, Some(0));
}

/// Elastic-only preemption in virtual time: on 32 cores, A (4 essential +
/// 28 elastic, size 3,200 core-seconds) runs from t = 0; B (8 essential,
/// size 80) arrives at 10 s. Under SIZE with preemption B stops 8 of A's
/// elastic instances and starts at once; without, it waits for A to end.
/// A keeps its essential part throughout and grows back when B is done.
#[test]
fn preemption_starts_a_smaller_application_at_once_and_the_victim_grows_back() {
    let mut a = zapp("app-a", 4, 32);
    a.size = 3_200;
    let mut b = zapp("app-b", 8, 8);
    b.size = 80;
    let apps = [
        App { arrival: 0, zapp: a, work_ms: 100_000.0, class: Class::Elastic, owner: "u".into() },
        App { arrival: 10_000, zapp: b, work_ms: 10_000.0, class: Class::Rigid, owner: "u".into() },
    ];
    let size = SchedulerConfig { policy: zoe_model::scheduler::Policy::Size, ..cfg() };
    let out = run(&apps, &one_node(32), &size, Speed::Linear);
    assert_eq!(out[1].start, Some(90_000 + 10_000), "waits for A: {out:?}");
    let preempting = SchedulerConfig { preemption: true, ..size };
    let (out, timeline) = run_traced(&apps, &one_node(32), &preempting, Speed::Linear);
    assert_eq!((out[1].start, out[1].end), (Some(10_000), Some(20_000)));
    // A ran at 32/32 for 10 s, 24/32 for 10 s, then at full width again
    // (the victims' restart backoff is shorter than the next event).
    assert_eq!(out[0].end, Some(102_500));
    assert!(timeline.iter().all(|s| s.cores <= 32.0));
    assert_eq!(timeline.iter().find(|s| s.time == 10_000).map(|s| s.cores), Some(32.0));
}

#[test]
fn the_elastic_greedy_style_gives_the_head_its_elastic_part_first() {
    // A (4 + 28 elastic) and B (2 essential) arrive together: greedy gives
    // A all 32 cores and B waits for A; flexible starts B at once.
    let a =
        App { arrival: 0, zapp: zapp("app-a", 4, 32), work_ms: 100_000.0, class: Class::Elastic, owner: "u".into() };
    let b = App { arrival: 0, zapp: zapp("app-b", 2, 2), work_ms: 1_000.0, class: Class::Rigid, owner: "u".into() };
    let (apps, greedy) = Style::Greedy.prepare(&[a.clone(), b.clone()], &cfg());
    let out = run(&apps, &one_node(32), &greedy, Speed::Linear);
    assert_eq!(out[0].end, Some(100_000));
    assert_eq!(out[1].start, Some(100_000));
    let (apps, flexible) = Style::Flexible.prepare(&[a, b], &cfg());
    let out = run(&apps, &one_node(32), &flexible, Speed::Linear);
    assert_eq!(out[1].start, Some(0));
}

#[test]
fn the_timeline_is_a_time_weighted_mean_per_span() {
    let s = |time, cores, pending| Sample { time, cores, memory: 0.0, pending };
    // 32 cores for the first hour, 16 for the second; 4 queued, then none.
    let samples = [s(0, 32.0, 4), s(3_600_000, 16.0, 0), s(7_200_000, 0.0, 0)];
    let t = report::timeline(&samples, 32.0, 1.0, 4);
    assert_eq!(t.hours, vec![0.25, 0.75, 1.25, 1.75]);
    assert_eq!(t.cpu_allocated, vec![1.0, 1.0, 0.5, 0.5]);
    assert_eq!(t.pending, vec![4.0, 4.0, 0.0, 0.0]);
    let t = report::timeline(&samples, 32.0, 1.0, 1);
    assert_eq!(t.cpu_allocated, vec![0.75]);
}

/// The floor of #21's p95 comparison: with every application done, the
/// k-th shortest turnaround is at least the k-th shortest runtime (were it
/// shorter, k applications would have runtimes below the k-th shortest), so
/// no policy's p95 turnaround is below the runtimes' p95.
#[test]
fn no_policy_beats_the_runtimes_p95() {
    for policy in [zoe_model::scheduler::Policy::Size, zoe_model::scheduler::Policy::Fifo] {
        let mut x = workload::Experiment::new(400, 0.9, 3, 4);
        x.policy = policy;
        x.preemption = true;
        let (apps, out) = x.run();
        for c in report::by_class(&apps, &out) {
            assert_eq!(c.done, c.applications);
            assert!(c.turnaround_s_p95 >= c.runtime_s_p95 - 1e-3, "{policy:?} {c:?}");
        }
    }
}

#[test]
fn users_are_reported_with_jains_index_of_their_slowdowns() {
    let app = |owner: &str, work_ms| App {
        arrival: 0,
        zapp: zapp("app-x", 1, 1),
        work_ms,
        class: Class::Rigid,
        owner: owner.into(),
    };
    let apps = [app("a", 1_000.0), app("b", 1_000.0)];
    let o = |app, end| Outcome { app, execution: 0, arrival: 0, start: Some(0), end: Some(end) };
    // a: slowdown 1; b: slowdown 3. Jain: (1 + 3)² / (2 · (1 + 9)) = 0.8.
    let (users, jain) = report::by_user(&apps, &[o(0, 1_000), o(1, 3_000)]);
    assert_eq!(users.iter().map(|u| u.slowdown_mean).collect::<Vec<_>>(), vec![1.0, 3.0]);
    assert_eq!(jain, 0.8);
}
