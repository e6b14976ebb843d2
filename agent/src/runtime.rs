//! The runtime: services as containers, their exits, logs, limits and
//! usage, and reattaching to them after an agent restart.
//!
//! Life of a service: `spawn` prepares a snapshot and creates the container
//! under a lease (containerd's GC would otherwise collect the fresh
//! snapshot before the container references it), starts the log pump,
//! creates and starts the task. containerd's event stream reports the exit;
//! the agent then reads the OOM counter, deletes the task (which makes the
//! shim flush all output into the pipes), finishes the log, and records the
//! exit on the container's labels. `stop` signals, waits, and tears down in
//! the order that does not race the GC: task, snapshot, container.

use crate::cgroup::{ContainerCgroup, Usage};
use crate::containerd::{Containerd, RUNTIME, SNAPSHOTTER};
use crate::error::{Error, Result, StartError};
use crate::image::ImageStore;
use crate::logs::{Fifos, LogChunk, LogConfig, LogProgress, LogPump};
use crate::network::{NetSettings, Network};
use crate::node::{Advertise, NodeMonitor, NodeStats, Reserve};
use crate::pull::RegistryConfig;
use crate::spec::{
    LABEL_EXECUTION, LABEL_EXIT_CODE, LABEL_INSTANCE, LABEL_OOM, LABEL_SERVICE, NetworkMode, Ownership, ServiceSpec,
    build_spec, linux_resources, validate_id,
};
use containerd_client::events::{TaskExit, TaskOom};
use containerd_client::services::v1::container::Runtime as CtdRuntime;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, ListContainersRequest, PublishRequest, StartRequest,
    SubscribeRequest, UpdateContainerRequest, UpdateTaskRequest, WaitRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use futures::StreamExt;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use zoe_common::resources::Millicores;

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// containerd's event type URLs carry no leading `/` (unlike prost's).
const TYPE_TASK_EXIT: &str = "containerd.events.TaskExit";
const TYPE_TASK_OOM: &str = "containerd.events.TaskOOM";
const PROBE_TOPIC: &str = "/zoe/probe";
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

/// Configuration of a runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub socket: PathBuf,
    /// containerd namespace of all the agent's objects.
    pub namespace: String,
    /// Logs, FIFOs and temp files live here.
    pub data_dir: PathBuf,
    /// Parent cgroup of all containers.
    pub parent_cgroup: String,
    /// Limit the parent cgroup to the node's capacity (total − reserve).
    pub limit_parent_cgroup: bool,
    pub logs: LogConfig,
    pub registry: RegistryConfig,
    pub reserve: Reserve,
    /// Capacity reported instead of the machine's (see [`Advertise`]).
    pub advertise: Advertise,
    /// Bridged containers' networking.
    pub network: NetSettings,
}

impl RuntimeConfig {
    pub fn new(socket: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            socket: socket.into(),
            namespace: "zoe".into(),
            data_dir: data_dir.into(),
            parent_cgroup: "zoe".into(),
            limit_parent_cgroup: true,
            logs: LogConfig::default(),
            registry: RegistryConfig::default(),
            reserve: Reserve::default(),
            advertise: Advertise::default(),
            network: NetSettings::default(),
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ExitStatus {
    /// Exit code (128 + signal when killed); `None` when the container ended
    /// while no agent watched and containerd no longer knows.
    pub code: Option<u32>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.oom_killed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ServiceState {
    /// Container created, task starting.
    Starting,
    Running {
        pid: u32,
    },
    Exited(ExitStatus),
}

/// A service as the agent knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStatus {
    pub id: String,
    pub image: String,
    pub owner: Ownership,
    pub state: ServiceState,
}

/// A container in the agent's namespace that carries no zoe labels: the
/// coordinator decides what to do with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Orphan {
    pub id: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
}

struct Service {
    id: String,
    image: String,
    owner: Ownership,
    cgroup: ContainerCgroup,
    state: watch::Sender<ServiceState>,
    saw_oom: AtomicBool,
    exit_handled: AtomicBool,
    /// The exit handler deleted the task (teardown can skip that call).
    task_deleted: AtomicBool,
    log_dir: PathBuf,
    log_progress: watch::Sender<LogProgress>,
    pump: tokio::sync::Mutex<Option<LogPump>>,
}

struct Inner {
    ctd: Containerd,
    cfg: RuntimeConfig,
    images: ImageStore,
    net: Network,
    services: Mutex<HashMap<String, Arc<Service>>>,
    node: Mutex<NodeMonitor>,
    /// The most CPU a container's quota may name (`spec::cfs_quota`).
    cpu_cap: Millicores,
    /// Idmapped views of the image layers, for user namespaces.
    layer_views: Arc<crate::idmap::LayerViews>,
    events_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The agent's runtime over one containerd namespace. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.events_task.lock().expect("lock").take() {
            t.abort();
        }
    }
}

