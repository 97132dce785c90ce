//! The watch index's memory per watch, counted exactly by a counting allocator (this test
//! binary's only test, so nothing else allocates meanwhile): a million watches must cost
//! little.

use corral_server::watch::{WatchKind, WatchManager};
#[path = "../../tree/tests/support/counting_alloc.rs"]
mod counting_alloc;

const MAX_BYTES_PER_WATCH: usize = 160;

#[test]
fn a_million_watches_cost_little_memory() {
    let before = counting_alloc::live_bytes();
    let mut watches = WatchManager::default();
    // 1,000 sessions each watching the data and the children of 500 of 10,000 nodes.
    let (conns, per_conn, nodes) = (1000u64, 500u64, 10_000u64);
    for conn in 0..conns {
        for k in 0..per_conn {
            let path = format!("/service/instances/node-{:07}", (conn * 7 + k * 13) % nodes);
            watches.add(conn, &path, WatchKind::Data);
            watches.add(conn, &path, WatchKind::Child);
        }
    }
    let count = watches.watch_count();
    let held = (counting_alloc::live_bytes() - before) as usize;
    let per_watch = held / count;
    eprintln!(
        "{count} watches hold {} MB: {per_watch} bytes a watch",
        held >> 20
    );
    assert!(count >= 900_000, "{count} distinct watches");
    assert!(
        per_watch <= MAX_BYTES_PER_WATCH,
        "{per_watch} bytes a watch, over the budget of {MAX_BYTES_PER_WATCH}"
    );
}
