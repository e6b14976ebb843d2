//! The leader's decisions, pass by pass, on a state built with commands and
//! a platform written by hand: no Raft, no agents, time passed in.

use super::*;
use crate::scheduler::LiveNode;
use crate::state::{Applied, Capacity, ClusterNetwork, Registration};
use std::sync::Arc;
use zoe_common::proto::{ContainerInfo, ContainerState};

const BATCH: &str = include_str!("../../../examples/zapps/hello-batch.json");

struct World {
    st: State,
    platform: Platform,
    mem: Memory,
    cfg: LeaderConfig,
    live: Liveness,
    now: Millis,
}

fn container(cid: &str, service: Option<ServiceId>, running: bool) -> ContainerInfo {
    ContainerInfo {
        container_id: cid.into(),
        service_id: service,
        state: if running {
            ContainerState::Running
        } else {
            ContainerState::Exited { exit_code: Some(0), oom_killed: false }
        },
        cores_in_use_millis: 0,
        memory_in_use: 0,
        core_limit_millis: None,
        memory_limit: None,
    }
}

impl World {
    fn new(bridge: bool) -> World {
        let live = Liveness { down_after_ms: 20_000, failover_grace_ms: 30_000, orphan_grace_ms: 60_000 };
        let mut w = World {
            st: State::default(),
            platform: Platform::default(),
            mem: Memory::new(1, 1_000),
            cfg: LeaderConfig::default(),
            live,
            now: 1_000,
        };
        if bridge {
            let network = ClusterNetwork { bridge: true, ..ClusterNetwork::default() };
            w.ok(Command::SetClusterNetwork { network });
        }
        for name in ["n1", "n2"] {
            let capacity = Capacity { cores: Millicores::from_whole_cores(4), memory: 1 << 30 };
            let registration = Registration {
                addresses: vec![format!("192.0.2.{}", name.len())],
                ..Registration::bare(name, capacity)
            };
            w.ok(Command::RegisterNode { registration, time: w.now });
            w.connect(name, 1, vec![]);
            // Reconciled already, unless a test says otherwise.
            w.mem.sessions.insert(name.into(), 1);
        }
        w
    }

    fn connect(&mut self, node: &str, session: u64, registered: Vec<ContainerInfo>) {
        let registered = Arc::new(registered);
        let l = LiveNode { connected: true, session, inventory: registered.clone(), registered, ..LiveNode::default() };
        self.platform.nodes.insert(node.into(), l);
        self.platform.seen.insert(node.into(), self.now);
    }

    fn ok(&mut self, c: Command) -> Applied {
        self.st.apply(&c).unwrap_or_else(|e| panic!("{c:?}: {e}"))
    }

    fn submit(&mut self) -> ExecutionId {
        let Applied::Created(id) = self.ok(Command::SubmitExecution {
            idempotency_key: None,
            name: "e".into(),
            owner: "u".into(),
            description: zoe_common::zapp::parse(BATCH).unwrap().0,
            size: 0.0,
            time: self.now,
        }) else {
            panic!()
        };
        id
    }

    /// One pass at `now + dt`, its batch committed like the leader does.
    fn pass(&mut self, dt: Millis) -> (Pass, Vec<Command>) {
        self.now += dt;
        let mut platform = self.platform.clone();
        let mut p = decide(&self.st, &mut platform, &mut self.mem, &self.cfg, &self.live, self.now);
        let mut cmds = Vec::new();
        let placed: Vec<ServiceId> = p.plan.placements.iter().map(|x| x.service).collect();
        if let Some(batch) = p.batch() {
            let Command::Batch(list) = &batch else { panic!() };
            cmds = list.clone();
            let Applied::Batch(results) = self.ok(batch) else { panic!() };
            assert!(results.iter().all(|r| r.is_ok()), "refused in the batch: {results:?}");
        }
        // The leader starts what the committed plan placed.
        for (_, _, spec) in starts(&self.st, &placed, &self.cfg).into_iter().flatten() {
            self.mem.spawning.insert(spec.container_id);
        }
        self.mem.sessions.extend(p.registered.iter().cloned());
        (p, cmds)
    }

