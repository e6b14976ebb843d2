//! User namespaces: uid 0 in a container is not uid 0 on the host.
//!
//! A mapped container's root is its owner's `fs_uid:fs_gid` on the host
//! (as rootless Podman maps a user's containers), so what a job writes to
//! the user's workspace is the user's, and ids 1..65535 inside are the
//! node's subordinate range `base+1..base+65535`, shared by every mapped
//! container of the node and owned by no one on the host.
//!
//! The image's files stay owned by 0 on disk; the container must see them
//! as its root's. containerd 1.6 cannot remap a snapshot without copying
//! (its Go client chowns a whole copy of the image) and runc 1.1 knows no
//! idmapped mounts, so the agent does what containerd 2 does: the lower
//! layers are read through an *idmapped* view of the snapshotter's
//! directory (kernel 5.19+: `mount_setattr(MOUNT_ATTR_IDMAP)`), and the
//! fresh, empty upper layer is chowned to the container's root. The
//! overlay itself cannot be idmapped (EINVAL), and an idmapped upper fails
//! (overlayfs creates its work dirs as the mounter, host root, whom the
//! mapping does not contain: EOVERFLOW). One read-only view per mapping is
//! made on first use and kept; overlayfs holds its own references to its
//! layers, so a view can go at any time without harming running containers.

use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Ids a mapped container has: 0 and the subordinate 1..65535.
pub const RANGE: u32 = 65_536;

/// How a container's ids map onto the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IdMapping {
    /// The host uid and gid of the container's root.
    pub root_uid: u32,
    pub root_gid: u32,
    /// The node's subordinate range starts here: container id `i > 0` is
    /// host id `base + i`.
    pub base: u32,
}

