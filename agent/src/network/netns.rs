//! Network namespaces the agent creates for its containers: a fresh
//! namespace (unshare on a short-lived thread) kept alive by a bind mount
//! of its `/proc` file onto a file under the agent's namespace directory,
//! the way `ip netns add` does it, without running `ip`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Makes `dir` a mount point with shared propagation (as iproute2 does for
/// /run/netns), so that namespaces mounted inside it are visible in mount
/// namespaces created later (containerd's shims, runc).
pub fn ensure_shared_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let d = cstr(dir)?;
    let none = c"none";
    let share = || unsafe {
        libc::mount(none.as_ptr(), d.as_ptr(), std::ptr::null(), libc::MS_SHARED | libc::MS_REC, std::ptr::null())
    };
    if share() == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    // Not a mount point yet: bind it onto itself first.
    check(unsafe {
        libc::mount(d.as_ptr(), d.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null())
    })?;
    check(share())
}

/// Creates a new network namespace pinned at `path` (which must not be a
/// mounted namespace already; a leftover plain file is replaced).
pub fn create(path: &Path) -> io::Result<()> {
    if is_mounted(path) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is already a namespace", path.display())));
    }
    {
        let _ = std::fs::remove_file(path);
        std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    }
    let target = cstr(path)?;
    // unshare(CLONE_NEWNET) moves only the calling thread: do it on a
    // thread of our own that ends right after, so no runtime thread
    // changes namespace.
    let r = std::thread::spawn(move || -> io::Result<()> {
        check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
        // As Docker sets them: a container's root, unprivileged on the host
        // in its user namespace, still binds ports below 1024 and pings
        // (ICMP datagram sockets, CAP_NET_RAW being dropped). /proc/sys/net
        // is the opening thread's namespace: this new one.
        std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")?;
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")?;
        let src = c"/proc/thread-self/ns/net";
        check(unsafe { libc::mount(src.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) })
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?;
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// Whether `path` is a mounted namespace (a bind mount of an nsfs inode).
pub fn is_mounted(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(p) = cstr(path) else { return false };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(p.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC }
}

/// Unmounts and removes a namespace file; a missing one is success. The
/// namespace itself (and the veth end inside it) goes away with its last
/// user.
pub fn remove(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let p = cstr(path)?;
    if is_mounted(path) {
        let r = unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
