//! The operations files parse and check with the tools and code that will
//! use them: systemd units with `systemd-analyze verify`, sample
//! configurations with the binaries' own loaders, scripts with `bash -n`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn sample_configurations_parse_with_the_binaries_loaders() {
    let c = zoe_coordinator::raft::CoordinatorConfig::load(&root().join("systemd/coordinator.toml")).unwrap();
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
        ".ci/run",
    ] {
        let out = Command::new("bash").arg("-n").arg(root().join(script)).output().unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
