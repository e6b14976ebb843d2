//! Service specs and the OCI runtime spec built from them.

use crate::error::{Error, Result};
use crate::idmap::IdMapping;
use crate::image::ImageConfig;
use crate::network::{Paths, PortMapping};
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, Mount, MountBuilder, Process, Root, Spec, User,
};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use zoe_common::resources::Millicores;

/// Label keys the agent puts on its containers; reattach finds its own
/// containers (and tells orphans apart) by them.
/// (The names are zoe-common's, shared with the coordinator.)
pub const LABEL_EXECUTION: &str = zoe_common::service::labels::EXECUTION_ID;
pub const LABEL_SERVICE: &str = zoe_common::service::labels::SERVICE_ID;
pub const LABEL_INSTANCE: &str = zoe_common::service::labels::INSTANCE;
/// Written when the container exits, so a restarted agent still knows how.
pub const LABEL_EXIT_CODE: &str = "zoe.exit_code";
pub const LABEL_OOM: &str = "zoe.oom_killed";

/// CFS period used for quotas (Docker's and Zoe's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Default /dev/shm size, as Docker's.
pub const DEFAULT_SHM_BYTES: u64 = 64 << 20;

/// How a container is networked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The host's network namespace, files and ports.
    #[default]
    Host,
    /// Its own namespace and address on the node's bridge (see
    /// [`crate::network`]), with these ports published on the node.
    Bridge { ports: Vec<PortMapping> },
}

/// A host directory bound into the container (volumes, the user workspace).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// The node's host volume `source` is the path of (the node's own
    /// definition allows it, not `[security] host_paths`).
    #[serde(default)]
    pub host_volume: Option<String>,
}

/// Resource limits of one container. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Hard CPU limit (CFS quota over a 100 ms period) and weight.
    pub cpu: Option<Millicores>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
    /// Size of /dev/shm (Spark and TensorFlow want more than 64 MiB).
    pub shm_bytes: Option<u64>,
}

/// Who a container belongs to, in zoe's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ownership {
    pub execution_id: String,
    pub service_id: String,
    pub instance_name: String,
}

/// Everything the agent needs to start one service instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    /// Container id, unique on the node: `[A-Za-z0-9]` words joined by `.`,
    /// `_` or `-`, at most 76 characters.
    pub id: String,
    pub image: String,
    /// Replaces the image's entrypoint (and then its cmd too, as Docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's cmd.
    pub command: Option<Vec<String>>,
    /// Added to (and overriding) the image's environment.
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    /// `user[:group]`, by name (looked up in the image) or number; defaults
    /// to the image's user, then root.
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub mounts: Vec<BindMount>,
    pub owner: Ownership,
    /// Extra labels for the container record.
    pub labels: BTreeMap<String, String>,
    pub resources: Resources,
    pub network: NetworkMode,
    /// The container's own user namespace (see [`crate::idmap`]); `None`
    /// runs it with the host's ids, root being the host's root.
    pub user_namespace: Option<IdMapping>,
}

impl ContainerSpec {
    /// Container `id` of `image` running `argv`, instance `id` of service
    /// `service_id` of execution `execution_id`; nothing else set.
    pub fn running(id: &str, image: &str, argv: &[&str], execution_id: &str, service_id: &str) -> ContainerSpec {
        ContainerSpec {
            id: id.into(),
            image: image.into(),
            command: Some(argv.iter().map(|a| a.to_string()).collect()),
            owner: Ownership {
                execution_id: execution_id.into(),
                service_id: service_id.into(),
                instance_name: id.into(),
            },
            ..ContainerSpec::default()
        }
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidSpec { field: field.to_string(), reason: reason.into() }
}

/// containerd's identifier rule.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id.split(['.', '_', '-']).all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "id",
            format!("{id:?} must be letters and digits joined by `.`, `_` or `-`, at most 76 characters"),
        ))
    }
}

/// CPU weight from millicores: 1024 shares per core, as Docker maps cores.
pub fn cpu_shares(m: Millicores) -> u64 {
    (u64::from(m.0) * 1024 / 1000).max(2)
}

