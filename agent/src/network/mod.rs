//! Container networking on a node: every bridged container gets its own
//! network namespace and an address on the node's bridge, through the
//! standard CNI plugins; the node routes the other nodes' container
//! subnets through their addresses. See `docs/networking.md`.
//!
//! * [`netns`]: namespaces created and pinned by the agent itself;
//! * [`cni`]: plugin calls per the CNI spec (ADD/DEL/CHECK, JSON on stdin);
//! * [`route`]: host-gateway routes over rtnetlink;
//! * [`hosts`]: `/etc/hosts` with the execution's instances, rewritten in
//!   place when they change.
//!
//! State survives agent restarts: the plugins' configuration and result of
//! every attachment is kept under the agent's data directory (a DEL must
//! see what the ADD saw), host-local keeps its leases there too, and at
//! start [`Network::reclaim`] releases what belongs to no live container.

pub mod cni;
pub mod hosts;
pub mod netns;
pub mod route;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use zoe_common::proto::{HostEntry, NodeNetwork};

/// Name of the CNI network (and of host-local's lease directory).
pub const NETWORK_NAME: &str = "zoe";
/// Interface name inside containers.
pub const IFNAME: &str = "eth0";
/// How long a spawn waits for the leader's network configuration.
const CONFIG_WAIT: Duration = Duration::from_secs(10);

/// The `[network]` section of the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetSettings {
    /// Where the CNI plugins are (Debian: containernetworking-plugins).
    pub cni_path: PathBuf,
    /// Namespaces are pinned under `<netns_dir>/<containerd namespace>/`.
    pub netns_dir: PathBuf,
    /// The node's bridge.
    pub bridge: String,
}

