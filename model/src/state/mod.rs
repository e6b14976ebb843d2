//! The replicated state model: every record zoe keeps, and every change as a
//! [`Command`]. `State::apply` is deterministic and free of I/O and clocks
//! (times travel inside commands, stamped by the leader), so every replica
//! that applies the same log reaches the same state. A refused command
//! changes nothing: each handler checks everything before it mutates.

pub mod backup;
pub mod command;
pub mod execution;
pub mod index;
pub mod network;
pub mod node;
pub mod plan;
pub mod service;
pub mod usage;
pub mod user;
pub mod workflow;

pub use command::{Applied, Command, StateError};
pub use execution::{AfterCleanup, Execution, ExecutionId, ExecutionStatus};
pub use index::{Index, Usage};
pub use network::ClusterNetwork;
pub use node::{Capacity, Drain, Node, NodeStatus, Registration};
pub use plan::{Placement, Plan};
pub use service::{BackendStatus, PublishedPort, Service, ServiceId, ServiceStatus};
pub use usage::UserUsage;
pub use user::{Capabilities, Quota, QuotaId, Role, RoleId, User, UserId};
pub use workflow::{Run, RunId, RunStatus, RunTrigger, StepStatus, WorkflowId, WorkflowRecord};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zoe_common::resources::Millicores;
use zoe_common::zapp::{ZApp, expand};

/// Milliseconds since the Unix epoch, stamped by the leader.
pub type Millis = u64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Next id to hand out; ids are never reused.
    pub next_id: u64,
    pub executions: BTreeMap<ExecutionId, Execution>,
    pub services: BTreeMap<ServiceId, Service>,
    pub nodes: BTreeMap<String, Node>,
    pub users: BTreeMap<UserId, User>,
    pub roles: BTreeMap<RoleId, Role>,
    pub quotas: BTreeMap<QuotaId, Quota>,
    /// Cluster-wide settings (cluster name, bootstrap token hash, ...).
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub network: ClusterNetwork,
    /// Keyed submissions of the last [`IDEMPOTENCY_KEEP_MS`]: owner →
    /// key → the execution the first one created, and when. (Nested, not
    /// keyed by a pair: the state is JSON in snapshots, whose map keys are
    /// strings.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub idempotency: BTreeMap<String, BTreeMap<String, (ExecutionId, Millis)>>,
    /// A snapshot restore being uploaded (`backup.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<backup::RestoreUpload>,
    /// Dynamic core sharing: the share of idle cores (per instance) that
    /// the allocations of each node's instances were last computed with. A
    /// node whose share is still the same needs no new allocation, so a
    /// pass recomputes only the nodes where something changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub core_shares: BTreeMap<String, Millicores>,
    /// Workflows (`workflow.rs`) and their runs, ended ones included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workflows: BTreeMap<WorkflowId, WorkflowRecord>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runs: BTreeMap<RunId, Run>,
    /// The executions of step attempts still going: execution → (run,
    /// step index, copy). When one ends, its run moves on in the same apply.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub step_executions: BTreeMap<ExecutionId, (RunId, u32, u32)>,
    /// Executions the command being applied ended (empty between commands).
    #[serde(skip)]
    ended: Vec<ExecutionId>,
    /// Core-time each user's ended containers used, by hour (`usage.rs`):
    /// what the fair-share policy orders by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, UserUsage>,
    /// Derived from the records above, never replicated (`index.rs`).
    #[serde(skip)]
    index: index::Derived,
}

/// How long a submission's `Idempotency-Key` is remembered (a day, as
/// Stripe's and most idempotent APIs do): a retry within it never creates
/// a second execution.
pub const IDEMPOTENCY_KEEP_MS: Millis = 24 * 3600 * 1000;

impl Default for State {
    fn default() -> State {
        State {
            next_id: user::FIRST_FREE_ID,
            executions: BTreeMap::new(),
            services: BTreeMap::new(),
            nodes: BTreeMap::new(),
            users: BTreeMap::new(),
            roles: user::builtin_roles().into_iter().map(|r| (r.id, r)).collect(),
            quotas: [user::builtin_quota()].into_iter().map(|q| (q.id, q)).collect(),
            meta: BTreeMap::new(),
            network: ClusterNetwork::default(),
            idempotency: BTreeMap::new(),
            restore: None,
            core_shares: BTreeMap::new(),
            workflows: BTreeMap::new(),
            runs: BTreeMap::new(),
            step_executions: BTreeMap::new(),
            ended: Vec::new(),
            usage: BTreeMap::new(),
            index: index::Derived::default(),
        }
    }
}

