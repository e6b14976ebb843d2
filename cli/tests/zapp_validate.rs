//! `zoe zapp validate`, run as users run it: the built binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn zoe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zoe"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/zapps")
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

#[test]
fn valid_examples_exit_0_with_ok_per_file() {
    let files = json_files(&examples());
    assert!(files.len() >= 3);
    let out = zoe().arg("zapp").arg("validate").args(&files).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    for f in &files {
        assert!(stdout.contains(&format!("{}: ok", f.display())), "{stdout}");
    }
}

#[test]
fn every_invalid_example_exits_nonzero_with_a_pointer() {
    for f in json_files(&examples().join("invalid")) {
        let out = zoe().arg("zapp").arg("validate").arg(&f).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: {stdout}", f.display());
        let prefix = format!("{}: ", f.display());
        let pointed = stdout.lines().any(|l| {
            l.strip_prefix(&prefix)
                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with("not valid JSON: line"))
        });
        assert!(pointed, "{}: {stdout}", f.display());
    }
}

#[test]
fn mixed_files_exit_nonzero_and_json_report_is_machine_readable() {
    let good = examples().join("hello-batch.json");
    let bad = examples().join("invalid/zero-cores.json");
    let out = zoe().args(["zapp", "validate", "--json"]).arg(&good).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["files"][0]["valid"], true);
    assert_eq!(v["files"][1]["errors"][0]["path"], "/services/0/resources/cores/min");
    assert_eq!(v["files"][1]["errors"][0]["message"], "must be greater than 0");
}

#[test]
fn missing_file_and_usage_errors() {
    let out = zoe().args(["zapp", "validate", "/nonexistent/zapp.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot read"));
    // No file at all is a usage error (clap exits 2).
    let out = zoe().args(["zapp", "validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
