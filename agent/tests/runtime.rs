//! The agent runtime against a real containerd: processes, limits, logs,
//! stop, reattach, orphans. Each test has its own containerd namespace.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{TIMEOUT, env, spec};
use zoe_agent::{BindMount, Resources, ServiceState};
use zoe_common::resources::Millicores;

/// `source` on the host at `target` in the container.
fn mount(source: &std::path::Path, target: &str, read_only: bool) -> BindMount {
    BindMount { source: source.to_path_buf(), target: target.into(), read_only, host_volume: None }
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let e = env("exit").await;
    let ok = e.run(&spec("ok", &["sh", "-c", "exit 0"])).await;
    assert_eq!(ok.code, Some(0));
    assert!(ok.success());
    let bad = e.run(&spec("bad", &["sh", "-c", "exit 7"])).await;
    assert_eq!(bad.code, Some(7));
    assert!(!bad.oom_killed);
    assert_eq!(e.rt.status("bad").unwrap().state, ServiceState::Exited(bad));
    e.cleanup().await;
}

#[tokio::test]
async fn env_args_working_dir_and_user_are_applied() {
    let e = env("env").await;
    let mut s = spec("env", &["sh", "-c", "echo \"$FOO $1\"; pwd; id -u; id -g; echo $HOSTNAME", "sh", "arg1"]);
    s.env = BTreeMap::from([("FOO".to_string(), "bar baz".to_string())]);
    s.working_dir = Some("/tmp".into());
    s.user = Some("1000:1001".into());
    s.hostname = Some("svc-host".into());
    let exit = e.run(&s).await;
    assert_eq!(exit.code, Some(0), "log: {}", e.log("env").await);
    assert_eq!(e.log("env").await, "bar baz arg1\n/tmp\n1000\n1001\nsvc-host\n");
    // A user name is looked up in the image's /etc/passwd.
    let mut s = spec("named", &["sh", "-c", "id -u; id -g"]);
    s.user = Some("user".into());
    assert_eq!(e.run(&s).await.code, Some(0));
    assert_eq!(e.log("named").await, "1000\n1000\n");
    let mut s = spec("nobody-here", &["true"]);
    s.user = Some("alice".into());
    let err = e.rt.spawn(&s).await.unwrap_err();
    assert_eq!(err.kind, zoe_agent::StartErrorKind::Fatal);
    assert!(err.to_string().contains("alice"), "{err}");
    e.cleanup().await;
}

#[tokio::test]
async fn image_default_command_runs_when_none_given() {
    let e = env("default-cmd").await;
    let mut s = spec("dflt", &[]);
    s.command = None;
    // The image's cmd is `sh`; with stdin closed it exits 0 at once.
    assert_eq!(e.run(&s).await.code, Some(0));
    e.cleanup().await;
}

#[tokio::test]
async fn read_only_bind_mounts_are_enforced() {
    let e = env("bind").await;
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from-host\n").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let mut s =
        spec("bind", &["sh", "-c", "cat /ro/f; (echo x > /ro/g) 2>/dev/null; echo ro=$?; echo y > /rw/h; echo rw=$?"]);
    s.mounts = vec![mount(host.path(), "/ro", true), mount(rw.path(), "/rw", false)];
    assert_eq!(e.run(&s).await.code, Some(0));
    let log = e.log("bind").await;
    // One stream (stdout) only, so the order is the program's.
    assert_eq!(log, "from-host\nro=1\nrw=0\n");
    assert!(!host.path().join("g").exists());
    assert_eq!(std::fs::read_to_string(rw.path().join("h")).unwrap(), "y\n");
    e.cleanup().await;
}

#[tokio::test]
async fn memory_limit_is_enforced_and_oom_reported() {
    let e = env("oom").await;
    // 32 MiB: runc's own init runs in the container's cgroup before the
    // command and needs room (under 16 MiB it was once OOM-killed itself).
    let mut s = spec("oom", &["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"]);
    s.resources.memory_bytes = Some(32 << 20);
    let exit = e.run(&s).await;
    assert!(exit.oom_killed, "not reported as OOM: {exit:?}; log: {}", e.log("oom").await);
    assert_eq!(exit.code, Some(137));
    // Under the limit the same command is fine.
    let mut s = spec("fits", &["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1"]);
    s.resources.memory_bytes = Some(32 << 20);
    let exit = e.run(&s).await;
    assert_eq!(exit.code, Some(0));
    assert!(!exit.oom_killed);
    e.cleanup().await;
}

