//! Applying logged transactions to a restored tree, as `FileTxnSnapLog.fastForwardFromEdits`,
//! `processTransaction` and `DataTree.processTxn` do: sessions are tracked beside the tree,
//! NoNode and NodeExists are ignored (a fuzzy snapshot may already hold a txn's effect), and a
//! top-level or multi `create` that finds its node fixes up the parent's cversion and pzxid.
//!
//! It also checks the tree digests ZooKeeper 3.6+ records (in the snapshot and after every txn)
//! against the tree it rebuilds. ZooKeeper only logs a mismatch; so does this, and counts it.

use crate::snapshot::ZxidDigest;
use crate::txn::{op, Create, LogEntry, Txn, TxnHeader};
use crate::ztree::{ApplyError, NodeAcl, ZkTree};
use crate::DigestCheck;
use corral_proto::codes::ephemeral_owner;
use std::collections::BTreeMap;

/// The digest algorithm this importer computes (`DigestCalculator.DIGEST_VERSION`).
const DIGEST_VERSION: i32 = 2;

/// A restore in progress.
#[derive(Debug)]
pub struct Replay {
    pub tree: ZkTree,
    pub sessions: BTreeMap<i64, i32>,
    /// The zxid the snapshot's file name gives; txns up to it are skipped.
    pub snapshot_zxid: i64,
    /// The highest zxid applied (ZooKeeper's lastProcessedZxid).
    pub last_zxid: i64,
    pub txns_replayed: u64,
    pub digests: DigestCheck,
    /// The snapshot's digest, until the txn it was taken after has been replayed.
    pending_snapshot_digest: Option<ZxidDigest>,
    /// Still skipping the txns at the start of the first log that the snapshot already has.
    fast_forwarding: bool,
}

impl Replay {
    pub fn new(
        tree: ZkTree,
        sessions: BTreeMap<i64, i32>,
        snapshot_zxid: i64,
        snapshot_digest: Option<ZxidDigest>,
    ) -> Self {
        // `DataTree.deserializeZxidDigest`: an empty digest (zxid 0) or one older than the
        // snapshot's name (a new leader's snapshot at epoch+0) cannot be checked.
        let pending = snapshot_digest.filter(|d| d.zxid > 0 && d.zxid >= snapshot_zxid);
        let mut replay = Replay {
            tree,
            sessions,
            snapshot_zxid,
            last_zxid: snapshot_zxid,
            txns_replayed: 0,
            digests: DigestCheck::default(),
            pending_snapshot_digest: pending,
            fast_forwarding: true,
        };
        // A snapshot that is not fuzzy carries its own digest (`FileSnap.deserialize`).
        replay.check_snapshot_digest(snapshot_zxid);
        replay
    }

    /// Applies one logged txn. `Err` is a txn ZooKeeper itself could not apply.
    pub fn apply(&mut self, entry: &LogEntry) -> Result<(), String> {
        let h = &entry.header;
        if self.fast_forwarding {
            if h.zxid <= self.snapshot_zxid {
                return Ok(());
            }
            self.fast_forwarding = false;
        }
        if h.zxid < self.last_zxid {
            tracing::warn!(
                zxid = format_args!("{:#x}", h.zxid),
                after = format_args!("{:#x}", self.last_zxid),
                "txn zxid goes backwards in the log; applying it anyway, as ZooKeeper does"
            );
        }
        match &entry.txn {
            Txn::CreateSession { timeout_ms } => {
                self.sessions.insert(h.client_id, *timeout_ms);
            }
            Txn::CloseSession { .. } => {
                self.sessions.remove(&h.client_id);
            }
            _ => {}
        }
        process_txn(&mut self.tree, h, &entry.txn)?;
        self.last_zxid = self.last_zxid.max(h.zxid);
        self.txns_replayed += 1;
        self.check_snapshot_digest(h.zxid);
        if let Some(d) = entry.digest {
            if self.pending_snapshot_digest.is_none() && d.version == DIGEST_VERSION {
                self.compare_digest(h.zxid, d.tree_digest);
            }
        }
        Ok(())
    }

