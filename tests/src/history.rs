//! Client histories of a chaos run, and the checker that judges them.
//!
//! The chaos test (`tests/tests/chaos.rs`) records every client call with
//! when it started and ended (microseconds since the run began) and what it
//! got back, samples what containerd runs, and at the end reads every
//! replica's state. [`check`] then looks for what must never happen:
//!
//! * an acknowledged write missing from a replica's final state (`lost`);
//! * a refused write visible in a replica (`refused-visible`);
//! * a consistent read older than a write acknowledged before it began, or
//!   older than a consistent read that ended before it began, or showing a
//!   value never written (`linearizability`);
//! * two running containers of one service instance at once (`double`);
//! * a batch instance seen running under two container ids without a node
//!   loss that explains the second (`duplicate-run`);
//! * a container left running, or one of no known execution (`orphan`);
//! * replicas whose states differ (`divergence`);
//! * an execution that never ended (`stuck`).
//!
//! It is pure: hand-made histories in the unit tests must fail it. A
//! violation carries the ids of the operations that show it, so a failure
//! prints a minimal history rather than the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Microseconds since the run began.
pub type Micros = u64;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A keyed submission of execution `name` (one name per submission).
    Submit { name: String, batch: bool },
    /// Terminate the execution `name`.
    Terminate { name: String },
    /// Set `user`'s email to its `version`-th value. One writer per user,
    /// one write at a time: versions only grow.
    SetEmail { user: String, version: u64 },
    /// `GET /users/{id}?consistent=true`.
    ReadEmail { user: String },
    /// `GET /executions/{id}?consistent=true`.
    ReadExecution { name: String },
    /// Create a user.
    CreateUser { user: String },
    /// Change a node (a drain, its cancellation, eligibility): recorded and
    /// counted, not checked.
    Node { node: String, change: String },
}

impl Call {
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::ReadEmail { .. } | Call::ReadExecution { .. })
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (2xx), with what it showed.
    Ok(Seen),
    /// A 4xx: certainly not applied.
    Refused { status: u16, code: String },
    /// No answer, a timeout, a 5xx: maybe applied.
    Unknown(String),
}

/// What an acknowledged call showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Nothing,
    /// An execution's id and status (a submission, a terminate, a read).
    Execution {
        id: u64,
        status: String,
    },
    /// A read found no such record.
    NotFound,
    /// An email's version (0: never set).
    Email(u64),
}

/// One client call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub id: usize,
    pub client: String,
    pub start: Micros,
    pub end: Micros,
    pub call: Call,
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} [{:.3}s..{:.3}s] {}: {:?} -> {:?}",
            self.id,
            self.start as f64 / 1e6,
            self.end as f64 / 1e6,
            self.client,
            self.call,
            self.outcome
        )
    }
}

/// A thread-safe recorder of [`Op`]s, shared by the clients of a run.
pub struct Recorder {
    began: std::time::Instant,
    ops: std::sync::Mutex<Vec<Op>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { began: std::time::Instant::now(), ops: Default::default() }
    }

    /// Microseconds since the recorder was made.
    pub fn now(&self) -> Micros {
        self.began.elapsed().as_micros() as Micros
    }

    /// An instant of the run, in microseconds since the recorder was made.
    pub fn at(&self, t: std::time::Instant) -> Micros {
        t.saturating_duration_since(self.began).as_micros() as Micros
    }

    /// Records a call that started at `start` and has just ended.
    pub fn record(&self, client: &str, start: Micros, call: Call, outcome: Outcome) -> Op {
        let end = self.now();
        let mut ops = self.ops.lock().unwrap();
        let op = Op { id: ops.len(), client: client.to_string(), start, end, call, outcome };
        ops.push(op.clone());
        op
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

/// One container as a sample saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub node: String,
    pub id: String,
    pub running: bool,
    pub service: Option<u64>,
    pub execution: Option<u64>,
}

/// What containerd ran at one moment, on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub at: Micros,
    pub containers: Vec<Container>,
}

