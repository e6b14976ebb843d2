//! zoe's node runtime: everything the scheduler asks of a node, done
//! directly against containerd (gRPC) and the kernel's cgroups.
//!
//! * [`Runtime`] (module [`runtime`]): services as containers — spawn, wait,
//!   stop, live update, usage, logs, reattach, orphans;
//! * [`ImageStore`] (module [`image`], [`pull`]): archive import, registry
//!   pulls, list, remove, with progress reports;
//! * [`spec`]: the service spec and the OCI runtime spec built from it;
//! * [`security`], [`seccomp`]: what this node allows whatever a
//!   coordinator sends, and the syscall filter every container gets;
//! * [`network`]: container network namespaces, CNI, routes, /etc/hosts;
//! * [`logs`], [`cgroup`], [`node`]: log files, cgroup files, host stats;
//! * [`daemon`], [`config`]: the agent process (protocol with the
//!   coordinators, heartbeats, commands) and its configuration file;
//! * [`containerd`]: the connection and the plumbing containerd-client
//!   leaves to its users (namespaces, leases, content writes).

pub mod cgroup;
pub mod config;
pub mod containerd;
pub mod daemon;
pub mod error;
pub mod idmap;
pub mod image;
pub mod logs;
pub mod network;
pub mod node;
pub mod private_containerd;
pub mod pull;
pub mod runtime;
pub mod seccomp;
pub mod security;
pub mod spec;

pub use containerd::Containerd;
pub use error::{Error, Result, StartError, StartErrorKind};
pub use idmap::IdMapping;
pub use image::{ImageInfo, ImageStore, Phase, Progress, ProgressFn};
pub use logs::{LogChunk, LogConfig};
pub use node::{Advertise, NodeStats, Reserve};
pub use pull::RegistryConfig;
pub use runtime::{ExitStatus, Orphan, Runtime, RuntimeConfig, ServiceState, ServiceStatus};
pub use spec::{BindMount, ContainerSpec, NetworkMode, Ownership, Resources};
