//! Small, hand-checkable scheduling scenarios.

use super::*;
use crate::state::{Capacity, Command, Registration};
use std::collections::BTreeSet;
use zoe_common::zapp::{CoresRange, MemoryRange, Resources, ServiceGroup, ZApp};

const MIB: u64 = 1 << 20;

/// (group name, essential, total, millicores, MiB, labels)
type G<'a> = (&'a str, u32, u32, u32, u64, &'a [&'a str]);

fn zapp(groups: &[G], size: u64) -> ZApp {
    ZApp {
        name: "t".into(),
        version: 3,
        will_end: true,
        size,
        services: groups
            .iter()
            .enumerate()
            .map(|(i, (name, ess, total, mc, mib, labels))| ServiceGroup {
                name: name.to_string(),
                image: "zoe.local/busybox:1".into(),
                monitor: i == 0,
                essential_count: *ess,
                total_count: *total,
                startup_order: i as i64,
                resources: Resources {
                    memory: MemoryRange { min: if *mib == 0 { None } else { Some(mib * MIB) }, max: None },
                    cores: CoresRange { min: Some(Millicores(*mc)), max: None },
                    shm: None,
                },
                environment: vec![],
                volumes: vec![],
                command: None,
                ports: vec![],
                replicas: None,
                work_dir: None,
                labels: if labels.is_empty() { None } else { Some(labels.iter().map(|l| l.to_string()).collect()) },
                network: None,
            })
            .collect(),
        on_eviction: None,
    }
}

struct World {
    st: State,
    platform: Platform,
    cfg: SchedulerConfig,
    now: Millis,
}

impl World {
    /// Nodes as (name, cores, MiB, labels).
    fn new(nodes: &[(&str, u32, u64, &[&str])]) -> World {
        let mut w =
            World { st: State::default(), platform: Platform::default(), cfg: SchedulerConfig::default(), now: 1_000 };
        w.cfg.core_sharing = false;
        for (name, cores, mib, labels) in nodes {
            let capacity = Capacity { cores: Millicores::from_whole_cores(*cores), memory: mib * MIB };
            let registration = Registration {
                addresses: vec!["127.0.0.1".into()],
                labels: labels.iter().map(|l| l.to_string()).collect(),
                ..Registration::bare(*name, capacity)
            };
            w.st.apply(&Command::RegisterNode { registration, time: 1 }).unwrap();
            w.platform.nodes.insert(name.to_string(), LiveNode { connected: true, ..LiveNode::default() });
        }
        w
    }

    fn submit(&mut self, app: ZApp) -> ExecutionId {
        self.submit_as("u", app)
    }

    fn submit_as(&mut self, owner: &str, app: ZApp) -> ExecutionId {
        self.now += 1;
        let size = app.size as f64;
        let crate::state::Applied::Created(id) = self
            .st
            .apply(&Command::SubmitExecution {
                idempotency_key: None,
                name: "e".into(),
                owner: owner.into(),
                description: app,
                size,
                time: self.now,
            })
            .unwrap()
        else {
            panic!()
        };
        self.st.apply(&Command::QueueExecution { id, time: self.now }).unwrap();
        id
    }

    fn pass(&mut self) -> (Plan, Vec<Waiting>) {
        self.now += 1;
        schedule_explained(&self.st, &self.platform, &self.cfg, self.now)
    }

    /// Runs a pass, commits it, and reports every placed instance started.
    fn run_pass(&mut self) -> Plan {
        let (plan, _) = self.pass();
        self.st.apply(&Command::ApplyPlan(plan.clone())).unwrap();
        for p in &plan.placements {
            let cid = self.st.services[&p.service].container_id.clone().unwrap();
            self.st
                .apply(&Command::ServiceStarted {
                    id: p.service,
                    container_id: cid,
                    ip_address: None,
                    ports: vec![],
                    time: self.now,
                })
                .unwrap();
        }
        plan
    }

    /// The agents report every container the state is stopping as gone.
    fn stop_terminating(&mut self) -> usize {
        crate::state::check::stop_terminating(&mut self.st, self.now)
    }

    /// The execution's work is done: its first essential instance exits 0.
    fn finish(&mut self, id: ExecutionId) {
        self.now += 1;
        let s = self.st.services_of(id).find(|s| s.essential).unwrap();
        let cmd = Command::ServiceExited {
            id: s.id,
            container_id: s.container_id.clone().unwrap(),
            exit_code: Some(0),
            oom_killed: false,
            reason: "done".into(),
            time: self.now,
        };
        self.st.apply(&cmd).unwrap();
        self.stop_terminating();
    }

    fn names(&self, plan: &Plan) -> Vec<String> {
        plan.placements
            .iter()
            .map(|p| format!("{}:{}@{}", p.service_exec(&self.st), self.st.services[&p.service].name, p.node))
            .collect()
    }
}

trait ExecOf {
    fn service_exec(&self, st: &State) -> ExecutionId;
}

impl ExecOf for Placement {
    fn service_exec(&self, st: &State) -> ExecutionId {
        st.services[&self.service].execution_id
    }
}