/// An execution in a replica's final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionView {
    pub name: String,
    pub status: String,
}

/// One replica's final state, as the checker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub name: String,
    /// By execution id.
    pub executions: BTreeMap<u64, ExecutionView>,
    /// Every user, with the version of their email (0: none set).
    pub users: BTreeMap<String, u64>,
    /// A fingerprint of the whole state (equal states, equal digests).
    pub digest: String,
}

/// Everything a run observed besides the client calls.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub replicas: Vec<Replica>,
    pub samples: Vec<Sample>,
    /// What containerd holds once the run is over.
    pub final_containers: Vec<Container>,
    /// Node losses (machine gone, its containers stopped): node, when.
    pub node_losses: Vec<(String, Micros)>,
}

/// A broken guarantee, with the operations that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: &'static str,
    pub what: String,
    pub ops: Vec<usize>,
}

/// The checker's verdict and the run's figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub operations: usize,
    pub writes_acknowledged: usize,
    pub writes_refused: usize,
    pub writes_unknown: usize,
    pub consistent_reads: usize,
    pub samples: usize,
    pub batch_runs: usize,
    /// Batch instances run again after their node was lost (allowed).
    pub reruns_after_node_loss: usize,
}

impl Report {
    pub fn count(&self, kind: &str) -> usize {
        self.violations.iter().filter(|v| v.kind == kind).count()
    }

    /// Every violation with the history entries that show it.
    pub fn explain(&self, ops: &[Op]) -> String {
        let mut out = String::new();
        for v in &self.violations {
            out += &format!("{}: {}\n", v.kind, v.what);
            for id in &v.ops {
                if let Some(op) = ops.iter().find(|o| o.id == *id) {
                    out += &format!("    {op}\n");
                }
            }
        }
        out
    }
}

/// Execution statuses a consistent read may show once a terminate was acknowledged.
const ENDING: [&str; 3] = ["cleaning up", "terminated", "error"];

/// Judges a run; see the module doc.
pub fn check(ops: &[Op], seen: &Observed) -> Report {
    let mut r = Report { operations: ops.len(), samples: seen.samples.len(), ..Report::default() };
    for op in ops.iter().filter(|o| o.call.is_write()) {
        match op.outcome {
            Outcome::Ok(_) => r.writes_acknowledged += 1,
            Outcome::Refused { .. } => r.writes_refused += 1,
            Outcome::Unknown(_) => r.writes_unknown += 1,
        }
    }
    r.consistent_reads = ops.iter().filter(|o| !o.call.is_write() && matches!(o.outcome, Outcome::Ok(_))).count();
    let mut v = Vec::new();
    check_submissions(ops, seen, &mut v);
    check_emails(ops, seen, &mut v);
    check_execution_reads(ops, &mut v);
    (r.batch_runs, r.reruns_after_node_loss) = check_containers(ops, seen, &mut v);
    check_replicas(seen, &mut v);
    r.violations = v;
    r
}

/// Submissions and user creations: acknowledged ones are in every replica,
/// refused ones in none, and none made two records.
fn check_submissions(ops: &[Op], seen: &Observed, v: &mut Vec<Violation>) {
    for op in ops {
        let Call::CreateUser { user } = &op.call else { continue };
        for rep in &seen.replicas {
            let there = rep.users.contains_key(user);
            match &op.outcome {
                Outcome::Ok(_) if !there => v.push(Violation {
                    kind: "lost",
                    what: format!("acknowledged user {user} is missing from replica {}", rep.name),
                    ops: vec![op.id],
                }),
                Outcome::Refused { .. } if there => v.push(Violation {
                    kind: "refused-visible",
                    what: format!("refused user {user} exists in replica {}", rep.name),
                    ops: vec![op.id],
                }),
                _ => {}
            }
        }
    }
    for op in ops {
        let Call::Submit { name, .. } = &op.call else { continue };
        for rep in &seen.replicas {
            let found: Vec<u64> = rep.executions.iter().filter(|(_, e)| &e.name == name).map(|(id, _)| *id).collect();
            match &op.outcome {
                Outcome::Ok(Seen::Execution { id, .. }) if found != [*id] => v.push(Violation {
                    kind: "lost",
                    what: format!(
                        "acknowledged submission {name} (execution {id}) is {found:?} in replica {}",
                        rep.name
                    ),
                    ops: vec![op.id],
                }),
                Outcome::Refused { .. } if !found.is_empty() => v.push(Violation {
                    kind: "refused-visible",
                    what: format!("refused submission {name} is visible as {found:?} in replica {}", rep.name),
                    ops: vec![op.id],
                }),
                Outcome::Unknown(_) if found.len() > 1 => v.push(Violation {
                    kind: "lost",
                    what: format!("submission {name} of unknown outcome created {found:?} in replica {}", rep.name),
                    ops: vec![op.id],
                }),
                _ => {}
            }
        }
    }
}

