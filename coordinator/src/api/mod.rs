//! The REST API every coordinator serves, under `/api/v1` (axum, JSON).
//!
//! - [`routes`]: the route table, from which both the router and the
//!   OpenAPI document are built, so the two cannot drift apart;
//! - [`error`]: the one error shape and the status mapping;
//! - [`context`]: shared state, authentication of callers, reads with
//!   `?consistent`, blocking queries, index headers, body parsing;
//! - handlers by domain: [`executions`], [`nodes`], [`admin`] (users,
//!   roles, quotas, tokens, bootstrap, login), [`cluster`], [`workflows`];
//! - [`live`]: the hook for what only agents know (logs, live stats,
//!   images, preload); without it those routes answer 503;
//! - [`metrics`]: Prometheus text at `/metrics`;
//! - [`server`]: listening (HTTP on loopback, or HTTPS) and shutdown.

pub mod admin;
pub mod cluster;
pub mod context;
pub mod error;
pub mod executions;
pub mod live;
pub mod metrics;
pub mod nodes;
pub mod routes;
pub mod server;
pub mod workflows;

pub use context::Ctx;
pub use error::{Detail, HttpError};
pub use live::{ArchiveStream, ImageLoadResult, LiveError, LiveSource, LogChunk, LogRequest, PreloadProgress};
pub use routes::{ROUTES, RouteDoc, openapi, router};
pub use server::{ApiServer, ServeError};

/// The API's version, part of every path.
pub const API_VERSION: &str = "v1";
