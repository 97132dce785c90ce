//! Making writes durable: recovery at start, the log thread, and snapshots.
//!
//! The log thread owns the segmented log. The core sends it encoded entries; the thread appends
//! everything that has queued up, syncs once (group commit: one fdatasync for the whole batch),
//! and tells the core how far the log is durable. The core applies and answers a write only
//! after that, so an acknowledged write is on disk.
//!
//! On start, [`recover`] loads the newest snapshot whose checksum holds and replays the log after
//! it. It refuses to start, with a message that says why, rather than serve a tree that could be
//! missing acknowledged writes: a damaged log, a gap between snapshot and log, or damaged
//! snapshots with no log that reaches back to the beginning.

use crate::core::CoreMsg;
use corral_storage::log::SegmentedLog;
use corral_storage::snapshot::{SnapshotId, SnapshotStore};
use corral_storage::StorageError;
use corral_tree::{DataTree, Entry, TreeConfig};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("log entry {index} cannot be decoded: {why}")]
    BadEntry { index: u64, why: String },
    #[error(
        "the newest usable snapshot ends at zxid {snapshot:#x} but the log starts at {log_first:#x}: \
         the entries between are lost; refusing to start"
    )]
    Gap { snapshot: i64, log_first: u64 },
    #[error(
        "every snapshot in {dir} is damaged ({damaged}) and the log does not reach back to the \
         first entry; refusing to serve an incomplete tree"
    )]
    NoValidSnapshot { dir: PathBuf, damaged: String },
    #[error("log entry {index} carries zxid {zxid:#x}; the log and its entries disagree")]
    Mismatch { index: u64, zxid: i64 },
}

pub struct Recovered {
    pub tree: DataTree,
    pub log: SegmentedLog,
    pub snapshots: SnapshotStore,
    pub replayed: u64,
}

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Loads the newest valid snapshot and replays the log after it.
pub fn recover(
    data_dir: &Path,
    config: TreeConfig,
    retain: usize,
    segment_bytes: u64,
) -> Result<Recovered, RecoveryError> {
    let snapshots = SnapshotStore::open(&snapshot_dir(data_dir), retain)?;
    let mut log = SegmentedLog::open(&log_dir(data_dir), segment_bytes)?;
    let (snapshot, damaged) = snapshots.load_newest_valid()?;
    let mut tree = match snapshot {
        Some(s) => {
            let tree =
                DataTree::decode_snapshot(&s.payload).map_err(|e| StorageError::Corrupt {
                    path: s.path.clone(),
                    offset: 0,
                    why: e.to_string(),
                })?;
            tracing::info!(path = %s.path.display(), zxid = format_args!("{:#x}", tree.last_zxid()), nodes = tree.node_count(), "loaded snapshot");
            tree
        }
        None => {
            let starts_at_one = log.first_index().is_none_or(|f| f == 1);
            if !damaged.is_empty() && !starts_at_one {
                let damaged = damaged
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(RecoveryError::NoValidSnapshot {
                    dir: snapshot_dir(data_dir),
                    damaged,
                });
            }
            DataTree::new(config)
        }
    };
    let from = tree.last_zxid() as u64 + 1;
    let mut replayed = 0;
    if let (Some(first), Some(last)) = (log.first_index(), log.last_index()) {
        if first > from {
            return Err(RecoveryError::Gap {
                snapshot: tree.last_zxid(),
                log_first: first,
            });
        }
        // Replay in slices so a long log is not read into memory at once.
        let mut next = from.max(first);
        while next <= last {
            let end = (next + 4096).min(last + 1);
            for (index, bytes) in log.read(next, end)? {
                let entry = Entry::decode(&bytes).map_err(|e| RecoveryError::BadEntry {
                    index,
                    why: e.to_string(),
                })?;
                if entry.zxid as u64 != index {
                    return Err(RecoveryError::Mismatch {
                        index,
                        zxid: entry.zxid,
                    });
                }
                tree.apply(&entry);
                replayed += 1;
            }
            next = end;
        }
    }
    if replayed > 0 {
        tracing::info!(
            replayed,
            zxid = format_args!("{:#x}", tree.last_zxid()),
            "replayed the log"
        );
    }
    Ok(Recovered {
        tree,
        log,
        snapshots,
        replayed,
    })
}

/// What the core asks of the log thread.
pub enum LogCmd {
    Append {
        zxid: i64,
        bytes: Vec<u8>,
    },
    /// Remove segments that the snapshot at this zxid covers.
    Purge {
        through: i64,
    },
}

/// Runs the log thread: append what queued, sync once, report. Ends when the core hangs up.
pub fn spawn_log_thread(
    mut log: SegmentedLog,
    core: mpsc::Sender<CoreMsg>,
) -> (std_mpsc::Sender<LogCmd>, std::thread::JoinHandle<()>) {
    let (tx, rx) = std_mpsc::channel::<LogCmd>();
    let handle = std::thread::Builder::new()
        .name("corral-log".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut last_zxid = None;
                let mut purge = None;
                let mut next = Some(first);
                let mut result = Ok(());
                while let Some(cmd) = next.take() {
                    match cmd {
                        LogCmd::Append { zxid, bytes } => {
                            if result.is_ok() {
                                result = log.append(zxid as u64, &bytes);
                                last_zxid = Some(zxid);
                            }
                        }
                        LogCmd::Purge { through } => purge = Some(through),
                    }
                    next = rx.try_recv().ok();
                }
                let result = result.and_then(|_| log.sync());
                let msg = match result {
                    Ok(()) => match last_zxid {
                        Some(z) => CoreMsg::Durable { zxid: z },
                        None => CoreMsg::Durable { zxid: -1 },
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "the transaction log failed; writes are refused from now on");
                        let _ = core.blocking_send(CoreMsg::LogFailed {
                            why: e.to_string(),
                        });
                        return;
                    }
                };
                if core.blocking_send(msg).is_err() {
                    return;
                }
                if let Some(through) = purge {
                    match log.purge_through(through as u64) {
                        Ok(n) if n > 0 => tracing::info!(segments = n, through = format_args!("{through:#x}"), "purged log segments covered by a snapshot"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "purging old log segments failed"),
                    }
                }
            }
        })
        .expect("spawning the log thread");
    (tx, handle)
}

/// Writes a snapshot of `tree` (a copy taken by the core) and returns the zxid it covers.
pub fn write_snapshot(store: &SnapshotStore, tree: &DataTree) -> Result<i64, StorageError> {
    let zxid = tree.last_zxid();
    let payload = tree.snapshot_bytes();
    let id = SnapshotId {
        last_index: zxid as u64,
        term: 0,
    };
    let path = store.save(id, &[], &payload)?;
    tracing::info!(path = %path.display(), zxid = format_args!("{zxid:#x}"), bytes = payload.len(), "snapshot written");
    Ok(zxid)
}