    /// The execution's one service, started on its node as placed.
    fn started(&mut self, id: ExecutionId) -> (ServiceId, String, String) {
        let s = self.st.services_of(id).next().unwrap();
        let (sid, node, cid) = (s.id, s.node.clone().unwrap(), s.container_id.clone().unwrap());
        self.ok(Command::ServiceStarted {
            id: sid,
            container_id: cid.clone(),
            ip_address: None,
            ports: vec![],
            time: self.now,
        });
        (sid, node, cid)
    }
}

fn kinds(cmds: &[Command]) -> Vec<&'static str> {
    cmds.iter()
        .map(|c| match c {
            Command::ApplyPlan(_) => "plan",
            Command::QueueExecution { .. } => "queue",
            Command::ServiceExited { .. } => "exited",
            Command::SetNodeStatus { .. } => "down",
            Command::TerminateExecution { .. } => "terminate",
            _ => "other",
        })
        .collect()
}

#[test]
fn one_pass_is_one_batch_with_the_plan_first() {
    let mut w = World::new(false);
    let a = w.submit();
    let (_, cmds) = w.pass(10);
    assert_eq!(kinds(&cmds), ["queue"]);
    let b = w.submit();
    let (_, cmds) = w.pass(10);
    // `a` is placed by the plan computed before `b` is queued, in the same write.
    assert_eq!(kinds(&cmds), ["plan", "queue"]);
    assert_eq!(w.st.executions[&a].status, ExecutionStatus::Starting);
    assert_eq!(w.st.executions[&b].status, ExecutionStatus::Queued);
    let (p, cmds) = w.pass(10);
    assert_eq!(kinds(&cmds), ["plan"]);
    // Placed services are started after the commit (pass::starts), not asked again.
    assert!(p.respawn.is_empty());
    let placed: Vec<ServiceId> = w.st.services_of(b).map(|s| s.id).collect();
    let starts = starts(&w.st, &placed, &w.cfg);
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0][0].2.execution_id, b);
}

#[test]
fn a_new_session_is_reconciled_before_its_node_is_used() {
    let mut w = World::new(false);
    let id = w.submit();
    w.pass(10);
    w.pass(10);
    let (sid, node, cid) = w.started(id);
    // The agent comes back in a new session without the container.
    w.connect(&node, 2, vec![container("stray", None, false)]);
    w.platform.nodes.remove(if node == "n1" { "n2" } else { "n1" });
    let id2 = w.submit();
    let (p, cmds) = w.pass(10);
    assert_eq!(kinds(&cmds), ["exited", "queue"]);
    assert!(matches!(&cmds[0], Command::ServiceExited { id, container_id, .. } if *id == sid && *container_id == cid));
    assert_eq!(p.orphans, vec![(node.clone(), "stray".to_string())], "an exited orphan goes at once");
    assert_eq!(p.registered, vec![(node.clone(), 2)]);
    // Recorded with the commit: the next pass uses the node (the one
    // before could not: it was reconciling it).
    let (_, cmds) = w.pass(10);
    assert_eq!(kinds(&cmds), ["plan"]);
    assert_eq!(w.st.executions[&id2].status, ExecutionStatus::Starting);
}

