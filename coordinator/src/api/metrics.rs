//! Prometheus metrics in the text exposition format, written by hand: a
//! handful of counters and gauges do not need a metrics framework.

use super::context::Ctx;
use crate::state::{ExecutionStatus, NodeStatus, ServiceStatus};
use axum::extract::{MatchedPath, Request, State as Ax};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Requests served, by method, route and status.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

pub async fn track(Ax(ctx): Ax<Ctx>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    // The route template, not the raw path: ids must not explode the label set.
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    let key = (method, route, resp.status().as_u16());
    *ctx.metrics().requests.lock().expect("metrics lock").entry(key).or_default() += 1;
    resp
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub async fn handler(Ax(ctx): Ax<Ctx>) -> Response {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP zoe_api_requests_total API requests served.\n# TYPE zoe_api_requests_total counter");
    for ((m, r, s), n) in ctx.metrics().requests.lock().expect("metrics lock").iter() {
        let _ = writeln!(out, "zoe_api_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {n}", esc(r));
    }

    let st = ctx.coord().status().await;
    let _ = writeln!(out, "# HELP zoe_raft_index Raft log indexes of this coordinator.\n# TYPE zoe_raft_index gauge");
    for (kind, v) in [
        ("last_log", st.last_log_index),
        ("commit", st.commit_index),
        ("applied", st.applied_index),
        ("snapshot", st.snapshot_index),
    ] {
        let _ = writeln!(out, "zoe_raft_index{{kind=\"{kind}\"}} {}", v.unwrap_or(0));
    }
    let _ = writeln!(out, "# TYPE zoe_raft_term gauge\nzoe_raft_term {}", st.term);
    let _ = writeln!(out, "# TYPE zoe_raft_is_leader gauge\nzoe_raft_is_leader {}", u8::from(st.leader == Some(st.id)));
    let _ = writeln!(out, "# TYPE zoe_raft_members gauge\nzoe_raft_members {}", st.members.len());

    let live = ctx.live_nodes().await;
    let (text, _) = ctx.coord().read_local(|s| {
        let mut o = String::new();
        let _ = writeln!(o, "# HELP zoe_executions Executions by status.\n# TYPE zoe_executions gauge");
        for status in ExecutionStatus::ALL {
            let n = s.executions.values().filter(|e| e.status == status).count();
            let _ = writeln!(o, "zoe_executions{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP zoe_services Service instances by status.\n# TYPE zoe_services gauge");
        for status in ServiceStatus::ALL {
            let n = s.services.values().filter(|x| x.status == status).count();
            let _ = writeln!(o, "zoe_services{{status=\"{status}\"}} {n}");
        }
        let placed = s.services.values().filter(|x| x.status.may_hold_container()).count();
        let _ = writeln!(o, "# HELP zoe_placements Instances placed on a node now.\n# TYPE zoe_placements gauge\nzoe_placements {placed}");
        let ready = s.nodes.values().filter(|n| n.status == NodeStatus::Ready).count();
        let _ = writeln!(o, "# HELP zoe_nodes Registered nodes by status.\n# TYPE zoe_nodes gauge");
        let _ = writeln!(o, "zoe_nodes{{status=\"ready\"}} {ready}\nzoe_nodes{{status=\"down\"}} {}", s.nodes.len() - ready);
        let reserved = s.reserved_by_node();
        let _ = writeln!(o, "# HELP zoe_node_cores Cores per node.\n# TYPE zoe_node_cores gauge");
        for n in s.nodes.values() {
            let (rc, _) = reserved.get(n.name.as_str()).copied().unwrap_or_default();
            let name = esc(&n.name);
            let _ = writeln!(o, "zoe_node_cores{{node=\"{name}\",kind=\"capacity\"}} {}", n.capacity.cores.as_cores());
            let _ = writeln!(o, "zoe_node_cores{{node=\"{name}\",kind=\"reserved\"}} {}", rc.as_cores());
            if let Some(l) = live.as_ref().and_then(|l| l.get(&n.name)) {
                let _ = writeln!(o, "zoe_node_cores{{node=\"{name}\",kind=\"in_use\"}} {}", l.cores_in_use.as_cores());
            }
        }
        let _ = writeln!(o, "# HELP zoe_node_memory_bytes Memory per node.\n# TYPE zoe_node_memory_bytes gauge");
        for n in s.nodes.values() {
            let (_, rm) = reserved.get(n.name.as_str()).copied().unwrap_or_default();
            let name = esc(&n.name);
            let _ = writeln!(o, "zoe_node_memory_bytes{{node=\"{name}\",kind=\"capacity\"}} {}", n.capacity.memory);
            let _ = writeln!(o, "zoe_node_memory_bytes{{node=\"{name}\",kind=\"reserved\"}} {rm}");
            if let Some(l) = live.as_ref().and_then(|l| l.get(&n.name)) {
                let _ = writeln!(o, "zoe_node_memory_bytes{{node=\"{name}\",kind=\"in_use\"}} {}", l.memory_in_use);
            }
        }
        o
    });
    out.push_str(&text);
    if let Some(l) = &live {
        let _ = writeln!(
            out,
            "# HELP zoe_agents_connected Agents connected to the leader.\n# TYPE zoe_agents_connected gauge\nzoe_agents_connected {}",
            l.values().filter(|n| n.connected).count()
        );
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