fn labels_of(owner: &Ownership, extra: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    l.insert(LABEL_EXECUTION.into(), owner.execution_id.clone());
    l.insert(LABEL_SERVICE.into(), owner.service_id.clone());
    l.insert(LABEL_INSTANCE.into(), owner.instance_name.clone());
    l
}

impl Runtime {
    /// Connects, creates the parent cgroup, subscribes to events and
    /// reattaches to the containers a previous agent left running.
    pub async fn connect(cfg: RuntimeConfig) -> Result<Runtime> {
        let ctd = Containerd::connect(&cfg.socket, &cfg.namespace).await?;
        // Logs, uploads and records of every tenant's containers: the
        // agent's alone, whatever the umask said (bind-mounted files stay
        // readable inside their container: a mount does not walk the parents).
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&cfg.data_dir)
            .and_then(|()| std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(Error::io(format!("creating {}", cfg.data_dir.display())))?;
        let node = NodeMonitor::new(cfg.reserve, cfg.advertise)?;
        let cpu_cap = if cfg.limit_parent_cgroup {
            let (cpu, mem) = node.machine_capacity();
            crate::cgroup::ensure_parent(&cfg.parent_cgroup, Some(cpu), Some(mem))?;
            cpu
        } else {
            crate::cgroup::ensure_parent(&cfg.parent_cgroup, None, None)?;
            node.host_cpus()
        };
        let images = ImageStore::new(ctd.clone(), cfg.data_dir.join("tmp"), cfg.registry.clone());
        let net = Network::new(cfg.network.clone(), &cfg.data_dir, &cfg.namespace);
        let layer_views = crate::idmap::LayerViews::new(cfg.data_dir.join("layers"))
            .map_err(Error::io(format!("creating {}", cfg.data_dir.join("layers").display())))?;
        let inner = Arc::new(Inner {
            ctd,
            cfg,
            images,
            net,
            services: Mutex::new(HashMap::new()),
            node: Mutex::new(node),
            cpu_cap,
            layer_views: Arc::new(layer_views),
            events_task: Mutex::new(None),
        });
        let rt = Runtime { inner };
        // Subscribe before touching any task, so no exit can be missed.
        let stream = rt.subscribe().await?;
        let weak = Arc::downgrade(&rt.inner);
        let task = tokio::spawn(event_loop(weak, stream));
        *rt.inner.events_task.lock().expect("lock") = Some(task);
        rt.reattach().await?;
        // Networking of containers that are gone (killed agent, host
        // reboot) is released; running ones keep theirs.
        let alive =
            rt.services().into_iter().filter(|s| !matches!(s.state, ServiceState::Exited(_))).map(|s| s.id).collect();
        rt.inner.net.reclaim(&alive).await;
        Ok(rt)
    }

    /// Stops watching: events are no longer handled and log pipes are left
    /// to the next agent. Containers keep running; a new runtime on the
    /// same namespace reattaches to them. What an agent does on SIGTERM.
    pub async fn shutdown(&self) {
        if let Some(t) = self.inner.events_task.lock().expect("lock").take() {
            t.abort();
        }
        let services: Vec<Arc<Service>> = self.inner.services.lock().expect("lock").drain().map(|(_, s)| s).collect();
        for s in services {
            if let Some(p) = s.pump.lock().await.take() {
                p.abandon();
            }
        }
    }

