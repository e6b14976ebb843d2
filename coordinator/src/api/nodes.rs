//! Nodes (list, get, eligibility, drain, images, preload, load) and Zoe's
//! scheduler statistics.

use super::context::{Body, Caller, Ctx, Indexed, ReadParams, WriteReply, now_ms, ok};
use super::error::{HttpError, HttpResult};
use super::routes::{P, Q};
use crate::agents::stats::ReportView as AgentLiveView;
use crate::scheduler::LiveNode;
use crate::state::{Command, Drain, ExecutionStatus, Node, State};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::collections::BTreeMap;
use zoe_api::node::{DrainStatus, ImageLoaded, ImagesLoaded, NodeImages};
pub use zoe_api::node::{NodeChanged, NodeLoad, NodeView, PreloadImage, SetDrain, SetEligibility};
use zoe_api::stats::SchedulerStats;

fn load_of(l: &LiveNode) -> NodeLoad {
    NodeLoad {
        connected: l.connected,
        cores_in_use: l.cores_in_use.as_cores(),
        memory_in_use: l.memory_in_use,
        container_count: l.container_count,
    }
}

/// What node views need from the whole state, computed once per read (a
/// per-node scan of all services would be quadratic on a large cluster).
struct Totals<'a> {
    reserved: BTreeMap<&'a str, (zoe_common::resources::Millicores, u64)>,
    services: BTreeMap<&'a str, usize>,
}

impl<'a> Totals<'a> {
    fn of(s: &'a State) -> Totals<'a> {
        let mut services: BTreeMap<&str, usize> = BTreeMap::new();
        for x in s.services.values().filter(|x| x.status.may_hold_container()) {
            if let Some(n) = x.node.as_deref() {
                *services.entry(n).or_default() += 1;
            }
        }
        Totals { reserved: s.reserved_by_node(), services }
    }
}

fn node_view(t: &Totals<'_>, n: &Node, live: Option<&LiveNode>) -> NodeView {
    let (rc, rm) = t.reserved.get(n.name.as_str()).copied().unwrap_or_default();
    NodeView {
        name: n.name.clone(),
        addresses: n.addresses.clone(),
        status: n.status.as_str().to_string(),
        eligible: n.eligible,
        schedulable: n.schedulable(),
        drain: n.drain.clone(),
        labels: n.labels.iter().cloned().collect(),
        host_volumes: n.host_volumes.values().cloned().collect(),
        cores: n.capacity.cores.as_cores(),
        memory: n.capacity.memory,
        reserved_cores: rc.as_cores(),
        reserved_memory: rm,
        services: t.services.get(n.name.as_str()).copied().unwrap_or(0),
        containerd_version: n.containerd_version.clone(),
        cgroup_mode: n.cgroup_mode.clone(),
        image_count: n.images.len(),
        first_registration: n.first_registration,
        last_registration: n.last_registration,
        live: live.map(load_of),
    }
}

pub async fn list(caller: Caller, Q(q): Q<ReadParams>) -> HttpResult<Indexed<Vec<NodeView>>> {
    let ctx = &caller.ctx;
    caller.require_status()?;
    let live = ctx.live_nodes().await;
    ctx.read(&q, |s| {
        let t = Totals::of(s);
        s.nodes.values().map(|n| node_view(&t, n, live.as_ref().and_then(|l| l.get(&n.name)))).collect()
    })
    .await
}

fn find<'a>(s: &'a State, name: &str) -> HttpResult<&'a Node> {
    s.nodes.get(name).ok_or_else(|| HttpError::missing("node", name))
}

/// A 404 naming the first of `nodes` the state does not know.
async fn known(ctx: &Ctx, nodes: &[String]) -> HttpResult<()> {
    match ctx.read_fresh(|s| nodes.iter().find(|n| !s.nodes.contains_key(*n)).cloned()).await? {
        Some(n) => Err(HttpError::missing("node", n)),
        None => Ok(()),
    }
}

