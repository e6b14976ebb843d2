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
//! ```

use crate::error::{Error, Result};
use crate::spec::{NetworkMode, ServiceSpec};
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

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
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            host_paths: Vec::new(),
            host_network: true,
            pids_max: 4096,
            memory_default_bytes: 4 << 30,
            registries: Vec::new(),
        }
    }
}

impl SecuritySettings {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.pids_max < 16 {
            return Err("security.pids_max: at least 16".into());
        }
        if self.memory_default_bytes < 6 << 20 {
            return Err("security.memory_default_bytes: at least 6 MiB".into());
        }
        for p in &self.host_paths {
            if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(format!("security.host_paths: {} must be absolute, without `..`", p.display()));
            }
        }
        Ok(())
    }
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

/// Refuses what this node does not allow and sets the limits every
/// container gets: memory (the default when none is asked), pids (never
/// above `pids_max`) and /dev/shm (never above the memory limit: tmpfs
/// pages are charged to the container, but a bigger size would only end
/// in an OOM kill).
pub fn enforce(spec: &mut ServiceSpec, s: &SecuritySettings) -> Result<()> {
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
        if !bind_allowed(&m.source, &s.host_paths) {
            return Err(refused(
                &format!("mounts[{i}].source"),
                format!("{} is not under this node's [security] host_paths", m.source.display()),
            ));
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
    use crate::spec::BindMount;

    fn spec_with(source: &Path) -> ServiceSpec {
        ServiceSpec {
            id: "s".into(),
            mounts: vec![BindMount { source: source.into(), target: "/mnt/x".into(), read_only: false }],
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
        let mut spec = ServiceSpec { id: "s".into(), ..Default::default() };
        spec.resources.shm_bytes = Some(1 << 40);
        enforce(&mut spec, &s).unwrap();
        assert_eq!(spec.resources.memory_bytes, Some(64 << 20));
        assert_eq!(spec.resources.pids, Some(100));
        assert_eq!(spec.resources.shm_bytes, Some(64 << 20));

        let mut spec = ServiceSpec { id: "s".into(), ..Default::default() };
        spec.resources.memory_bytes = Some(1 << 30);
        spec.resources.pids = Some(1 << 20);
        enforce(&mut spec, &s).unwrap();
        assert_eq!((spec.resources.memory_bytes, spec.resources.pids), (Some(1 << 30), Some(100)));
    }

    #[test]
    fn images_come_from_the_nodes_registries_only() {
        let s = SecuritySettings { registries: vec!["127.0.0.1:5000".into()], ..Default::default() };
        let mut spec =
            ServiceSpec { id: "s".into(), image: "127.0.0.1:5000/zoe/busybox:1".into(), ..Default::default() };
        enforce(&mut spec, &s).unwrap();
        spec.image = "evil.example/miner:latest".into();
        assert!(enforce(&mut spec, &s).unwrap_err().to_string().contains("registries"));
    }

    #[test]
    fn host_network_can_be_refused_by_the_node() {
        let s = SecuritySettings { host_network: false, ..Default::default() };
        let mut spec = ServiceSpec { id: "s".into(), network: NetworkMode::Host, ..Default::default() };
        assert!(enforce(&mut spec, &s).unwrap_err().to_string().contains("host_network"));
        spec.network = NetworkMode::Bridge { ports: vec![] };
        enforce(&mut spec, &s).unwrap();
    }
}