    pub fn containerd(&self) -> &Containerd {
        &self.inner.ctd
    }

    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// The node's container network (bridged containers).
    pub fn network(&self) -> &Network {
        &self.inner.net
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.cfg
    }

    fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{}-{}", self.inner.cfg.parent_cgroup, self.inner.cfg.namespace, id)
    }

    fn log_dir(&self, id: &str) -> PathBuf {
        self.inner.cfg.data_dir.join("logs").join(&self.inner.cfg.namespace).join(id)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.inner.cfg.data_dir.join("run").join(&self.inner.cfg.namespace).join(id)
    }

    /// Subscribes to this namespace's events and makes sure the
    /// subscription is live: containerd sends no response headers until
    /// the first event, so the agent publishes probe events until one comes
    /// back through the stream.
    async fn subscribe(&self) -> Result<tonic::Streaming<containerd_client::types::Envelope>> {
        let ctd = self.inner.ctd.clone();
        let filter = format!("namespace=={}", ctd.namespace());
        let mut client = ctd.events();
        let sub = client.subscribe(SubscribeRequest { filters: vec![filter] });
        tokio::pin!(sub);
        let probe = || async {
            let ev = prost_types::Any { type_url: "zoe.Probe".into(), value: Vec::new() };
            ctd.events()
                .publish(ctd.rq(PublishRequest { topic: PROBE_TOPIC.into(), event: Some(ev) }))
                .await
                .map_err(Error::ctd("publish probe event"))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            tokio::select! {
                r = &mut sub => break r.map_err(Error::ctd("subscribe to events"))?.into_inner(),
                _ = tokio::time::sleep(Duration::from_millis(25)) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(Error::Timeout { what: "the event subscription".into(), secs: 30 });
                    }
                    probe().await?;
                }
            }
        };
        loop {
            tokio::select! {
                m = stream.next() => match m {
                    Some(Ok(env)) if env.topic == PROBE_TOPIC => return Ok(stream),
                    Some(Ok(_)) => {}
                    Some(Err(s)) => return Err(Error::Containerd { op: "event stream", status: s }),
                    None => return Err(Error::EventsLost),
                },
                _ = tokio::time::sleep(Duration::from_millis(25)) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(Error::Timeout { what: "the event subscription".into(), secs: 30 });
                    }
                    probe().await?;
                }
            }
        }
    }

    fn service(&self, id: &str) -> Option<Arc<Service>> {
        self.inner.services.lock().expect("lock").get(id).cloned()
    }

    fn new_service(&self, id: &str, image: &str, owner: Ownership) -> Arc<Service> {
        let (state, _) = watch::channel(ServiceState::Starting);
        let (log_progress, _) = watch::channel(LogProgress::default());
        Arc::new(Service {
            id: id.to_string(),
            image: image.to_string(),
            owner,
            cgroup: ContainerCgroup::new(&self.cgroups_path(id)),
            state,
            saw_oom: AtomicBool::new(false),
            exit_handled: AtomicBool::new(false),
            task_deleted: AtomicBool::new(false),
            log_dir: self.log_dir(id),
            log_progress,
            pump: tokio::sync::Mutex::new(None),
        })
    }

    /// Creates and starts a service. Errors say whether a retry may help.
    pub async fn spawn(&self, spec: &ServiceSpec) -> Result<ServiceStatus, StartError> {
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
    async fn create_and_start(
        &self,
        spec: &ServiceSpec,
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

    async fn container_exists(&self, id: &str) -> Result<bool> {
        let ctd = &self.inner.ctd;
        match ctd.containers().get(ctd.rq(GetContainerRequest { id: id.to_string() })).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::Containerd { op: "get container", status: s }),
        }
    }

    async fn remove_snapshot(&self, key: &str) -> Result<()> {
        let ctd = &self.inner.ctd;
        let req = RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.into(), key: key.to_string() };
        match ctd.snapshots().remove(ctd.rq(req)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(Error::Containerd { op: "remove snapshot", status: s }),
        }
    }

    async fn delete_task(&self, id: &str) -> Result<Option<u32>> {
        let ctd = &self.inner.ctd;
        match ctd.tasks().delete(ctd.rq(DeleteTaskRequest { container_id: id.to_string() })).await {
            Ok(r) => Ok(Some(r.into_inner().exit_status)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::Containerd { op: "delete task", status: s }),
        }
    }

    /// Task, snapshot, container: the Go client's order. The reverse races
    /// the GC ("snapshot does not exist").
    async fn teardown(&self, id: &str, task_gone: bool) -> Result<()> {
        if !task_gone {
            self.delete_task(id).await?;
        }
        self.remove_snapshot(id).await?;
        let ctd = &self.inner.ctd;
        match ctd.containers().delete(ctd.rq(DeleteContainerRequest { id: id.to_string() })).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(Error::Containerd { op: "delete container", status: s }),
        }
        let _ = std::fs::remove_dir_all(self.run_dir(id));
        // DEL always runs on stop; a failure is logged and the next agent
        // start reclaims what is left.
        if let Err(e) = self.inner.net.detach(id).await {
            tracing::warn!(service = id, error = %e, "releasing the container's network failed");
        }
        // runc leaves nothing behind for a deleted task, but a task that
        // never started may leave an empty cgroup; removing it is cheap.
        Ok(())
    }

    /// What happens when containerd reports the init process's exit.
    async fn handle_exit(&self, svc: Arc<Service>, exit_status: Option<u32>) {
        if svc.exit_handled.swap(true, Ordering::SeqCst) {
            return;
        }
        // Read the OOM counter while the cgroup still exists (task delete
        // removes it); the TaskOOM event may arrive after TaskExit.
        let oom = svc.saw_oom.load(Ordering::SeqCst) || svc.cgroup.oom_kills() > 0;
        let t0 = std::time::Instant::now();
        // The exit is recorded on the container before the task goes: an
        // agent killed in between restarts to a container without a task
        // and with its exit, never to one whose ending it cannot tell from
        // a start that never happened (see `reattach`).
        if let Some(code) = exit_status {
            self.record_exit(&svc.id, ExitStatus { code: Some(code), oom_killed: oom }).await;
        }
        let deleted = self.delete_task(&svc.id).await;
        let t_delete = t0.elapsed();
        svc.task_deleted.store(deleted.is_ok(), Ordering::SeqCst);
        let code = match deleted {
            Ok(Some(c)) => Some(c),
            Ok(None) => exit_status,
            Err(e) => {
                tracing::warn!(service = %svc.id, error = %e, "deleting the exited task failed");
                exit_status
            }
        }
        .or(exit_status);
        let status = ExitStatus { code, oom_killed: oom };
        // An exited container needs no address: release it now rather than
        // when the leader gets round to removing the container.
        if let Err(e) = self.inner.net.detach(&svc.id).await {
            tracing::warn!(service = %svc.id, error = %e, "releasing the container's network failed");
        }
        let pump = svc.pump.lock().await.take();
        // Independent: drain the log while containerd records the exit.
        let finish = async {
            if let Some(p) = pump {
                p.finish().await;
            }
        };
        let record = async {
            if exit_status.is_none() {
                self.record_exit(&svc.id, status).await;
            }
        };
        tokio::join!(finish, record);
        tracing::info!(
            service = %svc.id,
            code = ?code,
            oom,
            task_delete_ms = t_delete.as_secs_f64() * 1e3,
            logs_and_record_ms = (t0.elapsed() - t_delete).as_secs_f64() * 1e3,
            "exited"
        );
        svc.state.send_replace(ServiceState::Exited(status));
    }

    /// Keeps the exit on the container record, for a restarted agent.
    async fn record_exit(&self, id: &str, status: ExitStatus) {
        let ctd = &self.inner.ctd;
        let mut labels = HashMap::new();
        if let Some(c) = status.code {
            labels.insert(LABEL_EXIT_CODE.to_string(), c.to_string());
        }
        labels.insert(LABEL_OOM.to_string(), status.oom_killed.to_string());
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let container = Container { id: id.to_string(), labels, ..Default::default() };
        let req =
            UpdateContainerRequest { container: Some(container), update_mask: Some(prost_types::FieldMask { paths }) };
        if let Err(s) = ctd.containers().update(ctd.rq(req)).await
            && s.code() != tonic::Code::NotFound
        {
            tracing::warn!(service = id, error = %s, "could not record the exit on the container");
        }
    }

    fn status_of(&self, svc: &Service) -> ServiceStatus {
        ServiceStatus {
            id: svc.id.clone(),
            image: svc.image.clone(),
            owner: svc.owner.clone(),
            state: *svc.state.borrow(),
        }
    }

    pub fn status(&self, id: &str) -> Result<ServiceStatus> {
        self.service(id).map(|s| self.status_of(&s)).ok_or_else(|| Error::ServiceNotFound(id.to_string()))
    }

    /// All services the agent knows, sorted by id.
    pub fn services(&self) -> Vec<ServiceStatus> {
        let map = self.inner.services.lock().expect("lock");
        let mut v: Vec<_> = map.values().map(|s| self.status_of(s)).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Waits until the service has exited.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let svc = self.service(id).ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        let mut rx = svc.state.subscribe();
        let s = rx.wait_for(|s| matches!(s, ServiceState::Exited(_))).await.map_err(|_| Error::EventsLost)?;
        match *s {
            ServiceState::Exited(e) => Ok(e),
            _ => unreachable!("wait_for returned a non-exited state"),
        }
    }

    async fn wait_timeout(&self, svc: &Service, t: Duration) -> Option<ExitStatus> {
        let mut rx = svc.state.subscribe();
        match tokio::time::timeout(t, rx.wait_for(|s| matches!(s, ServiceState::Exited(_)))).await {
            Ok(Ok(s)) => match *s {
                ServiceState::Exited(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let ctd = &self.inner.ctd;
        let req = KillRequest { container_id: id.to_string(), exec_id: String::new(), signal, all };
        match ctd.tasks().kill(ctd.rq(req)).await {
            Ok(_) => Ok(()),
            // Already gone: what we wanted.
            Err(s) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(Error::Containerd { op: "kill task", status: s }),
        }
    }

    /// Stops a service and removes its container: SIGTERM to its main
    /// process, `grace` to exit, then SIGKILL to every process in it; then
    /// task, snapshot and container are deleted. Stopping a service that
    /// is already gone is success. Logs stay on disk. Returns how it ended
    /// when the agent saw it end.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<Option<ExitStatus>> {
        let Some(svc) = self.service(id) else {
            // Not ours (an orphan) or already stopped: make sure nothing is
            // left. Kill is asynchronous; the task can only be deleted once
            // it has stopped, so wait for it (Tasks.Wait returns at once for
            // a stopped task and NotFound for none).
            self.kill(id, SIGKILL, true).await?;
            let ctd = &self.inner.ctd;
            let mut tasks = ctd.tasks();
            let wait = tasks.wait(ctd.rq(WaitRequest { container_id: id.to_string(), exec_id: String::new() }));
            match tokio::time::timeout(Duration::from_secs(30), wait).await {
                Ok(Ok(_)) => {}
                Ok(Err(s)) if s.code() == tonic::Code::NotFound => {}
                Ok(Err(s)) => return Err(Error::Containerd { op: "wait task", status: s }),
                Err(_) => return Err(Error::Timeout { what: format!("{id} to die after SIGKILL"), secs: 30 }),
            }
            self.teardown(id, false).await?;
            return Ok(None);
        };
        let mut exit = match *svc.state.borrow() {
            ServiceState::Exited(e) => Some(e),
            _ => None,
        };
        if exit.is_none() {
            self.kill(id, SIGTERM, false).await?;
            exit = self.wait_timeout(&svc, grace).await;
        }
        if exit.is_none() {
            tracing::info!(service = id, grace_ms = grace.as_millis() as u64, "grace period over; killing");
            self.kill(id, SIGKILL, true).await?;
            exit = self.wait_timeout(&svc, Duration::from_secs(30)).await;
            if exit.is_none() {
                return Err(Error::Timeout { what: format!("{id} to die after SIGKILL"), secs: 30 });
            }
        }
        // The exit handler deleted the task before reporting the exit.
        self.teardown(id, svc.task_deleted.load(Ordering::SeqCst)).await?;
        self.inner.services.lock().expect("lock").remove(id);
        Ok(exit)
    }

    /// Changes the CPU and memory limits of a running service (Zoe's
    /// dynamic core sharing) and checks the cgroup took them.
    pub async fn update(&self, id: &str, cpu: Option<Millicores>, memory_bytes: Option<u64>) -> Result<()> {
        let svc = self.service(id).ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        if !matches!(*svc.state.borrow(), ServiceState::Running { .. }) {
            return Err(Error::NotRunning(id.to_string()));
        }
        let res = linux_resources(
            &crate::spec::Resources { cpu, memory_bytes, pids: None, shm_bytes: None },
            false,
            self.inner.cpu_cap,
        )?;
        let value = serde_json::to_vec(&res)
            .map_err(|e| Error::InvalidSpec { field: "resources".into(), reason: e.to_string() })?;
        let ctd = &self.inner.ctd;
        let req = UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(prost_types::Any { type_url: RESOURCES_TYPE_URL.into(), value }),
            annotations: HashMap::new(),
        };
        ctd.tasks().update(ctd.rq(req)).await.map_err(Error::ctd("update task"))?;
        let got = svc.cgroup.limits()?;
        if let Some(c) = cpu {
            let want = crate::spec::cfs_quota(c, self.inner.cpu_cap);
            if got.cpu_quota_us != Some(want) {
                return Err(Error::UpdateNotApplied {
                    id: id.to_string(),
                    file: "cpu quota".into(),
                    actual: format!("{:?}", got.cpu_quota_us),
                    wanted: want.to_string(),
                });
            }
        }
        if let Some(m) = memory_bytes {
            // The kernel rounds limits down to whole pages.
            let page = 4096;
            if got.memory_limit_bytes != Some(m / page * page) {
                return Err(Error::UpdateNotApplied {
                    id: id.to_string(),
                    file: "memory limit".into(),
                    actual: format!("{:?}", got.memory_limit_bytes),
                    wanted: m.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Limits of a service as its cgroup has them now.
    pub fn limits(&self, id: &str) -> Result<crate::cgroup::CgroupLimits> {
        let svc = self.service(id).ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        svc.cgroup.limits()
    }

    /// CPU and memory use of a running service, from its cgroup.
    pub fn usage(&self, id: &str) -> Result<Usage> {
        let svc = self.service(id).ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        if !svc.cgroup.exists() {
            return Err(Error::NotRunning(id.to_string()));
        }
        svc.cgroup.usage()
    }

    /// Node resources and capacity.
    pub fn node_stats(&self) -> NodeStats {
        self.inner.node.lock().expect("lock").sample()
    }

    /// Reads a service's log from a logical offset (see [`crate::logs`]).
    pub async fn logs(&self, id: &str, from: u64, max: usize) -> Result<LogChunk> {
        let dir = self.log_dir(id);
        if !dir.exists() {
            return Err(Error::ServiceNotFound(id.to_string()));
        }
        tokio::task::spawn_blocking(move || crate::logs::read_from(&dir, from, max))
            .await
            .map_err(|e| Error::Host(format!("log reader: {e}")))?
    }

    /// Follows a service's log from an offset, `tail -f` style; the stream
    /// ends after the service exited and everything was read.
    pub fn follow_logs(&self, id: &str, from: u64) -> Result<futures::stream::BoxStream<'static, Result<LogChunk>>> {
        let dir = self.log_dir(id);
        let progress = self.service(id).map(|s| s.log_progress.subscribe());
        if progress.is_none() && !dir.exists() {
            return Err(Error::ServiceNotFound(id.to_string()));
        }
        Ok(crate::logs::follow(dir, from, progress))
    }

    /// Rebuilds the table of services from containerd: zoe-labelled
    /// containers become services again (running ones keep running; their
    /// logs are picked up again), exits that happened meanwhile are
    /// collected. Nothing is restarted.
    async fn reattach(&self) -> Result<()> {
        let ctd = &self.inner.ctd;
        let containers = self.list_containers().await?;
        for c in containers {
            let Some(service_id) = c.labels.get(LABEL_SERVICE) else { continue };
            let owner = Ownership {
                execution_id: c.labels.get(LABEL_EXECUTION).cloned().unwrap_or_default(),
                service_id: service_id.clone(),
                instance_name: c.labels.get(LABEL_INSTANCE).cloned().unwrap_or_default(),
            };
            let svc = self.new_service(&c.id, &c.image, owner);
            self.inner.services.lock().expect("lock").insert(c.id.clone(), svc.clone());
            let task = ctd.tasks().get(ctd.rq(GetRequest { container_id: c.id.clone(), exec_id: String::new() })).await;
            let process = match task {
                Ok(r) => r.into_inner().process,
                Err(s) if s.code() == tonic::Code::NotFound => None,
                Err(s) => return Err(Error::Containerd { op: "get task", status: s }),
            };
            let recorded = c.labels.contains_key(LABEL_OOM);
            let never_started = match &process {
                Some(p) => p.status == TaskStatus::Created as i32,
                None => !recorded,
            };
            if never_started {
                // An agent died between creating the container and
                // starting its task: nothing of the service ever ran. Left
                // registered, it would pass for a start (or an exit with no
                // code); removed, the leader's repeated spawn creates it
                // again under the same id, and it runs once.
                tracing::info!(service = %c.id, "removing a container whose start never happened");
                self.inner.services.lock().expect("lock").remove(&c.id);
                if let Err(e) = self.stop(&c.id, Duration::ZERO).await {
                    tracing::warn!(service = %c.id, error = %e, "removing a never-started container failed");
                }
                continue;
            }
            match process {
                Some(p) if p.status == TaskStatus::Stopped as i32 => {
                    self.attach_logs(&svc).await;
                    self.handle_exit(svc, Some(p.exit_status)).await;
                }
                Some(p) => {
                    self.attach_logs(&svc).await;
                    svc.state.send_if_modified(|s| {
                        if *s == ServiceState::Starting {
                            *s = ServiceState::Running { pid: p.pid };
                            true
                        } else {
                            false
                        }
                    });
                }
                None => {
                    svc.exit_handled.store(true, Ordering::SeqCst);
                    let code = c.labels.get(LABEL_EXIT_CODE).and_then(|v| v.parse().ok());
                    let oom = c.labels.get(LABEL_OOM).is_some_and(|v| v == "true");
                    svc.state.send_replace(ServiceState::Exited(ExitStatus { code, oom_killed: oom }));
                }
            }
        }
        Ok(())
    }

    async fn attach_logs(&self, svc: &Arc<Service>) {
        let run = self.run_dir(&svc.id);
        let fifos = Fifos { stdout: run.join("stdout"), stderr: run.join("stderr") };
        if !fifos.stdout.exists() || !fifos.stderr.exists() {
            tracing::warn!(service = %svc.id, "log pipes are gone; its output is lost until it exits");
            return;
        }
        match LogPump::start(&fifos, &svc.log_dir, self.inner.cfg.logs, svc.log_progress.clone()).await {
            Ok(p) => *svc.pump.lock().await = Some(p),
            Err(e) => tracing::warn!(service = %svc.id, error = %e, "could not reopen the log pipes"),
        }
    }

    /// Every container in the agent's namespace, zoe's or not.
    async fn list_containers(&self) -> Result<Vec<containerd_client::services::v1::Container>> {
        let ctd = &self.inner.ctd;
        Ok(ctd
            .containers()
            .list(ctd.rq(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(Error::ctd("list containers"))?
            .into_inner()
            .containers)
    }

    /// Containers in the namespace without zoe's labels.
    pub async fn orphans(&self) -> Result<Vec<Orphan>> {
        let ctd = &self.inner.ctd;
        let containers = self.list_containers().await?;
        let mut out = Vec::new();
        for c in containers {
            if c.labels.contains_key(LABEL_SERVICE) {
                continue;
            }
            let running = match ctd
                .tasks()
                .get(ctd.rq(GetRequest { container_id: c.id.clone(), exec_id: String::new() }))
                .await
            {
                Ok(r) => r.into_inner().process.is_some_and(|p| p.status == TaskStatus::Running as i32),
                Err(_) => false,
            };
            out.push(Orphan { id: c.id, image: c.image, labels: c.labels.into_iter().collect(), running });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Rechecks running services against containerd (after the event
    /// stream was lost, exits may have gone unseen).
    async fn reconcile(&self) {
        let running: Vec<Arc<Service>> = self
            .inner
            .services
            .lock()
            .expect("lock")
            .values()
            .filter(|s| !matches!(*s.state.borrow(), ServiceState::Exited(_)))
            .cloned()
            .collect();
        let ctd = &self.inner.ctd;
        for svc in running {
            let r = ctd.tasks().get(ctd.rq(GetRequest { container_id: svc.id.clone(), exec_id: String::new() })).await;
            match r {
                Ok(r) => {
                    if let Some(p) = r.into_inner().process
                        && p.status == TaskStatus::Stopped as i32
                    {
                        let rt = self.clone();
                        tokio::spawn(async move { rt.handle_exit(svc, Some(p.exit_status)).await });
                    }
                }
                Err(s) if s.code() == tonic::Code::NotFound => {
                    let rt = self.clone();
                    tokio::spawn(async move { rt.handle_exit(svc, None).await });
                }
                Err(_) => {}
            }
        }
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

/// Dispatches task exits and OOMs to services. Holds only a weak reference
/// so that dropping the last `Runtime` ends it.
async fn event_loop(weak: std::sync::Weak<Inner>, mut stream: tonic::Streaming<containerd_client::types::Envelope>) {
    loop {
        while let Some(msg) = stream.next().await {
            let Some(inner) = weak.upgrade() else { return };
            let rt = Runtime { inner };
            let env = match msg {
                Ok(e) => e,
                Err(s) => {
                    tracing::warn!(error = %s, "event stream error");
                    break;
                }
            };
            let Some(ev) = env.event else { continue };
            match ev.type_url.trim_start_matches('/') {
                TYPE_TASK_EXIT => {
                    let Ok(e) = TaskExit::decode(ev.value.as_slice()) else { continue };
                    // Exits of exec'd processes are not the service's.
                    if !e.id.is_empty() && e.id != e.container_id {
                        continue;
                    }
                    if let Some(svc) = rt.service(&e.container_id) {
                        tokio::spawn(async move { rt.handle_exit(svc, Some(e.exit_status)).await });
                    }
                }
                TYPE_TASK_OOM => {
                    if let Ok(e) = TaskOom::decode(ev.value.as_slice())
                        && let Some(svc) = rt.service(&e.container_id)
                    {
                        svc.saw_oom.store(true, Ordering::SeqCst);
                    }
                }
                _ => {}
            }
        }
        // The stream ended (containerd restarted?): subscribe again, then
        // look for exits missed in between.
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let rt = Runtime { inner };
            match rt.subscribe().await {
                Ok(s) => {
                    stream = s;
                    rt.reconcile().await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resubscribing to events failed; retrying");
                    drop(rt);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
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

/// Path helper for tests and tools: where a runtime keeps a service's log.
pub fn log_dir(data_dir: &Path, namespace: &str, id: &str) -> PathBuf {
    data_dir.join("logs").join(namespace).join(id)
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
