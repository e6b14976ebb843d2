//! Shared set-up of the agent's integration tests: a runtime on the test
//! containerd in a namespace of its own, with the busybox image imported.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use zoe_agent::{ContainerSpec, Runtime, RuntimeConfig};
use zoe_testkit::BusyboxImage;

pub const IMAGE: &str = zoe_testkit::DEFAULT_REFERENCE;
/// Generous: the CI machine has two cores shared with the build.
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Env {
    pub rt: Runtime,
    pub ns: String,
    pub dir: tempfile::TempDir,
    /// Ids a retried start ran under (see `run`).
    retried: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

pub fn busybox() -> &'static BusyboxImage {
    static IMG: OnceLock<BusyboxImage> = OnceLock::new();
    IMG.get_or_init(|| BusyboxImage::build().expect("building the busybox image"))
}

/// The OCI archive of the test image, written once per process.
pub fn oci_archive() -> &'static PathBuf {
    static P: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &P.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("busybox-oci.tar");
        busybox().write_oci_archive(&p).unwrap();
        (d, p)
    })
    .1
}

pub fn config(ns: &str, dir: &std::path::Path) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(&zoe_testkit::containerd().socket, dir.join("data"));
    cfg.namespace = ns.to_string();
    cfg
}

/// A runtime in a fresh namespace, without images.
pub async fn bare(name: &str) -> Env {
    let ns = zoe_testkit::unique_namespace(name);
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::connect(config(&ns, dir.path())).await.expect("connecting the runtime");
    Env::new(rt, ns, dir)
}

/// A runtime in a fresh namespace with the busybox image imported.
pub async fn env(name: &str) -> Env {
    let e = bare(name).await;
    e.rt.images().import_archive(oci_archive(), None, None).await.expect("importing busybox");
    e
}

pub fn spec(id: &str, argv: &[&str]) -> ContainerSpec {
    ContainerSpec::running(id, IMAGE, argv, "42", "7")
}

impl Env {
    pub fn new(rt: Runtime, ns: String, dir: tempfile::TempDir) -> Env {
        Env { rt, ns, dir, retried: Default::default() }
    }

    pub async fn run(&self, spec: &ContainerSpec) -> zoe_agent::ExitStatus {
        // A retryable start failure is retried as the leader does: under a
        // new container id (a vanished shim can leave its bundle behind
        // under the old one), after tearing the failed attempt down.
        let mut id = spec.id.clone();
        if let Err(e) = self.rt.spawn(spec).await {
            assert!(e.is_retryable(), "spawn: {e}");
            eprintln!("retrying after a retryable start failure: {e}");
            let _ = self.rt.stop(&spec.id, std::time::Duration::ZERO).await;
            let retry = ContainerSpec { id: format!("{}-retry", spec.id), ..spec.clone() };
            self.rt.spawn(&retry).await.expect("spawn (retry)");
            self.retried.lock().unwrap().insert(spec.id.clone(), retry.id.clone());
            id = retry.id;
        }
        tokio::time::timeout(TIMEOUT, self.rt.wait(&id)).await.expect("exit in time").expect("wait")
    }

    /// The id a service asked for as `id` actually runs under.
    pub fn id(&self, id: &str) -> String {
        self.retried.lock().unwrap().get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    /// The whole log of a service.
    pub async fn log(&self, id: &str) -> String {
        let c = self.rt.logs(&self.id(id), 0, 1 << 20).await.expect("logs");
        String::from_utf8_lossy(&c.data).into_owned()
    }

    /// Follows the log until `needle` shows up (the service's own signal
    /// that it is ready; no sleeping).
    pub async fn wait_for_log(&self, id: &str, needle: &str) {
        use futures::StreamExt;
        let mut s = self.rt.follow_logs(id, 0).unwrap();
        let mut seen = String::new();
        let found = tokio::time::timeout(TIMEOUT, async {
            while let Some(c) = s.next().await {
                seen.push_str(&String::from_utf8_lossy(&c.unwrap().data));
                if seen.contains(needle) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "{needle:?} never appeared in the log of {id}: {seen:?}");
    }

    /// Stops every service, removes images, and deletes the namespace.
    pub async fn cleanup(self) {
        for s in self.rt.services() {
            self.rt.stop(&s.id, Duration::from_secs(1)).await.expect("stop during cleanup");
        }
        for o in self.rt.orphans().await.unwrap_or_default() {
            let _ = self.rt.stop(&o.id, Duration::ZERO).await;
        }
        for i in self.rt.images().list().await.unwrap_or_default() {
            let _ = self.rt.images().remove(&i.name).await;
        }
        let ctd = self.rt.containerd().clone();
        drop(self.rt);
        let req = containerd_client::services::v1::DeleteNamespaceRequest { name: self.ns.clone() };
        if let Err(e) = ctd.namespaces().delete(tonic::Request::new(req)).await {
            // Content the GC has not collected yet keeps a namespace busy;
            // it is harmless and goes with the test containerd.
            eprintln!("namespace {} not deleted: {}", self.ns, e.message());
        }
    }
}
