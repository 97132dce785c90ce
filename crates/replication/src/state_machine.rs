//! openraft's state machine, as a proxy to Corral's core.
//!
//! The core owns the data tree, so that reads, watches and session ordering stay in one task.
//! `apply` hands committed batches to the core and waits until it has applied them; snapshots ask
//! the core for a copy of the tree together with the log position it reflects (one message, so the
//! two always match), and an installed snapshot replaces the core's tree.

use crate::types::{decode, encode, LogId, SErr, StoredMembership, TypeConfig};
use corral_storage::snapshot::{SnapshotId, SnapshotStore};
use corral_tree::{Batch, DataTree};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
};
use std::io::Cursor;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How far the state machine has applied the log: an opaque mark the core keeps with its tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedMark {
    pub(crate) last: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

impl AppliedMark {
    /// The Raft index of the last applied entry (0 before any).
    pub fn index(&self) -> u64 {
        self.last.map_or(0, |l| l.index)
    }

    /// The term of the leader that appended the last applied entry.
    pub fn term(&self) -> u64 {
        self.last.map_or(0, |l| l.leader_id.term)
    }

    /// The mark of the entry at `index` that `leader` appended in `term`, with no membership
    /// recorded: for driving the core without a log (tests, simulation).
    pub fn at(term: u64, leader: crate::NodeId, index: u64) -> AppliedMark {
        AppliedMark {
            last: Some(LogId::new(
                openraft::CommittedLeaderId::new(term, leader),
                index,
            )),
            membership: StoredMembership::default(),
        }
    }
}

/// One committed log entry for the core: its position, and the batch it carries (none for the
/// entries Raft writes for itself).
#[derive(Clone)]
pub struct Applying {
    pub mark: AppliedMark,
    pub batch: Option<Batch>,
}

/// What the replication layer asks of the core.
pub enum ToCore {
    Apply {
        entries: Vec<Applying>,
        done: oneshot::Sender<()>,
    },
    /// Start a snapshot of the tree as it is now: the core calls `take.start` at once.
    Snapshot {
        take: SnapshotTaker,
        reply: oneshot::Sender<SnapshotStarted>,
    },
    /// Replace the tree by a snapshot received from the leader.
    Install {
        tree: Box<DataTree>,
        mark: AppliedMark,
        done: oneshot::Sender<()>,
    },
    AppliedState {
        reply: oneshot::Sender<AppliedMark>,
    },
    /// A touch round from another member (the leader decides expiry): sessions heard from,
    /// each with how many milliseconds before the round was sent. The core keeps each alive
    /// for its timeout from then and replies with the sessions it does not know or is closing.
    Touch {
        sessions: Vec<(i64, u32)>,
        reply: oneshot::Sender<Vec<i64>>,
    },
    /// Proposals of this member that no leader took: their clients must be told.
    Lost {
        seqs: Vec<u64>,
    },
    /// The log can no longer be written (a storage failure stopped Raft).
    Stopped {
        why: LogStopped,
    },
    /// The membership changed (see `ReplicaHandle::membership`).
    Membership,
    /// This member's role or the leader changed.
    Role {
        role: crate::Role,
        leader: Option<u64>,
        /// The current Raft term, which proposals are stamped with.
        term: u64,
    },
}

/// Starts a snapshot inside the core, at the exact point it must reflect.
///
/// The core forks: the child process holds a copy-on-write image of the tree, writes the
/// snapshot file from it and exits, while the core goes on at once (its pause is the fork's
/// page-table copy, not a copy of the tree). The child takes no locks and writes no logs: only
/// the thread that forked exists in it. If fork fails, the tree is copied instead.
pub struct SnapshotTaker {
    store: Arc<SnapshotStore>,
    /// Whether a child process may write it (not on a simulated disk, which lives in this
    /// process's memory).
    fork: bool,
}

/// How a snapshot was started.
pub enum SnapshotStarted {
    Forked {
        pid: i32,
        mark: AppliedMark,
    },
    Copied {
        tree: Box<DataTree>,
        mark: AppliedMark,
    },
}

fn meta_for(mark: &AppliedMark) -> SnapshotMeta<u64, crate::CorralNode> {
    let last = mark.last.unwrap_or_default();
    SnapshotMeta {
        last_log_id: mark.last,
        last_membership: mark.membership.clone(),
        snapshot_id: format!("{}-{}", last.leader_id.term, last.index),
    }
}

impl SnapshotTaker {
    pub fn start(self, tree: &DataTree, mark: &AppliedMark) -> SnapshotStarted {
        if !self.fork {
            return SnapshotStarted::Copied {
                tree: Box::new(tree.clone()),
                mark: mark.clone(),
            };
        }
        // SAFETY: the child only allocates, writes files and calls _exit; it touches no lock
        // another thread could have held at the fork (no logging, no runtime).
        let server = unsafe { libc::getpid() };
        match unsafe { libc::fork() } {
            0 => {
                // Dies with the server: a SIGKILLed server must not leave a child that finishes
                // (and prunes old snapshots) under the feet of the server restarted after it.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != server {
                        libc::_exit(1);
                    }
                    // Nor keep the server's sockets (the client port above all) or log files
                    // open: only stdin, stdout and stderr stay.
                    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                }
                let meta = meta_for(mark);
                let ok = save(&self.store, &meta, &tree.snapshot_bytes()).is_ok();
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid if pid > 0 => SnapshotStarted::Forked {
                pid,
                mark: mark.clone(),
            },
            _ => SnapshotStarted::Copied {
                tree: Box::new(tree.clone()),
                mark: mark.clone(),
            },
        }
    }
}

