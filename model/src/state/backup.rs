//! Snapshot files: the whole replicated state, checksummed, for backups
//! (`zoe operator snapshot save|restore`, scheduled snapshots).
//!
//! A file is JSON: `{"format", "index", "time", "sha256", "state"}`, where
//! `sha256` is the hex SHA-256 of the state's JSON as zoe serializes it
//! (the state round-trips exactly, so a restore re-serializes what it read
//! and compares). A restore travels through Raft in pieces
//! (`RestoreChunk`, at most [`RESTORE_CHUNK`] bytes each, so every log entry
//! stays small) and takes effect at once with `RestoreCommit`, on every
//! replica alike.

use super::{Millis, State, StateError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "zoe-snapshot/1";

/// Bytes of snapshot text per `RestoreChunk` command (JSON escaping can
/// double it; the log's command limit is 1 MiB).
pub const RESTORE_CHUNK: usize = 256 * 1024;

/// Meta keys that describe the running cluster, not the backed-up one:
/// a restore keeps the current values (agents are redirected by them).
const LIVE_META_PREFIXES: &[&str] = &["agents.addr."];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFile {
    pub format: String,
    /// Raft index the state was read at.
    pub index: Option<u64>,
    pub time: Millis,
    pub sha256: String,
    pub state: State,
}

/// A restore being uploaded into the log.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RestoreUpload {
    pub upload: String,
    pub data: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a zoe snapshot: {0}")]
    Malformed(String),
    #[error("snapshot format {0:?} is not {FORMAT:?}")]
    Format(String),
    #[error("checksum mismatch: the file says {expected}, its state hashes to {actual}")]
    Checksum { expected: String, actual: String },
}

fn digest(state: &State) -> (Vec<u8>, String) {
    let json = serde_json::to_vec(state).expect("the state serializes");
    let sha = hex::encode(Sha256::digest(&json));
    (json, sha)
}

/// The snapshot file of `state`.
pub fn encode(state: &State, index: Option<u64>, time: Millis) -> Vec<u8> {
    // An upload in progress is not part of what the cluster holds.
    let cleared;
    let state = if state.restore.is_some() {
        cleared = State { restore: None, ..state.clone() };
        &cleared
    } else {
        state
    };
    let (json, sha) = digest(state);
    let index = index.map(|i| i.to_string()).unwrap_or_else(|| "null".into());
    let mut out =
        format!(r#"{{"format":"{FORMAT}","index":{index},"time":{time},"sha256":"{sha}","state":"#).into_bytes();
    out.extend_from_slice(&json);
    out.push(b'}');
    out
}

/// Reads and checks a snapshot file.
pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, SnapshotError> {
    let f: SnapshotFile = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
    if f.format != FORMAT {
        return Err(SnapshotError::Format(f.format));
    }
    let (_, actual) = digest(&f.state);
    if actual != f.sha256 {
        return Err(SnapshotError::Checksum { expected: f.sha256, actual });
    }
    Ok(f)
}

impl State {
    pub(super) fn restore_chunk(&mut self, upload: &str, offset: u64, data: &str) -> Result<(), StateError> {
        let current = self.restore.as_ref().filter(|r| r.upload == upload);
        let have = current.map(|r| r.data.len() as u64).unwrap_or(0);
        if offset != have {
            return Err(StateError::Conflict(format!("restore {upload}: piece at {offset}, expected {have}")));
        }
        let r = self.restore.get_or_insert_with(RestoreUpload::default);
        if r.upload != upload {
            *r = RestoreUpload { upload: upload.to_string(), data: String::new() };
        }
        r.data.push_str(data);
        Ok(())
    }

    pub(super) fn restore_commit(&mut self, upload: &str) -> Result<(), StateError> {
        let Some(r) = self.restore.as_ref().filter(|r| r.upload == upload) else {
            return Err(StateError::NotFound(format!("restore upload {upload}")));
        };
        let file = decode(r.data.as_bytes()).map_err(|e| StateError::Invalid(e.to_string()))?;
        let mut state = file.state;
        state.restore = None;
        state.meta.retain(|k, _| !LIVE_META_PREFIXES.iter().any(|p| k.starts_with(p)));
        for (k, v) in &self.meta {
            if LIVE_META_PREFIXES.iter().any(|p| k.starts_with(p)) {
                state.meta.insert(k.clone(), v.clone());
            }
        }
        *self = state;
        Ok(())
    }
}
