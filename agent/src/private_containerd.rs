//! A containerd of zoe's own, for `zoe dev` on a machine whose system
//! containerd is absent or stopped: the binary from PATH with its root,
//! state, sockets, pid file and log under one directory, so it neither
//! touches nor needs a system daemon. `scripts/private-containerd.sh` does
//! the same for the test suite (which must not depend on a zoe build).

use crate::containerd::Containerd;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A unix socket path is limited to 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 100;

/// Whether a containerd answers on `socket` (connect and `version`).
pub async fn answers(socket: &Path) -> bool {
    if !socket.exists() {
        return false;
    }
    let probe = async {
        let c = Containerd::connect(socket, "default").await.ok()?;
        c.version().await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(3), probe).await, Ok(Some(_)))
}

/// Where containerd keeps its state (bundles, rootfs mounts, shim sockets).
/// runc bind-mounts a container's rootfs from inside the container's user
/// namespace, as the owner's uid, so every directory above a bundle must be
/// searchable by others, as those above /run/containerd are. A data dir
/// below /root (0700) is not: the state then goes to /run, one directory
/// per data dir.
fn state_dir(dir: &Path) -> PathBuf {
    let inside = dir.join("state");
    if searchable_by_others(dir) {
        return inside;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let run = PathBuf::from("/run/zoe-containerd").join(&hex::encode(digest)[..16]);
    if std::fs::create_dir_all(&run).is_ok() { run } else { inside }
}

/// Whether `path` and every directory above it let others through (o+x).
pub fn searchable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors().all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A running private containerd; [`PrivateContainerd::stop`] ends it and
/// every shim and container it started.
#[derive(Debug)]
pub struct PrivateContainerd {
    dir: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    pid: i32,
    child: Option<std::process::Child>,
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2) on a pid this module recorded.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl PrivateContainerd {
    /// Starts containerd under `dir` (or adopts the one a previous run left
    /// there, e.g. after `kill -9`), and waits until it answers.
    pub async fn start(dir: &Path) -> Result<PrivateContainerd> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let dir = dir.canonicalize().map_err(Error::io(format!("resolving {}", dir.display())))?;
        let socket = dir.join("containerd.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::PrivateContainerd(format!(
                "socket path too long for a unix socket: {}",
                socket.display()
            )));
        }
        let pid_file = dir.join("containerd.pid");
        let state = state_dir(&dir);
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok())
            && alive(pid)
            && answers(&socket).await
        {
            tracing::info!(pid, socket = %socket.display(), "adopting the private containerd left running");
            return Ok(PrivateContainerd { dir, state, socket, pid, child: None });
        }
        for d in [dir.join("root"), state.clone()] {
            std::fs::create_dir_all(&d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        // 0711 as containerd makes /run/containerd: searchable, not listable.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711))
            .map_err(Error::io(format!("chmod {}", state.display())))?;
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\n\
             # zoe needs only the core services; CRI would start its own machinery.\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
             [grpc]\n  address = {sock:?}\n\n[ttrpc]\n  address = {ttrpc:?}\n\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = dir.join("root").display().to_string(),
            state = state.display().to_string(),
            sock = socket.display().to_string(),
            ttrpc = format!("{}.ttrpc", socket.display()),
            opt = dir.join("opt").display().to_string(),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).map_err(Error::io(format!("writing {}", config_path.display())))?;
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(format!("{}.ttrpc", socket.display()));
        let log_path = dir.join("containerd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(format!("opening {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(Error::io("duplicating the log file"))?;
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C in the terminal reaches zoe,
            // which stops containerd last, after the agent.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::PrivateContainerd(format!(
                    "cannot run containerd from PATH ({e}); install it: apt-get install containerd"
                ))
            })?;
        let pid = child.id() as i32;
        std::fs::write(&pid_file, format!("{pid}\n")).map_err(Error::io(format!("writing {}", pid_file.display())))?;
        let mut me = PrivateContainerd { dir, state, socket, pid, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if answers(&me.socket).await {
                tracing::info!(pid, socket = %me.socket.display(), "private containerd started");
                return Ok(me);
            }
            let exited = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                me.stop().await;
                return Err(Error::PrivateContainerd(format!(
                    "containerd {} (log {}):\n{}",
                    if exited.is_some() { "exited during start" } else { "did not answer within 20 s" },
                    log_path.display(),
                    tail.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s), then its shims
    /// and their containers, which outlive containerd by design, then
    /// unmounts what they left under the directory.
    pub async fn stop(mut self) {
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let gone = match self.child.as_mut() {
                Some(c) => c.try_wait().map(|s| s.is_some()).unwrap_or(true),
                None => !alive(self.pid),
            };
            if gone {
                break;
            }
            if Instant::now() > deadline {
                signal(self.pid, libc::SIGKILL);
                if let Some(c) = self.child.as_mut() {
                    let _ = c.wait();
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill_shims();
        self.unmount_leftovers();
        let _ = std::fs::remove_file(self.dir.join("containerd.pid"));
        tracing::info!("private containerd stopped");
    }

    /// Shims carry this instance's socket path in their arguments (unique
    /// to the directory): kill their children (the containers' init
    /// processes) and then the shims.
    fn kill_shims(&self) {
        let sock = self.socket.as_os_str().as_encoded_bytes();
        let Ok(procs) = std::fs::read_dir("/proc") else { return };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else { continue };
            if !cmdline.split(|b| *b == 0).any(|a| a == sock) {
                continue;
            }
            if let Ok(tasks) = std::fs::read_dir(p.path().join("task")) {
                for t in tasks.flatten() {
                    let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                    for c in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                        signal(c, libc::SIGKILL);
                    }
                }
            }
            signal(pid, libc::SIGKILL);
        }
    }

    fn unmount_leftovers(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefixes = [format!("{}/", self.dir.display()), format!("{}/", self.state.display())];
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| prefixes.iter().any(|p| m.starts_with(p.as_str())))
            .collect();
        points.sort_unstable_by(|a, b| b.cmp(a));
        for m in points {
            if let Ok(c) = std::ffi::CString::new(m) {
                // SAFETY: a NUL-terminated path; MNT_DETACH never blocks.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
}
