//! Every change to the state as a [`Command`] (one Raft log entry), what
//! applying one produced, and why one was refused.

use super::{
    AfterCleanup, ClusterNetwork, Drain, ExecutionId, Millis, NodeStatus, Plan, PublishedPort, Quota, QuotaId,
    Registration, Role, RoleId, RunId, ServiceId, User, UserId, WorkflowId,
};
use serde::{Deserialize, Serialize};
use zoe_common::workflow::Workflow;
use zoe_common::zapp::ZApp;

/// One change to the state: one Raft log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Independent commands in one log entry (the leader queues every new
    /// submission at once). Each stands alone: a refused one does not undo
    /// the others. Batches do not nest.
    Batch(Vec<Command>),
    /// Changes a setting only if it still holds what the writer saw
    /// (`expected: None` = absent); `value: None` removes it. Makes
    /// single-use values (bootstrap token) and revocations exact.
    CompareAndSetMeta {
        key: String,
        expected: Option<String>,
        value: Option<String>,
    },
    /// Sets a cluster-wide setting.
    SetMeta {
        key: String,
        value: String,
    },

    /// A new execution with its service instances (status `submitted`).
    SubmitExecution {
        name: String,
        owner: String,
        description: ZApp,
        size: f64,
        time: Millis,
        /// The client's `Idempotency-Key`: a submission with the key of an
        /// earlier one (same owner, within a day) creates nothing and
        /// answers the earlier execution's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// One piece of a snapshot file being restored (`backup.rs`): appended
    /// at `offset` of upload `upload` (a new upload id starts over).
    RestoreChunk {
        upload: String,
        offset: u64,
        data: String,
    },
    /// Replaces the whole state with the uploaded snapshot, if its format
    /// and checksum hold.
    RestoreCommit {
        upload: String,
    },
    /// The leader accepted a submission into its queue.
    QueueExecution {
        id: ExecutionId,
        time: Millis,
    },
    /// Ends an execution that never started (e.g. it can never fit).
    RejectExecution {
        id: ExecutionId,
        reason: String,
        time: Millis,
    },
    /// Stops an execution: its containers are stopped, then it ends as `after`.
    TerminateExecution {
        id: ExecutionId,
        reason: String,
        after: AfterCleanup,
        time: Millis,
    },
    /// Removes an ended execution and its services.
    DeleteExecution {
        id: ExecutionId,
    },
    /// A scheduler decision, whatever its size: one log entry.
    ApplyPlan(Plan),

    /// The agent started the service's container.
    ServiceStarted {
        id: ServiceId,
        container_id: String,
        ip_address: Option<String>,
        ports: Vec<PublishedPort>,
        time: Millis,
    },
    /// The agent could not start it. `retry_at` is set for a transient failure
    /// that should be retried (the leader's backoff); `None` means fatal.
    ServiceStartFailed {
        id: ServiceId,
        message: String,
        retry_at: Option<Millis>,
        time: Millis,
    },
    /// The container exited on its own.
    ServiceExited {
        id: ServiceId,
        container_id: String,
        exit_code: Option<i32>,
        oom_killed: bool,
        reason: String,
        time: Millis,
    },
    /// The container was stopped at zoe's request and is gone.
    ServiceStopped {
        id: ServiceId,
        container_id: String,
        time: Millis,
    },

    /// Stops running instances so the scheduler places them elsewhere
    /// (drain). Their stop does not end their execution.
    MoveServices {
        ids: Vec<ServiceId>,
        reason: String,
        time: Millis,
    },
    RegisterNode {
        registration: Registration,
        time: Millis,
    },
    SetNodeStatus {
        name: String,
        status: NodeStatus,
        time: Millis,
    },
    SetNodeEligibility {
        name: String,
        eligible: bool,
    },
    /// Stops draining; the node is eligible again unless `keep_ineligible`.
    CancelDrain {
        name: String,
        keep_ineligible: bool,
    },
    /// Nothing of zoe runs on the node any more: the drain is over; the node
    /// stays ineligible until an admin says otherwise (as in Nomad).
    CompleteDrain {
        name: String,
        time: Millis,
    },
    /// A node down past its grace: its instances are lost. Elastic ones are
    /// placed again, essential ones of long-running executions move,
    /// executions that would end on their own end in error (or start over
    /// with `requeue_batch`).
    NodeLost {
        name: String,
        requeue_batch: bool,
        time: Millis,
    },
    /// Sets the container network; only before any node has registered,
    /// since nodes keep the subnet they were given.
    SetClusterNetwork {
        network: ClusterNetwork,
    },
    /// Starts or updates a drain; `None` cancels it (eligible again).
    SetNodeDrain {
        name: String,
        drain: Option<Drain>,
    },

    CreateUser {
        user: User,
    },
    UpdateUser {
        user: User,
    },
    DeleteUser {
        id: UserId,
    },
    CreateRole {
        role: Role,
    },
    UpdateRole {
        role: Role,
    },
    DeleteRole {
        id: RoleId,
    },
    CreateQuota {
        quota: Quota,
    },
    UpdateQuota {
        quota: Quota,
    },
    DeleteQuota {
        id: QuotaId,
    },

    /// A workflow document (validated by the API) owned by `owner`.
    CreateWorkflow {
        workflow: Workflow,
        owner: String,
        time: Millis,
    },
    /// Removes a workflow with its ended runs; refused while one runs.
    DeleteWorkflow {
        id: WorkflowId,
    },
    /// Starts a run by hand.
    RunWorkflow {
        id: WorkflowId,
        by: String,
        /// A retried request with the same key answers the first run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        time: Millis,
    },
    /// Commits one schedule slot, firing its run unless `fire` is false
    /// (dropped by the catch-up policy). Refused for a slot already
    /// committed: each slot fires once across leader changes.
    CommitSlot {
        workflow: WorkflowId,
        slot: Millis,
        fire: bool,
        /// Earlier slots the catch-up policy dropped with this one.
        #[serde(default)]
        dropped: u64,
        time: Millis,
    },
    /// The execution of a step's copy ended and its outcome is not
    /// recorded (the command that ended it normally records it): recorded
    /// now, and the run moves on (dependants start in this same command).
    StepEnded {
        run: RunId,
        step: String,
        instance: u32,
        time: Millis,
    },
    /// Attempt `attempt` (counted from 0) of a step's copy, after a failure
    /// and its backoff. Refused unless it is the next attempt and due.
    RetryStep {
        run: RunId,
        step: String,
        instance: u32,
        attempt: u32,
        time: Millis,
    },
    /// Ends a run and terminates its steps' executions.
    TerminateRun {
        run: RunId,
        reason: String,
        time: Millis,
    },
    /// Forgets an ended run (garbage collection).
    DeleteRun {
        run: RunId,
    },
    /// A `volume_size` trigger's path passed its size (as `node` reported):
    /// starts a run, unless the trigger fired already and the path has not
    /// gone back below since (refused).
    VolumePassed {
        workflow: WorkflowId,
        trigger: u32,
        node: String,
        bytes: u64,
        time: Millis,
    },
    /// The path went back below the size: the trigger may fire again.
    VolumeBelow {
        workflow: WorkflowId,
        trigger: u32,
    },
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    /// A new record's id.
    Created(u64),
    /// One result per command of a batch.
    Batch(Vec<Result<Applied, StateError>>),
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("illegal transition of {what}: {from} -> {to}")]
    IllegalTransition { what: String, from: String, to: String },
    #[error("{0}")]
    Conflict(String),
    #[error("invalid command: {0}")]
    Invalid(String),
    #[error("{0}")]
    IdempotencyMismatch(String),
    /// A submission over its owner's quota (appended last: bincode
    /// encodes variants by position).
    #[error(transparent)]
    Quota(#[from] crate::quota::QuotaError),
}
