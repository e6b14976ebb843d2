//! zoe's coordinator: the replicated state, Raft, the scheduler, the REST
//! API and the web UI. It reaches nodes only through agents; it never
//! touches containerd.

pub mod agents;
pub mod api;
pub mod auth;
pub mod backend;
pub mod backup;
pub mod config;
pub mod dev;
pub mod gc;
pub mod leader;
pub mod proxy;
pub mod raft;
pub mod relay;
pub mod server;
pub mod volumes;
pub mod web;

// The model is its own crate (no I/O); its modules keep their paths here.
pub use zoe_model::{drain, quota, scheduler, state};
