//! Starting a service: snapshot and container under a lease, the log pump,
//! then the task; and what the start reads from the image (its accounts).

use super::*;

impl Runtime {
    /// Creates and starts a service. Errors say whether a retry may help.
    pub async fn spawn(&self, spec: &ContainerSpec) -> Result<ServiceStatus, StartError> {
        let fail = |e: Error| StartError::new(&spec.id, e);
        validate_id(&spec.id).map_err(fail)?;
        if self.service(&spec.id).is_some() {
            return Err(fail(Error::ServiceExists(spec.id.clone())));
        }
        // The image lookup and the lease are independent round trips.
        let ctd = &self.inner.ctd;
        let (image, lease) =
            tokio::join!(self.inner.images.resolve(&spec.image), ctd.lease("run", Duration::from_secs(600)));
        // Ended (in the background) however this start goes.
        let lease = lease.map(|id| LeaseGuard(ctd.clone(), id));
        let image = image.map_err(fail)?;
        let lease = lease.map_err(fail)?;
        let cgroups_path = self.cgroups_path(&spec.id);
        // Validate everything before touching containerd; a named user is
        // resolved later, from the container's own root filesystem.
        let user = spec.user.clone().or_else(|| image.config.user.clone()).unwrap_or_default();
        let named_user = crate::spec::user_is_named(&user);
        let placeholder = named_user.then(|| crate::spec::AccountFiles {
            passwd: format!("{}:x:0:0::/:/bin/sh\n", user.split(':').next().unwrap_or_default()),
            group: format!("{}:x:0:\n", user.split(':').nth(1).unwrap_or_default()),
        });
        build_spec(spec, &image.config, &cgroups_path, placeholder.as_ref(), self.inner.cpu_cap).map_err(fail)?;

        // Register first: the exit event may come before start returns.
        let svc = self.new_service(&spec.id, &image.name, spec.owner.clone());
        {
            let mut map = self.inner.services.lock().expect("lock");
            if map.contains_key(&spec.id) {
                return Err(fail(Error::ServiceExists(spec.id.clone())));
            }
            map.insert(spec.id.clone(), svc.clone());
        }
        match self
            .create_and_start(spec, &lease.1, &image.top_chain_id, &image.name, &image.config, named_user, &svc)
            .await
        {
            Ok(()) => Ok(self.status_of(&svc)),
            Err(e) => {
                tracing::warn!(service = %spec.id, error = %e, "start failed; cleaning up");
                let pump = svc.pump.lock().await.take();
                if matches!(e, Error::ServiceExists(_)) {
                    // Someone else's container: leave it and its pipes alone.
                    if let Some(p) = pump {
                        p.abandon();
                    }
                } else {
                    self.teardown(&svc.id, false).await.ok();
                    if let Some(p) = pump {
                        p.finish().await;
                    }
                }
                self.inner.services.lock().expect("lock").remove(&spec.id);
                Err(fail(e))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_and_start(
        &self,
        spec: &ContainerSpec,
        lease: &str,
        parent: &str,
        image: &str,
        image_config: &crate::image::ImageConfig,
        named_user: bool,
        svc: &Arc<Service>,
    ) -> Result<()> {
        let ctd = &self.inner.ctd;
        let id = &spec.id;
        // The lease holds the fresh snapshot until the container refers to
        // it: without it, a GC run triggered by any earlier deletion may
        // collect the snapshot in between (measured: fails within 100 runs).
        let t0 = std::time::Instant::now();
        let created = async {
            let prepare = PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.clone(),
                parent: parent.to_string(),
                labels: HashMap::new(),
            };
            let mounts = match ctd.snapshots().prepare(ctd.rq_leased(prepare.clone(), lease)).await {
                Ok(r) => r.into_inner().mounts,
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    if self.container_exists(id).await? {
                        return Err(Error::ServiceExists(id.clone()));
                    }
                    // Left over by a start that died half-way.
                    self.remove_snapshot(id).await?;
                    ctd.snapshots()
                        .prepare(ctd.rq_leased(prepare, lease))
                        .await
                        .map_err(Error::ctd("prepare snapshot"))?
                        .into_inner()
                        .mounts
                }
                Err(s) => return Err(Error::Containerd { op: "prepare snapshot", status: s }),
            };
            let mounts = match spec.user_namespace {
                None => mounts,
                Some(m) => {
                    let views = self.inner.layer_views.clone();
                    let remapped = tokio::task::spawn_blocking(move || {
                        let mut mounts = mounts;
                        crate::idmap::remap_mounts(&mut mounts, m, &views).map(|()| mounts)
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                    match remapped {
                        Ok(m) => m,
                        Err(e) => {
                            self.remove_snapshot(id).await.ok();
                            return Err(Error::io("mapping the container's ids")(e));
                        }
                    }
                }
            };
            let accounts = if named_user {
                // File reads: off the async workers.
                let m = mounts.clone();
                Some(tokio::task::spawn_blocking(move || read_accounts(&m)).await.unwrap_or_default())
            } else {
                None
            };
            let oci = build_spec(spec, image_config, &self.cgroups_path(id), accounts.as_ref(), self.inner.cpu_cap)
                .and_then(|mut o| {
                    if matches!(spec.network, NetworkMode::Bridge { .. }) {
                        crate::spec::join_network(&mut o, &self.inner.net.paths(id))?;
                    }
                    Ok(o)
                });
            let oci = match oci {
                Ok(o) => o,
                Err(e) => {
                    self.remove_snapshot(id).await.ok();
                    return Err(e);
                }
            };
            let spec_json = serde_json::to_vec(&oci)
                .map_err(|e| Error::InvalidSpec { field: "spec".into(), reason: e.to_string() })?;
            let container = Container {
                id: id.clone(),
                labels: labels_of(&spec.owner, &spec.labels),
                image: image.to_string(),
                runtime: Some(CtdRuntime { name: RUNTIME.into(), options: None }),
                spec: Some(prost_types::Any { type_url: SPEC_TYPE_URL.into(), value: spec_json }),
                snapshotter: SNAPSHOTTER.into(),
                snapshot_key: id.clone(),
                ..Default::default()
            };
            match ctd
                .containers()
                .create(ctd.rq_leased(CreateContainerRequest { container: Some(container) }, lease))
                .await
            {
                Ok(_) => Ok(mounts),
                Err(s) if s.code() == tonic::Code::AlreadyExists => Err(Error::ServiceExists(id.clone())),
                Err(s) => {
                    self.remove_snapshot(id).await.ok();
                    Err(Error::Containerd { op: "create container", status: s })
                }
            }
        };
        // Local pipe set-up overlaps the containerd round trips.
        let pipes = async {
            let fifos = crate::logs::make_fifos(&self.run_dir(id))?;
            let pump = LogPump::start(&fifos, &svc.log_dir, self.inner.cfg.logs, svc.log_progress.clone()).await?;
            *svc.pump.lock().await = Some(pump);
            Ok::<_, Error>(fifos)
        };
        // The namespace and address, also independent of the rest: the
        // spec names the namespace by its path, which is known up front.
        let net = async {
            let NetworkMode::Bridge { ports } = &spec.network else { return Ok(()) };
            let owner = &spec.owner;
            let mut names = Vec::new();
            if !owner.instance_name.is_empty() {
                names.push(owner.instance_name.clone());
                if let Ok(e) = owner.execution_id.parse::<u64>() {
                    names.push(zoe_common::zapp::template::dns_name(&owner.instance_name, e));
                }
            }
            let who = crate::network::Identity { execution_id: owner.execution_id.clone(), names };
            self.inner.net.attach(id, who, ports).await.map(|_| ()).map_err(Error::from)
        };
        let (created, fifos, net) = tokio::join!(created, pipes, net);
        let mounts = created?;
        let fifos = fifos?;
        net?;

        let t_container = t0.elapsed();
        let create = CreateTaskRequest {
            container_id: id.clone(),
            rootfs: mounts,
            stdout: fifos.stdout.to_string_lossy().into_owned(),
            stderr: fifos.stderr.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let t_pump = t0.elapsed();
        ctd.tasks().create(ctd.rq(create)).await.map_err(Error::create_task)?;
        let t_task = t0.elapsed();
        let pid = ctd
            .tasks()
            .start(ctd.rq(StartRequest { container_id: id.clone(), exec_id: String::new() }))
            .await
            .map_err(Error::ctd("start task"))?
            .into_inner()
            .pid;
        // A fast process may already have exited: never go back from Exited.
        svc.state.send_if_modified(|s| {
            if *s == ServiceState::Starting {
                *s = ServiceState::Running { pid };
                true
            } else {
                false
            }
        });
        tracing::debug!(
            service = %id,
            pid,
            container_ms = t_container.as_secs_f64() * 1e3,
            pump_ms = (t_pump - t_container).as_secs_f64() * 1e3,
            task_create_ms = (t_task - t_pump).as_secs_f64() * 1e3,
            start_ms = (t0.elapsed() - t_task).as_secs_f64() * 1e3,
            "started"
        );
        Ok(())
    }
}

/// Ends a lease when dropped, in the background (the container holds its
/// snapshot by then, or the start failed and nothing needs keeping).
struct LeaseGuard(Containerd, String);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let ctd = self.0.clone();
        let id = std::mem::take(&mut self.1);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move { ctd.end_lease(&id).await });
        }
    }
}