/// Waits for a snapshot child to exit; whether it succeeded.
fn wait_child(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

pub struct StateMachine {
    pub(crate) core: mpsc::Sender<ToCore>,
    pub(crate) snapshots: Arc<SnapshotStore>,
    /// The snapshot recovery loaded, handed to openraft's first `get_current_snapshot`.
    pub(crate) loaded: Option<LoadedSnapshot>,
    /// Set once Raft runs: after a snapshot, the log it makes redundant is purged through it.
    pub(crate) raft: Arc<std::sync::OnceLock<crate::types::Raft>>,
    pub(crate) timings: Arc<crate::ReplicaTimings>,
    pub(crate) io: corral_io::Io,
    /// Whether this process has applied an entry with writes yet, or is a new member with
    /// nothing to replay (read only by the planted `ApplyTwice` bug of the simulation,
    /// `corral_io::broken`, whose replay after a restart applies its first entry twice).
    pub(crate) applied_writes: bool,
}

fn sm_err(e: impl std::fmt::Display) -> SErr {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

impl StateMachine {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> ToCore) -> Result<T, SErr> {
        let (tx, rx) = oneshot::channel();
        self.core
            .send(make(tx))
            .await
            .map_err(|_| sm_err("the core has stopped"))?;
        rx.await.map_err(|_| sm_err("the core has stopped"))
    }
}

/// The file a snapshot with this meta is stored as.
fn id_of(meta: &SnapshotMeta<u64, crate::CorralNode>) -> SnapshotId {
    let last = meta.last_log_id.unwrap_or_default();
    SnapshotId {
        last_index: last.index,
        term: last.leader_id.term,
    }
}

/// Writes a snapshot file: meta (postcard) and the tree bytes.
fn save(
    store: &SnapshotStore,
    meta: &SnapshotMeta<u64, crate::CorralNode>,
    tree: &[u8],
) -> Result<(), SErr> {
    store
        .save(id_of(meta), &encode(meta), tree)
        .map(|_| ())
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)).into())
}

/// A snapshot's meta and its tree bytes.
pub type LoadedSnapshot = (SnapshotMeta<u64, crate::CorralNode>, Vec<u8>);

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Storage(#[from] corral_storage::StorageError),
    #[error("{path}: bad snapshot meta: {source}")]
    Meta {
        path: std::path::PathBuf,
        source: postcard::Error,
    },
    #[error("{path}: {source}")]
    Tree {
        path: std::path::PathBuf,
        source: corral_tree::DecodeError,
    },
}

/// Loads the newest valid snapshot, for start-up and for `get_current_snapshot`.
pub fn load_newest(store: &SnapshotStore) -> Result<Option<LoadedSnapshot>, SnapshotError> {
    let (snapshot, _damaged) = store.load_newest_valid()?;
    snapshot.map(with_meta).transpose()
}

/// A loaded snapshot file's meta, decoded.
pub fn with_meta(
    s: corral_storage::snapshot::LoadedSnapshot,
) -> Result<LoadedSnapshot, SnapshotError> {
    let meta = decode(&s.meta).map_err(|source| SnapshotError::Meta {
        path: s.path.clone(),
        source,
    })?;
    Ok((meta, s.payload))
}