    /// `ZooKeeperServer.loadData`: once restored, ZooKeeper deletes the ephemerals of sessions it
    /// no longer has (their closeSession was lost, or came before the snapshot's session list
    /// was written), as of the last zxid. Returns how many nodes went.
    pub fn kill_dead_sessions(&mut self) -> usize {
        let before = self.tree.len();
        for session in self.tree.ephemeral_owners() {
            if !self.sessions.contains_key(&session) {
                // Only `Invalid` paths can fail, and those never get into the tree.
                let _ = self.tree.kill_session(session, self.last_zxid, None);
            }
        }
        before - self.tree.len()
    }

    /// `DataTree.compareSnapshotDigests`.
    fn check_snapshot_digest(&mut self, zxid: i64) {
        let Some(d) = self.pending_snapshot_digest else {
            return;
        };
        if d.zxid != zxid {
            return;
        }
        self.pending_snapshot_digest = None;
        if let (DIGEST_VERSION, Some(digest)) = (d.version, d.digest) {
            self.compare_digest(zxid, digest);
        }
    }

    fn compare_digest(&mut self, zxid: i64, expected: i64) {
        self.digests.checked += 1;
        self.digests.first_checked_zxid.get_or_insert(zxid);
        let actual = self.tree.digest();
        if actual == expected as u64 {
            return;
        }
        self.digests.mismatches += 1;
        self.digests.last_mismatch_zxid = Some(zxid);
        if self.digests.first_mismatch_zxid.is_none() {
            self.digests.first_mismatch_zxid = Some(zxid);
            tracing::warn!(
                zxid = format_args!("{zxid:#x}"),
                expected = format_args!("{:#x}", expected as u64),
                actual = format_args!("{actual:#x}"),
                "tree digest differs from the one ZooKeeper recorded"
            );
        }
    }
}

/// `DataTree.processTxn` for one txn (or multi sub-txn) under header `h`.
pub fn process_txn(tree: &mut ZkTree, h: &TxnHeader, txn: &Txn) -> Result<(), String> {
    let result = match txn {
        Txn::Create(c) => create(tree, h, c),
        Txn::Delete { path } => tree.delete_node(path, h.zxid),
        Txn::SetData {
            path,
            data,
            version,
        } => tree.set_data(path, data.clone(), *version, h.zxid, h.time),
        Txn::SetAcl { path, acl, version } => {
            tree.set_acl(path, NodeAcl::from_txn(acl.clone()), *version)
        }
        Txn::CloseSession { paths } => tree.kill_session(h.client_id, h.zxid, paths.as_deref()),
        Txn::Multi { failed, txns } => {
            // A multi with an error in it was rolled back before it was logged.
            if !failed {
                for sub in txns {
                    process_txn(tree, h, sub)?;
                }
            }
            Ok(())
        }
        Txn::Check { .. } | Txn::Error { .. } | Txn::CreateSession { .. } => Ok(()),
    };
    match result {
        Ok(()) | Err(ApplyError::NoNode) | Err(ApplyError::NodeExists) => Ok(()),
        Err(ApplyError::Invalid(why)) => Err(why),
    }
}

fn create(tree: &mut ZkTree, h: &TxnHeader, c: &Create) -> Result<(), ApplyError> {
    let owner = owner_of(h, c)?;
    let acl = NodeAcl::from_txn(c.acl.clone());
    let result = tree.create_node(
        &c.path,
        c.data.clone(),
        acl,
        owner,
        c.parent_cversion,
        h.zxid,
        h.time,
    );
    // The node is already there (a fuzzy snapshot caught it, or a re-create after a close of
    // its session): the parent must still show this create. ZooKeeper does this for opcode
    // `create` only, not create2/container/TTL.
    if result == Err(ApplyError::NodeExists) && c.op == op::CREATE {
        let parent = c.path.rfind('/').map_or("", |i| &c.path[..i]);
        return tree.set_cversion_pzxid(parent, c.parent_cversion, h.zxid);
    }
    result
}

