//! Tenant isolation (issue #15), black box: real `zoe coordinator` and
//! `zoe agent` processes and containerd. A caller with the built-in `user`
//! role tries the escapes a data scientist could and gets a clear 403
//! naming the field; what it may run is confined (seccomp, no CAP_NET_RAW,
//! no new privileges, memory and pids limits) whatever its ZApp says. The
//! agent checks again with its own configuration.

mod harness;

use harness::zoe::{AgentSpec, Api, ZoeCluster};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const IMAGE: &str = zoe_testkit::DEFAULT_REFERENCE;

fn zapp(command: &str, extra: Value) -> Value {
    let mut g = json!({
        "name": "probe", "image": IMAGE, "monitor": true,
        "essential_count": 1, "total_count": 1, "startup_order": 0,
        "resources": { "memory": {"min": null, "max": null}, "cores": {"min": 0.1, "max": null} },
        "environment": [], "volumes": [], "command": command, "ports": []
    });
    g.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({ "name": "probe", "version": 3, "will_end": true, "size": 1, "services": [g] })
}

/// A user-role client (the built-in role of a new user).
async fn user_api(z: &ZoeCluster, name: &str) -> Api {
    let password = format!("{name}-password-1");
    z.api().ok(Method::POST, "/api/v1/users", Some(json!({ "username": name, "password": password }))).await;
    let mut api = z.api().clone();
    api.token = None;
    let r = api.ok(Method::POST, "/api/v1/login", Some(json!({ "username": name, "password": password }))).await;
    api.token = Some(r["token"].as_str().expect("a session token").to_string());
    api
}

async fn refused(api: &Api, app: Value, pointer: &str, says: &str) {
    let r = api.call(Method::POST, "/api/v1/executions", Some(json!({ "name": "escape", "application": app }))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], pointer, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains(says), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_reach_the_host_and_what_it_runs_is_confined() {
    let z = ZoeCluster::builder().agent(AgentSpec::new("n1").cores(2.0).memory_mib(1024)).start().await;
    let eve = user_api(&z, "eve").await;

    // Raw host paths and the host's network need role flags a user lacks;
    // nothing is stored.
    let root = json!({ "volumes": [{ "name": "h", "path": "/", "read_only": false }] });
    refused(&eve, zapp("cat /mnt/h/etc/shadow", root), "/application/services/0/volumes/0", "can_mount_host_paths")
        .await;
    refused(
        &eve,
        zapp("true", json!({ "network": "host" })),
        "/application/services/0/network",
        "can_use_host_network",
    )
    .await;
    let mine = eve.ok(Method::GET, "/api/v1/executions", None).await;
    assert_eq!(mine["executions"].as_array().map(|a| a.len()), Some(0), "{mine}");

    // What a user may run: read its own confinement from inside.
    let probe = "/bin/sh -c 'grep -E \"^(Seccomp|CapEff|NoNewPrivs):\" /proc/self/status; \
        echo mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
        echo pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max); \
        unshare -U true 2>/dev/null; echo unshare=$?; echo probe-done'";
    let b = eve
        .ok(Method::POST, "/api/v1/executions", Some(json!({ "name": "probe", "application": zapp(probe, json!({})) })))
        .await;
    let id = b["id"].as_u64().unwrap();
    let e = eve.wait_status(id, "terminated", Duration::from_secs(60)).await;
    let sid = e["service_details"][0]["id"].as_u64().expect("service id");
    let log = eve.call(Method::GET, &format!("/api/v1/services/{sid}/logs"), None).await;
    let text = log.body.as_str().unwrap_or_default().to_string();
    assert!(text.contains("probe-done"), "{text}");
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k} in {text}"))
    };
    assert_eq!(field("Seccomp:"), "2", "{text}");
    assert_eq!(field("NoNewPrivs:"), "1", "{text}");
    let cap_eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    assert_eq!(cap_eff & (1 << 13), 0, "CAP_NET_RAW is kept: {text}");
    // No memory asked for: the agent's default limit; the pids limit.
    assert_eq!(field("mem="), (4u64 << 30).to_string(), "{text}");
    assert_eq!(field("pids="), "4096", "{text}");
    assert_ne!(field("unshare="), "0", "a new user namespace was allowed: {text}");

    // An admin may ask for a host path; the node has the last word: its
    // [security] host_paths lists none, so the start is refused (fatal, with
    // the reason) and nothing runs.
    let root = json!({ "volumes": [{ "name": "h", "path": "/", "read_only": true }] });
    let id = z.api().submit("admin-root", &zapp("ls /mnt/h", root)).await;
    let e = z.api().wait_status(id, "error", Duration::from_secs(60)).await;
    let msg = e["error_message"].as_str().unwrap_or_default();
    assert!(msg.contains("host_paths"), "{e}");
    assert_eq!(z.audit().await, Vec::<String>::new());
}