pub async fn get(caller: Caller, P(name): P<String>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<NodeView>> {
    let ctx = &caller.ctx;
    caller.require_status()?;
    let live = ctx.live_nodes().await;
    ctx.read_checked(&q, |s| {
        let t = Totals::of(s);
        find(s, &name).map(|n| node_view(&t, n, live.as_ref().and_then(|l| l.get(&n.name))))
    })
    .await
}

/// Images the node reported at its last registration (replicated).
pub async fn images(caller: Caller, P(name): P<String>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<NodeImages>> {
    let ctx = &caller.ctx;
    caller.require_status()?;
    ctx.read_checked(&q, |s| {
        find(s, &name).map(|n| NodeImages { node: n.name.clone(), images: n.images.iter().cloned().collect() })
    })
    .await
}

pub async fn eligibility(caller: Caller, P(name): P<String>, body: Body) -> HttpResult<WriteReply<NodeChanged>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let SetEligibility { eligible } = body.parse()?;
    let (_, index) = ctx.write(Command::SetNodeEligibility { name: name.clone(), eligible }).await?;
    Ok(ok(NodeChanged { node: name, eligible: Some(eligible), drain: None }, index))
}

/// Starts or updates (`enable: true`, optional `deadline_s` and `force`) or
/// cancels (`enable: false`, optional `keep_ineligible`) a drain. The drain
/// is replicated with who asked and when.
pub async fn drain(caller: Caller, P(name): P<String>, body: Body) -> HttpResult<WriteReply<NodeChanged>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let req: SetDrain = body.parse()?;
    let keep_ineligible = req.keep_ineligible;
    if req.enable {
        if keep_ineligible.is_some() {
            return Err(HttpError::invalid_field("/keep_ineligible", "applies only when cancelling (enable: false)"));
        }
        let now = now_ms();
        let drain = Drain {
            requested_by: caller.user.username.clone(),
            requested_at: now,
            deadline: req.deadline_s.map(|s| now.saturating_add(s.saturating_mul(1000))),
            force: req.force.unwrap_or(false),
            moved: Vec::new(),
        };
        let (_, index) = ctx.write(Command::SetNodeDrain { name: name.clone(), drain: Some(drain.clone()) }).await?;
        return Ok(ok(NodeChanged { node: name, eligible: None, drain: Some(Some(drain)) }, index));
    }
    for (field, given) in [("deadline_s", req.deadline_s.is_some()), ("force", req.force.is_some())] {
        if given {
            return Err(HttpError::invalid_field(
                &format!("/{field}"),
                "applies only when starting a drain (enable: true)",
            ));
        }
    }
    let keep_ineligible = keep_ineligible.unwrap_or(false);
    let (_, index) = ctx.write(Command::CancelDrain { name: name.clone(), keep_ineligible }).await?;
    Ok(ok(NodeChanged { node: name, eligible: Some(!keep_ineligible), drain: Some(None) }, index))
}

/// Where a node's drain stands: the drain as asked (who, when, deadline),
/// its progress (what is left, what moved, time to the deadline, the
/// agent's container count), or the last completed drain. A blocking query
/// (`index`, `wait`) returns when the replicated state changes; the live
/// container count is read at that moment.
pub async fn drain_status(caller: Caller, P(name): P<String>, Q(q): Q<ReadParams>) -> HttpResult<Indexed<DrainStatus>> {
    let ctx = &caller.ctx;
    caller.require_status()?;
    // Wait first, then take the live view, then read: the agent's count is
    // as fresh as the state (and no agent lock is taken under the state's).
    ctx.read(&q, |_| ()).await?;
    let platform =
        crate::scheduler::Platform { nodes: ctx.live_nodes().await.unwrap_or_default(), ..Default::default() };
    let now = now_ms();
    ctx.read_checked(&ReadParams { consistent: q.consistent, index: None, wait: None }, |s| {
        find(s, &name).map(|n| DrainStatus {
            node: n.name.clone(),
            draining: n.drain.is_some(),
            eligible: n.eligible,
            status: n.status.as_str().into(),
            drain: n.drain.clone(),
            progress: crate::drain::progress(s, &platform, &n.name, now),
            last_drain: n.last_drain.clone(),
            completed_at: n.drain_completed_at,
        })
    })
    .await
}

