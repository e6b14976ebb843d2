//! Workflows' `volume_size` triggers on the leader: agents report the sizes
//! in their `report_size` host volumes with their heartbeats (kept in the
//! agent back-end's memory, never replicated); every second the leader
//! decides, with the pure `zoe_model::workflow::volume_triggers`, which
//! triggers passed their size or went back below, and commits that in its
//! term. The state refuses a trigger that fired already, so a new leader
//! deciding on the same sizes fires nothing twice.

use crate::agents::AgentBackend;
use crate::raft::Coordinator;
use crate::state::Command;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true; decides only while this member leads.
pub async fn scheduled(coord: Coordinator, agents: Arc<AgentBackend>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let Some(term) = coord.leader_term() else { continue };
        let (watched, _) = coord.read_local(|st| {
            st.workflows
                .values()
                .any(|w| w.doc.triggers.iter().any(|t| matches!(t, zoe_common::workflow::Trigger::VolumeSize(_))))
        });
        if !watched {
            continue;
        }
        let Some(reports) = agents.live_reports() else { continue };
        let sizes: BTreeMap<String, Vec<zoe_common::proto::VolumeSize>> =
            reports.into_iter().map(|(node, r)| (node, r.stats.volume_sizes)).collect();
        let now = crate::api::context::now_ms();
        let (cmds, _) = coord.read_local(|st| zoe_model::workflow::volume_triggers(st, &sizes, now));
        if cmds.is_empty() {
            continue;
        }
        for c in &cmds {
            if let Command::VolumePassed { workflow, node, bytes, .. } = c {
                tracing::info!(workflow, node, bytes, "volume size trigger passed: starting a run");
            }
        }
        if let Err(e) = coord.write_in_term(term, Command::Batch(cmds)).await {
            tracing::debug!("volume triggers deferred: {e}");
        }
    }
}
