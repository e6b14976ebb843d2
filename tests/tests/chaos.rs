//! The fault-injection suite (issue #18): real coordinator and agent
//! processes on the real containerd, a keyed workload recorded call by
//! call, faults injected at random from a printed seed, and the history
//! checked at the end (`zoe_tests::history`).
//!
//! * Cluster: 3 coordinators, 3 agents (n1..n3), loopback only; n1 and n2
//!   on the tests' shared containerd, n3 on one of its own.
//! * Workload, five clients at once, each call recorded with its start,
//!   end and answer: keyed submissions of batch jobs (admin); keyed
//!   submissions of long-running ZApps (a `head` and a `worker` group, one
//!   essential and one elastic worker, started in order) by `alice` under a
//!   quota of 3, so some are refused, and their terminations; `alice`
//!   setting her email again and again (a register with one writer, single
//!   attempts without retry, so some outcomes are unknown);
//!   consistent reads of her email and of executions; user creations; one
//!   drain of n3, cancelled, and n3 made eligible again.
//! * Faults, each alone once (in a seeded order), then at random, some
//!   mixed (a coordinator fault and an agent fault at once): kill -9 and
//!   restart of the leader and of a follower; SIGSTOP/SIGCONT of a
//!   coordinator and of an agent; loss of quorum (two of three killed) and
//!   its return; partitions of the leader alone and of a follower alone,
//!   and a flapping link between the leader and a follower (the Raft
//!   traffic dropped with iptables rules on loopback, the harness's
//!   `Partition`); an agent killed with its containers running and restarted;
//!   node loss (an agent killed with its containers stopped, down past the
//!   node-loss timeout, and back); containerd killed (-9) under n3, which
//!   drives a containerd of the test's own, and started again (its shims
//!   and containers live on).
//! * A sampler lists every agent's containers every 100 ms.
//! * At the end the long-running executions are terminated and the batch
//!   jobs must end by themselves; then the checker judges the history
//!   against every replica's final state, the samples and what containerd
//!   still holds.
//!
//! `ZOE_CHAOS_SEED` (or `ZOE_TEST_SEED`) replays the fault schedule and the
//! workload's choices (not the exact interleaving: the processes' timing is
//! the machine's). `ZOE_CHAOS_SECONDS` sets how long faults are injected
//! (default 60; `ZOE_CHAOS_SECONDS=1800` is the 30-minute run). The figures
//! are printed as one JSON line starting with `chaos figures:`.

mod harness;

use harness::Partition;
use harness::zoe::{AgentSpec, Sampler, ZoeCluster, seed, stop_namespace_containers_at};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zoe_tests::history::{self, Call, Micros, Outcome, Recorder, Seen};

const IMAGE: &str = zoe_testkit::DEFAULT_REFERENCE;
/// The agents' liveness settings in the harness (`agent_section`): a node
/// is lost after `ttl_ms + grace_ms` without a heartbeat.
const NODE_LOST_AFTER: Duration = Duration::from_millis(2000 + 1000);

fn service(name: &str, essential: u32, total: u32, order: u32, command: &str) -> Value {
    json!({
        "name": name, "image": IMAGE, "monitor": true,
        "essential_count": essential, "total_count": total, "startup_order": order,
        "resources": {"memory": {"min": 16 << 20, "max": 32 << 20}, "cores": {"min": 0.1, "max": null}},
        "environment": [], "volumes": [], "ports": [],
        "command": command
    })
}

/// A batch job: one instance that ends by itself after `secs`.
fn batch_app(name: &str, secs: u32) -> Value {
    json!({"name": name, "version": 3, "will_end": true, "size": 1,
           "services": [service("job", 1, 1, 0, &format!("sleep {secs}"))]})
}

/// A long-running ZApp: a head, then two workers (one essential, one elastic).
fn long_app(name: &str) -> Value {
    json!({"name": name, "version": 3, "will_end": false, "size": 3,
           "services": [service("head", 1, 1, 0, "sleep 3600"), service("worker", 1, 2, 1, "sleep 3600")]})
}