/// The email of each user is a register with one sequential writer:
/// versions grow, so a read is linearizable when it returns a version that
/// was written (not refused) and started before the read ended, no older
/// than the last write acknowledged before the read began, and no older
/// than a read that ended before it began.
///
/// A write of unknown outcome may take effect at any moment after it
/// began, even after later writes (a forwarded request still in flight):
/// a read that shows its version is only checked for having been possible.
/// An acknowledged version cannot come back that way: its write ended
/// before any later one began.
fn check_emails(ops: &[Op], seen: &Observed, v: &mut Vec<Violation>) {
    let mut users = BTreeSet::new();
    for op in ops {
        if let Call::SetEmail { user, .. } | Call::ReadEmail { user } = &op.call {
            users.insert(user.clone());
        }
    }
    for user in users {
        let writes: Vec<(&Op, u64)> = ops
            .iter()
            .filter_map(|o| match &o.call {
                Call::SetEmail { user: u, version } if *u == user => Some((o, *version)),
                _ => None,
            })
            .collect();
        let reads: Vec<(&Op, u64)> = ops
            .iter()
            .filter_map(|o| match (&o.call, &o.outcome) {
                (Call::ReadEmail { user: u }, Outcome::Ok(Seen::Email(n))) if *u == user => Some((o, *n)),
                _ => None,
            })
            .collect();
        let acked_before = |t: Micros| {
            writes
                .iter()
                .filter(|(w, _)| matches!(w.outcome, Outcome::Ok(_)) && w.end < t)
                .max_by_key(|(_, n)| *n)
                .copied()
        };
        // A version some write may have set by `t`; `None` when no write set it.
        let possible = |n: u64, t: Micros| {
            n == 0
                || writes.iter().any(|(w, k)| *k == n && w.start < t && !matches!(w.outcome, Outcome::Refused { .. }))
        };
        let pending: BTreeSet<u64> =
            writes.iter().filter(|(w, _)| matches!(w.outcome, Outcome::Unknown(_))).map(|(_, n)| *n).collect();
        for (rd, n) in &reads {
            if !possible(*n, rd.end) {
                let w: Vec<usize> = writes.iter().filter(|(_, k)| k == n).map(|(w, _)| w.id).collect();
                v.push(Violation {
                    kind: "linearizability",
                    what: format!("a consistent read of {user}'s email saw version {n}, which no write had set"),
                    ops: [w, vec![rd.id]].concat(),
                });
            }
            if pending.contains(n) {
                continue;
            }
            if let Some((w, k)) = acked_before(rd.start)
                && *n < k
            {
                v.push(Violation {
                    kind: "linearizability",
                    what: format!(
                        "a consistent read of {user}'s email saw version {n} after version {k} was acknowledged"
                    ),
                    ops: vec![w.id, rd.id],
                });
            }
            if let Some((early, k)) = reads.iter().filter(|(o, k)| o.end < rd.start && k > n).max_by_key(|(_, k)| *k) {
                v.push(Violation {
                    kind: "linearizability",
                    what: format!("a consistent read of {user}'s email saw version {n} after another had seen {k}"),
                    ops: vec![early.id, rd.id],
                });
            }
        }
        for rep in &seen.replicas {
            let n = rep.users.get(&user).copied().unwrap_or(0);
            if let Some((w, k)) = acked_before(Micros::MAX)
                && n < k
                && !pending.contains(&n)
            {
                v.push(Violation {
                    kind: "lost",
                    what: format!("replica {} has {user}'s email at version {n}, below the acknowledged {k}", rep.name),
                    ops: vec![w.id],
                });
            }
            if !possible(n, Micros::MAX) {
                let w: Vec<usize> = writes.iter().filter(|(_, k)| *k == n).map(|(w, _)| w.id).collect();
                v.push(Violation {
                    kind: "refused-visible",
                    what: format!("replica {} has {user}'s email at version {n}, which no write set", rep.name),
                    ops: w,
                });
            }
        }
    }
}

