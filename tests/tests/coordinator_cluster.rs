//! Cluster tests: three real `zoe coordinator` processes on 127.0.0.1 with
//! mutual TLS from a throwaway CA. Every wait polls with a deadline.

mod harness;

use harness::{Cluster, Partition, Tuning, issue_material};
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zoe_coordinator::raft::network::{Request, Response};
use zoe_coordinator::raft::{CoordNode, CoordinatorClient};
use zoe_coordinator::state::Command;
use zoe_net::{CertificateAuthority, Role};

fn set(key: &str, value: &str) -> Command {
    Command::SetMeta { key: key.to_string(), value: value.to_string() }
}

const ELECTION: Duration = Duration::from_secs(20);

/// Bootstrap of an empty trio started all at once, 1,000 writes through
/// random members, identical state everywhere, linearizable reads through a
/// follower, and a clean SIGTERM of the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_writes_converge_and_sigterm() {
    let t0 = Instant::now();
    let mut c = Cluster::start(3, Tuning::default());
    let leader = c.wait_leader(ELECTION).await;
    eprintln!("{:?} leader elected", t0.elapsed());
    let st = c.status_eventually(leader).await;
    assert_eq!(st.members.len(), 3);
    assert!(st.members.iter().all(|m| m.voter));

    // 8 concurrent writers, each through random members.
    let client = c.client.clone();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::SmallRng::from_os_rng();
            for k in 0..125 {
                let i = rng.random_range(0..3);
                let cmd = set(&format!("w{w}-{k}"), &format!("{k}"));
                let mut tries = 0;
                loop {
                    match client.write_via(i, &cmd).await {
                        Ok(w) => {
                            assert!(w.result.is_ok());
                            break;
                        }
                        Err(e) => {
                            tries += 1;
                            assert!(tries < 50, "write keeps failing: {e}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{:?} 1000 writes done", t0.elapsed());
    let state = c.wait_converged(Duration::from_secs(30)).await;
    assert_eq!(state.meta.keys().filter(|k| k.starts_with('w')).count(), 1000);
    eprintln!("{:?} converged", t0.elapsed());

    // A linearizable read through a follower sees a write just acknowledged.
    let follower = (leader + 1) % 3;
    let last = c.client.write_via(leader, &set("last", "yes")).await.unwrap();
    let (s, staleness) = c.client.read_via(follower, true).await.unwrap();
    assert_eq!(s.meta.get("last").map(String::as_str), Some("yes"));
    assert!(!staleness.is_leader);

    // Status agrees on commit and applied indexes eventually.
    let st = c.status_eventually(leader).await;
    assert!(st.commit_index.unwrap() >= last.index, "{st:?}");
    assert!(st.applied_index.unwrap() >= last.index, "{st:?}");

    // SIGTERM: clean exit, the rest elect a new leader and accept writes.
    eprintln!("{:?} reads done", t0.elapsed());
    let exit = c.terminate(leader, Duration::from_secs(15)).expect("exits after SIGTERM");
    eprintln!("{:?} terminated", t0.elapsed());
    assert!(exit.success(), "exit status {exit:?}");
    let new_leader = c.wait_leader(ELECTION).await;
    assert_ne!(new_leader, leader);
    c.client.write(&set("after-sigterm", "1"), Duration::from_secs(20)).await.unwrap();

    // A restart of the stopped node is not a second bootstrap: it rejoins.
    eprintln!("{:?} written after sigterm", t0.elapsed());
    c.spawn(leader);
    let state = c.wait_converged(Duration::from_secs(30)).await;
    eprintln!("{:?} restarted node converged", t0.elapsed());
    assert!(state.meta.contains_key("last") && state.meta.contains_key("after-sigterm"));
    assert_eq!(state.meta.keys().filter(|k| k.starts_with('w')).count(), 1000);
    let st = c.status_eventually(leader).await;
    assert_eq!(st.members.len(), 3);
}

/// kill -9 the leader during a stream of writes: every acknowledged write
/// is on every member afterwards, including the killed one once restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader_during_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, Tuning::default());
    let leader = c.wait_leader(ELECTION).await;
    let client = c.client.clone();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = 0;
            let mut rng = rand::rngs::SmallRng::from_os_rng();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{w}-{k}");
                let i = rng.random_range(0..3);
                if client.write_via(i, &set(&key, "v")).await.is_ok() {
                    acked.lock().unwrap().insert(key);
                    k += 1;
                }
                // A failed write is retried under a new key: its outcome is
                // unknown, and only acknowledged keys are checked.
                else {
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    let wait_acks = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "writes stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_acks(200).await;
    c.kill(leader);
    let before_kill = acked.lock().unwrap().len();
    let new_leader = c.wait_leader(ELECTION).await;
    assert_ne!(new_leader, leader);
    wait_acks(before_kill + 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // Restart the killed node: it recovers from sled and catches up.
    c.spawn(leader);
    let state = c.wait_converged(Duration::from_secs(60)).await;
    let acked = acked.lock().unwrap();
    let missing: Vec<_> = acked.iter().filter(|k| !state.meta.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{} acknowledged writes lost: {:?}", missing.len(), &missing[..missing.len().min(10)]);
    // The restarted node follows the cluster again.
    let st = c.status_eventually(leader).await;
    assert!(st.leader.is_some() && st.role == "Follower", "{st:?}");
}

/// A member removed, wiped and re-added receives a snapshot (the log it
/// would need has been compacted away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_member_is_readded_and_receives_a_snapshot() {
    let tuning = Tuning { snapshot_every_logs: 100, trailing_logs: 10, ..Tuning::default() };
    let mut c = Cluster::start(3, tuning);
    let leader = c.wait_leader(ELECTION).await;
    for k in 0..400 {
        c.client.write(&set(&format!("k{k}"), "v"), Duration::from_secs(20)).await.unwrap();
    }
    let victim = (leader + 1) % 3;
    let victim_id = c.nodes[victim].id;
    c.client.remove_member(leader, victim_id).await.unwrap();
    c.kill(victim);
    std::fs::remove_dir_all(&c.nodes[victim].data_dir).unwrap();
    for k in 400..500 {
        c.client.write_via(leader, &set(&format!("k{k}"), "v")).await.unwrap();
    }
    let st = c.status_eventually(leader).await;
    assert_eq!(st.members.len(), 2);
    assert!(st.purged_index.unwrap_or(0) > 0, "leader compacted its log: {st:?}");

    c.spawn(victim);
    let node = c.nodes[victim].coord_node();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The restarted process needs a moment to listen; the add is idempotent.
    while let Err(e) = c.client.add_member(leader, victim_id, node.clone()).await {
        assert!(Instant::now() < deadline, "add_member failed: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = c.wait_converged(Duration::from_secs(60)).await;
    assert_eq!(state.meta.keys().filter(|k| k.starts_with('k')).count(), 500);
    let st = c.status_eventually(victim).await;
    assert!(st.snapshots_installed >= 1, "the re-added member got a snapshot: {st:?}");
    assert_eq!(c.status_eventually(leader).await.members.len(), 3);
}

/// Partition the leader: it acknowledges nothing, the majority elects a new
/// leader and goes on, and after healing the old leader takes the
/// majority's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_acknowledges_nothing_and_rejoins() {
    let tuning = Tuning { write_timeout_ms: 3_000, ..Tuning::default() };
    let c = Cluster::start(3, tuning);
    let old = c.wait_leader(ELECTION).await;
    c.client.write_via(old, &set("before", "1")).await.unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let ports: Vec<u16> = others.iter().map(|i| c.nodes[*i].port.port).collect();
    let mut part = Partition::isolate(c.nodes[old].port.port, &ports);

    // The isolated leader may still believe it leads; nothing it is sent
    // gets acknowledged.
    for k in 0..3 {
        let r = c.client.write_via(old, &set(&format!("isolated-{k}"), "x")).await;
        assert!(r.is_err(), "isolated old leader acknowledged a write: {r:?}");
    }
    // The majority elects a new leader and accepts writes.
    let deadline = Instant::now() + ELECTION;
    let new = loop {
        let mut found = None;
        for &i in &others {
            if let Some(s) = c.status(i).await
                && s.role == "Leader"
            {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "majority elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for k in 0..50 {
        c.client.write_via(new, &set(&format!("majority-{k}"), "y")).await.unwrap();
    }

    part.heal();
    let leader = c.wait_leader(ELECTION).await;
    assert_ne!(leader, old);
    let state = c.wait_converged(Duration::from_secs(60)).await;
    assert!(state.meta.contains_key("before"));
    assert_eq!(state.meta.keys().filter(|k| k.starts_with("majority-")).count(), 50);
    assert!(!state.meta.keys().any(|k| k.starts_with("isolated-")), "an unacknowledged write survived");
}

/// Issue #17: a follower resumed after SIGSTOP, or restarted after kill -9,
/// used to time out, raise the term and depose the healthy leader ~3 s
/// later. With the pre-vote (`raft/election.rs`) it finds the others still
/// hear the leader and stays a follower: same leader, same term, and
/// writes keep being acknowledged throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_or_restarted_follower_does_not_depose_the_leader() {
    let mut c = Cluster::start(3, Tuning::default());
    let leader = c.wait_leader(ELECTION).await;
    let term = c.status_eventually(leader).await.term;
    let follower = (leader + 1) % 3;
    let steady = |c: &Cluster, what: &str| {
        let (client, what) = (c.client.clone(), what.to_string());
        async move {
            for k in 0..20 {
                client.write_via(leader, &set(&format!("{what}-{k}"), "v")).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Paused well past every election timeout, then resumed.
    c.signal(follower, libc::SIGSTOP);
    steady(&c, "paused").await;
    c.signal(follower, libc::SIGCONT);
    steady(&c, "resumed").await;
    let st = c.status_eventually(leader).await;
    assert_eq!((st.role.as_str(), st.term), ("Leader", term), "the resumed follower deposed the leader");

    // Killed, restarted after the cached connection to it went stale.
    c.kill(follower);
    steady(&c, "killed").await;
    c.spawn(follower);
    steady(&c, "restarted").await;
    let st = c.status_eventually(leader).await;
    assert_eq!((st.role.as_str(), st.term), ("Leader", term), "the restarted follower deposed the leader");
    let f = c.status_eventually(follower).await;
    assert_eq!((f.leader, f.term), (Some(st.id), term), "the restarted follower follows the leader");
}

/// Only coordinators of this cluster's CA may speak Raft; clients may use
/// the client API; agents and other CAs are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_and_wrong_roles_are_refused() {
    let c = Cluster::start(3, Tuning::default());
    let leader = c.wait_leader(ELECTION).await;
    let members: Vec<CoordNode> = c.nodes.iter().map(|n| n.coord_node()).collect();
    let other = CertificateAuthority::generate("other").unwrap();

    let try_status = |tls: zoe_net::TlsMaterial| {
        let members = members.clone();
        async move {
            let mut cl = CoordinatorClient::new(&tls, members).unwrap();
            cl.attempt_timeout = Duration::from_secs(3);
            cl.status_of(leader).await
        }
    };
    // A coordinator certificate from another CA (trusting our CA, so only
    // the server's verification can stop it).
    assert!(try_status(issue_material(&other, &c.ca, Role::Coordinator, "c1")).await.is_err());
    // An agent of this cluster.
    assert!(try_status(issue_material(&c.ca, &c.ca, Role::Agent, "n1")).await.is_err());
    // A client of this cluster: allowed to ask for status...
    let client_tls = issue_material(&c.ca, &c.ca, Role::Client, "ops");
    assert!(try_status(client_tls.clone()).await.is_ok());
    // ...but not to speak Raft.
    let mut cl = CoordinatorClient::new(&client_tls, members.clone()).unwrap();
    cl.attempt_timeout = Duration::from_secs(3);
    let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(1_000, 9), None);
    match cl.call(leader, &Request::Vote(vote)).await.unwrap() {
        Response::Forbidden(_) => {}
        other => panic!("a client certificate was allowed to vote: {other:?}"),
    }
    // The cluster is unaffected.
    assert_eq!(c.wait_leader(ELECTION).await, leader);
}
