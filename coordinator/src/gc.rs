//! Garbage collection of the replicated state, on the leader (Nomad's
//! job and eval GC): tokens that can never authenticate again (expired,
//! revoked, or of a deleted user), and ended executions and workflow runs
//! older than the retention. Without it the state, every snapshot and every follower's
//! memory would grow with every login and every batch job for ever.
//!
//! [`garbage`] is pure (state and clock in, commands out); [`scheduled`]
//! commits its commands in the leader's term, a bounded batch per round.

use crate::raft::Coordinator;
use crate::state::{Command, ExecutionStatus, RunStatus, State};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;

/// `[gc]` in the coordinator's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcSettings {
    /// How often the leader looks for garbage.
    pub interval_s: u64,
    /// Ended (terminated or error) executions are deleted this long after
    /// they ended, with their services; 0 keeps them for ever (as Zoe did).
    pub execution_retention_s: u64,
}

impl Default for GcSettings {
    fn default() -> Self {
        // Nomad keeps dead jobs 4 h; a data scientist looks back further.
        GcSettings { interval_s: 60, execution_retention_s: 7 * 24 * 3600 }
    }
}

/// Commands collected per round, and the bytes of token records they
/// carry: keeps one entry well below the command size limit (1 MiB); the
/// rest waits for the next round.
pub const MAX_PER_ROUND: usize = 500;
const MAX_BYTES_PER_ROUND: usize = 256 * 1024;

/// What to remove now. Each removal is conditional on what was seen (a
/// token record changed meanwhile stays), so a late batch changes nothing
/// it should not.
pub fn garbage(st: &State, now: u64, settings: &GcSettings) -> Vec<Command> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for (key, value) in crate::auth::token_entries(st) {
        let dead = match crate::auth::parse_record(value) {
            None => true,
            Some(r) => {
                r.expires.is_some_and(|e| e <= now)
                    || st
                        .users
                        .get(&r.user_id)
                        .is_none_or(|u| r.credentials.as_ref().is_some_and(|c| *c != crate::auth::credentials_stamp(u)))
            }
        };
        if dead {
            bytes += key.len() + value.len();
            if bytes > MAX_BYTES_PER_ROUND && !out.is_empty() {
                return out;
            }
            out.push(crate::auth::remove_record(key.clone(), value.clone()));
        }
        if out.len() >= MAX_PER_ROUND {
            return out;
        }
    }
    if settings.execution_retention_s > 0 {
        let keep_ms = settings.execution_retention_s.saturating_mul(1000);
        for e in st.executions.values() {
            let ended = matches!(e.status, ExecutionStatus::Terminated | ExecutionStatus::Error);
            let old = e.time_end.is_some_and(|t| t.saturating_add(keep_ms) <= now);
            if ended && old {
                out.push(Command::DeleteExecution { id: e.id });
                if out.len() >= MAX_PER_ROUND {
                    return out;
                }
            }
        }
        // Ended workflow runs go with their executions: a periodic
        // workflow would otherwise grow the state by a run per slot.
        for r in st.runs.values() {
            if r.status != RunStatus::Running && r.time_end.is_some_and(|t| t.saturating_add(keep_ms) <= now) {
                out.push(Command::DeleteRun { run: r.id });
                if out.len() >= MAX_PER_ROUND {
                    return out;
                }
            }
        }
    }
    out
}

