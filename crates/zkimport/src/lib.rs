//! # corral-zkimport
//!
//! Reads an Apache ZooKeeper 3.4–3.9 data directory and rebuilds the tree ZooKeeper itself would
//! have after a restart, as a [`corral_tree::DataTree`]: the newest valid snapshot, then every
//! logged transaction after it, applied with ZooKeeper's own restore semantics.
//!
//! What is read:
//! - Snapshots `snapshot.<zxid>` plain, `.gz` (gzip) and `.snappy` (snappy-java's stream format,
//!   decoded with the `snap` crate), with the 3.6+ digest and 3.9+ lastZxid trailers. As in
//!   ZooKeeper, the newest snapshot whose checksum holds is used and damaged ones are skipped with
//!   a warning; if snapshots exist but none is valid, the import fails (ZooKeeper refuses to start
//!   then too). With no snapshot at all, the logs are replayed onto a fresh tree.
//! - Transaction logs `log.<zxid>`: every record's Adler-32 is checked (a mismatch is an error);
//!   the valid data of a file ends at preallocated zeros, end of file or a torn last record.
//!   All txn types a log can hold are applied: create/create2/createContainer/createTTL,
//!   delete/deleteContainer, setData, reconfig, setACL, multi, check, error, createSession and
//!   closeSession (with or without the 3.6+ path list).
//! - The tree digests that ZooKeeper 3.6+ records are recomputed and compared, as ZooKeeper does
//!   on start-up ([`import_with_digest_check`] reports the result; a mismatch is only logged).
//!
//! Sessions: ZooKeeper's session passwords cannot be carried over, so by default every session
//! and every ephemeral node a session owns is dropped ([`ImportOptions::keep_sessions`] keeps
//! them). Containers and TTL nodes are not session ephemerals and stay. Dropping a child does
//! not touch its parent's pzxid (there is no zxid for the drop); the client-visible cversion of
//! the parent moves by one per dropped child, as after a delete. Either way, ephemerals of
//! sessions ZooKeeper no longer has are deleted as ZooKeeper does at start-up
//! (`ZooKeeperServer.loadData`), which moves their parents' pzxid to the last zxid.
//!
//! The semantics are those of ZooKeeper 3.6+ restoring (the version that would read the files
//! today): a replayed create moves its parent's cversion only forward, a replayed delete moves
//! the parent's pzxid forward even when the child is already gone, and a create that finds its
//! node (a fuzzy snapshot) takes the txn's ACL, as 3.9.4+ does.
//!
//! Not supported: a separate `dataLogDir` (pass the one directory holding both, or copy the logs
//! beside the snapshots); 3.5.3's emulated TTL owners (`zookeeper.emulate353TTLNodes`), whose
//! nodes would be taken for session ephemerals. Where ZooKeeper would silently stop reading a
//! log at a record whose checksum holds but which does not parse, this fails instead.

mod adler32;
mod error;
mod files;
mod jute;
mod replay;
mod snappy;
mod snapshot;
mod txn;
mod txnlog;
mod ztree;

#[cfg(test)]
mod tests;

pub use error::ImportError;

use corral_tree::{DataTree, ImportedNode, TreeConfig};
use files::ZxidFile;
use replay::Replay;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use ztree::{NodeAcl, ZNode, ZkTree};

/// How to import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Keep ZooKeeper's sessions (id → timeout) and their ephemeral nodes.
    pub keep_sessions: bool,
}

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    pub tree: DataTree,
    /// The snapshot file used (`None`: started from an empty tree).
    pub snapshot: Option<PathBuf>,
    pub snapshot_zxid: i64,
    pub last_zxid: i64,
    pub logs_read: Vec<PathBuf>,
    pub txns_replayed: u64,
    pub sessions_dropped: usize,
    /// Session ephemerals removed: all of them by default; with `keep_sessions`, only those of
    /// sessions ZooKeeper no longer had, which ZooKeeper itself deletes when it starts.
    pub ephemerals_dropped: usize,
}

