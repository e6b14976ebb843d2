//! Pieces several benchmarks share: percentiles, the `zoe` binary, a
//! cluster of real `zoe coordinator` processes, the busybox image on a
//! private containerd namespace, and a REST API client with an admin token.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zoe_net::{CertificateAuthority, Identity, Role};

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// utime + stime of process `pid` (or `self`), in seconds.
pub fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / USER_HZ
}

/// Clock ticks per second of /proc/*/stat: USER_HZ, 100 on every Linux
/// architecture zoe targets (the kernel's HZ does not change it).
const USER_HZ: f64 = 100.0;

pub fn free_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A TCP port free right now (the API listens on TCP).
pub fn free_tcp_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The zoe binary: `arg`, else next to this executable (built with
/// `cargo build -p zoe-cli` in the same profile if missing).
pub fn zoe_bin(arg: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?.to_path_buf();
    let bin = dir.join("zoe");
    if !bin.exists() {
        eprintln!("building the zoe binary...");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-q", "-p", "zoe-cli", "--bin", "zoe"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if !cmd.status()?.success() {
            bail!("building zoe failed");
        }
    }
    Ok(bin)
}

/// A child process killed when dropped.
pub struct Kill(pub Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One coordinator process of a [`Cluster`].
pub struct Member {
    pub name: String,
    /// Raft listener.
    pub addr: String,
    /// REST API (plain HTTP on loopback).
    pub api: String,
    /// Agent listener.
    pub agents: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// `n` real `zoe coordinator` processes on 127.0.0.1 with their own CA,
/// each with a REST API and an agent listener.
pub struct Cluster {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub ca: CertificateAuthority,
    zoe: PathBuf,
    pub members: Vec<Member>,
}

impl Cluster {
    /// Writes the PKI and configurations; `extra` is appended to every
    /// member's configuration (`[raft]`, `[leader]`, more `[agents]` keys).
    /// Nothing runs until [`Cluster::spawn`].
    pub fn new(n: usize, zoe: PathBuf, prefix: &str, extra: &str) -> Result<Cluster> {
        let tmp = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let dir = tmp.path().to_path_buf();
        let ca = CertificateAuthority::generate("bench")?;
        ca.write(&dir)?;
        let mut members = Vec::new();
        for i in 1..=n {
            let name = format!("c{i}");
            // The IP SAN lets agents dial a plain 127.0.0.1 address.
            ca.issue(&Identity::new(Role::Coordinator, name.clone())?, &[], &["127.0.0.1".parse()?])?
                .write(&dir, &name)?;
            members.push(Member {
                addr: format!("127.0.0.1:{}", free_port()?),
                api: format!("127.0.0.1:{}", free_tcp_port()?),
                agents: format!("127.0.0.1:{}", free_port()?),
                config: dir.join(format!("{name}.toml")),
                data_dir: dir.join(format!("{name}-data")),
                log: dir.join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let peers: String = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("[[peers]]\nid = {}\naddr = \"{}\"\nname = \"{}\"\n\n", i + 1, m.addr, m.name))
            .collect();
        for (i, m) in members.iter().enumerate() {
            std::fs::write(
                &m.config,
                format!(
                    "id = {id}\nname = \"{n}\"\nlisten = \"{addr}\"\ndata_dir = \"{n}-data\"\n\n[tls]\nca = \"ca.pem\"\n\
                     cert = \"{n}.pem\"\nkey = \"{n}-key.pem\"\n\n{peers}[api]\nlisten = \"{api}\"\n\n\
                     [agents]\nlisten = \"{agents}\"\n{extra}\n",
                    id = i + 1,
                    n = m.name,
                    addr = m.addr,
                    api = m.api,
                    agents = m.agents,
                ),
            )?;
        }
        Ok(Cluster { _tmp: tmp, dir, ca, zoe, members })
    }

    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        m.child = Some(
            Command::new(&self.zoe)
                .args(["coordinator", "--config"])
                .arg(&m.config)
                .env("RUST_LOG", std::env::var("ZOE_BENCH_COORDINATOR_LOG").unwrap_or_else(|_| "warn".into()))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawn zoe coordinator")?,
        );
        Ok(())
    }

    pub fn spawn_all(&mut self) -> Result<()> {
        (0..self.members.len()).try_for_each(|i| self.spawn(i))
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for a clean exit (kill -9 after).
    /// Returns whether it exited on its own.
    pub fn terminate(&mut self, i: usize, within: std::time::Duration) -> bool {
        let Some(mut c) = self.members[i].child.take() else { return true };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// CPU seconds member `i` has used so far.
    pub fn cpu_s(&self, i: usize) -> f64 {
        self.members[i].child.as_ref().map(|c| cpu_s(&c.id().to_string())).unwrap_or(0.0)
    }

    /// The last lines of every member's log, for a failed run.
    pub fn dump_logs(&self) {
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- {} log (last 20 lines)", m.name);
            for l in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// zoe's API client against one coordinator (plain HTTP on loopback).
#[derive(Clone)]
pub struct Api {
    client: std::sync::Arc<zoe_client::Client>,
    pub base: String,
    /// The token the client sends, if any.
    pub token: Option<String>,
}

impl Api {
    pub fn new(addr: &str) -> Result<Api> {
        let base = format!("http://{addr}");
        let config = zoe_client::ClientConfig {
            addrs: vec![base.clone()],
            timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        Ok(Api { client: std::sync::Arc::new(zoe_client::Client::new(&config)?), base, token: None })
    }

    /// The same connection pool, against another coordinator.
    pub fn at(&self, addr: &str) -> Api {
        let base = format!("http://{addr}");
        Api {
            client: std::sync::Arc::new(self.client.at(std::slice::from_ref(&base))),
            base,
            token: self.token.clone(),
        }
    }

    pub fn with_token(&self, token: String) -> Api {
        Api {
            client: std::sync::Arc::new(self.client.with_token(Some(token.clone()))),
            base: self.base.clone(),
            token: Some(token),
        }
    }

    pub async fn get(&self, path: &str) -> Result<(Value, Option<u64>)> {
        Ok(self.client.call(reqwest::Method::GET, path, None).await?)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.client.post(path, body).await?)
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.client.patch(path, body).await?)
    }

    pub async fn get_text(&self, path: &str) -> Result<String> {
        let resp = self.client.send(self.client.request(reqwest::Method::GET, path)).await?;
        Ok(resp.text().await?)
    }

    /// Submits a ZApp; returns the execution id.
    pub async fn submit(&self, name: &str, app: &Value) -> Result<u64> {
        let v = self.post("/api/v1/executions", &json!({ "name": name, "application": app })).await?;
        v["id"].as_u64().with_context(|| format!("no id in {v}"))
    }
}

/// Waits for the first leader's bootstrap token and exchanges it for the
/// admin's API token through `api` (any member: followers forward writes).
pub async fn bootstrap_admin(cluster: &Cluster, api: &Api, within: Duration) -> Result<Api> {
    let deadline = Instant::now() + within;
    let token = loop {
        if let Some(t) = cluster
            .members
            .iter()
            .find_map(|m| std::fs::read_to_string(m.data_dir.join(zoe_coordinator::auth::BOOTSTRAP_FILE)).ok())
        {
            break t.trim().to_string();
        }
        if Instant::now() > deadline {
            bail!("no bootstrap token file within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v = loop {
        match api.with_token(token.clone()).post("/api/v1/acl/bootstrap", &json!({})).await {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("bootstrap: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context("ACL bootstrap")),
        }
    };
    Ok(api.with_token(v["token"].as_str().context("no token in the bootstrap answer")?.to_string()))
}

/// A one-service busybox ZApp running `command`.
pub fn busybox_app(command: &str) -> Value {
    json!({
        "name": "bench",
        "version": 3,
        "will_end": false,
        "size": 1,
        "services": [{
            "name": "task",
            "image": zoe_testkit::DEFAULT_REFERENCE,
            "monitor": true,
            "essential_count": 1,
            "total_count": 1,
            "startup_order": 0,
            "resources": {
                "memory": {"min": 16777216, "max": 33554432},
                "cores": {"min": 0.1, "max": null}
            },
            "environment": [],
            "volumes": [],
            "command": command,
            "ports": []
        }]
    })
}

/// Imports the test busybox image into `ns` of the test containerd.
pub async fn import_busybox(socket: &Path, ns: &str, scratch: &Path) -> Result<()> {
    import_image(socket, ns, scratch, &zoe_testkit::BusyboxImage::build()?).await
}

/// Imports `image` into `ns` of the test containerd.
pub async fn import_image(socket: &Path, ns: &str, scratch: &Path, image: &zoe_testkit::BusyboxImage) -> Result<()> {
    let mut rc = zoe_agent::RuntimeConfig::new(socket, scratch.join("prep"));
    rc.namespace = ns.to_string();
    let rt = zoe_agent::Runtime::connect(rc).await?;
    let archive = scratch.join(format!("image-{}.tar", image.manifest_digest().trim_start_matches("sha256:")));
    image.write_oci_archive(&archive)?;
    rt.images().import_archive(&archive, None, None).await?;
    rt.shutdown().await;
    Ok(())
}

/// Starts a real `zoe agent` (node `real`) on `ns` of the test containerd,
/// connected to the first member, and waits until the node is ready.
pub async fn start_agent(cluster: &Cluster, zoe: &Path, socket: &Path, ns: &str, api: &Api) -> Result<Kill> {
    let dir = &cluster.dir;
    cluster.ca.issue(&Identity::new(Role::Agent, "real")?, &[], &[])?.write(dir, "real")?;
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "coordinators = [\"{}\"]\ndata_dir = \"agent-data\"\n[containerd]\nsocket = \"{}\"\nnamespace = \"{ns}\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"real.pem\"\nkey = \"real-key.pem\"\n",
            cluster.members[0].agents,
            socket.display()
        ),
    )?;
    let agent = Kill(
        Command::new(zoe)
            .args(["agent", "--config"])
            .arg(dir.join("agent.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (nodes, _) = api.get("/api/v1/nodes").await?;
        let ready = nodes
            .as_array()
            .or_else(|| nodes["nodes"].as_array())
            .is_some_and(|l| l.iter().any(|n| n["name"] == "real" && n["status"] == "ready"));
        if ready {
            return Ok(agent);
        }
        if Instant::now() > deadline {
            bail!("the agent never registered: {nodes}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops every container of `ns`, removes the image and the namespace.
pub async fn cleanup_namespace(socket: &Path, ns: &str, scratch: &Path) {
    let mut rc = zoe_agent::RuntimeConfig::new(socket, scratch.join("cleanup"));
    rc.namespace = ns.to_string();
    if let Ok(rt) = zoe_agent::Runtime::connect(rc).await {
        for s in rt.services() {
            let _ = rt.stop(&s.id, Duration::from_secs(1)).await;
        }
        if let Ok(images) = rt.images().list().await {
            for i in images {
                let _ = rt.images().remove(&i.name).await;
            }
        }
        let ctd = rt.containerd().clone();
        rt.shutdown().await;
        let _ = ctd
            .namespaces()
            .delete(containerd_client::services::v1::DeleteNamespaceRequest { name: ns.to_string() })
            .await;
    }
}
