//! Images against a real containerd and a real local registry.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{bare, busybox, spec};
use zoe_agent::{Error, Phase, Progress, StartErrorKind};

#[tokio::test]
async fn both_archive_layouts_import_and_run() {
    let e = bare("import").await;
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("oci.tar");
    let docker = dir.path().join("docker.tar");
    busybox().write_oci_archive(&oci).unwrap();
    busybox().write_docker_archive(&docker).unwrap();

    let progress: Arc<Mutex<Vec<Progress>>> = Default::default();
    let p = progress.clone();
    let cb: zoe_agent::ProgressFn = Arc::new(move |x: &Progress| p.lock().unwrap().push(x.clone()));
    let got = e.rt.images().import_archive(&oci, None, Some(cb)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "zoe.local/busybox:1");
    assert_eq!(got[0].digest, busybox().manifest_digest());
    let last = progress.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.phase, Phase::Done);
    assert_eq!(last.done, last.total);

    // The docker-archive layout, under another name.
    let got = e.rt.images().import_archive(&docker, Some("zoe.local/busybox-docker:1"), None).await.unwrap();
    assert_eq!(got[0].name, "zoe.local/busybox-docker:1");
    // Same layers, so the same unpacked snapshot; a different (docker) manifest.
    assert_ne!(got[0].digest, busybox().manifest_digest());

    let list = e.rt.images().list().await.unwrap();
    let names: Vec<_> = list.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["zoe.local/busybox-docker:1", "zoe.local/busybox:1"]);
    assert!(list.iter().all(|i| i.size > busybox().layer_gz.len() as u64 / 2), "{list:?}");

    for (id, image) in [("oci", "zoe.local/busybox:1"), ("docker", "zoe.local/busybox-docker:1")] {
        let mut s = spec(id, &["sh", "-c", "echo hello from $0", id]);
        s.image = image.into();
        assert_eq!(e.run(&s).await.code, Some(0));
        assert_eq!(e.log(id).await, format!("hello from {id}\n"));
        e.rt.stop(id, Duration::ZERO).await.unwrap();
    }
    // Importing again is harmless.
    e.rt.images().import_archive(&oci, None, None).await.unwrap();

    e.rt.images().remove("zoe.local/busybox-docker:1").await.unwrap();
    e.rt.images().remove("zoe.local/busybox-docker:1").await.unwrap();
    assert!(!e.rt.images().exists("zoe.local/busybox-docker:1").await.unwrap());
    assert!(e.rt.images().exists("zoe.local/busybox:1").await.unwrap());
    e.cleanup().await;
}

#[tokio::test]
async fn pull_from_a_local_registry() {
    let registry = zoe_testkit::Registry::start().unwrap();
    let reference = registry.push(busybox(), "zoe/busybox", "1.0").unwrap();

    let ns = zoe_testkit::unique_namespace("pull");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = support::config(&ns, dir.path());
    cfg.registry.insecure = vec![registry.host()];
    let rt = zoe_agent::Runtime::connect(cfg).await.unwrap();
    let e = support::Env::new(rt, ns, dir);

    let progress: Arc<Mutex<Vec<Progress>>> = Default::default();
    let p = progress.clone();
    let cb: zoe_agent::ProgressFn = Arc::new(move |x: &Progress| p.lock().unwrap().push(x.clone()));
    let info = e.rt.images().pull(&reference, Some(cb)).await.unwrap();
    assert_eq!(info.name, reference);
    assert_eq!(info.digest, busybox().manifest_digest(), "the registry serves our manifest unchanged");
    let progress = progress.lock().unwrap().clone();
    let fetch: Vec<_> = progress.iter().filter(|p| p.phase == Phase::Fetching).collect();
    assert!(!fetch.is_empty());
    assert!(fetch.windows(2).all(|w| w[0].done <= w[1].done), "progress goes forward");
    assert_eq!(progress.last().unwrap().phase, Phase::Done);

    let mut s = spec("pulled", &["sh", "-c", "echo pulled"]);
    s.image = reference.clone();
    assert_eq!(e.run(&s).await.code, Some(0));
    assert_eq!(e.log("pulled").await, "pulled\n");
    assert!(e.rt.images().list().await.unwrap().iter().any(|i| i.name == reference));

    // A second pull finds everything in place.
    e.rt.images().pull(&reference, None).await.unwrap();
    // A missing tag is a registry error, not a crash.
    let missing = format!("{}/zoe/busybox:nope", registry.host());
    assert!(matches!(e.rt.images().pull(&missing, None).await, Err(Error::Registry { .. })));
    e.cleanup().await;
}

#[tokio::test]
async fn bad_and_missing_images_give_clear_errors() {
    let e = support::env("badimg").await;
    let mut s = spec("bad-ref", &["true"]);
    s.image = "Not A Reference!".into();
    let err = e.rt.spawn(&s).await.unwrap_err();
    assert_eq!(err.kind, StartErrorKind::Fatal);
    assert!(matches!(err.source, Error::BadReference { .. }), "{err}");

    let mut s = spec("missing", &["true"]);
    s.image = "zoe.local/not-there:1".into();
    let err = e.rt.spawn(&s).await.unwrap_err();
    assert_eq!(err.kind, StartErrorKind::Fatal);
    assert!(matches!(err.source, Error::ImageNotFound(_)), "{err}");
    assert!(err.to_string().contains("zoe.local/not-there:1"), "{err}");

    // A command that is not in the image is a fatal start error too, and
    // leaves nothing behind.
    let err = e.rt.spawn(&spec("noexec", &["/no/such/binary"])).await.unwrap_err();
    assert_eq!(err.kind, StartErrorKind::Fatal, "{err}");
    assert!(e.rt.services().is_empty());
    assert!(e.rt.orphans().await.unwrap().is_empty());
    // The id is free again.
    assert_eq!(e.run(&spec("noexec", &["true"])).await.code, Some(0));

    // Not an archive at all.
    let junk = e.dir.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tarball").unwrap();
    let err = e.rt.images().import_archive(&junk, None, None).await.unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err}");
    // Pulling from a registry that is not there is a (retryable) registry error.
    let err = e.rt.images().pull("127.0.0.1:1/zoe/x:1", None).await.unwrap_err();
    assert!(matches!(err, Error::Registry { .. }), "{err}");
    e.cleanup().await;
}
