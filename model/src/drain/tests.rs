//! Drain and node loss, step by step, with the scheduler placing what moves
//! and a simulated agent answering.

use super::*;
use crate::scheduler::{LiveNode, SchedulerConfig, schedule};
use crate::state::{Applied, Capacity, Drain, Registration};
use zoe_common::resources::Millicores;
use zoe_common::zapp::parse;

struct World {
    st: State,
    platform: Platform,
    cfg: DrainConfig,
    now: Millis,
}

fn app(text: &str, will_end: bool) -> zoe_common::zapp::ZApp {
    let mut a = parse(text).unwrap().0;
    a.will_end = will_end;
    a
}

/// One essential head and two elastic workers: (head, worker ×3 with 1 essential).
const LONG: &str = r#"{"name":"long-running","version":3,"will_end":false,"size":1,"services":[
 {"name":"head","image":"zoe.local/busybox:1","monitor":true,"essential_count":1,"total_count":1,"startup_order":0,
  "resources":{"memory":{"min":1048576,"max":null},"cores":{"min":0.5,"max":null}},"environment":[],"volumes":[],"command":null,"ports":[]},
 {"name":"elastic","image":"zoe.local/busybox:1","monitor":false,"essential_count":1,"total_count":3,"startup_order":1,
  "resources":{"memory":{"min":1048576,"max":null},"cores":{"min":0.5,"max":null}},"environment":[],"volumes":[],"command":null,"ports":[]}]}"#;
const BATCH: &str = include_str!("../../../examples/zapps/hello-batch.json");

impl World {
    fn new() -> World {
        let mut w =
            World { st: State::default(), platform: Platform::default(), cfg: DrainConfig::default(), now: 1_000 };
        for name in ["a", "b"] {
            let registration =
                Registration::bare(name, Capacity { cores: Millicores::from_whole_cores(4), memory: 1 << 30 });
            w.st.apply(&Command::RegisterNode { registration, time: w.now }).unwrap();
            w.platform.nodes.insert(name.into(), LiveNode { connected: true, ..LiveNode::default() });
        }
        w
    }

