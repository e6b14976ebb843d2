//! The lifecycle through commands, as the leader will issue them.

use super::*;
use zoe_common::zapp::parse;

fn app(text: &str) -> ZApp {
    parse(text).unwrap().0
}

fn batch() -> ZApp {
    app(include_str!("../../../examples/zapps/hello-batch.json"))
}

fn spark() -> ZApp {
    app(include_str!("../../../examples/zapps/spark-like.json"))
}

fn node(name: &str) -> Registration {
    let capacity = Capacity { cores: Millicores::from_whole_cores(4), memory: 8 << 30 };
    Registration { addresses: vec!["127.0.0.1".into()], ..Registration::bare(name, capacity) }
}

/// User `ada` with the `user` role and the given quota.
fn ada(quota_id: QuotaId) -> User {
    User {
        id: 0,
        username: "ada".into(),
        email: None,
        fs_uid: 1000,
        role_id: user::ROLE_USER,
        quota_id,
        enabled: true,
        auth_source: "internal".into(),
        password_hash: None,
        priority: 0,
    }
}

struct World {
    st: State,
    t: Millis,
}

impl World {
    fn new() -> World {
        let mut w = World { st: State::default(), t: 1_000 };
        w.ok(Command::RegisterNode { registration: node("n1"), time: 1 });
        w
    }

    fn tick(&mut self) -> Millis {
        self.t += 10;
        self.t
    }

    fn ok(&mut self, c: Command) -> Applied {
        super::check::ok(&mut self.st, &c)
    }

    fn refused(&mut self, c: Command) -> StateError {
        super::check::refused(&mut self.st, &c)
    }

    fn submit(&mut self, a: ZApp) -> ExecutionId {
        let time = self.tick();
        let Applied::Created(id) = self.ok(Command::SubmitExecution {
            idempotency_key: None,
            name: "e".into(),
            owner: "ada".into(),
            description: a,
            size: 1.0,
            time,
        }) else {
            panic!()
        };
        let time = self.tick();
        self.ok(Command::QueueExecution { id, time });
        id
    }

    fn services(&self, id: ExecutionId) -> Vec<Service> {
        self.st.services_of(id).cloned().collect()
    }

    fn status(&self, id: ExecutionId) -> ExecutionStatus {
        self.st.executions[&id].status
    }

    /// Admits the execution and places the given instances on n1.
    fn place(&mut self, id: ExecutionId, which: impl Fn(&Service) -> bool, admit: bool) -> Vec<ServiceId> {
        let placements: Vec<Placement> = self
            .services(id)
            .iter()
            .filter(|s| which(s))
            .map(|s| Placement { service: s.id, node: "n1".into(), cores: Millicores(100) })
            .collect();
        let ids = placements.iter().map(|p| p.service).collect();
        let time = self.tick();
        self.ok(Command::ApplyPlan(Plan {
            time,
            starting: if admit { vec![id] } else { vec![] },
            placements,
            ..Plan::default()
        }));
        ids
    }

    /// Places the given instances (admitting the execution) and starts them.
    fn place_and_start(&mut self, id: ExecutionId, which: impl Fn(&Service) -> bool) -> Vec<ServiceId> {
        let placed = self.place(id, which, true);
        for s in &placed {
            self.started(*s);
        }
        placed
    }

    fn started(&mut self, sid: ServiceId) {
        let cid = self.st.services[&sid].container_id.clone().unwrap();
        let time = self.tick();
        self.ok(Command::ServiceStarted {
            id: sid,
            container_id: cid,
            ip_address: Some("127.0.0.1".into()),
            ports: vec![],
            time,
        });
    }

    fn exited(&mut self, sid: ServiceId, code: i32) {
        let cid = self.st.services[&sid].container_id.clone().unwrap();
        let time = self.tick();
        self.ok(Command::ServiceExited {
            id: sid,
            container_id: cid,
            exit_code: Some(code),
            oom_killed: false,
            reason: "exited".into(),
            time,
        });
    }

