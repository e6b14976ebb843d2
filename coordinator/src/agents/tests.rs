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