/// The ephemeralOwner a create gives its node (`EphemeralType`).
fn owner_of(h: &TxnHeader, c: &Create) -> Result<i64, ApplyError> {
    Ok(match c.op {
        op::CREATE_CONTAINER => ephemeral_owner::CONTAINER,
        op::CREATE_TTL => {
            // ZooKeeper throws IllegalArgumentException here and cannot start.
            if c.ttl <= 0 || c.ttl > ephemeral_owner::MAX_TTL_MS {
                return Err(ApplyError::Invalid(format!(
                    "TTL {} of {} is out of range",
                    c.ttl, c.path
                )));
            }
            ephemeral_owner::for_ttl(c.ttl)
        }
        _ if c.ephemeral => h.client_id,
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::TxnDigest;
    use corral_proto::Acl;

    const SESSION: i64 = 0x100;

    fn entry(zxid: i64, op: i32, txn: Txn) -> LogEntry {
        LogEntry {
            header: TxnHeader {
                client_id: SESSION,
                cxid: 1,
                zxid,
                time: 1000 + zxid,
                op,
            },
            txn,
            digest: None,
        }
    }

    fn create(op: i32, path: &str, pcv: i32) -> Txn {
        Txn::Create(Create {
            op,
            path: path.into(),
            data: Some(path.as_bytes().to_vec()),
            acl: None,
            ephemeral: false,
            parent_cversion: pcv,
            ttl: if op == op::CREATE_TTL { 60_000 } else { 0 },
        })
    }

    fn replay_from_fresh(entries: &[LogEntry]) -> Replay {
        let mut r = Replay::new(ZkTree::fresh(), BTreeMap::new(), 0, None);
        for e in entries {
            r.apply(e).unwrap();
        }
        r
    }

    #[test]
    fn create_kinds_set_their_owner() {
        let mut eph = create(op::CREATE2, "/e", 4);
        if let Txn::Create(c) = &mut eph {
            c.ephemeral = true;
        }
        let r = replay_from_fresh(&[
            entry(1, op::CREATE, create(op::CREATE, "/p", 1)),
            entry(
                2,
                op::CREATE_CONTAINER,
                create(op::CREATE_CONTAINER, "/c", 2),
            ),
            entry(3, op::CREATE_TTL, create(op::CREATE_TTL, "/t", 3)),
            entry(4, op::CREATE2, eph),
        ]);
        let owner = |p: &str| r.tree.get(p).unwrap().stat.ephemeral_owner;
        assert_eq!(owner("/p"), 0);
        assert_eq!(owner("/c"), i64::MIN);
        assert_eq!(owner("/t"), ephemeral_owner::for_ttl(60_000));
        assert_eq!(owner("/e"), SESSION);
        assert_eq!(r.last_zxid, 4);
        assert_eq!(r.txns_replayed, 4);
        let root = r.tree.get("").unwrap().stat;
        assert_eq!((root.cversion, root.pzxid), (4, 4));
        let t = r.tree.get("/t").unwrap().stat;
        assert_eq!((t.czxid, t.ctime, t.version), (3, 1003, 0));
    }

    #[test]
    fn bad_ttl_is_an_error() {
        let mut r = Replay::new(ZkTree::fresh(), BTreeMap::new(), 0, None);
        let mut t = create(op::CREATE_TTL, "/t", 1);
        if let Txn::Create(c) = &mut t {
            c.ttl = 0;
        }
        assert!(r.apply(&entry(1, op::CREATE_TTL, t)).is_err());
    }

    #[test]
    fn sessions_and_their_ephemerals() {
        let mut eph = create(op::CREATE, "/e", 2);
        if let Txn::Create(c) = &mut eph {
            c.ephemeral = true;
        }
        let mut r = replay_from_fresh(&[
            entry(
                1,
                op::CREATE_SESSION,
                Txn::CreateSession { timeout_ms: 5000 },
            ),
            entry(2, op::CREATE, eph),
        ]);
        assert_eq!(r.sessions, BTreeMap::from([(SESSION, 5000)]));
        r.apply(&entry(
            3,
            op::CLOSE_SESSION,
            Txn::CloseSession {
                paths: Some(vec!["/e".into()]),
            },
        ))
        .unwrap();
        assert!(r.sessions.is_empty());
        assert!(r.tree.get("/e").is_none());
        assert_eq!(r.tree.get("").unwrap().stat.pzxid, 3);
    }

    #[test]
    fn set_data_reconfig_set_acl_delete_check_error() {
        let acl = vec![Acl::new(1, "digest", "u:x")];
        let r = replay_from_fresh(&[
            entry(1, op::CREATE, create(op::CREATE, "/a", 1)),
            entry(
                2,
                op::SET_DATA,
                Txn::SetData {
                    path: "/a".into(),
                    data: Some(b"v1".to_vec()),
                    version: 1,
                },
            ),
            entry(
                3,
                op::SET_ACL,
                Txn::SetAcl {
                    path: "/a".into(),
                    acl: Some(acl.clone()),
                    version: 1,
                },
            ),
            entry(
                4,
                op::RECONFIG,
                Txn::SetData {
                    path: "/zookeeper/config".into(),
                    data: Some(b"server.1=x".to_vec()),
                    version: -1,
                },
            ),
            entry(
                5,
                op::CHECK,
                Txn::Check {
                    path: "/a".into(),
                    version: 1,
                },
            ),
            entry(6, op::ERROR, Txn::Error { err: -101 }),
            entry(7, op::CREATE, create(op::CREATE, "/b", 2)),
            entry(8, op::DELETE, Txn::Delete { path: "/b".into() }),
            // Errors that a fuzzy snapshot makes possible are ignored.
            entry(9, op::DELETE, Txn::Delete { path: "/b".into() }),
            entry(
                10,
                op::SET_DATA,
                Txn::SetData {
                    path: "/none".into(),
                    data: Some(vec![]),
                    version: 1,
                },
            ),
        ]);
        let a = r.tree.get("/a").unwrap();
        assert_eq!(
            (a.stat.version, a.stat.mzxid, a.stat.mtime, a.stat.aversion),
            (1, 2, 1002, 1)
        );
        assert_eq!(a.acl, NodeAcl::List(std::sync::Arc::new(acl)));
        let config = r.tree.get("/zookeeper/config").unwrap();
        assert_eq!(
            (
                config.data.as_deref(),
                config.stat.version,
                config.stat.mzxid
            ),
            (Some(&b"server.1=x"[..]), -1, 4)
        );
        assert!(r.tree.get("/b").is_none());
        let root = r.tree.get("").unwrap().stat;
        assert_eq!((root.cversion, root.pzxid), (2, 9));
        assert_eq!(r.last_zxid, 10);
    }

    #[test]
    fn multi_applies_in_order_and_failed_multi_applies_nothing() {
        let ok = Txn::Multi {
            failed: false,
            txns: vec![
                create(op::CREATE, "/m", 1),
                create(op::CREATE, "/m/x", 1),
                Txn::SetData {
                    path: "/m".into(),
                    data: Some(b"z".to_vec()),
                    version: 1,
                },
                Txn::Delete {
                    path: "/m/x".into(),
                },
                Txn::Check {
                    path: "/m".into(),
                    version: 1,
                },
            ],
        };
        let r = replay_from_fresh(&[
            entry(1, op::MULTI, ok),
            entry(
                2,
                op::MULTI,
                Txn::Multi {
                    failed: true,
                    txns: vec![],
                },
            ),
        ]);
        let m = r.tree.get("/m").unwrap().stat;
        assert_eq!((m.version, m.mzxid, m.cversion, m.pzxid), (1, 1, 1, 1));
        assert!(r.tree.get("/m/x").is_none());
        assert_eq!(r.last_zxid, 2);
    }

    /// A fuzzy snapshot named 10 that already holds /a (created at 11) and /b (created at 12,
    /// deleted at 13 — caught before the delete), with the root serialized before both.
    #[test]
    fn fuzzy_snapshot_replay_matches_a_clean_replay() {
        let log = [
            entry(11, op::CREATE, create(op::CREATE, "/a", 1)),
            entry(12, op::CREATE2, create(op::CREATE2, "/b", 2)),
            entry(13, op::DELETE, Txn::Delete { path: "/b".into() }),
            entry(14, op::CREATE, create(op::CREATE, "/c", 3)),
        ];
        let clean = replay_from_fresh(&log);
        let mut fuzzy_tree = ZkTree::fresh();
        for e in &log[..2] {
            process_txn(&mut fuzzy_tree, &e.header, &e.txn).unwrap();
        }
        // The root was written to the snapshot before the creates reached it.
        let mut root = fuzzy_tree.get("").unwrap().clone();
        root.stat = ZkTree::fresh().get("").unwrap().stat;
        fuzzy_tree.insert(String::new(), root);
        let mut fuzzy = Replay::new(fuzzy_tree, BTreeMap::new(), 10, None);
        for e in &log {
            fuzzy.apply(e).unwrap();
        }
        for p in ["", "/a", "/c", "/zookeeper"] {
            assert_eq!(fuzzy.tree.get(p), clean.tree.get(p), "{p}");
        }
        assert!(fuzzy.tree.get("/b").is_none());
        assert_eq!(fuzzy.tree.digest(), clean.tree.digest());
    }

    #[test]
    fn ephemerals_of_unknown_sessions_go_at_the_last_zxid() {
        let mut eph = create(op::CREATE, "/e", 1);
        if let Txn::Create(c) = &mut eph {
            c.ephemeral = true;
        }
        let mut r = replay_from_fresh(&[
            entry(
                1,
                op::CREATE_SESSION,
                Txn::CreateSession { timeout_ms: 5000 },
            ),
            entry(2, op::CREATE, eph),
            entry(3, op::CREATE, create(op::CREATE, "/p", 2)),
        ]);
        assert_eq!(r.kill_dead_sessions(), 0);
        r.sessions.clear();
        assert_eq!(r.kill_dead_sessions(), 1);
        assert!(r.tree.get("/e").is_none());
        assert_eq!(r.tree.get("").unwrap().stat.pzxid, 3);
    }

    #[test]
    fn txns_in_the_snapshot_are_skipped() {
        let mut r = Replay::new(ZkTree::fresh(), BTreeMap::new(), 5, None);
        r.apply(&entry(5, op::CREATE, create(op::CREATE, "/old", 1)))
            .unwrap();
        assert!(r.tree.get("/old").is_none());
        r.apply(&entry(6, op::CREATE, create(op::CREATE, "/new", 1)))
            .unwrap();
        assert!(r.tree.get("/new").is_some());
        assert_eq!((r.txns_replayed, r.last_zxid), (1, 6));
    }

    #[test]
    fn digests_are_checked_after_the_snapshot_digest() {
        // What the tree's digest will be after each of these txns, from a scratch replay.
        let log = [
            entry(1, op::CREATE, create(op::CREATE, "/a", 1)),
            entry(2, op::CREATE, create(op::CREATE, "/b", 2)),
            entry(3, op::CREATE, create(op::CREATE, "/c", 3)),
        ];
        let mut scratch = ZkTree::fresh();
        let mut digests = Vec::new();
        for e in &log {
            process_txn(&mut scratch, &e.header, &e.txn).unwrap();
            digests.push(scratch.digest() as i64);
        }
        let mut with_digests: Vec<LogEntry> = log.to_vec();
        for (e, d) in with_digests.iter_mut().zip(&digests) {
            e.digest = Some(TxnDigest {
                version: 2,
                tree_digest: *d,
            });
        }
        with_digests[2].digest = Some(TxnDigest {
            version: 2,
            tree_digest: 12345,
        });
        // The snapshot digest is for txn 1: nothing is compared before it.
        let snap = ZxidDigest {
            zxid: 1,
            version: 2,
            digest: Some(digests[0]),
        };
        let mut r = Replay::new(ZkTree::fresh(), BTreeMap::new(), 0, Some(snap));
        for e in &with_digests {
            r.apply(e).unwrap();
        }
        // Txn 1 against the snapshot digest and its own, then txns 2 and 3 against theirs.
        assert_eq!(r.digests.checked, 4);
        assert_eq!(r.digests.mismatches, 1);
        assert_eq!(r.digests.first_mismatch_zxid, Some(3));
    }
}
