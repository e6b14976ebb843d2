//! Service instances: one container each (when running), one per
//! `<group><n>` of an execution's ZApp.

use super::{Millis, StateError};
use serde::{Deserialize, Serialize};
use std::fmt;
use zoe_common::resources::Millicores;
use zoe_common::zapp::Protocol;

pub type ServiceId = u64;

/// What the scheduler has decided for the instance (Zoe's service status).
///
/// Zoe also had `runnable`, written by its simulation before anything was
/// decided; zoe commits a placement and asks the agent in one step, so a
/// placed instance is directly `starting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Exists, not placed.
    Created,
    /// Placed on a node; the agent has been (or is being) asked to start it.
    Starting,
    /// The agent reported it started.
    Active,
    /// Being stopped.
    Terminating,
    /// Not running (stopped, exited, or never started).
    Inactive,
    /// Its start failed for good.
    Error,
}

impl ServiceStatus {
    pub const ALL: [ServiceStatus; 6] = [
        ServiceStatus::Created,
        ServiceStatus::Starting,
        ServiceStatus::Active,
        ServiceStatus::Terminating,
        ServiceStatus::Inactive,
        ServiceStatus::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Created => "created",
            ServiceStatus::Starting => "starting",
            ServiceStatus::Active => "active",
            ServiceStatus::Terminating => "terminating",
            ServiceStatus::Inactive => "inactive",
            ServiceStatus::Error => "error",
        }
    }

    pub fn can_become(self, to: ServiceStatus) -> bool {
        use ServiceStatus::*;
        matches!(
            (self, to),
            (Created, Starting)
                | (Created, Inactive)
                | (Starting, Active)
                | (Starting, Error)
                | (Starting, Inactive)
                | (Starting, Terminating)
                | (Active, Terminating)
                | (Active, Inactive)
                | (Terminating, Inactive)
                | (Inactive, Starting)
                | (Error, Starting)
                | (Error, Terminating)
                | (Error, Inactive)
        )
    }

    /// The instance may have a container on a node.
    pub fn may_hold_container(self) -> bool {
        matches!(self, ServiceStatus::Starting | ServiceStatus::Active | ServiceStatus::Terminating)
    }
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the node reports about the container (Zoe's `backend_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendStatus {
    Undefined,
    Created,
    Started,
    Dead,
    Destroyed,
    OomKilled,
}

impl BackendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendStatus::Undefined => "undefined",
            BackendStatus::Created => "created",
            BackendStatus::Started => "started",
            BackendStatus::Dead => "dead",
            BackendStatus::Destroyed => "destroyed",
            BackendStatus::OomKilled => "oom-killed",
        }
    }
}

/// A container port published on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub port_number: u16,
    pub protocol: Protocol,
    /// Address users reach it at (the node's address).
    pub host_ip: String,
    pub host_port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub execution_id: u64,
    /// Index of the group in the ZApp's `services`.
    pub group_index: usize,
    /// The group's name, e.g. `worker`.
    pub group: String,
    /// The instance name, e.g. `worker1`.
    pub name: String,
    pub essential: bool,
    pub startup_order: i64,
    pub status: ServiceStatus,
    pub backend_status: BackendStatus,
    pub node: Option<String>,
    /// containerd container id of the current attempt.
    pub container_id: Option<String>,
    pub ip_address: Option<String>,
    pub ports: Vec<PublishedPort>,
    /// Starts after the first one (elastic restarts, drain moves).
    pub restart_count: u32,
    /// Asked to move to another node (drain, lost node): its stop does not
    /// end the execution, and the scheduler places it again at once.
    #[serde(default)]
    pub moving: bool,
    /// Placements so far; names the container, so no attempt reuses the id
    /// of a container an earlier attempt may have left being torn down.
    pub attempt: u32,
    /// Cores the container may use now: `cores.min` plus its share of idle
    /// cores (dynamic core sharing).
    pub cores_allocated: Option<Millicores>,
    pub last_exit_code: Option<i32>,
    pub last_exit_reason: Option<String>,
    pub error_message: Option<String>,
    pub time_start: Option<Millis>,
    pub time_end: Option<Millis>,
}

impl Service {
    /// containerd id of the current attempt.
    pub fn container_name(&self) -> String {
        format!("zoe-{}-{}-{}", self.execution_id, self.name, self.attempt)
    }

    pub(super) fn set_status(&mut self, to: ServiceStatus) -> Result<(), StateError> {
        super::transition(&mut self.status, to, ServiceStatus::can_become, || {
            format!("service {} ({})", self.id, self.name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceStatus::{self, *};

    #[test]
    fn transition_table() {
        let table: [(ServiceStatus, &[ServiceStatus]); 6] = [
            (Created, &[Starting, Inactive]),
            (Starting, &[Active, Error, Inactive, Terminating]),
            (Active, &[Terminating, Inactive]),
            (Terminating, &[Inactive]),
            (Inactive, &[Starting]),
            (Error, &[Starting, Terminating, Inactive]),
        ];
        for (from, allowed) in table {
            for to in ServiceStatus::ALL {
                if to != from {
                    assert_eq!(from.can_become(to), allowed.contains(&to), "{from} -> {to}");
                }
            }
        }
    }
}