#[test]
fn fifo_admits_what_fits_and_says_why_the_rest_waits() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    let a = w.submit(zapp(&[("job", 1, 1, 3000, 1024, &[])], 0));
    let b = w.submit(zapp(&[("job", 1, 1, 2000, 1024, &[])], 0));
    let (plan, waiting) = w.pass();
    assert_eq!(plan.starting, vec![a]);
    assert_eq!(w.names(&plan), vec![format!("{a}:job0@n1")]);
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].execution, b);
    assert!(!waiting[0].never_fits);
    assert!(waiting[0].reason.contains("waiting for room for job0"), "{}", waiting[0].reason);
}

#[test]
fn an_execution_too_big_for_any_node_is_flagged_as_never_fitting() {
    let mut w = World::new(&[("n1", 4, 4096, &[]), ("n2", 4, 4096, &[])]);
    w.submit(zapp(&[("big", 1, 1, 8000, 1024, &[])], 0));
    let (plan, waiting) = w.pass();
    assert!(plan.is_empty());
    assert!(waiting[0].never_fits, "{waiting:?}");
}

#[test]
fn essential_instances_are_all_or_nothing() {
    // Two nodes of 4 cores: 2 × 3 cores fits (one per node), 3 × 3 does not.
    let mut w = World::new(&[("n1", 4, 4096, &[]), ("n2", 4, 4096, &[])]);
    let big = w.submit(zapp(&[("part", 3, 3, 3000, 64, &[])], 0));
    let ok = w.submit(zapp(&[("part", 2, 2, 3000, 64, &[])], 0));
    let (plan, _) = w.pass();
    assert_eq!(plan.starting, vec![ok]);
    assert!(plan.placements.iter().all(|p| w.st.services[&p.service].execution_id == ok));
    let nodes: BTreeSet<_> = plan.placements.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "one per node");
    assert!(w.st.executions[&big].status == crate::state::ExecutionStatus::Queued);
}

#[test]
fn essential_parts_of_later_executions_beat_elastic_parts_of_earlier_ones() {
    // 4 cores. A: 1 essential + 3 elastic, 1 core each. B: 1 essential of 2 cores.
    // Zoe's order: A's essential, B's essential, then A's elastic in what is left.
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    let a = w.submit(zapp(&[("a", 1, 4, 1000, 64, &[])], 0));
    let b = w.submit(zapp(&[("b", 1, 1, 2000, 64, &[])], 0));
    let (plan, waiting) = w.pass();
    assert!(waiting.is_empty());
    assert_eq!(plan.starting, vec![a, b]);
    assert_eq!(w.names(&plan), vec![format!("{a}:a0@n1"), format!("{b}:b0@n1"), format!("{a}:a1@n1")]);
}

#[test]
fn rigid_versus_elastic_start_times() {
    // The same work as rigid (4 essential) or elastic (1 essential + 3
    // elastic) on 4 cores, with a 2-core job behind it. Rigid: B waits for A
    // to end. Elastic: B starts at once, A runs narrower.
    for (rigid, b_starts_now) in [(true, false), (false, true)] {
        let mut w = World::new(&[("n1", 4, 4096, &[])]);
        let ess = if rigid { 4 } else { 1 };
        w.submit(zapp(&[("a", ess, 4, 1000, 64, &[])], 0));
        let b = w.submit(zapp(&[("b", 1, 1, 2000, 64, &[])], 0));
        let plan = w.run_pass();
        assert_eq!(plan.starting.contains(&b), b_starts_now, "rigid={rigid}");
    }
}

#[test]
fn running_elastic_instances_are_not_displaced() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    let a = w.submit(zapp(&[("a", 1, 4, 1000, 64, &[])], 0));
    let plan = w.run_pass();
    assert_eq!(plan.placements.len(), 4);
    let b = w.submit(zapp(&[("b", 1, 1, 2000, 64, &[])], 0));
    let (plan, waiting) = w.pass();
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(waiting[0].execution, b);
    // When an elastic instance of A ends, B still does not fit (1 core free);
    // when two end, B starts and the freed elastic slots are not refilled
    // ahead of it.
    let elastic: Vec<_> =
        w.st.services_of(a).filter(|s| !s.essential).map(|s| (s.id, s.container_id.clone().unwrap())).collect();
    for (sid, cid) in elastic.iter().take(2) {
        w.st.apply(&Command::ServiceExited {
            id: *sid,
            container_id: cid.clone(),
            exit_code: Some(0),
            oom_killed: false,
            reason: "x".into(),
            time: w.now,
        })
        .unwrap();
    }
    let (plan, _) = w.pass();
    assert_eq!(plan.starting, vec![b]);
    assert_eq!(plan.placements.len(), 1, "the dead elastic instances wait for their backoff and for room");
}

#[test]
fn size_policies_order_the_queue() {
    // One slot; three executions with size hints 30, 10, 20.
    let cases = [(Policy::Fifo, 0usize), (Policy::Size, 1usize)];
    for (policy, winner) in cases {
        let mut w = World::new(&[("n1", 1, 4096, &[])]);
        w.cfg.policy = policy;
        let ids: Vec<_> = [30, 10, 20].iter().map(|s| w.submit(zapp(&[("j", 1, 1, 1000, 64, &[])], *s))).collect();
        let (plan, _) = w.pass();
        assert_eq!(plan.starting, vec![ids[winner]], "{policy:?}");
    }
}