/// Consistent reads of an execution: an acknowledged submission is never
/// missing, an acknowledged terminate is never undone, and `terminated`
/// (final) is never followed by anything else.
fn check_execution_reads(ops: &[Op], v: &mut Vec<Violation>) {
    let status_of = |o: &Op| match &o.outcome {
        Outcome::Ok(Seen::Execution { status, .. }) => Some(status.clone()),
        Outcome::Ok(Seen::NotFound) => Some("not found".to_string()),
        _ => None,
    };
    for rd in ops.iter().filter(|o| matches!(o.call, Call::ReadExecution { .. })) {
        let Call::ReadExecution { name } = &rd.call else { continue };
        let Some(status) = status_of(rd) else { continue };
        for w in ops.iter().filter(|w| w.end < rd.start && matches!(w.outcome, Outcome::Ok(_))) {
            match &w.call {
                Call::Submit { name: n, .. } if n == name && status == "not found" => v.push(Violation {
                    kind: "linearizability",
                    what: format!("a consistent read did not find execution {name}, acknowledged before it began"),
                    ops: vec![w.id, rd.id],
                }),
                Call::Terminate { name: n } if n == name && !ENDING.contains(&status.as_str()) => v.push(Violation {
                    kind: "linearizability",
                    what: format!(
                        "a consistent read saw execution {name} {status} after its terminate was acknowledged"
                    ),
                    ops: vec![w.id, rd.id],
                }),
                Call::ReadExecution { name: n }
                    if n == name && status_of(w).as_deref() == Some("terminated") && status != "terminated" =>
                {
                    v.push(Violation {
                        kind: "linearizability",
                        what: format!(
                            "a consistent read saw execution {name} {status} after another saw it terminated"
                        ),
                        ops: vec![w.id, rd.id],
                    })
                }
                _ => {}
            }
        }
    }
}