#[test]
fn nodes_are_judged_only_after_the_failover_grace() {
    // (ms since leader_since, ms since last heard, heard at all?, marked down?)
    let cases = [
        (29_000, 29_000, false, false), // grace: nobody is judged
        (40_000, 5_000, true, false),   // heard recently
        (40_000, 21_000, true, true),   // silent past down_after
        (40_000, 0, false, true),       // never heard: judged from leader_since
        (15_000, 0, false, false),
    ];
    for (k, (since, silent, heard, down)) in cases.into_iter().enumerate() {
        let mut w = World::new(false);
        w.platform.seen.clear();
        w.platform.nodes.clear();
        let now = w.mem.leader_since + since;
        if heard {
            w.platform.seen.insert("n1".into(), now - silent);
            w.platform.seen.insert("n2".into(), now);
        }
        let (_, cmds) = w.pass(since);
        let marked: Vec<&str> = cmds
            .iter()
            .filter_map(|c| match c {
                Command::SetNodeStatus { name, status: NodeStatus::Down, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let want: Vec<&str> = match (down, heard) {
            (false, _) => vec![],
            (true, true) => vec!["n1"],
            (true, false) => vec!["n1", "n2"],
        };
        assert_eq!(marked, want, "case {k}");
    }
}

#[test]
fn a_running_orphan_is_stopped_after_its_grace() {
    let mut w = World::new(false);
    w.connect("n1", 2, vec![container("behind", None, true)]);
    let (p, _) = w.pass(10);
    assert!(p.orphans.is_empty(), "reported, within the grace");
    let (p, _) = w.pass(RECONCILE_EVERY_MS);
    assert!(p.orphans.is_empty());
    let (p, _) = w.pass(w.live.orphan_grace_ms);
    assert_eq!(p.orphans, vec![("n1".to_string(), "behind".to_string())]);
    // Gone from the inventory: forgotten.
    w.connect("n1", 2, vec![]);
    w.pass(RECONCILE_EVERY_MS);
    assert!(w.mem.orphans.is_empty());
}

#[test]
fn stops_and_respawns_are_not_repeated_while_asked() {
    let mut w = World::new(false);
    let id = w.submit();
    w.pass(10);
    w.pass(10);
    // The plan's spawn is lost with the leader's memory (say, a new term).
    w.mem = Memory::new(2, w.now);
    w.mem.sessions = [("n1".to_string(), 1), ("n2".to_string(), 1)].into();
    let (p, _) = w.pass(10);
    assert_eq!(p.respawn.len(), 1, "a starting service nobody starts is asked again");
    let (p, _) = w.pass(10);
    assert!(p.respawn.is_empty(), "not while that spawn is in flight");
    let cid = p_cid(&w, id);
    w.mem.spawn_unknown(&cid, w.now, w.cfg.spawn_retry_ms);
    assert!(w.pass(10).0.respawn.is_empty(), "an unknown outcome waits spawn_retry_ms");
    assert_eq!(w.pass(w.cfg.spawn_retry_ms).0.respawn.len(), 1);

    w.mem.spawned(&cid);
    w.started(id);
    w.ok(Command::TerminateExecution { id, reason: "t".into(), after: AfterCleanup::Terminated, time: w.now });
    assert_eq!(w.pass(10).0.stop.len(), 1);
    assert!(w.pass(10).0.stop.is_empty(), "asked already");
    assert_eq!(w.pass(w.cfg.stop_retry_ms).0.stop.len(), 1, "asked again after stop_retry_ms");
}

fn p_cid(w: &World, id: ExecutionId) -> String {
    w.st.services_of(id).next().unwrap().container_id.clone().unwrap()
}

#[test]
fn network_pushes_go_once_per_session_and_again_when_refused() {
    let mut w = World::new(true);
    let (p, _) = w.pass(10);
    let nets: Vec<&str> = p
        .pushes
        .iter()
        .filter_map(|x| match x {
            Push::Network { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(nets, ["n1", "n2"]);
    assert!(w.pass(10).0.pushes.is_empty(), "sent already");
    // Refused by n1: sent again; a new session of n2: sent again once reconciled.
    let refused = p.pushes[0].clone();
    w.mem.push_failed(&refused);
    w.connect("n2", 2, vec![]);
    let (p, _) = w.pass(10);
    assert_eq!(p.pushes, vec![refused]);
    let (p, _) = w.pass(10);
    assert!(matches!(&p.pushes[..], [Push::Network { node, session: 2, .. }] if node == "n2"));
    assert!(w.pass(10).0.pushes.is_empty());
}

#[test]
fn refused_starts_back_off_then_give_up() {
    let mut w = World::new(false);
    let id = w.submit();
    let sid = w.st.executions[&id].services[0];
    let cfg =
        LeaderConfig { start_retry_base_ms: 1_000, start_retry_max_ms: 5_000, max_start_attempts: 4, ..w.cfg.clone() };
    // (failures so far, retryable, retry after ms or None = ends the execution)
    let cases =
        [(0, true, Some(1_000)), (1, true, Some(2_000)), (2, true, Some(4_000)), (3, true, None), (0, false, None)];
    for (failures, retryable, after) in cases {
        w.st.executions.get_mut(&id).unwrap().start_failures = failures;
        let Command::ServiceStartFailed { retry_at, message, .. } =
            start_failed(&w.st, &cfg, sid, retryable, "busy".into(), 100)
        else {
            panic!()
        };
        assert_eq!(retry_at, after.map(|a| 100 + a), "{failures} {retryable}");
        assert_eq!(message.starts_with("gave up"), retryable && after.is_none());
    }
}
