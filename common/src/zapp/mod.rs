//! ZApp format 3: Zoe's application description.
//!
//! The types mirror Zoe's JSON exactly (field names, nullability, optional
//! keys) so that a Zoe ZApp loads unchanged and an accepted description
//! serialises back to an equivalent document. Resources are held in integer
//! units (millicores, bytes). Validation lives in [`validate`]: it walks the
//! raw JSON and reports every problem at once, each with a JSON pointer.

pub mod command;
mod expand;
pub mod template;
mod validate;

pub use expand::{Instance, expand};
pub use validate::{Issue, ParseError, Report, is_plain_name, parse, type_name, validate_value};

use crate::resources::Millicores;
use serde::{Deserialize, Serialize};

/// The only format version zoe reads.
pub const FORMAT_VERSION: u32 = 3;
/// Cores reserved for a service whose `cores.min` is `null` (Zoe's default).
pub const DEFAULT_CORES_MIN: Millicores = Millicores(100);
/// Largest `total_count` of one service group: an execution's instances all
/// live in the replicated state, so an unbounded count is a denial of service.
pub const MAX_TOTAL_COUNT: u32 = 10_000;
/// Largest memory reservation of one ZApp (Σ min × total_count): 1 EiB.
pub const MAX_TOTAL_MEMORY: u64 = 1 << 60;
/// Where the user's workspace is mounted; ZApp volumes may not shadow it.
pub const WORKSPACE_MOUNT: &str = "/mnt/workspace";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZApp {
    pub name: String,
    pub version: u32,
    pub will_end: bool,
    pub size: u64,
    pub services: Vec<ServiceGroup>,
    /// What becomes of a `will_end` execution that zoe has to take off its
    /// node (node lost, drain deadline). Absent: the cluster's default
    /// (end). A zoe addition: Zoe documents never carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_eviction: Option<OnEviction>,
}

/// A batch execution's fate when its node is lost or a drain's deadline
/// passes. Long-running executions (`will_end: false`) always move instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEviction {
    /// End: in error ("node lost"), or terminated ("node drain deadline").
    End,
    /// Go back to the queue and start over elsewhere.
    Requeue,
}

impl OnEviction {
    pub const ALL: [OnEviction; 2] = [OnEviction::End, OnEviction::Requeue];

    pub fn as_str(self) -> &'static str {
        match self {
            OnEviction::End => "end",
            OnEviction::Requeue => "requeue",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceGroup {
    pub name: String,
    pub image: String,
    pub monitor: bool,
    pub essential_count: u32,
    pub total_count: u32,
    pub startup_order: i64,
    pub resources: Resources,
    pub environment: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    /// `None` runs the image's own entrypoint and command.
    pub command: Option<String>,
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub memory: MemoryRange,
    pub cores: CoresRange,
    /// Size of `/dev/shm` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryRange {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoresRange {
    pub min: Option<Millicores>,
    pub max: Option<Millicores>,
}

/// `[NAME, VALUE]`; the value is a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar(pub String, pub String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Mounted at `/mnt/<name>` in the container.
    pub name: String,
    /// Absolute path on the host (Zoe's; needs `can_mount_host_paths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A host volume the node's admin offers (instead of `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_volume: Option<String>,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub port_number: u16,
    pub protocol: Protocol,
    pub url_template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<bool>,
}

impl ZApp {
    /// Whether an evicted execution of this ZApp starts over: its own
    /// `on_eviction` when given, else the cluster's default.
    pub fn requeue_on_eviction(&self, cluster_default: bool) -> bool {
        self.on_eviction.map_or(cluster_default, |p| p == OnEviction::Requeue)
    }

    /// Zoe's DYNSIZE starting size: Σ cores.min × Σ memory.min over all
    /// instances (cores in whole cores, as Zoe multiplied floats).
    pub fn dynsize(&self) -> f64 {
        let (cores, mem) = self.total_reservation();
        let (cores, mem) = (u64::from(cores.0), mem);
        (cores as f64 / 1000.0) * mem as f64
    }

    /// Minimum cores and memory of the essential part (what must fit to start).
    pub fn essential_reservation(&self) -> (Millicores, u64) {
        self.reservation(|s| s.essential_count)
    }

    /// Minimum cores and memory of every instance, elastic ones included.
    pub fn total_reservation(&self) -> (Millicores, u64) {
        self.reservation(|s| s.total_count)
    }

    /// What the ZApp holds against a quota, every instance counted: the
    /// cores it reserves, and the memory its containers may really use
    /// (each one's limit; none counts 0, which the API never lets through:
    /// it gives such a service the cluster's default limit).
    pub fn quota_footprint(&self) -> (Millicores, u64) {
        let mem = self.services.iter().fold(0u64, |a, s| {
            a.saturating_add(s.memory_limit().unwrap_or(0).saturating_mul(u64::from(s.total_count)))
        });
        (self.total_reservation().0, mem)
    }

    /// Gives every service without a memory limit (`min` and `max` both
    /// null) the limit `bytes`, so that the limit the container gets and
    /// the one its quota counts are the same number.
    pub fn set_default_memory_limit(&mut self, bytes: u64) {
        for s in &mut self.services {
            if s.resources.memory.min.is_none() && s.resources.memory.max.is_none() {
                s.resources.memory.max = Some(bytes);
            }
        }
    }

    fn reservation(&self, count: impl Fn(&ServiceGroup) -> u32) -> (Millicores, u64) {
        let cores = self.services.iter().map(|s| Millicores(s.cores_min().0.saturating_mul(count(s)))).sum();
        let mem = self
            .services
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.memory_min().saturating_mul(u64::from(count(s)))));
        (cores, mem)
    }
}

impl ServiceGroup {
    /// The TCP ports the service proxy serves (all but `proxy: false`).
    pub fn proxied_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().filter(|p| p.protocol == Protocol::Tcp && p.proxy != Some(false)).map(|p| p.port_number)
    }

    /// The port `{proxy_path}` in an environment value stands for.
    pub fn proxy_port(&self) -> Option<u16> {
        self.proxied_ports().next()
    }

    /// Cores the scheduler reserves for one instance.
    pub fn cores_min(&self) -> Millicores {
        self.resources.cores.min.unwrap_or(DEFAULT_CORES_MIN)
    }

    /// Memory the scheduler reserves for one instance (`null` reserves nothing).
    pub fn memory_min(&self) -> u64 {
        self.resources.memory.min.unwrap_or(0)
    }

    /// Hard memory limit of the container: `max` when given, else `min`
    /// (Zoe always used `min` and ignored `max`). `None` = unlimited.
    pub fn memory_limit(&self) -> Option<u64> {
        self.resources.memory.max.or(self.resources.memory.min)
    }

    pub fn labels(&self) -> &[String] {
        self.labels.as_deref().unwrap_or(&[])
    }

    pub fn elastic_count(&self) -> u32 {
        self.total_count - self.essential_count
    }
}
