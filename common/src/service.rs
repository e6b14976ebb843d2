//! What the leader asks a node to run: one service instance as a container,
//! fully resolved (templates rendered, command split, image canonical), so
//! an agent needs nothing but this to start it.

use crate::resources::Millicores;
use crate::zapp::Protocol;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub service_id: u64,
    pub execution_id: u64,
    /// containerd container id; one per placement attempt, so a request can
    /// be repeated (after a leader change) without starting a second copy.
    pub container_id: String,
    /// Instance name, e.g. `worker1`.
    pub instance: String,
    /// Canonical image reference.
    pub image: String,
    /// Arguments replacing the image's command; `None` runs the image's own.
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub labels: BTreeMap<String, String>,
    /// Cores the container may use now (CFS quota).
    pub cores: Millicores,
    /// Cores reserved for it (CPU shares are derived from these).
    pub cores_min: Millicores,
    /// Hard memory limit; `None` = unlimited.
    pub memory_limit: Option<u64>,
    /// Size of `/dev/shm`.
    pub shm: Option<u64>,
    pub ports: Vec<PortSpec>,
    /// [`NETWORK_HOST`] (or `None`) for the host's network; [`NETWORK_BRIDGE`]
    /// for the cluster network (own namespace and IP on the node's bridge).
    /// The leader resolves the cluster default, so an agent never guesses.
    pub network: Option<String>,
    /// Whose container it is, for the node's own checks.
    pub identity: Identity,
}

impl ServiceSpec {
    /// Instance `instance` of execution `execution_id` running `command` in
    /// `image`, and nothing more: no environment, working directory,
    /// mounts, labels, ports, memory limit, shm or network of its own; a
    /// tenth of a core; uid and gid 1000. What tests and benchmarks start
    /// from, setting what they need.
    pub fn plain(
        service_id: u64,
        execution_id: u64,
        container_id: impl Into<String>,
        instance: &str,
        image: &str,
        command: &[&str],
    ) -> ServiceSpec {
        ServiceSpec {
            service_id,
            execution_id,
            container_id: container_id.into(),
            instance: instance.into(),
            image: image.into(),
            command: Some(command.iter().map(|a| a.to_string()).collect()),
            env: vec![],
            working_dir: None,
            hostname: instance.into(),
            mounts: vec![],
            labels: BTreeMap::new(),
            cores: Millicores(100),
            cores_min: Millicores(100),
            memory_limit: None,
            shm: None,
            ports: vec![],
            network: None,
            identity: Identity { fs_uid: 1000, fs_gid: 1000, ..Identity::default() },
        }
    }
}

/// The owner of a container as a node judges it: its `[security]` section
/// has the last word on what the owner's role says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user: String,
    pub role: String,
    /// The owner's host uid and the cluster's group: the container's root
    /// is them on the host (in its own user namespace).
    pub fs_uid: u32,
    pub fs_gid: u32,
    /// The role has `can_run_as_host_root`: no user namespace.
    pub host_root: bool,
}

/// [`ServiceSpec::network`] values.
pub const NETWORK_HOST: &str = "host";
pub const NETWORK_BRIDGE: &str = "bridge";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Path on the host (empty for a host volume: the node knows its path).
    pub source: String,
    /// Path in the container.
    pub target: String,
    pub read_only: bool,
    /// The node's host volume of this name, instead of `source`.
    pub host_volume: Option<String>,
}

/// A directory an agent's admin offers to containers by name (Nomad's
/// `host_volume`); ZApps name it instead of a host path, and are placed
/// only on nodes that offer it to their owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostVolume {
    pub name: String,
    pub path: String,
    /// Mounted read-only whatever the ZApp asks.
    #[serde(default)]
    pub read_only: bool,
    /// Roles and users it is offered to; both empty: everyone.
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    /// The agent reports the size of the volume and of each entry at its
    /// top (a walk every few heartbeats), for workflows' `volume_size`
    /// triggers. Off by default: a large tree costs a walk.
    #[serde(default)]
    pub report_size: bool,
}

impl HostVolume {
    pub fn allows(&self, user: &str, role: &str) -> bool {
        (self.roles.is_empty() && self.users.is_empty())
            || self.roles.iter().any(|r| r == role)
            || self.users.iter().any(|u| u == user)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub port_number: u16,
    pub protocol: Protocol,
    /// Port on the node it is published at (allocated by the scheduler);
    /// 0 = not published. With host networking it is the port itself.
    #[serde(default)]
    pub host_port: u16,
}

/// An image a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Canonical references naming it.
    pub names: Vec<String>,
    /// Manifest digest.
    pub digest: String,
    /// Bytes on disk.
    pub size: u64,
}

/// Labels zoe puts on every container it creates, so that an agent can
/// rebuild its view after a restart and tell zoe's containers from others.
pub mod labels {
    pub const EXECUTION_ID: &str = "zoe.execution_id";
    pub const SERVICE_ID: &str = "zoe.service_id";
    pub const INSTANCE: &str = "zoe.instance";
    pub const OWNER: &str = "zoe.owner";
    pub const DEPLOYMENT: &str = "zoe.deployment";
}