/// An answer as the history records it: 4xx refused, other errors unknown.
/// (A read's 404 is an answer: [`read_outcome`].)
fn outcome(r: &Result<Value, zoe_client::Error>, seen: impl FnOnce(&Value) -> Seen) -> Outcome {
    match r {
        Ok(v) => Outcome::Ok(seen(v)),
        Err(zoe_client::Error::Api(f)) if f.status.is_some_and(|s| s.is_client_error()) => {
            Outcome::Refused { status: f.status.map_or(0, |s| s.as_u16()), code: f.code.clone() }
        }
        Err(e) => Outcome::Unknown(e.to_string().lines().next().unwrap_or_default().to_string()),
    }
}

fn read_outcome(r: &Result<Value, zoe_client::Error>, seen: impl FnOnce(&Value) -> Seen) -> Outcome {
    match outcome(r, seen) {
        Outcome::Refused { status: 404, .. } => Outcome::Ok(Seen::NotFound),
        o => o,
    }
}

fn execution_seen(v: &Value) -> Seen {
    Seen::Execution { id: v["id"].as_u64().unwrap_or(0), status: v["status"].as_str().unwrap_or("").to_string() }
}

/// `alice-v<n>@example.org` -> n; no email -> 0.
fn email_version(email: Option<&str>) -> u64 {
    email.and_then(|e| e.strip_prefix("alice-v")?.split('@').next()?.parse().ok()).unwrap_or(0)
}

/// What the clients share.
struct Run {
    rec: Recorder,
    /// Acknowledged submissions: name, execution id.
    executions: Mutex<Vec<(String, u64)>>,
    stop: tokio::sync::watch::Receiver<bool>,
    alice_id: u64,
}

impl Run {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `ms`, or less if the run stops meanwhile.
    async fn pause(&self, ms: u64) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
        }
    }

    async fn submit(&self, who: &str, client: &zoe_client::Client, name: &str, app: &Value, batch: bool) -> Outcome {
        let start = self.rec.now();
        let body = json!({"name": name, "application": app});
        let r = client.post_keyed("/api/v1/executions", &body, &format!("chaos-{name}")).await;
        let out = outcome(&r, |v| Seen::Execution { id: v["id"].as_u64().unwrap_or(0), status: "submitted".into() });
        if let Outcome::Ok(Seen::Execution { id, .. }) = &out {
            self.executions.lock().unwrap().push((name.to_string(), *id));
        }
        self.rec.record(who, start, Call::Submit { name: name.to_string(), batch }, out.clone());
        out
    }

    async fn terminate(&self, who: &str, client: &zoe_client::Client, name: &str, id: u64) {
        let start = self.rec.now();
        let r = client.post(&format!("/api/v1/executions/{id}/terminate"), &json!({})).await;
        self.rec.record(who, start, Call::Terminate { name: name.to_string() }, outcome(&r, execution_seen));
    }

    /// A recorded write whose answer shows nothing the checker reads.
    async fn write(&self, who: &str, client: &zoe_client::Client, method: Method, path: &str, body: Value, call: Call) {
        let start = self.rec.now();
        let r = client.call(method, path, Some(&body)).await.map(|(v, _)| v);
        self.rec.record(who, start, call, outcome(&r, |_| Seen::Nothing));
    }
}

/// Admin: batch jobs of 1 to 3 s, one every 0.3 to 1.2 s.
async fn batch_client(run: Arc<Run>, client: zoe_client::Client, mut rng: SmallRng) {
    for k in 0.. {
        if run.stopped() {
            return;
        }
        let name = format!("b{k}");
        run.submit("batch", &client, &name, &batch_app(&name, rng.random_range(1..=3)), true).await;
        run.pause(rng.random_range(300..1200)).await;
    }
}

/// Alice: long-running ZApps under a quota of 3 (she tries a fourth, which
/// is refused), each terminated after a while.
async fn service_client(run: Arc<Run>, client: zoe_client::Client, mut rng: SmallRng) {
    let mut active: Vec<(String, u64)> = Vec::new();
    for k in 0.. {
        if run.stopped() {
            return;
        }
        if active.len() >= 4 || (!active.is_empty() && rng.random_bool(0.4)) {
            let (name, id) = active.remove(0);
            run.terminate("service", &client, &name, id).await;
        } else {
            let name = format!("l{k}");
            if let Outcome::Ok(Seen::Execution { id, .. }) =
                run.submit("service", &client, &name, &long_app(&name), false).await
            {
                active.push((name, id));
            }
        }
        run.pause(rng.random_range(500..2000)).await;
    }
}

