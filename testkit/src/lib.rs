//! Fixtures shared by zoe's tests and benchmarks, all real daemons:
//!
//! * [`containerd()`]: a containerd socket, either the one the test runner
//!   started (`ZOE_TEST_CONTAINERD`) or a private one started for this process
//!   with `scripts/private-containerd.sh`;
//! * [`unique_namespace`]: a containerd namespace per test, so tests can share
//!   one containerd and run concurrently;
//! * [`image`] (`zoe-oci`): a busybox image built from the host's
//!   busybox-static, as an OCI image layout tarball and as a `docker save`
//!   archive, byte-for-byte deterministic;
//! * [`registry`]: a local `docker-registry` on 127.0.0.1 and a push helper;
//! * [`netns`]: network namespaces and veths acting as hosts on one LAN;
//! * [`echo`]: a static HTTP and WebSocket test server, and an image of it.

pub mod containerd;
pub mod echo;
pub mod netns;
pub mod registry;

/// The busybox image; it lives in `zoe-oci` because `zoe image
/// build-sample` builds it too.
pub use zoe_oci as image;

pub use containerd::{Containerd, containerd, unique_namespace};
pub use image::{BusyboxImage, DEFAULT_REFERENCE};
pub use registry::Registry;

/// Errors of the fixtures; they carry enough context to fix the environment.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FixtureError {
    let what = what.into();
    move |source| FixtureError::Io { what, source }
}

/// Path of a script in the repository's `scripts/` directory.
pub fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts").join(name)
}