impl Default for NetSettings {
    fn default() -> NetSettings {
        NetSettings { cni_path: "/usr/lib/cni".into(), netns_dir: "/run/zoe/netns".into(), bridge: "zoe0".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the node has no cluster network yet (the leader sends it after registration)")]
    NotConfigured,
    #[error("invalid network configuration: {0}")]
    Invalid(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Who a bridged container is, for its hosts file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub execution_id: String,
    /// Its own names (`head0`, `head0.<execution>.zoe`).
    pub names: Vec<String>,
}

/// One container's attachment, as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    id: String,
    netns: PathBuf,
    who: Identity,
    /// The plugin list of the ADD, each configuration complete but for
    /// `prevResult`; DEL and CHECK replay it.
    plugins: Vec<Value>,
    runtime: Value,
    /// The list's final result; `None` until the ADD completed.
    result: Option<Value>,
    ip: Option<String>,
}

/// Where a container's network files are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub netns: PathBuf,
    pub hosts: PathBuf,
    pub resolv: PathBuf,
}

/// The node's container network.
pub struct Network {
    settings: NetSettings,
    /// `<data_dir>/net/<containerd namespace>`: attachments and
    /// host-local's leases.
    state_dir: PathBuf,
    netns_dir: PathBuf,
    node: watch::Sender<Option<NodeNetwork>>,
    attachments: Mutex<HashMap<String, Attachment>>,
    hosts: Mutex<HashMap<String, Vec<HostEntry>>>,
    /// One attach/detach at a time per container.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One configuration (routes, rules) at a time.
    configure_lock: tokio::sync::Mutex<()>,
}

impl Network {
    /// Loads the attachments a previous agent left (nothing is touched on
    /// the host until [`Network::reclaim`] or a configuration).
    pub fn new(settings: NetSettings, data_dir: &Path, namespace: &str) -> Network {
        let state_dir = data_dir.join("net").join(namespace);
        let netns_dir = settings.netns_dir.join(namespace);
        let mut attachments = HashMap::new();
        if let Ok(rd) = std::fs::read_dir(state_dir.join("containers")) {
            for e in rd.flatten() {
                let f = e.path().join("attachment.json");
                match std::fs::read(&f).map(|b| serde_json::from_slice::<Attachment>(&b)) {
                    Ok(Ok(a)) => {
                        attachments.insert(a.id.clone(), a);
                    }
                    Ok(Err(err)) => tracing::warn!(file = %f.display(), "unreadable network attachment: {err}"),
                    Err(_) => {}
                }
            }
        }
        let (node, _) = watch::channel(None);
        Network {
            settings,
            state_dir,
            netns_dir,
            node,
            attachments: Mutex::new(attachments),
            hosts: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            configure_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &NetSettings {
        &self.settings
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }

    pub fn paths(&self, id: &str) -> Paths {
        let d = self.container_dir(id);
        Paths { netns: self.netns_dir.join(id), hosts: d.join("hosts"), resolv: d.join("resolv.conf") }
    }

    /// The node's network as last configured.
    pub fn node(&self) -> Option<NodeNetwork> {
        self.node.borrow().clone()
    }

    /// The address of a bridged container.
    pub fn ip_of(&self, id: &str) -> Option<String> {
        self.attachments.lock().expect("lock").get(id).and_then(|a| a.ip.clone())
    }

    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().expect("lock").entry(id.to_string()).or_default().clone()
    }

    /// Takes the leader's view of this node's network: routes to the other
    /// nodes' subnets, masquerading of what leaves the cluster, forwarding.
    pub async fn configure(&self, n: NodeNetwork) -> Result<(), NetError> {
        let (cidr, cidr_len) = parse_cidr(&n.cidr).ok_or_else(|| NetError::Invalid(format!("cidr {:?}", n.cidr)))?;
        let (sub, sub_len) =
            parse_cidr(&n.subnet).ok_or_else(|| NetError::Invalid(format!("subnet {:?}", n.subnet)))?;
        if sub_len < cidr_len || mask(sub, cidr_len) != cidr || sub_len > 30 {
            return Err(NetError::Invalid(format!("subnet {} is not a subnet of {}", n.subnet, n.cidr)));
        }
        if let Some(old) = self.node()
            && old.subnet != n.subnet
            && !self.attachments.lock().expect("lock").is_empty()
        {
            // host-local and the bridge hold the old subnet's addresses.
            return Err(NetError::Invalid(format!(
                "the node's subnet changed from {} to {} while containers use it",
                old.subnet, n.subnet
            )));
        }
        let mut routes = Vec::new();
        for p in &n.peers {
            let Some((dst, len)) = parse_cidr(&p.subnet) else {
                tracing::warn!(subnet = %p.subnet, "ignoring a peer with a malformed subnet");
                continue;
            };
            let Ok(gateway) = p.address.parse::<Ipv4Addr>() else {
                tracing::warn!(subnet = %p.subnet, address = %p.address, "ignoring a peer without an IPv4 address");
                continue;
            };
            if dst == sub && len == sub_len {
                continue;
            }
            routes.push(route::Route { dst, len, gateway });
        }
        routes.sort();
        routes.dedup_by(|a, b| a.dst == b.dst && a.len == b.len);
        let _g = self.configure_lock.lock().await;
        let synced = tokio::task::spawn_blocking(move || route::sync(&routes))
            .await
            .map_err(|e| NetError::Invalid(format!("route task: {e}")))?
            .map_err(io("reading the routing table"))?;
        for (r, e) in &synced.failed {
            tracing::warn!(dst = %r.dst, len = r.len, gateway = %r.gateway, error = %e, "a route to a peer's subnet was refused");
        }
        let (added, removed) = (synced.added, synced.removed);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(io("enabling IPv4 forwarding"))?;
        masquerade(&n.subnet, &n.cidr).await?;
        tracing::info!(subnet = %n.subnet, cidr = %n.cidr, peers = n.peers.len(), added, removed, "cluster network configured");
        self.node.send_replace(Some(n));
        Ok(())
    }

    async fn wait_configured(&self) -> Result<NodeNetwork, NetError> {
        let mut rx = self.node.subscribe();
        let got = tokio::time::timeout(CONFIG_WAIT, rx.wait_for(|n| n.is_some())).await;
        match got {
            Ok(Ok(n)) => Ok(n.clone().expect("waited for some")),
            _ => Err(NetError::NotConfigured),
        }
    }

    /// The plugin list of a container: the bridge (with host-local IPAM
    /// on the node's subnet), then portmap when ports are published.
    fn plugins(&self, node: &NodeNetwork, ports: &[PortMapping]) -> Vec<Value> {
        let mut list = vec![json!({
            "type": "bridge",
            "bridge": self.settings.bridge,
            "isGateway": true,
            // Masquerading is the agent's own rule: only traffic leaving
            // the cluster CIDR, so that containers see each other's
            // addresses across nodes.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": node.subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.ipam_dir(),
            },
        })];
        if !ports.is_empty() {
            list.push(json!({ "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }));
        }
        list
    }

    /// Gives container `id` its namespace and address; writes its hosts
    /// and resolver files. Returns the address. On failure everything done
    /// is undone.
    pub async fn attach(&self, id: &str, who: Identity, ports: &[PortMapping]) -> Result<String, NetError> {
        let node = self.wait_configured().await?;
        let lock = self.lock_of(id);
        let _g = lock.lock().await;
        match self.attach_locked(id, who, ports, &node).await {
            Ok(ip) => Ok(ip),
            Err(e) => {
                tracing::warn!(container = id, error = %e, "network attach failed; undoing it");
                if let Err(d) = self.detach_locked(id).await {
                    tracing::warn!(container = id, error = %d, "undoing the network attach failed");
                }
                Err(e)
            }
        }
    }

    async fn attach_locked(
        &self,
        id: &str,
        who: Identity,
        ports: &[PortMapping],
        node: &NodeNetwork,
    ) -> Result<String, NetError> {
        let paths = self.paths(id);
        let dir = self.container_dir(id);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        netns::ensure_shared_dir(&self.settings.netns_dir)
            .map_err(io(format!("preparing {}", self.settings.netns_dir.display())))?;
        std::fs::create_dir_all(&self.netns_dir).map_err(io(format!("creating {}", self.netns_dir.display())))?;
        let runtime = json!({
            "portMappings": ports.iter().map(|p| json!({
                "hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol,
            })).collect::<Vec<_>>(),
        });
        let mut a = Attachment {
            id: id.to_string(),
            netns: paths.netns.clone(),
            who,
            plugins: self.plugins(node, ports),
            runtime,
            result: None,
            ip: None,
        };
        // Recorded before the first ADD, so that a crash in between still
        // leaves enough for a DEL at the next start.
        self.save(&a)?;
        self.attachments.lock().expect("lock").insert(id.to_string(), a.clone());
        let p = paths.netns.clone();
        tokio::task::spawn_blocking(move || netns::create(&p))
            .await
            .map_err(|e| NetError::Invalid(format!("namespace task: {e}")))?
            .map_err(io(format!("creating network namespace {}", paths.netns.display())))?;
        let netns = paths.netns.to_string_lossy().into_owned();
        let lo = json!({ "cniVersion": cni::CNI_VERSION, "name": "lo", "type": "loopback" });
        let call = |command| cni::Call { command, container_id: id, netns: &netns, ifname: IFNAME };
        cni::exec(&self.settings.cni_path, &cni::Call { ifname: "lo", ..call("ADD") }, &lo).await?;
        let mut prev: Option<Value> = None;
        for plugin in &a.plugins {
            let conf = cni::plugin_conf(NETWORK_NAME, plugin, prev.as_ref(), &a.runtime);
            let r = cni::exec(&self.settings.cni_path, &call("ADD"), &conf).await?;
            // A plugin that prints nothing passes the previous result on.
            if r.is_some() {
                prev = r;
            }
        }
        let ip = prev
            .as_ref()
            .and_then(cni::first_ipv4)
            .ok_or_else(|| NetError::Invalid(format!("the bridge plugin gave {id} no IPv4 address")))?;
        a.result = prev;
        a.ip = Some(ip.clone());
        self.save(&a)?;
        self.attachments.lock().expect("lock").insert(id.to_string(), a);
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        hosts::write_in_place(&paths.resolv, &hosts::resolv_conf(&host_resolv))
            .map_err(io(format!("writing {}", paths.resolv.display())))?;
        self.write_hosts(id)?;
        Ok(ip)
    }

    fn save(&self, a: &Attachment) -> Result<(), NetError> {
        let f = self.container_dir(&a.id).join("attachment.json");
        let tmp = f.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(a).map_err(|e| NetError::Invalid(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &f).map_err(io(format!("writing {}", f.display())))
    }

    /// Checks a container's attachment with the plugins' CHECK. portmap is
    /// left out: its CHECK (plugins 1.1) insists on IPv6 chains it never
    /// created for an IPv4-only container.
    pub async fn check(&self, id: &str) -> Result<(), NetError> {
        let a = self.attachments.lock().expect("lock").get(id).cloned().ok_or(NetError::NotConfigured)?;
        let netns = a.netns.to_string_lossy().into_owned();
        let call = cni::Call { command: "CHECK", container_id: id, netns: &netns, ifname: IFNAME };
        for plugin in a.plugins.iter().filter(|p| p["type"] != "portmap") {
            let conf = cni::plugin_conf(NETWORK_NAME, plugin, a.result.as_ref(), &a.runtime);
            cni::exec(&self.settings.cni_path, &call, &conf).await?;
        }
        Ok(())
    }

    /// Releases a container's network: DEL through the plugins in reverse
    /// order (address, veth, port mappings), then its namespace and files.
    /// Detaching what is not attached is success.
    pub async fn detach(&self, id: &str) -> Result<(), NetError> {
        let lock = self.lock_of(id);
        let r = {
            let _g = lock.lock().await;
            self.detach_locked(id).await
        };
        let mut locks = self.locks.lock().expect("lock");
        if locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(id);
        }
        r
    }

    async fn detach_locked(&self, id: &str) -> Result<(), NetError> {
        let a = self.attachments.lock().expect("lock").get(id).cloned();
        let paths = self.paths(id);
        let mut first_err = None;
        if let Some(a) = &a {
            // A DEL without a namespace still releases the address.
            let netns =
                if netns::is_mounted(&a.netns) { a.netns.to_string_lossy().into_owned() } else { String::new() };
            let call = cni::Call { command: "DEL", container_id: id, netns: &netns, ifname: IFNAME };
            for plugin in a.plugins.iter().rev() {
                let conf = cni::plugin_conf(NETWORK_NAME, plugin, a.result.as_ref(), &a.runtime);
                if let Err(e) = cni::exec(&self.settings.cni_path, &call, &conf).await {
                    tracing::warn!(container = id, error = %e, "CNI DEL failed");
                    first_err.get_or_insert(NetError::from(e));
                }
            }
        }
        let p = paths.netns.clone();
        let removed = tokio::task::spawn_blocking(move || netns::remove(&p))
            .await
            .map_err(|e| NetError::Invalid(format!("namespace task: {e}")))?;
        if let Err(e) = removed {
            first_err.get_or_insert(NetError::Io { what: format!("removing {}", paths.netns.display()), source: e });
        }
        if let Some(e) = first_err {
            // Kept on disk: the next start (reclaim) tries again.
            return Err(e);
        }
        self.attachments.lock().expect("lock").remove(id);
        let _ = std::fs::remove_dir_all(self.container_dir(id));
        // The execution's host list stays: forgetting it here could race a
        // spawn the leader just sent it for (a few bytes per execution).
        Ok(())
    }

    /// The leader's list of an execution's instances: rewrites the hosts
    /// file of every container of that execution here.
    pub fn set_hosts(&self, execution_id: &str, entries: Vec<HostEntry>) {
        self.hosts.lock().expect("lock").insert(execution_id.to_string(), entries);
        let ids: Vec<String> = self
            .attachments
            .lock()
            .expect("lock")
            .values()
            .filter(|a| a.who.execution_id == execution_id && a.ip.is_some())
            .map(|a| a.id.clone())
            .collect();
        for id in ids {
            if let Err(e) = self.write_hosts(&id) {
                tracing::warn!(container = %id, error = %e, "rewriting /etc/hosts failed");
            }
        }
    }

    /// Forgets the host list of an execution with no container here.
    pub fn forget_hosts(&self, execution_id: &str) {
        self.hosts.lock().expect("lock").remove(execution_id);
    }

    fn write_hosts(&self, id: &str) -> Result<(), NetError> {
        let Some(a) = self.attachments.lock().expect("lock").get(id).cloned() else { return Ok(()) };
        let Some(ip) = a.ip else { return Ok(()) };
        let entries = self.hosts.lock().expect("lock").get(&a.who.execution_id).cloned().unwrap_or_default();
        let text = hosts::render(&ip, &a.who.names, &entries);
        let f = self.paths(id).hosts;
        hosts::write_in_place(&f, &text).map_err(io(format!("writing {}", f.display())))
    }

    /// Releases the network of every container not in `alive` (ids of
    /// containers still running): attachments, namespaces and host-local
    /// leases a crashed or killed agent left behind.
    pub async fn reclaim(&self, alive: &HashSet<String>) {
        let known: Vec<String> = self.attachments.lock().expect("lock").keys().cloned().collect();
        let mut released = 0;
        for id in known.iter().filter(|id| !alive.contains(*id)) {
            match self.detach(id).await {
                Ok(()) => released += 1,
                Err(e) => tracing::warn!(container = %id, error = %e, "releasing a leaked attachment failed"),
            }
        }
        let keep = |name: &str| alive.contains(name);
        if let Ok(rd) = std::fs::read_dir(&self.netns_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep(&name) && netns::remove(&e.path()).is_ok() {
                    released += 1;
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.state_dir.join("containers")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep(&name) && !self.attachments.lock().expect("lock").contains_key(&name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        // host-local's leases: one file per address holding the container id.
        if let Ok(rd) = std::fs::read_dir(self.ipam_dir().join(NETWORK_NAME)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_err() {
                    continue;
                }
                let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
                let owner = owner.lines().next().unwrap_or_default().trim().to_string();
                if !keep(&owner) && !self.attachments.lock().expect("lock").contains_key(&owner) {
                    let _ = std::fs::remove_file(e.path());
                    released += 1;
                }
            }
        }
        if released > 0 {
            tracing::info!(released, "reclaimed leaked container networking");
        }
    }

    /// Ids with an attachment (for tests and the leak check).
    pub fn attached(&self) -> Vec<String> {
        let mut v: Vec<String> = self.attachments.lock().expect("lock").keys().cloned().collect();
        v.sort();
        v
    }
}

/// `a.b.c.d/len` → (network address, len).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let l: u8 = l.parse().ok()?;
    (l <= 32).then(|| (mask(a, l), l))
}

fn mask(a: Ipv4Addr, len: u8) -> Ipv4Addr {
    let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ipv4Addr::from(u32::from(a) & m)
}

/// Masquerades what leaves the cluster CIDR from this node's subnet, and
/// lets the cluster's traffic through FORWARD (hosts where a firewall
/// defaults to DROP). iptables is run as a command, as the CNI plugins
/// themselves do; each rule is checked (`-C`) before it is added.
async fn masquerade(subnet: &str, cidr: &str) -> Result<(), NetError> {
    let comment = ["-m", "comment", "--comment", "zoe cluster network"];
    let rules: Vec<(&str, &str, Vec<&str>)> = vec![
        ("nat", "POSTROUTING", [&["-s", subnet, "!", "-d", cidr][..], &comment, &["-j", "MASQUERADE"]].concat()),
        ("filter", "FORWARD", [&["-s", cidr][..], &comment, &["-j", "ACCEPT"]].concat()),
        ("filter", "FORWARD", [&["-d", cidr][..], &comment, &["-j", "ACCEPT"]].concat()),
    ];
    for (table, chain, rule) in rules {
        let run = |op: &'static str| {
            let mut c = tokio::process::Command::new("iptables");
            c.args(["-w", "5", "-t", table, op, chain]).args(&rule);
            c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
            c
        };
        let present = run("-C").status().await.map_err(io("running iptables"))?.success();
        if !present {
            let out =
                run(if chain == "FORWARD" { "-I" } else { "-A" }).output().await.map_err(io("running iptables"))?;
            if !out.status.success() {
                return Err(NetError::Invalid(format!(
                    "iptables -t {table} {chain} {}: {}",
                    rule.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
    }
    Ok(())
}