/// Alice sets her email, one write at a time (versions 1, 2, ...), each a
/// single attempt on a coordinator picked at random, as a client without
/// retries: so the history holds writes of unknown outcome (no answer, a
/// timeout) and refusals for want of a leader, which must never show.
async fn email_client(run: Arc<Run>, client: zoe_client::Client, mut rng: SmallRng) {
    for version in 1.. {
        if run.stopped() {
            return;
        }
        let body = json!({"email": format!("alice-v{version}@example.org")});
        let path = format!("/api/v1/users/{}", run.alice_id);
        let start = run.rec.now();
        let i = rng.random_range(0..client.bases.len());
        let out = match client.raw_on(i, Method::PATCH, &path, Some(&body)).await {
            None => Outcome::Unknown(format!("no answer from coordinator index {i}")),
            Some(r) => {
                let code = r.body["error"]["code"].as_str().unwrap_or("").to_string();
                let not_applied = r.status.is_client_error()
                    || (r.status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                        && matches!(code.as_str(), "no_leader" | "shutting_down"));
                if r.status.is_success() {
                    Outcome::Ok(Seen::Nothing)
                } else if not_applied {
                    Outcome::Refused { status: r.status.as_u16(), code }
                } else {
                    Outcome::Unknown(format!("{} {code}", r.status))
                }
            }
        };
        run.rec.record("email", start, Call::SetEmail { user: "alice".into(), version }, out);
        run.pause(rng.random_range(200..800)).await;
    }
}

/// Consistent reads of alice's email and of executions.
async fn reader_client(run: Arc<Run>, client: zoe_client::Client, mut rng: SmallRng) {
    while !run.stopped() {
        let start = run.rec.now();
        let picked = {
            let known = run.executions.lock().unwrap();
            if known.is_empty() || rng.random_bool(0.5) {
                None
            } else {
                Some(known[rng.random_range(0..known.len())].clone())
            }
        };
        match picked {
            None => {
                let r = client.get(&format!("/api/v1/users/{}?consistent=true", run.alice_id)).await;
                let out = read_outcome(&r, |v| Seen::Email(email_version(v["email"].as_str())));
                run.rec.record("reader", start, Call::ReadEmail { user: "alice".into() }, out);
            }
            Some((name, id)) => {
                let r = client.get(&format!("/api/v1/executions/{id}?consistent=true")).await;
                run.rec.record("reader", start, Call::ReadExecution { name }, read_outcome(&r, execution_seen));
            }
        }
        run.pause(rng.random_range(100..400)).await;
    }
}

/// Admin: a user created every few seconds; once, a drain of n3 with a
/// deadline, cancelled a few seconds later, and n3 made eligible again.
async fn admin_client(run: Arc<Run>, client: zoe_client::Client, mut rng: SmallRng) {
    let drain_at = rng.random_range(2..5);
    for k in 0.. {
        if run.stopped() {
            return;
        }
        let user = format!("u{k}");
        let body = json!({"username": user, "password": format!("{user}-password-1")});
        run.write("admin", &client, Method::POST, "/api/v1/users", body, Call::CreateUser { user }).await;
        if k == drain_at {
            let node = |change: &str| Call::Node { node: "n3".into(), change: change.into() };
            let drain = "/api/v1/nodes/n3/drain";
            run.write("admin", &client, Method::POST, drain, json!({"enable": true, "deadline_s": 10}), node("drain"))
                .await;
            run.pause(rng.random_range(3000..8000)).await;
            run.write("admin", &client, Method::POST, drain, json!({"enable": false}), node("cancel drain")).await;
            let eligible = "/api/v1/nodes/n3/eligibility";
            run.write("admin", &client, Method::POST, eligible, json!({"eligible": true}), node("eligible")).await;
        }
        run.pause(rng.random_range(2000..5000)).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillLeader,
    KillFollower,
    PauseCoordinator,
    QuorumLoss,
    PartitionLeader,
    PartitionFollower,
    FlappingLink,
    PauseAgent,
    KillAgent,
    NodeLoss,
    ContainerdRestart,
}

const FAULTS: [Fault; 11] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::PauseCoordinator,
    Fault::QuorumLoss,
    Fault::PartitionLeader,
    Fault::PartitionFollower,
    Fault::FlappingLink,
    Fault::PauseAgent,
    Fault::KillAgent,
    Fault::NodeLoss,
    Fault::ContainerdRestart,
];

