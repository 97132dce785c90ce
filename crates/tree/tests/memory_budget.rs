//! The tree's memory per znode, counted exactly: every allocation of this test binary goes
//! through a counting allocator, so the figure is the heap the tree holds, not a noisy RSS.
//! The bound leaves room over today's ~170 bytes; ZooKeeper's JVM needs about 1,000.

use bytes::Bytes;
use corral_proto::records::CreateRequest;
use corral_proto::{OpCode, Request};
use corral_tree::{acl, DataTree, Entry, TreeConfig, Txn};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MAX_BYTES_PER_ZNODE: usize = 230;

#[test]
fn two_hundred_thousand_znodes_fit_the_memory_budget() {
    let mut tree = DataTree::new(TreeConfig::default());
    let mut zxid = 1;
    tree.apply(&Entry {
        zxid,
        time_ms: 0,
        session_id: 1,
        auth: vec![],
        txn: Txn::CreateSession { timeout_ms: 30_000 },
    });
    let before = LIVE.load(Ordering::Relaxed);
    let (dirs, per_dir) = (200, 1000);
    for d in 0..dirs {
        for n in 0..=per_dir {
            // The directory first, then its children: /app0007, /app0007/node-0000000, ...
            let path = match n {
                0 => format!("/app{d:04}"),
                n => format!("/app{d:04}/node-{:07}", n - 1),
            };
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
        }
    }
    let held = (LIVE.load(Ordering::Relaxed) - before) as usize;
    let nodes = dirs * (per_dir + 1);
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
