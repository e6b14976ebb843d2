use super::reconcile::{Actions, reconcile};
use crate::state::{Command, State};
use zoe_common::proto::{ContainerInfo, ContainerState};

fn container(id: &str, service: Option<u64>, state: ContainerState) -> ContainerInfo {
    ContainerInfo {
        container_id: id.into(),
        service_id: service,
        state,
        cores_in_use_millis: 0,
        memory_in_use: 0,
        core_limit_millis: None,
        memory_limit: None,
    }
}

#[test]
fn unknown_containers_are_orphans() {
    let st = State::default();
    let exited = ContainerState::Exited { exit_code: Some(0), oom_killed: false };
    let cs = vec![container("a", None, ContainerState::Running), container("b", Some(4), exited)];
    let a = reconcile(&st, "n1", &cs, true, 1);
    assert_eq!(a, Actions { commands: vec![], stop_now: vec!["b".into()], running_orphans: vec!["a".into()] });
}

#[test]
fn empty_inventory_on_empty_state_does_nothing() {
    let a = reconcile(&State::default(), "n1", &[], true, 1);
    assert!(a.commands.is_empty() && a.stop_now.is_empty() && a.running_orphans.is_empty());
    let _ = Command::Batch(vec![]);
}

/// Fuzz-style: random and mutated frames of every agent-protocol message
/// decode to an error or a value, never a panic or a huge allocation.
#[test]
fn agent_protocol_decoder_survives_garbage() {
    use rand::{Rng, SeedableRng};
    use zoe_common::proto::*;
    use zoe_net::frame::{decode, encode};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
    let valid = [
        encode(&AgentMessage::Heartbeat { seq: 3, stats: LiveStats::default() }, MAX_FRAME).unwrap(),
        encode(
            &CommandRequest {
                id: 1,
                term: 0,
                command: AgentCommand::Logs { container_id: "c".into(), from: 9, follow: true },
            },
            MAX_FRAME,
        )
        .unwrap(),
        encode(&CommandReply::Log { data: vec![1, 2, 3], next: 3 }, MAX_FRAME).unwrap(),
        encode(&SessionReply::NotLeader { leader: Some("c2@127.0.0.1:1".into()) }, MAX_FRAME).unwrap(),
    ];
    let try_all = |payload: &[u8]| {
        let _ = decode::<SessionOpen>(payload);
        let _ = decode::<SessionReply>(payload);
        let _ = decode::<AgentMessage>(payload);
        let _ = decode::<LeaderMessage>(payload);
        let _ = decode::<CommandRequest>(payload);
        let _ = decode::<CommandReply>(payload);
        let _ = decode::<ClientRequest>(payload);
    };
    for _ in 0..20_000 {
        let len = rng.random_range(0..64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        try_all(&bytes);
        let mut m = valid[rng.random_range(0..valid.len())][4..].to_vec();
        for _ in 0..rng.random_range(1..4) {
            if !m.is_empty() {
                let i = rng.random_range(0..m.len());
                m[i] = rng.random();
            }
        }
        try_all(&m);
    }
    // And the valid ones still decode.
    assert!(decode::<AgentMessage>(&valid[0][4..]).is_ok());
}