impl Fault {
    fn on_agent(self) -> bool {
        matches!(self, Fault::PauseAgent | Fault::KillAgent | Fault::NodeLoss | Fault::ContainerdRestart)
    }
}

/// What a fault did, to undo it.
struct Injected {
    fault: Fault,
    killed: Vec<usize>,
    paused: Vec<usize>,
    /// Cut off from the other coordinators.
    cut: Vec<usize>,
    partition: Option<Partition>,
    /// A link that goes down and up until told to stop.
    flapping: Option<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    agent: Option<usize>,
    hold: Duration,
}

/// Injects faults into the cluster and keeps their log.
struct Chaos {
    z: ZoeCluster,
    /// The containerd of the last agent (n3), which this test owns.
    own: OwnContainerd,
    rng: SmallRng,
    run: Arc<Run>,
    log: Vec<String>,
    node_losses: Vec<(String, Micros)>,
    counts: BTreeMap<String, usize>,
    mixed: usize,
    /// When each containerd restart under n3 ended.
    containerd_restarts: Vec<Micros>,
}

impl Chaos {
    fn note(&mut self, what: String) {
        let line = format!("{:8.3}s {what}", self.run.rec.now() as f64 / 1e6);
        eprintln!("chaos: {line}");
        self.log.push(line);
    }

