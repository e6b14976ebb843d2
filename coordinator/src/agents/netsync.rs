//! The cluster network pushed to agents (bridge mode only; see
//! `docs/networking.md`): each node's subnet and its peers' subnets with
//! the addresses to route them through ([`Command::Network`]), and each
//! execution's instance names and addresses ([`Command::Hosts`]) to the
//! nodes that hold its containers.
//!
//! Both are derived from the replicated state, so the leader recomputes
//! them whenever something was applied or a session (re)opened, and sends
//! only what differs from what that session last acknowledged. A new
//! leader or a reconnected agent thus gets the full picture again.

use super::AgentBackend;
use crate::state::{Command as StateCommand, ExecutionId, State};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use zoe_common::proto::{Command, CommandReply, HostEntry, NodeNetwork, PeerSubnet};
use zoe_common::zapp::template::dns_name;

/// How often the leader looks for changes (only computes when the applied
/// index or the sessions changed).
const TICK: Duration = Duration::from_millis(200);
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A node's network as the leader sends it; `None` when the cluster runs
/// on host networking or the node has no subnet.
pub fn node_network(st: &State, node: &str) -> Option<NodeNetwork> {
    if !st.network.bridge {
        return None;
    }
    let me = st.nodes.get(node)?;
    let subnet = me.subnet.clone()?;
    let mut peers: Vec<PeerSubnet> = st
        .nodes
        .values()
        .filter(|n| n.name != node)
        .filter_map(|n| Some(PeerSubnet { subnet: n.subnet.clone()?, address: n.addresses.first()?.clone() }))
        .collect();
    peers.sort();
    Some(NodeNetwork { cidr: st.network.cidr.clone(), subnet, peers })
}

/// An execution's running instances by name: `head0` and
/// `head0.<execution>.zoe` on the address the agent reported.
pub fn execution_hosts(st: &State, id: ExecutionId) -> Vec<HostEntry> {
    let mut out: Vec<HostEntry> = st
        .services_of(id)
        .filter(|s| s.status == crate::state::ServiceStatus::Active)
        .filter_map(|s| {
            let ip = s.ip_address.clone()?;
            Some(HostEntry { ip, names: vec![s.name.clone(), dns_name(&s.name, id)] })
        })
        .collect();
    out.sort();
    out
}

/// Nodes holding (or about to hold) a container of each execution.
fn execution_nodes(st: &State) -> BTreeMap<ExecutionId, Vec<String>> {
    let mut out: BTreeMap<ExecutionId, Vec<String>> = BTreeMap::new();
    for s in st.services.values() {
        if let Some(n) = s.node.as_ref().filter(|_| s.status.may_hold_container()) {
            let v = out.entry(s.execution_id).or_default();
            if !v.contains(n) {
                v.push(n.clone());
            }
        }
    }
    out
}

/// What every connected node should have: its network, and the host
/// lists of the executions it runs.
type Desired = (HashMap<String, NodeNetwork>, HashMap<(String, ExecutionId), Vec<HostEntry>>);

fn desired(st: &State, connected: &[String]) -> Desired {
    let mut nets = HashMap::new();
    let mut hosts = HashMap::new();
    if !st.network.bridge {
        return (nets, hosts);
    }
    for n in connected {
        if let Some(nn) = node_network(st, n) {
            nets.insert(n.clone(), nn);
        }
    }
    for (e, nodes) in execution_nodes(st) {
        let entries = execution_hosts(st, e);
        for n in nodes.into_iter().filter(|n| connected.contains(n)) {
            hosts.insert((n, e), entries.clone());
        }
    }
    (nets, hosts)
}

impl AgentBackend {
    /// Applies the configured `[agents.network]` to the replicated state
    /// while no node has registered (afterwards subnets are fixed).
    pub(super) async fn ensure_configured_network(&self) {
        let Some(want) = self.settings.network.clone() else { return };
        let (current, fresh) = self.coord.read_local(|st| (st.network.clone(), st.nodes.is_empty())).0;
        if current == want {
            return;
        }
        if !fresh {
            tracing::warn!(
                configured = ?want, replicated = ?current,
                "[agents.network] differs from the cluster's network, which cannot change once nodes registered"
            );
            return;
        }
        match self.coord.write(StateCommand::SetClusterNetwork { network: want }).await {
            Ok(w) if w.result.is_ok() => tracing::info!("cluster network set from the configuration"),
            Ok(w) => tracing::warn!("setting the cluster network: {:?}", w.result.err()),
            Err(e) => tracing::warn!("setting the cluster network: {e}"),
        }
    }