/// The CFS quota of `m` cores, at most `cap` (the parent cgroup's limit,
/// else the host's CPUs). A quota above the parent's is refused by the
/// kernel (runc: `cpu.cfs_quota_us: invalid argument`), e.g. when
/// `[advertise]` reports more cores than the host has, and one above the
/// host's CPUs could not be used anyway.
pub fn cfs_quota(m: Millicores, cap: Millicores) -> i64 {
    Millicores(m.0.min(cap.0)).cfs_quota(CPU_PERIOD_US)
}

/// Linux resources for runc and for live updates; `cpu_cap` bounds the
/// CPU quota (see [`cfs_quota`]).
pub fn linux_resources(r: &Resources, with_devices: bool, cpu_cap: Millicores) -> Result<LinuxResources> {
    let spec_err = |e: oci_spec::OciSpecError| invalid("resources", e.to_string());
    let mut res = LinuxResources::default();
    if with_devices {
        // Deny everything; runc adds its allow-list of the standard devices.
        res.set_devices(Some(vec![
            LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().map_err(spec_err)?,
        ]));
    }
    if let Some(m) = r.cpu {
        if m.0 == 0 {
            return Err(invalid("resources.cpu", "must be more than 0 millicores"));
        }
        res.set_cpu(Some(
            LinuxCpuBuilder::default()
                .shares(cpu_shares(m))
                .quota(cfs_quota(m, cpu_cap))
                .period(CPU_PERIOD_US)
                .build()
                .map_err(spec_err)?,
        ));
    }
    if let Some(b) = r.memory_bytes {
        // runc's init runs inside the limit before the command starts;
        // Docker's floor of 6 MiB keeps it from being OOM-killed there.
        if b < 6 << 20 {
            return Err(invalid("resources.memory_bytes", "must be at least 6 MiB"));
        }
        res.set_memory(Some(LinuxMemoryBuilder::default().limit(b as i64).build().map_err(spec_err)?));
    }
    if let Some(p) = r.pids {
        if p < 1 {
            return Err(invalid("resources.pids", "must be at least 1"));
        }
        res.set_pids(Some(LinuxPidsBuilder::default().limit(p).build().map_err(spec_err)?));
    }
    Ok(res)
}

/// The image's account files, read from its root filesystem, for user
/// names (`USER jovyan` in many analytics images).
#[derive(Debug, Clone, Default)]
pub struct AccountFiles {
    pub passwd: String,
    pub group: String,
}

fn lookup(file: &str, name: &str, id_field: usize) -> Option<(u32, Option<u32>)> {
    file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&name) {
            return None;
        }
        let id = f.get(id_field)?.parse().ok()?;
        // passwd has the primary group after the uid.
        let gid = f.get(id_field + 1).and_then(|g| g.parse().ok());
        Some((id, gid))
    })
}

/// Whether `user` names an account (not only numbers), so that the image's
/// /etc/passwd must be read to start the container.
pub fn user_is_named(user: &str) -> bool {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let named = |x: &str| !x.is_empty() && x.parse::<u32>().is_err();
    (named(u) && u != "root") || named(g)
}

/// Resolves `user[:group]` (names or numbers) to ids; names need `files`.
pub fn resolve_user(user: &str, files: Option<&AccountFiles>) -> Result<(u32, u32)> {
    if user.is_empty() || user == "root" {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) if u == "root" => (0, Some(0)),
        Err(_) => {
            let f = files.ok_or_else(|| invalid("user", format!("{u:?} needs the image's /etc/passwd")))?;
            let (uid, gid) = lookup(&f.passwd, u, 2)
                .ok_or_else(|| invalid("user", format!("no user {u:?} in the image's /etc/passwd")))?;
            (uid, gid)
        }
    };
    let gid = if g.is_empty() {
        primary.unwrap_or(uid)
    } else {
        match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let f = files.ok_or_else(|| invalid("user", format!("group {g:?} needs the image's /etc/group")))?;
                lookup(&f.group, g, 2)
                    .ok_or_else(|| invalid("user", format!("no group {g:?} in the image's /etc/group")))?
                    .0
            }
        }
    };
    Ok((uid, gid))
}

