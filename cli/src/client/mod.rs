//! The `zoe` commands that talk to a cluster through its REST API: info,
//! login, acl, exec, node, stats, user, role, quota, token, operator, image,
//! workflow.

mod acl;
mod drain;
mod http;
mod image;
mod output;
mod workflow;

use acl::{QuotaCmd, RoleCmd, TokenCmd, UserCmd};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use http::{Client, Conn, FileConfig, connect};
use output::{bytes, cell, fields, items, table, time};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Show the cluster's version, API version, ZApp format, leader.
    Info(Plain),
    /// Log in with a username and password; prints (or saves) a session token.
    Login(LoginArgs),
    /// ACL bootstrap: exchange the one-time bootstrap token for the first admin token.
    Acl(Group<AclCmd>),
    /// Executions: start, list, inspect, terminate, delete, logs, endpoints.
    Exec(Group<ExecCmd>),
    /// Nodes: list, inspect, eligibility, drain.
    Node(Group<NodeCmd>),
    /// Zoe's scheduler statistics: queues and the platform per node.
    Stats(Plain),
    /// Users (admins).
    User(Group<UserCmd>),
    /// Roles and their capability flags (admins).
    Role(Group<RoleCmd>),
    /// Quotas (admins).
    Quota(Group<QuotaCmd>),
    /// API tokens: create, list, revoke.
    Token(Group<TokenCmd>),
    /// Coordinators: members, add, remove.
    Operator(Group<OperatorCmd>),
    /// Images: load an archive onto nodes without a registry.
    Image(Group<image::ImageCmd>),
    /// Workflows: ZApps on a schedule (cron, @every) and pipelines of steps
    /// with dependencies, conditions, fan-out, retries and timeouts, started
    /// by hand, by the schedule or by triggers (docs/workflows.md).
    Workflow(Group<workflow::WorkflowCmd>),
}

#[derive(Args)]
pub struct Plain {
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
pub struct Group<T: Subcommand> {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: T,
}

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    conn: Conn,
    /// Username [default: $USER].
    #[arg(long, short)]
    username: Option<String>,
    /// Read the password from this environment variable instead of stdin.
    #[arg(long, value_name = "VAR", default_value = "ZOE_PASSWORD")]
    password_env: String,
    /// Save the address and token in the config file (~/.config/zoe/config.toml).
    #[arg(long)]
    save: bool,
}

