//! `zoe user`, `zoe role`, `zoe quota` and `zoe token`: the ACL's records.

use super::http::{Client, Conn, connect};
use super::output::{self, bytes, cell, items, table, time};
use super::{done, parse_duration_s, q, query, read_secret};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

#[derive(Subcommand)]
pub enum UserCmd {
    Ls {
        #[arg(long)]
        username: Option<String>,
    },
    Get {
        id: u64,
    },
    /// Create a user; the password is read from $ZOE_NEW_PASSWORD when set.
    Create {
        username: String,
        #[command(flatten)]
        fields: UserFields,
    },
    /// Update a user; a new password is read from $ZOE_NEW_PASSWORD with --password.
    Update {
        id: u64,
        #[command(flatten)]
        fields: UserFields,
        /// Set the password from $ZOE_NEW_PASSWORD.
        #[arg(long)]
        password: bool,
    },
    Rm {
        id: u64,
    },
}

/// A user's fields, for `create` and `update` alike.
#[derive(Args)]
pub struct UserFields {
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    role_id: Option<u64>,
    #[arg(long)]
    quota_id: Option<u64>,
    /// internal (password here) or textfile.
    #[arg(long)]
    auth_source: Option<String>,
    #[arg(long)]
    fs_uid: Option<u64>,
    #[arg(long)]
    enabled: Option<bool>,
    #[arg(long)]
    priority: Option<i64>,
}

impl UserFields {
    fn body(self, password: Option<String>) -> zoe_api::acl::UpdateUser {
        let UserFields { email, role_id, quota_id, auth_source, fs_uid, enabled, priority } = self;
        zoe_api::acl::UpdateUser { email, password, role_id, quota_id, auth_source, fs_uid, enabled, priority }
    }
}

/// A role's capability flags as options (`--can-see-status true`), one per
/// flag of `Capabilities::FLAGS`, where they are spelled once.
#[derive(Default)]
pub struct Flags(BTreeMap<&'static str, bool>);

impl clap::FromArgMatches for Flags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Flags, clap::Error> {
        let mut f = Flags::default();
        f.update_from_arg_matches(m)?;
        Ok(f)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for flag in zoe_coordinator::state::Capabilities::FLAGS {
            if let Some(v) = m.get_one::<bool>(flag.name) {
                self.0.insert(flag.name, *v);
            }
        }
        Ok(())
    }
}

impl clap::Args for Flags {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        for flag in zoe_coordinator::state::Capabilities::FLAGS {
            // clap (without its `string` feature) wants a 'static name: a
            // few bytes per flag, once per process.
            let long: &'static str = Box::leak(flag.name.replace('_', "-").into_boxed_str());
            cmd = cmd.arg(
                clap::Arg::new(flag.name)
                    .long(long)
                    .value_name("BOOL")
                    .value_parser(clap::value_parser!(bool))
                    .help_heading("Capabilities")
                    .help(format!("May {}", flag.label)),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl Flags {
    fn into_json(self, m: &mut Map<String, Value>) {
        for (k, v) in self.0 {
            m.insert(k.into(), json!(v));
        }
    }
}

#[derive(Subcommand)]
pub enum RoleCmd {
    Ls {
        #[arg(long)]
        name: Option<String>,
    },
    Get {
        id: u64,
    },
    Create {
        name: String,
        #[command(flatten)]
        flags: Flags,
    },
    Update {
        id: u64,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        flags: Flags,
    },
    Rm {
        id: u64,
    },
}

#[derive(Subcommand)]
pub enum QuotaCmd {
    Ls {
        #[arg(long)]
        name: Option<String>,
    },
    Get {
        id: u64,
    },
    /// Create a quota; 0 means unlimited.
    Create {
        name: String,
        #[arg(long)]
        concurrent_executions: u64,
        /// Bytes.
        #[arg(long)]
        memory: u64,
        #[arg(long)]
        cores: f64,
        /// Seconds from an execution's start.
        #[arg(long)]
        runtime_limit: u64,
        /// Most cores one service instance may ask (min and max) without
        /// can_customize_resources; 0: no ceiling.
        #[arg(long, default_value_t = 0.0)]
        service_cores: f64,
        /// Most memory (bytes) one service instance may ask without
        /// can_customize_resources; 0: no ceiling.
        #[arg(long, default_value_t = 0)]
        service_memory: u64,
    },
    Update {
        id: u64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        concurrent_executions: Option<u64>,
        #[arg(long)]
        memory: Option<u64>,
        #[arg(long)]
        cores: Option<f64>,
        #[arg(long)]
        runtime_limit: Option<u64>,
        #[arg(long)]
        service_cores: Option<f64>,
        #[arg(long)]
        service_memory: Option<u64>,
    },
    Rm {
        id: u64,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token; its secret is printed once.
    Create {
        #[arg(long, default_value = "api")]
        name: String,
        /// Lifetime, e.g. 30d, 12h (default: no expiry).
        #[arg(long)]
        ttl: Option<String>,
        /// For another user (admins).
        #[arg(long)]
        user_id: Option<u64>,
    },
    Ls {
        #[arg(long)]
        user_id: Option<u64>,
    },
    Revoke {
        id: String,
    },
}

fn insert_opt(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.into(), v);
    }
}

/// What `zoe user`, `zoe role` and `zoe quota` share: one kind of admin
/// record under `path`, shown as a table of `head` (or JSON).
struct Records<'a> {
    c: Client,
    conn: &'a Conn,
    path: &'static str,
    noun: &'static str,
    head: &'a [&'a str],
    row: fn(&Value) -> Vec<String>,
}

