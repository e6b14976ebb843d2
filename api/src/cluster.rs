//! The cluster: version and coordinators, Raft membership and health,
//! snapshot restore.

crate::api_type! {
    /// `GET /info`.
    pub struct Info {
        pub version: String,
        pub api_version: String,
        pub application_format_version: u32,
        pub deployment_name: String,
        /// The coordinator that answered.
        pub coordinator: CoordinatorRef,
        pub leader: Option<u64>,
        pub applied_index: Option<u64>,
    }
}

crate::api_type! {
    pub struct CoordinatorRef {
        pub id: u64,
        pub name: String,
        /// Leader, Follower, Candidate, Learner or Shutdown.
        pub role: String,
    }
}

crate::api_type! {
    /// One member of the Raft cluster, as this coordinator sees it.
    pub struct MemberStatus {
        pub id: u64,
        pub name: String,
        pub addr: String,
        pub voter: bool,
        /// Leader only: highest log index known replicated on this member.
        pub matched_index: Option<u64>,
    }
}

crate::api_type! {
    /// `GET /cluster/members`: the health view of one coordinator.
    pub struct Status {
        pub id: u64,
        pub name: String,
        /// Leader, Follower, Candidate, Learner or Shutdown.
        pub role: String,
        pub leader: Option<u64>,
        pub term: u64,
        pub last_log_index: Option<u64>,
        pub commit_index: Option<u64>,
        pub applied_index: Option<u64>,
        pub snapshot_index: Option<u64>,
        pub purged_index: Option<u64>,
        pub members: Vec<MemberStatus>,
        /// Follower: ms since the leader was last heard; leader: ms since a
        /// quorum last acknowledged it.
        pub last_contact_ms: Option<u64>,
        pub snapshots_installed: u64,
        pub initialized: bool,
        /// Log entries appended, `append` calls and log syncs since start:
        /// entries per sync is the group-commit batch size.
        pub log_entries: u64,
        pub log_appends: u64,
        pub log_syncs: u64,
    }
}

crate::api_type! {
    /// `POST /cluster/snapshot/restore`: what was restored.
    pub struct Restored {
        pub restored: bool,
        /// The log index of the restore.
        pub index: u64,
        /// The snapshot's own index and time (epoch ms).
        pub snapshot_index: Option<u64>,
        pub snapshot_time: u64,
        pub executions: usize,
        pub users: usize,
        pub nodes: usize,
    }
}