/// Pulls an image on nodes; streams one JSON line of progress per event.
pub async fn preload(caller: Caller, body: Body) -> HttpResult<Response> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let req: PreloadImage = body.parse()?;
    let image = super::context::non_empty("/image", req.image)?;
    if let Err(e) = zoe_common::image::ImageRef::parse(&image) {
        return Err(HttpError::invalid_field("/image", e.to_string()));
    }
    let nodes = req.nodes.unwrap_or_default();
    known(ctx, &nodes).await?;
    let live = ctx.live("preloading images")?;
    let stream =
        live.preload(image, nodes).await.map_err(|e| HttpError::unavailable("agent_unavailable", e.to_string()))?;
    let body = axum::body::Body::from_stream(stream.map(|p| {
        let mut line = serde_json::to_vec(&p).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(line)
    }));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Query of `POST /api/v1/images/load`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// Comma-separated node names; all connected nodes when absent.
    pub nodes: Option<String>,
}

/// Loads an image archive, the request body (`application/x-tar`, an OCI
/// image layout or `docker save` tarball, any size: it is streamed to the
/// agents in pieces, never held whole), on nodes. Answers with each
/// node's outcome once every node has imported it or failed.
pub async fn load_image(
    caller: Caller,
    Q(q): Q<LoadParams>,
    body: axum::body::Body,
) -> HttpResult<axum::Json<ImagesLoaded>> {
    let ctx = &caller.ctx;
    caller.require_config()?;
    let nodes: Vec<String> =
        q.nodes.unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect();
    known(ctx, &nodes).await?;
    let live = ctx.live("loading images")?;
    let archive = body
        .into_data_stream()
        .map(|r| r.map_err(|e| super::live::LiveError::Failed(format!("reading the upload: {e}"))))
        .boxed();
    let results = live
        .load_image(nodes, archive)
        .await
        .map_err(|e| HttpError::unavailable("agent_unavailable", e.to_string()))?;
    let ok = results.iter().all(|r| r.error.is_none());
    let nodes = results.into_iter().map(|r| ImageLoaded { node: r.node, error: r.error }).collect();
    Ok(axum::Json(ImagesLoaded { ok, nodes }))
}

/// Zoe's `/statistics/scheduler`: the scheduler's three queues in the order
/// its passes use them (the same queue code), their lengths, and Zoe's
/// ClusterStats with per-node total / reserved / allocated / in-use cores
/// and memory. zoe adds `submitted` and `starting` (executions in neither
/// of Zoe's queues), the `policy`, and whether live numbers were available.
pub async fn stats(caller: Caller, Q(q): Q<ReadParams>) -> HttpResult<Indexed<SchedulerStats>> {
    let ctx = &caller.ctx;
    caller.require_status()?;
    // Copied before the state read: the agents' registry lock is never
    // taken while the state is held.
    let reports = ctx.live_reports().await;
    let sched = ctx.coord().config().leader.scheduler.clone();
    let now = now_ms();
    ctx.read(&q, |s| {
        let views: BTreeMap<String, AgentLiveView<'_>> =
            reports.iter().flatten().map(|(k, r)| (k.clone(), r.view())).collect();
        let platform = crate::agents::stats::cluster_stats(s, &views);
        let queues = crate::scheduler::queues(s, &sched, now);
        let ids = |st: ExecutionStatus| -> Vec<u64> {
            s.executions.values().filter(|e| e.status == st).map(|e| e.id).collect()
        };
        SchedulerStats {
            queue_length: queues.pending.len(),
            running_length: queues.running.len(),
            termination_queue_length: queues.termination.len(),
            submitted: ids(ExecutionStatus::Submitted),
            starting: ids(ExecutionStatus::Starting),
            queue: queues.pending,
            running_queue: queues.running,
            termination_queue: queues.termination,
            policy: sched.policy,
            platform_stats: platform,
            live_available: reports.is_some(),
        }
    })
    .await
}
