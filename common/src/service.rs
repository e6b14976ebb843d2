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
}

/// [`ServiceSpec::network`] values.
pub const NETWORK_HOST: &str = "host";
pub const NETWORK_BRIDGE: &str = "bridge";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Path on the host.
    pub source: String,
    /// Path in the container.
    pub target: String,
    pub read_only: bool,
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
