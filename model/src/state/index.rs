//! Indexes derived from the records, so that a scheduler pass or a leader
//! pass costs what is queued, starting or changing, not a scan of every
//! service each time: what each node has reserved, the executions by
//! status, the services a node owes an answer about, and how many instances
//! of each execution hold a container.
//!
//! Never replicated and never compared: built from the records on first
//! use (a state read from a snapshot starts without one) and then kept up
//! to date by `State::apply`, which marks every service and execution it
//! changes and refreshes their entries once the command is applied. An
//! entry remembers what it counted (its [`Footprint`]), so a refresh takes
//! the old contribution out and puts the new one in, whatever changed.
//! Debug builds check the index against a rebuild at every read, so a
//! change that forgets to mark what it touched fails the tests at once.

use super::{Execution, ExecutionId, ExecutionStatus, Service, ServiceId, ServiceStatus, State};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use zoe_common::resources::Millicores;

/// What one node has reserved: the `min` of every instance placed there
/// that may hold a container, with their count and host ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub cores: Millicores,
    pub memory: u64,
    pub containers: u32,
    /// Host ports those instances publish, each with how many publish it
    /// (two only after a fault, but then both are in use).
    ports: BTreeMap<u16, u32>,
    /// Instances `starting` or `active` there: those idle cores are shared
    /// among (dynamic core sharing).
    sharing: BTreeSet<ServiceId>,
}

impl Usage {
    /// The host ports in use.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.keys().copied()
    }

    /// The instances idle cores are shared among, by id.
    pub fn sharing(&self) -> &BTreeSet<ServiceId> {
        &self.sharing
    }

    fn is_empty(&self) -> bool {
        self.containers == 0 && self.cores.0 == 0 && self.memory == 0 && self.ports.is_empty()
    }
}

/// Where an instance holds (or may hold) a container, and what it reserves.
#[derive(Debug, Clone, PartialEq)]
struct Holds {
    node: String,
    cores: Millicores,
    memory: u64,
    ports: Vec<u16>,
}

/// What one service counts for in the indexes.
#[derive(Debug, Clone, PartialEq)]
struct Footprint {
    id: ServiceId,
    execution: ExecutionId,
    status: ServiceStatus,
    holds: Option<Holds>,
}

impl Footprint {
    fn of(executions: &BTreeMap<ExecutionId, Execution>, s: &Service) -> Footprint {
        let holds = match (&s.node, s.status.may_hold_container()) {
            (Some(node), true) => {
                let g = executions.get(&s.execution_id).map(|e| &e.description.services[s.group_index]);
                Some(Holds {
                    node: node.clone(),
                    cores: g.map_or(Millicores(0), |g| g.cores_min()),
                    memory: g.map_or(0, |g| g.memory_min()),
                    ports: s.ports.iter().map(|p| p.host_port).collect(),
                })
            }
            _ => None,
        };
        Footprint { id: s.id, execution: s.execution_id, status: s.status, holds }
    }

    /// A node owes an answer about it: a start or a stop.
    fn waits(&self) -> bool {
        matches!(self.status, ServiceStatus::Starting | ServiceStatus::Terminating)
    }

