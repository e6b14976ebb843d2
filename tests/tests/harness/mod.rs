//! A cluster of real `zoe coordinator` processes on 127.0.0.1 with a
//! throwaway CA, for the cluster tests.
//!
//! Finding the binary: `ZOE_BIN` if set; otherwise `zoe` next to this test
//! executable's profile directory (`target/<profile>/zoe`), after running
//! `cargo build -p zoe-cli --bin zoe` once so it is never stale (a no-op
//! when `scripts/test.sh` has already built the workspace). Cargo only
//! exposes `CARGO_BIN_EXE_*` to tests of the binary's own package, hence
//! this.
//!
//! Ports come from a range below Linux's ephemeral range, reserved with
//! lock files under /tmp so concurrently running tests (nextest runs each
//! test in its own process) never share one. Set `ZOE_BIN` (e.g. to
//! `target/debug/zoe` right after `cargo build --workspace`) to skip the
//! per-process `cargo build`.

#![allow(dead_code)]

pub mod zoe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use zoe_coordinator::raft::{CoordNode, CoordinatorClient, Status};
use zoe_coordinator::state::State;
use zoe_net::{CertificateAuthority, Identity, Role, TlsMaterial};

pub fn zoe_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("ZOE_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "zoe-cli", "--bin", "zoe"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build for the zoe binary");
        assert!(st.success(), "building the zoe binary failed");
        let bin = profile_dir.join("zoe");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// A UDP port reserved for this test process (released on drop).
pub struct Port {
    pub port: u16,
    locks: Vec<PathBuf>,
}

impl Drop for Port {
    fn drop(&mut self) {
        for l in &self.locks {
            let _ = std::fs::remove_file(l);
        }
    }
}

/// Reserves one port with a lock file; `None` if taken by a live process.
fn lock_port(dir: &Path, port: u16, me: u32) -> Option<PathBuf> {
    let lock = dir.join(port.to_string());
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
        Ok(mut f) => {
            use std::io::Write;
            let _ = write!(f, "{me}");
            Some(lock)
        }
        Err(_) => {
            // Reclaim a reservation whose owner is gone (next round).
            let owner: Option<i32> = std::fs::read_to_string(&lock).ok().and_then(|s| s.trim().parse().ok());
            let alive = owner.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
            if !alive {
                let _ = std::fs::remove_file(&lock);
            }
            None
        }
    }
}

/// Reserves a UDP port `p` for this test process, together with `p + 1`
/// (the coordinator's default agent listener is its Raft port + 1).
pub fn reserve_port() -> Port {
    use rand::{Rng, SeedableRng};
    let dir = Path::new("/tmp/zoe-test-ports");
    std::fs::create_dir_all(dir).unwrap();
    let me = std::process::id();
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    for _ in 0..10_000 {
        let port: u16 = rng.random_range(20_000..32_000);
        let Some(a) = lock_port(dir, port, me) else { continue };
        let Some(b) = lock_port(dir, port + 1, me) else {
            let _ = std::fs::remove_file(&a);
            continue;
        };
        let free = |p: u16| {
            std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        };
        if free(port) && free(port + 1) {
            return Port { port, locks: vec![a, b] };
        }
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
    }
    panic!("no free UDP port");
}

pub struct Node {
    pub id: u64,
    pub name: String,
    pub port: Port,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port.port)
    }
    pub fn coord_node(&self) -> CoordNode {
        CoordNode { addr: self.addr(), name: self.name.clone() }
    }
}

/// Extra `[raft]` settings for a test.
#[derive(Clone)]
pub struct Tuning {
    pub snapshot_every_logs: u64,
    pub trailing_logs: u64,
    pub write_timeout_ms: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { snapshot_every_logs: 10_000, trailing_logs: 5_000, write_timeout_ms: 5_000 }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca: CertificateAuthority,
    pub nodes: Vec<Node>,
    pub client: std::sync::Arc<CoordinatorClient>,
}

pub const CA_FILE: &str = "ca.pem";

impl Cluster {
    /// Writes certificates and configs for `n` coordinators and starts them all at once.
    pub fn start(n: usize, tuning: Tuning) -> Cluster {
        Cluster::start_with(n, tuning, |_| String::new())
    }