    fn stopped(&mut self, sid: ServiceId) {
        let cid = self.st.services[&sid].container_id.clone().unwrap();
        let time = self.tick();
        self.ok(Command::ServiceStopped { id: sid, container_id: cid, time });
    }
}

#[test]
fn submit_expands_instances_and_allocates_increasing_ids() {
    let mut w = World::new();
    let a = w.submit(spark());
    let b = w.submit(batch());
    assert!(b > a);
    let names: Vec<_> = w.services(a).iter().map(|s| (s.name.clone(), s.essential)).collect();
    assert_eq!(names.len(), 6);
    assert_eq!(names[0], ("head0".into(), true));
    assert_eq!(names[5], ("worker4".into(), false));
    assert!(w.services(a).iter().all(|s| s.id > a && s.id < b));
    assert_eq!(w.status(a), ExecutionStatus::Queued);
}

#[test]
fn batch_execution_runs_and_ends_terminated_when_its_essential_service_exits_0() {
    let mut w = World::new();
    let id = w.submit(batch());
    let placed = w.place(id, |_| true, true);
    assert_eq!(w.status(id), ExecutionStatus::Starting);
    let s = &w.st.services[&placed[0]];
    assert_eq!(
        (s.status, s.node.as_deref(), s.container_id.as_deref()),
        (ServiceStatus::Starting, Some("n1"), Some("zoe-100-hello0-1"))
    );
    w.started(placed[0]);
    assert_eq!(w.status(id), ExecutionStatus::Running);
    assert!(w.st.executions[&id].time_start.is_some());
    w.exited(placed[0], 0);
    let e = &w.st.executions[&id];
    assert_eq!(e.status, ExecutionStatus::Terminated);
    assert!(e.time_end.is_some());
    assert_eq!(w.st.services[&placed[0]].last_exit_code, Some(0));
}

#[test]
fn essential_service_failing_ends_the_execution_in_error_with_the_exit_code() {
    let mut w = World::new();
    let id = w.submit(spark());
    let placed = w.place_and_start(id, |s| s.essential);
    assert_eq!(w.status(id), ExecutionStatus::Running);
    w.exited(placed[1], 3);
    // The other essential instances must be stopped before the execution ends.
    assert_eq!(w.status(id), ExecutionStatus::CleaningUp);
    assert_eq!(w.st.executions[&id].error_message.as_deref(), Some("essential service worker0 exited with code 3"));
    for s in [placed[0], placed[2]] {
        assert_eq!(w.st.services[&s].status, ServiceStatus::Terminating);
        w.stopped(s);
    }
    assert_eq!(w.status(id), ExecutionStatus::Error);
}

#[test]
fn dead_elastic_instance_leaves_the_execution_running_and_is_replaced_with_a_restart_count() {
    let mut w = World::new();
    let id = w.submit(spark());
    let placed = w.place_and_start(id, |_| true);
    let elastic = *placed.iter().find(|s| !w.st.services[s].essential).unwrap();
    w.exited(elastic, 137);
    assert_eq!(w.status(id), ExecutionStatus::Running);
    assert_eq!(w.st.services[&elastic].status, ServiceStatus::Inactive);
    let first_container = w.st.services[&elastic].container_id.clone();
    w.place(id, |s| s.id == elastic, false);
    let s = &w.st.services[&elastic];
    assert_eq!((s.status, s.restart_count), (ServiceStatus::Starting, 1));
    assert_ne!(s.container_id, first_container, "a restart gets a new container id");
}

#[test]
fn terminate_works_in_every_active_state() {
    for stage in 0..4 {
        let mut w = World::new();
        let id = w.submit(batch());
        let mut placed = vec![];
        if stage >= 1 {
            placed = w.place(id, |_| true, true);
        }
        if stage >= 2 {
            w.started(placed[0]);
        }
        if stage == 3 {
            // error first, then terminate
            w.exited(placed[0], 1);
            assert_eq!(w.status(id), ExecutionStatus::Error);
        }
        let time = w.tick();
        w.ok(Command::TerminateExecution { id, reason: "user request".into(), after: AfterCleanup::Terminated, time });
        if stage == 1 || stage == 2 {
            assert_eq!(w.status(id), ExecutionStatus::CleaningUp, "stage {stage}");
            w.stopped(placed[0]);
        }
        assert_eq!(w.status(id), ExecutionStatus::Terminated, "stage {stage}");
        // Asking again is harmless.
        let time = w.tick();
        w.ok(Command::TerminateExecution { id, reason: "again".into(), after: AfterCleanup::Terminated, time });
        assert_eq!(w.status(id), ExecutionStatus::Terminated);
    }
}