/// Docker's default capability set without CAP_NET_RAW: enough for
/// ordinary services, nothing that reaches outside the container (raw
/// sockets let a tenant forge packets or, on the host's network, sniff
/// other tenants' traffic).
fn default_capabilities() -> HashSet<Capability> {
    use Capability::*;
    [
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// The argv: Docker's rule for combining entrypoint and cmd.
pub fn command_line(spec: &ContainerSpec, image: &ImageConfig) -> Vec<String> {
    let entrypoint = spec.entrypoint.clone().or_else(|| image.entrypoint.clone()).unwrap_or_default();
    let cmd = match (&spec.command, &spec.entrypoint) {
        (Some(c), _) => c.clone(),
        // A new entrypoint drops the image's cmd.
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone().unwrap_or_default(),
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// Builds the OCI runtime spec of a service on top of oci-spec's defaults
/// (proc, dev, devpts, shm, mqueue, sysfs, cgroup mounts; masked and
/// read-only paths; pid, ipc, uts, mount, cgroup namespaces).
pub fn build_spec(
    spec: &ContainerSpec,
    image: &ImageConfig,
    cgroups_path: &str,
    accounts: Option<&AccountFiles>,
    cpu_cap: Millicores,
) -> Result<Spec> {
    validate_id(&spec.id)?;
    let args = command_line(spec, image);
    if args.is_empty() {
        return Err(invalid("command", "neither the spec nor the image gives a command"));
    }
    let hostname = spec.hostname.clone().unwrap_or_else(|| spec.id.clone());

    // Environment: image first, the spec overrides by name.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        if let Some(e) = env.iter_mut().find(|(ek, _)| ek == k) {
            e.1 = v.to_string();
        } else {
            env.push((k.to_string(), v.to_string()));
        }
    };
    set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for kv in image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    set("HOSTNAME", &hostname);
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(&format!("env.{k}"), "variable names must be non-empty and contain no `=`"));
        }
        set(k, v);
    }

    let user = spec.user.clone().or_else(|| image.user.clone()).unwrap_or_default();
    let (uid, gid) = resolve_user(&user, accounts)?;
    let mut u = User::default();
    u.set_uid(uid);
    u.set_gid(gid);
    if uid != 0 {
        // Root's supplementary groups must not leak into an unprivileged user.
        u.set_additional_gids(Some(vec![gid]));
    }

    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(invalid("working_dir", "must be an absolute path"));
    }

    let caps = default_capabilities();
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(caps.clone()));
    c.set_effective(Some(caps.clone()));
    c.set_permitted(Some(caps));
    c.set_inheritable(None);
    c.set_ambient(None);

    let mut p = Process::default();
    p.set_args(Some(args));
    p.set_env(Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()));
    p.set_cwd(cwd.into());
    p.set_user(u);
    p.set_capabilities(Some(c));
    // setuid binaries in an image must not regain what was dropped.
    p.set_no_new_privileges(Some(true));
    // No rlimits: the process inherits the shim's (containerd's service
    // limits), as under Docker; raising them here fails when containerd
    // runs with lower hard limits.
    p.set_rlimits(None);

    let mut s = Spec::default();
    s.set_process(Some(p));
    let mut root = Root::default();
    root.set_path("rootfs".into());
    root.set_readonly(Some(false));
    s.set_root(Some(root));
    s.set_hostname(Some(hostname));

    // Mounts: the defaults with /dev/shm sized, then host files for host
    // networking, then the service's binds (last, so they win).
    let shm = spec.resources.shm_bytes.unwrap_or(DEFAULT_SHM_BYTES);
    let mut mounts: Vec<Mount> = s.mounts().clone().unwrap_or_default();
    for m in mounts.iter_mut() {
        if m.destination().as_os_str() == "/dev/shm" {
            m.set_options(Some(vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "mode=1777".into(),
                format!("size={shm}"),
            ]));
        }
    }
    if spec.user_namespace.is_some() {
        // A fresh sysfs may only be mounted by the user namespace owning
        // the network namespace, and the agent (host root) made that one
        // (or it is the host's): the host's sysfs is bound instead, read
        // only, as rootless Podman does. Recursively: the kernel refuses
        // (EINVAL) a plain bind that would uncover what the host's
        // submounts hide; they stay the host root's, and the cgroup mount
        // below covers /sys/fs/cgroup.
        for m in mounts.iter_mut() {
            if m.destination().as_os_str() == "/sys" {
                m.set_typ(Some("bind".into()));
                m.set_source(Some("/sys".into()));
                m.set_options(Some(vec![
                    "rbind".into(),
                    "rprivate".into(),
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                    "ro".into(),
                ]));
            }
        }
    }
    let bind = |src: PathBuf, dst: &str, ro: bool| -> Result<Mount> {
        MountBuilder::default()
            .destination(dst)
            .typ("bind")
            .source(src)
            .options(vec!["rbind".to_string(), "rprivate".to_string(), if ro { "ro" } else { "rw" }.to_string()])
            .build()
            .map_err(|e| invalid("mounts", e.to_string()))
    };
    match spec.network {
        NetworkMode::Host => {
            // The host's name resolution, as Docker gives --net=host.
            for f in ["/etc/resolv.conf", "/etc/hosts"] {
                if std::path::Path::new(f).exists() {
                    mounts.push(bind(f.into(), f, true)?);
                }
            }
        }
        // The agent's own files, bound by [`join_network`].
        NetworkMode::Bridge { .. } => {}
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        if !m.target.starts_with('/') {
            return Err(invalid(&format!("mounts[{i}].target"), "must be an absolute path"));
        }
        if !m.source.is_absolute() {
            return Err(invalid(&format!("mounts[{i}].source"), "must be an absolute path"));
        }
        if !m.source.exists() {
            return Err(invalid(
                &format!("mounts[{i}].source"),
                format!("{} does not exist on this node", m.source.display()),
            ));
        }
        mounts.push(bind(m.source.clone(), &m.target, m.read_only)?);
    }
    s.set_mounts(Some(mounts));

    let linux = s.linux_mut().as_mut().expect("default spec has a linux section");
    match spec.network {
        // No network namespace: the container shares the host's.
        NetworkMode::Host => {
            let ns: Vec<_> = linux
                .namespaces()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.typ() != LinuxNamespaceType::Network)
                .collect();
            linux.set_namespaces(Some(ns));
        }
        // A network namespace of its own; [`join_network`] gives its path.
        NetworkMode::Bridge { .. } => {}
    }
    if let Some(m) = &spec.user_namespace {
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        let mut user = oci_spec::runtime::LinuxNamespace::default();
        user.set_typ(LinuxNamespaceType::User);
        ns.push(user);
        linux.set_namespaces(Some(ns));
        let (uids, gids) = m.oci();
        linux.set_uid_mappings(Some(uids));
        linux.set_gid_mappings(Some(gids));
    }
    // Every container, whoever asked: no new user namespaces, mounts,
    // keyrings, bpf or modules (see `seccomp`).
    linux.set_seccomp(Some(crate::seccomp::default_profile()));
    linux.set_resources(Some(linux_resources(&spec.resources, true, cpu_cap)?));
    linux.set_cgroups_path(Some(cgroups_path.into()));
    Ok(s)
}

