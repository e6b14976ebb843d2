use super::*;

fn op(id: usize, start: Micros, end: Micros, call: Call, outcome: Outcome) -> Op {
    Op { id, client: "c".into(), start, end, call, outcome }
}

fn submit(name: &str, batch: bool) -> Call {
    Call::Submit { name: name.into(), batch }
}

fn exec(id: u64, status: &str) -> Outcome {
    Outcome::Ok(Seen::Execution { id, status: status.into() })
}

fn refused() -> Outcome {
    Outcome::Refused { status: 409, code: "quota_exceeded".into() }
}

fn replica(name: &str, execs: &[(u64, &str, &str)], emails: &[(&str, u64)]) -> Replica {
    let executions: BTreeMap<u64, ExecutionView> =
        execs.iter().map(|(id, n, s)| (*id, ExecutionView { name: n.to_string(), status: s.to_string() })).collect();
    let users: BTreeMap<String, u64> = emails.iter().map(|(u, n)| (u.to_string(), *n)).collect();
    let digest = format!("{executions:?}{users:?}");
    Replica { name: name.into(), executions, users, digest }
}

fn container(node: &str, id: &str, running: bool, service: u64, execution: u64) -> Container {
    Container { node: node.into(), id: id.into(), running, service: Some(service), execution: Some(execution) }
}

fn sample(at: Micros, containers: Vec<Container>) -> Sample {
    Sample { at, containers }
}

/// Three equal replicas holding `execs` and `emails`.
fn replicas(execs: &[(u64, &str, &str)], emails: &[(&str, u64)]) -> Vec<Replica> {
    ["c1", "c2", "c3"].iter().map(|n| replica(n, execs, emails)).collect()
}

/// A clean run: one batch job ran once, one refused submission is nowhere,
/// an email written twice and read in order.
fn clean() -> (Vec<Op>, Observed) {
    let email = |v| Call::SetEmail { user: "alice".into(), version: v };
    let read = || Call::ReadEmail { user: "alice".into() };
    let ops = vec![
        op(0, 0, 10, submit("b0", true), exec(7, "submitted")),
        op(1, 5, 20, submit("s0", false), refused()),
        op(2, 20, 30, email(1), Outcome::Ok(Seen::Nothing)),
        op(3, 25, 40, read(), Outcome::Ok(Seen::Email(1))),
        op(4, 41, 50, email(2), Outcome::Unknown("timeout".into())),
        op(5, 45, 60, read(), Outcome::Ok(Seen::Email(2))),
        op(6, 61, 70, read(), Outcome::Ok(Seen::Email(2))),
        op(7, 71, 80, Call::ReadExecution { name: "b0".into() }, exec(7, "terminated")),
    ];
    let seen = Observed {
        replicas: replicas(&[(7, "b0", "terminated")], &[("alice", 2)]),
        samples: vec![
            sample(15, vec![container("n1", "zoe-7-0-0", true, 8, 7)]),
            sample(25, vec![container("n1", "zoe-7-0-0", true, 8, 7)]),
        ],
        final_containers: vec![container("n1", "zoe-7-0-0", false, 8, 7)],
        node_losses: vec![],
    };
    (ops, seen)
}

fn kinds(r: &Report) -> Vec<&'static str> {
    r.violations.iter().map(|v| v.kind).collect()
}

#[test]
fn a_clean_history_passes_and_is_counted() {
    let (ops, seen) = clean();
    let r = check(&ops, &seen);
    assert!(r.violations.is_empty(), "{}", r.explain(&ops));
    assert_eq!(
        (r.operations, r.writes_acknowledged, r.writes_refused, r.writes_unknown, r.consistent_reads, r.batch_runs),
        (8, 2, 1, 1, 4, 1)
    );
}

#[test]
fn an_acknowledged_submission_missing_from_one_replica_is_lost() {
    let (ops, mut seen) = clean();
    seen.replicas[2] = replica("c3", &[], &[("alice", 2)]);
    let r = check(&ops, &seen);
    assert_eq!(r.count("lost"), 1, "{}", r.explain(&ops));
    // The one replica that differs also diverges from the others.
    assert_eq!(r.count("divergence"), 1);
    let text = r.explain(&ops);
    assert!(text.contains("#0 ") && text.contains("replica c3"), "{text}");
}

#[test]
fn a_submission_that_created_two_executions_is_caught() {
    let (mut ops, mut seen) = clean();
    ops[4] = op(4, 41, 50, submit("u0", true), Outcome::Unknown("timeout".into()));
    seen.replicas =
        replicas(&[(7, "b0", "terminated"), (9, "u0", "terminated"), (11, "u0", "terminated")], &[("alice", 2)]);
    let r = check(&ops, &seen);
    assert!(r.count("lost") >= 3, "{}", r.explain(&ops));
}