/// Samples and final containers; returns the number of batch instances
/// seen running, and of those run again after a node loss.
fn check_containers(ops: &[Op], seen: &Observed, v: &mut Vec<Violation>) -> (usize, usize) {
    let submission = |exec: u64| {
        ops.iter().find_map(|o| match (&o.call, &o.outcome) {
            (Call::Submit { batch, .. }, Outcome::Ok(Seen::Execution { id, .. })) if *id == exec => {
                Some((o.id, *batch))
            }
            _ => None,
        })
    };
    let batch_names: BTreeSet<&str> = ops
        .iter()
        .filter_map(|o| match &o.call {
            Call::Submit { name, batch: true } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let is_batch = |exec: u64| {
        submission(exec).is_some_and(|(_, b)| b)
            || seen
                .replicas
                .iter()
                .any(|r| r.executions.get(&exec).is_some_and(|e| batch_names.contains(e.name.as_str())))
    };
    // Per service: container id -> (node, first seen).
    let mut runs: BTreeMap<u64, BTreeMap<String, (String, Micros)>> = BTreeMap::new();
    let mut doubled = BTreeSet::new();
    for s in &seen.samples {
        let mut now: BTreeMap<u64, Vec<&Container>> = BTreeMap::new();
        for c in s.containers.iter().filter(|c| c.running) {
            if let Some(sid) = c.service {
                now.entry(sid).or_default().push(c);
                runs.entry(sid).or_default().entry(c.id.clone()).or_insert((c.node.clone(), s.at));
            }
        }
        for (sid, cs) in now {
            if cs.len() > 1 && doubled.insert(sid) {
                let ids: Vec<String> = cs.iter().map(|c| format!("{}@{}", c.id, c.node)).collect();
                let exec = cs[0].execution.and_then(submission).map(|(o, _)| vec![o]).unwrap_or_default();
                v.push(Violation {
                    kind: "double",
                    what: format!("service {sid} ran in {ids:?} at once ({:.3}s)", s.at as f64 / 1e6),
                    ops: exec,
                });
            }
        }
    }
    let (mut batch_runs, mut reruns) = (0, 0);
    let exec_of = |sid: u64| {
        seen.samples.iter().flat_map(|s| &s.containers).find(|c| c.service == Some(sid)).and_then(|c| c.execution)
    };
    for (sid, ids) in &runs {
        let Some(exec) = exec_of(*sid) else { continue };
        if !is_batch(exec) {
            continue;
        }
        batch_runs += 1;
        let mut by_time: Vec<(&String, &(String, Micros))> = ids.iter().collect();
        by_time.sort_by_key(|(_, (_, t))| *t);
        for pair in by_time.windows(2) {
            let ((first, (node, t0)), (second, (_, t1))) = (pair[0], pair[1]);
            let excused = seen.node_losses.iter().any(|(n, t)| n == node && t0 <= t && t <= t1);
            if excused {
                reruns += 1;
            } else {
                v.push(Violation {
                    kind: "duplicate-run",
                    what: format!(
                        "batch service {sid} of execution {exec} ran as {first}@{node} and then as {second} with no loss of {node} between"
                    ),
                    ops: submission(exec).map(|(o, _)| vec![o]).unwrap_or_default(),
                });
            }
        }
    }
    let known: BTreeSet<u64> = seen.replicas.iter().flat_map(|r| r.executions.keys().copied()).collect();
    for c in &seen.final_containers {
        let unknown = c.execution.is_none_or(|e| !known.contains(&e));
        if c.running || unknown {
            v.push(Violation {
                kind: "orphan",
                what: format!(
                    "container {} on {} (service {:?}, execution {:?}) is left {}",
                    c.id,
                    c.node,
                    c.service,
                    c.execution,
                    if c.running { "running" } else { "behind for no known execution" }
                ),
                ops: c.execution.and_then(submission).map(|(o, _)| vec![o]).unwrap_or_default(),
            });
        }
    }
    (batch_runs, reruns)
}

fn check_replicas(seen: &Observed, v: &mut Vec<Violation>) {
    let Some(first) = seen.replicas.first() else { return };
    for rep in &seen.replicas[1..] {
        if rep.digest != first.digest {
            let mut diff = Vec::new();
            let ids: BTreeSet<&u64> = first.executions.keys().chain(rep.executions.keys()).collect();
            for id in ids {
                let (a, b) = (first.executions.get(id), rep.executions.get(id));
                if a != b {
                    diff.push(format!("execution {id}: {a:?} vs {b:?}"));
                }
            }
            if first.users != rep.users {
                diff.push(format!("users {:?} vs {:?}", first.users, rep.users));
            }
            v.push(Violation {
                kind: "divergence",
                what: format!("replicas {} and {} differ: {}", first.name, rep.name, diff.join("; ")),
                ops: Vec::new(),
            });
        }
    }
    for rep in &seen.replicas {
        for (id, e) in &rep.executions {
            if !matches!(e.status.as_str(), "terminated" | "error") {
                v.push(Violation {
                    kind: "stuck",
                    what: format!("execution {id} ({}) is still {} in replica {}", e.name, e.status, rep.name),
                    ops: Vec::new(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
