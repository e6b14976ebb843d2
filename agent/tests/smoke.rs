//! Connects to containerd over gRPC and reads its version.

use zoe_agent::Containerd;

#[tokio::test]
async fn containerd_answers_with_its_version() {
    let ctd = Containerd::connect(&zoe_testkit::containerd().socket, "zoe-smoke").await.unwrap();
    let v = ctd.version().await.unwrap();
    assert!(!v.version.is_empty(), "empty version: {v:?}");
}