impl Records<'_> {
    fn show(&self, v: &Value) {
        if self.conn.json {
            return output::json(v);
        }
        let list = if v.is_array() { v.as_array().cloned().unwrap_or_default() } else { vec![v.clone()] };
        table(self.head, &list.iter().map(self.row).collect::<Vec<_>>());
    }

    async fn ls(&self, filter: (&str, Option<String>)) -> Result<()> {
        let v = self.c.get(&format!("{}{}", self.path, query(&[filter]))).await?;
        self.show(&v);
        Ok(())
    }

    async fn get(&self, id: u64) -> Result<()> {
        let v = self.c.get(&format!("{}/{id}", self.path)).await?;
        self.show(&v);
        Ok(())
    }

    async fn create(&self, body: Map<String, Value>, name: &str) -> Result<()> {
        let v = self.c.post(self.path, &Value::Object(body)).await?;
        done(self.conn, &v, || format!("{} {name} created with id {}", self.noun, cell(&v["id"])));
        Ok(())
    }

    /// A PATCH of what `body` gives; an empty change is refused here.
    async fn update(&self, id: u64, body: Map<String, Value>) -> Result<()> {
        if body.is_empty() {
            bail!("nothing to change: give at least one option (see --help)");
        }
        let v = self.c.patch(&format!("{}/{id}", self.path), &Value::Object(body)).await?;
        done(self.conn, &v, || format!("{} {id} updated", self.noun));
        Ok(())
    }

    async fn rm(&self, id: u64) -> Result<()> {
        let v = self.c.delete(&format!("{}/{id}", self.path)).await?;
        done(self.conn, &v, || format!("{} {id} deleted", self.noun));
        Ok(())
    }
}