/// Moves a status along its transition table, or says why it cannot.
fn transition<S: Copy + PartialEq + std::fmt::Display>(
    status: &mut S,
    to: S,
    legal: fn(S, S) -> bool,
    what: impl FnOnce() -> String,
) -> Result<(), StateError> {
    if *status != to {
        if !legal(*status, to) {
            return Err(StateError::IllegalTransition { what: what(), from: status.to_string(), to: to.to_string() });
        }
        *status = to;
    }
    Ok(())
}

fn not_found(what: impl std::fmt::Display) -> StateError {
    StateError::NotFound(what.to_string())
}

impl State {
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, StateError> {
        let applied = self.apply_command(cmd);
        let ended = std::mem::take(&mut self.ended);
        if applied.is_ok() {
            // A workflow step's execution ended: its run moves on in this
            // same command (dependants submitted), not a pass later.
            for id in ended {
                self.fire_execution_triggers(id);
                self.step_execution_ended(id);
            }
        }
        // Refused commands too: a handler may have changed records before
        // it found a reason to refuse.
        self.index.refresh(&self.executions, &self.services);
        applied
    }

    fn apply_command(&mut self, cmd: &Command) -> Result<Applied, StateError> {
        match cmd {
            Command::Batch(cmds) => {
                if cmds.iter().any(|c| matches!(c, Command::Batch(_))) {
                    return Err(StateError::Invalid("batches do not nest".into()));
                }
                Ok(Applied::Batch(cmds.iter().map(|c| self.apply(c)).collect()))
            }
            Command::CompareAndSetMeta { key, expected, value } => {
                if self.meta.get(key) != expected.as_ref() {
                    return Err(StateError::Conflict(format!("setting {key} changed meanwhile")));
                }
                match value {
                    Some(v) => self.meta.insert(key.clone(), v.clone()),
                    None => self.meta.remove(key),
                };
                Ok(Applied::Done)
            }
            Command::SetMeta { key, value } => {
                self.meta.insert(key.clone(), value.clone());
                Ok(Applied::Done)
            }
            Command::SubmitExecution { name, owner, description, size, time, idempotency_key } => match idempotency_key
            {
                None => self.submit(name, owner, description, *size, *time),
                Some(key) => self.submit_once(key, name, owner, description, *size, *time),
            },
            Command::RestoreChunk { upload, offset, data } => {
                self.restore_chunk(upload, *offset, data)?;
                Ok(Applied::Done)
            }
            Command::RestoreCommit { upload } => {
                self.restore_commit(upload)?;
                Ok(Applied::Done)
            }
            Command::QueueExecution { id, time } => {
                let e = self.execution_mut(*id)?;
                // Only a submission is queued by this command. A leader pass
                // computed on an older view (a deposed leader's last write is
                // forwarded to the new one) must not pull an execution that has
                // since started or been terminated back into the queue.
                if e.status != ExecutionStatus::Submitted {
                    return Ok(Applied::Done);
                }
                e.set_status(ExecutionStatus::Queued)?;
                e.last_scheduled.get_or_insert(*time);
                Ok(Applied::Done)
            }
            Command::RejectExecution { id, reason, time } => {
                let e = self.execution_mut(*id)?;
                if e.status != ExecutionStatus::Submitted && e.status != ExecutionStatus::Queued {
                    return Err(StateError::Conflict(format!(
                        "execution {id} is {}, only a waiting execution can be rejected",
                        e.status
                    )));
                }
                e.set_status(ExecutionStatus::Error)?;
                e.error_message = Some(reason.clone());
                e.time_end = Some(*time);
                self.ended.push(*id);
                Ok(Applied::Done)
            }
            Command::TerminateExecution { id, reason, after, time } => self.terminate(*id, reason, *after, *time),
            Command::DeleteExecution { id } => {
                let e = self.execution(*id)?;
                if !e.status.is_ended() {
                    return Err(StateError::Conflict(format!(
                        "execution {id} is {}; terminate it before deleting it",
                        e.status
                    )));
                }
                self.index.touch_execution(*id);
                let e = self.executions.remove(id).expect("checked");
                for s in e.services {
                    self.index.touch_service(s);
                    self.services.remove(&s);
                }
                Ok(Applied::Done)
            }
            Command::ApplyPlan(plan) => self.apply_plan(plan),
            Command::ServiceStarted { id, container_id, ip_address, ports, time } => {
                let s = self.service_mut(*id)?;
                if s.status != ServiceStatus::Starting || s.container_id.as_deref() != Some(container_id) {
                    return Err(StateError::Conflict(format!(
                        "service {id} is {} with container {:?}; a start report for {container_id} is stale",
                        s.status, s.container_id
                    )));
                }
                s.set_status(ServiceStatus::Active)?;
                s.backend_status = BackendStatus::Started;
                s.ip_address = ip_address.clone();
                // The ports allocated at placement stand unless the node
                // reports otherwise.
                if !ports.is_empty() {
                    s.ports = ports.clone();
                }
                s.time_start = Some(*time);
                s.error_message = None;
                let exec_id = s.execution_id;
                self.maybe_running(exec_id, *time);
                Ok(Applied::Done)
            }
            Command::ServiceStartFailed { id, message, retry_at, time } => {
                self.start_failed(*id, message, *retry_at, *time)
            }
            Command::ServiceExited { id, container_id, exit_code, oom_killed, reason, time } => {
                self.exited(*id, container_id, *exit_code, *oom_killed, reason, *time)
            }
            Command::ServiceStopped { id, container_id, time } => {
                let s = self.service_mut(*id)?;
                if s.container_id.as_deref() != Some(container_id) || !s.status.may_hold_container() {
                    // Stopping is idempotent: a late report for a container
                    // already accounted for changes nothing.
                    return Ok(Applied::Done);
                }
                self.charge_usage(*id, *time);
                let s = self.service_mut(*id)?;
                s.set_status(ServiceStatus::Inactive)?;
                s.backend_status = BackendStatus::Destroyed;
                s.time_end = Some(*time);
                s.ip_address = None;
                s.ports.clear();
                let exec_id = s.execution_id;
                self.maybe_cleaned_up(exec_id, *time);
                Ok(Applied::Done)
            }
            Command::RegisterNode { registration, time } => {
                let r = registration;
                match self.nodes.get_mut(&r.name) {
                    Some(n) => {
                        n.addresses = r.addresses.clone();
                        n.capacity = r.capacity;
                        n.labels = r.labels.clone();
                        n.host_volumes = r.host_volumes.clone();
                        n.containerd_version = r.containerd_version.clone();
                        n.cgroup_mode = r.cgroup_mode.clone();
                        n.images = r.images.clone();
                        if n.status != NodeStatus::Ready {
                            n.status = NodeStatus::Ready;
                            n.status_since = *time;
                        }
                        n.last_registration = *time;
                    }
                    None => {
                        let subnet = self.network.free_subnet(self.nodes.values().filter_map(|n| n.subnet.as_deref()));
                        self.nodes.insert(
                            r.name.clone(),
                            Node {
                                name: r.name.clone(),
                                addresses: r.addresses.clone(),
                                capacity: r.capacity,
                                labels: r.labels.clone(),
                                host_volumes: r.host_volumes.clone(),
                                eligible: true,
                                status: NodeStatus::Ready,
                                status_since: *time,
                                drain_completed_at: None,
                                last_drain: None,
                                drain: None,
                                first_registration: *time,
                                last_registration: *time,
                                containerd_version: r.containerd_version.clone(),
                                cgroup_mode: r.cgroup_mode.clone(),
                                images: r.images.clone(),
                                subnet,
                            },
                        );
                    }
                }
                Ok(Applied::Done)
            }
            Command::SetNodeStatus { name, status, time } => {
                let n = self.node_mut(name)?;
                // Judged on silence before the node registered again: the
                // judgement is stale (a pass raced the registration).
                if *status == NodeStatus::Down && *time < n.last_registration {
                    return Err(StateError::Conflict(format!("node {name} registered again after it was judged down")));
                }
                if n.status != *status {
                    n.status = *status;
                    n.status_since = *time;
                }
                Ok(Applied::Done)
            }
            Command::MoveServices { ids, reason, .. } => {
                for id in ids {
                    self.service(*id)?;
                }
                for id in ids {
                    self.index.touch_service(*id);
                    let s = self.services.get_mut(id).expect("checked");
                    // Only running instances move; one already stopping or
                    // not running has nothing to move.
                    if matches!(s.status, ServiceStatus::Starting | ServiceStatus::Active) {
                        s.set_status(ServiceStatus::Terminating)?;
                        s.moving = true;
                        s.last_exit_reason = Some(reason.clone());
                        // The drain keeps its own record of what it moved.
                        if let Some(d) =
                            s.node.as_deref().and_then(|n| self.nodes.get_mut(n)).and_then(|n| n.drain.as_mut())
                            && !d.moved.contains(id)
                        {
                            d.moved.push(*id);
                        }
                    }
                }
                Ok(Applied::Done)
            }
            Command::SetClusterNetwork { network } => {
                if !self.nodes.is_empty() {
                    return Err(StateError::Conflict(
                        "the cluster network cannot change once nodes have registered".into(),
                    ));
                }
                let ok = network::parse_cidr(&network.cidr).is_some()
                    && network.subnet(0).is_some()
                    && network.port_min <= network.port_max
                    && network.port_min > 0;
                if !ok {
                    return Err(StateError::Invalid(format!("bad cluster network {network:?}")));
                }
                self.network = network.clone();
                Ok(Applied::Done)
            }
            Command::CancelDrain { name, keep_ineligible } => {
                let n = self.node_mut(name)?;
                // Not a no-op: it would make an ineligible node eligible.
                if n.drain.is_none() {
                    return Err(StateError::Conflict(format!("node {name} is not draining")));
                }
                n.drain = None;
                n.eligible = !keep_ineligible;
                Ok(Applied::Done)
            }
            Command::CompleteDrain { name, time } => {
                let n = self.node_mut(name)?;
                if n.drain.is_none() {
                    return Err(StateError::Conflict(format!("node {name} is not draining")));
                }
                n.last_drain = n.drain.take();
                n.eligible = false;
                n.drain_completed_at = Some(*time);
                Ok(Applied::Done)
            }
            Command::NodeLost { name, requeue_batch, time } => self.node_lost(name, *requeue_batch, *time),
            Command::SetNodeEligibility { name, eligible } => {
                self.node_mut(name)?.eligible = *eligible;
                Ok(Applied::Done)
            }
            Command::SetNodeDrain { name, drain } => {
                let n = self.node_mut(name)?;
                // Nomad: a draining node is ineligible, and stays so after it
                // completes; cancelling makes it eligible again.
                n.eligible = drain.is_none();
                // An update (new deadline, force) keeps the record of what moved.
                let moved = n.drain.take().map(|d| d.moved).unwrap_or_default();
                n.drain = drain.clone().map(|d| Drain { moved, ..d });
                Ok(Applied::Done)
            }
            Command::CreateUser { user } => {
                self.check_user(user, None)?;
                let id = self.take_id();
                self.users.insert(id, User { id, ..user.clone() });
                Ok(Applied::Created(id))
            }
            Command::UpdateUser { user } => {
                self.user(user.id)?;
                self.check_user(user, Some(user.id))?;
                self.users.insert(user.id, user.clone());
                Ok(Applied::Done)
            }
            Command::DeleteUser { id } => {
                let u = self.user(*id)?;
                let active = self.executions.values().filter(|e| e.owner == u.username && e.status.is_active()).count();
                if active > 0 {
                    return Err(StateError::Conflict(format!(
                        "user {} has {active} active execution(s); terminate them first",
                        u.username
                    )));
                }
                let username = u.username.clone();
                let ended: Vec<ExecutionId> =
                    self.executions.values().filter(|e| e.owner == username).map(|e| e.id).collect();
                for e in ended {
                    self.apply(&Command::DeleteExecution { id: e })?;
                }
                self.users.remove(id);
                Ok(Applied::Done)
            }
            Command::CreateRole { role } => {
                self.check_unique_name(self.roles.values().map(|r| (r.id, r.name.as_str())), &role.name, None, "role")?;
                let id = self.take_id();
                self.roles.insert(id, Role { id, ..role.clone() });
                Ok(Applied::Created(id))
            }
            Command::UpdateRole { role } => {
                self.roles.get(&role.id).ok_or_else(|| not_found(format!("role {}", role.id)))?;
                if role.id == user::ROLE_ADMIN {
                    return Err(StateError::Conflict("the admin role cannot be changed".into()));
                }
                self.check_unique_name(
                    self.roles.values().map(|r| (r.id, r.name.as_str())),
                    &role.name,
                    Some(role.id),
                    "role",
                )?;
                self.roles.insert(role.id, role.clone());
                Ok(Applied::Done)
            }
            Command::DeleteRole { id } => {
                self.roles.get(id).ok_or_else(|| not_found(format!("role {id}")))?;
                if *id == user::ROLE_ADMIN || *id == user::ROLE_USER {
                    return Err(StateError::Conflict("the built-in admin and user roles cannot be deleted".into()));
                }
                self.roles.remove(id);
                for u in self.users.values_mut().filter(|u| u.role_id == *id) {
                    u.role_id = user::ROLE_USER;
                }
                Ok(Applied::Done)
            }
            Command::CreateQuota { quota } => {
                self.check_unique_name(
                    self.quotas.values().map(|q| (q.id, q.name.as_str())),
                    &quota.name,
                    None,
                    "quota",
                )?;
                let id = self.take_id();
                self.quotas.insert(id, Quota { id, ..quota.clone() });
                Ok(Applied::Created(id))
            }
            Command::UpdateQuota { quota } => {
                let old = self.quotas.get(&quota.id).ok_or_else(|| not_found(format!("quota {}", quota.id)))?;
                if quota.id == user::QUOTA_DEFAULT && old.name != quota.name {
                    return Err(StateError::Conflict("the default quota cannot be renamed".into()));
                }
                self.check_unique_name(
                    self.quotas.values().map(|q| (q.id, q.name.as_str())),
                    &quota.name,
                    Some(quota.id),
                    "quota",
                )?;
                self.quotas.insert(quota.id, quota.clone());
                Ok(Applied::Done)
            }
            Command::DeleteQuota { id } => {
                self.quotas.get(id).ok_or_else(|| not_found(format!("quota {id}")))?;
                if *id == user::QUOTA_DEFAULT {
                    return Err(StateError::Conflict("the default quota cannot be deleted".into()));
                }
                self.quotas.remove(id);
                for u in self.users.values_mut().filter(|u| u.quota_id == *id) {
                    u.quota_id = user::QUOTA_DEFAULT;
                }
                Ok(Applied::Done)
            }
            Command::CreateWorkflow { workflow, owner, time } => self.create_workflow(workflow, owner, *time),
            Command::DeleteWorkflow { id } => self.delete_workflow(*id),
            Command::RunWorkflow { id, by, idempotency_key, time } => {
                self.run_by_hand(*id, by, idempotency_key.as_deref(), *time)
            }
            Command::CommitSlot { workflow, slot, fire, dropped, time } => {
                self.commit_slot(*workflow, *slot, *fire, *dropped, *time)
            }
            Command::StepEnded { run, step, instance, time } => self.step_ended(*run, step, *instance, *time),
            Command::RetryStep { run, step, instance, attempt, time } => {
                self.retry_step(*run, step, *instance, *attempt, *time)
            }
            Command::TerminateRun { run, reason, time } => self.terminate_run(*run, reason, *time),
            Command::VolumePassed { workflow, trigger, node, bytes, time } => {
                self.volume_passed(*workflow, *trigger, node, *bytes, *time)
            }
            Command::VolumeBelow { workflow, trigger } => self.volume_below(*workflow, *trigger),
            Command::DeleteRun { run } => {
                if self.run(*run)?.status == RunStatus::Running {
                    return Err(StateError::Conflict(format!("workflow run {run} is running; terminate it first")));
                }
                self.runs.remove(run);
                Ok(Applied::Done)
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn execution(&self, id: ExecutionId) -> Result<&Execution, StateError> {
        self.executions.get(&id).ok_or_else(|| not_found(format!("execution {id}")))
    }

    /// An execution to change (its index entry is refreshed after the command).
    fn execution_mut(&mut self, id: ExecutionId) -> Result<&mut Execution, StateError> {
        self.index.touch_execution(id);
        self.executions.get_mut(&id).ok_or_else(|| not_found(format!("execution {id}")))
    }

    pub fn service(&self, id: ServiceId) -> Result<&Service, StateError> {
        self.services.get(&id).ok_or_else(|| not_found(format!("service {id}")))
    }

    /// A service to change (its index entry is refreshed after the command).
    fn service_mut(&mut self, id: ServiceId) -> Result<&mut Service, StateError> {
        self.index.touch_service(id);
        self.services.get_mut(&id).ok_or_else(|| not_found(format!("service {id}")))
    }

    pub fn user(&self, id: UserId) -> Result<&User, StateError> {
        self.users.get(&id).ok_or_else(|| not_found(format!("user {id}")))
    }

    pub fn user_by_name(&self, username: &str) -> Option<&User> {
        self.users.values().find(|u| u.username == username)
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut Node, StateError> {
        self.nodes.get_mut(name).ok_or_else(|| not_found(format!("node {name}")))
    }

    /// The services of an execution, in start order.
    pub fn services_of(&self, id: ExecutionId) -> impl Iterator<Item = &Service> {
        self.executions
            .get(&id)
            .into_iter()
            .flat_map(move |e| e.services.iter().filter_map(move |s| self.services.get(s)))
    }

    fn check_unique_name<'a>(
        &self,
        mut existing: impl Iterator<Item = (u64, &'a str)>,
        name: &str,
        own_id: Option<u64>,
        kind: &str,
    ) -> Result<(), StateError> {
        if name.trim().is_empty() {
            return Err(StateError::Invalid(format!("a {kind} needs a name")));
        }
        if existing.any(|(id, n)| n == name && Some(id) != own_id) {
            return Err(StateError::Conflict(format!("{kind} `{name}` already exists")));
        }
        Ok(())
    }

    fn check_user(&self, u: &User, own_id: Option<UserId>) -> Result<(), StateError> {
        self.check_unique_name(self.users.values().map(|x| (x.id, x.username.as_str())), &u.username, own_id, "user")?;
        if !self.roles.contains_key(&u.role_id) {
            return Err(not_found(format!("role {}", u.role_id)));
        }
        if !self.quotas.contains_key(&u.quota_id) {
            return Err(not_found(format!("quota {}", u.quota_id)));
        }
        Ok(())
    }

    /// [`State::submit`] under an idempotency key. Keys older than a day
    /// are forgotten here, so the map stays bounded by a day of keyed
    /// submissions. The same key with another request is refused: a client
    /// bug that must not silently return someone else's answer.
    fn submit_once(
        &mut self,
        key: &str,
        name: &str,
        owner: &str,
        app: &ZApp,
        size: f64,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let fresh = |at: Millis| time.saturating_sub(at) < IDEMPOTENCY_KEEP_MS;
        if let Some((id, _)) = self.idempotency.get(owner).and_then(|m| m.get(key)).filter(|(_, at)| fresh(*at)) {
            if let Some(e) = self.executions.get(id)
                && (e.name != name || e.description != *app)
            {
                return Err(StateError::IdempotencyMismatch(format!(
                    "Idempotency-Key {key:?} was used for execution {id} with another name or ZApp"
                )));
            }
            return Ok(Applied::Created(*id));
        }
        let applied = self.submit(name, owner, app, size, time)?;
        if let Applied::Created(id) = applied {
            let mine = self.idempotency.entry(owner.to_string()).or_default();
            // Pruned every 1,024 keys rather than on every submission (a
            // scan of a day's keys each time would be quadratic).
            if mine.len() % 1024 == 1023 {
                mine.retain(|_, (_, at)| fresh(*at));
            }
            mine.insert(key.to_string(), (id, time));
        }
        Ok(applied)
    }

    fn submit(&mut self, name: &str, owner: &str, app: &ZApp, size: f64, time: Millis) -> Result<Applied, StateError> {
        if name.trim().is_empty() {
            return Err(StateError::Invalid("an execution needs a name".into()));
        }
        // The API checks quotas before writing, for a helpful answer; the
        // check here makes it exact when one user submits concurrently.
        if let Some(u) = self.user_by_name(owner) {
            crate::quota::check_submit(self, u, app)?;
        }
        let id = self.take_id();
        let mut services = Vec::new();
        for inst in expand(app) {
            let sid = self.take_id();
            let group = &app.services[inst.group];
            self.index.touch_service(sid);
            self.services.insert(
                sid,
                Service {
                    id: sid,
                    execution_id: id,
                    group_index: inst.group,
                    group: group.name.clone(),
                    name: inst.name,
                    essential: inst.essential,
                    startup_order: inst.startup_order,
                    status: ServiceStatus::Created,
                    backend_status: BackendStatus::Undefined,
                    node: None,
                    container_id: None,
                    ip_address: None,
                    ports: Vec::new(),
                    restart_count: 0,
                    moving: false,
                    attempt: 0,
                    cores_allocated: None,
                    last_exit_code: None,
                    last_exit_reason: None,
                    error_message: None,
                    time_start: None,
                    time_end: None,
                },
            );
            services.push(sid);
        }
        self.index.touch_execution(id);
        self.executions.insert(
            id,
            Execution {
                id,
                name: name.to_string(),
                owner: owner.to_string(),
                description: app.clone(),
                status: ExecutionStatus::Submitted,
                size,
                time_submit: time,
                time_start: None,
                time_end: None,
                error_message: None,
                services,
                after_cleanup: None,
                start_failures: 0,
                not_before: None,
                last_scheduled: None,
            },
        );
        Ok(Applied::Created(id))
    }

    fn terminate(
        &mut self,
        id: ExecutionId,
        reason: &str,
        after: AfterCleanup,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let e = self.execution(id)?;
        match e.status {
            // Asking again is not an error: the first request stands.
            ExecutionStatus::CleaningUp | ExecutionStatus::Terminated => return Ok(Applied::Done),
            ExecutionStatus::Error if after != AfterCleanup::Terminated => return Ok(Applied::Done),
            _ => {}
        }
        let holders: Vec<ServiceId> = self
            .services_of(id)
            .filter(|s| s.status.may_hold_container() || s.status == ServiceStatus::Error)
            .map(|s| s.id)
            .collect();
        let idle: Vec<ServiceId> =
            self.services_of(id).filter(|s| s.status == ServiceStatus::Created).map(|s| s.id).collect();
        for sid in holders {
            self.index.touch_service(sid);
            let s = self.services.get_mut(&sid).expect("listed");
            if s.status == ServiceStatus::Error && s.container_id.is_none() {
                s.set_status(ServiceStatus::Inactive)?;
            } else {
                s.set_status(ServiceStatus::Terminating)?;
            }
        }
        for sid in idle {
            self.index.touch_service(sid);
            self.services.get_mut(&sid).expect("listed").set_status(ServiceStatus::Inactive)?;
        }
        let e = self.execution_mut(id)?;
        e.error_message = Some(match (&e.error_message, e.status) {
            // Terminating a failed execution keeps the failure visible.
            (Some(old), ExecutionStatus::Error) => format!("{reason} (after: {old})"),
            _ => reason.to_string(),
        });
        if e.status == ExecutionStatus::Submitted {
            e.set_status(after.status())?;
            e.time_end = Some(time);
            self.ended.push(id);
            return Ok(Applied::Done);
        }
        e.set_status(ExecutionStatus::CleaningUp)?;
        e.after_cleanup = Some(after);
        self.maybe_cleaned_up(id, time);
        Ok(Applied::Done)
    }

    fn start_failed(
        &mut self,
        id: ServiceId,
        message: &str,
        retry_at: Option<Millis>,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let s = self.service_mut(id)?;
        if s.status != ServiceStatus::Starting {
            return Err(StateError::Conflict(format!("service {id} is {}, not starting", s.status)));
        }
        let retryable = retry_at.is_some();
        s.set_status(if retryable { ServiceStatus::Inactive } else { ServiceStatus::Error })?;
        s.backend_status = BackendStatus::Undefined;
        s.error_message = Some(message.to_string());
        s.container_id = None;
        // Restart backoff counts from here.
        s.time_end = Some(time);
        let (exec_id, essential, name) = (s.execution_id, s.essential, s.name.clone());
        let e = self.execution(exec_id)?;
        match (e.status, essential || e.status == ExecutionStatus::Starting) {
            (ExecutionStatus::Starting, _) | (ExecutionStatus::Running, true) => {
                let (after, reason) = if retryable {
                    (AfterCleanup::Requeue, format!("service {name} could not start, will retry: {message}"))
                } else {
                    (AfterCleanup::Error, format!("service {name} could not start: {message}"))
                };
                let e = self.execution_mut(exec_id)?;
                if retryable {
                    e.start_failures += 1;
                    e.not_before = retry_at;
                }
                self.terminate(exec_id, &reason, after, time)?;
            }
            // An elastic instance of a running execution: the scheduler will
            // try again later; the execution is unaffected.
            _ => {}
        }
        Ok(Applied::Done)
    }

    fn exited(
        &mut self,
        id: ServiceId,
        container_id: &str,
        exit_code: Option<i32>,
        oom: bool,
        reason: &str,
        time: Millis,
    ) -> Result<Applied, StateError> {
        let s = self.service_mut(id)?;
        if s.container_id.as_deref() != Some(container_id) || !s.status.may_hold_container() {
            // A report about an earlier attempt's container: nothing to do.
            return Ok(Applied::Done);
        }
        self.charge_usage(id, time);
        let s = self.service_mut(id)?;
        let was_stopping = s.status == ServiceStatus::Terminating;
        s.set_status(ServiceStatus::Inactive)?;
        s.backend_status = if oom { BackendStatus::OomKilled } else { BackendStatus::Dead };
        s.last_exit_code = exit_code;
        s.last_exit_reason = Some(if oom { "out of memory".to_string() } else { reason.to_string() });
        s.time_end = Some(time);
        s.ip_address = None;
        s.ports.clear();
        let (exec_id, essential, name) = (s.execution_id, s.essential, s.name.clone());
        if !was_stopping && essential {
            let e = self.execution(exec_id)?;
            if matches!(e.status, ExecutionStatus::Starting | ExecutionStatus::Running) {
                // How batch ZApps finish: an essential instance ends, the
                // execution ends; cleanly only if it exited 0 and was meant to end.
                let ok = exit_code == Some(0) && !oom && e.description.will_end;
                let why = match (oom, exit_code) {
                    (true, _) => format!("essential service {name} was killed: out of memory"),
                    (false, Some(c)) => format!("essential service {name} exited with code {c}"),
                    (false, None) => format!("essential service {name} died: {reason}"),
                };
                let after = if ok { AfterCleanup::Terminated } else { AfterCleanup::Error };
                self.terminate(exec_id, &why, after, time)?;
            }
        }
        self.maybe_cleaned_up(exec_id, time);
        Ok(Applied::Done)
    }

    fn node_lost(&mut self, name: &str, requeue_batch: bool, time: Millis) -> Result<Applied, StateError> {
        let n = self.node_mut(name)?;
        if n.status != NodeStatus::Down {
            n.status = NodeStatus::Down;
            n.status_since = time;
        }
        let on_node: Vec<ServiceId> = self
            .services
            .values()
            .filter(|s| s.node.as_deref() == Some(name) && s.status.may_hold_container())
            .map(|s| s.id)
            .collect();
        let mut ended: Vec<(ExecutionId, String, bool)> = Vec::new();
        let mut touched: Vec<ExecutionId> = Vec::new();
        for sid in on_node {
            let s = &self.services[&sid];
            let e = self.execution(s.execution_id)?;
            let will_end = e.description.will_end;
            let requeue = e.description.requeue_on_eviction(requeue_batch);
            let active_exec = matches!(e.status, ExecutionStatus::Starting | ExecutionStatus::Running);
            let (essential, exec_id, inst) = (s.essential, s.execution_id, s.name.clone());
            self.charge_usage(sid, time);
            self.index.touch_service(sid);
            let s = self.services.get_mut(&sid).expect("listed");
            // The container cannot be stopped from here: when the node comes
            // back, its agent stops what zoe no longer expects.
            let was_stopping = s.status == ServiceStatus::Terminating;
            s.status = ServiceStatus::Inactive;
            s.backend_status = BackendStatus::Undefined;
            s.last_exit_reason = Some(format!("node {name} lost"));
            s.time_end = Some(time);
            s.ip_address = None;
            s.ports.clear();
            touched.push(exec_id);
            if was_stopping && !s.moving || !active_exec {
                continue;
            }
            if essential && !will_end {
                s.moving = true;
            } else if essential {
                ended.push((exec_id, format!("node {name} lost while running {inst}"), requeue));
            }
        }
        for (id, reason, requeue) in ended {
            let after = if requeue { AfterCleanup::Requeue } else { AfterCleanup::Error };
            self.terminate(id, &reason, after, time)?;
        }
        for id in touched {
            self.maybe_cleaned_up(id, time);
        }
        Ok(Applied::Done)
    }

    /// `starting` → `running` once every essential instance is active.
    fn maybe_running(&mut self, id: ExecutionId, time: Millis) {
        let all_up = self.services_of(id).filter(|s| s.essential).all(|s| s.status == ServiceStatus::Active);
        self.index.touch_execution(id);
        if let Some(e) = self.executions.get_mut(&id)
            && e.status == ExecutionStatus::Starting
            && all_up
        {
            e.status = ExecutionStatus::Running;
            e.time_start.get_or_insert(time);
            e.start_failures = 0;
        }
    }

    /// `cleaning up` ends once no instance may hold a container.
    fn maybe_cleaned_up(&mut self, id: ExecutionId, time: Millis) {
        let busy = self.services_of(id).any(|s| s.status.may_hold_container());
        self.index.touch_execution(id);
        let Some(e) = self.executions.get_mut(&id) else { return };
        if e.status != ExecutionStatus::CleaningUp || busy {
            return;
        }
        let after = e.after_cleanup.take().unwrap_or(AfterCleanup::Terminated);
        e.status = after.status();
        if after == AfterCleanup::Requeue {
            // Start over: every instance is placeable again.
            e.time_start = None;
            let ids = e.services.clone();
            for sid in ids {
                self.index.touch_service(sid);
                if let Some(s) = self.services.get_mut(&sid) {
                    s.status = ServiceStatus::Created;
                    s.moving = false;
                    s.node = None;
                    s.cores_allocated = None;
                }
            }
        } else {
            e.time_end = Some(time);
            self.ended.push(id);
        }
    }

    /// Cores and memory reserved on each node: Σ of `min` of every instance
    /// placed there that may hold a container.
    pub fn reserved_by_node(&self) -> BTreeMap<&str, (Millicores, u64)> {
        self.index().usage().iter().map(|(n, u)| (n.as_str(), (u.cores, u.memory))).collect()
    }
}

#[cfg(test)]
mod tests;

/// What every model test applies commands through.
#[cfg(test)]
pub(crate) mod check {
    use super::{Applied, Command, State, StateError};

    /// `c` must be applied. The derived index is read after it: debug
    /// builds check it against a rebuild on every read, so every test
    /// checks it after every command.
    pub fn ok(st: &mut State, c: &Command) -> Applied {
        let applied = st.apply(c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        st.index();
        applied
    }

    /// The agents report every container the state is stopping as gone
    /// at `time`; how many there were.
    pub fn stop_terminating(st: &mut State, time: super::Millis) -> usize {
        let stopping: Vec<_> = st
            .services
            .values()
            .filter(|s| s.status == super::ServiceStatus::Terminating)
            .map(|s| (s.id, s.container_id.clone().expect("a terminating instance has its container")))
            .collect();
        for (id, container_id) in &stopping {
            ok(st, &Command::ServiceStopped { id: *id, container_id: container_id.clone(), time });
        }
        stopping.len()
    }

    /// `c` must be refused, and change nothing.
    pub fn refused(st: &mut State, c: &Command) -> StateError {
        let before = st.clone();
        let e = st.apply(c).expect_err("should be refused");
        assert_eq!(*st, before, "a refused command must change nothing");
        e
    }
}
