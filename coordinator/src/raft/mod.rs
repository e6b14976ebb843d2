//! The Raft core: openraft 0.9 (storage-v2) with the log, vote and state
//! machine snapshots in sled, and coordinator-to-coordinator RPC over
//! mutual-TLS QUIC (`zoe-net`). See `docs/raft.md` for the design.
//!
//! Everything openraft-specific stays behind this module so a later move to
//! openraft 0.10 stays local.
//!
//! - [`store`]: the sled log store and the state machine.
//! - [`network`]: RPC messages and the openraft network over QUIC.
//! - [`node`]: [`Coordinator`], one running member: write, read, admin, status.
//! - [`client`]: [`CoordinatorClient`], talking to a cluster from outside.

pub mod client;
mod election;
pub mod network;
pub mod node;
pub mod store;

pub use client::CoordinatorClient;
pub use network::{ApiError, MemberStatus, ReadReply, Status, WriteReply};
pub use node::{Coordinator, Leadership, Staleness};

use crate::state::{Applied, Command, StateError};
use serde::{Deserialize, Serialize};
use std::fmt;
// `declare_raft_types!` names `Cursor` unqualified.
use std::io::Cursor;

/// Node ids are small integers chosen by the operator in the config.
pub type NodeId = u64;

/// What openraft stores about each member: where to reach it and the name in
/// its certificate (the server name we verify when connecting to it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CoordNode {
    pub addr: String,
    pub name: String,
}

impl fmt::Display for CoordNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// The result of applying one command, as returned to the writer.
pub type CommandResult = Result<Applied, StateError>;

/// One log entry: the commands of concurrent writers, applied in order.
///
/// openraft 0.9 waits for each `append` to be durable before it takes the
/// next client write (`append_to_log` awaits the flush inline), so one
/// command per entry would mean one fsync per command on the leader. The
/// leader's proposer (see `node.rs`) instead gathers the writes that arrive
/// while earlier proposals are in flight into one entry: one fsync per
/// batch. Each command keeps its own result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub commands: Vec<Command>,
}

openraft::declare_raft_types!(
    /// zoe's Raft types: the log carries [`Proposal`]s of [`Command`]s.
    pub TypeConfig:
        D = Proposal,
        R = Vec<CommandResult>,
        NodeId = NodeId,
        Node = CoordNode,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, CoordNode>;

/// Encodings. openraft's own types go through bincode; the application's
/// command, result and state go through JSON inside them, because the state
/// model uses serde features a non-self-describing format cannot read back
/// (`skip_serializing_if`, and later possibly untagged enums).
pub(crate) mod codec {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    fn cfg() -> bincode::config::Configuration {
        bincode::config::standard()
    }

    /// A value that could not be encoded or decoded.
    #[derive(Debug, thiserror::Error)]
    pub enum CodecError {
        #[error("bincode: {0}")]
        Encode(#[from] bincode::error::EncodeError),
        #[error("bincode: {0}")]
        Decode(#[from] bincode::error::DecodeError),
        #[error("json: {0}")]
        Json(#[from] serde_json::Error),
    }

    impl From<CodecError> for super::ApiError {
        fn from(e: CodecError) -> Self {
            super::ApiError::Internal(e.to_string())
        }
    }

    pub fn bin<T: Serialize>(v: &T) -> Result<Vec<u8>, CodecError> {
        Ok(bincode::serde::encode_to_vec(v, cfg())?)
    }

    pub fn unbin<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
        Ok(bincode::serde::decode_from_slice(b, cfg()).map(|(v, _)| v)?)
    }

    pub fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(v)?)
    }

    pub fn unjson<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
        Ok(serde_json::from_slice(b)?)
    }
}

/// A log entry as stored in sled and sent to followers: openraft's entry
/// with the command carried as JSON (see [`codec`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireEntry {
    pub log_id: LogId,
    pub payload: WirePayload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WirePayload {
    Blank,
    Normal(Vec<u8>),
    Membership(openraft::Membership<NodeId, CoordNode>),
}

impl WireEntry {
    pub fn from_entry(e: &Entry) -> Result<Self, codec::CodecError> {
        let payload = match &e.payload {
            openraft::EntryPayload::Blank => WirePayload::Blank,
            openraft::EntryPayload::Normal(cmd) => WirePayload::Normal(codec::json(cmd)?),
            openraft::EntryPayload::Membership(m) => WirePayload::Membership(m.clone()),
        };
        Ok(WireEntry { log_id: e.log_id, payload })
    }

    pub fn into_entry(self) -> Result<Entry, codec::CodecError> {
        let payload = match self.payload {
            WirePayload::Blank => openraft::EntryPayload::Blank,
            WirePayload::Normal(b) => openraft::EntryPayload::Normal(codec::unjson(&b)?),
            WirePayload::Membership(m) => openraft::EntryPayload::Membership(m),
        };
        Ok(Entry { log_id: self.log_id, payload })
    }
}