#[test]
fn transient_start_failure_requeues_with_backoff_and_fatal_one_errors() {
    let mut w = World::new();
    let id = w.submit(spark());
    let placed = w.place(id, |s| s.essential, true);
    w.started(placed[0]);
    let time = w.tick();
    w.ok(Command::ServiceStartFailed {
        id: placed[1],
        message: "runtime busy".into(),
        retry_at: Some(time + 5_000),
        time,
    });
    assert_eq!(w.status(id), ExecutionStatus::CleaningUp);
    w.stopped(placed[0]);
    w.stopped(placed[2]);
    let e = &w.st.executions[&id];
    assert_eq!((e.status, e.start_failures, e.not_before), (ExecutionStatus::Queued, 1, Some(time + 5_000)));
    assert!(w.services(id).iter().all(|s| s.status == ServiceStatus::Created));

    let placed = w.place(id, |s| s.essential, true);
    let time = w.tick();
    w.ok(Command::ServiceStartFailed { id: placed[0], message: "image not found".into(), retry_at: None, time });
    assert_eq!(w.status(id), ExecutionStatus::CleaningUp);
    w.stopped(placed[1]);
    w.stopped(placed[2]);
    let e = &w.st.executions[&id];
    assert_eq!(e.status, ExecutionStatus::Error);
    assert!(e.error_message.as_deref().unwrap().contains("image not found"));
}

#[test]
fn stale_or_illegal_commands_are_refused_and_change_nothing() {
    let mut w = World::new();
    let id = w.submit(batch());
    let sid = w.services(id)[0].id;
    // Placing onto an unknown node, starting a non-queued execution, a start
    // report for a container that was never asked for.
    w.refused(Command::ApplyPlan(Plan {
        time: 1,
        starting: vec![id],
        placements: vec![Placement { service: sid, node: "nope".into(), cores: Millicores(1) }],
        ..Plan::default()
    }));
    w.place(id, |_| true, true);
    w.refused(Command::ApplyPlan(Plan { time: 1, starting: vec![id], ..Plan::default() }));
    w.refused(Command::ServiceStarted {
        id: sid,
        container_id: "other".into(),
        ip_address: None,
        ports: vec![],
        time: 1,
    });
    // Deleting an active execution, then terminated → running.
    w.refused(Command::DeleteExecution { id });
    w.started(sid);
    w.exited(sid, 0);
    let err = w.refused(Command::ApplyPlan(Plan { time: 1, starting: vec![id], ..Plan::default() }));
    assert!(matches!(err, StateError::Conflict(_)));
    let e = w.st.executions.get_mut(&id).unwrap();
    assert!(matches!(e.set_status(ExecutionStatus::Running), Err(StateError::IllegalTransition { .. })));
    w.ok(Command::DeleteExecution { id });
    assert!(w.st.services.is_empty());
}

#[test]
fn a_plan_over_a_nodes_capacity_is_refused_whole() {
    let mut w = World::new();
    // Two instances of 3 cores each on a 4-core node: the second does not fit.
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../../../examples/zapps/hello-batch.json")).unwrap();
    let g = &mut v["services"][0];
    g["essential_count"] = 2.into();
    g["total_count"] = 2.into();
    g["resources"]["cores"] = serde_json::json!({"min": 3, "max": 3});
    let big = app(&v.to_string());
    let id = w.submit(big);
    let placements: Vec<Placement> = w
        .services(id)
        .iter()
        .map(|s| Placement { service: s.id, node: "n1".into(), cores: Millicores::from_whole_cores(3) })
        .collect();
    let plan = Plan { time: 1, starting: vec![id], placements: placements.clone(), ..Plan::default() };
    let err = w.refused(Command::ApplyPlan(plan));
    assert!(err.to_string().contains("node n1, which would reserve 6 cores of 4"), "{err}");
    // One of them fits.
    w.ok(Command::ApplyPlan(Plan {
        time: 2,
        starting: vec![id],
        placements: placements[..1].to_vec(),
        ..Plan::default()
    }));
}

