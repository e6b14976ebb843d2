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

async fn refused(api: &Api, app: Value, pointer: &str, says: &str) {
    let r = api.call(Method::POST, "/api/v1/executions", Some(json!({ "name": "escape", "application": app }))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], pointer, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains(says), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_reach_the_host_and_what_it_runs_is_confined() {
    // Workspaces as Zoe has them: WORKSPACE_BASE/<user>, the user's own.
    let ws = tempfile::tempdir().unwrap();
    let base = ws.path().display().to_string();
    let z = ZoeCluster::builder()
        .leader(&format!("workspace_base = {base:?}"))
        .agent(AgentSpec::new("n1").cores(2.0).memory_mib(1024).toml(&format!("[security]\nhost_paths = [{base:?}]")))
        .start()
        .await;
    let eve = z.user_api("eve").await;
    let users = z.api().ok(Method::GET, "/api/v1/users", None).await;
    let fs_uid = users
        .as_array()
        .and_then(|a| a.iter().find(|u| u["username"] == "eve"))
        .and_then(|u| u["fs_uid"].as_u64())
        .expect("eve's fs_uid") as u32;
    let home = ws.path().join("eve");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(fs_uid), Some(5001)).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();

    // Raw host paths and the host's network need role flags a user lacks;
    // nothing is stored.
    let root = json!({ "volumes": [{ "name": "h", "path": "/", "read_only": false }] });
    refused(
        &eve,
        zapp("cat /mnt/h/etc/shadow", root),
        "/application/services/0/volumes/0/path",
        "can_mount_host_paths",
    )
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
        unshare -U true 2>/dev/null; echo unshare=$?; \
        echo uid_map=$(head -1 /proc/self/uid_map); echo id=$(id -u); \
        echo mine > /mnt/workspace/out && echo workspace=ok; echo probe-done'";
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
    // Root inside, the owner outside: what the job writes to the workspace
    // is the user's fs_uid's on the host, as in Zoe.
    let map: Vec<String> = field("uid_map=").split_whitespace().map(String::from).collect();
    assert_eq!(map, ["0", &fs_uid.to_string(), "1"], "{text}");
    assert_eq!(field("id="), "0", "{text}");
    assert_eq!(field("workspace="), "ok", "{text}");
    let meta = std::fs::metadata(home.join("out")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (fs_uid, 5001), "owner of a file the job wrote");

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

/// Named host volumes: the nodes' admins define them, ZApps name them, and
/// an execution lands only on a node that offers the volume to its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_volumes_are_offered_by_nodes_to_whom_their_admin_says() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello.txt"), "from-the-dataset\n").unwrap();
    std::fs::set_permissions(data.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = data.path().display().to_string();
    let volumes = format!(
        "[[host_volume]]\nname = \"datasets\"\npath = {path:?}\nread_only = true\nroles = [\"user\"]\n\n\
         [[host_volume]]\nname = \"vault\"\npath = {path:?}\nusers = [\"alice\"]\n"
    );
    let z = ZoeCluster::builder()
        .agent(AgentSpec::new("n1").cores(2.0).memory_mib(1024))
        .agent(AgentSpec::new("n2").cores(2.0).memory_mib(1024).toml(&volumes))
        .start()
        .await;
    let eve = z.user_api("eve").await;
    let vol = |name: &str, ro: bool| json!({ "volumes": [{ "name": "d", "host_volume": name, "read_only": ro }] });

    // A raw path still needs the role flag; a volume nobody offers is a 400,
    // one offered to others only a 403; nothing is stored.
    let raw = json!({ "volumes": [{ "name": "d", "path": path, "read_only": true }] });
    refused(&eve, zapp("true", raw), "/application/services/0/volumes/0/path", "can_mount_host_paths").await;
    refused(
        &eve,
        zapp("true", vol("vault", true)),
        "/application/services/0/volumes/0/host_volume",
        "not offered to user eve",
    )
    .await;
    let r = eve
        .call(
            Method::POST,
            "/api/v1/executions",
            Some(json!({ "name": "x", "application": zapp("true", vol("nowhere", true)) })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["error"]["details"][0]["path"], "/application/services/0/volumes/0/host_volume", "{}", r.body);

    // Offered to role user, read-only whatever the ZApp asks, and only on n2.
    let probe = "/bin/sh -c 'cat /mnt/d/hello.txt; (echo x > /mnt/d/new) 2>/dev/null; echo write=$?'";
    let b = eve
        .ok(
            Method::POST,
            "/api/v1/executions",
            Some(json!({ "name": "read", "application": zapp(probe, vol("datasets", false)) })),
        )
        .await;
    let e = eve.wait_status(b["id"].as_u64().unwrap(), "terminated", Duration::from_secs(60)).await;
    let s = &e["service_details"][0];
    assert_eq!(s["node"], "n2", "{e}");
    let log = eve.call(Method::GET, &format!("/api/v1/services/{}/logs", s["id"]), None).await;
    let text = log.body.as_str().unwrap_or_default();
    assert!(text.contains("from-the-dataset") && text.contains("write=1"), "{text}");
    assert!(!data.path().join("new").exists());

    let node = z.api().ok(Method::GET, "/api/v1/nodes/n2", None).await;
    let names: Vec<&str> = node["host_volumes"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["datasets", "vault"], "{node}");
    assert_eq!(z.audit().await, Vec::<String>::new());
}