    async fn begin(&mut self, fault: Fault) -> Injected {
        *self.counts.entry(format!("{fault:?}")).or_default() += 1;
        let n = self.z.coords.nodes.len();
        let mut inj = Injected {
            fault,
            killed: vec![],
            paused: vec![],
            cut: vec![],
            partition: None,
            flapping: None,
            agent: None,
            hold: Duration::ZERO,
        };
        let raft_port = |z: &ZoeCluster, i: usize| z.coords.nodes[i].port.port;
        let ms = |rng: &mut SmallRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..hi));
        match fault {
            Fault::KillLeader => {
                let l = self.z.leader().await;
                self.z.kill_coordinator(l);
                inj.killed.push(l);
                inj.hold = ms(&mut self.rng, 100, 2500);
            }
            Fault::KillFollower => {
                let l = self.z.leader().await;
                let f = (l + self.rng.random_range(1..n)) % n;
                self.z.kill_coordinator(f);
                inj.killed.push(f);
                inj.hold = ms(&mut self.rng, 300, 3000);
            }
            Fault::PauseCoordinator => {
                let i = self.rng.random_range(0..n);
                self.z.coords.signal(i, libc::SIGSTOP);
                inj.paused.push(i);
                inj.hold = ms(&mut self.rng, 500, 4000);
            }
            Fault::QuorumLoss => {
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut self.rng);
                for &i in &all[..2] {
                    self.z.kill_coordinator(i);
                    inj.killed.push(i);
                }
                inj.hold = ms(&mut self.rng, 1000, 4000);
            }
            Fault::PartitionLeader | Fault::PartitionFollower => {
                // Raft traffic between it and the others is dropped (UDP on
                // loopback); its API and its agents' connections stay up.
                let l = self.z.leader().await;
                let i = if fault == Fault::PartitionLeader { l } else { (l + self.rng.random_range(1..n)) % n };
                let others: Vec<u16> = (0..n).filter(|j| *j != i).map(|j| raft_port(&self.z, j)).collect();
                inj.partition = Some(Partition::isolate(raft_port(&self.z, i), &others));
                inj.cut.push(i);
                inj.hold = ms(&mut self.rng, 1000, 4000);
            }
            Fault::FlappingLink => {
                // The link between the leader and one follower goes down
                // and up every 100 to 600 ms.
                let l = self.z.leader().await;
                let f = (l + self.rng.random_range(1..n)) % n;
                let (a, b) = (raft_port(&self.z, l), raft_port(&self.z, f));
                let (stop, mut stopped) = tokio::sync::watch::channel(false);
                let mut rng = SmallRng::seed_from_u64(self.rng.random());
                let task = tokio::spawn(async move {
                    loop {
                        let cut = Partition::isolate(a, &[b]);
                        let down = Duration::from_millis(rng.random_range(100..600));
                        let done = tokio::time::timeout(down, stopped.wait_for(|s| *s)).await.is_ok();
                        drop(cut);
                        if done {
                            return;
                        }
                        let up = Duration::from_millis(rng.random_range(100..600));
                        if tokio::time::timeout(up, stopped.wait_for(|s| *s)).await.is_ok() {
                            return;
                        }
                    }
                });
                inj.flapping = Some((stop, task));
                inj.cut.extend([l, f]);
                inj.hold = ms(&mut self.rng, 2000, 5000);
            }
            Fault::ContainerdRestart => {
                // containerd dies under the agent (kill -9); the shims and
                // the containers live on, as on a real node.
                let a = self.z.agents.len() - 1;
                inj.agent = Some(a);
                self.own.kill();
                inj.hold = ms(&mut self.rng, 300, 2000);
            }
            Fault::PauseAgent | Fault::KillAgent | Fault::NodeLoss => {
                let a = self.rng.random_range(0..self.z.agents.len());
                inj.agent = Some(a);
                match fault {
                    // Short of the node-loss timeout: the agent must come
                    // back to the same containers.
                    Fault::PauseAgent => {
                        self.z.agents[a].signal(libc::SIGSTOP);
                        inj.hold = ms(&mut self.rng, 300, 1500);
                    }
                    Fault::KillAgent => {
                        self.z.kill_agent(a);
                        inj.hold = ms(&mut self.rng, 200, 1200);
                    }
                    _ => {
                        // The machine is gone: its containers stop with it.
                        self.z.kill_agent(a);
                        let agent = &self.z.agents[a];
                        let t = self.run.rec.now();
                        stop_namespace_containers_at(&agent.socket, &agent.ns, self.z.dir()).await;
                        self.node_losses.push((self.z.agents[a].name.clone(), t));
                        inj.hold = NODE_LOST_AFTER + ms(&mut self.rng, 1000, 3000);
                    }
                }
            }
        }
        let target = match inj.agent {
            Some(a) => format!("agent {}", self.z.agents[a].name),
            None => format!("coordinators {:?}", [&inj.killed[..], &inj.paused[..], &inj.cut[..]].concat()),
        };
        self.note(format!("{fault:?} of {target} for {} ms", inj.hold.as_millis()));
        inj
    }

    async fn end(&mut self, inj: &mut Injected) {
        if let Some(mut p) = inj.partition.take() {
            p.heal();
        }
        if let Some((stop, task)) = inj.flapping.take() {
            let _ = stop.send(true);
            task.await.expect("the flapping link's task panicked");
        }
        for &i in &inj.killed {
            self.z.restart_coordinator(i);
        }
        for &i in &inj.paused {
            self.z.coords.signal(i, libc::SIGCONT);
        }
        if let Some(a) = inj.agent {
            match inj.fault {
                Fault::PauseAgent => self.z.agents[a].signal(libc::SIGCONT),
                Fault::ContainerdRestart => {
                    self.own.start();
                    self.containerd_restarts.push(self.run.rec.now());
                }
                _ => self.z.restart_agent(a),
            }
        }
        self.note(format!("{:?} over", inj.fault));
    }

    /// One fault, or two at once (`with`, on an agent): both begin, each
    /// ends after its own hold.
    async fn inject(&mut self, fault: Fault, with: Option<Fault>) {
        let first = self.begin(fault).await;
        let mut all = vec![first];
        if let Some(w) = with {
            self.mixed += 1;
            all.push(self.begin(w).await);
        }
        all.sort_by_key(|i| i.hold);
        let began = Instant::now();
        for inj in &mut all {
            tokio::time::sleep((began + inj.hold).saturating_duration_since(Instant::now())).await;
            self.end(inj).await;
        }
        // Recovered: a leader every coordinator follows, every agent back.
        let l = self.z.leader().await;
        let names: Vec<String> = self.z.agents.iter().map(|a| a.name.clone()).collect();
        self.z.wait_agents_connected(&names, Duration::from_secs(60)).await;
        self.note(format!("recovered, leader c{}", l + 1));
    }
}

