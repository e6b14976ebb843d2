//! Exactly-once start under leader failures (issue #17): real coordinator
//! and agent processes on the real containerd, short batch jobs submitted
//! in waves, and the leader killed with `kill -9` at a random moment of
//! each wave, then restarted (at once, or once another leader took over),
//! or paused with SIGSTOP until another leader took over, or an agent
//! killed with its containers running and restarted. Before the fix a spawn whose answer was lost
//! with the leader was committed as a retryable failure: the execution was
//! requeued and its job ran again under a new container id, sometimes
//! beside the first copy.
//!
//! A sampler lists every agent's containers all along. What must hold:
//! * no service ever has two containers running at once;
//! * no service is ever seen running in more than one container id (a
//!   batch job runs at most once);
//! * every execution ends `terminated` (each job exits 0), the replicated
//!   state and containerd agree, and nothing is left running.
//!
//! `ZOE_TEST_SEED` replays a run; the seed is printed either way.

mod harness;

use harness::zoe::{AgentSpec, Sampler, ZoeCluster, seed};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const IMAGE: &str = zoe_testkit::DEFAULT_REFERENCE;

fn batch(name: &str) -> Value {
    json!({
        "name": name, "version": 3, "will_end": true, "size": 1,
        "services": [{
            "name": "job", "image": IMAGE, "monitor": true,
            "essential_count": 1, "total_count": 1, "startup_order": 0,
            "resources": {"memory": {"min": 16 << 20, "max": 32 << 20}, "cores": {"min": 0.1, "max": null}},
            "environment": [], "volumes": [], "ports": [],
            "command": "sleep 2"
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_jobs_start_exactly_once_while_the_leader_is_killed() {
    let seed = seed("exactly_once", "ZOE_TEST_SEED");
    let mut rng = SmallRng::seed_from_u64(seed);
    let agent = |n: &str| AgentSpec::new(n).cores(2.0).memory_mib(2048);
    let mut z = ZoeCluster::builder().coordinators(3).agent(agent("n1")).agent(agent("n2")).start().await;
    // The default quota allows 5 concurrent executions.
    z.api().ok(reqwest::Method::PATCH, "/api/v1/quotas/4", Some(json!({"concurrent_executions": 0}))).await;

    let sampler = Sampler::start(&z, Duration::from_millis(100));

    let mut ids = Vec::new();
    for wave in 0..4 {
        for k in 0..8 {
            let name = format!("w{wave}j{k}");
            ids.push(z.api().submit_once(&name, &batch(&name)).await);
        }
        // A random moment while the wave's spawns are placed and in flight.
        let leader = z.leader().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..600))).await;
        match rng.random_range(0..4) {
            0 => {
                // Down until the others elect a leader: spawns in flight
                // lose their answers and a new leader takes over.
                z.kill_coordinator(leader);
                let next = z.leader().await;
                eprintln!("wave {wave}: kill -9 of coordinator {leader}; {next} took over");
                z.restart_coordinator(leader);
            }
            1 => {
                // Back within its lease: it may lead again in its old term.
                z.kill_coordinator(leader);
                eprintln!("wave {wave}: kill -9 of coordinator {leader}, restarted at once");
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
                z.restart_coordinator(leader);
            }
            2 => {
                // Paused past the election: when it resumes, its tasks
                // still hold the spawns of a term that is over.
                z.coords.signal(leader, libc::SIGSTOP);
                let next = z.leader_besides(leader).await;
                eprintln!("wave {wave}: SIGSTOP of coordinator {leader}; {next} took over; SIGCONT");
                z.coords.signal(leader, libc::SIGCONT);
            }
            _ => {
                // The agent dies with its containers running: spawns on it
                // get no answer; the restarted agent reattaches them.
                let a = rng.random_range(0..z.agents.len());
                eprintln!("wave {wave}: kill -9 of agent {}", z.agents[a].name);
                z.kill_agent(a);
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
                z.restart_agent(a);
            }
        }
    }
    z.leader().await;

    for id in &ids {
        let e = z
            .api()
            .wait_execution(*id, |e| e["status"] == "terminated" || e["status"] == "error", Duration::from_secs(120))
            .await;
        assert_eq!(e["status"], "terminated", "seed {seed}: execution {id} did not end cleanly: {e:#}");
    }
    // Let late starts (the bug's second copies) show up before judging.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Container ids seen running per service, and the moments two ran at once.
    let mut running: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut doubles = Vec::new();
    for (_, sample) in sampler.finish().await {
        let mut now: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for c in sample {
            if let (true, Some(sid)) = (c.running, c.service) {
                now.entry(sid).or_default().push(c.id);
            }
        }
        for (sid, ids) in now {
            if ids.len() > 1 {
                doubles.push(format!("service {sid} running in {ids:?}"));
            }
            running.entry(sid).or_default().extend(ids);
        }
    }
    assert!(doubles.is_empty(), "seed {seed}: two containers of one service ran at once:\n{}", doubles.join("\n"));
    let twice: Vec<String> =
        running.iter().filter(|(_, c)| c.len() > 1).map(|(sid, c)| format!("service {sid} ran as {c:?}")).collect();
    assert!(twice.is_empty(), "seed {seed}: a batch job ran more than once:\n{}", twice.join("\n"));
    assert!(running.len() >= ids.len() * 3 / 4, "seed {seed}: the sampler saw too few jobs run: {}", running.len());
    let st = z.state().await;
    assert_eq!(st.executions.len(), ids.len(), "seed {seed}: keyed submissions created extra executions");
    let problems = z.audit().await;
    assert!(problems.is_empty(), "seed {seed}: containerd and the state disagree:\n{}", problems.join("\n"));
    assert!(!z.containers().await.iter().any(|c| c.running), "seed {seed}: containers left running");
}
