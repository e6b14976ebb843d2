//! Durable Raft storage in sled.
//!
//! Layout (per coordinator, under `data_dir`):
//! - sled database `raft/`: tree `log` (big-endian u64 index → bincode
//!   [`WireEntry`]) and tree `meta` (`vote`, `committed`, `last_purged`);
//! - `snapshot/current`: bincode `(SnapshotMeta, JSON state)`, replaced
//!   atomically (write, fsync, rename, fsync the directory).
//!
//! Durability: an append is inserted into sled and its completion callback
//! queued to one flusher task, which syncs once for every callback that
//! arrived meanwhile and only then reports them durable (group commit: one
//! sync per batch of appends, never an acknowledgement before the sync).
//! Votes are synced before `save_vote` returns.
//!
//! "Sync" is [`Durable::sync`]: sled's `flush` followed by an fdatasync of
//! sled's data file. sled 0.34 flushes with `sync_file_range` on Linux,
//! which survives a process crash but neither commits file metadata nor
//! flushes the device's write cache, so on its own it would not survive a
//! power loss. sled also never syncs its blob files (values larger than a
//! quarter segment), which is why snapshots are plain files here, the
//! segment size is raised to 8 MiB and commands over 1 MiB are refused.
//!
//! The state machine lives in memory. Its applied index and membership are
//! persisted with every snapshot; on restart it is restored from the latest
//! snapshot and openraft re-applies the committed log after it (the commit
//! index is saved too, at most once a second and at a clean stop, so most
//! of that happens at start-up; the rest at the leader's next heartbeat).

use super::{CoordNode, Entry, LogId, NodeId, StoredMembership, TypeConfig, WireEntry, codec};
use crate::state::State;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, Vote,
};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

type SErr = StorageError<NodeId>;

fn io_err(e: impl ToString) -> AnyError {
    AnyError::error(e.to_string())
}

/// Sentinel for "no index" in atomics.
const NONE: u64 = u64::MAX;

/// Largest command accepted into the log (JSON bytes); keeps every log
/// value well below sled's blob threshold (see the module docs).
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// Opens (or creates) the sled database under `dir`.
pub fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    // The page cache only holds the log tail; keep it modest. 8 MiB
    // segments put sled's (never synced) blob threshold at ~2 MiB.
    sled::Config::new().path(dir.join("raft")).cache_capacity(64 * 1024 * 1024).segment_size(8 * 1024 * 1024).open()
}

/// sled flush + fdatasync of sled's data file: see the module docs.
#[derive(Clone)]
pub struct Durable {
    db: sled::Db,
    file: Arc<std::fs::File>,
}

impl Durable {
    pub fn open(db: &sled::Db, dir: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(dir.join("raft").join("db"))?;
        Ok(Durable { db: db.clone(), file: Arc::new(file) })
    }

    /// Blocks the calling thread: flush and fdatasync run back to back on
    /// it, with no hand-off between them (each hand-off to another thread
    /// costs a wake-up on the path of every one-writer commit).
    pub fn sync_blocking(&self) -> std::io::Result<()> {
        self.db.flush().map_err(|e| std::io::Error::other(e.to_string()))?;
        self.file.sync_data()
    }

    pub async fn sync(&self) -> std::io::Result<()> {
        let d = self.clone();
        tokio::task::spawn_blocking(move || d.sync_blocking()).await.map_err(std::io::Error::other)?
    }
}

// ---------------------------------------------------------------- log store

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    durable: Durable,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    committed: Arc<AtomicU64>,
    persisted: Arc<Mutex<CommitIndexWrites>>,
    stats: Arc<LogStats>,
}

/// The commit index is written to sled at most this often (and at a clean
/// stop): see `save_committed`.
const COMMITTED_WRITE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct CommitIndexWrites {
    latest: Option<LogId>,
    written_at: Option<Instant>,
}

/// Counters showing how well appends are batched into syncs.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Entries appended.
    pub entries: AtomicU64,
    /// `append` calls.
    pub appends: AtomicU64,
    /// Group-commit syncs of the log.
    pub syncs: AtomicU64,
}

impl LogStore {
    /// Starts the flusher thread, which ends when the last clone of the
    /// store is dropped.
    pub fn open(db: &sled::Db, durable: Durable) -> Result<Self, sled::Error> {
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(LogStats::default());
        let (d, st) = (durable.clone(), stats.clone());
        std::thread::Builder::new()
            .name("zoe-log-flusher".into())
            .spawn(move || flusher(d, rx, st))
            .map_err(sled::Error::Io)?;
        let store = LogStore {
            durable,
            log,
            meta,
            flusher: tx,
            committed: Arc::new(AtomicU64::new(NONE)),
            persisted: Arc::default(),
            stats,
        };
        if let Ok(Some(c)) = store.get_meta::<LogId>("committed") {
            store.committed.store(c.index, Ordering::Relaxed);
        }
        Ok(store)
    }

    /// The last commit index this node learned (for status output).
    pub fn committed_index(&self) -> Option<u64> {
        match self.committed.load(Ordering::Relaxed) {
            NONE => None,
            i => Some(i),
        }
    }

