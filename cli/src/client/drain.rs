//! `zoe node drain`: start, update or cancel a drain, and follow it with
//! blocking queries until the node's agent reports nothing left.

use super::http::{Client, Conn};
use super::output::{self, cell, items};
use super::{parse_duration_s, q};
use anyhow::{Result, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What the admin asked for on the command line.
pub struct Ask {
    pub cancel: bool,
    pub keep_ineligible: bool,
    pub deadline: Option<String>,
    pub force: bool,
    pub monitor: bool,
}

/// Progress lines are printed when something other than the countdown
/// changes, and at least this often.
const REPRINT: Duration = Duration::from_secs(30);

pub async fn run(c: &Client, conn: &Conn, name: &str, ask: Ask) -> Result<()> {
    let path = format!("/api/v1/nodes/{}/drain", q(name));
    let status_path = path.clone();
    // `--monitor` alone follows a drain already in progress.
    let follow_only = ask.monitor && ask.deadline.is_none() && !ask.force && {
        let v = c.get(&status_path).await?;
        v["draining"] == true
    };
    let mut requested_at = None;
    if !follow_only {
        let body = if ask.cancel {
            json!({"enable": false, "keep_ineligible": ask.keep_ineligible})
        } else {
            let mut b = json!({"enable": true, "force": ask.force});
            if let Some(d) = &ask.deadline {
                b["deadline_s"] = json!(parse_duration_s(d)?);
            }
            b
        };
        let v = c.post(&path, &body).await?;
        requested_at = v["drain"]["requested_at"].as_u64();
        if !ask.monitor || conn.json {
            // With --json --monitor this is the first line of the stream.
            if conn.json {
                println!("{v}");
            } else if ask.cancel {
                let still = if ask.keep_ineligible { " (still ineligible)" } else { "; eligible again" };
                println!("node {name}: drain cancelled{still}");
            } else {
                println!("node {name}: draining{}", deadline_note(&v["drain"]));
            }
        }
        if !ask.monitor {
            return Ok(());
        }
    }
    monitor(c, conn, name, &status_path, requested_at).await
}

fn deadline_note(drain: &Value) -> String {
    match (drain["force"] == true, drain["deadline"].as_u64()) {
        (true, _) => " (forced: everything stops now)".into(),
        (false, Some(d)) => format!(" until {} UTC, then what is left is stopped", output::time(&json!(d))),
        (false, None) => " (no deadline)".into(),
    }
}

/// Follows the drain until it completes (exit 0) or is cancelled (error).
async fn monitor(c: &Client, conn: &Conn, name: &str, path: &str, mut requested_at: Option<u64>) -> Result<()> {
    let mut index = 0u64;
    let mut last: Option<(String, Instant)> = None;
    loop {
        // A short wait: the agent's container count is live, not replicated,
        // so it changes without waking a blocking query.
        let (v, idx) = c.call(Method::GET, &format!("{path}?index={index}&wait=5s"), None).await?;
        index = idx.unwrap_or(index);
        if v["draining"] == true {
            requested_at = requested_at.or(v["drain"]["requested_at"].as_u64());
            let key = if conn.json { without_countdown(&v).to_string() } else { summary(&v, false) };
            let due = last.as_ref().is_none_or(|(k, t)| *k != key || t.elapsed() >= REPRINT);
            if due {
                if conn.json {
                    println!("{v}");
                } else {
                    println!("node {name}: {}", summary(&v, true));
                }
                last = Some((key, Instant::now()));
            }
            continue;
        }
        // The drain is over: completed (the last completed drain is ours) or cancelled.
        let completed = requested_at.is_some() && v["last_drain"]["requested_at"].as_u64() == requested_at;
        if conn.json {
            println!("{v}");
        }
        if !completed {
            bail!("node {name}: no drain in progress (cancelled, or never started)");
        }
        if !conn.json {
            let moved = v["last_drain"]["moved"].as_array().map_or(0, Vec::len);
            println!(
                "node {name}: drain complete at {} UTC: no zoe container left; {moved} instance(s) moved; \
                 the node stays ineligible (zoe node eligibility {name} on)",
                output::time(&v["completed_at"])
            );
        }
        return Ok(());
    }
}

fn without_countdown(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(p) = v.get_mut("progress").and_then(Value::as_object_mut) {
        p.remove("deadline_in_ms");
    }
    v
}

/// One line: what is left, what is moving, what moved and where, what
/// waits to finish, the agent's count and (with `countdown`) the deadline.
fn summary(v: &Value, countdown: bool) -> String {
    let p = &v["progress"];
    let list = |x: &Value| x.as_array().map(|a| a.iter().map(cell).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    let count = |x: &Value| x.as_array().map_or(0, Vec::len);
    let mut parts = vec![format!("{} left", count(&p["remaining"]))];
    if count(&p["remaining"]) > 0 {
        parts[0].push_str(&format!(" ({})", list(&p["remaining"])));
    }
    if count(&p["moving"]) > 0 {
        parts.push(format!("{} moving ({})", count(&p["moving"]), list(&p["moving"])));
    }
    let moved: Vec<String> = items(&p["moved"])
        .map(|m| match m["node"].as_str() {
            Some(n) => format!("{} -> {n}", cell(&m["instance"])),
            None => format!("{} ({})", cell(&m["instance"]), cell(&m["status"])),
        })
        .collect();
    if !moved.is_empty() {
        parts.push(format!("{} moved ({})", moved.len(), moved.join(", ")));
    }
    if count(&p["waiting_to_finish"]) > 0 {
        parts.push(format!("waiting for execution(s) {} to finish", list(&p["waiting_to_finish"])));
    }
    parts.push(match p["containers_reported"].as_u64() {
        Some(n) => format!("agent reports {n} container(s)"),
        None => "agent not connected".into(),
    });
    if countdown {
        match p["deadline_in_ms"].as_i64() {
            Some(ms) if ms > 0 => parts.push(format!("deadline in {}", human(ms as u64 / 1000))),
            Some(_) => parts.push("deadline passed".into()),
            None if v["drain"]["force"] == true => parts.push("forced".into()),
            None => parts.push("no deadline".into()),
        }
    }
    parts.join("; ")
}

fn human(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
