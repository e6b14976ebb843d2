//! cgroups: the agent's parent cgroup (created and limited with cgroups-rs)
//! and reading container cgroups back (limits, usage, OOM kills) straight
//! from the cgroup files, v1 and v2.
//!
//! runc creates each container's cgroup from the spec's `cgroupsPath` and
//! applies the limits itself; the agent only needs to read them back (to
//! verify a live update, to report usage, to tell an OOM kill).

use crate::error::{Error, Result};
use cgroups_rs::fs::cgroup_builder::CgroupBuilder;
use cgroups_rs::fs::hierarchies;
use std::path::PathBuf;
use zoe_common::resources::Millicores;

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

pub fn version() -> CgroupVersion {
    if hierarchies::is_cgroup2_unified_mode() { CgroupVersion::V2 } else { CgroupVersion::V1 }
}

/// Creates (or re-limits) the parent cgroup all containers live under.
/// Limits are what the node may hand out, so a runaway container set can
/// never starve the agent and the system services in the reserve.
pub fn ensure_parent(name: &str, cpu: Option<Millicores>, memory_bytes: Option<u64>) -> Result<()> {
    let mut b = CgroupBuilder::new(name);
    if let Some(c) = cpu {
        b = b.cpu().period(crate::spec::CPU_PERIOD_US).quota(c.cfs_quota(crate::spec::CPU_PERIOD_US)).done();
    }
    if let Some(m) = memory_bytes {
        b = b.memory().memory_hard_limit(m as i64).done();
    }
    b.build(hierarchies::auto())
        .map_err(|e| Error::Cgroup { path: name.to_string(), reason: format!("creating the parent cgroup: {e}") })?;
    Ok(())
}

/// A container's cgroup, located by its `cgroupsPath`.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    /// `cgroupsPath` relative to the hierarchy root, without leading `/`.
    rel: String,
    version: CgroupVersion,
}

/// Limits read back from the cgroup files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CgroupLimits {
    /// CFS quota in µs, `None` when unlimited.
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: u64,
    /// cpu.shares on v1; cpu.weight on v2.
    pub cpu_weight: u64,
    /// `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
}

/// Resource usage of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Usage {
    /// Cumulative CPU time in nanoseconds (rate = difference over time).
    pub cpu_ns: u64,
    /// Memory in use without reclaimable page cache (what `docker stats`
    /// shows), in bytes.
    pub memory_bytes: u64,
    /// Raw memory usage including page cache.
    pub memory_raw_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub pids: u64,
    /// Periods in which the CFS quota throttled the container.
    pub cpu_throttled_periods: u64,
}

fn read(path: PathBuf) -> Result<String> {
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(Error::io(format!("reading {}", path.display())))
}

fn kv(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// v1 reports "unlimited" as a huge page-rounded number.
fn v1_limit(v: u64) -> Option<u64> {
    (v < (1u64 << 62)).then_some(v)
}

impl ContainerCgroup {
    pub fn new(cgroups_path: &str) -> ContainerCgroup {
        ContainerCgroup { rel: cgroups_path.trim_start_matches('/').to_string(), version: version() }
    }

    fn file(&self, controller: &str, name: &str) -> PathBuf {
        match self.version {
            CgroupVersion::V1 => PathBuf::from(ROOT).join(controller).join(&self.rel).join(name),
            CgroupVersion::V2 => PathBuf::from(ROOT).join(&self.rel).join(name),
        }
    }

    pub fn exists(&self) -> bool {
        match self.version {
            CgroupVersion::V1 => PathBuf::from(ROOT).join("memory").join(&self.rel).exists(),
            CgroupVersion::V2 => PathBuf::from(ROOT).join(&self.rel).exists(),
        }
    }

    pub fn limits(&self) -> Result<CgroupLimits> {
        match self.version {
            CgroupVersion::V1 => {
                let quota: i64 = read(self.file("cpu", "cpu.cfs_quota_us"))?.parse().unwrap_or(-1);
                Ok(CgroupLimits {
                    cpu_quota_us: (quota > 0).then_some(quota),
                    cpu_period_us: read(self.file("cpu", "cpu.cfs_period_us"))?.parse().unwrap_or(0),
                    cpu_weight: read(self.file("cpu", "cpu.shares"))?.parse().unwrap_or(0),
                    memory_limit_bytes: v1_limit(
                        read(self.file("memory", "memory.limit_in_bytes"))?.parse().unwrap_or(u64::MAX),
                    ),
                })
            }
            CgroupVersion::V2 => {
                let max = read(self.file("", "cpu.max"))?;
                let (q, p) = max.split_once(' ').unwrap_or((&max, "100000"));
                let mem = read(self.file("", "memory.max"))?;
                Ok(CgroupLimits {
                    cpu_quota_us: q.parse().ok(),
                    cpu_period_us: p.parse().unwrap_or(0),
                    cpu_weight: read(self.file("", "cpu.weight"))?.parse().unwrap_or(0),
                    memory_limit_bytes: mem.parse().ok(),
                })
            }
        }
    }

    pub fn usage(&self) -> Result<Usage> {
        match self.version {
            CgroupVersion::V1 => {
                let stat = read(self.file("memory", "memory.stat"))?;
                let raw: u64 = read(self.file("memory", "memory.usage_in_bytes"))?.parse().unwrap_or(0);
                let inactive = kv(&stat, "total_inactive_file").unwrap_or(0);
                let cpu_stat = read(self.file("cpu", "cpu.stat")).unwrap_or_default();
                Ok(Usage {
                    cpu_ns: read(self.file("cpuacct", "cpuacct.usage"))?.parse().unwrap_or(0),
                    memory_bytes: raw.saturating_sub(inactive),
                    memory_raw_bytes: raw,
                    memory_limit_bytes: v1_limit(
                        read(self.file("memory", "memory.limit_in_bytes"))?.parse().unwrap_or(u64::MAX),
                    ),
                    pids: read(self.file("pids", "pids.current")).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
                    cpu_throttled_periods: kv(&cpu_stat, "nr_throttled").unwrap_or(0),
                })
            }
            CgroupVersion::V2 => {
                let cpu_stat = read(self.file("", "cpu.stat"))?;
                let stat = read(self.file("", "memory.stat"))?;
                let raw: u64 = read(self.file("", "memory.current"))?.parse().unwrap_or(0);
                Ok(Usage {
                    cpu_ns: kv(&cpu_stat, "usage_usec").unwrap_or(0) * 1000,
                    memory_bytes: raw.saturating_sub(kv(&stat, "inactive_file").unwrap_or(0)),
                    memory_raw_bytes: raw,
                    memory_limit_bytes: read(self.file("", "memory.max"))?.parse().ok(),
                    pids: read(self.file("", "pids.current")).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
                    cpu_throttled_periods: kv(&cpu_stat, "nr_throttled").unwrap_or(0),
                })
            }
        }
    }

    /// OOM kills in this cgroup so far (0 when the kernel does not say).
    pub fn oom_kills(&self) -> u64 {
        let text = match self.version {
            CgroupVersion::V1 => read(self.file("memory", "memory.oom_control")),
            CgroupVersion::V2 => read(self.file("", "memory.events")),
        };
        text.ok().and_then(|t| kv(&t, "oom_kill")).unwrap_or(0)
    }
}
