//! Types shared by every zoe component: the ZApp model (Zoe's application
//! description, format 3) with its validation and expansion, resource units,
//! image references, and the wire protocol between agents and
//! coordinators. Nothing here does I/O.

pub mod config;
pub mod image;
pub mod proto;
pub mod resources;
pub mod service;
pub mod workflow;
pub mod zapp;