#[test]
fn dynsize_ages_waiting_executions() {
    // DYNSIZE sizes: big = 1 core × 1024 MiB, small = 1 core × 64 MiB.
    // At first the small one wins; after the big one has waited long enough
    // its aged size reaches 0 and it goes first.
    let mut w = World::new(&[("n1", 1, 4096, &[])]);
    w.cfg.policy = Policy::Dynsize;
    w.cfg.dynsize_aging_per_s = (64 * MIB) as f64;
    let big_app = zapp(&[("big", 1, 1, 1000, 1024, &[])], 0);
    let small_app = zapp(&[("small", 1, 1, 1000, 64, &[])], 0);
    let big = w.submit(big_app);
    let small = w.submit(small_app);
    let (plan, _) = w.pass();
    assert_eq!(plan.starting, vec![small]);
    // 1024 MiB·core / 64 MiB per s = 16 s to reach 0; the small one, also
    // ageing, is still above 0 only for 1 s. After 20 s both are 0 and the
    // earlier submission wins.
    w.now += 20_000;
    let (plan, _) = w.pass();
    assert_eq!(plan.starting, vec![big]);
}

#[test]
fn average_spreads_and_waterfill_packs() {
    for (placement, expected) in [(PlacementPolicy::Average, "n2"), (PlacementPolicy::Waterfill, "n1")] {
        let mut w = World::new(&[("n1", 4, 4096, &[]), ("n2", 4, 4096, &[])]);
        w.cfg.placement = placement;
        let first = w.submit(zapp(&[("a", 1, 1, 1000, 64, &[])], 0));
        let plan = w.run_pass();
        assert_eq!(plan.placements[0].node, "n1", "ties go to the first node");
        assert_eq!(plan.starting, vec![first]);
        w.submit(zapp(&[("b", 1, 1, 1000, 64, &[])], 0));
        let (plan, _) = w.pass();
        assert_eq!(plan.placements[0].node, expected, "{placement:?}");
    }
}

#[test]
fn random_placement_is_seeded_and_only_uses_fitting_nodes() {
    let run = |seed| {
        let mut w =
            World::new(&[("n1", 1, 4096, &[]), ("n2", 8, 4096, &[]), ("n3", 8, 4096, &[]), ("n4", 8, 4096, &[])]);
        w.cfg.placement = PlacementPolicy::Random;
        w.cfg.seed = seed;
        for _ in 0..6 {
            w.submit(zapp(&[("r", 1, 1, 2000, 64, &[])], 0));
        }
        let (plan, _) = w.pass();
        plan.placements.iter().map(|p| p.node.clone()).collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same placements");
    assert_eq!(a.len(), 6);
    assert!(!a.contains(&"n1".to_string()), "n1 has 1 core, each instance needs 2");
}

#[test]
fn labels_constrain_and_plain_work_avoids_special_nodes() {
    let mut w = World::new(&[("gpu1", 8, 4096, &["gpu"]), ("plain", 8, 4096, &[])]);
    w.submit(zapp(&[("train", 1, 1, 1000, 64, &["gpu"])], 0));
    w.submit(zapp(&[("etl", 1, 1, 1000, 64, &[])], 0));
    w.submit(zapp(&[("ssd", 1, 1, 1000, 64, &["ssd"])], 0));
    let (plan, waiting) = w.pass();
    let nodes: Vec<_> = plan.placements.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes, vec!["gpu1", "plain"]);
    assert!(waiting[0].never_fits && waiting[0].reason.contains("labels ssd"), "{waiting:?}");
}

#[test]
fn nodes_that_are_not_schedulable_or_not_connected_get_nothing() {
    for case in ["ineligible", "draining", "down", "disconnected"] {
        let mut w = World::new(&[("n1", 4, 4096, &[]), ("n2", 4, 4096, &[])]);
        match case {
            "ineligible" => w.st.nodes.get_mut("n1").unwrap().eligible = false,
            "draining" => {
                w.st.nodes.get_mut("n1").unwrap().drain = Some(crate::state::Drain {
                    requested_by: "a".into(),
                    requested_at: 0,
                    deadline: None,
                    force: false,
                    moved: vec![],
                })
            }
            "down" => w.st.nodes.get_mut("n1").unwrap().status = crate::state::NodeStatus::Down,
            _ => w.platform.nodes.get_mut("n1").unwrap().connected = false,
        }
        w.submit(zapp(&[("a", 2, 2, 1000, 64, &[])], 0));
        let (plan, _) = w.pass();
        assert!(plan.placements.iter().all(|p| p.node == "n2"), "{case}: {plan:?}");
        assert_eq!(plan.placements.len(), 2, "{case}");
    }
}

