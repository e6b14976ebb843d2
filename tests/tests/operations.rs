//! The operations files parse and check with the tools and code that will
//! use them: systemd units with `systemd-analyze verify`, sample
//! configurations with the binaries' own loaders, scripts with `bash -n`.

mod harness;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn sample_configurations_parse_with_the_binaries_loaders() {
    let c = zoe_coordinator::config::CoordinatorConfig::load(&root().join("systemd/coordinator.toml")).unwrap();
    assert_eq!((c.id, c.peers.len()), (1, 3));
    assert!(c.api.tls_cert.is_some(), "the API must serve HTTPS off loopback");
    let a = zoe_agent::config::AgentConfig::load(&root().join("systemd/agent.toml")).unwrap();
    assert_eq!(a.coordinators.len(), 3);
}

#[test]
fn systemd_units_verify() {
    let zoe = std::env::var_os("ZOE_BIN").map(PathBuf::from).unwrap_or_else(|| root().join("target/debug/zoe"));
    assert!(zoe.exists(), "build the zoe binary first ({}); scripts/test.sh does", zoe.display());
    let dir = tempfile::tempdir().unwrap();
    for unit in ["zoe-coordinator.service", "zoe-agent.service"] {
        // verify checks that ExecStart exists: point it at the built binary.
        let text = std::fs::read_to_string(root().join("systemd").join(unit)).unwrap();
        assert!(text.contains("Type=notify"));
        let path = dir.path().join(unit);
        std::fs::write(&path, text.replace("/usr/local/bin/zoe", &zoe.display().to_string())).unwrap();
        let out =
            Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().expect(
                "systemd-analyze (Debian package systemd) must be installed: scripts/install-deps.sh installs it",
            );
        let stderr = String::from_utf8_lossy(&out.stderr);
        // verify exits 0 on settings it ignores; any message is a defect.
        assert!(out.status.success() && stderr.trim().is_empty(), "{unit}: {stderr}");
    }
}

#[test]
fn scripts_are_valid_bash() {
    for script in [
        "demo.sh",
        "scripts/test.sh",
        "scripts/install-deps.sh",
        "scripts/private-containerd.sh",
        "systemd/install.sh",
        "vagrant/prepare.sh",
        "vagrant/provision.sh",
        ".ci/run",
    ] {
        let out = Command::new("bash").arg("-n").arg(root().join(script)).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Starts `zoe dev` and waits for its banner; returns the process and the
/// banner's text.
fn start_dev(dir: &Path, api: u16, namespace: &str) -> (Child, String) {
    let socket = &zoe_testkit::containerd().socket;
    let mut child = Command::new(harness::zoe_bin())
        .args(["dev", "--api", &format!("127.0.0.1:{api}"), "--namespace", namespace])
        .arg("--data-dir")
        .arg(dir)
        .arg("--containerd")
        .arg(socket)
        .stdout(Stdio::piped())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dev.log")).unwrap())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut banner = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C") {
                let _ = tx.send(banner.clone());
            }
        }
    });
    let banner = rx.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("zoe dev did not come up; log:\n{}", std::fs::read_to_string(dir.join("dev.log")).unwrap_or_default())
    });
    (child, banner)
}

