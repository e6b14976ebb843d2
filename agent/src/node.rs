//! Node resources through sysinfo: what the machine has, what is in use,
//! and what the agent may hand out (total minus a configured reserve for the
//! OS, the agent itself and other daemons).

use crate::error::{Error, Result};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use zoe_common::resources::Millicores;

/// Resources kept back from the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Reserve {
    pub cpu: Millicores,
    pub memory_bytes: u64,
}

/// Capacity to advertise instead of the machine's (total minus reserve):
/// lets tests give each agent a fixed size whatever the host has, and lets
/// several agents share one host without each claiming all of it. Only
/// what the scheduler is told changes; the parent cgroup keeps the
/// machine's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Advertise {
    pub cpu: Option<Millicores>,
    pub memory_bytes: Option<u64>,
}

/// A snapshot of the node's resources.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeStats {
    pub hostname: String,
    /// Logical CPUs.
    pub cores: u32,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Whole-node CPU use since the previous sample, in percent of all cores
    /// (0 on the first sample: it needs two).
    pub cpu_usage_percent: f32,
    /// What the scheduler may allocate here: total minus the reserve, or
    /// the advertised override.
    pub capacity_cpu: Millicores,
    pub capacity_memory_bytes: u64,
}

/// Samples node resources. Keep one around: CPU usage is a difference
/// between two samples.
pub struct NodeMonitor {
    sys: System,
    reserve: Reserve,
    advertise: Advertise,
}

impl NodeMonitor {
    pub fn new(reserve: Reserve, advertise: Advertise) -> Result<NodeMonitor> {
        let kind = RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing().with_usage());
        let sys = System::new_with_specifics(kind).map_err(|e| Error::Host(e.to_string()))?;
        Ok(NodeMonitor { sys, reserve, advertise })
    }

    /// What the node tells the scheduler it may hand out: the advertised
    /// override where set, else [`NodeMonitor::machine_capacity`].
    pub fn capacity(&self) -> (Millicores, u64) {
        let (cpu, mem) = self.machine_capacity();
        (self.advertise.cpu.unwrap_or(cpu), self.advertise.memory_bytes.unwrap_or(mem))
    }

    /// The host's CPUs.
    pub fn host_cpus(&self) -> Millicores {
        Millicores::from_whole_cores(self.sys.cpus().len() as u32)
    }

    /// What the machine may hand out (total minus the reserve), without
    /// sampling usage.
    pub fn machine_capacity(&self) -> (Millicores, u64) {
        (
            self.host_cpus().saturating_sub(self.reserve.cpu),
            self.sys.total_memory().saturating_sub(self.reserve.memory_bytes),
        )
    }

    pub fn sample(&mut self) -> NodeStats {
        self.sys.refresh_memory();
        self.sys.refresh_cpu_usage();
        let load = System::load_average().map(|l| [l.one, l.five, l.fifteen]).unwrap_or([0.0; 3]);
        let (capacity_cpu, capacity_memory_bytes) = self.capacity();
        NodeStats {
            hostname: System::host_name().unwrap_or_default(),
            cores: self.sys.cpus().len() as u32,
            memory_total_bytes: self.sys.total_memory(),
            memory_available_bytes: self.sys.available_memory(),
            load,
            cpu_usage_percent: self.sys.global_cpu_usage(),
            capacity_cpu,
            capacity_memory_bytes,
        }
    }
}
