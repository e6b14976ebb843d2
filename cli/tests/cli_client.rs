//! The `zoe` client commands, run as the built binary against a real
//! `zoe coordinator --config` process (single member, Raft on sled, API on
//! a free 127.0.0.1 port).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use zoe_net::{CertificateAuthority, Identity, Role};

const ZOE: &str = env!("CARGO_BIN_EXE_zoe");

struct Coordinator {
    child: Option<Child>,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}

impl Coordinator {
    fn start() -> Coordinator {
        let dir = tempfile::Builder::new().prefix("zoe-cli-").tempdir().unwrap();
        let ca = CertificateAuthority::generate("test").unwrap();
        ca.write(dir.path()).unwrap();
        let id = Identity::new(Role::Coordinator, "c1").unwrap();
        ca.issue(&id, &[], &["127.0.0.1".parse().unwrap()]).unwrap().write(dir.path(), "c1").unwrap();
        let (raft, api) = (free_port(true), free_port(false));
        let cfg = format!(
            "id = 1\nname = \"c1\"\nlisten = \"127.0.0.1:{raft}\"\ndata_dir = \"data\"\n\n\
             [tls]\nca = \"ca.pem\"\ncert = \"c1.pem\"\nkey = \"c1-key.pem\"\n\n\
             [[peers]]\nid = 1\naddr = \"127.0.0.1:{raft}\"\nname = \"c1\"\n\n\
             [raft]\nheartbeat_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\n"
        );
        let path = dir.path().join("c1.toml");
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("c1.log")).unwrap();
        let child = Command::new(ZOE)
            .args(["coordinator", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Coordinator { child: Some(child), dir, url: format!("http://127.0.0.1:{api}") }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("data").join("bootstrap-token")
    }

    fn wait_bootstrap_token(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.token_file().exists() {
            assert!(Instant::now() < deadline, "no bootstrap token; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("c1.log")).unwrap_or_default()
    }

    /// Runs `zoe ARGS` against this coordinator with `token`.
    fn zoe(&self, token: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(ZOE);
        cmd.args(args)
            .env("ZOE_ADDR", &self.url)
            .env("ZOE_CONFIG", self.dir.path().join("client.toml"))
            .env_remove("ZOE_TOKEN")
            .stdin(Stdio::null());
        if let Some(t) = token {
            cmd.env("ZOE_TOKEN", t);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status, out(o), err(o));
    out(o)
}

fn fails(o: &Output, code: i32, stderr_has: &str) {
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {}", out(o), err(o));
    assert!(err(o).contains(stderr_has), "stderr lacks {stderr_has:?}: {}", err(o));
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out(o)))
}

fn write_zapp(dir: &Path, name: &str, cores_min: f64, memory_min: Value) -> PathBuf {
    let app = serde_json::json!({
        "name": "hello", "version": 3, "will_end": true, "size": 1,
        "services": [{
            "name": "hello", "image": "zoe.local/busybox:1", "monitor": true,
            "essential_count": 1, "total_count": 1, "startup_order": 0,
            "resources": { "memory": { "min": memory_min, "max": null }, "cores": { "min": cores_min, "max": null } },
            "environment": [], "volumes": [], "command": "/bin/true", "ports": []
        }]
    });
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(&app).unwrap()).unwrap();
    p
}

#[test]
fn client_commands_against_a_real_coordinator() {
    let c = Coordinator::start();
    let dir = c.dir.path().to_path_buf();

    // Usage errors exit 2; completions print a script.
    let o = c.zoe(None, &["exec", "get", "notanumber"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = c.zoe(None, &["completions", "bash"], &[]);
    assert!(ok(&o).contains("zoe"));

    c.wait_bootstrap_token();
    let o = c.zoe(None, &["info"], &[]);
    assert!(ok(&o).contains("API v1"), "{}", out(&o));
    let o = c.zoe(None, &["exec", "ls"], &[]);
    fails(&o, 1, "zoe login");

    // ACL bootstrap from the token file.
    let arg = format!("@{}", c.token_file().display());
    let v = json(&c.zoe(None, &["acl", "bootstrap", "--bootstrap-token", &arg, "--json"], &[]));
    let admin = v["token"].as_str().unwrap().to_string();
    let o = c.zoe(None, &["acl", "bootstrap", "--bootstrap-token", &arg], &[]);
    fails(&o, 1, "already bootstrapped");

    // Users: create with a password, log in, save the session in the config file.
    let v = json(&c.zoe(
        Some(&admin),
        &["user", "create", "ada", "--email", "ada@example.org", "--json"],
        &[("ZOE_NEW_PASSWORD", "ada-password")],
    ));
    let ada_id = v["id"].as_u64().unwrap().to_string();
    let o = c.zoe(None, &["login", "--username", "ada", "--save"], &[("ZOE_PASSWORD", "ada-password")]);
    ok(&o);
    let saved = std::fs::read_to_string(dir.join("client.toml")).unwrap();
    assert!(saved.contains("token = \"zoe_"), "{saved}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(dir.join("client.toml")).unwrap().permissions().mode() & 0o777, 0o600);
    let o = c.zoe(None, &["login", "--username", "ada"], &[("ZOE_PASSWORD", "wrong-password")]);
    fails(&o, 1, "wrong username or password");
    let ada = toml::from_str::<toml::Value>(&saved).unwrap()["token"].as_str().unwrap().to_string();

    // Executions as ada (token from the saved config file: no --token).
    let hello = write_zapp(&dir, "hello.json", 0.5, 16_777_216.into());
    let v = json(&c.zoe(None, &["exec", "start", "run1", hello.to_str().unwrap(), "--json"], &[]));
    let id = v["id"].as_u64().unwrap().to_string();
    // Several coordinators: a dead first address fails over to the next,
    // for reads and for submissions (sent with an Idempotency-Key).
    let addrs = format!("http://127.0.0.1:{},{}", free_port(false), c.url);
    let v = json(&c.zoe(
        None,
        &["exec", "start", "run-failover", hello.to_str().unwrap(), "--json"],
        &[("ZOE_ADDR", &addrs)],
    ));
    assert!(v["id"].as_u64().is_some(), "{v}");
    let table = ok(&c.zoe(None, &["exec", "ls"], &[("ZOE_ADDR", &addrs)]));
    assert!(table.contains("run-failover"), "{table}");
    let v = json(&c.zoe(None, &["exec", "terminate", &v["id"].to_string(), "--json"], &[("ZOE_ADDR", &addrs)]));
    assert!(v.is_object(), "{v}");
    // The leader loop queues it at once; with no node it waits there.
    let table = ok(&c.zoe(None, &["exec", "ls"], &[]));
    assert!(table.contains("run1") && table.starts_with("ID"), "{table}");
    assert!(table.contains("submitted") || table.contains("queued"), "{table}");
    let v = json(&c.zoe(None, &["exec", "ls", "--json", "--status", "submitted,queued"], &[]));
    assert_eq!(v["executions"][0]["id"].to_string(), id);
    let v = json(&c.zoe(None, &["exec", "ls", "--json", "--status", "running"], &[]));
    assert_eq!(v["executions"], serde_json::json!([]));
    let text = ok(&c.zoe(None, &["exec", "get", &id], &[]));
    assert!(text.contains("hello0") && text.contains("run1"), "{text}");
    let v = json(&c.zoe(None, &["exec", "app", &id], &[]));
    assert_eq!(v["name"], "hello");
    ok(&c.zoe(None, &["exec", "endpoints", &id], &[]));
    let o = c.zoe(None, &["exec", "logs", "999999"], &[]);
    fails(&o, 1, "not found");

    // A bad ZApp: exit 1 and the pointer into it.
    let bad = write_zapp(&dir, "bad.json", -1.0, "lots".into());
    let o = c.zoe(None, &["exec", "start", "bad", bad.to_str().unwrap()], &[]);
    fails(&o, 1, "/application/services/0/resources/memory/min");

    // Terminate and wait; delete needs can_delete_executions.
    let text = ok(&c.zoe(None, &["exec", "terminate", &id, "--wait"], &[]));
    assert!(text.contains("terminated"), "{text}");
    let o = c.zoe(None, &["exec", "rm", &id], &[]);
    fails(&o, 1, "can_delete_executions");
    ok(&c.zoe(Some(&admin), &["exec", "rm", &id], &[]));
    let o = c.zoe(Some(&admin), &["exec", "get", &id], &[]);
    fails(&o, 1, "not found");

    // Quotas: one execution at a time for ada.
    let v = json(&c.zoe(
        Some(&admin),
        &[
            "quota",
            "create",
            "tiny",
            "--concurrent-executions",
            "1",
            "--memory",
            "0",
            "--cores",
            "0",
            "--runtime-limit",
            "3600",
            "--json",
        ],
        &[],
    ));
    let qid = v["id"].as_u64().unwrap().to_string();
    ok(&c.zoe(Some(&admin), &["user", "update", &ada_id, "--quota-id", &qid], &[]));
    ok(&c.zoe(Some(&ada), &["exec", "start", "one", hello.to_str().unwrap()], &[]));
    let o = c.zoe(Some(&ada), &["exec", "start", "two", hello.to_str().unwrap()], &[]);
    fails(&o, 1, "quota");
    let text = ok(&c.zoe(Some(&admin), &["quota", "ls"], &[]));
    assert!(text.contains("tiny") && text.contains("default"), "{text}");

    // Admin-only commands refuse ada.
    let o = c.zoe(Some(&ada), &["user", "ls"], &[]);
    fails(&o, 1, "can_change_config");
    let text = ok(&c.zoe(Some(&admin), &["user", "ls"], &[]));
    assert!(text.contains("ada@example.org"), "{text}");
    let v = json(&c.zoe(
        Some(&admin),
        &["role", "create", "watcher", "--can-see-status", "true", "--can-access-api", "true", "--json"],
        &[],
    ));
    assert!(v["id"].as_u64().is_some());
    let text = ok(&c.zoe(Some(&admin), &["role", "ls"], &[]));
    assert!(text.contains("watcher") && text.contains("status,api"), "{text}");

    // Nodes (none registered: no agents yet), stats, operator.
    let v = json(&c.zoe(Some(&admin), &["node", "ls", "--json"], &[]));
    assert_eq!(v, serde_json::json!([]));
    let o = c.zoe(Some(&admin), &["node", "eligibility", "n1", "off"], &[]);
    fails(&o, 1, "not found");
    let o = c.zoe(Some(&admin), &["node", "drain", "n1", "--deadline", "1h"], &[]);
    fails(&o, 1, "not found");
    let text = ok(&c.zoe(Some(&admin), &["stats"], &[]));
    assert!(text.contains("submitted") && text.contains("CORES (TOTAL / RESERVED / ALLOCATED / IN USE)"), "{text}");
    let text = ok(&c.zoe(Some(&admin), &["operator", "members"], &[]));
    assert!(text.contains("leader") && text.contains("c1"), "{text}");

    // Backups: a saved snapshot is private and checks; restoring it over a
    // cluster that holds executions needs --force, and gives the same state.
    let snap = c.dir.path().join("backup.json");
    let v = json(&c.zoe(Some(&admin), &["operator", "snapshot", "save", snap.to_str().unwrap(), "--json"], &[]));
    assert!(v["executions"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(std::fs::metadata(&snap).unwrap().permissions().mode() & 0o777, 0o600);
    let o = c.zoe(Some(&admin), &["operator", "snapshot", "restore", snap.to_str().unwrap()], &[]);
    fails(&o, 1, "force=true");
    let o = c.zoe(Some(&ada), &["operator", "snapshot", "save", "/dev/null"], &[]);
    fails(&o, 1, "can_change_config");
    let text = ok(&c.zoe(Some(&admin), &["operator", "snapshot", "restore", snap.to_str().unwrap(), "--force"], &[]));
    assert!(text.contains(&format!("{} executions", v["executions"])), "{text}");
    ok(&c.zoe(Some(&admin), &["exec", "ls"], &[]));

    // Tokens: create, list, revoke; a revoked token is refused.
    let v = json(&c.zoe(Some(&ada), &["token", "create", "--name", "ci", "--ttl", "1d", "--json"], &[]));
    let (tid, tok) = (v["id"].as_str().unwrap().to_string(), v["token"].as_str().unwrap().to_string());
    let text = ok(&c.zoe(Some(&tok), &["token", "ls"], &[]));
    assert!(text.contains(&tid) && text.contains("ci"), "{text}");
    ok(&c.zoe(Some(&ada), &["token", "revoke", &tid], &[]));
    let o = c.zoe(Some(&tok), &["exec", "ls"], &[]);
    fails(&o, 1, "unknown, expired or revoked");

    // SIGTERM stops the coordinator (and its API) cleanly.
    let mut c = c;
    let mut child = c.child.take().unwrap();
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "coordinator did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status:?}: {}", c.log());
    let o = c.zoe(None, &["info"], &[]);
    fails(&o, 1, "cannot reach zoe");
}