    pub fn committed_handle(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// Writes the latest commit index (before the final sync of a clean
    /// stop, so a restart re-applies the whole committed log at once).
    pub fn write_commit_index(&self) -> Result<(), SErr> {
        let latest = self.persisted.lock().expect("commit index lock").latest;
        match latest {
            Some(c) => self.put_meta("committed", &c),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SErr> {
        match self.meta.get(key).map_err(|e| StorageIOError::read(&e))? {
            None => Ok(None),
            Some(v) => codec::unbin(&v).map(Some).map_err(|e| StorageIOError::read(io_err(e)).into()),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), SErr> {
        let b = codec::bin(v).map_err(|e| StorageIOError::write(io_err(e)))?;
        self.meta.insert(key, b).map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }
}

/// Group commit: waits for appends, fsyncs once for all that are queued,
/// then completes them in order. Its own thread, not a task: the sync
/// blocks anyway, and a task would hand each one to the blocking pool and
/// back (two wake-ups per commit on the leader and on each follower).
fn flusher(durable: Durable, rx: mpsc::Receiver<LogFlushed<TypeConfig>>, stats: Arc<LogStats>) {
    let mut batch = Vec::new();
    while let Ok(cb) = rx.recv() {
        batch.push(cb);
        while let Ok(cb) = rx.try_recv() {
            batch.push(cb);
        }
        let res = durable.sync_blocking();
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        for cb in batch.drain(..) {
            cb.log_io_completed(match &res {
                Ok(_) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            });
        }
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode_entry(v: &[u8]) -> Result<Entry, SErr> {
    let w: WireEntry = codec::unbin(v).map_err(|e| StorageIOError::read_logs(io_err(e)))?;
    w.into_entry().map_err(|e| StorageIOError::read_logs(io_err(e)).into())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let iter = match range.end_bound() {
            Bound::Included(i) => self.log.range(key(start)..=key(*i)),
            Bound::Excluded(i) => {
                if *i <= start {
                    return Ok(Vec::new());
                }
                self.log.range(key(start)..key(*i))
            }
            Bound::Unbounded => self.log.range(key(start)..),
        };
        let mut out = Vec::new();
        for kv in iter {
            let (_, v) = kv.map_err(|e| StorageIOError::read_logs(&e))?;
            out.push(decode_entry(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let last_purged: Option<LogId> = self.get_meta("last_purged")?;
        let last = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some((_, v)) => Some(decode_entry(&v)?.log_id),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        self.put_meta("vote", vote).map_err(|_| StorageIOError::write_vote(io_err("sled insert")))?;
        self.durable.sync().await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), SErr> {
        // Neither flushed nor written every time, on purpose: a lost or stale
        // commit index is only an optimisation lost (the leader re-sends it),
        // while each write costs the next log sync one more write-out. sled
        // keeps writes in order, so it can never come back ahead of the log
        // it refers to.
        if let Some(c) = committed {
            self.committed.store(c.index, Ordering::Relaxed);
            let due = {
                let mut p = self.persisted.lock().expect("commit index lock");
                p.latest = Some(c);
                let due = p.written_at.is_none_or(|t| t.elapsed() >= COMMITTED_WRITE_EVERY);
                if due {
                    p.written_at = Some(Instant::now());
                }
                due
            };
            if due {
                self.put_meta("committed", &c)?;
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, SErr> {
        if let Some(c) = self.persisted.lock().expect("commit index lock").latest {
            return Ok(Some(c));
        }
        self.get_meta("committed")
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.stats.appends.fetch_add(1, Ordering::Relaxed);
        let mut rows = Vec::new();
        for e in entries {
            self.stats.entries.fetch_add(1, Ordering::Relaxed);
            let w = WireEntry::from_entry(&e).map_err(|m| StorageIOError::write_logs(io_err(m)))?;
            let b = codec::bin(&w).map_err(|m| StorageIOError::write_logs(io_err(m)))?;
            rows.push((key(e.log_id.index), b));
        }
        // One entry needs no batch: a sled batch adds a manifest record,
        // which the sync then writes out on its own (one more pwrite and
        // sync_file_range on the path of every one-writer commit).
        let written = if rows.len() == 1 {
            let (k, b) = rows.pop().expect("one row");
            self.log.insert(k, b).map(drop)
        } else {
            let mut batch = sled::Batch::default();
            for (k, b) in rows {
                batch.insert(&k, b);
            }
            self.log.apply_batch(batch)
        };
        written.map_err(|e| StorageIOError::write_logs(&e))?;
        self.flusher.send(callback).map_err(|_| StorageIOError::write_logs(io_err("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), SErr> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range(key(log_id.index)..) {
            let (k, _) = kv.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        // Synced so a conflicting suffix cannot reappear after a crash.
        self.durable.sync().await.map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), SErr> {
        // `last_purged` first: if we crash in between, the log state is
        // still correct (leftover entries below it are ignored).
        self.put_meta("last_purged", &log_id)?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=key(log_id.index)) {
            let (k, _) = kv.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

// ------------------------------------------------------------ state machine

/// The applied state: what reads see.
#[derive(Debug, Clone, Default)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

/// The state machine: [`State`] in memory, snapshots in files.
#[derive(Clone)]
pub struct StateMachineStore {
    data: Arc<RwLock<SmData>>,
    /// `<data_dir>/snapshot`.
    dir: std::path::PathBuf,
    /// Snapshots received from a leader since start (status, tests).
    installed: Arc<AtomicU64>,
}

type StoredSnapshot = (SnapshotMeta<NodeId, CoordNode>, Vec<u8>);

impl StateMachineStore {
    /// Opens the state machine, restoring it from the latest snapshot.
    pub fn open(data_dir: &Path) -> Result<Self, SErr> {
        let dir = data_dir.join("snapshot");
        std::fs::create_dir_all(&dir).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let sm = StateMachineStore {
            data: Arc::new(RwLock::new(SmData::default())),
            dir,
            installed: Arc::new(AtomicU64::new(0)),
        };
        if let Some((meta, data)) = sm.load_snapshot()? {
            let state: State = codec::unjson(&data).map_err(|e| StorageIOError::read_snapshot(None, io_err(e)))?;
            let mut d = sm.data.write().expect("state machine lock");
            *d = SmData { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state };
        }
        Ok(sm)
    }

    /// Shared read access to the applied state.
    pub fn data(&self) -> Arc<RwLock<SmData>> {
        self.data.clone()
    }

    pub fn snapshots_installed(&self) -> u64 {
        self.installed.load(Ordering::Relaxed)
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, SErr> {
        match std::fs::read(self.dir.join("current")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageIOError::read_snapshot(None, &e).into()),
            Ok(v) => codec::unbin(&v).map(Some).map_err(|e| StorageIOError::read_snapshot(None, io_err(e)).into()),
        }
    }

    /// Replaces the current snapshot file atomically and durably.
    async fn save_snapshot(&self, meta: &SnapshotMeta<NodeId, CoordNode>, data: &[u8]) -> Result<(), SErr> {
        let sig = Some(meta.signature());
        let b = codec::bin(&(meta, data)).map_err(|e| StorageIOError::write_snapshot(sig.clone(), io_err(e)))?;
        let dir = self.dir.clone();
        let write = move || -> std::io::Result<()> {
            use std::io::Write;
            let tmp = dir.join("current.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&b)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join("current"))?;
            std::fs::File::open(&dir)?.sync_all()
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), io_err(e)))?
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        // Copy under the lock, serialise outside it: applies keep flowing
        // while a snapshot is written.
        let (last_applied, membership, state) = {
            let d = self.data.read().expect("state machine lock");
            (d.last_applied, d.membership.clone(), d.state.clone())
        };
        let data = tokio::task::spawn_blocking(move || codec::json(&state))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, io_err(e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, io_err(e)))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, now_nanos()),
            None => format!("empty-{}", now_nanos()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        self.save_snapshot(&meta, &data).await?;
        tracing::info!(index = ?last_applied.map(|l| l.index), bytes = data.len(), "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), SErr> {
        let d = self.data.read().expect("state machine lock");
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<super::CommandResult>>, SErr>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut d = self.data.write().expect("state machine lock");
        let mut out = Vec::new();
        for e in entries {
            d.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Vec::new()),
                EntryPayload::Normal(p) => out.push(p.commands.iter().map(|c| d.state.apply(c)).collect()),
                EntryPayload::Membership(m) => {
                    d.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Vec::new());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, CoordNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let state: State =
            codec::unjson(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), io_err(e)))?;
        self.save_snapshot(meta, &data).await?;
        {
            let mut d = self.data.write().expect("state machine lock");
            *d = SmData { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state };
        }
        self.installed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(index = ?meta.last_log_id.map(|l| l.index), bytes = data.len(), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        Ok(self.load_snapshot()?.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), SErr> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let db = open_db(dir.path()).map_err(|e| StorageIOError::write(&e))?;
            let durable = Durable::open(&db, dir.path()).map_err(|e| StorageIOError::write(&e))?;
            let log = LogStore::open(&db, durable).map_err(|e| StorageIOError::write(&e))?;
            let sm = StateMachineStore::open(dir.path())?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage test suite against the sled store.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }

    #[test]
    fn state_machine_survives_reopen_through_snapshot() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let cmd = crate::state::Command::SetMeta { key: "k".into(), value: "v".into() };
            let cmd = super::super::Proposal { commands: vec![cmd] };
            {
                let mut sm = StateMachineStore::open(dir.path()).unwrap();
                let lid = LogId::new(openraft::CommittedLeaderId::new(1, 1), 1);
                let r = sm.apply(vec![Entry { log_id: lid, payload: EntryPayload::Normal(cmd) }]).await.unwrap();
                assert_eq!(r, vec![vec![Ok(crate::state::Applied::Done)]]);
                sm.build_snapshot().await.unwrap();
            }
            let mut sm = StateMachineStore::open(dir.path()).unwrap();
            let (applied, _) = sm.applied_state().await.unwrap();
            assert_eq!(applied.map(|l| l.index), Some(1));
            assert_eq!(sm.data().read().unwrap().state.meta.get("k").map(String::as_str), Some("v"));
        });
    }
}