/// Reads /etc/passwd and /etc/group of a container's root filesystem from
/// its snapshot mounts, without mounting: the overlay's upper dir first,
/// then the lower dirs from the top layer down.
fn read_accounts(mounts: &[containerd_client::types::Mount]) -> crate::spec::AccountFiles {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        if m.r#type == "bind" {
            dirs.push(PathBuf::from(&m.source));
        }
        for o in &m.options {
            if let Some(u) = o.strip_prefix("upperdir=") {
                dirs.insert(0, PathBuf::from(u));
            } else if let Some(l) = o.strip_prefix("lowerdir=") {
                dirs.extend(l.split(':').map(PathBuf::from));
            }
        }
    }
    let find = |name: &str| dirs.iter().find_map(|d| read_layer_file(d, name)).unwrap_or_default();
    crate::spec::AccountFiles { passwd: find("passwd"), group: find("group") }
}

/// Largest account file read from an image.
const MAX_ACCOUNT_FILE: u64 = 1024 * 1024;

/// `<layer>/etc/<name>` as the image holds it: a regular file, `etc` a real
/// directory, and no link followed on the host (an image's `/etc/passwd`
/// linking to `/etc/shadow` must not read the host's), at most
/// [`MAX_ACCOUNT_FILE`] bytes (nor `/dev/zero` fill memory), never blocking
/// on a FIFO. `None` when the layer does not hold it so.
fn read_layer_file(layer: &Path, name: &str) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::OpenOptionsExt;
    let etc = layer.join("etc");
    if !std::fs::symlink_metadata(&etc).ok()?.file_type().is_dir() {
        return None;
    }
    // Judged before it is opened: opening a device node an image carries
    // (a watchdog, a tty) acts on the host's device.
    let path = etc.join(name);
    let before = std::fs::symlink_metadata(&path).ok()?;
    if !before.file_type().is_file() {
        return None;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
        .ok()?;
    let after = f.metadata().ok()?;
    if !after.file_type().is_file() || (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return None;
    }
    let mut text = String::new();
    f.take(MAX_ACCOUNT_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::read_layer_file;

    #[test]
    fn account_files_are_read_inside_the_layer_only() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("host-shadow");
        std::fs::write(&secret, "root:$6$secret\n").unwrap();
        // A plain file is read.
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(plain.join("etc")).unwrap();
        std::fs::write(plain.join("etc/passwd"), "jovyan:x:1000:100::/home/jovyan:/bin/sh\n").unwrap();
        assert!(read_layer_file(&plain, "passwd").unwrap().starts_with("jovyan:"));
        // A link out of the layer, the file or its directory, is not followed.
        let linked = dir.path().join("linked");
        std::fs::create_dir_all(linked.join("etc")).unwrap();
        std::os::unix::fs::symlink(&secret, linked.join("etc/passwd")).unwrap();
        assert_eq!(read_layer_file(&linked, "passwd"), None);
        let etc_link = dir.path().join("etc-link");
        std::fs::create_dir_all(&etc_link).unwrap();
        std::os::unix::fs::symlink(dir.path().join("plain/etc"), etc_link.join("etc")).unwrap();
        assert_eq!(read_layer_file(&etc_link, "passwd"), None);
        // A FIFO does not block, and a huge file is cut at 1 MiB.
        let odd = dir.path().join("odd");
        std::fs::create_dir_all(odd.join("etc")).unwrap();
        let fifo = std::ffi::CString::new(odd.join("etc/passwd").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(read_layer_file(&odd, "passwd"), None);
        std::fs::write(odd.join("etc/group"), "g".repeat(3 << 20)).unwrap();
        assert_eq!(read_layer_file(&odd, "group").map(|t| t.len()), Some(1 << 20));
    }
}