/// A containerd of the test's own (the shared one serves other tests).
struct OwnContainerd {
    dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

impl OwnContainerd {
    fn new() -> OwnContainerd {
        let dir = tempfile::Builder::new().prefix("zoe-chaos-ctd-").tempdir_in("/tmp").unwrap();
        let socket = zoe_testkit::Containerd::start_in(dir.path()).expect("a containerd of the test's own");
        OwnContainerd { dir, socket }
    }

    /// kill -9 of the daemon alone.
    fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("containerd.pid")).unwrap();
        unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
    }

    fn start(&self) {
        zoe_testkit::Containerd::start_in(self.dir.path()).expect("containerd starts again");
    }
}

impl Drop for OwnContainerd {
    fn drop(&mut self) {
        zoe_testkit::Containerd::stop_in(self.dir.path());
    }
}

/// One replica's final state, as the checker reads it.
fn replica(name: &str, st: &zoe_coordinator::state::State) -> history::Replica {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(st).unwrap().hash(&mut h);
    history::Replica {
        name: name.to_string(),
        executions: st
            .executions
            .iter()
            .map(|(id, e)| {
                (*id, history::ExecutionView { name: e.name.clone(), status: e.status.as_str().to_string() })
            })
            .collect(),
        users: st.users.values().map(|u| (u.username.clone(), email_version(u.email.as_deref()))).collect(),
        digest: format!("{:016x}", h.finish()),
    }
}

