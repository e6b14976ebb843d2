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

/// Zoe's capability flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub can_see_status: bool,
    pub can_change_config: bool,
    pub can_operate_others: bool,
    pub can_delete_executions: bool,
    pub can_access_api: bool,
    pub can_customize_resources: bool,
    pub can_access_full_zapp_shop: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        can_see_status: true,
        can_change_config: true,
        can_operate_others: true,
        can_delete_executions: true,
        can_access_api: true,
        can_customize_resources: true,
        can_access_full_zapp_shop: true,
    };
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
        Role { id: ROLE_ADMIN, name: "admin".into(), capabilities: Capabilities::ALL },
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
    }
}