#[test]
fn prefers_a_node_holding_the_image_among_equals() {
    let mut w = World::new(&[("n1", 4, 4096, &[]), ("n2", 4, 4096, &[])]);
    std::sync::Arc::make_mut(&mut w.platform.nodes.get_mut("n2").unwrap().images).insert("zoe.local/busybox:1".into());
    w.submit(zapp(&[("a", 1, 1, 1000, 64, &[])], 0));
    let (plan, _) = w.pass();
    assert_eq!(plan.placements[0].node, "n2");
}

#[test]
fn memory_and_cores_compare_the_same_way() {
    // Exactly full is a fit for both (Zoe used `<` for memory, `<=` for cores).
    let mut w = World::new(&[("n1", 2, 1024, &[])]);
    w.submit(zapp(&[("a", 1, 1, 2000, 1024, &[])], 0));
    let (plan, _) = w.pass();
    assert_eq!(plan.placements.len(), 1);
}

#[test]
fn literal_stop_rule_stalls_behind_memoryless_work_essential_fits_does_not() {
    for (rule, admitted) in [(StopRule::Literal, 0), (StopRule::EssentialFits, 2)] {
        let mut w = World::new(&[("n1", 4, 4096, &[])]);
        w.cfg.stop_rule = rule;
        w.submit(zapp(&[("nomem", 1, 1, 1000, 0, &[])], 0));
        w.submit(zapp(&[("b", 1, 1, 1000, 64, &[])], 0));
        let (plan, _) = w.pass();
        assert_eq!(plan.starting.len(), admitted, "{rule:?}");
    }
    // Where memory does drop, the literal rule admits in order and stops at
    // the first execution that does not fit, with no backfilling past it.
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    w.cfg.stop_rule = StopRule::Literal;
    let a = w.submit(zapp(&[("a", 1, 1, 3000, 64, &[])], 0));
    w.submit(zapp(&[("b", 1, 1, 3000, 64, &[])], 0));
    w.submit(zapp(&[("c", 1, 1, 1000, 64, &[])], 0));
    let (plan, waiting) = w.pass();
    assert_eq!(plan.starting, vec![a]);
    assert_eq!(waiting.len(), 2);
}

#[test]
fn idle_cores_are_shared_among_services_except_gpu_ones() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    w.cfg.core_sharing = true;
    let mut capped = zapp(&[("capped", 1, 1, 500, 64, &[])], 0);
    capped.services[0].resources.cores.max = Some(Millicores(1000));
    w.submit(zapp(&[("a", 1, 1, 1000, 64, &[])], 0));
    w.submit(zapp(&[("g", 1, 1, 1000, 64, &["gpu"])], 0));
    w.st.nodes.get_mut("n1").unwrap().labels.insert("gpu".into());
    w.submit(capped);
    let plan = w.run_pass();
    // Reserved 2.5 of 4 cores: 1.5 idle, 0.5 each for three services.
    let cores: Vec<u32> = plan.placements.iter().map(|p| p.cores.0).collect();
    assert_eq!(cores, vec![1500, 1000, 1000], "a: 1+0.5; gpu: its min; capped: 0.5+0.5 ≤ max 1");
    // The next pass has nothing new to say.
    let (plan, _) = w.pass();
    assert!(plan.core_shares.is_empty(), "{plan:?}");
}

#[test]
fn shares_are_recomputed_only_on_nodes_where_something_changed() {
    let mut w = World::new(&[("n1", 4, 4096, &[]), ("n2", 4, 4096, &[])]);
    w.cfg.core_sharing = true;
    let a = w.submit(zapp(&[("a", 2, 2, 1000, 64, &[])], 0));
    let plan = w.run_pass();
    // One instance on each node, each alone there: min 1 + all 3 idle cores.
    assert_eq!(plan.placements.iter().map(|p| p.cores.0).collect::<Vec<_>>(), vec![4000, 4000]);
    let recorded = |w: &World| w.st.core_shares.clone().into_iter().collect::<Vec<_>>();
    assert_eq!(recorded(&w), vec![("n1".into(), Millicores(3000)), ("n2".into(), Millicores(3000))]);
    // A second execution lands on n1 only: n2 is not looked at again.
    let b = w.submit(zapp(&[("b", 1, 1, 1000, 64, &[])], 0));
    let plan = w.run_pass();
    let b_node = plan.placements[0].node.clone();
    let other = if b_node == "n1" { "n2" } else { "n1" };
    assert_eq!(plan.node_shares, vec![(b_node.clone(), Millicores(1000))], "{plan:?}");
    let a_there = w.st.services_of(a).find(|s| s.node.as_deref() == Some(b_node.as_str())).unwrap().id;
    assert_eq!(plan.core_shares, vec![(a_there, Millicores(2000))], "a's instance on {b_node} gives up half");
    assert_eq!(w.st.core_shares[other], Millicores(3000));
    // b ends: its node's share grows back on the next pass, and only there.
    let sid = w.st.services_of(b).next().unwrap().id;
    let cid = w.st.services[&sid].container_id.clone().unwrap();
    w.st.apply(&Command::ServiceExited {
        id: sid,
        container_id: cid,
        exit_code: Some(0),
        oom_killed: false,
        reason: "done".into(),
        time: w.now,
    })
    .unwrap();
    let (plan, _) = w.pass();
    assert_eq!(plan.node_shares, vec![(b_node, Millicores(3000))], "{plan:?}");
    assert_eq!(plan.core_shares, vec![(a_there, Millicores(4000))]);
    w.st.apply(&Command::ApplyPlan(plan)).unwrap();
    let (plan, _) = w.pass();
    assert!(plan.is_empty(), "nothing changed since: {plan:?}");
}