#[test]
fn a_plan_on_a_draining_or_ineligible_node_is_refused() {
    let mut w = World::new();
    let id = w.submit(batch());
    w.ok(Command::SetNodeEligibility { name: "n1".into(), eligible: false });
    let sid = w.services(id)[0].id;
    let plan = Plan {
        time: 1,
        starting: vec![id],
        placements: vec![Placement { service: sid, node: "n1".into(), cores: Millicores(1) }],
        ..Plan::default()
    };
    w.refused(Command::ApplyPlan(plan.clone()));
    w.ok(Command::SetNodeEligibility { name: "n1".into(), eligible: true });
    w.ok(Command::SetNodeDrain {
        name: "n1".into(),
        drain: Some(Drain {
            requested_by: "admin".into(),
            requested_at: 1,
            deadline: None,
            force: false,
            moved: vec![],
        }),
    });
    assert!(!w.st.nodes["n1"].eligible);
    w.refused(Command::ApplyPlan(plan));
}

#[test]
fn reregistration_keeps_identity_eligibility_and_first_registration() {
    let mut w = World::new();
    w.ok(Command::SetNodeEligibility { name: "n1".into(), eligible: false });
    let mut r = node("n1");
    r.labels.insert("gpu".into());
    w.ok(Command::RegisterNode { registration: r, time: 99 });
    let n = &w.st.nodes["n1"];
    assert_eq!((n.first_registration, n.last_registration, n.eligible), (1, 99, false));
    assert!(n.labels.contains("gpu"));
}

#[test]
fn a_node_judged_down_before_it_registered_again_stays_ready() {
    let mut w = World::new();
    w.ok(Command::RegisterNode { registration: node("n1"), time: 99 });
    w.refused(Command::SetNodeStatus { name: "n1".into(), status: NodeStatus::Down, time: 98 });
    w.ok(Command::SetNodeStatus { name: "n1".into(), status: NodeStatus::Down, time: 99 });
    assert_eq!(w.st.nodes["n1"].status, NodeStatus::Down);
}

#[test]
fn users_roles_and_quotas_follow_zoe_rules() {
    let mut w = World::new();
    let user = ada(user::QUOTA_DEFAULT);
    let Applied::Created(uid) = w.ok(Command::CreateUser { user: user.clone() }) else { panic!() };
    assert!(matches!(w.refused(Command::CreateUser { user: user.clone() }), StateError::Conflict(_)));
    w.refused(Command::CreateUser { user: User { username: "bob".into(), role_id: 12345, ..user.clone() } });

    let Applied::Created(rid) = w.ok(Command::CreateRole {
        role: Role { id: 0, name: "analyst".into(), capabilities: Capabilities::default() },
    }) else {
        panic!()
    };
    let Applied::Created(qid) =
        w.ok(Command::CreateQuota { quota: Quota { id: 0, name: "small".into(), ..user::builtin_quota() } })
    else {
        panic!()
    };
    w.ok(Command::UpdateUser { user: User { id: uid, role_id: rid, quota_id: qid, ..user.clone() } });
    w.ok(Command::DeleteRole { id: rid });
    w.ok(Command::DeleteQuota { id: qid });
    let u = w.st.user(uid).unwrap();
    assert_eq!((u.role_id, u.quota_id), (user::ROLE_USER, user::QUOTA_DEFAULT));

    w.refused(Command::DeleteRole { id: user::ROLE_ADMIN });
    w.refused(Command::UpdateRole {
        role: Role { id: user::ROLE_ADMIN, name: "admin".into(), capabilities: Capabilities::default() },
    });
    w.refused(Command::DeleteQuota { id: user::QUOTA_DEFAULT });
    w.refused(Command::UpdateQuota { quota: Quota { name: "renamed".into(), ..user::builtin_quota() } });

    // A user with an active execution cannot be deleted; afterwards, their
    // ended executions go with them.
    let id = w.submit(batch());
    w.refused(Command::DeleteUser { id: uid });
    let time = w.tick();
    w.ok(Command::TerminateExecution { id, reason: "x".into(), after: AfterCleanup::Terminated, time });
    w.ok(Command::DeleteUser { id: uid });
    assert!(w.st.executions.is_empty());
}

