//! openraft's log storage on Corral's segmented log.
//!
//! Entries are postcard-encoded records of the segmented log, numbered by their Raft index. The
//! vote and the purge point live in small files written atomically (fsynced); the commit point is
//! a hint written without fsync (after a crash openraft simply re-applies from an earlier point).
//! Appends are written at once, so they are readable when `append` returns, and made durable on
//! a blocking thread, which then tells openraft through its callback.

use crate::types::{decode, encode, LogId, NodeId, SErr, TypeConfig};
use corral_io::{Disk, Io};
use corral_storage::fsutil::atomic_write;
use corral_storage::log::SegmentedLog;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, Entry, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

struct Inner {
    log: SegmentedLog,
    last: Option<LogId>,
    purged: Option<LogId>,
}

#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    dir: PathBuf,
    io: Io,
    pub(crate) timings: Arc<crate::ReplicaTimings>,
}

fn write_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn read_small<T: serde::de::DeserializeOwned>(
    disk: &dyn Disk,
    path: &Path,
) -> Result<Option<T>, SErr> {
    match disk.read(path) {
        Ok(bytes) => decode(&bytes).map(Some).map_err(read_err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_err(e)),
    }
}

impl LogStore {
    pub fn open(
        io: &Io,
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<LogStore, corral_storage::StorageError> {
        let mut log = SegmentedLog::open_on(io.disk.clone(), &dir.join("log"), segment_bytes)?;
        // The file holds an `Option<LogId>` (as `purge` writes it). Read as a bare `LogId`, its
        // tag byte shifted every field: a purge point of T10-N1-198 came back as T1-N10-1, and
        // a restarted member asked for entries long purged (found by the simulation, seed 2).
        let purged_path = dir.join("purged");
        let purged = if corral_io::broken::is(corral_io::broken::Broken::PurgeMisread) {
            read_small::<LogId>(&*io.disk, &purged_path)
        } else {
            read_small::<Option<LogId>>(&*io.disk, &purged_path).map(Option::flatten)
        }
        .map_err(|e| corral_storage::StorageError::Corrupt {
            path: purged_path.clone(),
            offset: 0,
            why: e.to_string(),
        })?;
        let last = match log.last_index() {
            Some(i) => {
                let bytes = log.read(i, i + 1)?.remove(0).1;
                let entry: Entry<TypeConfig> =
                    decode(&bytes).map_err(|e| corral_storage::StorageError::Corrupt {
                        path: dir.join("log"),
                        offset: i,
                        why: format!("entry {i} does not decode: {e}"),
                    })?;
                Some(entry.log_id)
            }
            None => None,
        };
        tracing::info!(
            first = log.first_index(),
            last = last.map(|l| l.index),
            purged = purged.map(|p| p.index),
            "opened the log"
        );
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner { log, last, purged })),
            dir: dir.to_owned(),
            io: io.clone(),
            timings: Default::default(),
        })
    }

    /// The last index purged from the log, if any, for recovery's check that a tree
    /// without a snapshot can still be rebuilt from the whole log.
    pub fn purged_index(&self) -> Option<u64> {
        self.inner.lock().expect("log lock").purged.map(|p| p.index)
    }

    /// The first index the log holds, for recovery's gap check.
    pub fn first_index(&self) -> Option<u64> {
        self.inner.lock().expect("log lock").log.first_index()
    }

    /// Whether the log holds the entry `id` names (same index and term).
    fn holds(&self, id: &LogId) -> bool {
        let mut inner = self.inner.lock().expect("log lock");
        let Ok(mut found) = inner.log.read(id.index, id.index + 1) else {
            return false;
        };
        found
            .pop()
            .and_then(|(_, bytes)| decode::<Entry<TypeConfig>>(&bytes).ok())
            .is_some_and(|entry| entry.log_id == *id)
    }

    fn vote_path(&self) -> PathBuf {
        self.dir.join("vote")
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let mut inner = self.inner.lock().expect("log lock");
        let (Some(first), Some(last)) = (inner.log.first_index(), inner.log.last_index()) else {
            return Ok(Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => first,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(e) => e + 1,
            Bound::Excluded(e) => *e,
            Bound::Unbounded => last + 1,
        }
        .min(last + 1);
        if start >= end {
            return Ok(Vec::new());
        }
        inner
            .log
            .read(start, end)
            .map_err(read_err)?
            .into_iter()
            .map(|(_, bytes)| decode(&bytes).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let inner = self.inner.lock().expect("log lock");
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: inner.last.or(inner.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let (path, bytes) = (self.vote_path(), encode(vote));
        let disk = self.io.disk.clone();
        self.io
            .blocking(move || atomic_write(&*disk, &path, &bytes))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        // Read back uncommitted, always. openraft restarts a member whose stored vote is a
        // committed one for itself as the leader of that same term, with no election. But a
        // leader sends entries before its own fsync of them completes, so a crash can take from
        // its log entries that followers hold: leading the same term again, it would write new
        // entries at those indexes with the same term, and followers would take theirs for
        // matching (Raft's log matching broken, trees diverged: found by the simulation, seed
        // 456 of its second version). Uncommitted, the vote still says whom this member voted
        // for in that term; it restarts as a follower and a leader is elected in a new term.
        let vote: Option<Vote<NodeId>> = read_small(&*self.io.disk, &self.vote_path())?;
        if corral_io::broken::is(corral_io::broken::Broken::ResumeLeadership) {
            return Ok(vote);
        }
        Ok(vote.map(|v| Vote {
            committed: false,
            ..v
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), SErr> {
        // A hint only: no fsync. Losing it means openraft re-applies less and the leader
        // re-commits the rest.
        let _ = self
            .io
            .disk
            .write_unsynced(&self.dir.join("committed"), &encode(&committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, SErr> {
        // Written without fsync or rename, so a crash can tear it; a torn hint is no hint.
        match read_small::<Option<LogId>>(&*self.io.disk, &self.dir.join("committed")) {
            // A member may note a commit point before its own copy of the entry is synced, and
            // a crash can then take the entry, or undo the truncation that made room for it, so
            // that an older entry of another term sits at that index again; applied, it would
            // make this member's tree diverge. The hint counts only if the log holds that very
            // entry.
            Ok(c) => Ok(c.flatten().filter(|c| self.holds(c))),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable commit hint");
                Ok(None)
            }
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = self.inner.lock().expect("log lock");
            for entry in entries {
                let index = entry.log_id.index;
                let follows = inner.log.last_index().is_none_or(|l| l + 1 == index);
                let after_purge = inner.purged.is_some_and(|p| p.index + 1 == index);
                if !follows && after_purge {
                    tracing::info!(dir = %self.dir.display(), index, "an installed snapshot supersedes the log: emptying it");
                    // An installed snapshot moved past this log: what it held is superseded.
                    if let Some(first) = inner.log.first_index() {
                        inner.log.truncate_from(first).map_err(write_err)?;
                    }
                }
                let bytes = encode(&entry);
                inner
                    .log
                    .append(entry.log_id.index, &bytes)
                    .map_err(write_err)?;
                inner.last = Some(entry.log_id);
            }
        }
        if corral_io::broken::is(corral_io::broken::Broken::AckBeforeFsync) {
            // The planted bug: durable by word only.
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let inner = self.inner.clone();
        let timings = self.timings.clone();
        let sync = move || {
            let started = corral_io::now();
            let result = inner.lock().expect("log lock").log.sync();
            timings.fsync.record(corral_io::now() - started);
            callback.log_io_completed(result.map_err(std::io::Error::other));
        };
        if self.io.inline_blocking {
            sync();
        } else {
            tokio::task::spawn_blocking(sync);
        }
        Ok(())
    }

    async fn truncate(&mut self, since: LogId) -> Result<(), SErr> {
        tracing::info!(dir = %self.dir.display(), since = since.index, "truncating the log");
        let inner = self.inner.clone();
        self.io
            .blocking(move || {
                let mut inner = inner.lock().expect("log lock");
                inner.log.truncate_from(since.index).map_err(write_err)?;
                inner.last = match since.index.checked_sub(1) {
                    Some(prev) if inner.log.last_index() == Some(prev) => {
                        let bytes = inner
                            .log
                            .read(prev, prev + 1)
                            .map_err(read_err)?
                            .remove(0)
                            .1;
                        Some(
                            decode::<Entry<TypeConfig>>(&bytes)
                                .map_err(read_err)?
                                .log_id,
                        )
                    }
                    _ => inner.purged,
                };
                Ok(())
            })
            .await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), SErr> {
        let inner = self.inner.clone();
        let path = self.dir.join("purged");
        let disk = self.io.disk.clone();
        tracing::info!(path = %path.display(), upto = upto.index, "purging the log");
        self.io
            .blocking(move || {
                atomic_write(&*disk, &path, &encode(&Some(upto))).map_err(write_err)?;
                let mut inner = inner.lock().expect("log lock");
                inner.purged = Some(upto);
                if inner.last.is_none_or(|l| l.index < upto.index) {
                    inner.last = Some(upto);
                }
                inner.log.purge_through(upto.index).map_err(write_err)?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_io::mem_disk::MemDisk;
    use openraft::CommittedLeaderId;

    /// An in-memory disk, blocking work inline.
    fn memory_io() -> Io {
        Io {
            disk: Arc::new(MemDisk::new()),
            inline_blocking: true,
            ..Io::real()
        }
    }

    #[tokio::test]
    async fn a_purge_point_reads_back_as_written() {
        let io = memory_io();
        let dir = Path::new("/raft");
        let mut store = LogStore::open(&io, dir, 1 << 20).unwrap();
        let upto = LogId::new(CommittedLeaderId::new(10, 1), 198);
        store.purge(upto).await.unwrap();
        let reopened = LogStore::open(&io, dir, 1 << 20).unwrap();
        assert_eq!(reopened.inner.lock().unwrap().purged, Some(upto));
    }

    #[tokio::test]
    async fn a_vote_reads_back_uncommitted_so_a_leader_restarts_as_a_follower() {
        let io = memory_io();
        let mut store = LogStore::open(&io, Path::new("/raft"), 1 << 20).unwrap();
        let mut led = Vote::new(7, 1);
        led.commit();
        store.save_vote(&led).await.unwrap();
        let back = store.read_vote().await.unwrap().unwrap();
        assert!(!back.is_committed());
        assert_eq!(
            back.leader_id, led.leader_id,
            "still the vote of term 7 for member 1"
        );
    }

    fn blank(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    /// A commit hint for an entry whose copy a crash replaced by an older entry of another term
    /// at the same index.
    #[tokio::test]
    async fn a_commit_hint_counts_only_for_the_entry_the_log_holds() {
        let io = memory_io();
        let dir = Path::new("/raft");
        let mut store = LogStore::open(&io, dir, 1 << 20).unwrap();
        for index in 1..=3 {
            let mut inner = store.inner.lock().unwrap();
            inner.log.append(index, &encode(&blank(1, index))).unwrap();
            inner.last = Some(blank(1, index).log_id);
        }
        store.inner.lock().unwrap().log.sync().unwrap();
        let newer = blank(2, 3).log_id;
        store.save_committed(Some(newer)).await.unwrap();
        assert_eq!(
            store.read_committed().await.unwrap(),
            None,
            "the log holds (1, 3), not (2, 3)"
        );
        let held = blank(1, 3).log_id;
        store.save_committed(Some(held)).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(held));
        store
            .save_committed(Some(blank(1, 4).log_id))
            .await
            .unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None, "past the log");
    }
}