#[test]
fn elastic_restarts_wait_for_their_backoff() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    let a = w.submit(zapp(&[("a", 1, 2, 1000, 64, &[])], 0));
    w.run_pass();
    let s = w.st.services_of(a).find(|s| !s.essential).unwrap().clone();
    w.st.apply(&Command::ServiceExited {
        id: s.id,
        container_id: s.container_id.clone().unwrap(),
        exit_code: Some(1),
        oom_killed: false,
        reason: "x".into(),
        time: w.now,
    })
    .unwrap();
    let (plan, _) = w.pass();
    assert!(plan.placements.is_empty(), "within the first backoff (1 s)");
    w.now += 1_000;
    let plan = w.run_pass();
    assert_eq!(plan.placements.len(), 1);
    let s = &w.st.services[&s.id];
    assert_eq!((s.restart_count, s.status), (1, ServiceStatus::Active));
}

#[test]
fn queued_executions_wait_for_their_retry_time() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    let a = w.submit(zapp(&[("a", 1, 1, 1000, 64, &[])], 0));
    w.st.executions.get_mut(&a).unwrap().not_before = Some(w.now + 5_000);
    assert!(w.pass().0.is_empty());
    w.now += 5_000;
    assert_eq!(w.pass().0.starting, vec![a]);
}

#[test]
fn statistics_queues_follow_the_policy_order_of_the_passes() {
    // One 2-core node: `run` (1 essential + 1 elastic of 1 core each) gets
    // its essential instance; then sizes 30, 10, 20 queue behind it.
    let mut w = World::new(&[("n1", 2, 4096, &[])]);
    w.cfg.policy = Policy::Size;
    let run = w.submit(zapp(&[("r", 1, 3, 1000, 64, &[])], 0));
    w.run_pass();
    let ids: Vec<_> = [30, 10, 20].iter().map(|s| w.submit(zapp(&[("j", 1, 1, 2000, 64, &[])], *s))).collect();
    // The one waiting out a retry delay keeps its place in the order.
    w.st.executions.get_mut(&ids[2]).unwrap().not_before = Some(w.now + 60_000);
    let q = queues(&w.st, &w.cfg, w.now);
    assert_eq!(q.pending, vec![run, ids[1], ids[2], ids[0]], "running with elastic room to fill first (size 0)");
    assert!(q.running.is_empty() && q.termination.is_empty());
    // Once nothing of it waits any more, `run` moves to the running queue.
    w.st.services.values_mut().filter(|s| s.execution_id == run && s.status == ServiceStatus::Created).for_each(|s| {
        s.status = ServiceStatus::Active;
    });
    let q = queues(&w.st, &w.cfg, w.now);
    assert_eq!((q.pending, q.running), (vec![ids[1], ids[2], ids[0]], vec![run]));
    w.st.apply(&Command::TerminateExecution {
        id: ids[0],
        reason: "bye".into(),
        after: crate::state::AfterCleanup::Terminated,
        time: w.now,
    })
    .unwrap();
    let q = queues(&w.st, &w.cfg, w.now);
    assert_eq!(q.pending, vec![ids[1], ids[2]]);
}

#[test]
fn a_plan_applies_cleanly_to_the_state_it_was_computed_from() {
    let mut w = World::new(&[("n1", 2, 4096, &[]), ("n2", 2, 4096, &[])]);
    for _ in 0..3 {
        w.submit(zapp(&[("h", 1, 1, 500, 64, &[]), ("w", 1, 4, 500, 64, &[])], 0));
    }
    let plan = w.run_pass();
    // 4 cores of 500 mc = 8 instances: 6 essential, 2 elastic.
    assert_eq!(plan.placements.len(), 8);
    let reserved = w.st.reserved_by_node();
    assert!(reserved.values().all(|(c, _)| c.0 <= 2000), "{reserved:?}");
}

/// A group publishing `port`.
fn web(port: u16) -> ZApp {
    let mut a = zapp(&[("web", 1, 1, 100, 16, &[])], 0);
    a.services[0].ports = vec![zoe_common::zapp::Port {
        name: "web".into(),
        port_number: port,
        protocol: zoe_common::zapp::Protocol::Tcp,
        url_template: "http://{ip_port}/".into(),
        proxy: None,
    }];
    a
}

#[test]
fn host_network_services_on_the_same_port_never_share_a_node() {
    let mut w = World::new(&[("n1", 8, 4096, &[]), ("n2", 8, 4096, &[])]);
    let ids: Vec<_> = (0..3).map(|_| w.submit(web(8080))).collect();
    let plan = w.run_pass();
    let nodes: BTreeSet<_> = plan.placements.iter().map(|p| p.node.clone()).collect();
    assert_eq!(nodes.len(), 2, "one per node: {plan:?}");
    assert_eq!(plan.starting, ids[..2].to_vec());
    let s = w.st.services_of(ids[0]).next().unwrap();
    assert_eq!((s.ports[0].port_number, s.ports[0].host_port), (8080, 8080));
    // Another port fits anywhere.
    w.submit(web(9090));
    assert_eq!(w.pass().0.placements.len(), 1);
}