/// Runs until `stop` turns true; collects only while this member leads.
pub async fn scheduled(coord: Coordinator, settings: GcSettings, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(settings.interval_s.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let Some(term) = coord.leader_term() else { continue };
        let now = crate::api::context::now_ms();
        let (cmds, _) = coord.read_local(|st| garbage(st, now, &settings));
        if cmds.is_empty() {
            continue;
        }
        let n = cmds.len();
        match coord.write_in_term(term, Command::Batch(cmds)).await {
            Ok(_) => tracing::info!(removed = n, "garbage collected"),
            Err(e) => tracing::debug!("garbage collection deferred: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{TokenKind, TokenRecord, mint};

    fn with_user(st: &mut State, name: &str) -> u64 {
        let id = 100 + st.users.len() as u64;
        let user = crate::state::User {
            id,
            username: name.into(),
            email: None,
            fs_uid: 1000,
            role_id: 0,
            quota_id: 0,
            enabled: true,
            auth_source: "internal".into(),
            password_hash: None,
            priority: 0,
        };
        st.users.insert(id, user);
        id
    }

    fn store(st: &mut State, rec: &TokenRecord) -> String {
        let key = TokenRecord::meta_key(&rec.id);
        st.meta.insert(key.clone(), serde_json::to_string(rec).unwrap());
        key
    }

    fn removed(cmds: &[Command]) -> Vec<String> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::CompareAndSetMeta { key, value: None, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tokens_that_cannot_authenticate_again_are_collected() {
        let mut st = State::default();
        let alice = with_user(&mut st, "alice");
        let live = store(&mut st, &mint(alice, "api", TokenKind::Api, 1_000, None).record);
        let later = store(&mut st, &mint(alice, "s", TokenKind::Session, 1_000, Some(10_000)).record);
        let expired = store(&mut st, &mint(alice, "s", TokenKind::Session, 1_000, Some(500)).record);
        let orphan = store(&mut st, &mint(999, "api", TokenKind::Api, 1_000, None).record);
        st.meta.insert("token.revoked".into(), String::new());
        st.meta.insert("other.setting".into(), String::new());
        let mut got = removed(&garbage(&st, 2_000, &GcSettings::default()));
        got.sort();
        let mut want = vec![expired, orphan, "token.revoked".to_string()];
        want.sort();
        assert_eq!(got, want);
        assert!(!got.contains(&live) && !got.contains(&later));
    }

    #[test]
    fn ended_executions_go_after_the_retention_and_active_ones_never() {
        let mut st = State::default();
        let day = 24 * 3600 * 1000;
        let app = zoe_common::zapp::parse(include_str!("../../examples/zapps/hello-batch.json")).unwrap().0;
        let mut ids = Vec::new();
        for (status, end) in [
            (ExecutionStatus::Terminated, Some(0)),
            (ExecutionStatus::Error, Some(0)),
            (ExecutionStatus::Terminated, Some(6 * day)),
            (ExecutionStatus::Running, None),
            (ExecutionStatus::CleaningUp, Some(0)),
        ] {
            let submit = Command::SubmitExecution {
                name: "e".into(),
                owner: "ada".into(),
                description: app.clone(),
                size: 1.0,
                time: 0,
                idempotency_key: None,
            };
            let Ok(crate::state::Applied::Created(id)) = st.apply(&submit) else { panic!("submit refused") };
            let e = st.executions.get_mut(&id).unwrap();
            (e.status, e.time_end) = (status, end);
            ids.push(id);
        }
        let deleted = |s: &GcSettings| -> Vec<u64> {
            garbage(&st, 8 * day, s)
                .iter()
                .filter_map(|c| match c {
                    Command::DeleteExecution { id } => Some(*id),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(deleted(&GcSettings::default()), vec![ids[0], ids[1]]);
        assert_eq!(deleted(&GcSettings { execution_retention_s: 0, ..GcSettings::default() }), Vec::<u64>::new());
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;
    use crate::state::{Applied, RunStatus};

    #[test]
    fn ended_runs_go_after_the_retention_and_running_ones_never() {
        let day = 24 * 3600 * 1000;
        let mut st = State::default();
        let text = format!(
            r#"{{"name": "w", "steps": [{{"name": "a", "zapp": {}}}]}}"#,
            include_str!("../../examples/zapps/hello-batch.json")
        );
        let doc = zoe_common::workflow::parse(&text).unwrap().0;
        let Ok(Applied::Created(wf)) =
            st.apply(&Command::CreateWorkflow { workflow: doc, owner: "ada".into(), time: 0 })
        else {
            panic!()
        };
        let mut runs = Vec::new();
        for _ in 0..3 {
            let run = Command::RunWorkflow { id: wf, by: "ada".into(), idempotency_key: None, time: 0 };
            let Ok(Applied::Created(r)) = st.apply(&run) else { panic!() };
            runs.push(r);
        }
        st.apply(&Command::TerminateRun { run: runs[0], reason: "x".into(), time: 0 }).unwrap();
        st.apply(&Command::TerminateRun { run: runs[1], reason: "x".into(), time: 6 * day }).unwrap();
        let gone: Vec<u64> = garbage(&st, 8 * day, &GcSettings::default())
            .iter()
            .filter_map(|c| match c {
                Command::DeleteRun { run } => Some(*run),
                _ => None,
            })
            .collect();
        assert_eq!(gone, vec![runs[0]]);
        assert_eq!(st.runs[&runs[2]].status, RunStatus::Running);
    }
}
