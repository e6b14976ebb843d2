//! What the CLI tests share.

/// Runs the `zoe` binary under test with `args` and waits for it.
pub fn zoe(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zoe")).args(args).output().unwrap()
}