#[test]
fn a_refused_submission_that_shows_up_is_caught() {
    let (ops, mut seen) = clean();
    seen.replicas = replicas(&[(7, "b0", "terminated"), (9, "s0", "terminated")], &[("alice", 2)]);
    let r = check(&ops, &seen);
    assert_eq!(r.count("refused-visible"), 3, "{}", r.explain(&ops));
    assert_eq!(r.violations[0].ops, vec![1]);
}

#[test]
fn a_refused_email_write_that_is_read_is_caught() {
    let (mut ops, seen) = clean();
    ops[4].outcome = Outcome::Refused { status: 400, code: "invalid".into() };
    let r = check(&ops, &seen);
    // Read twice, and in the final state of three replicas.
    assert_eq!(r.count("linearizability"), 2, "{}", r.explain(&ops));
    assert_eq!(r.count("refused-visible"), 3);
}

/// Consistent reads of the email register that no linearization allows,
/// one per row: how the clean history is changed, and the operations the
/// violation must name.
#[test]
fn stale_or_future_consistent_reads_are_caught() {
    type Change = fn(&mut Vec<Op>);
    let cases: [(&str, Change, &[usize]); 3] = [
        // Began after version 1 was acknowledged (ended at 30), saw version 0.
        (
            "older than an acknowledged write",
            |ops| ops[3] = op(3, 31, 40, Call::ReadEmail { user: "alice".into() }, Outcome::Ok(Seen::Email(0))),
            &[2, 3],
        ),
        // Version 2's write is of unknown outcome: reading 2 then 1 is not
        // allowed even so, once the first read ended before the second began.
        ("older than an earlier read", |ops| ops[6].outcome = Outcome::Ok(Seen::Email(1)), &[5, 6]),
        // The read ended (40) before version 2's write began (41).
        ("of a value not yet written", |ops| ops[3].outcome = Outcome::Ok(Seen::Email(2)), &[]),
    ];
    for (what, change, culprits) in cases {
        let (mut ops, seen) = clean();
        change(&mut ops);
        let r = check(&ops, &seen);
        assert_eq!(kinds(&r), vec!["linearizability"], "a read {what}: {}", r.explain(&ops));
        if !culprits.is_empty() {
            assert_eq!(r.violations[0].ops, culprits, "a read {what}");
        }
    }
}

#[test]
fn a_replica_behind_an_acknowledged_email_lost_it() {
    let (mut ops, mut seen) = clean();
    ops[4].outcome = Outcome::Ok(Seen::Nothing);
    seen.replicas[1] = replica("c2", &[(7, "b0", "terminated")], &[("alice", 1)]);
    let r = check(&ops, &seen);
    assert_eq!(r.count("lost"), 1, "{}", r.explain(&ops));
    assert_eq!(r.count("divergence"), 1);
}

#[test]
fn an_execution_read_as_running_after_its_acknowledged_terminate_is_caught() {
    let (mut ops, seen) = clean();
    ops.push(op(8, 81, 90, Call::Terminate { name: "b0".into() }, exec(7, "cleaning up")));
    ops.push(op(9, 91, 95, Call::ReadExecution { name: "b0".into() }, exec(7, "running")));
    let r = check(&ops, &seen);
    // After the terminate, and after a read that saw it terminated.
    assert_eq!(kinds(&r), vec!["linearizability", "linearizability"], "{}", r.explain(&ops));
    assert_eq!(r.violations[0].ops, vec![7, 9]);
    assert_eq!(r.violations[1].ops, vec![8, 9]);
}

#[test]
fn an_acknowledged_submission_a_consistent_read_does_not_find_is_caught() {
    let (mut ops, seen) = clean();
    ops[7].outcome = Outcome::Ok(Seen::NotFound);
    let r = check(&ops, &seen);
    assert_eq!(kinds(&r), vec!["linearizability"], "{}", r.explain(&ops));
    assert_eq!(r.violations[0].ops, vec![0, 7]);
}

#[test]
fn a_batch_job_run_twice_is_a_duplicate_unless_its_node_was_lost() {
    let (ops, mut seen) = clean();
    seen.samples.push(sample(40, vec![container("n2", "zoe-7-0-1", true, 8, 7)]));
    let r = check(&ops, &seen);
    assert_eq!(kinds(&r), vec!["duplicate-run"], "{}", r.explain(&ops));
    assert_eq!(r.violations[0].ops, vec![0]);
    // n1 lost between the two sightings: the second run replaced a dead one.
    seen.node_losses.push(("n1".into(), 30));
    let r = check(&ops, &seen);
    assert!(r.violations.is_empty(), "{}", r.explain(&ops));
    assert_eq!((r.batch_runs, r.reruns_after_node_loss), (1, 1));
    // A loss of another node does not explain it.
    seen.node_losses = vec![("n2".into(), 30)];
    assert_eq!(kinds(&check(&ops, &seen)), vec!["duplicate-run"]);
}