#[test]
fn reserved_resources_count_placed_instances_only() {
    let mut w = World::new();
    let id = w.submit(spark());
    w.place(id, |s| s.essential, true);
    let r = w.st.reserved_by_node();
    // head0 (0.2 core, 32 MiB) + worker0 + worker1 (0.1 core, 16 MiB each)
    assert_eq!(r["n1"], (Millicores(400), (32 + 16 + 16) << 20));
}

#[test]
fn the_index_follows_placements_exits_node_loss_and_deletion() {
    let mut w = World::new();
    let id = w.submit(spark());
    let ix = |w: &World| {
        let i = w.st.index();
        let n1 = i.usage().get("n1").cloned().unwrap_or_default();
        (n1.containers, n1.cores, i.incomplete().collect::<Vec<_>>(), i.waiting().count())
    };
    assert_eq!(w.st.index().executions(ExecutionStatus::Queued).collect::<Vec<_>>(), vec![id]);
    let essential = w.place(id, |s| s.essential, true);
    assert_eq!(ix(&w), (3, Millicores(400), vec![], 3), "three starting, none running yet");
    for s in &essential {
        w.started(*s);
    }
    // Running with its elastic instance unplaced: the queue must see it.
    assert_eq!(ix(&w), (3, Millicores(400), vec![id], 0));
    let elastic = w.place(id, |s| !s.essential, false);
    for s in &elastic {
        w.started(*s);
    }
    assert_eq!(ix(&w), (6, Millicores(700), vec![], 0));
    w.exited(elastic[0], 137);
    assert_eq!(ix(&w), (5, Millicores(600), vec![id], 0));
    let time = w.tick();
    w.ok(Command::NodeLost { name: "n1".into(), requeue_batch: true, time });
    assert_eq!(ix(&w), (0, Millicores(0), vec![id], 0), "nothing held on a lost node; all to move");
    let time = w.tick();
    w.ok(Command::TerminateExecution { id, reason: "done".into(), after: AfterCleanup::Terminated, time });
    w.ok(Command::DeleteExecution { id });
    assert_eq!(w.st.index().executions(ExecutionStatus::Terminated).count(), 0);
    // A state read back from JSON (a snapshot) builds its index afresh.
    let back: State = serde_json::from_slice(&serde_json::to_vec(&w.st).unwrap()).unwrap();
    assert!(back.index().usage().is_empty());
}

#[test]
fn state_serialises_and_replays_identically() {
    // Two replicas applying the same log reach identical states.
    let mut w = World::new();
    let mut log = vec![Command::RegisterNode { registration: node("n1"), time: 1 }];
    let id = w.submit(spark());
    log.push(Command::SubmitExecution {
        idempotency_key: None,
        name: "e".into(),
        owner: "ada".into(),
        description: spark(),
        size: 1.0,
        time: 1010,
    });
    log.push(Command::QueueExecution { id, time: 1020 });
    let mut replica = State::default();
    for c in &log {
        replica.apply(c).unwrap();
    }
    assert_eq!(replica, w.st);
    let bytes = serde_json::to_vec(&w.st).unwrap();
    let back: State = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, w.st);
}

#[test]
fn a_batch_applies_each_command_on_its_own() {
    let mut w = World::new();
    let time = w.tick();
    let Applied::Created(id) = w.ok(Command::SubmitExecution {
        idempotency_key: None,
        name: "e".into(),
        owner: "ada".into(),
        description: batch(),
        size: 1.0,
        time,
    }) else {
        panic!()
    };
    let out =
        w.ok(Command::Batch(vec![Command::QueueExecution { id, time }, Command::QueueExecution { id: 999_999, time }]));
    let Applied::Batch(results) = out else { panic!() };
    assert!(results[0].is_ok() && matches!(results[1], Err(StateError::NotFound(_))));
    assert_eq!(w.status(id), ExecutionStatus::Queued);
    w.refused(Command::Batch(vec![Command::Batch(vec![])]));
}

