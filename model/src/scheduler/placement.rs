//! The simulated platform Zoe places services on: each schedulable node's
//! free cores and memory (capacity minus the `min` of everything placed
//! there), updated as the pass places instances, so a pass never
//! over-commits a node.
//!
//! Nodes sit in an ordered index by (label count, container count) so that
//! choosing a node is a walk from the front of the index, not a scan of the
//! whole cluster: the first node that fits is the answer for `average`
//! (fewest containers: spread) and `waterfill` (most containers: pack).
//! Nodes too full for the smallest request of the pass leave the index.

use super::platform::Platform;
use super::{PlacementPolicy, SchedulerConfig};
use crate::state::{Node, State, Usage};
use std::collections::BTreeSet;

/// What one instance needs.
#[derive(Debug, Clone)]
pub(super) struct Request<'a> {
    pub cores: u32,
    pub memory: u64,
    pub labels: &'a [String],
    /// Canonical image reference, to prefer nodes that already hold it.
    pub image: String,
    /// Ports it publishes as themselves (host networking): must be free.
    pub host_ports: Vec<u16>,
    /// Ports to be mapped from the node's range.
    pub range_ports: usize,
    /// Host volumes it mounts: the node must offer each to its owner.
    pub host_volumes: Vec<&'a str>,
    pub owner: &'a str,
    pub role: &'a str,
}

impl Request<'_> {
    /// What the node is, rather than what it has free, allows.
    fn suits(&self, n: &Node) -> bool {
        self.labels.iter().all(|l| n.labels.contains(l))
            && self
                .host_volumes
                .iter()
                .all(|v| n.host_volumes.get(*v).is_some_and(|hv| hv.allows(self.owner, self.role)))
    }
}

#[derive(Debug, Clone)]
pub(super) struct SimNode<'a> {
    pub node: &'a Node,
    pub images: Option<&'a BTreeSet<String>>,
    /// Signed: a node whose capacity shrank below its reservations is
    /// simply over-full, not an underflow.
    pub free_cores: i64,
    pub free_memory: i64,
    pub containers: u32,
    /// Host ports taken, and how many of the range are taken.
    used_ports: BTreeSet<u16>,
    range_used: usize,
    indexed: bool,
}

impl SimNode<'_> {
    fn fits(&self, r: &Request, range: (u16, u16)) -> bool {
        self.free_cores >= i64::from(r.cores)
            && self.free_memory >= r.memory as i64
            && r.suits(self.node)
            && r.host_ports.iter().all(|p| !self.used_ports.contains(p))
            && (r.range_ports == 0 || usize::from(range.1 - range.0) + 1 >= self.range_used + r.range_ports)
    }

    fn take_ports(&mut self, r: &Request, range: (u16, u16)) {
        for p in &r.host_ports {
            self.used_ports.insert(*p);
            if (range.0..=range.1).contains(p) {
                self.range_used += 1;
            }
        }
        self.range_used += r.range_ports;
    }

    fn give_ports(&mut self, r: &Request, range: (u16, u16)) {
        for p in &r.host_ports {
            self.used_ports.remove(p);
            if (range.0..=range.1).contains(p) {
                self.range_used -= 1;
            }
        }
        self.range_used -= r.range_ports;
    }

    fn holds(&self, image: &str) -> bool {
        self.images.is_some_and(|i| i.contains(image))
    }
}

type Key = (usize, i64, usize);

#[derive(Debug, Clone)]
pub(super) struct Sim<'a> {
    pub nodes: Vec<SimNode<'a>>,
    index: BTreeSet<Key>,
    policy: PlacementPolicy,
    rng: u64,
    /// Smallest request of the pass: a node below it can take nothing more.
    floor: (i64, i64),
    /// The host port range.
    range: (u16, u16),
}

/// How many equally ranked nodes to look through for one holding the image.
const IMAGE_LOOKAHEAD: usize = 32;

