//! The cluster network as replicated data: the container CIDR, each node's
//! subnet (assigned at first registration, stable across restarts), and the
//! host ports published services use, allocated when a plan is applied so
//! that no two services share a host port on a node.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterNetwork {
    /// Container addresses, e.g. `10.88.0.0/16`.
    pub cidr: String,
    /// Prefix length of each node's subnet (a /24 by default).
    pub node_prefix: u8,
    /// Host ports published container ports are mapped to.
    pub port_min: u16,
    pub port_max: u16,
    /// Containers get their own network namespace on the node's bridge.
    /// Until agents set up bridges, containers use the host's network and a
    /// published port is the container port itself.
    pub bridge: bool,
}

impl Default for ClusterNetwork {
    fn default() -> ClusterNetwork {
        ClusterNetwork {
            cidr: "10.88.0.0/16".into(),
            node_prefix: 24,
            port_min: 20_000,
            port_max: 32_767,
            bridge: false,
        }
    }
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

impl ClusterNetwork {
    /// The `index`-th node subnet, if the CIDR has that many.
    pub fn subnet(&self, index: u32) -> Option<String> {
        let (base, len) = parse_cidr(&self.cidr)?;
        if self.node_prefix < len || self.node_prefix > 30 {
            return None;
        }
        let count = 1u64 << (self.node_prefix - len);
        if u64::from(index) >= count {
            return None;
        }
        let net = base + (index << (32 - self.node_prefix));
        Some(format!("{}/{}", Ipv4Addr::from(net), self.node_prefix))
    }

    /// The lowest subnet not in `taken`.
    pub fn free_subnet<'a>(&self, taken: impl Iterator<Item = &'a str>) -> Option<String> {
        let taken: BTreeSet<&str> = taken.collect();
        (0..u32::MAX).map_while(|i| self.subnet(i)).find(|s| !taken.contains(s.as_str()))
    }

    /// Whether a group with this `network` field uses the host's network.
    pub fn uses_host(&self, network: Option<&str>) -> bool {
        !self.bridge || network == Some("host")
    }

    pub fn port_count(&self) -> usize {
        usize::from(self.port_max.saturating_sub(self.port_min)) + 1
    }

    /// The lowest `n` free ports of the range, given the ports in use.
    pub fn allocate(&self, used: &BTreeSet<u16>, n: usize) -> Option<Vec<u16>> {
        let out: Vec<u16> = (self.port_min..=self.port_max).filter(|p| !used.contains(p)).take(n).collect();
        (out.len() == n).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_carved_in_order_and_exhaust() {
        let n = ClusterNetwork { cidr: "10.88.0.0/22".into(), ..ClusterNetwork::default() };
        assert_eq!(n.subnet(0).as_deref(), Some("10.88.0.0/24"));
        assert_eq!(n.subnet(3).as_deref(), Some("10.88.3.0/24"));
        assert_eq!(n.subnet(4), None);
        assert_eq!(n.free_subnet(["10.88.0.0/24", "10.88.2.0/24"].into_iter()).as_deref(), Some("10.88.1.0/24"));
        assert_eq!(parse_cidr("10.88.7.9/16"), Some((u32::from(Ipv4Addr::new(10, 88, 0, 0)), 16)));
        assert_eq!(parse_cidr("nope"), None);
    }

    #[test]
    fn ports_are_allocated_lowest_first() {
        let n = ClusterNetwork { port_min: 100, port_max: 104, ..ClusterNetwork::default() };
        let used: BTreeSet<u16> = [100, 102].into();
        assert_eq!(n.allocate(&used, 2), Some(vec![101, 103]));
        assert_eq!(n.allocate(&used, 4), None);
        assert_eq!(n.port_count(), 5);
    }
}