pub fn mark_of(meta: &SnapshotMeta<u64, crate::CorralNode>) -> AppliedMark {
    AppliedMark {
        last: meta.last_log_id,
        membership: meta.last_membership.clone(),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let started_at = corral_io::now();
        let take = SnapshotTaker {
            store: self.snapshots.clone(),
            fork: self.io.fork_snapshots,
        };
        let started = self.ask(|reply| ToCore::Snapshot { take, reply }).await?;
        let store = self.snapshots.clone();
        let snapshot = self.io.blocking(move || {
            let (meta, bytes) = match started {
                SnapshotStarted::Forked { pid, mark } => {
                    if !wait_child(pid) {
                        return Err(sm_err("the snapshot writer process failed"));
                    }
                    let meta = meta_for(&mark);
                    let last = mark.last.unwrap_or_default();
                    let id = SnapshotId {
                        last_index: last.index,
                        term: last.leader_id.term,
                    };
                    let loaded = store
                        .load(id)
                        .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
                    (meta, loaded.payload)
                }
                SnapshotStarted::Copied { tree, mark } => {
                    let meta = meta_for(&mark);
                    let bytes = tree.snapshot_bytes();
                    save(&store, &meta, &bytes)?;
                    (meta, bytes)
                }
            };
            tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "snapshot written");
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            })
        })
        .await?;
        self.timings.snapshot.record(corral_io::now() - started_at);
        // Keep the log the oldest retained snapshot needs, so any of them can serve as a
        // fallback if a newer one is found damaged.
        if let (Ok(list), Some(raft)) = (self.snapshots.list(), self.raft.get()) {
            if let Some(oldest) = list.last() {
                let raft = raft.clone();
                let upto = oldest.last_index;
                tokio::spawn(async move {
                    let _ = raft.trigger().purge_log(upto).await;
                });
            }
        }
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), SErr> {
        let mark = self.ask(|reply| ToCore::AppliedState { reply }).await?;
        Ok((mark.last, mark.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        let mut membership = self
            .ask(|reply| ToCore::AppliedState { reply })
            .await?
            .membership;
        for entry in entries {
            let payload = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(p) => Some(Batch::decode(&p.0).map_err(|e| {
                    StorageIOError::apply(entry.log_id, AnyError::error(e.to_string()))
                })?),
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
            };
            let applying = Applying {
                mark: AppliedMark {
                    last: Some(entry.log_id),
                    membership: membership.clone(),
                },
                batch: payload,
            };
            let first_writes =
                applying.batch.is_some() && !std::mem::replace(&mut self.applied_writes, true);
            if first_writes && corral_io::broken::is(corral_io::broken::Broken::ApplyTwice) {
                tracing::warn!(
                    index = entry.log_id.index,
                    "planted bug: applying an entry twice"
                );
                batch.push(applying.clone());
            }
            batch.push(applying);
        }
        let n = batch.len();
        self.ask(|done| ToCore::Apply {
            entries: batch,
            done,
        })
        .await?;
        Ok(vec![(); n])
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine {
            core: self.core.clone(),
            snapshots: self.snapshots.clone(),
            loaded: None,
            raft: self.raft.clone(),
            timings: self.timings.clone(),
            io: self.io.clone(),
            applied_writes: true,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, crate::CorralNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let bytes = snapshot.into_inner();
        let tree = DataTree::decode_snapshot(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e.to_string())))?;
        let store = self.snapshots.clone();
        let meta_copy = meta.clone();
        self.io
            .blocking(move || save(&store, &meta_copy, &bytes))
            .await?;
        let mark = mark_of(meta);
        let tree = Box::new(tree);
        self.ask(|done| ToCore::Install { tree, mark, done })
            .await?;
        self.timings
            .snapshots_installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        if let Some((meta, bytes)) = self.loaded.take() {
            // Still the newest on disk (nothing is written before Raft first asks at start).
            let newest = self.snapshots.list().ok().and_then(|l| l.first().copied());
            if newest.is_some_and(|id| id_of(&meta) == id) {
                return Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(bytes)),
                }));
            }
        }
        let store = self.snapshots.clone();
        let loaded = self
            .io
            .blocking(move || load_newest(&store))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(loaded.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// Why the replicated log takes no more writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogStopped {
    #[error("the replicated log stopped after a storage failure")]
    StorageFailed,
    #[error("a write to the replicated log failed: {0}")]
    WriteFailed(String),
    #[error("the replicated log has shut down")]
    ShutDown,
}

/// Why a data directory cannot be seeded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{0} already holds Corral data; seed an empty directory")]
    NotEmpty(std::path::PathBuf),
    #[error(transparent)]
    Storage(#[from] corral_storage::StorageError),
    #[error("cannot write the snapshot: {0}")]
    Write(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Seeds an empty data directory with a tree from elsewhere (`corral import`): a snapshot that
/// reflects no log entry, so the member starts as a new one whose state begins with this tree.
/// Every member of an ensemble must be seeded with the same tree.
pub fn seed_data_dir(data_dir: &std::path::Path, tree: &DataTree) -> Result<(), SeedError> {
    let has_data = |d: &std::path::Path| {
        std::fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some())
    };
    let snapshots = data_dir.join("snapshots");
    let raft = data_dir.join("raft");
    if has_data(&snapshots) || has_data(&raft.join("log")) {
        return Err(SeedError::NotEmpty(data_dir.to_owned()));
    }
    let store = SnapshotStore::open(&snapshots, 1)?;
    let meta = meta_for(&AppliedMark::default());
    save(&store, &meta, &tree.snapshot_bytes()).map_err(|e| SeedError::Write(Box::new(e)))
}
