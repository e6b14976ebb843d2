//! Elections with a pre-vote, on top of openraft 0.9 (which has none).
//!
//! openraft's own elections are disabled (`enable_elect = false`); this
//! module decides when a member stands. A follower that has heard no leader
//! for its election timeout first asks the other voters whether they would
//! vote for it (`Request::PreVote`), without raising any term. A voter says
//! yes only if it has not heard a leader for the leader lease itself and
//! the candidate's log is at least as long as its own. Only with a quorum of
//! yeses does the member call openraft's `trigger().elect()`.
//!
//! Why: without it, a member that was paused (SIGSTOP) or cut off times out,
//! raises the term and, once it can talk again, makes the healthy leader
//! step down: the leader sees the higher term in its replies (issue #17:
//! 15 step-downs in 8 kills). With it, such a member finds that the others
//! still hear the leader, stays a follower, and the leader's next heartbeat
//! brings it back. openraft 0.10 (alpha) brings a pre-vote of its own; this
//! one lives behind `raft/` and goes when zoe moves to it.
//!
//! Timing: a voter grants a pre-vote once it has been `election_timeout_max`
//! without a leader, the same lease after which openraft grants the real
//! vote, so a pre-vote that succeeds is followed by an election that can.
//! A candidate stands after a random wait in [max, max + (max − min)] of
//! silence, so two members rarely stand at once.

use super::network::{Request, Response};
use super::node::Coordinator;
use super::{LogId, NodeId};
use openraft::ServerState;
use rand::Rng;
use std::time::Duration;

/// How often a member checks whether to stand.
const TICK: Duration = Duration::from_millis(20);

impl Coordinator {
    /// Runs until the coordinator shuts down.
    pub(super) async fn elections(self) {
        let (min, max) = {
            let t = &self.config().raft;
            (t.election_timeout_min_ms, t.election_timeout_max_ms.max(t.election_timeout_min_ms))
        };
        let mut rng = {
            use rand::SeedableRng;
            rand::rngs::SmallRng::from_os_rng()
        };
        let mut draw = || max + rng.random_range(0..=(max - min));
        let mut timeout = draw();
        loop {
            tokio::time::sleep(TICK).await;
            if self.is_closing() {
                return;
            }
            let m = self.raft().metrics().borrow().clone();
            if m.state == ServerState::Leader || m.state == ServerState::Shutdown {
                continue;
            }
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            if !voters.contains(&self.id()) || self.silence_ms() < timeout {
                continue;
            }
            timeout = draw();
            let heard = self.last_heard_ms();
            let others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != self.id()).collect();
            let quorum = voters.len() / 2 + 1;
            let granted = if others.is_empty() {
                0
            } else {
                self.pre_vote(&others, quorum - 1, Duration::from_millis(min)).await
            };
            // A yes is only good for the moment it was given: had a leader
            // been elected meanwhile (its heartbeat, a new term), standing
            // now would depose it.
            let stale = {
                let now = self.raft().metrics().borrow().clone();
                now.current_term != m.current_term || now.state == ServerState::Leader || self.last_heard_ms() != heard
            };
            if stale {
                tracing::debug!("pre-vote overtaken: a leader showed up meanwhile");
            } else if 1 + granted >= quorum {
                tracing::info!(term = m.current_term, granted, "pre-vote won: standing for election");
                if let Err(e) = self.raft().trigger().elect().await {
                    tracing::warn!("triggering an election: {e}");
                }
            } else {
                tracing::debug!(granted, quorum, "pre-vote lost: the others still hear a leader");
            }
            // The election (or a leader's heartbeat) takes some time to
            // show; do not stand again before a full timeout of silence.
            self.reset_silence();
        }
    }

    /// Asks `others` in parallel; returns how many would vote for us, as
    /// soon as `enough` said yes (a dead member's timeout must not delay
    /// the election, nor age the answers of the living).
    async fn pre_vote(&self, others: &[NodeId], enough: usize, ttl: Duration) -> usize {
        use futures::StreamExt;
        let last_log_id = self.last_log_id().await;
        let mut asks: futures::stream::FuturesUnordered<_> = others
            .iter()
            .map(|id| {
                let req = Request::PreVote { last_log_id };
                async move {
                    let Some(node) = self.node_of(*id) else { return false };
                    matches!(self.pool().call(*id, &node, &req, ttl).await, Ok(Response::PreVote(true)))
                }
            })
            .collect();
        let mut granted = 0;
        while let Some(yes) = asks.next().await {
            granted += yes as usize;
            if granted >= enough {
                break;
            }
        }
        granted
    }

    /// Whether this member would vote for a candidate whose log ends at
    /// `candidate_last`: it is not the leader, has not heard one for the
    /// lease, and has no longer log.
    pub(super) async fn answer_pre_vote(&self, candidate_last: Option<LogId>) -> bool {
        if self.raft().metrics().borrow().state == ServerState::Leader {
            return false;
        }
        if self.leader_silence_ms() < self.config().raft.election_timeout_max_ms {
            return false;
        }
        candidate_last >= self.last_log_id().await
    }
}