/// Why an id mapping cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("the subordinate range {start}..{end} does not fit in 32 bits")]
    RangeOverflow { start: u64, end: u64 },
    #[error("{what} 0 would make the container's root the host's root")]
    HostRoot { what: &'static str },
    #[error("{what} {id} lies in this node's subordinate id range {start}..{end} ([security] id_base)")]
    SubordinateId { what: &'static str, id: u32, start: u64, end: u64 },
}

impl IdMapping {
    /// Why this mapping cannot be used: root would be the host's root, or
    /// the container's root would share ids with other tenants' non-root
    /// users (the subordinate range).
    pub fn check(&self) -> Result<(), MappingError> {
        let (start, end) = (u64::from(self.base), u64::from(self.base) + u64::from(RANGE));
        if end > u64::from(u32::MAX) {
            return Err(MappingError::RangeOverflow { start, end });
        }
        for (what, id) in [("fs_uid", self.root_uid), ("fs_gid", self.root_gid)] {
            if id == 0 {
                return Err(MappingError::HostRoot { what });
            }
            if (start..end).contains(&u64::from(id)) {
                return Err(MappingError::SubordinateId { what, id, start, end });
            }
        }
        Ok(())
    }

    fn entries(root: u32, base: u32) -> [(u32, u32, u32); 2] {
        [(0, root, 1), (1, base + 1, RANGE - 1)]
    }

    /// The OCI spec's `uidMappings` and `gidMappings`.
    pub fn oci(&self) -> (Vec<LinuxIdMapping>, Vec<LinuxIdMapping>) {
        let build = |root| {
            Self::entries(root, self.base)
                .iter()
                .map(|&(c, h, n)| {
                    LinuxIdMappingBuilder::default().container_id(c).host_id(h).size(n).build().expect("all fields set")
                })
                .collect()
        };
        (build(self.root_uid), build(self.root_gid))
    }

    /// `/proc/PID/uid_map` text.
    fn proc_map(root: u32, base: u32) -> String {
        Self::entries(root, base).iter().map(|(c, h, n)| format!("{c} {h} {n}\n")).collect()
    }
}

/// The idmapped views of the snapshotter's layers, one per mapping, under
/// `dir` (in the agent's data dir: only root traverses it, and only
/// overlayfs, mounting as root, reads through it).
pub struct LayerViews {
    dir: PathBuf,
    views: Mutex<HashMap<(IdMapping, PathBuf), PathBuf>>,
}

impl LayerViews {
    /// Views left by an earlier agent are dropped: they are cheap to make
    /// again, and their mappings may no longer be wanted.
    pub fn new(dir: PathBuf) -> io::Result<LayerViews> {
        if let Ok(list) = std::fs::read_dir(&dir) {
            for e in list.flatten() {
                detach(&e.path());
                let _ = std::fs::remove_dir(e.path());
            }
        }
        std::fs::create_dir_all(&dir)?;
        Ok(LayerViews { dir, views: Mutex::new(HashMap::new()) })
    }

    /// The view of `layers` (the snapshotter's `snapshots` directory) whose
    /// files are owned through the mapping `m` (on-disk 0 is the
    /// container's root, `i` is `base + i`). Blocking.
    pub fn view(&self, m: IdMapping, layers: &Path) -> io::Result<PathBuf> {
        let mut views = self.views.lock().expect("lock");
        let key = (m, layers.to_path_buf());
        if let Some(p) = views.get(&key) {
            return Ok(p.clone());
        }
        let at = self.dir.join(format!("{}.{}.{}.{}", m.root_uid, m.root_gid, m.base, views.len()));
        std::fs::create_dir_all(&at)?;
        if let Err(e) = idmapped_view(layers, &at, m) {
            let _ = std::fs::remove_dir(&at);
            return Err(e);
        }
        views.insert(key, at.clone());
        Ok(at)
    }
}

impl Drop for LayerViews {
    fn drop(&mut self) {
        for p in self.views.lock().expect("lock").values() {
            detach(p);
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn detach(p: &Path) {
    if let Ok(c) = CString::new(p.as_os_str().as_bytes()) {
        // SAFETY: a valid C string; EINVAL (not a mount point) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// `struct mount_attr` of <linux/mount.h>.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Mounts a read-only, idmapped copy of `src` at `dst`: open_tree clones
/// it detached, mount_setattr gives it the mapping of a user namespace
/// made for the purpose, move_mount attaches it.
fn idmapped_view(src: &Path, dst: &Path, m: IdMapping) -> io::Result<()> {
    let userns = user_namespace(m)?;
    let src = cstr(src)?;
    let dst = cstr(dst)?;
    let empty = c"";
    // SAFETY: plain syscalls on valid C strings; the returned fd is owned.
    let tree = unsafe {
        let fd = check(libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        ))?;
        OwnedFd::from_raw_fd(fd as i32)
    };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` outlives the call and its size is passed.
    unsafe {
        check(libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ))
        .map_err(|e| io::Error::new(e.kind(), format!("idmapping the layers (kernel 5.19+ needed): {e}")))?;
        check(libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ))?;
    }
    Ok(())
}

/// A user namespace with mapping `m`, held by its fd: a forked child
/// unshares one and waits while its maps are written, then exits.
fn user_namespace(m: IdMapping) -> io::Result<OwnedFd> {
    let mut ready = [0 as libc::c_int; 2];
    let mut release = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the arrays; the fds are closed below.
    unsafe {
        check(libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) as libc::c_long)?;
        if let Err(e) = check(libc::pipe2(release.as_mut_ptr(), libc::O_CLOEXEC) as libc::c_long) {
            libc::close(ready[0]);
            libc::close(ready[1]);
            return Err(e);
        }
    }
    // SAFETY: the child only makes async-signal-safe syscalls, then _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            // The read below ends when every write end is closed: its own
            // copy first.
            libc::close(release[1]);
            libc::close(ready[0]);
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 { 1 } else { 0 };
            libc::write(ready[1], &ok as *const u8 as *const libc::c_void, 1);
            let mut b = 0u8;
            libc::read(release[0], &mut b as *mut u8 as *mut libc::c_void, 1);
            libc::_exit(0);
        }
    }
    // SAFETY: the parent's ends are owned from here on.
    let (ready_r, release_w) = unsafe {
        libc::close(ready[1]);
        libc::close(release[0]);
        (OwnedFd::from_raw_fd(ready[0]), OwnedFd::from_raw_fd(release[1]))
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let mut ok = 0u8;
        // SAFETY: one byte into a local.
        let n = unsafe { libc::read(ready_r.as_raw_fd(), &mut ok as *mut u8 as *mut libc::c_void, 1) };
        if n != 1 || ok != 1 {
            return Err(io::Error::other("could not create a user namespace"));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), IdMapping::proc_map(m.root_uid, m.base))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), IdMapping::proc_map(m.root_gid, m.base))?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(f))
    })();
    drop(release_w);
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    result
}

/// Rewrites a snapshot's mounts for a mapped container: overlay lower dirs
/// through the mapping's view, the upper dir (empty, fresh from prepare)
/// owned by the container's root. Blocking.
pub fn remap_mounts(
    mounts: &mut [containerd_client::types::Mount],
    m: IdMapping,
    views: &LayerViews,
) -> io::Result<()> {
    for mount in mounts.iter_mut() {
        match mount.r#type.as_str() {
            "overlay" => {
                for opt in mount.options.iter_mut() {
                    if let Some(lower) = opt.strip_prefix("lowerdir=") {
                        *opt = format!("lowerdir={}", remap_lowers(lower, m, views)?);
                    } else if let Some(upper) = opt.strip_prefix("upperdir=") {
                        std::os::unix::fs::lchown(upper, Some(m.root_uid), Some(m.root_gid))?;
                    }
                }
            }
            // A snapshot without parents is a bind of its own (empty) dir.
            "bind" | "rbind" => std::os::unix::fs::lchown(&mount.source, Some(m.root_uid), Some(m.root_gid))?,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("cannot map ids of a {other} rootfs mount"),
                ));
            }
        }
    }
    Ok(())
}

/// `…/snapshots/N/fs` becomes `VIEW/N/fs`, VIEW being the mapped view of
/// `…/snapshots`.
fn remap_lowers(list: &str, m: IdMapping, views: &LayerViews) -> io::Result<String> {
    let mut out = Vec::new();
    for dir in list.split(':') {
        let p = Path::new(dir);
        let Some(layers) = p.parent().and_then(Path::parent) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected lower dir {dir}")));
        };
        let view = views.view(m, layers)?;
        let rel = p.strip_prefix(layers).expect("a parent's prefix");
        out.push(view.join(rel).to_string_lossy().into_owned());
    }
    Ok(out.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_owner_and_the_rest_the_subordinate_range() {
        let m = IdMapping { root_uid: 1000, root_gid: 5001, base: 2_000_000_000 };
        m.check().unwrap();
        assert_eq!(IdMapping::proc_map(m.root_uid, m.base), "0 1000 1\n1 2000000001 65535\n");
        let (u, g) = m.oci();
        assert_eq!((u[0].host_id(), g[0].host_id(), u[1].size()), (1000, 5001, 65535));
    }

    #[test]
    fn host_root_and_the_subordinate_range_are_refused_as_owner() {
        let base = 100_000;
        for (uid, gid, says) in
            [(0, 5001, "fs_uid 0"), (1000, 0, "fs_gid 0"), (100_001, 5001, "subordinate"), (1000, 165_535, "fs_gid")]
        {
            let e = IdMapping { root_uid: uid, root_gid: gid, base }.check().unwrap_err();
            assert!(e.to_string().contains(says), "{uid}:{gid}: {e}");
        }
        assert!(IdMapping { root_uid: 1, root_gid: 1, base: u32::MAX - 10 }.check().is_err());
    }
}