/// How the rebuilt tree compared with the digests ZooKeeper 3.6+ recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestCheck {
    /// Digests compared (the snapshot's, once its txn is replayed, and each txn's after it).
    pub checked: u64,
    pub mismatches: u64,
    /// The zxid of the first comparison: the snapshot's digest, if it had one in reach.
    pub first_checked_zxid: Option<i64>,
    pub first_mismatch_zxid: Option<i64>,
    pub last_mismatch_zxid: Option<i64>,
}

/// Imports the ZooKeeper data directory `dir` (the `dataDir` holding `version-2/`, or
/// `version-2` itself).
pub fn import(dir: &Path, opts: &ImportOptions) -> Result<Imported, ImportError> {
    import_with_digest_check(dir, opts).map(|(imported, _)| imported)
}

/// [`import`], also saying whether the tree matched ZooKeeper's recorded digests.
pub fn import_with_digest_check(
    dir: &Path,
    opts: &ImportOptions,
) -> Result<(Imported, DigestCheck), ImportError> {
    let dir = files::version2_dir(dir)?;
    let listing = files::list(&dir)?;
    let (snapshot, mut replay) = start(&dir, &listing.snapshots)?;
    let logs = files::logs_to_read(&listing.logs, replay.snapshot_zxid);
    let logs_read = replay_logs(&mut replay, &logs)?;
    let digests = replay.digests;
    Ok((finish(replay, opts, snapshot, logs_read)?, digests))
}

/// The state the logs are replayed onto: the newest valid snapshot, or a fresh tree.
fn start(dir: &Path, snapshots: &[ZxidFile]) -> Result<(Option<PathBuf>, Replay), ImportError> {
    if snapshots.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            "no snapshot: replaying the logs onto an empty tree (if older logs were purged, \
             their changes are missing)"
        );
        let replay = Replay::new(ZkTree::fresh(), BTreeMap::new(), 0, None);
        return Ok((None, replay));
    }
    let (file, snap) = newest_valid_snapshot(dir, snapshots)?;
    let replay = Replay::new(snap.tree, snap.sessions, file.zxid, snap.digest);
    Ok((Some(file.path), replay))
}

/// `FileSnap.deserialize`: newest first, skipping (with a warning) any that fails.
fn newest_valid_snapshot(
    dir: &Path,
    snapshots: &[ZxidFile],
) -> Result<(ZxidFile, snapshot::Snapshot), ImportError> {
    let mut reasons = Vec::new();
    let mut tried = 0;
    for file in snapshots {
        let compression = files::compression_of(&file.path);
        if let Err(why) = snapshot::quick_check(&file.path, compression) {
            tracing::warn!(snapshot = %file.path.display(), "skipping snapshot: {why}");
            reasons.push(format!("{}: {why}", file.path.display()));
            continue;
        }
        tried += 1;
        if tried > files::MAX_SNAPSHOTS_TRIED {
            break;
        }
        match snapshot::read(&file.path, compression) {
            Ok(snap) => return Ok((file.clone(), snap)),
            Err(e) => {
                tracing::warn!("skipping invalid snapshot: {e}");
                reasons.push(e.to_string());
            }
        }
    }
    Err(ImportError::NoValidSnapshot {
        dir: dir.to_owned(),
        count: snapshots.len(),
        reasons,
    })
}

/// Replays every log in order; returns the files read.
fn replay_logs(replay: &mut Replay, logs: &[ZxidFile]) -> Result<Vec<PathBuf>, ImportError> {
    let mut read = Vec::new();
    for log in logs {
        let Some(mut reader) = txnlog::LogReader::open(&log.path)? else {
            tracing::warn!(log = %log.path.display(), "skipping empty log file");
            continue;
        };
        read.push(log.path.clone());
        while let Some(record) = reader.next_record()? {
            replay
                .apply(&record.entry)
                .map_err(|what| ImportError::BadTxn {
                    path: log.path.clone(),
                    offset: record.offset,
                    what,
                })?;
        }
    }
    Ok(read)
}

