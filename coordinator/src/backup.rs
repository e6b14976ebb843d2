//! Scheduled snapshots on the leader (`[backup]`): every `interval_s` the
//! leader writes the state as a snapshot file (`state::backup`) into `dir`
//! and keeps the newest `keep`. Files are written to a temporary name,
//! fsynced and renamed, mode 0600 (they hold password and token hashes).
//!
//! ```toml
//! [backup]
//! dir = "/var/lib/zoe/backups"
//! interval_s = 3600
//! keep = 24
//! ```

use crate::raft::Coordinator;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// Where the leader writes snapshots; none when unset.
    pub dir: Option<PathBuf>,
    pub interval_s: u64,
    /// Snapshot files kept (the oldest go first).
    pub keep: usize,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings { dir: None, interval_s: 3600, keep: 24 }
    }
}

const PREFIX: &str = "zoe-snapshot-";

/// Runs until `stop` turns true. Idle on followers and without a `dir`.
pub async fn scheduled(coord: Coordinator, settings: BackupSettings, mut stop: watch::Receiver<bool>) {
    let Some(dir) = settings.dir.clone() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(settings.interval_s.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        if coord.leader_term().is_none() {
            continue;
        }
        // Cloned under the lock, encoded outside it: applying waits for
        // neither the serialization nor the disk.
        let (state, at) = coord.read_local(|st| st.clone());
        let file = crate::state::backup::encode(&state, at.applied_index, crate::leader::now_ms());
        let (dir, keep) = (dir.clone(), settings.keep.max(1));
        match tokio::task::spawn_blocking(move || write_and_prune(&dir, &file, keep)).await {
            Ok(Ok(path)) => tracing::info!(path = %path.display(), "scheduled snapshot written"),
            Ok(Err(e)) => tracing::warn!(error = %e, "scheduled snapshot failed"),
            Err(e) => tracing::warn!(error = %e, "scheduled snapshot task failed"),
        }
    }
}

/// Writes `data` to `path` readable by its owner only (snapshots hold
/// password and token hashes), durably and whole: through a temporary file
/// in the same directory, fsynced, renamed, and the directory fsynced.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other(format!("{}: not a file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `file` as a new snapshot in `dir`, then deletes all but the
/// newest `keep`. Returns the new file's path.
pub fn write_and_prune(dir: &Path, file: &[u8], keep: usize) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(format!("{PREFIX}{}.json", crate::leader::now_ms()));
    write_private(&path, file)?;
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".json"))
        })
        .collect();
    // Names carry the time in ms: same width for centuries, so they sort.
    all.sort();
    let excess = all.len().saturating_sub(keep);
    for old in &all[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshots_are_written_private_and_pruned_to_keep() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = crate::state::backup::encode(&crate::state::State::default(), Some(7), 1);
        let mut last = None;
        for _ in 0..4 {
            last = Some(super::write_and_prune(dir.path(), &file, 2).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let last = last.unwrap();
        assert!(names.contains(&last));
        assert_eq!(std::fs::metadata(&last).unwrap().permissions().mode() & 0o777, 0o600);
        let back = crate::state::backup::decode(&std::fs::read(&last).unwrap()).unwrap();
        assert_eq!((back.index, back.state), (Some(7), crate::state::State::default()));
    }
}