#[test]
fn a_long_running_service_may_restart_but_never_runs_twice_at_once() {
    let (mut ops, mut seen) = clean();
    ops.push(op(8, 0, 10, submit("s1", false), exec(20, "submitted")));
    seen.replicas = replicas(&[(7, "b0", "terminated"), (20, "s1", "terminated")], &[("alice", 2)]);
    seen.samples.push(sample(30, vec![container("n1", "zoe-20-0-0", true, 21, 20)]));
    seen.samples.push(sample(40, vec![container("n2", "zoe-20-0-1", true, 21, 20)]));
    assert!(check(&ops, &seen).violations.is_empty());
    seen.samples.push(sample(
        50,
        vec![container("n2", "zoe-20-0-1", true, 21, 20), container("n1", "zoe-20-0-2", true, 21, 20)],
    ));
    let r = check(&ops, &seen);
    assert_eq!(kinds(&r), vec!["double"], "{}", r.explain(&ops));
    assert_eq!(r.violations[0].ops, vec![8]);
}

#[test]
fn a_container_left_running_or_of_no_execution_is_an_orphan() {
    let (ops, mut seen) = clean();
    seen.final_containers = vec![
        container("n1", "zoe-7-0-0", true, 8, 7),
        container("n2", "zoe-99-0-0", false, 100, 99),
        Container { node: "n2".into(), id: "stray".into(), running: false, service: None, execution: None },
    ];
    let r = check(&ops, &seen);
    assert_eq!(kinds(&r), vec!["orphan", "orphan", "orphan"], "{}", r.explain(&ops));
    assert_eq!(r.violations[0].ops, vec![0]);
}

#[test]
fn replicas_that_differ_diverge_and_unended_executions_are_stuck() {
    let (ops, mut seen) = clean();
    seen.replicas[1] = replica("c2", &[(7, "b0", "running")], &[("alice", 2)]);
    let r = check(&ops, &seen);
    assert_eq!(kinds(&r), vec!["divergence", "stuck"], "{}", r.explain(&ops));
    assert!(r.violations[0].what.contains("execution 7"), "{}", r.violations[0].what);
    // Equal summaries but different digests (a field the summary omits).
    let (ops, mut seen) = clean();
    seen.replicas[2].digest = "other".into();
    assert_eq!(kinds(&check(&ops, &seen)), vec!["divergence"]);
}

#[test]
fn a_created_user_must_be_everywhere_and_a_refused_one_nowhere() {
    let (mut ops, seen) = clean();
    ops.push(op(8, 0, 10, Call::CreateUser { user: "bob".into() }, Outcome::Ok(Seen::Nothing)));
    ops.push(op(9, 0, 10, Call::CreateUser { user: "alice".into() }, refused()));
    let r = check(&ops, &seen);
    assert_eq!(
        kinds(&r),
        vec!["lost"; 3].into_iter().chain(vec!["refused-visible"; 3]).collect::<Vec<_>>(),
        "{}",
        r.explain(&ops)
    );
    assert_eq!(r.violations[0].ops, vec![8]);
}

#[test]
fn a_write_of_unknown_outcome_may_take_effect_late_but_an_acknowledged_one_may_not() {
    let email = |v| Call::SetEmail { user: "alice".into(), version: v };
    let read = || Call::ReadEmail { user: "alice".into() };
    let mut ops = vec![
        op(0, 0, 10, email(1), Outcome::Unknown("timeout".into())),
        op(1, 11, 20, email(2), Outcome::Ok(Seen::Nothing)),
        op(2, 21, 30, read(), Outcome::Ok(Seen::Email(2))),
        // Version 1's request, still in flight, lands after version 2.
        op(3, 31, 40, read(), Outcome::Ok(Seen::Email(1))),
        op(4, 41, 50, read(), Outcome::Ok(Seen::Email(1))),
    ];
    let seen = Observed { replicas: replicas(&[], &[("alice", 1)]), ..Observed::default() };
    let r = check(&ops, &seen);
    assert!(r.violations.is_empty(), "{}", r.explain(&ops));
    // Acknowledged, version 1 took effect before version 2 began: both
    // reads of it are older than the write of 2 and than the read of 2.
    ops[0].outcome = Outcome::Ok(Seen::Nothing);
    let r = check(&ops, &seen);
    assert_eq!(r.count("linearizability"), 4, "{}", r.explain(&ops));
    assert_eq!(r.count("lost"), 3);
}