    /// Sends an execution's host list to `node` (before a spawn there, so
    /// the new container starts with its peers' names).
    pub(super) async fn push_hosts(&self, node: &str, execution_id: ExecutionId) {
        let entries = self.coord.read_local(|st| execution_hosts(st, execution_id)).0;
        let cmd = Command::Hosts { execution_id, entries };
        match self.call(node, cmd, CALL_TIMEOUT).await {
            Ok(CommandReply::Done) => {}
            other => tracing::warn!(node, execution_id, "sending the host list before a spawn: {other:?}"),
        }
    }

    /// The leader's sync loop (see the module documentation).
    pub(super) async fn network_sync(self: Arc<Self>) {
        let mut sent_net: HashMap<String, (u64, NodeNetwork)> = HashMap::new();
        let mut sent_hosts: HashMap<(String, ExecutionId), (u64, Vec<HostEntry>)> = HashMap::new();
        let mut seen: Option<(Option<u64>, Vec<(String, u64)>)> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.is_leader() {
                sent_net.clear();
                sent_hosts.clear();
                seen = None;
                continue;
            }
            let applied = Some(*self.coord.applied().borrow());
            let mut sessions: Vec<(String, u64)> =
                self.reg.lock().expect("lock").nodes.iter().map(|(k, n)| (k.clone(), n.session)).collect();
            sessions.sort();
            let now = (applied, sessions.clone());
            if seen.as_ref() == Some(&now) {
                continue;
            }
            let session_of: HashMap<String, u64> = sessions.iter().cloned().collect();
            let connected: Vec<String> = sessions.iter().map(|(k, _)| k.clone()).collect();
            let (nets, hosts) = self.coord.read_local(|st| desired(st, &connected)).0;
            sent_net.retain(|k, _| nets.contains_key(k));
            sent_hosts.retain(|k, _| hosts.contains_key(k));

            let mut calls = Vec::new();
            for (node, n) in nets {
                let session = session_of[&node];
                if sent_net.get(&node).is_some_and(|(s, v)| *s == session && *v == n) {
                    continue;
                }
                let me = self.clone();
                calls.push(tokio::spawn(async move {
                    let r = me.call(&node, Command::Network(n.clone()), CALL_TIMEOUT).await;
                    (Key::Net(node, session, n), r)
                }));
            }
            for ((node, e), entries) in hosts {
                let session = session_of[&node];
                if sent_hosts.get(&(node.clone(), e)).is_some_and(|(s, v)| *s == session && *v == entries) {
                    continue;
                }
                let me = self.clone();
                calls.push(tokio::spawn(async move {
                    let cmd = Command::Hosts { execution_id: e, entries: entries.clone() };
                    let r = me.call(&node, cmd, CALL_TIMEOUT).await;
                    (Key::Hosts(node, e, session, entries), r)
                }));
            }
            let mut all_ok = true;
            for c in calls {
                let Ok((key, r)) = c.await else {
                    all_ok = false;
                    continue;
                };
                let ok = matches!(r, Ok(CommandReply::Done));
                match key {
                    Key::Net(node, session, n) if ok => {
                        sent_net.insert(node, (session, n));
                    }
                    Key::Hosts(node, e, session, entries) if ok => {
                        sent_hosts.insert((node, e), (session, entries));
                    }
                    Key::Net(node, ..) | Key::Hosts(node, ..) => {
                        all_ok = false;
                        tracing::warn!(node = %node, "network push failed: {r:?}");
                    }
                }
            }
            // A failed push is retried shortly.
            seen = all_ok.then_some(now);
            if !all_ok {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

enum Key {
    Net(String, u64, NodeNetwork),
    Hosts(String, ExecutionId, u64, Vec<HostEntry>),
}