    /// Like [`Cluster::start`], appending `extra(node)` (more TOML sections,
    /// e.g. `[api]`, `[agents]`, `[leader]`) to each node's configuration.
    pub fn start_with(n: usize, tuning: Tuning, extra: impl Fn(&Node) -> String) -> Cluster {
        let dir = tempfile::Builder::new().prefix("zoe-cluster-").tempdir().unwrap();
        let ca = CertificateAuthority::generate("test").unwrap();
        ca.write(dir.path()).unwrap();
        let mut nodes = Vec::new();
        for i in 1..=n as u64 {
            let name = format!("c{i}");
            let port = reserve_port();
            let id = Identity::new(Role::Coordinator, name.clone()).unwrap();
            ca.issue(&id, &[], &["127.0.0.1".parse().unwrap()]).unwrap().write(dir.path(), &name).unwrap();
            nodes.push(Node {
                id: i,
                name: name.clone(),
                port,
                config: dir.path().join(format!("{name}.toml")),
                data_dir: dir.path().join(format!("{name}-data")),
                log: dir.path().join(format!("{name}.log")),
                child: None,
            });
        }
        let mut peers = String::new();
        for nd in &nodes {
            peers += &format!("[[peers]]\nid = {}\naddr = \"{}\"\nname = \"{}\"\n\n", nd.id, nd.addr(), nd.name);
        }
        for nd in &nodes {
            let cfg = format!(
                "id = {id}\nname = \"{name}\"\nlisten = \"{addr}\"\ndata_dir = \"{name}-data\"\n\n\
                 [tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}-key.pem\"\n\n{peers}\
                 [raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n\
                 snapshot_every_logs = {s}\ntrailing_logs = {t}\nwrite_timeout_ms = {w}\n\n{extra}",
                id = nd.id,
                name = nd.name,
                addr = nd.addr(),
                s = tuning.snapshot_every_logs,
                t = tuning.trailing_logs,
                w = tuning.write_timeout_ms,
                extra = extra(nd),
            );
            std::fs::write(&nd.config, cfg).unwrap();
        }
        let client_tls = issue_material(&ca, &ca, Role::Client, "tests");
        let mut client = CoordinatorClient::new(&client_tls, nodes.iter().map(Node::coord_node).collect()).unwrap();
        client.attempt_timeout = Duration::from_secs(3);
        let mut c = Cluster { dir, ca, nodes, client: std::sync::Arc::new(client) };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// Starts node `i` (index, not id).
    pub fn spawn(&mut self, i: usize) {
        let nd = &mut self.nodes[i];
        assert!(nd.child.is_none(), "node {} already running", nd.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&nd.log).unwrap();
        let child = Command::new(zoe_bin())
            .args(["coordinator", "--config"])
            .arg(&nd.config)
            .env("RUST_LOG", "info,openraft=info,sled=warn,quinn=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn zoe coordinator");
        nd.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit (up to `within`); returns the exit status.
    pub fn terminate(&mut self, i: usize, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.nodes[i].child.take()?;
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to node `i`'s process.
    pub fn signal(&self, i: usize, signal: i32) {
        if let Some(c) = &self.nodes[i].child {
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    pub fn index_of(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).expect("known id")
    }

    pub async fn status(&self, i: usize) -> Option<Status> {
        self.client.status_of(i).await.ok()
    }

    /// Status of node `i`, retried for up to 20 s (a loaded machine or a
    /// just-restarted process may miss one attempt).
    pub async fn status_eventually(&self, i: usize) -> Status {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.client.status_of(i).await {
                Ok(s) => return s,
                Err(e) => assert!(Instant::now() < deadline, "no status from node index {i}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a running node is leader and every other running node
    /// follows it; returns the leader's index.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let mut views = BTreeMap::new();
            for i in 0..self.nodes.len() {
                if self.running(i) {
                    views.insert(i, self.status(i).await);
                }
            }
            let leader = views.values().flatten().find(|s| s.role == "Leader").map(|s| s.id);
            if let Some(l) = leader
                && views.values().all(|s| s.as_ref().is_some_and(|s| s.leader == Some(l)))
            {
                return self.index_of(l);
            }
            assert!(Instant::now() < deadline, "no agreed leader within {within:?}: {views:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied the same index and holds
    /// the same state; returns that state.
    pub async fn wait_converged(&self, within: Duration) -> State {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for i in 0..self.nodes.len() {
                if self.running(i) {
                    seen.push(self.client.read_via(i, false).await.ok());
                }
            }
            if let Some(Some((first, s0))) = seen.first() {
                let same = seen
                    .iter()
                    .all(|r| r.as_ref().is_some_and(|(st, s)| st == first && s.applied_index == s0.applied_index));
                if same {
                    return first.clone();
                }
            }
            if Instant::now() >= deadline {
                let views: Vec<String> = seen
                    .iter()
                    .map(|r| match r {
                        None => "no answer".to_string(),
                        Some((st, s)) => format!(
                            "applied {:?}, {} executions, {} services, next id {}",
                            s.applied_index,
                            st.executions.len(),
                            st.services.len(),
                            st.next_id
                        ),
                    })
                    .collect();
                panic!("members did not converge within {within:?}: {views:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints the tail of every node's log (on failure).
    pub fn dump_logs(&self) {
        for nd in &self.nodes {
            let text = std::fs::read_to_string(&nd.log).unwrap_or_default();
            let lines: Vec<_> = text.lines().collect();
            eprintln!("----- {} ({} lines, last 40) -----", nd.log.display(), lines.len());
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
            // Keep the configurations, data and full logs for a post-mortem.
            self.dir.disable_cleanup(true);
            eprintln!("----- kept {} -----", self.dir.path().display());
        }
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// TLS material for `role`/`name`, signed by `signer`, trusting `trust`.
pub fn issue_material(
    signer: &CertificateAuthority,
    trust: &CertificateAuthority,
    role: Role,
    name: &str,
) -> TlsMaterial {
    let cert = signer.issue(&Identity::new(role, name).unwrap(), &[], &[]).unwrap();
    TlsMaterial::from_pem(trust.cert_pem().as_bytes(), cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap()
}

/// Packet-filter partition of one port from others on the loopback
/// interface (iptables); rules are removed on drop.
pub struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    pub fn isolate(port: u16, others: &[u16]) -> Partition {
        let mut rules = Vec::new();
        for o in others {
            for (s, d) in [(port, *o), (*o, port)] {
                rules.push(vec![
                    "INPUT".to_string(),
                    "-i".into(),
                    "lo".into(),
                    "-p".into(),
                    "udp".into(),
                    "--sport".into(),
                    s.to_string(),
                    "--dport".into(),
                    d.to_string(),
                    "-j".into(),
                    "DROP".into(),
                ]);
            }
        }
        for r in &rules {
            let st = Command::new("iptables")
                .arg("-I")
                .args(r)
                .status()
                .expect("iptables is required for the partition test (apt-get install iptables)");
            assert!(st.success(), "iptables -I {r:?} failed (the test needs root)");
        }
        Partition { rules }
    }

    pub fn heal(&mut self) {
        for r in self.rules.drain(..) {
            let _ = Command::new("iptables").arg("-D").args(&r).status();
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.heal();
    }
}
