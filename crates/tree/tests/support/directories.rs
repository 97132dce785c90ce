//! A tree shaped like a coordination service's: `dirs` directories of `per_dir` znodes of 16
//! bytes each, created through `apply` as clients would (`/app0007`, `/app0007/node-0000000`,
//! ...). Shared by the memory tests.

use bytes::Bytes;
use corral_proto::records::CreateRequest;
use corral_proto::{OpCode, Request};
use corral_tree::{acl, DataTree, Entry, Txn};

/// A session to own the writes, applied before anything is measured.
pub fn with_session(mut tree: DataTree) -> DataTree {
    tree.apply(&Entry {
        providers: corral_tree::acl::Providers::ALL,
        zxid: tree.last_zxid() + 1,
        time_ms: 0,
        session_id: 1,
        auth: vec![],
        txn: Txn::CreateSession { timeout_ms: 30_000 },
    });
    tree
}

/// Adds the directories and their znodes; returns how many znodes were created.
pub fn create_directories(tree: &mut DataTree, dirs: usize, per_dir: usize) -> usize {
    for d in 0..dirs {
        for n in 0..=per_dir {
            let path = match n {
                0 => format!("/app{d:04}"),
                n => format!("/app{d:04}/node-{:07}", n - 1),
            };
            let zxid = tree.last_zxid() + 1;
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
                providers: corral_tree::acl::Providers::ALL,
                zxid,
                time_ms: zxid,
                session_id: 1,
                auth: vec![],
                txn: Txn::Client(req),
            });
            assert!(r.result.is_ok());
        }
    }
    dirs * (per_dir + 1)
}
