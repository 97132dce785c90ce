//! How much memory a million znodes take in the tree. A measurement, not a timed assertion: run
//! with `cargo test --release -p corral-tree --test memory -- --ignored --nocapture`.

#[path = "support/directories.rs"]
mod directories;

use corral_tree::{DataTree, TreeConfig};

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
#[ignore]
fn a_million_znodes() {
    let before = rss_bytes();
    let mut tree = directories::with_session(DataTree::new(TreeConfig::default()));
    directories::create_directories(&mut tree, 1000, 1000);
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