#[test]
fn quotas_are_enforced_when_the_submission_applies() {
    let mut w = World::new();
    let Applied::Created(qid) = w.ok(Command::CreateQuota {
        quota: Quota { id: 0, name: "one".into(), concurrent_executions: 1, ..user::builtin_quota() },
    }) else {
        panic!()
    };
    let user = ada(qid);
    w.ok(Command::CreateUser { user });
    w.submit(batch());
    // Two submissions that both passed the API's check: the second is refused here.
    let err = w.refused(Command::SubmitExecution {
        idempotency_key: None,
        name: "e".into(),
        owner: "ada".into(),
        description: batch(),
        size: 1.0,
        time: 5,
    });
    assert!(
        matches!(&err, StateError::Quota(crate::quota::QuotaError::Executions { limit: 1, .. }))
            && err.to_string().contains("allows 1 active execution"),
        "{err}"
    );
}

#[test]
fn compare_and_set_meta_is_exact() {
    let mut w = World::new();
    w.ok(Command::CompareAndSetMeta { key: "k".into(), expected: None, value: Some("a".into()) });
    w.refused(Command::CompareAndSetMeta { key: "k".into(), expected: None, value: Some("b".into()) });
    w.ok(Command::CompareAndSetMeta { key: "k".into(), expected: Some("a".into()), value: None });
    assert!(!w.st.meta.contains_key("k"));
}

/// A deposed leader's last pass can reach the new leader (writes are
/// forwarded) with a view in which an execution was still submitted: queueing
/// it again must not pull a started or terminated execution back.
#[test]
fn queueing_is_for_submissions_only() {
    let mut w = World::new();
    let id = w.submit(batch());
    w.place(id, |_| true, true);
    let time = w.tick();
    w.ok(Command::TerminateExecution {
        id,
        reason: "terminated by admin".into(),
        after: AfterCleanup::Terminated,
        time,
    });
    assert_eq!(w.status(id), ExecutionStatus::CleaningUp);
    let before = w.st.clone();
    let time = w.tick();
    w.ok(Command::QueueExecution { id, time });
    assert_eq!(w.st, before);
}

/// `Idempotency-Key` (issue #17): a retried submission never creates a
/// second execution; keys are per owner, remembered for a day, and the
/// same key with another request is refused.
#[test]
fn a_keyed_submission_creates_one_execution_per_owner_and_key_for_a_day() {
    let mut w = World::new();
    let keyed = |owner: &str, name: &str, key: &str, time: Millis| Command::SubmitExecution {
        idempotency_key: Some(key.into()),
        name: name.into(),
        owner: owner.into(),
        description: batch(),
        size: 1.0,
        time,
    };
    let Applied::Created(first) = w.ok(keyed("ada", "e", "k1", 10)) else { panic!() };
    let executions = w.st.executions.len();
    assert_eq!(w.ok(keyed("ada", "e", "k1", 20)), Applied::Created(first), "a retry answers the first execution");
    assert_eq!(w.st.executions.len(), executions, "and creates nothing");
    let Applied::Created(other) = w.ok(keyed("bob", "e", "k1", 30)) else { panic!() };
    assert_ne!(other, first, "keys are per owner");
    let err = w.refused(keyed("ada", "renamed", "k1", 40));
    assert!(matches!(err, StateError::IdempotencyMismatch(_)), "{err}");
    let Applied::Created(later) = w.ok(keyed("ada", "e", "k1", 10 + IDEMPOTENCY_KEEP_MS)) else { panic!() };
    assert_ne!(later, first, "a day later the key is free again");
    let json = serde_json::to_vec(&w.st).expect("the state, keys included, is JSON (snapshots)");
    assert_eq!(serde_json::from_slice::<State>(&json).unwrap(), w.st);
}
