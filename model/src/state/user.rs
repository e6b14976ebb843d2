//! Users, roles and quotas, with Zoe's fields. The behaviour around them
//! (authentication, enforcement) lives in the API; here they are records.

use serde::{Deserialize, Serialize};
use zoe_common::resources::Millicores;

pub type UserId = u64;
pub type RoleId = u64;
pub type QuotaId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    /// Owner uid of the user's workspace files (exported as ZOE_UID).
    pub fs_uid: u32,
    pub role_id: RoleId,
    pub quota_id: QuotaId,
    pub enabled: bool,
    /// `internal` (password hash here), `textfile`, later `ldap`.
    pub auth_source: String,
    /// argon2 PHC string, for the internal source.
    pub password_hash: Option<String>,
    /// Stored and editable, as in Zoe.
    pub priority: i32,
}

/// Zoe's capability flags, and zoe's two that guard the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub can_see_status: bool,
    pub can_change_config: bool,
    pub can_operate_others: bool,
    pub can_delete_executions: bool,
    pub can_access_api: bool,
    pub can_customize_resources: bool,
    pub can_access_full_zapp_shop: bool,
    /// ZApp volumes name raw host paths (a user with it can read any file
    /// the agent can: off for every built-in role but admin).
    #[serde(default)]
    pub can_mount_host_paths: bool,
    /// A ZApp may ask for `"network": "host"` (the host's sockets and
    /// loopback services).
    #[serde(default)]
    pub can_use_host_network: bool,
    /// Containers run with the host's ids, their root being the host's
    /// root, where the node allows it (`[security] host_root`); without it
    /// every container has a user namespace. Off for every built-in role,
    /// admin too: a job that needs it is rare and should be named.
    #[serde(default)]
    pub can_run_as_host_root: bool,
}

/// One capability flag: its field name, a short name for tables and the
/// phrase after "may" for pages.
pub struct Flag {
    pub name: &'static str,
    pub short: &'static str,
    pub label: &'static str,
}

impl Capabilities {
    /// The admin role's: everything but host root.
    pub const ADMIN: Capabilities = Capabilities {
        can_see_status: true,
        can_change_config: true,
        can_operate_others: true,
        can_delete_executions: true,
        can_access_api: true,
        can_customize_resources: true,
        can_access_full_zapp_shop: true,
        can_mount_host_paths: true,
        can_use_host_network: true,
        can_run_as_host_root: false,
    };

    /// Every flag, in the API's order: the one list the API, the web UI and
    /// the CLI read.
    pub const FLAGS: [Flag; 10] = [
        Flag { name: "can_see_status", short: "status", label: "see the cluster status" },
        Flag { name: "can_change_config", short: "config", label: "change the configuration" },
        Flag { name: "can_operate_others", short: "others", label: "operate others' executions" },
        Flag { name: "can_delete_executions", short: "delete", label: "delete executions" },
        Flag { name: "can_access_api", short: "api", label: "use the API" },
        Flag { name: "can_customize_resources", short: "resources", label: "customize resources" },
        Flag { name: "can_access_full_zapp_shop", short: "shop", label: "see the full ZApp shop" },
        Flag { name: "can_mount_host_paths", short: "host-paths", label: "mount host paths" },
        Flag { name: "can_use_host_network", short: "host-network", label: "use the host's network" },
        Flag { name: "can_run_as_host_root", short: "host-root", label: "run as the host's root" },
    ];

    pub fn get_mut(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "can_see_status" => &mut self.can_see_status,
            "can_change_config" => &mut self.can_change_config,
            "can_operate_others" => &mut self.can_operate_others,
            "can_delete_executions" => &mut self.can_delete_executions,
            "can_access_api" => &mut self.can_access_api,
            "can_customize_resources" => &mut self.can_customize_resources,
            "can_access_full_zapp_shop" => &mut self.can_access_full_zapp_shop,
            "can_mount_host_paths" => &mut self.can_mount_host_paths,
            "can_use_host_network" => &mut self.can_use_host_network,
            "can_run_as_host_root" => &mut self.can_run_as_host_root,
            _ => return None,
        })
    }

    pub fn get(&self, name: &str) -> Option<bool> {
        let mut c = *self;
        c.get_mut(name).map(|b| *b)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub id: RoleId,
    pub name: String,
    #[serde(flatten)]
    pub capabilities: Capabilities,
}

/// Limits per user; 0 means unlimited, as in Zoe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub id: QuotaId,
    pub name: String,
    pub concurrent_executions: u32,
    /// Bytes of reserved memory over all active executions.
    pub memory: u64,
    pub cores: Millicores,
    /// Seconds an execution may run, counted from its start.
    pub runtime_limit: u64,
    /// Ceilings on one service instance (its `min` and `max`) for users
    /// without `can_customize_resources`; 0 = none. Checked by the API at
    /// submission.
    #[serde(default)]
    pub service_cores: Millicores,
    #[serde(default)]
    pub service_memory: u64,
}

/// Built-in records every cluster starts with; fixed ids so that all
/// replicas agree without a command.
pub const ROLE_ADMIN: RoleId = 1;
pub const ROLE_SUPERUSER: RoleId = 2;
pub const ROLE_USER: RoleId = 3;
pub const QUOTA_DEFAULT: QuotaId = 4;
/// First id the allocator hands out.
pub const FIRST_FREE_ID: u64 = 100;

pub fn builtin_roles() -> Vec<Role> {
    vec![
        Role { id: ROLE_ADMIN, name: "admin".into(), capabilities: Capabilities::ADMIN },
        Role {
            id: ROLE_SUPERUSER,
            name: "superuser".into(),
            capabilities: Capabilities {
                can_see_status: true,
                can_access_api: true,
                can_customize_resources: true,
                can_access_full_zapp_shop: true,
                ..Capabilities::default()
            },
        },
        Role {
            id: ROLE_USER,
            name: "user".into(),
            capabilities: Capabilities { can_access_api: true, ..Capabilities::default() },
        },
    ]
}

/// Zoe's `default` quota: 5 executions, 32 GiB, 20 cores, 24 h.
pub fn builtin_quota() -> Quota {
    Quota {
        id: QUOTA_DEFAULT,
        name: "default".into(),
        concurrent_executions: 5,
        memory: 32 << 30,
        cores: Millicores::from_whole_cores(20),
        runtime_limit: 24 * 3600,
        service_cores: Millicores(0),
        service_memory: 0,
    }
}
