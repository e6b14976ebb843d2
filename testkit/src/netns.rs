//! Network namespaces as test "hosts": a switch namespace with a bridge,
//! host namespaces plugged into it with veth pairs, and a veth from the
//! test's own namespace, all on one /24 inside `10.231.0.0/16`. Everything
//! is removed on drop (also while a failed test unwinds), so routes,
//! bridges and iptables rules made inside the hosts go with them.
//!
//! Test code may run `ip`; products never do.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Runs `ip <args>`, panicking with its output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip (apt-get install iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// `ip <args>`'s standard output (empty on failure).
pub fn ip_out(args: &[&str]) -> String {
    Command::new("ip").args(args).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn add(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        ip(&a);
    }

    pub fn ip_out(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip_out(&a)
    }

    /// A command that runs inside this namespace (it joins it between fork
    /// and exec; its mount namespace stays the test's, unlike `ip netns
    /// exec`, so mounts it makes are seen by containerd).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let f = std::fs::File::open(self.path()).expect("namespace file");
        let mut c = Command::new(program);
        unsafe {
            c.pre_exec(move || {
                use std::os::fd::AsRawFd;
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    /// Moves the calling thread into this namespace (threads and processes
    /// it creates afterwards start there too) until the guard is dropped.
    pub fn enter_current_thread(&self) -> Entered {
        use std::os::fd::AsRawFd;
        let back = std::fs::File::open("/proc/thread-self/ns/net").expect("own namespace");
        let f = std::fs::File::open(self.path()).expect("namespace file");
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns into {}: {}", self.name, std::io::Error::last_os_error());
        Entered { back }
    }
}

/// Puts the thread back into its namespace on drop.
pub struct Entered {
    back: std::fs::File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        unsafe { libc::setns(self.back.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Hosts on one L2 segment, plus the test's own namespace on it.
pub struct Lan {
    /// `10.231.N`: host `i` (from 0) is `10.231.N.(11 + i)`, the test's
    /// namespace is `10.231.N.1`.
    pub prefix: String,
    pub hosts: Vec<Netns>,
    root_if: String,
    // Dropped last: the switch.
    _switch: Netns,
}

impl Lan {
    /// `n` hosts named `<tag>-h1`… (tag: a few letters, unique per test).
    pub fn new(tag: &str, n: usize) -> Lan {
        let pid = std::process::id();
        let tag = format!("{tag}{}", pid % 10_000);
        assert!(tag.len() <= 11, "tag too long for interface names");
        // A /24 nobody in this namespace uses.
        let taken = ip_out(&["-o", "-4", "addr"]);
        let prefix = (0..250)
            .map(|k| format!("10.231.{}", (pid as usize + k) % 250))
            .find(|p| !taken.contains(&format!("{p}.")))
            .expect("a free 10.231.x.0/24");
        let switch = Netns::add(&format!("{tag}-sw"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let root_if = format!("{tag}r");
        let _ = Command::new("ip").args(["link", "del", &root_if]).output();
        ip(&["link", "add", &root_if, "type", "veth", "peer", "name", "up0", "netns", &switch.name]);
        let mut lan = Lan { prefix: prefix.clone(), hosts: Vec::new(), root_if: root_if.clone(), _switch: switch };
        lan._switch.ip(&["link", "set", "up0", "master", "br0", "up"]);
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &root_if]);
        ip(&["link", "set", &root_if, "up"]);
        for i in 0..n {
            let h = Netns::add(&format!("{tag}-h{}", i + 1));
            let port = format!("p{}", i + 1);
            ip(&[
                "link",
                "add",
                "lan0",
                "netns",
                &h.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &lan._switch.name,
            ]);
            lan._switch.ip(&["link", "set", &port, "master", "br0", "up"]);
            h.ip(&["addr", "add", &format!("{prefix}.{}/24", 11 + i), "dev", "lan0"]);
            h.ip(&["link", "set", "lan0", "up"]);
            lan.hosts.push(h);
        }
        lan
    }

    /// Address of host `i` (from 0).
    pub fn host_addr(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 11 + i)
    }

    /// The test namespace's address on the segment.
    pub fn own_addr(&self) -> String {
        format!("{}.1", self.prefix)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.root_if]).output();
    }
}

/// Unmounts and removes namespaces an agent pinned under `dir` (what a
/// killed agent leaves; an agent that stopped its containers leaves none).
pub fn remove_pinned(dir: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(c) = std::ffi::CString::new(e.path().as_os_str().as_encoded_bytes()) {
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}
