//! The cluster network as nodes are told it (bridge mode only; see
//! `docs/networking.md`): each node's subnet with its peers' subnets and
//! the addresses to route them through, and each execution's instance
//! names and addresses for the nodes that hold its containers. Both are
//! derived from the replicated state; the leader's pass sends what differs
//! from what a node's session last acknowledged (see [`crate::pass`]).

use crate::state::{ExecutionId, ServiceStatus, State};
use std::collections::{BTreeMap, HashSet};
use zoe_common::proto::{HostEntry, NodeNetwork, PeerSubnet};
use zoe_common::zapp::template::dns_name;

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
        .filter(|s| s.status == ServiceStatus::Active)
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

/// What every node in `connected` should have been told (ordered, so
/// pushes go in a stable order).
#[derive(Debug, Default, PartialEq)]
pub struct Desired {
    pub networks: BTreeMap<String, NodeNetwork>,
    /// (node, execution) → the execution's host list.
    pub hosts: BTreeMap<(String, ExecutionId), Vec<HostEntry>>,
}

pub fn desired(st: &State, connected: &HashSet<&str>) -> Desired {
    let mut d = Desired::default();
    if !st.network.bridge {
        return d;
    }
    for n in connected {
        if let Some(nn) = node_network(st, n) {
            d.networks.insert(n.to_string(), nn);
        }
    }
    for (e, nodes) in execution_nodes(st) {
        let entries = execution_hosts(st, e);
        for n in nodes.into_iter().filter(|n| connected.contains(n.as_str())) {
            d.hosts.insert((n, e), entries.clone());
        }
    }
    d
}