/// Makes a bridged container join the namespace the agent prepared and
/// see the agent's `/etc/hosts` and `/etc/resolv.conf`.
pub fn join_network(s: &mut Spec, paths: &Paths) -> Result<()> {
    let linux = s.linux_mut().as_mut().expect("default spec has a linux section");
    let mut ns = linux.namespaces().clone().unwrap_or_default();
    ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
    let mut net = oci_spec::runtime::LinuxNamespace::default();
    net.set_typ(LinuxNamespaceType::Network);
    net.set_path(Some(paths.netns.clone()));
    ns.push(net);
    linux.set_namespaces(Some(ns));
    let mut mounts = s.mounts().clone().unwrap_or_default();
    for (src, dst) in [(&paths.hosts, "/etc/hosts"), (&paths.resolv, "/etc/resolv.conf")] {
        mounts.push(
            MountBuilder::default()
                .destination(dst)
                .typ("bind")
                .source(src.clone())
                .options(vec!["rbind".to_string(), "rprivate".to_string(), "ro".to_string()])
                .build()
                .map_err(|e| invalid("mounts", e.to_string()))?,
        );
    }
    s.set_mounts(Some(mounts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_CAP: Millicores = Millicores(u32::MAX);

    fn spec() -> ContainerSpec {
        ContainerSpec { id: "svc-1".into(), image: "busybox".into(), ..Default::default() }
    }

    #[test]
    fn entrypoint_and_cmd_combine_like_docker() {
        let img = ImageConfig {
            entrypoint: Some(vec!["/init".into()]),
            cmd: Some(vec!["serve".into()]),
            ..Default::default()
        };
        assert_eq!(command_line(&spec(), &img), vec!["/init", "serve"]);
        let s = ContainerSpec { command: Some(vec!["x".into()]), ..spec() };
        assert_eq!(command_line(&s, &img), vec!["/init", "x"]);
        let s = ContainerSpec { entrypoint: Some(vec!["/bin/sh".into()]), ..spec() };
        assert_eq!(command_line(&s, &img), vec!["/bin/sh"]);
    }

    #[test]
    fn resources_map_to_cgroup_values() {
        let r = Resources { cpu: Some(Millicores(500)), memory_bytes: Some(64 << 20), pids: Some(64), shm_bytes: None };
        let l = linux_resources(&r, true, NO_CAP).unwrap();
        let cpu = l.cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(l.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(l.pids().as_ref().unwrap().limit(), 64);
    }

    #[test]
    fn spec_is_sane() {
        let mut s = spec();
        s.env.insert("A".into(), "1".into());
        s.user = Some("1000:1001".into());
        let img = ImageConfig {
            cmd: Some(vec!["sh".into()]),
            env: Some(vec!["A=0".into(), "B=2".into()]),
            ..Default::default()
        };
        let o = build_spec(&s, &img, "/zoe/ns-svc-1", None, NO_CAP).unwrap();
        let p = o.process().as_ref().unwrap();
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=1".to_string()) && env.contains(&"B=2".to_string()));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().gid(), 1001);
        assert_eq!(o.root().as_ref().unwrap().readonly(), Some(false));
        let linux = o.linux().as_ref().unwrap();
        assert!(!linux.namespaces().as_ref().unwrap().iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        assert_eq!(linux.cgroups_path().as_deref(), Some(std::path::Path::new("/zoe/ns-svc-1")));
        assert!(build_spec(&ContainerSpec { id: "bad id".into(), ..spec() }, &img, "/x", None, NO_CAP).is_err());

        // Bridged: its own namespace, at the agent's path, with its files.
        let b = ContainerSpec { network: NetworkMode::Bridge { ports: vec![] }, ..spec() };
        let mut o = build_spec(&b, &img, "/x", None, NO_CAP).unwrap();
        let paths = Paths { netns: "/run/zoe/netns/ns/svc-1".into(), hosts: "/h".into(), resolv: "/r".into() };
        join_network(&mut o, &paths).unwrap();
        let net: Vec<_> = o
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|n| n.typ() == LinuxNamespaceType::Network)
            .collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0].path().as_deref(), Some(std::path::Path::new("/run/zoe/netns/ns/svc-1")));
        let m = o.mounts().as_ref().unwrap();
        assert!(m.iter().any(|m| m.destination().as_os_str() == "/etc/hosts"
            && m.source().as_deref() == Some(std::path::Path::new("/h"))));
        assert!(build_spec(&ContainerSpec { user: Some("alice".into()), ..spec() }, &img, "/x", None, NO_CAP).is_err());
    }

    #[test]
    fn user_names_resolve_through_the_image_files() {
        let f = AccountFiles {
            passwd: "root:x:0:0::/root:/bin/sh\njovyan:x:1000:100::/home/jovyan:/bin/bash\n".into(),
            group: "root:x:0:\nusers:x:100:\nstaff:x:50:\n".into(),
        };
        assert!(
            user_is_named("jovyan")
                && user_is_named("1000:staff")
                && !user_is_named("1000:100")
                && !user_is_named("root")
        );
        assert_eq!(resolve_user("jovyan", Some(&f)).unwrap(), (1000, 100));
        assert_eq!(resolve_user("jovyan:staff", Some(&f)).unwrap(), (1000, 50));
        assert_eq!(resolve_user("7", None).unwrap(), (7, 7));
        assert!(resolve_user("nobody", Some(&f)).is_err());
        assert!(resolve_user("jovyan", None).is_err());
    }
}
