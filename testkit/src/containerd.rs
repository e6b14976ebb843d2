//! The containerd the tests talk to.

use crate::{FixtureError, io_err, script};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable naming the socket of an already running containerd.
pub const ENV_SOCKET: &str = "ZOE_TEST_CONTAINERD";

/// A containerd reachable at `socket`. When this process started it, the
/// daemon is stopped when the process exits.
#[derive(Debug)]
pub struct Containerd {
    pub socket: PathBuf,
    /// Set when this process owns the daemon (temp dir holding its state).
    owned: Option<tempfile::TempDir>,
}

impl Containerd {
    /// Starts a private containerd under `dir` through the shared script.
    pub fn start_in(dir: &Path) -> Result<PathBuf, FixtureError> {
        let out = Command::new(script("private-containerd.sh"))
            .arg("start")
            .arg(dir)
            .output()
            .map_err(io_err("running scripts/private-containerd.sh"))?;
        if !out.status.success() {
            return Err(FixtureError::Setup(format!(
                "private-containerd.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let socket = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(PathBuf::from(socket))
    }

    /// Stops the private containerd under `dir` (idempotent).
    pub fn stop_in(dir: &Path) {
        let _ = Command::new(script("private-containerd.sh")).arg("stop").arg(dir).status();
    }

    /// Whether this process started the daemon (and will stop it at exit).
    pub fn is_private(&self) -> bool {
        self.owned.is_some()
    }
}

static CONTAINERD: OnceLock<Containerd> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if let Some(Containerd { owned: Some(dir), .. }) = CONTAINERD.get() {
        Containerd::stop_in(dir.path());
        // The TempDir lives in a static and is never dropped.
        let _ = std::fs::remove_dir_all(dir.path());
    }
}

/// The containerd for this test process: `ZOE_TEST_CONTAINERD` when set,
/// otherwise a private daemon started once per process (in a temp dir under
/// /tmp, short enough for a unix socket path) and stopped at exit.
///
/// Panics with a readable message when no containerd can be had: a test
/// cannot do anything useful without one.
pub fn containerd() -> &'static Containerd {
    CONTAINERD.get_or_init(|| {
        if let Some(sock) = std::env::var_os(ENV_SOCKET).filter(|s| !s.is_empty()) {
            return Containerd { socket: PathBuf::from(sock), owned: None };
        }
        let dir = tempfile::Builder::new()
            .prefix("zoe-ctd-")
            .tempdir_in("/tmp")
            .expect("creating a temp dir for a private containerd");
        let socket =
            Containerd::start_in(dir.path()).unwrap_or_else(|e| panic!("cannot start a private containerd: {e}"));
        // Statics are never dropped; atexit is what runs when the test
        // harness returns from main.
        unsafe {
            libc::atexit(stop_at_exit);
        }
        Containerd { socket, owned: Some(dir) }
    })
}

/// A containerd namespace name unique to this process and call, so that
/// concurrent tests on one containerd never see each other's objects.
pub fn unique_namespace(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let clean: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("zt-{clean}-{}-{n}-{:05x}", std::process::id(), nanos & 0xfffff)
}