#[test]
fn bridge_networking_maps_ports_from_the_range_so_equal_container_ports_coexist() {
    let mut w = World::new(&[("n1", 8, 4096, &[])]);
    w.st.network.bridge = true;
    w.st.network.port_min = 30_000;
    w.st.network.port_max = 30_001;
    let a = w.submit(web(8080));
    let b = w.submit(web(8080));
    let c = w.submit(web(8080));
    let plan = w.run_pass();
    assert_eq!(plan.starting, vec![a, b], "the range holds two ports");
    let hp = |id| w.st.services_of(id).next().unwrap().ports[0].host_port;
    assert_eq!((hp(a), hp(b)), (30_000, 30_001));
    let (_, waiting) = w.pass();
    assert_eq!(waiting[0].execution, c);
    // A stale plan that would reuse a taken port is refused whole.
    let sid = w.st.services_of(c).next().unwrap().id;
    let stale = Plan {
        time: 1,
        starting: vec![c],
        placements: vec![Placement { service: sid, node: "n1".into(), cores: Millicores(100) }],
        ..Plan::default()
    };
    assert!(matches!(w.st.apply(&Command::ApplyPlan(stale)), Err(crate::state::StateError::Conflict(_))));
}

#[test]
fn nodes_get_stable_subnets_and_the_network_is_fixed_once_nodes_exist() {
    let mut w = World::new(&[("n1", 1, 64, &[]), ("n2", 1, 64, &[])]);
    assert_eq!(w.st.nodes["n1"].subnet.as_deref(), Some("10.88.0.0/24"));
    assert_eq!(w.st.nodes["n2"].subnet.as_deref(), Some("10.88.1.0/24"));
    let r = Registration::bare("n1", Capacity { cores: Millicores(1000), memory: 1 });
    w.st.apply(&Command::RegisterNode { registration: r, time: 99 }).unwrap();
    assert_eq!(w.st.nodes["n1"].subnet.as_deref(), Some("10.88.0.0/24"), "kept across re-registration");
    let net = crate::state::ClusterNetwork { cidr: "10.99.0.0/16".into(), ..Default::default() };
    assert!(w.st.apply(&Command::SetClusterNetwork { network: net.clone() }).is_err());
    let mut fresh = State::default();
    fresh.apply(&Command::SetClusterNetwork { network: net }).unwrap();
    assert_eq!(fresh.network.cidr, "10.99.0.0/16");
}

/// Elastic-only preemption on one node of 4 cores: A (SIZE 100, 1
/// essential + 3 elastic) fills it; B (2 essential cores) arrives. Who
/// may stop what: B only takes elastic instances of executions the policy
/// ranks after it, and never an essential one.
#[test]
fn preemption_stops_only_elastic_instances_of_outranked_executions() {
    // (policy, preemption on, A's essential count, B's size, victims expected)
    let cases: [(Policy, bool, u32, u64, usize); 6] = [
        (Policy::Size, true, 1, 10, 2),  // B smaller: two of A's elastic instances
        (Policy::Size, false, 1, 10, 0), // preemption off
        (Policy::Size, true, 1, 500, 0), // B larger: A outranks it
        (Policy::Fifo, true, 1, 10, 0),  // FIFO: A came first
        (Policy::Size, true, 4, 10, 0),  // A all essential: nothing to take
        (Policy::Size, true, 3, 10, 0),  // one elastic instance is all there is: not enough
    ];
    for (policy, preemption, a_essential, b_size, expected) in cases {
        let mut w = World::new(&[("n1", 4, 4096, &[])]);
        w.cfg.policy = policy;
        w.cfg.preemption = preemption;
        let a = w.submit(zapp(&[("a", a_essential, 4, 1000, 64, &[])], 100));
        w.run_pass();
        let b = w.submit(zapp(&[("b", 2, 2, 1000, 64, &[])], b_size));
        let (plan, waiting) = w.pass();
        let case = format!("{policy:?} preemption={preemption} A essential={a_essential} B size={b_size}");
        let victims = expected;
        assert_eq!(plan.preempt.len(), victims, "{case}");
        assert!(plan.starting.is_empty(), "B starts only once the victims are gone: {case}");
        assert_eq!(waiting[0].execution, b, "{case}");
        for sid in &plan.preempt {
            let v = &w.st.services[sid];
            assert!(!v.essential && v.execution_id == a, "{case}");
        }
        if victims == 0 {
            continue;
        }
        w.st.apply(&Command::ApplyPlan(plan)).unwrap();
        // While the victims stop, no new ones are picked.
        let (again, waiting) = w.pass();
        assert!(again.preempt.is_empty() && again.starting.is_empty(), "{case}: {again:?}");
        assert!(waiting[0].reason.contains("stopping"), "{case}: {waiting:?}");
        assert_eq!(w.stop_terminating(), 2);
        let plan = w.run_pass();
        assert_eq!(plan.starting, vec![b], "{case}");
        // A keeps running on what it has left, and grows back when B ends.
        assert_eq!(w.st.executions[&a].status, crate::state::ExecutionStatus::Running);
        w.finish(b);
        w.now += 10_000;
        let plan = w.run_pass();
        assert_eq!(plan.placements.len(), 2, "{case}: the victims grow back");
    }
}

