//! The REST API's types: what each route takes and answers, declared once
//! for serde and for the OpenAPI document (`/api/v1/openapi.json`). The
//! coordinator builds responses from them, the web UI reads them, and the
//! client, the tests and the benchmarks decode them: a renamed field fails
//! to compile, not to display.
//!
//! Every struct refuses fields it does not know (`deny_unknown_fields`):
//! a typo in a request is a 400 naming it, not a silent default.

pub mod schema;

pub mod acl;
pub mod cluster;
pub mod error;
pub mod execution;
pub mod node;
pub mod stats;
pub mod workflow;

pub use schema::{Schema, Schemas};