#[tokio::test]
async fn cpu_and_memory_limits_update_live() {
    let e = env("update").await;
    let mut s = spec("upd", &["sh", "-c", "echo ready; exec sleep 1000"]);
    s.resources = Resources {
        cpu: Some(Millicores(500)),
        memory_bytes: Some(64 << 20),
        pids: Some(32),
        shm_bytes: Some(32 << 20),
    };
    e.rt.spawn(&s).await.unwrap();
    e.wait_for_log("upd", "ready").await;
    let l = e.rt.limits("upd").unwrap();
    assert_eq!(l.cpu_quota_us, Some(50_000));
    assert_eq!(l.cpu_period_us, 100_000);
    assert_eq!(l.memory_limit_bytes, Some(64 << 20));
    e.rt.update("upd", Some(Millicores(250)), Some(128 << 20)).await.unwrap();
    let l = e.rt.limits("upd").unwrap();
    assert_eq!(l.cpu_quota_us, Some(25_000));
    assert_eq!(l.memory_limit_bytes, Some(128 << 20));
    e.rt.update("upd", Some(Millicores(1500)), None).await.unwrap();
    assert_eq!(e.rt.limits("upd").unwrap().cpu_quota_us, Some(150_000));
    let u = e.rt.usage("upd").unwrap();
    assert!(u.pids >= 1, "{u:?}");
    assert_eq!(u.memory_limit_bytes, Some(128 << 20));
    e.cleanup().await;
}

#[tokio::test]
async fn logs_are_captured_rotated_and_followed() {
    use futures::StreamExt;
    let mut e = env("logs").await;
    // Small segments so that 500 lines rotate several times.
    let mut cfg = support::config(&e.ns, e.dir.path());
    cfg.logs = zoe_agent::LogConfig { max_segment_bytes: 512, keep_segments: 3 };
    e.rt = zoe_agent::Runtime::connect(cfg).await.unwrap();
    let exit = e.run(&spec("many", &["seq", "1", "500"])).await;
    assert_eq!(exit.code, Some(0));
    let c = e.rt.logs("many", 0, 1 << 20).await.unwrap();
    let text = String::from_utf8(c.data.clone()).unwrap();
    assert!(c.offset > 0, "old segments should be rotated away");
    assert!(text.ends_with("\n499\n500\n"), "{text:?}");
    assert!(c.data.len() <= 3 * 512, "kept {} bytes", c.data.len());
    let total: usize = (1..=500).map(|i: i32| i.to_string().len() + 1).sum::<usize>();
    assert_eq!(c.next as usize, total);
    // Reading from an offset inside the kept part returns exactly the rest.
    let tail = e.rt.logs("many", c.next - 8, 100).await.unwrap();
    assert_eq!(tail.data, b"499\n500\n");

    // Follow a service while it writes (stdout and stderr; their relative
    // order is not kept, as with any two pipes): the stream ends when it exits.
    let s = spec("slow", &["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done; echo err >&2"]);
    e.rt.spawn(&s).await.unwrap();
    let mut follow = e.rt.follow_logs("slow", 0).unwrap();
    let mut seen = String::new();
    tokio::time::timeout(TIMEOUT, async {
        while let Some(c) = follow.next().await {
            seen.push_str(&String::from_utf8_lossy(&c.unwrap().data));
        }
    })
    .await
    .expect("follow ends when the service exits");
    let mut lines: Vec<&str> = seen.lines().collect();
    lines.sort();
    assert_eq!(lines, ["err", "line1", "line2", "line3", "line4", "line5"], "{seen:?}");
    e.cleanup().await;
}

#[tokio::test]
async fn stop_with_grace_lets_the_service_handle_sigterm() {
    let e = env("grace").await;
    let s =
        spec("trap", &["sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done"]);
    e.rt.spawn(&s).await.unwrap();
    e.wait_for_log("trap", "ready").await;
    let t = Instant::now();
    let exit = e.rt.stop("trap", Duration::from_secs(20)).await.unwrap().expect("exit seen");
    assert_eq!(exit.code, Some(3));
    assert!(t.elapsed() < Duration::from_secs(20), "took the whole grace period");
    // Logs survive the container.
    assert!(e.log("trap").await.contains("got-term"));
    assert!(matches!(e.rt.status("trap"), Err(zoe_agent::Error::ServiceNotFound(_))));
    e.cleanup().await;
}