#[test]
fn a_plan_that_preempts_an_essential_instance_is_refused() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    let a = w.submit(zapp(&[("a", 1, 4, 1000, 64, &[])], 0));
    w.run_pass();
    let essential = w.st.services_of(a).find(|s| s.essential).unwrap().id;
    let elastic = w.st.services_of(a).find(|s| !s.essential).unwrap().id;
    let plan = Plan { time: w.now, preempt: vec![elastic, essential], ..Plan::default() };
    let err = w.st.apply(&Command::ApplyPlan(plan)).unwrap_err();
    assert!(err.to_string().contains("which is essential"), "{err}");
    assert!(w.st.services_of(a).all(|s| s.status == ServiceStatus::Active), "refused whole");
    w.st.apply(&Command::ApplyPlan(Plan { time: w.now, preempt: vec![elastic], ..Plan::default() })).unwrap();
    assert_eq!(w.st.services[&elastic].status, ServiceStatus::Terminating);
}

/// Fair share: "heavy" has used 2 cores for 100 s, "light" nothing; one
/// slot frees; light's later submission goes first. Usage decays: after
/// many half-lives both are even again and arrival order decides.
#[test]
fn fair_share_serves_the_user_who_used_least_lately() {
    // (time passed after heavy's work, winner: true = light)
    for (later_ms, light_first) in [(0u64, true), (20 * 3_600_000, false)] {
        let mut w = World::new(&[("n1", 2, 4096, &[])]);
        w.cfg.policy = Policy::FairShare;
        w.cfg.fair_share_half_life_s = 3600;
        let first = w.submit_as("heavy", zapp(&[("h", 2, 2, 1000, 64, &[])], 0));
        w.run_pass();
        w.now += 100_000;
        w.finish(first);
        assert!(w.st.usage["heavy"].buckets.values().sum::<u64>() >= 2 * 100 * 1000, "{:?}", w.st.usage);
        w.now += later_ms;
        let heavy = w.submit_as("heavy", zapp(&[("h", 2, 2, 1000, 64, &[])], 0));
        let light = w.submit_as("light", zapp(&[("l", 2, 2, 1000, 64, &[])], 0));
        let (plan, _) = w.pass();
        assert_eq!(plan.starting, vec![if light_first { light } else { heavy }], "after {later_ms} ms");
    }
}

#[test]
fn running_containers_count_toward_fair_share_too() {
    let mut w = World::new(&[("n1", 3, 4096, &[])]);
    w.cfg.policy = Policy::FairShare;
    w.submit_as("heavy", zapp(&[("h", 2, 2, 1000, 64, &[])], 0));
    w.run_pass();
    w.now += 60_000;
    let heavy = w.submit_as("heavy", zapp(&[("h", 1, 1, 1000, 64, &[])], 0));
    let light = w.submit_as("light", zapp(&[("l", 1, 1, 1000, 64, &[])], 0));
    let (plan, _) = w.pass();
    assert_eq!(plan.starting, vec![light]);
    assert!(queues(&w.st, &w.cfg, w.now).pending.starts_with(&[light, heavy]));
}

/// Reservation with backfill on one node of 5 cores. R (size 400
/// core-seconds, 2 cores at once) runs and is expected to end 200 s after
/// it started. Big needs 4 cores and has waited past the threshold: it
/// holds the reservation, with shadow time R's end, when 1 core will be
/// left beside it. Of the small 1-core executions, those done within the
/// shadow time are backfilled, then one more in the core big leaves free;
/// the last is held back. Without preemption nothing grows meanwhile (the
/// node is full here anyway).
#[test]
fn a_blocked_overdue_execution_holds_a_reservation_and_only_short_work_backfills() {
    let mut w = World::new(&[("n1", 5, 4096, &[])]);
    w.cfg.policy = Policy::Size;
    w.cfg.reservation_after_s = Some(60);
    w.submit(zapp(&[("r", 2, 2, 1000, 64, &[])], 400));
    w.run_pass();
    let big = w.submit(zapp(&[("big", 4, 4, 1000, 64, &[])], 4_000));
    w.now += 61_000;
    let long = w.submit(zapp(&[("long", 1, 1, 1000, 64, &[])], 500));
    let late = w.submit(zapp(&[("late", 1, 1, 1000, 64, &[])], 1_000));
    let short = w.submit(zapp(&[("short", 1, 1, 1000, 64, &[])], 50));
    let elastic = w.submit(zapp(&[("e", 1, 2, 1000, 64, &[])], 20));
    let (plan, waiting) = w.pass();
    assert_eq!(plan.starting, vec![elastic, short, long], "two end before R does, one fits beside big");
    assert_eq!(plan.placements.len(), 3, "no elastic growth: {plan:?}");
    let why = |id| waiting.iter().find(|x| x.execution == id).map(|x| x.reason.clone()).unwrap_or_default();
    assert!(why(late).contains(&format!("reservation for execution {big}")), "{waiting:?}");
    assert!(why(big).contains("waiting for room"), "{waiting:?}");
    // Without the reservation the same queue runs by size, big waits on.
    w.cfg.reservation_after_s = None;
    let (plan, _) = w.pass();
    assert_eq!(plan.starting, vec![elastic, short, long]);
}

