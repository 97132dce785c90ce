//! Whole imports of synthetic data directories, written with the test encoders beside each
//! parser, including damaged ones: every damage must give an error (or, where ZooKeeper itself
//! tolerates it, a smaller import), never a panic.

use super::*;
use crate::snapshot::write::{snapshot, Node};
use crate::txn::{op, Create, LogEntry, Txn, TxnHeader};
use crate::txnlog::write::log;
use crate::ztree::StatPersisted;
use corral_proto::codes::ephemeral_owner;
use corral_proto::Acl;
use proptest::prelude::*;
use std::io::Write;

const SESSION: i64 = 0x10;

struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "zkimport-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("version-2")).unwrap();
        TestDir(dir)
    }

    fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join("version-2").join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn import(&self, keep_sessions: bool) -> Result<Imported, ImportError> {
        import(&self.0, &ImportOptions { keep_sessions })
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stat(zxid: i64, owner: i64) -> StatPersisted {
    StatPersisted::new(zxid, 1000 + zxid, owner)
}

/// A snapshot at zxid 2: the built-in nodes, `/a` (digest ACL, key 2) created at 1, an
/// ephemeral `/a/e` of SESSION created at 2, and SESSION itself.
fn snapshot_at_2() -> Vec<u8> {
    let mut root = stat(0, 0);
    (root.cversion, root.pzxid, root.ctime, root.mtime) = (1, 1, 0, 0);
    let mut a = stat(1, 0);
    (a.cversion, a.pzxid) = (1, 2);
    let config = StatPersisted {
        aversion: -1,
        ..Default::default()
    };
    snapshot(
        &[(SESSION, 6000)],
        &[
            (1, corral_tree::acl::read_acl()),
            (2, vec![Acl::new(31, "digest", "u:h")]),
        ],
        &[
            Node {
                path: "",
                data: b"",
                acl_key: -1,
                stat: root,
            },
            Node {
                path: "/zookeeper",
                data: b"",
                acl_key: -1,
                stat: StatPersisted::default(),
            },
            Node {
                path: "/zookeeper/quota",
                data: b"",
                acl_key: -1,
                stat: StatPersisted::default(),
            },
            Node {
                path: "/zookeeper/config",
                data: b"",
                acl_key: 1,
                stat: config,
            },
            Node {
                path: "/a",
                data: b"/a",
                acl_key: 2,
                stat: a,
            },
            Node {
                path: "/a/e",
                data: b"/a/e",
                acl_key: -1,
                stat: stat(2, SESSION),
            },
        ],
        None,
        None,
    )
}

fn entry(zxid: i64, op: i32, txn: Txn) -> LogEntry {
    LogEntry {
        header: TxnHeader {
            client_id: SESSION,
            cxid: 0,
            zxid,
            time: 1000 + zxid,
            op,
        },
        txn,
        digest: None,
    }
}

fn create(op: i32, path: &str, parent_cversion: i32, ephemeral: bool) -> Txn {
    Txn::Create(Create {
        op,
        path: path.into(),
        data: Some(path.as_bytes().to_vec()),
        acl: Some(corral_tree::acl::open_acl()),
        ephemeral,
        parent_cversion,
        ttl: if op == op::CREATE_TTL { 60_000 } else { 0 },
    })
}

/// Txns 1..=7; 1 and 2 made the snapshot above.
fn log_1_to_7() -> Vec<LogEntry> {
    vec![
        entry(1, op::CREATE, create(op::CREATE, "/a", 1, false)),
        entry(2, op::CREATE, create(op::CREATE, "/a/e", 1, true)),
        entry(
            3,
            op::CREATE_CONTAINER,
            create(op::CREATE_CONTAINER, "/c", 2, false),
        ),
        entry(4, op::CREATE_TTL, create(op::CREATE_TTL, "/t", 3, false)),
        entry(
            5,
            op::CREATE_SESSION,
            Txn::CreateSession { timeout_ms: 9000 },
        ),
        entry(6, op::CREATE2, create(op::CREATE2, "/a/e2", 2, true)),
        entry(
            7,
            op::SET_DATA,
            Txn::SetData {
                path: "/a".into(),
                data: Some(b"A2".to_vec()),
                version: 1,
            },
        ),
    ]
}

fn paths(imported: &Imported) -> Vec<String> {
    let mut p: Vec<String> = imported.tree.nodes().map(|(p, _)| p.to_owned()).collect();
    p.sort();
    p
}

#[test]
fn snapshot_then_logs() {
    let dir = TestDir::new("basic");
    let entries = log_1_to_7();
    dir.put("snapshot.2", &snapshot_at_2());
    // Two logs: the one holding the snapshot's zxid is read, an older one is not.
    dir.put("log.0", &log(&[], 0));
    dir.put("log.1", &log(&entries[..4], 128));
    let second = dir.put("log.5", &log(&entries[4..], 0));
    let imported = dir.import(false).unwrap();
    assert_eq!(imported.snapshot, Some(dir.0.join("version-2/snapshot.2")));
    assert_eq!(
        (
            imported.snapshot_zxid,
            imported.last_zxid,
            imported.txns_replayed
        ),
        (2, 7, 5)
    );
    assert_eq!(
        imported.logs_read,
        vec![dir.0.join("version-2/log.1"), second]
    );
    assert_eq!(
        (imported.sessions_dropped, imported.ephemerals_dropped),
        (1, 2)
    );
    let expected = [
        "/",
        "/a",
        "/c",
        "/t",
        "/zookeeper",
        "/zookeeper/config",
        "/zookeeper/quota",
    ];
    assert_eq!(paths(&imported), expected);
    let tree = &imported.tree;
    let a = tree.get("/a").unwrap();
    assert_eq!(
        (&*a.data, a.version, a.mzxid, a.cversion, a.pzxid),
        (&b"A2"[..], 1, 7, 2, 6)
    );
    assert_eq!(tree.acl(a), [Acl::new(31, "digest", "u:h")]);
    assert_eq!(
        tree.get("/c").unwrap().ephemeral_owner,
        ephemeral_owner::CONTAINER
    );
    assert_eq!(
        tree.get("/t").unwrap().ephemeral_owner,
        ephemeral_owner::for_ttl(60_000)
    );
    assert_eq!(
        tree.acl(tree.get("/zookeeper/config").unwrap()),
        corral_tree::acl::read_acl()
    );
    assert_eq!(tree.get("/zookeeper/config").unwrap().aversion, -1);
    let root = tree.get("/").unwrap();
    assert_eq!((root.cversion, root.pzxid), (3, 4));
    assert_eq!(tree.last_zxid(), 7);
    assert_eq!(tree.sessions().count(), 0);
}

#[test]
fn keeping_sessions_keeps_their_ephemerals() {
    let dir = TestDir::new("keep");
    dir.put("snapshot.2", &snapshot_at_2());
    dir.put("log.1", &log(&log_1_to_7(), 0));
    let imported = dir.import(true).unwrap();
    assert_eq!(
        (imported.sessions_dropped, imported.ephemerals_dropped),
        (0, 0)
    );
    assert_eq!(
        imported.tree.sessions().collect::<Vec<_>>(),
        vec![(SESSION, 9000)]
    );
    assert_eq!(imported.tree.ephemerals_of(SESSION), vec!["/a/e", "/a/e2"]);
}

#[test]
fn a_damaged_newest_snapshot_is_skipped() {
    let dir = TestDir::new("fallback");
    let entries = log_1_to_7();
    let mut ten = snapshot_at_2();
    ten[40] ^= 1;
    dir.put("snapshot.a", &ten);
    dir.put("snapshot.7.gz", b"\x1f\x8b but not really gzip");
    dir.put("snapshot.5", &snapshot_at_2()[..100]); // torn: fails the quick check
    dir.put("snapshot.2", &snapshot_at_2());
    dir.put("log.1", &log(&entries, 0));
    let imported = dir.import(false).unwrap();
    assert_eq!((imported.snapshot_zxid, imported.txns_replayed), (2, 5));
}

#[test]
fn no_valid_snapshot_is_an_error_naming_each_file() {
    let dir = TestDir::new("novalid");
    let mut bad = snapshot_at_2();
    let n = bad.len();
    bad[n - 12] ^= 4;
    dir.put("snapshot.2", &bad);
    dir.put("log.1", &log(&log_1_to_7(), 0));
    let err = dir.import(false).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ImportError::NoValidSnapshot { count: 1, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("snapshot.2") && msg.contains("checksum mismatch"),
        "{msg}"
    );
    assert!(msg.contains(&format!("at offset {}", n - 13)), "{msg}");
}

#[test]
fn without_a_snapshot_logs_replay_onto_a_fresh_tree() {
    let dir = TestDir::new("nosnap");
    dir.put("log.1", &log(&log_1_to_7(), 0));
    let imported = dir.import(true).unwrap();
    assert_eq!(imported.snapshot, None);
    assert_eq!(
        (
            imported.snapshot_zxid,
            imported.last_zxid,
            imported.txns_replayed
        ),
        (0, 7, 7)
    );
    let expected = [
        "/",
        "/a",
        "/a/e",
        "/a/e2",
        "/c",
        "/t",
        "/zookeeper",
        "/zookeeper/config",
        "/zookeeper/quota",
    ];
    assert_eq!(paths(&imported), expected);
    let tree = &imported.tree;
    assert_eq!(
        tree.acl(tree.get("/zookeeper/config").unwrap()),
        corral_tree::acl::read_acl()
    );
    // Same tree as from the snapshot (except its digest ACL on /a, which the log's create lacks).
    let from_snapshot = TestDir::new("nosnap-b");
    from_snapshot.put("snapshot.2", &snapshot_at_2());
    from_snapshot.put("log.1", &log(&log_1_to_7(), 0));
    let other = from_snapshot.import(true).unwrap();
    for (path, node) in other.tree.nodes() {
        let mine = tree.get(path).unwrap();
        assert_eq!(
            (mine.stat(), &mine.data),
            (node.stat(), &node.data),
            "{path}"
        );
    }
}

#[test]
fn the_version_2_directory_itself_works_and_others_do_not() {
    let dir = TestDir::new("v2");
    dir.put("log.1", &log(&log_1_to_7(), 0));
    assert!(import(&dir.0.join("version-2"), &ImportOptions::default()).is_ok());
    let empty = std::env::temp_dir().join(format!("zkimport-{}-empty", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = import(&empty, &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, ImportError::NotADataDir(_)), "{err}");
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn compressed_snapshots() {
    let dir = TestDir::new("gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&snapshot_at_2()).unwrap();
    dir.put("snapshot.2.gz", &gz.finish().unwrap());
    dir.put("log.1", &log(&log_1_to_7(), 0));
    assert_eq!(dir.import(false).unwrap().snapshot_zxid, 2);
    let dir = TestDir::new("snappy");
    dir.put("snapshot.2.snappy", &snappy::encode(&snapshot_at_2(), 64));
    dir.put("log.1", &log(&log_1_to_7(), 0));
    assert_eq!(dir.import(false).unwrap().snapshot_zxid, 2);
}

/// A fuzzy snapshot's node whose ACL-table entry was written before the ACL existed.
fn snapshot_with_missing_acl() -> Vec<u8> {
    let mut root = StatPersisted::default();
    (root.cversion, root.pzxid) = (1, 3);
    snapshot(
        &[],
        &[],
        &[
            Node {
                path: "",
                data: b"",
                acl_key: -1,
                stat: root,
            },
            Node {
                path: "/x",
                data: b"/x",
                acl_key: 5,
                stat: stat(3, 0),
            },
        ],
        None,
        None,
    )
}

#[test]
fn a_missing_acl_is_filled_by_the_replayed_create() {
    let dir = TestDir::new("acl-ok");
    dir.put("snapshot.2", &snapshot_with_missing_acl());
    let mut create_x = create(op::CREATE, "/x", 1, false);
    if let Txn::Create(c) = &mut create_x {
        c.acl = Some(vec![Acl::new(1, "ip", "10.0.0.1")]);
    }
    dir.put("log.3", &log(&[entry(3, op::CREATE, create_x)], 0));
    let imported = dir.import(false).unwrap();
    let tree = &imported.tree;
    assert_eq!(
        tree.acl(tree.get("/x").unwrap()),
        [Acl::new(1, "ip", "10.0.0.1")]
    );
    // The NodeExists fix-up leaves the root as it was (the snapshot already has cversion 1).
    assert_eq!(tree.get("/").unwrap().pzxid, 3);

    let dir = TestDir::new("acl-missing");
    dir.put("snapshot.2", &snapshot_with_missing_acl());
    let err = dir.import(false).unwrap_err();
    assert!(
        matches!(err, ImportError::MissingAcl { key: 5, .. }),
        "{err}"
    );
}

#[test]
fn a_malformed_txn_names_the_log_and_offset() {
    let dir = TestDir::new("badtxn");
    let mut bad_ttl = create(op::CREATE_TTL, "/t", 1, false);
    if let Txn::Create(c) = &mut bad_ttl {
        c.ttl = -1;
    }
    let entries = [
        entry(1, op::CREATE, create(op::CREATE, "/a", 1, false)),
        entry(2, op::CREATE_TTL, bad_ttl),
    ];
    dir.put("log.1", &log(&entries, 0));
    let err = dir.import(false).unwrap_err();
    let offset = log(&entries[..1], 0).len() as u64;
    assert!(
        matches!(err, ImportError::BadTxn { offset: o, .. } if o == offset),
        "{err}"
    );
    assert!(err.to_string().contains("TTL -1"), "{err}");
}

/// The files of a small data directory: one snapshot and one log after it.
fn small_dir_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("snapshot.2", snapshot_at_2()),
        ("log.1", log(&log_1_to_7(), 64)),
    ]
}

/// Every single-bit flip and every truncation of each file, exhaustively.
#[test]
fn every_flip_and_cut_of_a_small_directory() {
    let dir = TestDir::new("exhaustive");
    let clean = small_dir_files();
    for (f, (name, original)) in clean.iter().enumerate() {
        for i in 0..original.len() {
            let mut flipped = original.clone();
            flipped[i] ^= 1 << (i % 8);
            for bytes in [flipped, original[..i].to_vec()] {
                dir.put(name, &bytes);
                let result = dir.import(false);
                // The only snapshot must be intact to be used at all.
                if f == 0 {
                    assert!(result.is_err(), "{name} damaged at {i} was accepted");
                }
            }
        }
        dir.put(name, original);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Truncating or flipping bits anywhere never panics; damage inside the only snapshot, or
    /// inside a log record's checked bytes, is an error.
    #[test]
    fn damaged_directories_never_panic(
        file in 0usize..2,
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
        truncate in any::<bool>(),
    ) {
        let dir = TestDir::new("prop");
        let mut files = small_dir_files();
        let bytes = &mut files[file].1;
        let i = at.index(bytes.len());
        if truncate {
            bytes.truncate(i);
        } else {
            bytes[i] ^= 1 << bit;
        }
        for (name, bytes) in &files {
            dir.put(name, bytes);
        }
        let result = dir.import(false);
        if file == 0 && !truncate {
            prop_assert!(result.is_err(), "flip at {} of the snapshot", i);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_parsers(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = txn::parse_entry(&bytes);
        let mut snap = snapshot_at_2();
        snap.truncate(40);
        snap.extend_from_slice(&bytes);
        let dir = TestDir::new("rand");
        dir.put("snapshot.2", &snap);
        dir.put("snapshot.3.snappy", &[&snappy::MAGIC[..], &bytes].concat());
        dir.put("log.1", &[&txnlog::write::header()[..], &bytes].concat());
        let _ = dir.import(false);
    }
}
