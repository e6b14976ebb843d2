//! Users, roles, quotas, tokens and logins.

use crate::schema::{Schema, Schemas};
use serde_json::{Value, json};
use zoe_model::state::{Capabilities, Quota, Role};

crate::api_type! {
    /// `POST /acl/bootstrap`: the one-time token the first coordinator printed.
    pub struct Bootstrap {
        pub token: Option<String>,
    }
}

crate::api_type! {
    /// `POST /login` (or HTTP basic credentials instead of a body).
    pub struct Login {
        pub username: Option<String>,
        pub password: Option<String>,
    }
}

/// `CreateUser` and `UpdateUser` from one list of the user's settable
/// fields (a user is created with a name and any of them).
macro_rules! user_types {
    ($($f:ident: $t:ty),* $(,)?) => {
        crate::api_type! {
            /// `POST /users`. Left out: role `user`, the default quota, the
            /// next free `fs_uid` from 1000, enabled, priority 0, auth source
            /// `internal`.
            pub struct CreateUser {
                pub username: String,
                $(pub $f: Option<$t>),*
            }
        }

        crate::api_type! {
            /// `PATCH /users/{id}`: what is given changes.
            #[derive(Default)]
            pub struct UpdateUser {
                $(pub $f: Option<$t>),*
            }
        }
    };
}

user_types! {
    email: String,
    password: String,
    role_id: u64,
    quota_id: u64,
    auth_source: String,
    fs_uid: u64,
    enabled: bool,
    priority: i64,
}

/// `QuotaView` and `QuotaFields` from one list of a quota's limits (0 is
/// unlimited, as in Zoe): a quota answers all of them, a body gives any.
macro_rules! quota_types {
    ($($(#[$fm:meta])* $f:ident: $t:ty),* $(,)?) => {
        crate::api_type! {
            pub struct QuotaView {
                pub id: u64,
                pub name: String,
                $($(#[$fm])* pub $f: $t),*
            }
        }

        crate::api_type! {
            /// `POST /quotas` (every limit required: a forgotten one must not
            /// mean unlimited) and `PATCH /quotas/{id}` (what is given changes).
            #[derive(Default)]
            pub struct QuotaFields {
                pub name: Option<String>,
                $($(#[$fm])* pub $f: Option<$t>),*
            }
        }
    };
}

quota_types! {
    concurrent_executions: u64,
    /// Bytes of reserved memory over all active executions.
    memory: u64,
    cores: f64,
    /// Seconds an execution may run.
    runtime_limit: u64,
    /// Per-instance ceilings for users without can_customize_resources (0: none).
    service_cores: f64,
    service_memory: u64,
}

crate::api_type! {
    /// `POST /tokens`: for the caller, or for `user_id` (can_change_config).
    #[derive(Default)]
    pub struct CreateToken {
        pub name: Option<String>,
        pub ttl_s: Option<u64>,
        pub user_id: Option<u64>,
    }
}

crate::api_type! {
    /// `POST /cluster/members`: a coordinator joins as a learner, then a voter.
    pub struct AddMember {
        pub id: u64,
        pub addr: String,
        pub name: String,
    }
}

crate::api_type! {
    /// A record created: its id.
    pub struct Created {
        pub id: u64,
    }
}

crate::api_type! {
    pub struct UserView {
        pub id: u64,
        pub username: String,
        pub email: Option<String>,
        pub fs_uid: u32,
        pub role_id: u64,
        pub role: Option<String>,
        pub quota_id: u64,
        pub quota: Option<String>,
        pub enabled: bool,
        pub auth_source: String,
        pub priority: i32,
        pub has_password: bool,
    }
}

impl QuotaView {
    pub fn of(q: &Quota) -> QuotaView {
        QuotaView {
            id: q.id,
            name: q.name.clone(),
            concurrent_executions: q.concurrent_executions.into(),
            memory: q.memory,
            cores: q.cores.as_cores(),
            runtime_limit: q.runtime_limit,
            service_cores: q.service_cores.as_cores(),
            service_memory: q.service_memory,
        }
    }
}

crate::api_type! {
    /// A token as listed (never its secret).
    pub struct TokenView {
        pub id: String,
        pub user_id: u64,
        pub username: Option<String>,
        pub name: String,
        /// `api` (long-lived) or `session` (a login's).
        pub kind: String,
        pub created: u64,
        pub expires: Option<u64>,
    }
}

crate::api_type! {
    /// A token just made: the only time its secret is shown.
    pub struct TokenCreated {
        pub id: String,
        pub token: String,
        pub user_id: u64,
        pub name: String,
        pub kind: String,
        pub expires: Option<u64>,
    }
}

/// A role: its id, name and every capability flag of
/// [`Capabilities::FLAGS`], where the flags are spelled once.
impl Schema for Role {
    fn schema(s: &mut Schemas) -> Value {
        s.named("Role", |s| {
            let mut fields = vec![("id", u64::schema(s), false), ("name", String::schema(s), false)];
            fields.extend(
                Capabilities::FLAGS
                    .iter()
                    .map(|f| (f.name, json!({ "type": "boolean", "description": format!("may {}", f.label) }), false)),
            );
            crate::schema::object(fields)
        })
    }
}

impl crate::schema::Doc for Role {
    fn doc(s: &mut Schemas) -> Option<Value> {
        Some(Role::schema(s))
    }
}

/// The body of `POST /roles` and `PATCH /roles/{id}`: `name` and any of
/// the flags (read by hand: a PATCH changes only the flags it names).
pub struct RoleFields;

impl crate::schema::Doc for RoleFields {
    fn doc(_: &mut Schemas) -> Option<Value> {
        let mut fields = vec![("name", json!({ "type": "string" }), true)];
        fields.extend(Capabilities::FLAGS.iter().map(|f| (f.name, json!({ "type": "boolean" }), true)));
        Some(crate::schema::object(fields))
    }
    fn fields() -> Option<Vec<&'static str>> {
        Some(std::iter::once("name").chain(Capabilities::FLAGS.iter().map(|f| f.name)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_schema_lists_what_a_role_serializes_to() {
        let mut s = Schemas::default();
        Role::schema(&mut s);
        let m = s.into_map();
        let props: Vec<&String> = m["Role"]["properties"].as_object().unwrap().keys().collect();
        let role = Role { id: 1, name: "r".into(), capabilities: Capabilities::default() };
        let v = serde_json::to_value(role).unwrap();
        let mut got: Vec<&String> = v.as_object().unwrap().keys().collect();
        let mut want = props.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
}

crate::api_type! {
    /// The token a call was made with.
    pub struct TokenRef {
        pub id: String,
        /// `api` (long-lived) or `session` (a login's).
        pub kind: String,
        pub expires: Option<u64>,
    }
}

crate::api_type! {
    /// `GET /whoami`.
    pub struct WhoAmI {
        pub user_id: u64,
        pub username: String,
        pub role: Role,
        pub token: TokenRef,
    }
}
