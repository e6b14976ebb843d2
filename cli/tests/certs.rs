//! `zoe certs`: CA and role certificates, file modes, no silent overwrite.

mod common;

use common::zoe;
use std::os::unix::fs::PermissionsExt;

#[test]
fn ca_and_issue_write_usable_material_and_refuse_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let ca = d.path().join("ca");
    let tls = d.path().join("tls");
    let (ca_s, tls_s) = (ca.to_str().unwrap(), tls.to_str().unwrap());
    assert!(zoe(&["certs", "ca", "--out", ca_s]).status.success());
    assert!(!zoe(&["certs", "ca", "--out", ca_s]).status.success(), "overwrote the CA without --force");
    let issue = |name: &str, role: &str, extra: &[&str]| {
        let mut a = vec!["certs", "issue", "--ca", ca_s, "--role", role, "--name", name, "--out", tls_s];
        a.extend_from_slice(extra);
        zoe(&a)
    };
    assert!(issue("node-1", "agent", &["--ip", "10.0.0.5"]).status.success());
    assert!(!issue("node-1", "agent", &[]).status.success(), "overwrote without --force");
    assert!(issue("node-1", "agent", &["--force"]).status.success());
    let bad = issue("Bad_Name", "agent", &[]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid name"));
    for key in [ca.join("ca-key.pem"), tls.join("node-1-key.pem")] {
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
    }
    let m =
        zoe_net::TlsMaterial::load(&ca.join("ca.pem"), &tls.join("node-1.pem"), &tls.join("node-1-key.pem")).unwrap();
    assert_eq!(m.identity().san(), "agent.node-1.zoe");
}