#[test]
fn a_reservation_holder_may_preempt_anyones_elastic_instances() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    w.cfg.policy = Policy::Size;
    w.cfg.preemption = true;
    w.cfg.reservation_after_s = Some(60);
    // A is small and elastic; big is larger, so it outranks nothing, but
    // once overdue it holds the reservation and may take A's elastic part.
    let a = w.submit(zapp(&[("a", 1, 4, 1000, 64, &[])], 10));
    w.run_pass();
    let big = w.submit(zapp(&[("big", 3, 3, 1000, 64, &[])], 4_000));
    let (plan, _) = w.pass();
    assert!(plan.preempt.is_empty(), "not overdue yet");
    w.now += 61_000;
    let (plan, _) = w.pass();
    assert_eq!(plan.preempt.len(), 3);
    w.st.apply(&Command::ApplyPlan(plan)).unwrap();
    w.stop_terminating();
    let plan = w.run_pass();
    assert_eq!(plan.starting, vec![big]);
    assert!(w.st.services_of(a).filter(|s| s.essential).all(|s| s.status == ServiceStatus::Active));
}

/// Elastic-greedy: the head gets its elastic instances before the next
/// execution's essential part, and a blocked head stops the pass.
#[test]
fn elastic_greedy_serves_the_head_whole_and_blocks_behind_it() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    w.cfg.stop_rule = StopRule::Greedy;
    let a = w.submit(zapp(&[("a", 1, 4, 1000, 64, &[])], 0));
    let b = w.submit(zapp(&[("b", 1, 1, 1000, 64, &[])], 0));
    let (plan, waiting) = w.pass();
    assert_eq!(plan.starting, vec![a], "A's elastic part took the node first");
    assert_eq!(plan.placements.len(), 4);
    assert_eq!(waiting.iter().map(|x| x.execution).collect::<Vec<_>>(), vec![b]);
    // Flexible, for contrast: B's essential part beats A's elastic part.
    w.cfg.stop_rule = StopRule::EssentialFits;
    let (plan, _) = w.pass();
    assert_eq!(plan.starting, vec![a, b]);
}

/// `zoe exec plan`: on one node of 4 cores with R (2 cores, size 400
/// core-seconds: 200 s) running, a 2-core ZApp fits now on n1; a 4-core one
/// waits, first in the queue, and would start when R ends, 200 s after R
/// started; a 8-core one never fits. Nothing is submitted for real.
#[test]
fn a_dry_run_says_whether_where_and_when() {
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    w.submit(zapp(&[("r", 2, 2, 1000, 64, &[])], 400));
    w.run_pass();
    let started = w.now;
    w.now += 50_000;
    let before = w.st.executions.len();
    let fits = dry_run(&w.st, &w.platform, &w.cfg, zapp(&[("j", 2, 2, 1000, 64, &[])], 0), "u", w.now).unwrap();
    assert!(fits.fits_now && fits.start_in_s == Some(0.0));
    assert_eq!(fits.placements, vec![("j0".to_string(), "n1".to_string()), ("j1".to_string(), "n1".to_string())]);
    let waits = dry_run(&w.st, &w.platform, &w.cfg, zapp(&[("big", 4, 4, 1000, 64, &[])], 0), "u", w.now).unwrap();
    assert!(!waits.fits_now && !waits.never_fits);
    assert_eq!((waits.queue_position, waits.queue_length), (1, 1));
    assert!(waits.reason.as_deref().unwrap().contains("waiting for room"), "{waits:?}");
    assert_eq!(waits.start_in_s, Some((started + 200_000 - w.now) as f64 / 1000.0), "{waits:?}");
    let never = dry_run(&w.st, &w.platform, &w.cfg, zapp(&[("huge", 1, 1, 8000, 64, &[])], 0), "u", w.now).unwrap();
    assert!(never.never_fits && never.start_in_s.is_none());
    assert_eq!(w.st.executions.len(), before, "the state is untouched");
    // Without size hints the end of what runs is unknown: no estimate.
    let mut w = World::new(&[("n1", 4, 4096, &[])]);
    w.submit(zapp(&[("r", 2, 2, 1000, 64, &[])], 0));
    w.run_pass();
    let unknown = dry_run(&w.st, &w.platform, &w.cfg, zapp(&[("big", 4, 4, 1000, 64, &[])], 0), "u", w.now).unwrap();
    assert!(unknown.start_in_s.is_none() && unknown.estimate.contains("without a size hint"), "{unknown:?}");
}