fn finish(
    mut replay: Replay,
    opts: &ImportOptions,
    snapshot: Option<PathBuf>,
    logs_read: Vec<PathBuf>,
) -> Result<Imported, ImportError> {
    let orphaned = replay.kill_dead_sessions();
    let Replay {
        tree,
        mut sessions,
        snapshot_zxid,
        last_zxid,
        txns_replayed,
        ..
    } = replay;
    let mut nodes = tree.into_nodes();
    let (sessions_dropped, ephemerals_dropped) = if opts.keep_sessions {
        (0, 0)
    } else {
        drop_sessions(&mut nodes, &mut sessions)
    };
    let ephemerals_dropped = ephemerals_dropped + orphaned;
    drop_unreachable(&mut nodes);
    let nodes = to_imported(nodes, snapshot.as_deref())?;
    let config = TreeConfig {
        extended_types: true,
        ..Default::default()
    };
    let tree = DataTree::from_imported(config, last_zxid, sessions, nodes)?;
    Ok(Imported {
        tree,
        snapshot,
        snapshot_zxid,
        last_zxid,
        logs_read,
        txns_replayed,
        sessions_dropped,
        ephemerals_dropped,
    })
}

/// Drops every session and every node a session owns; returns how many of each.
fn drop_sessions(
    nodes: &mut HashMap<String, ZNode>,
    sessions: &mut BTreeMap<i64, i32>,
) -> (usize, usize) {
    let before = nodes.len();
    nodes.retain(|_, n| !ztree::is_session_ephemeral(n.stat.ephemeral_owner));
    let dropped = (sessions.len(), before - nodes.len());
    sessions.clear();
    dropped
}

/// Removes nodes whose parent is gone. A replayed delete does not look for children (ZooKeeper
/// relies on the request having been checked), so only inconsistent input leaves such nodes;
/// ZooKeeper would keep them unreachable until its next snapshot dropped them.
fn drop_unreachable(nodes: &mut HashMap<String, ZNode>) {
    let mut paths: Vec<&String> = nodes.keys().collect();
    // A parent has one '/' fewer than its child, so it is decided first.
    paths.sort_by_key(|p| p.matches('/').count());
    let mut kept: HashSet<&str> = HashSet::with_capacity(paths.len());
    let mut lost = Vec::new();
    for p in paths {
        let parent_kept = match p.rfind('/') {
            None => p.is_empty(),
            Some(i) => kept.contains(ztree::key(&p[..i])),
        };
        if parent_kept {
            kept.insert(p);
        } else {
            lost.push(p.clone());
        }
    }
    if let Some(first) = lost.first() {
        tracing::warn!(
            count = lost.len(),
            first = %first,
            "dropping nodes whose parent does not exist"
        );
    }
    for p in lost {
        nodes.remove(&p);
    }
}

/// Converts to the tree's import form; the root `""` becomes `"/"`.
fn to_imported(
    nodes: HashMap<String, ZNode>,
    snapshot: Option<&Path>,
) -> Result<Vec<(String, ImportedNode)>, ImportError> {
    let mut out = Vec::with_capacity(nodes.len());
    for (path, node) in nodes {
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        let acl = match node.acl {
            NodeAcl::List(list) => list.as_ref().clone(),
            NodeAcl::Missing(key) => {
                return Err(ImportError::MissingAcl {
                    node: path,
                    key,
                    snapshot: snapshot.map(Path::to_owned).unwrap_or_default(),
                })
            }
        };
        let s = node.stat;
        let imported = ImportedNode {
            czxid: s.czxid,
            mzxid: s.mzxid,
            pzxid: s.pzxid,
            ctime: s.ctime,
            mtime: s.mtime,
            version: s.version,
            cversion: s.cversion,
            aversion: s.aversion,
            ephemeral_owner: s.ephemeral_owner,
            acl,
            data: node.data,
        };
        out.push((path, imported));
    }
    Ok(out)
}