    fn ok(&mut self, c: Command) {
        self.st.apply(&c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    }

    fn submit(&mut self, a: zoe_common::zapp::ZApp) -> ExecutionId {
        self.now += 10;
        let Ok(Applied::Created(id)) = self.st.apply(&Command::SubmitExecution {
            idempotency_key: None,
            name: "e".into(),
            owner: "u".into(),
            description: a,
            size: 0.0,
            time: self.now,
        }) else {
            panic!()
        };
        self.ok(Command::QueueExecution { id, time: self.now });
        id
    }

    /// Submits `apps` and starts them all on node a (b is ineligible while
    /// they are placed).
    fn start_on_a<const N: usize>(&mut self, apps: [zoe_common::zapp::ZApp; N]) -> [ExecutionId; N] {
        self.ok(Command::SetNodeEligibility { name: "b".into(), eligible: false });
        let ids = apps.map(|a| self.submit(a));
        self.schedule_and_start();
        self.ok(Command::SetNodeEligibility { name: "b".into(), eligible: true });
        ids
    }

    /// Schedules, and the agents start whatever was placed.
    fn schedule_and_start(&mut self) {
        self.now += 10;
        let cfg = SchedulerConfig { core_sharing: false, ..SchedulerConfig::default() };
        let plan = schedule(&self.st, &self.platform, &cfg, self.now);
        if plan.is_empty() {
            return;
        }
        self.ok(Command::ApplyPlan(plan.clone()));
        for p in plan.placements {
            let cid = self.st.services[&p.service].container_id.clone().unwrap();
            self.ok(Command::ServiceStarted {
                id: p.service,
                container_id: cid,
                ip_address: None,
                ports: vec![],
                time: self.now,
            });
        }
        self.recount();
    }

    /// The agents stop whatever is terminating.
    fn agents_stop(&mut self) {
        crate::state::check::stop_terminating(&mut self.st, self.now);
        self.recount();
    }

    /// What agents report: containers per node.
    fn recount(&mut self) {
        for (name, live) in self.platform.nodes.iter_mut() {
            live.container_count = self.st.services.values().filter(|s| holds(s, name)).count() as u32;
            live.zoe_containers = live.container_count;
        }
    }

    fn drain_step(&mut self) -> Vec<Command> {
        self.now += 10;
        let cmds = actions(&self.st, &self.platform, &self.cfg, self.now);
        for c in &cmds {
            self.ok(c.clone());
        }
        cmds
    }

    fn nodes_of(&self, id: ExecutionId) -> Vec<(String, String)> {
        self.st
            .services_of(id)
            .filter(|s| s.status == ServiceStatus::Active)
            .map(|s| (s.name.clone(), s.node.clone().unwrap()))
            .collect()
    }

    fn start_drain(&mut self, deadline_ms: Option<u64>, force: bool) {
        let drain = Drain {
            requested_by: "admin".into(),
            requested_at: self.now,
            deadline: deadline_ms.map(|d| self.now + d),
            force,
            moved: vec![],
        };
        self.ok(Command::SetNodeDrain { name: "a".into(), drain: Some(drain) });
    }
}

/// Everything on node a: b is made ineligible while placing, then eligible.
fn loaded() -> (World, ExecutionId, ExecutionId) {
    let mut w = World::new();
    let [lr, batch] = w.start_on_a([app(LONG, false), app(BATCH, true)]);
    assert!(w.nodes_of(lr).iter().chain(w.nodes_of(batch).iter()).all(|(_, n)| n == "a"));
    assert_eq!(w.nodes_of(lr).len(), 4);
    (w, lr, batch)
}

#[test]
fn drain_moves_long_running_work_waits_for_batch_and_completes_on_the_agents_word() {
    let (mut w, lr, batch) = loaded();
    w.start_drain(Some(3_600_000), false);
    let cmds = w.drain_step();
    // All of the long-running execution moves (elastic and its one essential); the batch stays.
    let Command::MoveServices { ids, .. } = &cmds[0] else { panic!("{cmds:?}") };
    assert_eq!(ids.len(), 4);
    assert_eq!(w.st.executions[&lr].status, ExecutionStatus::Running, "moving does not end it");
    w.agents_stop();
    w.schedule_and_start();
    assert!(w.nodes_of(lr).iter().all(|(_, n)| n == "b"), "{:?}", w.nodes_of(lr));
    let head = w.st.services_of(lr).find(|s| s.name == "head0").unwrap();
    assert_eq!(head.restart_count, 1);
    assert!(!head.moving);
    // The batch job is still on a: nothing more to do until it finishes.
    assert!(w.drain_step().is_empty());
    let p = progress(&w.st, &w.platform, "a", w.now).unwrap();
    assert_eq!(p.waiting_to_finish, vec![batch]);
    // What moved is on record, with where each instance runs now.
    assert_eq!(p.moved.len(), 4);
    assert!(p.moved.iter().all(|m| m.node.as_deref() == Some("b") && m.status == ServiceStatus::Active), "{p:?}");
    assert!(p.moving.is_empty());
    // It finishes; the state is empty but the agent still reports a container.
    let s = w.st.services_of(batch).next().unwrap().clone();
    w.ok(Command::ServiceExited {
        id: s.id,
        container_id: s.container_id.unwrap(),
        exit_code: Some(0),
        oom_killed: false,
        reason: "exited".into(),
        time: w.now,
    });
    assert_eq!(w.st.executions[&batch].status, ExecutionStatus::Terminated);
    w.platform.nodes.get_mut("a").unwrap().container_count = 1;
    assert!(w.drain_step().is_empty(), "not complete until the agent says so");
    // Nothing runs, but the exited container is not removed yet.
    let live = w.platform.nodes.get_mut("a").unwrap();
    (live.container_count, live.zoe_containers) = (0, 1);
    assert!(w.drain_step().is_empty(), "not complete while the agent holds a zoe container");
    w.recount();
    let cmds = w.drain_step();
    assert!(matches!(cmds.as_slice(), [Command::CompleteDrain { .. }]), "{cmds:?}");
    let a = &w.st.nodes["a"];
    assert!(a.drain.is_none() && !a.eligible && a.drain_completed_at.is_some());
    assert_eq!(a.last_drain.as_ref().map(|d| d.moved.len()), Some(4), "the completed drain is kept for the record");
}

#[test]
fn at_the_deadline_batch_work_is_terminated_with_a_reason() {
    let (mut w, _lr, batch) = loaded();
    w.start_drain(Some(50), false);
    w.drain_step();
    w.agents_stop();
    w.now += 100;
    w.drain_step();
    assert_eq!(w.st.executions[&batch].status, ExecutionStatus::CleaningUp);
    w.agents_stop();
    let e = &w.st.executions[&batch];
    assert_eq!(e.status, ExecutionStatus::Terminated);
    assert_eq!(e.error_message.as_deref(), Some("node drain deadline on a"));
}

#[test]
fn long_running_executions_move_one_at_a_time() {
    let mut w = World::new();
    let [one, two] = w.start_on_a([app(LONG, false), app(LONG, false)]);
    w.start_drain(None, false);
    w.drain_step();
    let moving = |w: &World, id| w.st.services_of(id).filter(|s| s.essential && s.moving).count();
    assert_eq!((moving(&w, one), moving(&w, two)), (2, 0), "only the first execution's essential instances move");
    // Nothing new while the first is still moving.
    let cmds = w.drain_step();
    assert!(cmds.iter().all(|c| !matches!(c, Command::MoveServices { ids, .. } if ids.iter().any(|i| w.st.services[i].execution_id == two && w.st.services[i].essential))));
    w.agents_stop();
    w.schedule_and_start();
    w.drain_step();
    assert_eq!(moving(&w, two), 2, "then the second");
}

#[test]
fn force_stops_everything_now() {
    let (mut w, lr, batch) = loaded();
    w.start_drain(None, true);
    w.drain_step();
    w.agents_stop();
    assert_eq!(w.st.executions[&batch].status, ExecutionStatus::Terminated);
    assert_eq!(w.st.executions[&batch].error_message.as_deref(), Some("node drain (forced) on a"));
    assert_eq!(w.st.executions[&lr].status, ExecutionStatus::Running);
    w.schedule_and_start();
    assert!(w.nodes_of(lr).iter().all(|(_, n)| n == "b"));
}

#[test]
fn cancelling_a_drain_makes_the_node_eligible_and_moves_nothing_more() {
    let (mut w, _lr, _batch) = loaded();
    w.start_drain(None, false);
    w.ok(Command::SetNodeDrain { name: "a".into(), drain: None });
    assert!(w.st.nodes["a"].eligible);
    assert!(w.drain_step().is_empty());
    w.start_drain(None, false);
    w.ok(Command::CancelDrain { name: "a".into(), keep_ineligible: true });
    assert!(!w.st.nodes["a"].eligible);
    assert!(w.drain_step().is_empty());
}

#[test]
fn a_lost_node_gets_a_grace_then_its_work_is_replaced_per_policy() {
    for requeue in [false, true] {
        let (mut w, lr, batch) = loaded();
        w.cfg.requeue_lost_batch = requeue;
        w.ok(Command::SetNodeStatus { name: "a".into(), status: NodeStatus::Down, time: w.now });
        w.platform.nodes.get_mut("a").unwrap().connected = false;
        assert!(w.drain_step().is_empty(), "within the grace nothing happens");
        w.now += w.cfg.lost_after_ms;
        let cmds = w.drain_step();
        assert!(matches!(cmds.as_slice(), [Command::NodeLost { .. }]), "{cmds:?}");
        let e = &w.st.executions[&batch];
        if requeue {
            assert_eq!(e.status, ExecutionStatus::Queued);
        } else {
            assert_eq!(e.status, ExecutionStatus::Error);
            assert!(e.error_message.as_deref().unwrap().contains("node a lost"));
        }
        assert_eq!(w.st.executions[&lr].status, ExecutionStatus::Running);
        w.now += 60_000; // past elastic restart backoff
        w.schedule_and_start();
        assert_eq!(w.nodes_of(lr).len(), 4);
        assert!(w.nodes_of(lr).iter().all(|(_, n)| n == "b"));
        assert!(w.drain_step().is_empty(), "handled once");
    }
}

/// The ZApp's `on_eviction` decides a batch execution's fate on node loss
/// and at a drain deadline; without it, the cluster's default does.
#[test]
fn batch_work_follows_its_zapps_eviction_policy() {
    use zoe_common::zapp::OnEviction::{End, Requeue};
    enum Cause {
        Lost,
        Deadline,
    }
    // (cause, ZApp policy, cluster requeue_lost_batch, status, reason starts with)
    let table = [
        (Cause::Lost, None, false, ExecutionStatus::Error, "node a lost"),
        (Cause::Lost, None, true, ExecutionStatus::Queued, "node a lost"),
        (Cause::Lost, Some(End), true, ExecutionStatus::Error, "node a lost"),
        (Cause::Lost, Some(Requeue), false, ExecutionStatus::Queued, "node a lost"),
        (Cause::Deadline, None, false, ExecutionStatus::Terminated, "node drain deadline on a"),
        (Cause::Deadline, None, true, ExecutionStatus::Terminated, "node drain deadline on a"),
        (Cause::Deadline, Some(End), false, ExecutionStatus::Terminated, "node drain deadline on a"),
        (Cause::Deadline, Some(Requeue), false, ExecutionStatus::Queued, "node drain deadline on a"),
    ];
    for (i, (cause, policy, cluster, status, reason)) in table.into_iter().enumerate() {
        let mut w = World::new();
        w.cfg.requeue_lost_batch = cluster;
        let mut a = app(BATCH, true);
        a.on_eviction = policy;
        let [batch] = w.start_on_a([a]);
        match cause {
            Cause::Lost => {
                w.ok(Command::SetNodeStatus { name: "a".into(), status: NodeStatus::Down, time: w.now });
                w.platform.nodes.get_mut("a").unwrap().connected = false;
                w.now += w.cfg.lost_after_ms;
                w.drain_step();
            }
            Cause::Deadline => {
                w.start_drain(Some(50), false);
                w.now += 100;
                w.drain_step();
                w.agents_stop();
            }
        }
        let e = &w.st.executions[&batch];
        assert_eq!(e.status, status, "row {i}");
        assert!(e.error_message.as_deref().unwrap_or("").starts_with(reason), "row {i}: {:?}", e.error_message);
        if status == ExecutionStatus::Queued {
            // It starts over on the other node.
            w.schedule_and_start();
            assert_eq!(w.nodes_of(batch).iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(), ["b"], "row {i}");
        }
    }
}

/// A lost node comes back with its old containers still running: the ones
/// zoe replaced elsewhere (or ended) are stopped at once, not after the
/// orphan grace, and re-registering makes the node ready again.
#[test]
fn a_lost_node_coming_back_stops_what_was_replaced() {
    use crate::reconcile::reconcile;
    use zoe_common::proto::{ContainerInfo, ContainerState};
    let (mut w, lr, batch) = loaded();
    let old: Vec<ContainerInfo> =
        w.st.services
            .values()
            .filter(|s| holds(s, "a"))
            .map(|s| ContainerInfo {
                container_id: s.container_id.clone().unwrap(),
                service_id: Some(s.id),
                state: ContainerState::Running,
                cores_in_use_millis: 0,
                memory_in_use: 0,
                core_limit_millis: None,
                memory_limit: None,
            })
            .collect();
    assert_eq!(old.len(), 5);
    w.ok(Command::SetNodeStatus { name: "a".into(), status: NodeStatus::Down, time: w.now });
    w.platform.nodes.get_mut("a").unwrap().connected = false;
    w.now += w.cfg.lost_after_ms;
    w.drain_step();
    w.now += 60_000;
    w.schedule_and_start();
    assert!(w.nodes_of(lr).iter().all(|(_, n)| n == "b"));
    assert_eq!(w.st.executions[&batch].status, ExecutionStatus::Error);
    // The agent re-registers: ready again, and every old container goes now.
    let registration = Registration::bare("a", Capacity { cores: Millicores::from_whole_cores(4), memory: 1 << 30 });
    w.ok(Command::RegisterNode { registration, time: w.now });
    assert_eq!(w.st.nodes["a"].status, NodeStatus::Ready);
    let acts = reconcile(&w.st, "a", &old, true, w.now);
    let mut all: Vec<String> = old.iter().map(|c| c.container_id.clone()).collect();
    all.sort();
    assert_eq!(acts.stop_now, all);
    assert!(acts.running_orphans.is_empty() && acts.commands.is_empty(), "{acts:?}");
    // A container zoe knows nothing about still gets the grace.
    let mut stranger = old[0].clone();
    stranger.container_id = "made-by-hand".into();
    stranger.service_id = None;
    assert_eq!(reconcile(&w.st, "a", &[stranger], false, w.now).running_orphans, ["made-by-hand"]);
}
