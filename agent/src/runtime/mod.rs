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

mod events;
mod observe;
mod reattach;
mod spawn;
mod stop;

use crate::cgroup::{ContainerCgroup, Usage};
use crate::containerd::{Containerd, RUNTIME, SNAPSHOTTER};
use crate::error::{Error, Result, StartError};
use crate::image::ImageStore;
use crate::logs::{Fifos, LogChunk, LogConfig, LogProgress, LogPump};
use crate::network::{NetSettings, Network};
use crate::node::{Advertise, NodeMonitor, NodeStats, Reserve};
use crate::pull::RegistryConfig;
use crate::spec::{
    ContainerSpec, LABEL_EXECUTION, LABEL_EXIT_CODE, LABEL_INSTANCE, LABEL_OOM, LABEL_SERVICE, NetworkMode, Ownership,
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
        let task = tokio::spawn(events::event_loop(weak, stream));
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
}

/// Path helper for tests and tools: where a runtime keeps a service's log.
pub fn log_dir(data_dir: &Path, namespace: &str, id: &str) -> PathBuf {
    data_dir.join("logs").join(namespace).join(id)
}
