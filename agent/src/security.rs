//! The agent's own limits on what it runs (`[security]`). A coordinator
//! checks a submission against the owner's role; the agent checks again
//! against its own configuration, which has the last word: a compromised
//! or buggy coordinator (or anyone holding a coordinator certificate)
//! still cannot bind a host path the node's admin did not list, nor start
//! a container without memory and pids limits.
//!
//! ```toml
//! [security]
//! host_paths = ["/srv/zoe/workspaces", "/srv/datasets"]  # bind sources allowed (directories and below); default none
//! host_network = false          # default true; set false on nodes of a bridged cluster
//! pids_max = 4096               # every container's pids limit
//! memory_default_bytes = 4294967296  # limit of a container whose spec has none
//! registries = ["registry.example:5000", "zoe.local"]  # images it runs; default: any
//! id_base = 2000000000          # subordinate ids of user namespaces: base+1..base+65535
//! host_root = false             # containers may run with the host's ids (role can_run_as_host_root)
//! ```

use crate::error::{Error, Result};
use crate::spec::{BindMount, ContainerSpec, NetworkMode};
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use zoe_common::config::Invalid;
use zoe_common::service::{HostVolume, ServiceSpec as WireSpec};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// Host directories a container may bind, with everything below them.
    pub host_paths: Vec<PathBuf>,
    /// Whether a container may share the host's network namespace.
    pub host_network: bool,
    pub pids_max: i64,
    pub memory_default_bytes: u64,
    /// Registries whose images this node runs (`host` or `host:port`); empty: any.
    pub registries: Vec<String>,
    /// Start of the node's subordinate id range (see [`crate::idmap`]):
    /// above systemd's and /etc/subuid's allocations, below 2^31.
    pub id_base: u32,
    /// Whether a container may run without a user namespace, its root
    /// being the host's root, when its owner's role allows it.
    pub host_root: bool,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            host_paths: Vec::new(),
            host_network: true,
            pids_max: 4096,
            memory_default_bytes: 4 << 30,
            registries: Vec::new(),
            id_base: 2_000_000_000,
            host_root: false,
        }
    }
}

impl SecuritySettings {
    pub fn validate(&self) -> std::result::Result<(), Invalid> {
        if self.pids_max < 16 {
            return Err(Invalid::new("security.pids_max", "at least 16"));
        }
        if self.memory_default_bytes < 6 << 20 {
            return Err(Invalid::new("security.memory_default_bytes", "at least 6 MiB"));
        }
        if self.id_base < 65_536 {
            return Err(Invalid::new("security.id_base", "at least 65536, above ordinary users' ids"));
        }
        let probe = crate::idmap::IdMapping { root_uid: 1, root_gid: 1, base: self.id_base };
        probe.check().map_err(|e| Invalid::new("security.id_base", e.to_string()))?;
        for p in &self.host_paths {
            if !plain_absolute(p) {
                return Err(Invalid::new(
                    "security.host_paths",
                    format!("{} must be absolute, without `..`", p.display()),
                ));
            }
        }
        Ok(())
    }
}

/// An absolute path without `..` (the agent's own host paths and volumes).
pub(crate) fn plain_absolute(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| matches!(c, Component::ParentDir))
}

fn refused(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidSpec { field: field.into(), reason: reason.into() }
}

/// Whether `source` lies under one of `allowed`, judged on the path as the
/// kernel will resolve it (symlinks followed), so a link under an allowed
/// directory cannot point out of it.
fn bind_allowed(source: &Path, allowed: &[PathBuf]) -> bool {
    let Ok(real) = std::fs::canonicalize(source) else { return false };
    allowed.iter().any(|a| std::fs::canonicalize(a).map(|a| real.starts_with(&a)).unwrap_or(false))
}

/// Binds the host volumes `wire` names, as this node defines them: only
/// those it offers to the container's owner, read-only when the volume is.
pub fn mount_host_volumes(spec: &mut ContainerSpec, wire: &WireSpec, volumes: &[HostVolume]) -> Result<()> {
    let who = &wire.identity;
    for m in &wire.mounts {
        let Some(name) = &m.host_volume else { continue };
        let v = volumes.iter().find(|v| &v.name == name).ok_or_else(|| {
            refused(&format!("host_volume.{name}"), format!("this node offers no host volume `{name}`"))
        })?;
        if !v.allows(&who.user, &who.role) {
            return Err(refused(
                &format!("host_volume.{name}"),
                format!("this node does not offer host volume `{name}` to user {} (role {})", who.user, who.role),
            ));
        }
        spec.mounts.push(BindMount {
            source: v.path.clone().into(),
            target: m.target.clone(),
            read_only: m.read_only || v.read_only,
            host_volume: Some(name.clone()),
        });
    }
    Ok(())
}