impl<'a> Sim<'a> {
    pub fn new(
        state: &'a State,
        platform: &'a Platform,
        cfg: &SchedulerConfig,
        now: u64,
        floor: (u32, u64),
    ) -> Sim<'a> {
        // What nodes have reserved is kept by the state's index: no scan of
        // the services, every pass of the leader.
        let usage = state.index().usage();
        let none = Usage::default();
        let nodes: Vec<SimNode<'a>> = state
            .nodes
            .values()
            .filter(|n| n.schedulable() && platform.connected(&n.name))
            .map(|n| {
                let u = usage.get(&n.name).unwrap_or(&none);
                let used_ports: BTreeSet<u16> = u.ports().collect();
                let range_used = used_ports.range(state.network.port_min..=state.network.port_max).count();
                SimNode {
                    node: n,
                    images: platform.nodes.get(&n.name).map(|l| &*l.images),
                    free_cores: i64::from(n.capacity.cores.0) - i64::from(u.cores.0),
                    free_memory: n.capacity.memory as i64 - u.memory as i64,
                    containers: u.containers,
                    used_ports,
                    range_used,
                    indexed: false,
                }
            })
            .collect();
        let mut sim = Sim {
            nodes,
            index: BTreeSet::new(),
            policy: cfg.placement,
            // Seeded per pass time: deterministic for a given state and time.
            rng: cfg.seed ^ now.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D,
            floor: (i64::from(floor.0), floor.1 as i64),
            range: (state.network.port_min, state.network.port_max),
        };
        for i in 0..sim.nodes.len() {
            sim.reindex(i);
        }
        sim
    }

    fn key(&self, i: usize) -> Key {
        let n = &self.nodes[i];
        let count = i64::from(n.containers);
        let count_key = match self.policy {
            PlacementPolicy::Waterfill => -count,
            PlacementPolicy::Average | PlacementPolicy::Random => count,
        };
        // Fewer labels first: keep special nodes (gpu, ssd) free for the
        // work that needs them.
        (n.node.labels.len(), count_key, i)
    }

    fn unindex(&mut self, i: usize) {
        if self.nodes[i].indexed {
            let k = self.key(i);
            self.index.remove(&k);
            self.nodes[i].indexed = false;
        }
    }

    fn reindex(&mut self, i: usize) {
        let n = &self.nodes[i];
        if n.free_cores >= self.floor.0 && n.free_memory >= self.floor.1 {
            let k = self.key(i);
            self.index.insert(k);
            self.nodes[i].indexed = true;
        }
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: small, seedable, no dependency.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn choose(&mut self, r: &Request) -> Option<usize> {
        let range = self.range;
        if self.nodes.is_empty() {
            return None;
        }
        if self.policy == PlacementPolicy::Random {
            let n = self.nodes.len();
            let start = (self.next_random() % n as u64) as usize;
            return (0..n).map(|k| (start + k) % n).find(|&i| self.nodes[i].indexed && self.nodes[i].fits(r, range));
        }
        let mut it = self.index.iter();
        let first = it.by_ref().find(|(_, _, i)| self.nodes[*i].fits(r, range)).copied()?;
        if self.nodes[first.2].holds(&r.image) {
            return Some(first.2);
        }
        // Among nodes ranked the same, prefer one that already holds the
        // image: its start needs no pull.
        it.take(IMAGE_LOOKAHEAD)
            .take_while(|(l, c, _)| (*l, *c) == (first.0, first.1))
            .find(|(_, _, i)| self.nodes[*i].holds(&r.image) && self.nodes[*i].fits(r, range))
            .map(|k| k.2)
            .or(Some(first.2))
    }

    /// Places one instance; returns the node index.
    pub fn place(&mut self, r: &Request) -> Option<usize> {
        let i = self.choose(r)?;
        self.unindex(i);
        let n = &mut self.nodes[i];
        n.free_cores -= i64::from(r.cores);
        n.free_memory -= r.memory as i64;
        n.containers += 1;
        n.take_ports(r, self.range);
        self.reindex(i);
        Some(i)
    }

    /// Undoes a placement (an all-or-nothing group that did not fit whole).
    pub fn unplace(&mut self, i: usize, r: &Request) {
        self.unindex(i);
        let n = &mut self.nodes[i];
        n.free_cores += i64::from(r.cores);
        n.free_memory += r.memory as i64;
        n.containers -= 1;
        n.give_ports(r, self.range);
        self.reindex(i);
    }

    /// Frees (positive) or takes (negative) cores and memory on node `i`
    /// outside of a placement: what preempted or ending instances will
    /// release, what a reservation holds back.
    pub fn adjust(&mut self, i: usize, cores: i64, memory: i64) {
        self.unindex(i);
        let n = &mut self.nodes[i];
        n.free_cores += cores;
        n.free_memory += memory;
        self.reindex(i);
    }

    /// The index of the node called `name`, if it takes part in the pass.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        // Nodes come from the state's map, in name order.
        self.nodes.binary_search_by(|n| n.node.name.as_str().cmp(name)).ok()
    }

    /// Σ free cores and memory.
    pub fn free_total(&self) -> (i64, i64) {
        self.nodes.iter().fold((0, 0), |(c, m), n| (c + n.free_cores.max(0), m + n.free_memory.max(0)))
    }

    /// Σ free memory: Zoe's admission test watches it.
    pub fn free_memory(&self) -> i64 {
        self.nodes.iter().map(|n| n.free_memory.max(0)).sum()
    }

    /// Could the request ever fit a node of this pass, were it empty?
    pub fn could_ever_fit(&self, r: &Request) -> bool {
        self.nodes.iter().any(|n| {
            u64::from(n.node.capacity.cores.0) >= u64::from(r.cores)
                && n.node.capacity.memory >= r.memory
                && r.suits(n.node)
        })
    }
}