#[tokio::test]
async fn stop_kills_after_the_grace_period_and_is_idempotent() {
    let e = env("kill").await;
    // PID 1 without a handler ignores SIGTERM: only SIGKILL ends it.
    let s = spec("stubborn", &["sh", "-c", "echo ready; exec sleep 1000"]);
    e.rt.spawn(&s).await.unwrap();
    e.wait_for_log("stubborn", "ready").await;
    let t = Instant::now();
    let exit = e.rt.stop("stubborn", Duration::from_millis(500)).await.unwrap().expect("exit seen");
    assert_eq!(exit.code, Some(137));
    assert!(t.elapsed() >= Duration::from_millis(500));
    // Gone: stopping again (and stopping something never seen) succeeds.
    assert_eq!(e.rt.stop("stubborn", Duration::ZERO).await.unwrap(), None);
    assert_eq!(e.rt.stop("never-existed", Duration::ZERO).await.unwrap(), None);
    e.cleanup().await;
}

#[tokio::test]
async fn a_new_runtime_reattaches_without_restarting_anything() {
    let mut e = env("reattach").await;
    let shared = tempfile::tempdir().unwrap();
    let mut long = spec(
        "long",
        &["sh", "-c", "echo ready; while [ ! -f /x/go ]; do sleep 0.05; done; echo after-go; exec sleep 1000"],
    );
    long.mounts = vec![mount(shared.path(), "/x", false)];
    e.rt.spawn(&long).await.unwrap();
    e.wait_for_log("long", "ready").await;
    let pid = match e.rt.status("long").unwrap().state {
        ServiceState::Running { pid } => pid,
        s => panic!("not running: {s:?}"),
    };
    assert_eq!(e.run(&spec("done", &["sh", "-c", "exit 4"])).await.code, Some(4));
    let mut waiter =
        spec("waiter", &["sh", "-c", "echo ready; while [ ! -f /x/go ]; do sleep 0.05; done; echo bye; exit 5"]);
    waiter.mounts = vec![mount(shared.path(), "/x", false)];
    e.rt.spawn(&waiter).await.unwrap();
    e.wait_for_log("waiter", "ready").await;

    // The agent goes away; `waiter` finishes while nobody watches.
    let cfg = e.rt.config().clone();
    e.rt.shutdown().await;
    std::fs::write(shared.path().join("go"), "").unwrap();
    e.rt = zoe_agent::Runtime::connect(cfg).await.unwrap();

    assert_eq!(e.rt.status("long").unwrap().state, ServiceState::Running { pid });
    assert_eq!(e.rt.status("long").unwrap().owner.execution_id, "42");
    assert_eq!(
        e.rt.status("done").unwrap().state,
        ServiceState::Exited(zoe_agent::ExitStatus { code: Some(4), oom_killed: false })
    );
    let exit = tokio::time::timeout(TIMEOUT, e.rt.wait("waiter")).await.unwrap().unwrap();
    assert_eq!(exit.code, Some(5));
    // Output of a running container written while no agent was there waits
    // in its pipe. (The last output of a container that *exits* while no
    // agent runs can be lost: the shim closes the pipe at exit.)
    e.wait_for_log("long", "after-go").await;
    assert!(e.rt.orphans().await.unwrap().is_empty());
    // The reattached service is fully manageable.
    e.rt.update("long", Some(Millicores(300)), None).await.unwrap();
    assert_eq!(e.rt.stop("long", Duration::from_millis(200)).await.unwrap().map(|x| x.code), Some(Some(137)));
    e.cleanup().await;
}

#[tokio::test]
async fn containers_without_zoe_labels_are_orphans() {
    use containerd_client::services::v1::{Container, CreateContainerRequest, container::Runtime as R};
    let e = env("orphan").await;
    let ctd = e.rt.containerd();
    let c = Container {
        id: "stray".into(),
        image: support::IMAGE.into(),
        runtime: Some(R { name: "io.containerd.runc.v2".into(), options: None }),
        spec: Some(prost_types_any()),
        labels: [("owner".to_string(), "someone-else".to_string())].into(),
        ..Default::default()
    };
    ctd.containers().create(ctd.rq(CreateContainerRequest { container: Some(c) })).await.unwrap();
    e.rt.spawn(&spec("mine", &["sh", "-c", "exit 0"])).await.unwrap();
    let orphans = e.rt.orphans().await.unwrap();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(orphans[0].id, "stray");
    assert_eq!(orphans[0].labels.get("owner").map(String::as_str), Some("someone-else"));
    assert!(!orphans[0].running);
    assert!(e.rt.services().iter().all(|s| s.id != "stray"));
    // The coordinator may decide to remove it.
    e.rt.stop("stray", Duration::ZERO).await.unwrap();
    assert!(e.rt.orphans().await.unwrap().is_empty());

    // A running container whose zoe labels are gone (say, started by an
    // older agent) is a running orphan, and stopping it kills it.
    let mut e = e;
    e.rt.spawn(&spec("runaway", &["sh", "-c", "echo ready; exec sleep 1000"])).await.unwrap();
    e.wait_for_log("runaway", "ready").await;
    let cfg = e.rt.config().clone();
    e.rt.shutdown().await;
    let ctd = e.rt.containerd().clone();
    let paths = [zoe_agent::spec::LABEL_SERVICE, zoe_agent::spec::LABEL_EXECUTION, zoe_agent::spec::LABEL_INSTANCE]
        .iter()
        .map(|k| format!("labels.{k}"))
        .collect();
    let c = Container { id: "runaway".into(), ..Default::default() };
    let req = containerd_client::services::v1::UpdateContainerRequest {
        container: Some(c),
        update_mask: Some(prost_types::FieldMask { paths }),
    };
    ctd.containers().update(ctd.rq(req)).await.unwrap();
    e.rt = zoe_agent::Runtime::connect(cfg).await.unwrap();
    let orphans = e.rt.orphans().await.unwrap();
    assert_eq!(orphans.iter().map(|o| (o.id.as_str(), o.running)).collect::<Vec<_>>(), [("runaway", true)]);
    assert!(e.rt.services().iter().all(|s| s.id != "runaway"));
    e.rt.stop("runaway", Duration::ZERO).await.unwrap();
    assert!(e.rt.orphans().await.unwrap().is_empty());
    e.cleanup().await;
}