/// Every replica's final state, read once they have all applied the same
/// index (or, after 30 s without that, as they are: the checker reports
/// the divergence).
async fn replica_states(z: &ZoeCluster) -> Vec<history::Replica> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut read = Vec::new();
        for (i, nd) in z.coords.nodes.iter().enumerate() {
            if let Ok((st, status)) = z.coords.client.read_via(i, false).await {
                read.push((replica(&nd.name, &st), status.applied_index));
            }
        }
        let complete = read.len() == z.coords.nodes.len();
        if (complete && read.iter().all(|(_, a)| *a == read[0].1)) || (complete && Instant::now() > deadline) {
            return read.into_iter().map(|(r, _)| r).collect();
        }
        assert!(Instant::now() < deadline + Duration::from_secs(30), "a replica does not answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Small tmpfs data dirs for every coordinator (unmounted on drop, after
/// the cluster that uses them is gone).
struct SmallDisks {
    mounts: Vec<std::path::PathBuf>,
}

impl SmallDisks {
    /// Moves each coordinator's data onto a tmpfs of `mib`, one at a time
    /// (a quorum stays up).
    async fn mount(z: &mut ZoeCluster, mib: u64) -> SmallDisks {
        let mut mounts = Vec::new();
        for i in 0..z.coords.nodes.len() {
            z.leader().await;
            z.kill_coordinator(i);
            let data = z.coords.nodes[i].data_dir.clone();
            let saved = data.with_extension("saved");
            std::fs::rename(&data, &saved).unwrap();
            std::fs::create_dir(&data).unwrap();
            let st = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(&data)
                .status()
                .expect("mount");
            assert!(st.success(), "mount -t tmpfs on {} failed (needs root)", data.display());
            mounts.push(data.clone());
            let st = std::process::Command::new("cp").arg("-a").arg(saved.join(".")).arg(&data).status().unwrap();
            assert!(st.success());
            z.restart_coordinator(i);
        }
        z.leader().await;
        SmallDisks { mounts }
    }

    /// Fills the disk under `dir` to the last byte; returns the filler.
    fn fill(dir: &std::path::Path) -> std::path::PathBuf {
        use std::io::Write;
        let path = dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&[0u8; 1]);
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisks {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = std::process::Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A full disk under the leader's data dir: exploratory, not in CI (see
/// docs/reliability.md, *Not covered yet*). Writes go on through the API
/// while the leader's tmpfs is full, then space comes back; every
/// acknowledged write must be in every replica, and every coordinator must
/// still run and follow one leader. As it stands it does not reach a
/// storage error: 10 s of user creations (241 here) fit in the space sled
/// already held, so whether a coordinator refuses writes cleanly on ENOSPC
/// is still open; it needs writes that outgrow sled's segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "exploratory: what a coordinator does on a full disk (issue #18)"]
async fn a_full_disk_under_the_leader_loses_nothing_and_heals() {
    let mut z = ZoeCluster::builder().coordinators(3).start().await;
    let disks = SmallDisks::mount(&mut z, 64).await;
    let admin = z.api().as_caller();
    let rec = Recorder::new();
    let mut k = 0;
    let write = async |rec: &Recorder, k: &mut u64| {
        let user = format!("u{k}");
        *k += 1;
        let start = rec.now();
        let body = json!({"username": user, "password": format!("{user}-password-1")});
        let r = admin.post("/api/v1/users", &body).await;
        rec.record("admin", start, Call::CreateUser { user }, outcome(&r, |_| Seen::Nothing))
    };
    for _ in 0..5 {
        write(&rec, &mut k).await;
    }
    let l = z.leader().await;
    let filler = SmallDisks::fill(&z.coords.nodes[l].data_dir);
    eprintln!("disk of c{} full", l + 1);
    let full_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < full_until {
        let op = write(&rec, &mut k).await;
        eprintln!("while full: {op}");
    }
    std::fs::remove_file(&filler).unwrap();
    eprintln!("space is back");
    for _ in 0..5 {
        let op = write(&rec, &mut k).await;
        eprintln!("after: {op}");
    }
    for (i, nd) in z.coords.nodes.iter_mut().enumerate() {
        let exited = nd.child.as_mut().map(|c| c.try_wait());
        let log = std::fs::read_to_string(&nd.log).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") || l.contains("space")).take(5).collect();
        eprintln!("c{}: exited {exited:?}; errors: {errors:#?}", i + 1);
    }
    z.leader().await;
    let replicas = replica_states(&z).await;
    let ops = rec.ops();
    let report = history::check(&ops, &history::Observed { replicas, ..Default::default() });
    assert!(report.violations.is_empty(), "{}", report.explain(&ops));
    drop(z);
    drop(disks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_random_faults_keep_every_guarantee() {
    let began = Instant::now();
    let seed = seed("chaos", "ZOE_CHAOS_SEED");
    let seconds: u64 = std::env::var("ZOE_CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let mut rng = SmallRng::seed_from_u64(seed);
    let agent = |n: &str| AgentSpec::new(n).cores(2.0).memory_mib(2048);
    let own = OwnContainerd::new();
    let z = ZoeCluster::builder()
        .coordinators(3)
        .agent(agent("n1"))
        .agent(agent("n2"))
        .agent(agent("n3").containerd(&own.socket))
        .start()
        .await;
    // No limit for the admin's batch jobs; alice gets a quota of 3.
    z.api().ok(Method::PATCH, "/api/v1/quotas/4", Some(json!({"concurrent_executions": 0}))).await;
    let alice = z.user_api("alice").await;
    let alice_id = alice.ok(Method::GET, "/api/v1/whoami", None).await["user_id"].as_u64().expect("alice's id");
    let tight = z
        .api()
        .ok(
            Method::POST,
            "/api/v1/quotas",
            Some(json!({"name": "tight", "concurrent_executions": 3, "memory": 0, "cores": 0, "runtime_limit": 0})),
        )
        .await;
    z.api().ok(Method::PATCH, &format!("/api/v1/users/{alice_id}"), Some(json!({"quota_id": tight["id"]}))).await;

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let run = Arc::new(Run { rec: Recorder::new(), executions: Mutex::new(Vec::new()), stop: stop_rx, alice_id });
    let sampler = Sampler::start(&z, Duration::from_millis(100));
    // Each client has its own seeded choices and its own connections.
    let sub = |k: u64| SmallRng::seed_from_u64(seed.wrapping_add(k));
    let admin = || z.api().as_caller();
    let clients = vec![
        tokio::spawn(batch_client(run.clone(), admin(), sub(1))),
        tokio::spawn(service_client(run.clone(), alice.as_caller(), sub(2))),
        tokio::spawn(email_client(run.clone(), alice.as_caller(), sub(3))),
        tokio::spawn(reader_client(run.clone(), admin(), sub(4))),
        tokio::spawn(admin_client(run.clone(), admin(), sub(5))),
    ];

    let mut chaos = Chaos {
        z,
        own,
        rng: SmallRng::seed_from_u64(rng.random()),
        run: run.clone(),
        log: Vec::new(),
        node_losses: Vec::new(),
        counts: BTreeMap::new(),
        mixed: 0,
        containerd_restarts: Vec::new(),
    };
    let chaos_began = Instant::now();
    let mut order = FAULTS.to_vec();
    order.shuffle(&mut chaos.rng);
    let mut round = 0;
    while chaos_began.elapsed() < Duration::from_secs(seconds) || round < FAULTS.len() {
        let calm = chaos.rng.random_range(500..2000);
        tokio::time::sleep(Duration::from_millis(calm)).await;
        // Each fault alone first, then at random; one coordinator fault in
        // three comes with an agent fault.
        let (fault, with) = match order.get(round) {
            Some(f) => (*f, None),
            None => {
                let f = FAULTS[chaos.rng.random_range(0..FAULTS.len())];
                let agents: Vec<Fault> = FAULTS.into_iter().filter(|f| f.on_agent()).collect();
                let with = (!f.on_agent() && chaos.rng.random_bool(0.33))
                    .then(|| agents[chaos.rng.random_range(0..agents.len())]);
                (f, with)
            }
        };
        chaos.inject(fault, with).await;
        round += 1;
    }
    let chaos_s = chaos_began.elapsed().as_secs_f64();

    // Wind down: clients stop, the long-running executions are terminated,
    // and batch jobs must end by themselves (one whose exit went unnoticed,
    // after a containerd restart say, stays active and fails the check).
    stop.send(true).unwrap();
    for c in clients {
        c.await.expect("a client panicked");
    }
    chaos.z.leader().await;
    let z = &chaos.z;
    let st = z.state().await;
    let admin = z.api().as_caller();
    for (id, e) in st.executions.iter().filter(|(_, e)| e.status.is_active() && !e.description.will_end) {
        run.terminate("teardown", &admin, &e.name, *id).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && z.state().await.executions.values().any(|e| e.status.is_active()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let late starts (second copies) show up before judging.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = sampler.finish().await;

    let replicas = replica_states(z).await;
    let observed = history::Observed {
        replicas,
        samples: samples.iter().map(|(t, cs)| history::Sample { at: run.rec.at(*t), containers: cs.clone() }).collect(),
        final_containers: z.containers().await,
        node_losses: chaos.node_losses.clone(),
    };
    let ops = run.rec.ops();
    // Containers n3 started after containerd first came back under it.
    let n3_after_restart = chaos.containerd_restarts.first().map_or(0, |t0| {
        let mut first_seen: BTreeMap<&str, Micros> = BTreeMap::new();
        for s in observed.samples.iter() {
            for c in s.containers.iter().filter(|c| c.node == "n3" && c.running) {
                first_seen.entry(c.id.as_str()).or_insert(s.at);
            }
        }
        first_seen.values().filter(|t| *t > t0).count()
    });
    let report = history::check(&ops, &observed);
    let executions = observed.replicas[0].executions.len();
    let errors = observed.replicas[0].executions.values().filter(|e| e.status == "error").count();
    let figures = json!({
        "seed": seed,
        "chaos_s": (chaos_s * 10.0).round() / 10.0,
        "wall_s": (began.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "faults": chaos.counts.values().sum::<usize>(),
        "by_fault": chaos.counts,
        "mixed": chaos.mixed,
        "operations": report.operations,
        "writes_acknowledged": report.writes_acknowledged,
        "writes_refused": report.writes_refused,
        "writes_unknown": report.writes_unknown,
        "consistent_reads": report.consistent_reads,
        "executions": executions,
        "executions_in_error": errors,
        "batch_runs_seen": report.batch_runs,
        "reruns_after_node_loss": report.reruns_after_node_loss,
        "n3_starts_after_containerd_restart": n3_after_restart,
        "container_samples": report.samples,
        "lost": report.count("lost"),
        "refused_visible": report.count("refused-visible"),
        "duplicate_runs": report.count("duplicate-run"),
        "doubles": report.count("double"),
        "orphans": report.count("orphan"),
        "linearizability_violations": report.count("linearizability"),
        "divergent_replicas": report.count("divergence"),
        "stuck": report.count("stuck"),
    });
    eprintln!("chaos figures: {figures}");
    assert!(
        report.violations.is_empty(),
        "chaos seed {seed} (replay with ZOE_CHAOS_SEED={seed}): {} violations; the history that shows each:\n{}\nfaults:\n{}",
        report.violations.len(),
        report.explain(&ops),
        chaos.log.join("\n")
    );
}
