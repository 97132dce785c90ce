//! The tree's memory per znode, counted exactly: every allocation of this test binary goes
//! through a counting allocator, so the figure is the heap the tree holds, not a noisy RSS.
//! The bound leaves room over today's ~200 bytes; ZooKeeper's JVM needs about 1,000.

use corral_tree::{DataTree, TreeConfig};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/directories.rs"]
mod directories;

const MAX_BYTES_PER_ZNODE: usize = 230;

#[test]
fn two_hundred_thousand_znodes_fit_the_memory_budget() {
    let mut tree = directories::with_session(DataTree::new(TreeConfig::default()));
    let before = counting_alloc::live_bytes();
    let nodes = directories::create_directories(&mut tree, 200, 1000);
    let held = (counting_alloc::live_bytes() - before) as usize;
    let per_znode = held / nodes;
    eprintln!(
        "{nodes} znodes of 16 B hold {} MB: {per_znode} bytes a znode",
        held >> 20
    );
    assert!(
        per_znode <= MAX_BYTES_PER_ZNODE,
        "{per_znode} bytes a znode, over the budget of {MAX_BYTES_PER_ZNODE}"
    );
    assert_eq!(
        tree.node_count(),
        nodes + 4,
        "plus /, /zookeeper and its two children"
    );
}