    fn shares(&self) -> bool {
        matches!(self.status, ServiceStatus::Starting | ServiceStatus::Active)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Index {
    usage: BTreeMap<String, Usage>,
    executions: BTreeMap<ExecutionStatus, BTreeSet<ExecutionId>>,
    /// Services `starting` or `terminating`: a node owes an answer.
    waiting: BTreeSet<ServiceId>,
    /// Instances of each execution that may hold a container (absent: none).
    holding: BTreeMap<ExecutionId, u32>,
    /// Running executions with an instance that holds no container: the
    /// queue looks at these, not at every running execution.
    incomplete: BTreeSet<ExecutionId>,
    /// What each record was counted as, to take it out again.
    counted_services: HashMap<ServiceId, Footprint>,
    counted_executions: HashMap<ExecutionId, ExecutionStatus>,
    dirty_services: Vec<ServiceId>,
    dirty_executions: Vec<ExecutionId>,
}

impl Index {
    /// Every record counted as new: the one path that keeps the index
    /// builds it too.
    fn build(st: &State) -> Index {
        let mut ix = Index {
            dirty_services: st.services.keys().copied().collect(),
            dirty_executions: st.executions.keys().copied().collect(),
            ..Index::default()
        };
        ix.refresh(&st.executions, &st.services);
        ix
    }

    /// Keeps `incomplete` right for one execution.
    fn judge_complete(&mut self, id: ExecutionId, executions: &BTreeMap<ExecutionId, Execution>) {
        let incomplete = executions
            .get(&id)
            .is_some_and(|e| e.status == ExecutionStatus::Running && (self.holding(id) as usize) < e.services.len());
        if incomplete {
            self.incomplete.insert(id);
        } else {
            self.incomplete.remove(&id);
        }
    }

    fn count_service(&mut self, f: &Footprint, add: bool) {
        if f.waits() {
            if add {
                self.waiting.insert(f.id);
            } else {
                self.waiting.remove(&f.id);
            }
        }
        let Some(h) = &f.holds else { return };
        let u = self.usage.entry(h.node.clone()).or_default();
        if add {
            u.cores = Millicores(u.cores.0 + h.cores.0);
            u.memory += h.memory;
            u.containers += 1;
            if f.shares() {
                u.sharing.insert(f.id);
            }
            for p in &h.ports {
                *u.ports.entry(*p).or_default() += 1;
            }
            *self.holding.entry(f.execution).or_default() += 1;
        } else {
            u.cores = Millicores(u.cores.0 - h.cores.0);
            u.memory -= h.memory;
            u.containers -= 1;
            u.sharing.remove(&f.id);
            for p in &h.ports {
                let n = u.ports.get_mut(p).expect("a counted port");
                *n -= 1;
                if *n == 0 {
                    u.ports.remove(p);
                }
            }
            if u.is_empty() {
                self.usage.remove(&h.node);
            }
            let n = self.holding.get_mut(&f.execution).expect("a counted holder");
            *n -= 1;
            if *n == 0 {
                self.holding.remove(&f.execution);
            }
        }
    }

    fn refresh(&mut self, executions: &BTreeMap<ExecutionId, Execution>, services: &BTreeMap<ServiceId, Service>) {
        // Executions whose completeness may have changed.
        let mut judge: BTreeSet<ExecutionId> = self.dirty_executions.iter().copied().collect();
        for id in std::mem::take(&mut self.dirty_executions) {
            let now = executions.get(&id).map(|e| e.status);
            let before = match now {
                Some(st) => self.counted_executions.insert(id, st),
                None => self.counted_executions.remove(&id),
            };
            if before == now {
                continue;
            }
            if let Some(old) = before
                && let Some(set) = self.executions.get_mut(&old)
            {
                set.remove(&id);
                if set.is_empty() {
                    self.executions.remove(&old);
                }
            }
            if let Some(new) = now {
                self.executions.entry(new).or_default().insert(id);
            }
        }
        for id in std::mem::take(&mut self.dirty_services) {
            let now = services.get(&id).map(|s| Footprint::of(executions, s));
            let before = match &now {
                Some(f) => self.counted_services.insert(id, f.clone()),
                None => self.counted_services.remove(&id),
            };
            if before == now {
                continue;
            }
            judge.extend(before.iter().chain(&now).map(|f| f.execution));
            if let Some(old) = &before {
                self.count_service(old, false);
            }
            if let Some(new) = &now {
                self.count_service(new, true);
            }
        }
        for id in judge {
            self.judge_complete(id, executions);
        }
    }

    /// The same indexes as a rebuild would give (the bookkeeping aside).
    /// Only debug builds check it.
    #[cfg(debug_assertions)]
    fn agrees_with(&self, other: &Index) -> bool {
        self.usage == other.usage
            && self.executions == other.executions
            && self.waiting == other.waiting
            && self.holding == other.holding
            && self.incomplete == other.incomplete
    }

    pub fn usage(&self) -> &BTreeMap<String, Usage> {
        &self.usage
    }

    /// Executions with this status, by id.
    pub fn executions(&self, status: ExecutionStatus) -> impl Iterator<Item = ExecutionId> + '_ {
        self.executions.get(&status).into_iter().flatten().copied()
    }

    /// Services `starting` or `terminating`, by id.
    pub fn waiting(&self) -> impl Iterator<Item = ServiceId> + '_ {
        self.waiting.iter().copied()
    }

    /// Instances of the execution that may hold a container.
    pub fn holding(&self, id: ExecutionId) -> u32 {
        self.holding.get(&id).copied().unwrap_or(0)
    }

    /// Running executions with an instance that holds no container, by id.
    pub fn incomplete(&self) -> impl Iterator<Item = ExecutionId> + '_ {
        self.incomplete.iter().copied()
    }
}

/// The [`Index`] as a field of the state: absent until first read, then
/// kept up to date; cloned with the state, equal to any other (it says
/// nothing the records do not).
#[derive(Debug, Clone, Default)]
pub struct Derived(OnceLock<Index>);

impl PartialEq for Derived {
    fn eq(&self, _: &Derived) -> bool {
        true
    }
}

impl Derived {
    /// A service is about to change (or appear, or go).
    pub(super) fn touch_service(&mut self, id: ServiceId) {
        if let Some(ix) = self.0.get_mut() {
            ix.dirty_services.push(id);
        }
    }

    /// An execution is about to change (or appear, or go).
    pub(super) fn touch_execution(&mut self, id: ExecutionId) {
        if let Some(ix) = self.0.get_mut() {
            ix.dirty_executions.push(id);
        }
    }

    /// Brings the entries of what was touched up to date.
    pub(super) fn refresh(
        &mut self,
        executions: &BTreeMap<ExecutionId, Execution>,
        services: &BTreeMap<ServiceId, Service>,
    ) {
        if let Some(ix) = self.0.get_mut() {
            ix.refresh(executions, services);
        }
    }
}

impl State {
    /// The derived indexes (see the module documentation).
    pub fn index(&self) -> &Index {
        let ix = self.index.0.get_or_init(|| Index::build(self));
        debug_assert!(
            ix.dirty_services.is_empty() && ix.dirty_executions.is_empty(),
            "the index is read in the middle of a change"
        );
        #[cfg(debug_assertions)]
        {
            let fresh = Index::build(self);
            assert!(
                ix.agrees_with(&fresh),
                "the state's index disagrees with its records (a change did not mark what it touched):\n\
                 kept: {:?} {:?} {:?} {:?} {:?}\nrebuilt: {:?} {:?} {:?} {:?} {:?}",
                ix.usage,
                ix.executions,
                ix.waiting,
                ix.holding,
                ix.incomplete,
                fresh.usage,
                fresh.executions,
                fresh.waiting,
                fresh.holding,
                fresh.incomplete
            );
        }
        ix
    }
}
