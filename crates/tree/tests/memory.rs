//! How much memory a million znodes take in the tree. A measurement, not a timed assertion: run
//! with `cargo test --release -p corral-tree --test memory -- --ignored --nocapture`.

use bytes::Bytes;
use corral_proto::records::CreateRequest;
use corral_proto::{OpCode, Request};
use corral_tree::{acl, DataTree, Entry, TreeConfig, Txn};

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
#[ignore]
fn a_million_znodes() {
    let before = rss_bytes();
    let mut tree = DataTree::new(TreeConfig::default());
    let mut zxid = 1;
    tree.apply(&Entry {
        zxid,
        time_ms: 0,
        session_id: 1,
        auth: vec![],
        txn: Txn::CreateSession { timeout_ms: 30_000 },
    });
    let dirs = 1000;
    let per_dir = 1000;
    let mut create = |tree: &mut DataTree, path: String| {
        zxid += 1;
        let req = Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path,
                data: Some(Bytes::from_static(&[7u8; 16])),
                acl: acl::open_acl(),
                flags: 0,
            },
        };
        let r = tree.apply(&Entry {
            zxid,
            time_ms: zxid,
            session_id: 1,
            auth: vec![],
            txn: Txn::Client(req),
        });
        assert!(r.result.is_ok());
    };
    for d in 0..dirs {
        create(&mut tree, format!("/app{d:04}"));
        for n in 0..per_dir {
            create(&mut tree, format!("/app{d:04}/node-{n:07}"));
        }
    }
    let after = rss_bytes();
    let nodes = tree.node_count();
    // What a snapshot would cost by copying (the fallback when fork fails; the server forks
    // instead, pausing a few milliseconds); encoding runs outside the core either way.
    let t = std::time::Instant::now();
    let copy = tree.clone();
    let cloned = t.elapsed();
    let t = std::time::Instant::now();
    let bytes = copy.snapshot_bytes();
    println!(
        "snapshot: copy {cloned:?} (the pause), encode {:?} off the core, {} MB",
        t.elapsed(),
        bytes.len() >> 20
    );
    println!(
        "{nodes} znodes: RSS grew {} MB, {} bytes a znode",
        (after - before) / (1 << 20),
        (after - before) / nodes
    );
}