fn prost_types_any() -> prost_types::Any {
    prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
        value: b"{}".to_vec(),
    }
}

#[tokio::test]
async fn fifty_back_to_back_runs_do_not_race_the_gc() {
    let e = env("b2b").await;
    for i in 0..50 {
        let id = format!("run-{i}");
        let exit = e.run(&spec(&id, &["true"])).await;
        assert_eq!(exit.code, Some(0), "run {i}");
        e.rt.stop(&e.id(&id), Duration::ZERO).await.unwrap();
    }
    assert!(e.rt.services().is_empty());
    e.cleanup().await;
}

#[tokio::test]
async fn node_stats_report_capacity_minus_reserve() {
    let e = support::bare("node").await;
    let s = e.rt.node_stats();
    assert!(s.cores >= 1);
    assert!(s.memory_total_bytes > 0 && s.memory_available_bytes <= s.memory_total_bytes);
    assert_eq!(s.capacity_cpu, Millicores::from_whole_cores(s.cores));
    let mut cfg = support::config(&e.ns, e.dir.path());
    cfg.reserve = zoe_agent::Reserve { cpu: Millicores(500), memory_bytes: 1 << 30 };
    let rt = zoe_agent::Runtime::connect(cfg).await.unwrap();
    let s2 = rt.node_stats();
    assert_eq!(s2.capacity_cpu, Millicores(s.cores * 1000 - 500));
    assert_eq!(s2.capacity_memory_bytes, s2.memory_total_bytes - (1 << 30));
    drop(rt);
    e.cleanup().await;
}

#[tokio::test]
async fn a_user_namespace_makes_root_the_owner_and_the_image_still_roots() {
    use std::os::unix::fs::MetadataExt;
    let e = env("userns").await;
    let ws = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(ws.path(), Some(1000), Some(5001)).unwrap();
    let ids = zoe_agent::IdMapping { root_uid: 1000, root_gid: 5001, base: 2_000_000_000 };
    let mut s = spec(
        "root",
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; id -u; stat -c owner=%u /bin/busybox; echo x > /etc/written && echo etc=ok; \
             echo mine > /ws/root-file; ls /sys/class >/dev/null && echo sys=ok",
        ],
    );
    s.mounts = vec![mount(ws.path(), "/ws", false)];
    s.user_namespace = Some(ids);
    assert_eq!(e.run(&s).await.code, Some(0), "log: {}", e.log("root").await);
    let log = e.log("root").await;
    let map: Vec<Vec<&str>> = log.lines().take(2).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(map, vec![vec!["0", "1000", "1"], vec!["1", "2000000001", "65535"]], "{log}");
    assert!(log.contains("\n0\nowner=0\netc=ok\nsys=ok\n"), "root inside, the image's files root's: {log}");
    // What the container's root wrote is the owner's on the host.
    let meta = std::fs::metadata(ws.path().join("root-file")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 5001));

    // Another id inside is the node's subordinate range outside.
    let mut s = spec("other", &["sh", "-c", "echo theirs > /ws/other-file"]);
    s.mounts = vec![mount(ws.path(), "/ws", false)];
    s.user_namespace = Some(ids);
    std::fs::set_permissions(ws.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    s.user = Some("1000:1000".into());
    assert_eq!(e.run(&s).await.code, Some(0), "log: {}", e.log("other").await);
    let meta = std::fs::metadata(ws.path().join("other-file")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (2_000_001_000, 2_000_001_000));
    e.cleanup().await;
}
