//! `zoe workflow ...`: periodic and pipelined ZApps (docs/workflows.md).

use super::http::{Client, Conn, connect};
use super::output::{self, cell, fields, items, table, time};
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum WorkflowCmd {
    /// Check workflow documents locally (or with --remote, on the cluster):
    /// every problem with its JSON pointer (steps' ZApps included). Exits
    /// non-zero if one is invalid.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Ask the cluster instead (fills in steps from its ZApp shop).
        #[arg(long)]
        remote: bool,
    },
    /// Create a workflow from its document (JSON file). A workflow with a
    /// `schedule` starts firing at once.
    Create { file: PathBuf },
    /// List workflows: schedule, next slot, runs.
    Ls,
    /// Show a workflow (by id or name) and its latest runs.
    Get { workflow: String },
    /// Start a run by hand.
    Run {
        workflow: String,
        /// Follow the run, a line per step change on stderr, until it ends;
        /// exits non-zero unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Terminate a run: it ends and its running steps' executions are terminated.
    Terminate {
        run: u64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// A workflow's runs, newest first; with --run, one run's steps,
    /// attempts, executions and exit codes.
    History {
        /// The workflow (id or name); not needed with --run.
        workflow: Option<String>,
        /// Show this run: each step's copies, attempts, executions, exit codes.
        #[arg(long)]
        run: Option<u64>,
        /// Only these statuses (comma-separated): running, succeeded, failed, terminated.
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Delete a workflow and its ended runs.
    Rm { workflow: String },
}

fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn run(conn: &Conn, cmd: WorkflowCmd) -> Result<()> {
    if let WorkflowCmd::Validate { files, remote: true } = &cmd {
        let c = connect(conn)?;
        for f in files {
            let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
            let doc: Value = serde_json::from_str(&text).map_err(|e| {
                anyhow!("{}: not valid JSON: line {}, column {}: {e}", f.display(), e.line(), e.column())
            })?;
            let v = c.post("/api/v1/workflows/validate", &doc).await.with_context(|| f.display().to_string())?;
            for w in items(&v["warnings"]) {
                println!("{}: warning: {}: {}", f.display(), cell(&w["path"]), cell(&w["message"]));
            }
            println!("{}: ok", f.display());
        }
        return Ok(());
    }
    if let WorkflowCmd::Validate { files, .. } = &cmd {
        let code = crate::zapp::validate_files(files, conn.json, |t| zoe_common::workflow::parse(t).map(|(_, w)| w));
        if code != std::process::ExitCode::SUCCESS {
            bail!("invalid workflow document");
        }
        return Ok(());
    }
    let c = connect(conn)?;
    match cmd {
        WorkflowCmd::Validate { .. } => unreachable!("handled above"),
        WorkflowCmd::Create { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
            let doc: Value = serde_json::from_str(&text).map_err(|e| {
                anyhow!("{}: not valid JSON: line {}, column {}: {e}", file.display(), e.line(), e.column())
            })?;
            let v = c.post("/api/v1/workflows", &doc).await?;
            for w in items(&v["warnings"]) {
                eprintln!("warning: {}: {}", cell(&w["path"]), cell(&w["message"]));
            }
            if conn.json {
                output::json(&v);
            } else {
                println!("workflow {} created", cell(&v["id"]));
            }
            Ok(())
        }
        WorkflowCmd::Ls => {
            let v = c.get("/api/v1/workflows").await?;
            if conn.json {
                output::json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items(&v)
                .map(|w| {
                    vec![
                        cell(&w["id"]),
                        cell(&w["name"]),
                        cell(&w["owner"]),
                        cell(&w["steps"]),
                        cell(&w["schedule"]),
                        time(&w["next_slot"]),
                        cell(&w["runs_started"]),
                        cell(&w["runs_running"]),
                    ]
                })
                .collect();
            table(&["ID", "NAME", "OWNER", "STEPS", "SCHEDULE", "NEXT SLOT", "RUNS", "RUNNING"], &rows);
            Ok(())
        }
        WorkflowCmd::Get { workflow } => {
            let v = c.get(&format!("/api/v1/workflows/{}", seg(&workflow))).await?;
            let runs = c.get(&format!("/api/v1/workflows/{}/runs?limit=5", seg(&workflow))).await?;
            if conn.json {
                output::json(&json!({"workflow": v, "runs": runs}));
                return Ok(());
            }
            fields(
                &v,
                &[
                    ("id", "id"),
                    ("name", "name"),
                    ("owner", "owner"),
                    ("description", "description"),
                    ("steps", "steps"),
                    ("schedule", "schedule"),
                    ("time zone", "time_zone"),
                    ("catch up", "catch_up"),
                    ("no overlap", "prohibit_overlap"),
                    ("created", "time_created"),
                    ("last slot", "last_slot"),
                    ("next slot", "next_slot"),
                    ("skipped", "slots_skipped"),
                    ("runs", "runs_started"),
                    ("running", "runs_running"),
                ],
            );
            println!();
            run_rows(&runs);
            Ok(())
        }
        WorkflowCmd::Run { workflow, wait } => {
            let v = c.post_once(&format!("/api/v1/workflows/{}/runs", seg(&workflow)), &json!({})).await?;
            let id = v["id"].as_u64().ok_or_else(|| anyhow!("no run id in the answer"))?;
            if !wait {
                if conn.json {
                    output::json(&v);
                } else {
                    println!("run {id} started");
                }
                return Ok(());
            }
            eprintln!("run {id} started");
            let r = follow(&c, id).await?;
            show_run(conn, &r);
            if r["status"] != "succeeded" {
                bail!("run {id} {}", cell(&r["status"]));
            }
            Ok(())
        }
        WorkflowCmd::Terminate { run, reason } => {
            let v = c.post(&format!("/api/v1/runs/{run}/terminate"), &json!({"reason": reason})).await?;
            if conn.json {
                output::json(&v);
            } else {
                println!("run {run}: {}", cell(&v["status"]));
            }
            Ok(())
        }
        WorkflowCmd::History { workflow, run, status, limit } => {
            if let Some(run) = run {
                let r = c.get(&format!("/api/v1/runs/{run}")).await?;
                show_run(conn, &r);
                return Ok(());
            }
            let Some(w) = workflow else { bail!("name a workflow, or a run with --run") };
            let mut path = format!("/api/v1/workflows/{}/runs?limit={limit}", seg(&w));
            if let Some(s) = status {
                path.push_str(&format!("&status={}", seg(&s).replace("%2C", ",")));
            }
            let v = c.get(&path).await?;
            if conn.json {
                output::json(&v);
            } else {
                run_rows(&v);
            }
            Ok(())
        }
        WorkflowCmd::Rm { workflow } => {
            c.delete(&format!("/api/v1/workflows/{}", seg(&workflow))).await?;
            if !conn.json {
                println!("workflow {workflow} deleted");
            }
            Ok(())
        }
    }
}

fn run_rows(runs: &Value) {
    let rows: Vec<Vec<String>> = items(runs)
        .map(|r| {
            let steps: Vec<String> =
                items(&r["steps"]).map(|s| format!("{}:{}", cell(&s["name"]), cell(&s["status"]))).collect();
            vec![
                cell(&r["id"]),
                cell(&r["status"]),
                cell(&r["trigger"]),
                time(&r["slot"]),
                time(&r["time_start"]),
                time(&r["time_end"]),
                steps.join(" "),
            ]
        })
        .collect();
    table(&["RUN", "STATUS", "TRIGGER", "SLOT", "STARTED", "ENDED", "STEPS"], &rows);
}

fn show_run(conn: &Conn, r: &Value) {
    if conn.json {
        output::json(r);
        return;
    }
    fields(
        r,
        &[
            ("run", "id"),
            ("workflow", "workflow"),
            ("owner", "owner"),
            ("status", "status"),
            ("trigger", "trigger"),
            ("started by", "started_by"),
            ("started", "time_start"),
            ("ended", "time_end"),
            ("reason", "reason"),
        ],
    );
    println!();
    let mut rows = Vec::new();
    for s in items(&r["steps"]) {
        let insts: Vec<&Value> = items(&s["instances"]).collect();
        if insts.is_empty() {
            rows.push(vec![cell(&s["name"]), cell(&s["status"]), "-".into(), "-".into(), "-".into(), "-".into()]);
        }
        for (i, inst) in insts.iter().enumerate() {
            let last = items(&inst["attempts"]).last().cloned().unwrap_or(Value::Null);
            let n = items(&inst["attempts"]).count();
            rows.push(vec![
                if insts.len() > 1 { format!("{}[{i}]", cell(&s["name"])) } else { cell(&s["name"]) },
                cell(&s["status"]),
                n.to_string(),
                cell(&last["execution"]),
                cell(&last["exit_code"]),
                match (&last["message"], &inst["retry_at"]) {
                    (_, Value::Number(_)) => format!("retry at {}", time(&inst["retry_at"])),
                    (m, _) => cell(m),
                },
            ]);
        }
    }
    table(&["STEP", "STATUS", "ATTEMPTS", "EXECUTION", "EXIT", "MESSAGE"], &rows);
}

/// Follows a run with blocking queries until it ends; each step's change
/// is reported on stderr.
async fn follow(c: &Client, id: u64) -> Result<Value> {
    let mut index = 0;
    let mut seen: std::collections::BTreeMap<String, String> = Default::default();
    loop {
        let (r, idx) = c.call(Method::GET, &format!("/api/v1/runs/{id}?index={index}&wait=30s"), None).await?;
        for s in items(&r["steps"]) {
            let (name, status) = (cell(&s["name"]), cell(&s["status"]));
            if seen.get(&name) != Some(&status) {
                if status != "waiting" {
                    eprintln!("run {id}: step {name} {status}");
                }
                seen.insert(name, status);
            }
        }
        if r["status"] != "running" {
            return Ok(r);
        }
        index = idx.unwrap_or(index);
    }
}