#[derive(Subcommand)]
pub enum AclCmd {
    /// Exchange the bootstrap token (printed at the first start, and in the
    /// first leader's data dir) for the first admin's API token.
    Bootstrap {
        /// The bootstrap token, or @FILE to read it from a file.
        #[arg(long, env = "ZOE_BOOTSTRAP_TOKEN", hide_env_values = true)]
        bootstrap_token: String,
        /// Save the address and the admin token in the config file.
        #[arg(long)]
        save: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum WaitFor {
    /// Until the execution runs (or ends).
    Running,
    /// Until it ends.
    Done,
}

#[derive(Subcommand)]
pub enum ExecCmd {
    /// Submit a ZApp as a new execution.
    Start {
        name: String,
        /// The ZApp JSON file.
        zapp: PathBuf,
        /// Wait, with progress on stderr, until the execution runs or is done.
        #[arg(long, value_enum)]
        wait: Option<WaitFor>,
        /// Once running, stream the monitor service's log until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// List executions, newest first.
    Ls {
        /// Only these statuses (comma-separated), e.g. running,queued.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Only this user's (needs can_operate_others for others).
        #[arg(long)]
        owner: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after this id (the previous page's next_cursor).
        #[arg(long)]
        cursor: Option<u64>,
    },
    /// Show an execution with its services.
    Get { id: u64 },
    /// Terminate an execution.
    Terminate {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
        /// Wait until it has ended.
        #[arg(long)]
        wait: bool,
    },
    /// Delete an ended execution.
    Rm { id: u64 },
    /// Print a service's log.
    Logs {
        /// The service id (see `zoe exec get`).
        service: u64,
        /// Keep printing until the service ends.
        #[arg(long, short)]
        follow: bool,
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// URLs of the execution's published ports.
    Endpoints { id: u64 },
    /// Print the execution's ZApp.
    App { id: u64 },
    /// Dry run: would the ZApp fit now, on which nodes, its place in the
    /// queue and when it would start (nothing is submitted).
    Plan {
        /// The ZApp JSON file.
        zapp: PathBuf,
    },
    /// Submit an execution's ZApp again as a new execution.
    Restart {
        id: u64,
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// List nodes with capacity, reserved and live resources.
    Ls,
    /// Show one node.
    Get { name: String },
    /// Let the scheduler place new work on the node (on) or not (off).
    Eligibility {
        name: String,
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Drain a node: nothing new lands there and its work moves elsewhere;
    /// batch work may finish until the deadline. Again with other options
    /// updates the drain; --cancel stops it.
    Drain {
        name: String,
        /// Cancel the drain: the node is eligible again (unless --keep-ineligible).
        #[arg(long, visible_alias = "disable", conflicts_with_all = ["deadline", "force", "monitor"])]
        cancel: bool,
        /// With --cancel: leave the node ineligible.
        #[arg(long, requires = "cancel")]
        keep_ineligible: bool,
        /// After this long (e.g. 30m, 2h), stop what is still running.
        #[arg(long)]
        deadline: Option<String>,
        /// Stop everything now.
        #[arg(long)]
        force: bool,
        /// Follow the drain until it completes: what is left, what moved,
        /// time to the deadline (one JSON object per line with --json).
        /// Alone, follows a drain already in progress.
        #[arg(long)]
        monitor: bool,
    },
    /// Images the node holds.
    Images { name: String },
}

#[derive(Subcommand)]
pub enum OperatorCmd {
    /// Coordinators, leader and Raft indexes.
    Members,
    /// Add a coordinator (it catches up as a learner, then votes).
    Add(crate::coordinator::NewMember),
    /// Remove a coordinator.
    Remove { id: u64 },
    /// Backups of the whole replicated state (executions, users, tokens, nodes).
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Write a consistent, checksummed snapshot of the state to FILE (mode 0600: it holds password and token hashes).
    Save { file: PathBuf },
    /// Replace the cluster's state with a snapshot file. Users and tokens come from the snapshot.
    Restore {
        file: PathBuf,
        /// Replace a cluster that already holds executions or nodes.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: ClientCommand) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(dispatch(cmd))?;
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(cmd: ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Info(p) => info(&p.conn).await,
        ClientCommand::Login(a) => login(a).await,
        ClientCommand::Acl(g) => acl(&g.conn, g.cmd).await,
        ClientCommand::Exec(g) => exec(&g.conn, g.cmd).await,
        ClientCommand::Node(g) => node(&g.conn, g.cmd).await,
        ClientCommand::Stats(p) => stats(&p.conn).await,
        ClientCommand::User(g) => acl::user(&g.conn, g.cmd).await,
        ClientCommand::Role(g) => acl::role(&g.conn, g.cmd).await,
        ClientCommand::Quota(g) => acl::quota(&g.conn, g.cmd).await,
        ClientCommand::Token(g) => acl::token(&g.conn, g.cmd).await,
        ClientCommand::Operator(g) => operator(&g.conn, g.cmd).await,
        ClientCommand::Image(g) => image::run(&g.conn, g.cmd).await,
        ClientCommand::Workflow(g) => workflow::run(&g.conn, g.cmd).await,
    }
}

fn q(v: &str) -> String {
    // Query values here are names and statuses; escape what a URL cannot hold.
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", q(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

fn parse_duration_s(s: &str) -> Result<u64> {
    let s = s.trim();
    let (n, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = n.parse().map_err(|_| anyhow!("`{s}` is not a duration such as 90s, 30m, 2h or 7d"))?;
    Ok(n * mult)
}

fn done(conn: &Conn, v: &Value, msg: impl FnOnce() -> String) {
    if conn.json {
        output::json(v);
    } else {
        println!("{}", msg());
    }
}

// -------------------------------------------------------------- commands

async fn info(conn: &Conn) -> Result<()> {
    let c = connect(conn)?;
    let v = c.get("/api/v1/info").await?;
    if conn.json {
        output::json(&v);
        return Ok(());
    }
    println!(
        "zoe {} (API {}, ZApp format {})",
        cell(&v["version"]),
        cell(&v["api_version"]),
        cell(&v["application_format_version"])
    );
    println!("deployment   {}", cell(&v["deployment_name"]));
    println!("address      {}", c.base);
    println!(
        "coordinator  {} ({}), {}",
        cell(&v["coordinator"]["id"]),
        cell(&v["coordinator"]["name"]),
        cell(&v["coordinator"]["role"])
    );
    println!("leader       {}", cell(&v["leader"]));
    Ok(())
}

fn read_secret(env: &str, prompt: &str) -> Result<String> {
    if let Ok(p) = std::env::var(env) {
        return Ok(p);
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("no password given (type it, or set ${env})");
    }
    Ok(p)
}

fn save_token(c: &Client, token: &str) -> Result<()> {
    let mut f = FileConfig::load()?;
    f.addr = Some(c.base.clone());
    f.token = Some(token.to_string());
    let p = f.save()?;
    eprintln!("saved the address and token in {}", p.display());
    Ok(())
}

async fn login(a: LoginArgs) -> Result<()> {
    let c = connect(&a.conn)?;
    let username = a.username.or_else(|| std::env::var("USER").ok()).ok_or_else(|| anyhow!("give --username"))?;
    let password = read_secret(&a.password_env, &format!("password for {username}: "))?;
    let v = c.post("/api/v1/login", &json!({"username": username, "password": password})).await?;
    let token = v["token"].as_str().ok_or_else(|| anyhow!("no token in the answer"))?;
    if a.save {
        save_token(&c, token)?;
    }
    done(&a.conn, &v, || {
        if a.save {
            format!("logged in as {username}")
        } else {
            format!("{token}\n(export ZOE_TOKEN=... or use --save)")
        }
    });
    Ok(())
}

async fn acl(conn: &Conn, cmd: AclCmd) -> Result<()> {
    let AclCmd::Bootstrap { bootstrap_token, save } = cmd;
    let token = match bootstrap_token.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| path.to_string())?.trim().to_string(),
        None => bootstrap_token.trim().to_string(),
    };
    let c = connect(&Conn { token: None, ..conn.clone() })?;
    let v = c.post("/api/v1/acl/bootstrap", &json!({"token": token})).await?;
    let admin = v["token"].as_str().ok_or_else(|| anyhow!("no token in the answer"))?;
    if save {
        save_token(&c, admin)?;
    }
    done(conn, &v, || format!("admin token (keep it safe; shown once):\n{admin}"));
    Ok(())
}

fn exec_rows(list: &[Value]) -> Vec<Vec<String>> {
    list.iter()
        .map(|e| {
            vec![
                cell(&e["id"]),
                cell(&e["name"]),
                cell(&e["owner"]),
                cell(&e["status"]),
                cell(&e["zapp"]),
                time(&e["time_submit"]),
                time(&e["time_start"]),
                time(&e["time_end"]),
            ]
        })
        .collect()
}

/// Follows an execution with blocking queries until `stop` says so;
/// reports each status change on stderr but the last. `last` is the
/// status already reported: one status is printed once however many
/// watches follow.
async fn watch_exec(c: &Client, id: u64, last: &mut String, stop: impl Fn(&str) -> bool) -> Result<Value> {
    let mut index = 0;
    loop {
        let (v, idx) = c.call(Method::GET, &format!("/api/v1/executions/{id}?index={index}&wait=30s"), None).await?;
        let status = v["status"].as_str().unwrap_or("").to_string();
        // The status that ends the watch is the caller's to report (on
        // stdout, as the command's result): printed here too, it showed twice.
        if stop(&status) {
            *last = status;
            return Ok(v);
        }
        if status != *last {
            eprintln!("execution {id}: {status}");
            *last = status.clone();
        }
        index = idx.unwrap_or(index);
    }
}

fn ended(s: &str) -> bool {
    s == "terminated" || s == "error"
}

/// Prints a service's log from `offset`. With `follow`, a stream cut off
/// (the leader changed, a coordinator restarted) resumes where it stopped,
/// on any coordinator, so a follow outlives a failover.
async fn stream_logs(c: &Client, service: u64, follow: bool, offset: u64) -> Result<()> {
    let mut offset = offset;
    let mut out = std::io::stdout().lock();
    let mut progress: std::time::Instant;
    loop {
        let path = format!("/api/v1/services/{service}/logs?offset={offset}&follow={follow}");
        let resp = c.get_stream(&path).await?;
        // Connected again: the silence before the cut does not count.
        progress = std::time::Instant::now();
        let mut body = resp.bytes_stream();
        let cut = loop {
            match body.next().await {
                None => return Ok(()),
                Some(Ok(chunk)) => {
                    out.write_all(&chunk)?;
                    out.flush()?;
                    offset += chunk.len() as u64;
                    progress = std::time::Instant::now();
                }
                Some(Err(e)) => break e,
            }
        };
        // A stream cut again and again with nothing new is a real failure.
        if !follow || progress.elapsed() > std::time::Duration::from_secs(60) {
            return Err(anyhow::Error::new(cut).context("log stream"));
        }
        eprintln!("log stream cut off ({cut}); resuming at byte {offset}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

async fn exec(conn: &Conn, cmd: ExecCmd) -> Result<()> {
    let c = connect(conn)?;
    match cmd {
        ExecCmd::Start { name, zapp, wait, follow } => {
            let text = std::fs::read_to_string(&zapp).with_context(|| format!("{}", zapp.display()))?;
            let app: Value = serde_json::from_str(&text).map_err(|e| {
                anyhow!("{}: not valid JSON: line {}, column {}: {e}", zapp.display(), e.line(), e.column())
            })?;
            let v = c.post_once("/api/v1/executions", &json!({"name": name, "application": app})).await?;
            let id = v["id"].as_u64().ok_or_else(|| anyhow!("no id in the answer"))?;
            for w in v["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}: {}", cell(&w["path"]), cell(&w["message"]));
            }
            if wait.is_none() && !follow {
                done(conn, &v, || format!("execution {id} submitted"));
                return Ok(());
            }
            eprintln!("execution {id} submitted");
            let mut last = "submitted".to_string();
            let until_running = |s: &str| s == "running" || ended(s);
            let e = match wait {
                Some(WaitFor::Done) if !follow => watch_exec(&c, id, &mut last, ended).await?,
                _ => watch_exec(&c, id, &mut last, until_running).await?,
            };
            if follow && e["status"] == "running" {
                eprintln!("execution {id}: running");
                let groups = e["service_details"].as_array().cloned().unwrap_or_default();
                let app = c.get(&format!("/api/v1/executions/{id}/zapp")).await?;
                let monitor: Vec<String> = items(&app["services"])
                    .filter(|g| g["monitor"] == true)
                    .filter_map(|g| g["name"].as_str().map(str::to_string))
                    .collect();
                let svc = groups
                    .iter()
                    .find(|s| s["group"].as_str().is_some_and(|g| monitor.iter().any(|m| m == g)))
                    .and_then(|s| s["id"].as_u64())
                    .ok_or_else(|| anyhow!("execution {id} has no monitor service to follow"))?;
                stream_logs(&c, svc, true, 0).await?;
                if matches!(wait, Some(WaitFor::Done)) {
                    let e = watch_exec(&c, id, &mut last, ended).await?;
                    return finish(conn, &e);
                }
                return Ok(());
            }
            finish(conn, &e)
        }
        ExecCmd::Ls { status, name, owner, limit, cursor } => {
            let path = format!(
                "/api/v1/executions{}",
                query(&[
                    ("status", status),
                    ("name", name),
                    ("owner", owner),
                    ("limit", Some(limit.to_string())),
                    ("cursor", cursor.map(|c| c.to_string())),
                ])
            );
            let v = c.get(&path).await?;
            if conn.json {
                output::json(&v);
                return Ok(());
            }
            let list = v["executions"].as_array().cloned().unwrap_or_default();
            table(&["ID", "NAME", "OWNER", "STATUS", "ZAPP", "SUBMITTED", "STARTED", "ENDED"], &exec_rows(&list));
            if let Some(n) = v["next_cursor"].as_u64() {
                eprintln!("more: zoe exec ls --cursor {n}");
            }
            Ok(())
        }
        ExecCmd::Get { id } => {
            let v = c.get(&format!("/api/v1/executions/{id}")).await?;
            if conn.json {
                output::json(&v);
                return Ok(());
            }
            fields(
                &v,
                &[
                    ("id", "id"),
                    ("name", "name"),
                    ("owner", "owner"),
                    ("status", "status"),
                    ("zapp", "zapp"),
                    ("submitted", "time_submit"),
                    ("started", "time_start"),
                    ("ended", "time_end"),
                    ("killed at", "kill_at"),
                    ("message", "error_message"),
                ],
            );
            let eps = c.get(&format!("/api/v1/executions/{id}/endpoints")).await?;
            for e in eps["endpoints"].as_array().into_iter().flatten() {
                println!("endpoint   {} {}: {}", cell(&e["service"]), cell(&e["port"]), cell(&e["url"]));
            }
            println!();
            let rows: Vec<Vec<String>> = items(&v["service_details"])
                .map(|s| {
                    vec![
                        cell(&s["id"]),
                        cell(&s["name"]),
                        if s["essential"] == true { "yes".into() } else { "no".into() },
                        cell(&s["status"]),
                        cell(&s["backend_status"]),
                        cell(&s["node"]),
                        cell(&s["error_message"]),
                    ]
                })
                .collect();
            table(&["SERVICE", "NAME", "ESSENTIAL", "STATUS", "BACKEND", "NODE", "ERROR"], &rows);
            Ok(())
        }
        ExecCmd::Terminate { id, reason, wait } => {
            let body = match reason {
                Some(r) => json!({"reason": r}),
                None => json!({}),
            };
            let v = c.post(&format!("/api/v1/executions/{id}/terminate"), &body).await?;
            if wait {
                let e = watch_exec(&c, id, &mut String::new(), ended).await?;
                return finish(conn, &e);
            }
            done(conn, &v, || format!("execution {id}: {}", cell(&v["status"])));
            Ok(())
        }
        ExecCmd::Rm { id } => {
            let v = c.delete(&format!("/api/v1/executions/{id}")).await?;
            done(conn, &v, || format!("execution {id} deleted"));
            Ok(())
        }
        ExecCmd::Logs { service, follow, offset } => stream_logs(&c, service, follow, offset).await,
        ExecCmd::Endpoints { id } => {
            let v = c.get(&format!("/api/v1/executions/{id}/endpoints")).await?;
            if conn.json {
                output::json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items(&v["endpoints"])
                .map(|e| {
                    let via = if e["proxy_url"].is_string() { cell(&e["proxy_url"]) } else { "-".into() };
                    vec![cell(&e["service"]), cell(&e["port"]), cell(&e["protocol"]), via, cell(&e["url"])]
                })
                .collect();
            table(&["SERVICE", "PORT", "PROTOCOL", "PROXY", "DIRECT"], &rows);
            Ok(())
        }
        ExecCmd::App { id } => {
            // The ZApp is JSON either way.
            output::json(&c.get(&format!("/api/v1/executions/{id}/zapp")).await?);
            Ok(())
        }
        ExecCmd::Plan { zapp } => {
            let text = std::fs::read_to_string(&zapp).with_context(|| format!("{}", zapp.display()))?;
            let app: Value = serde_json::from_str(&text).map_err(|e| {
                anyhow!("{}: not valid JSON: line {}, column {}: {e}", zapp.display(), e.line(), e.column())
            })?;
            let v = c.post("/api/v1/zapp/plan", &app).await?;
            done(conn, &v, || {
                let start = match v["start_in_s"].as_f64() {
                    Some(s) if v["fits_now"] == true => format!("fits now (start in {s:.0} s)"),
                    Some(s) => format!("would start in about {s:.0} s"),
                    None => "no start estimate".into(),
                };
                let mut out = format!(
                    "{start}: {}\nqueue position {} of {}",
                    cell(&v["estimate"]),
                    cell(&v["queue_position"]),
                    cell(&v["queue_length"])
                );
                if let Some(r) = v["reason"].as_str() {
                    out.push_str(&format!("\nwaiting: {r}"));
                }
                let placed: Vec<&str> =
                    v["placements"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                if !placed.is_empty() {
                    out.push_str(&format!("\nplacements: {}", placed.join(", ")));
                }
                out
            });
            Ok(())
        }
        ExecCmd::Restart { id, name } => {
            let body = match name {
                Some(n) => json!({"name": n}),
                None => json!({}),
            };
            let v = c.post(&format!("/api/v1/executions/{id}/resubmit"), &body).await?;
            done(conn, &v, || format!("execution {} submitted (from {id})", cell(&v["id"])));
            Ok(())
        }
    }
}

/// The end of a waited-for execution: error status → exit code 1.
fn finish(conn: &Conn, e: &Value) -> Result<()> {
    done(conn, e, || format!("execution {}: {}", cell(&e["id"]), cell(&e["status"])));
    if e["status"] == "error" {
        bail!("execution {} failed: {}", cell(&e["id"]), cell(&e["error_message"]));
    }
    Ok(())
}

async fn node(conn: &Conn, cmd: NodeCmd) -> Result<()> {
    let c = connect(conn)?;
    match cmd {
        NodeCmd::Ls => {
            let v = c.get("/api/v1/nodes").await?;
            if conn.json {
                output::json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items(&v)
                .map(|n| {
                    vec![
                        cell(&n["name"]),
                        cell(&n["status"]),
                        if n["eligible"] == true { "eligible".into() } else { "ineligible".into() },
                        if n["drain"].is_null() { "-".into() } else { "draining".into() },
                        format!("{}/{}", cell(&n["reserved_cores"]), cell(&n["cores"])),
                        format!("{}/{}", bytes(&n["reserved_memory"]), bytes(&n["memory"])),
                        cell(&n["services"]),
                    ]
                })
                .collect();
            table(&["NAME", "STATUS", "ELIGIBILITY", "DRAIN", "CORES (RESERVED/TOTAL)", "MEMORY", "SERVICES"], &rows);
            Ok(())
        }
        NodeCmd::Get { name } => {
            let mut v = c.get(&format!("/api/v1/nodes/{}", q(&name))).await?;
            if conn.json {
                output::json(&v);
                return Ok(());
            }
            let volumes: Vec<String> = items(&v["host_volumes"])
                .map(|h| {
                    let ro = if h["read_only"] == true { " (read-only)" } else { "" };
                    format!("{}{ro}", h["name"].as_str().unwrap_or_default())
                })
                .collect();
            v["host_volumes"] = Value::from(volumes.join(", "));
            fields(
                &v,
                &[
                    ("name", "name"),
                    ("addresses", "addresses"),
                    ("status", "status"),
                    ("eligible", "eligible"),
                    ("drain", "drain"),
                    ("labels", "labels"),
                    ("host volumes", "host_volumes"),
                    ("cores", "cores"),
                    ("reserved cores", "reserved_cores"),
                    ("memory", "memory"),
                    ("reserved memory", "reserved_memory"),
                    ("services", "services"),
                    ("containerd", "containerd_version"),
                    ("cgroups", "cgroup_mode"),
                    ("images", "image_count"),
                    ("registered", "last_registration"),
                    ("live", "live"),
                ],
            );
            Ok(())
        }
        NodeCmd::Eligibility { name, state } => {
            let eligible = matches!(state, OnOff::On);
            let v = c.post(&format!("/api/v1/nodes/{}/eligibility", q(&name)), &json!({"eligible": eligible})).await?;
            done(conn, &v, || format!("node {name}: {}", if eligible { "eligible" } else { "ineligible" }));
            Ok(())
        }
        NodeCmd::Drain { name, cancel, keep_ineligible, deadline, force, monitor } => {
            drain::run(&c, conn, &name, drain::Ask { cancel, keep_ineligible, deadline, force, monitor }).await
        }
        NodeCmd::Images { name } => {
            let v = c.get(&format!("/api/v1/nodes/{}/images", q(&name))).await?;
            if conn.json {
                output::json(&v);
            } else {
                for i in v["images"].as_array().into_iter().flatten() {
                    println!("{}", cell(i));
                }
            }
            Ok(())
        }
    }
}

async fn stats(conn: &Conn) -> Result<()> {
    let c = connect(conn)?;
    let v = c.get("/api/v1/statistics/scheduler").await?;
    if conn.json {
        output::json(&v);
        return Ok(());
    }
    // Zoe's three queues, in the scheduler's order, then zoe's extras.
    for (label, k) in [
        ("queue", "queue"),
        ("running", "running_queue"),
        ("termination", "termination_queue"),
        ("submitted", "submitted"),
        ("starting", "starting"),
    ] {
        let ids = v[k].as_array().cloned().unwrap_or_default();
        println!("{label:<12} {:>4}  {}", ids.len(), cell(&Value::Array(ids)));
    }
    println!("policy       {}", cell(&v["policy"]));
    let p = &v["platform_stats"];
    // total / reserved (Σ ZApp minimums) / allocated (Σ container limits) / in use (measured)
    let four = |n: &Value, what: &str, fmt: &dyn Fn(&Value) -> String| {
        ["total", "reserved", "allocated", "in_use"].map(|k| fmt(&n[format!("{what}_{k}")])).join(" / ")
    };
    let cores = |v: &Value| v.as_f64().map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into());
    let mut rows: Vec<Vec<String>> = items(&p["nodes"])
        .map(|n| {
            vec![
                cell(&n["name"]),
                cell(&n["status"]),
                cell(&n["container_count"]),
                four(n, "cores", &cores),
                four(n, "memory", &bytes),
            ]
        })
        .collect();
    rows.push(vec![
        "(all)".into(),
        "".into(),
        cell(&p["container_count"]),
        four(p, "cores", &cores),
        four(p, "memory", &bytes),
    ]);
    table(&["NODE", "STATUS", "CONTAINERS", "CORES (TOTAL / RESERVED / ALLOCATED / IN USE)", "MEMORY (same)"], &rows);
    if v["live_available"] != true {
        println!("(allocated and in-use numbers need the leader's agent connections: ask the leader)");
    }
    Ok(())
}

async fn operator(conn: &Conn, cmd: OperatorCmd) -> Result<()> {
    let c = connect(conn)?;
    match cmd {
        OperatorCmd::Members => {
            let v = c.get("/api/v1/cluster/members").await?;
            if conn.json {
                output::json(&v);
                return Ok(());
            }
            let leader = v["leader"].as_u64();
            let rows: Vec<Vec<String>> = items(&v["members"])
                .map(|m| {
                    vec![
                        cell(&m["id"]),
                        cell(&m["name"]),
                        cell(&m["addr"]),
                        if m["voter"] == true { "voter".into() } else { "learner".into() },
                        if m["id"].as_u64() == leader { "leader".into() } else { "follower".into() },
                        cell(&m["matched_index"]),
                    ]
                })
                .collect();
            table(&["ID", "NAME", "ADDRESS", "VOTE", "ROLE", "MATCHED"], &rows);
            println!(
                "term {}, commit {}, applied {}",
                cell(&v["term"]),
                cell(&v["commit_index"]),
                cell(&v["applied_index"])
            );
        }
        OperatorCmd::Add(crate::coordinator::NewMember { id, addr, name }) => {
            let v = c.post("/api/v1/cluster/members", &json!(zoe_api::acl::AddMember { id, addr, name })).await?;
            done(conn, &v, || format!("coordinator {id} is now a voting member"));
        }
        OperatorCmd::Remove { id } => {
            let v = c.delete(&format!("/api/v1/cluster/members/{id}")).await?;
            done(conn, &v, || format!("coordinator {id} removed"));
        }
        OperatorCmd::Snapshot { cmd: SnapshotCmd::Save { file } } => {
            use zoe_coordinator::state::backup;
            let resp = c.send(c.request(Method::GET, "/api/v1/cluster/snapshot")).await?;
            let data = resp.bytes().await?;
            let snap = backup::decode(&data).context("the coordinator sent a snapshot that does not check")?;
            zoe_coordinator::backup::write_private(&file, &data).with_context(|| format!("{}", file.display()))?;
            let v = json!({
                "file": file.display().to_string(),
                "bytes": data.len(),
                "index": snap.index,
                "sha256": snap.sha256,
                "executions": snap.state.executions.len(),
                "users": snap.state.users.len(),
                "nodes": snap.state.nodes.len(),
            });
            done(conn, &v, || {
                format!(
                    "snapshot of index {} written to {} ({}): {} executions, {} users, {} nodes; sha256 {}",
                    cell(&v["index"]),
                    file.display(),
                    bytes(&json!(data.len())),
                    v["executions"],
                    v["users"],
                    v["nodes"],
                    snap.sha256
                )
            });
        }
        OperatorCmd::Snapshot { cmd: SnapshotCmd::Restore { file, force } } => {
            use zoe_coordinator::state::backup;
            let data = std::fs::read(&file).with_context(|| format!("{}", file.display()))?;
            let snap = backup::decode(&data).with_context(|| format!("{}", file.display()))?;
            let path = format!("/api/v1/cluster/snapshot/restore{}", if force { "?force=true" } else { "" });
            let req = c.request(Method::POST, &path).header("content-type", "application/json").body(data);
            let v: Value = c.send(req).await?.json().await?;
            done(conn, &v, || {
                format!(
                    "restored the snapshot of index {} ({} executions, {} users, {} nodes); log in with its credentials",
                    cell(&json!(snap.index)),
                    snap.state.executions.len(),
                    snap.state.users.len(),
                    snap.state.nodes.len()
                )
            });
        }
    }
    Ok(())
}