/// An API request body as JSON, leaving out what it does not give.
fn given<T: serde::Serialize>(body: &T) -> Map<String, Value> {
    match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

pub(super) async fn user(conn: &Conn, cmd: UserCmd) -> Result<()> {
    let r = Records {
        c: connect(conn)?,
        conn,
        path: "/api/v1/users",
        noun: "user",
        head: &["ID", "USERNAME", "EMAIL", "ROLE", "QUOTA", "AUTH", "ENABLED", "FS_UID"],
        row: |u| {
            ["id", "username", "email", "role", "quota", "auth_source", "enabled", "fs_uid"]
                .iter()
                .map(|k| cell(&u[*k]))
                .collect()
        },
    };
    match cmd {
        UserCmd::Ls { username } => r.ls(("username", username)).await,
        UserCmd::Get { id } => r.get(id).await,
        UserCmd::Create { username, fields } => {
            let mut body = given(&fields.body(std::env::var("ZOE_NEW_PASSWORD").ok()));
            body.insert("username".into(), json!(username));
            r.create(body, &username).await
        }
        UserCmd::Update { id, fields, password } => {
            let password = if password { Some(read_secret("ZOE_NEW_PASSWORD", "new password: ")?) } else { None };
            r.update(id, given(&fields.body(password))).await
        }
        UserCmd::Rm { id } => r.rm(id).await,
    }
}

pub(super) async fn role(conn: &Conn, cmd: RoleCmd) -> Result<()> {
    let r = Records {
        c: connect(conn)?,
        conn,
        path: "/api/v1/roles",
        noun: "role",
        head: &["ID", "NAME", "CAPABILITIES"],
        row: |r| {
            let flags: Vec<&str> = zoe_coordinator::state::Capabilities::FLAGS
                .iter()
                .filter(|f| r[f.name] == true)
                .map(|f| f.short)
                .collect();
            vec![cell(&r["id"]), cell(&r["name"]), flags.join(",")]
        },
    };
    match cmd {
        RoleCmd::Ls { name } => r.ls(("name", name)).await,
        RoleCmd::Get { id } => r.get(id).await,
        RoleCmd::Create { name, flags } => {
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            flags.into_json(&mut m);
            r.create(m, &name).await
        }
        RoleCmd::Update { id, name, flags } => {
            let mut m = Map::new();
            insert_opt(&mut m, "name", name.map(Value::from));
            flags.into_json(&mut m);
            r.update(id, m).await
        }
        RoleCmd::Rm { id } => r.rm(id).await,
    }
}

pub(super) async fn quota(conn: &Conn, cmd: QuotaCmd) -> Result<()> {
    let r = Records {
        c: connect(conn)?,
        conn,
        path: "/api/v1/quotas",
        noun: "quota",
        head: &["ID", "NAME", "EXECUTIONS", "CORES", "MEMORY", "RUNTIME"],
        row: |q| {
            vec![
                cell(&q["id"]),
                cell(&q["name"]),
                cell(&q["concurrent_executions"]),
                cell(&q["cores"]),
                bytes(&q["memory"]),
                format!("{} s", cell(&q["runtime_limit"])),
            ]
        },
    };
    match cmd {
        QuotaCmd::Ls { name } => r.ls(("name", name)).await,
        QuotaCmd::Get { id } => r.get(id).await,
        QuotaCmd::Create {
            name,
            concurrent_executions,
            memory,
            cores,
            runtime_limit,
            service_cores,
            service_memory,
        } => {
            let body = zoe_api::acl::QuotaFields {
                name: Some(name.clone()),
                concurrent_executions: Some(concurrent_executions),
                memory: Some(memory),
                cores: Some(cores),
                runtime_limit: Some(runtime_limit),
                service_cores: Some(service_cores),
                service_memory: Some(service_memory),
            };
            r.create(given(&body), &name).await
        }
        QuotaCmd::Update {
            id,
            name,
            concurrent_executions,
            memory,
            cores,
            runtime_limit,
            service_cores,
            service_memory,
        } => {
            let body = zoe_api::acl::QuotaFields {
                name,
                concurrent_executions,
                memory,
                cores,
                runtime_limit,
                service_cores,
                service_memory,
            };
            r.update(id, given(&body)).await
        }
        QuotaCmd::Rm { id } => r.rm(id).await,
    }
}

pub(super) async fn token(conn: &Conn, cmd: TokenCmd) -> Result<()> {
    let c = connect(conn)?;
    match cmd {
        TokenCmd::Create { name, ttl, user_id } => {
            let mut body = json!({"name": name});
            if let Some(t) = ttl {
                body["ttl_s"] = json!(parse_duration_s(&t)?);
            }
            if let Some(u) = user_id {
                body["user_id"] = json!(u);
            }
            let v = c.post("/api/v1/tokens", &body).await?;
            done(conn, &v, || format!("token {} (secret shown once):\n{}", cell(&v["id"]), cell(&v["token"])));
        }
        TokenCmd::Ls { user_id } => {
            let v = c.get(&format!("/api/v1/tokens{}", query(&[("user_id", user_id.map(|u| u.to_string()))]))).await?;
            if conn.json {
                output::json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .map(|t| {
                        vec![
                            cell(&t["id"]),
                            cell(&t["username"]),
                            cell(&t["name"]),
                            cell(&t["kind"]),
                            time(&t["created"]),
                            time(&t["expires"]),
                        ]
                    })
                    .collect();
                table(&["ID", "USER", "NAME", "KIND", "CREATED", "EXPIRES"], &rows);
            }
        }
        TokenCmd::Revoke { id } => {
            let v = c.delete(&format!("/api/v1/tokens/{}", q(&id))).await?;
            done(conn, &v, || format!("token {id} revoked"));
        }
    }
    Ok(())
}
