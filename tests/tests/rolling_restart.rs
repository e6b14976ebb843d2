//! A rolling restart of all three coordinators (issue #17): each in turn
//! gets SIGTERM, is started again and rejoins, while a client submits
//! batch jobs without pause through the `zoe` CLI with every coordinator
//! in `--addr` (keyed submissions, retried through failovers). What must
//! hold: no CLI call fails, and every submission made exactly one
//! execution, which ran to its end.

mod harness;

use harness::zoe::{AgentSpec, ZoeCluster};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const IMAGE: &str = zoe_testkit::DEFAULT_REFERENCE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_keyed_cli_load_fails_no_call_and_duplicates_nothing() {
    let mut z =
        ZoeCluster::builder().coordinators(3).agent(AgentSpec::new("n1").cores(4.0).memory_mib(2048)).start().await;
    // The admin's quota must not be what refuses a submission here.
    z.api()
        .ok(Method::PATCH, "/api/v1/quotas/4", Some(json!({ "concurrent_executions": 0, "cores": 0, "memory": 0 })))
        .await;
    let app = json!({
        "name": "tick", "version": 3, "will_end": true, "size": 1,
        "services": [{
            "name": "job", "image": IMAGE, "monitor": true,
            "essential_count": 1, "total_count": 1, "startup_order": 0,
            "resources": {"memory": {"min": 16 << 20, "max": 32 << 20}, "cores": {"min": 0.1, "max": null}},
            "environment": [], "volumes": [], "ports": [], "command": "true"
        }]
    });
    let file = z.dir().join("tick.json");
    std::fs::write(&file, app.to_string()).unwrap();

    // The load: one CLI call after another until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut commands = Vec::new();
    for k in 0..10_000 {
        let name = format!("tick-{k}");
        commands.push((name.clone(), z.cli_command_all(&["exec", "start", &name, file.to_str().unwrap(), "--json"])));
    }
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut done: Vec<(String, Result<u64, String>)> = Vec::new();
            for (name, mut cmd) in commands {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let out = cmd.output().expect("run zoe");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let r = if out.status.success() {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_u64())
                        .ok_or_else(|| format!("no id in {text}"))
                } else {
                    Err(format!("exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr)))
                };
                done.push((name, r));
                std::thread::sleep(Duration::from_millis(100));
            }
            done
        })
    };

    // Restart each coordinator in turn, the leader last (the usual order:
    // followers first, one leader change).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = z.leader().await;
    let order: Vec<usize> = (0..3).filter(|i| *i != leader).chain([leader]).collect();
    for i in order {
        let st = z.coords.terminate(i, Duration::from_secs(20));
        assert!(st.is_some_and(|s| s.success()), "coordinator {i} did not stop cleanly on SIGTERM: {st:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        z.restart_coordinator(i);
        z.coords.status_eventually(i).await;
        z.state().await; // converged: it has caught up before the next goes
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let done = tokio::task::spawn_blocking(move || load.join().unwrap()).await.unwrap();

    let failed: Vec<_> = done.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "{} of {} CLI calls failed: {failed:#?}", failed.len(), done.len());
    assert!(done.len() >= 10, "only {} submissions during the restarts", done.len());
    let st = z.state().await;
    let mut by_name: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in st.executions.values() {
        by_name.entry(e.name.as_str()).or_default().push(e.id);
    }
    for (name, r) in &done {
        let ids = by_name.get(name.as_str()).cloned().unwrap_or_default();
        assert_eq!(ids, vec![*r.as_ref().unwrap()], "{name}: executions {ids:?}");
    }
    assert_eq!(st.executions.len(), done.len(), "executions without a submission");
    for (_, r) in &done {
        z.api().wait_status(*r.as_ref().unwrap(), "terminated", Duration::from_secs(120)).await;
    }
    eprintln!("{} keyed CLI submissions through 3 coordinator restarts, none failed or doubled", done.len());
    assert_eq!(z.audit().await, Vec::<String>::new());
}
