//! zoe's coordinator: the replicated state, Raft, the scheduler and the REST
//! API. It reaches nodes only through agents; it never touches containerd.

pub mod backend;
pub mod leader;
pub mod raft;
pub mod scheduler;
pub mod state;
