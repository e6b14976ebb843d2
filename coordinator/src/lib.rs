//! zoe's coordinator: the replicated state, Raft, the scheduler, the REST
//! API and the web UI. It reaches nodes only through agents; it never
//! touches containerd.

pub mod agents;
pub mod api;
pub mod auth;
pub mod backend;
pub mod backup;
pub mod dev;
pub mod drain;
pub mod gc;
pub mod leader;
pub mod quota;
pub mod raft;
pub mod relay;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod web;