/// Refuses what this node does not allow and sets the limits every
/// container gets: memory (the default when none is asked), pids (never
/// above `pids_max`) and /dev/shm (never above the memory limit: tmpfs
/// pages are charged to the container, but a bigger size would only end
/// in an OOM kill).
pub fn enforce(spec: &mut ContainerSpec, s: &SecuritySettings) -> Result<()> {
    if !s.registries.is_empty() {
        let r = zoe_common::image::ImageRef::parse(&spec.image).map_err(|e| refused("image", e.to_string()))?;
        if !r.registry_allowed(&s.registries) {
            return Err(refused(
                "image",
                format!("registry {} is not in this node's [security] registries", r.registry()),
            ));
        }
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        if m.host_volume.is_none() && !bind_allowed(&m.source, &s.host_paths) {
            return Err(refused(
                &format!("mounts[{i}].source"),
                format!("{} is not under this node's [security] host_paths", m.source.display()),
            ));
        }
    }
    match spec.user_namespace.as_mut() {
        None if !s.host_root => {
            return Err(refused(
                "user_namespace",
                "this node runs no container with the host's ids ([security] host_root)",
            ));
        }
        None => {}
        Some(m) => {
            m.base = s.id_base;
            m.check().map_err(|e| refused("user_namespace", e.to_string()))?;
        }
    }
    if matches!(spec.network, NetworkMode::Host) && !s.host_network {
        return Err(refused("network", "this node does not allow the host's network ([security] host_network)"));
    }
    let r = &mut spec.resources;
    let memory = *r.memory_bytes.get_or_insert(s.memory_default_bytes);
    r.pids = Some(r.pids.map_or(s.pids_max, |p| p.min(s.pids_max)));
    if let Some(shm) = r.shm_bytes.as_mut() {
        *shm = (*shm).min(memory);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idmap::IdMapping;

    const MAPPED: Option<IdMapping> = Some(IdMapping { root_uid: 1000, root_gid: 5001, base: 0 });

    fn spec_with(source: &Path) -> ContainerSpec {
        ContainerSpec {
            id: "s".into(),
            mounts: vec![BindMount {
                source: source.into(),
                target: "/mnt/x".into(),
                read_only: false,
                host_volume: None,
            }],
            user_namespace: MAPPED,
            ..Default::default()
        }
    }

    #[test]
    fn binds_must_lie_under_an_allowed_directory_even_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("ws");
        std::fs::create_dir_all(allowed.join("ada")).unwrap();
        std::os::unix::fs::symlink("/etc", allowed.join("escape")).unwrap();
        let s = SecuritySettings { host_paths: vec![allowed.clone()], ..Default::default() };

        enforce(&mut spec_with(&allowed.join("ada")), &s).unwrap();
        for bad in [PathBuf::from("/"), PathBuf::from("/etc"), allowed.join("escape"), allowed.join("ada/../../")] {
            let e = enforce(&mut spec_with(&bad), &s).unwrap_err();
            assert!(e.to_string().contains("host_paths"), "{bad:?}: {e}");
        }
        // Nothing listed: no bind at all.
        assert!(enforce(&mut spec_with(&allowed.join("ada")), &SecuritySettings::default()).is_err());
    }

    #[test]
    fn every_container_gets_memory_and_pids_limits_and_a_bounded_shm() {
        let s = SecuritySettings { pids_max: 100, memory_default_bytes: 64 << 20, ..Default::default() };
        let mut spec = ContainerSpec { id: "s".into(), user_namespace: MAPPED, ..Default::default() };
        spec.resources.shm_bytes = Some(1 << 40);
        enforce(&mut spec, &s).unwrap();
        assert_eq!(spec.resources.memory_bytes, Some(64 << 20));
        assert_eq!(spec.resources.pids, Some(100));
        assert_eq!(spec.resources.shm_bytes, Some(64 << 20));

        let mut spec = ContainerSpec { id: "s".into(), user_namespace: MAPPED, ..Default::default() };
        spec.resources.memory_bytes = Some(1 << 30);
        spec.resources.pids = Some(1 << 20);
        enforce(&mut spec, &s).unwrap();
        assert_eq!((spec.resources.memory_bytes, spec.resources.pids), (Some(1 << 30), Some(100)));
    }

    #[test]
    fn images_come_from_the_nodes_registries_only() {
        let s = SecuritySettings { registries: vec!["127.0.0.1:5000".into()], ..Default::default() };
        let mut spec = ContainerSpec {
            id: "s".into(),
            image: "127.0.0.1:5000/zoe/busybox:1".into(),
            user_namespace: MAPPED,
            ..Default::default()
        };
        enforce(&mut spec, &s).unwrap();
        spec.image = "evil.example/miner:latest".into();
        assert!(enforce(&mut spec, &s).unwrap_err().to_string().contains("registries"));
    }

    #[test]
    fn host_network_can_be_refused_by_the_node() {
        let s = SecuritySettings { host_network: false, ..Default::default() };
        let mut spec =
            ContainerSpec { id: "s".into(), network: NetworkMode::Host, user_namespace: MAPPED, ..Default::default() };
        assert!(enforce(&mut spec, &s).unwrap_err().to_string().contains("host_network"));
        spec.network = NetworkMode::Bridge { ports: vec![] };
        enforce(&mut spec, &s).unwrap();
    }

    #[test]
    fn host_ids_only_where_the_node_allows_them_and_never_root_as_owner() {
        let mut spec = ContainerSpec { id: "s".into(), ..Default::default() };
        let e = enforce(&mut spec, &SecuritySettings::default()).unwrap_err();
        assert!(e.to_string().contains("host_root"), "{e}");
        enforce(&mut spec, &SecuritySettings { host_root: true, ..Default::default() }).unwrap();

        let mut spec = ContainerSpec { id: "s".into(), user_namespace: MAPPED, ..Default::default() };
        enforce(&mut spec, &SecuritySettings::default()).unwrap();
        assert_eq!(spec.user_namespace.unwrap().base, 2_000_000_000, "the node's range");
        spec.user_namespace = Some(IdMapping { root_uid: 0, root_gid: 5001, base: 0 });
        assert!(enforce(&mut spec, &SecuritySettings::default()).unwrap_err().to_string().contains("host's root"));
    }
}