fn stop_dev(mut child: Child, signal: i32) {
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "zoe dev exited with {st}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("zoe dev did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `zoe dev` data directory, with the API port and containerd namespace
/// its cluster uses.
struct Dev {
    dir: tempfile::TempDir,
    api: harness::Port,
    ns: String,
}

impl Dev {
    fn new(prefix: &str, ns: &str) -> Dev {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap();
        Dev { dir, api: harness::reserve_port(), ns: zoe_testkit::unique_namespace(ns) }
    }

    fn start(&self) -> (Child, String) {
        start_dev(self.dir.path(), self.api.port, &self.ns)
    }

    /// The admin token `zoe dev` wrote.
    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.token")).unwrap().trim().to_string()
    }

    /// Runs the `zoe` CLI against this cluster (and no config file).
    fn cli(&self, token: &str, args: &[&str]) -> std::process::Output {
        Command::new(harness::zoe_bin())
            .args(args)
            .env("ZOE_ADDR", format!("http://127.0.0.1:{}", self.api.port))
            .env("ZOE_TOKEN", token)
            .env("ZOE_CONFIG", "/nonexistent/zoe-config.toml")
            .output()
            .unwrap()
    }

    fn node_list(&self, token: &str) -> serde_json::Value {
        let out = self.cli(token, &["node", "ls", "--json"]);
        assert!(out.status.success(), "zoe node ls: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[test]
fn dev_cluster_starts_serves_restarts_and_stops_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let dev = Dev::new("zoe-dev-", "dev");
    let (child, banner) = dev.start();
    let token = dev.token();
    let token_file = dev.dir.path().join("admin.token");
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(banner.contains(&format!("{token}  (new)")), "{banner}");
    let nodes = dev.node_list(&token);
    assert!(nodes.to_string().contains("\"local\""), "{nodes}");
    // The written configs are the ones the standalone binaries load.
    zoe_coordinator::config::CoordinatorConfig::load(&dev.dir.path().join("coordinator.toml")).unwrap();
    zoe_agent::config::AgentConfig::load(&dev.dir.path().join("agent.toml")).unwrap();
    stop_dev(child, libc::SIGINT);

    // A restart keeps the state: the same token still works.
    let (child, banner) = dev.start();
    assert!(banner.contains(&token) && !banner.contains("(new)"), "{banner}");
    assert!(dev.node_list(&token).to_string().contains("\"local\""));
    stop_dev(child, libc::SIGTERM);
}

/// `zoe image load` streams an archive through the API to the agent,
/// which imports it; a ZApp then runs from it. A file that is not an
/// image archive is refused with the agent's reason and a non-zero exit.
#[test]
fn image_load_streams_an_archive_to_the_node_and_a_zapp_runs_from_it() {
    let dev = Dev::new("zoe-img-", "imgload");
    let dir = &dev.dir;
    let (child, _) = dev.start();
    let token = dev.token();
    let archive = dir.path().join("busybox-oci.tar");
    let out = dev.cli(&token, &["image", "build-sample", "--out", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = dev.cli(&token, &["image", "load", archive.to_str().unwrap(), "--node", "local"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("100%"), "progress bar: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("local: loaded"));
    let out = dev.cli(&token, &["node", "get", "local", "--json"]);
    let node = String::from_utf8_lossy(&out.stdout).to_string();

    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, vec![7u8; 3 * 1024 * 1024 + 17]).unwrap();
    let out = dev.cli(&token, &["image", "load", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("local:") && stderr.contains("did not load"), "{stderr}");
    let out = dev.cli(&token, &["image", "load", archive.to_str().unwrap(), "--node", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node nosuch not found"));

    let zapp = root().join("examples/zapps/hello-batch.json");
    let out = dev.cli(&token, &["exec", "start", "hello", zapp.to_str().unwrap(), "--wait", "done", "--follow"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("hello from hello"),
        "node: {node}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop_dev(child, libc::SIGTERM);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(harness::zoe::cleanup_namespace(&dev.ns, dir.path()));
}

/// The Vagrant cluster's provisioning inputs: `vagrant/prepare.sh` makes the
/// certificates with `zoe certs` and writes each host's config, which the
/// binaries' own loaders accept.
#[test]
fn vagrant_prepare_writes_configs_the_binaries_load() {
    let out_dir = tempfile::tempdir().unwrap();
    let prepare = || {
        Command::new("bash")
            .arg(root().join("vagrant/prepare.sh"))
            .arg(out_dir.path())
            .env("ZOE", harness::zoe_bin())
            .output()
            .unwrap()
    };
    let out = prepare();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (i, c) in ["c1", "c2", "c3"].iter().enumerate() {
        let cfg = zoe_coordinator::config::CoordinatorConfig::load(&out_dir.path().join(format!("{c}.toml"))).unwrap();
        assert_eq!((cfg.id, cfg.name.as_str(), cfg.peers.len()), (i as u64 + 1, *c, 3));
        assert!(out_dir.path().join(format!("tls/{c}.pem")).exists());
    }
    for n in ["node1", "node2"] {
        let cfg = zoe_agent::config::AgentConfig::load(&out_dir.path().join(format!("{n}.toml"))).unwrap();
        assert_eq!(cfg.coordinators.len(), 3);
        assert!(out_dir.path().join(format!("tls/{n}-key.pem")).exists());
    }
    // A second run keeps the certificates.
    let before = std::fs::read(out_dir.path().join("tls/c1.pem")).unwrap();
    assert!(prepare().status.success());
    assert_eq!(before, std::fs::read(out_dir.path().join("tls/c1.pem")).unwrap());
}
