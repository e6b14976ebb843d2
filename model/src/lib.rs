//! zoe's model (Nomad's `structs` and `scheduler`): the replicated state,
//! the commands that change it and their `apply`, and the pure decisions
//! the leader takes on a snapshot of it — one pass of the leader
//! ([`pass`]: node liveness, reconciliation of inventories, the scheduler's
//! plan, drains, network pushes), quotas and the spec a node is asked to
//! run. Nothing here does I/O, reads a clock or knows Raft, tokio or HTTP:
//! the coordinator commits and carries out what these functions decide, and
//! tests drive them table by table.

pub mod drain;
pub mod network;
pub mod pass;
pub mod quota;
pub mod reconcile;
pub mod scheduler;
pub mod spec;
pub mod state;
pub mod workflow;
