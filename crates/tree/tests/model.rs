//! The tree against a deliberately simple model (a sorted map of path → data, version, owner)
//! over random sequences of creates, deletes, setData and multis from two sessions, including a
//! session close. After every step the two must agree on every node and every reply code.

use bytes::Bytes;
use corral_proto::records::*;
use corral_proto::{ErrorCode, MultiResult, OpCode, Request, Response};
use corral_tree::{acl, DataTree, Entry, TreeConfig, Txn};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
struct ModelNode {
    data: Vec<u8>,
    version: i32,
    owner: i64,
}

#[derive(Clone, Debug, Default)]
struct Model {
    nodes: BTreeMap<String, ModelNode>,
}

fn parent(p: &str) -> String {
    let i = p.rfind('/').unwrap();
    if i == 0 {
        "/".into()
    } else {
        p[..i].into()
    }
}

impl Model {
    fn exists(&self, p: &str) -> bool {
        p == "/" || self.nodes.contains_key(p)
    }
    fn has_children(&self, p: &str) -> bool {
        self.nodes.keys().any(|k| parent(k) == p)
    }
    fn op(&mut self, session: i64, op: &Op) -> Result<(), ErrorCode> {
        match op {
            Op::Create(p, ephemeral) => {
                if !self.exists(&parent(p)) {
                    return Err(ErrorCode::NoNode);
                }
                if self.exists(p) {
                    return Err(ErrorCode::NodeExists);
                }
                if self.nodes.get(&parent(p)).is_some_and(|n| n.owner != 0) {
                    return Err(ErrorCode::NoChildrenForEphemerals);
                }
                let owner = if *ephemeral { session } else { 0 };
                self.nodes.insert(
                    p.clone(),
                    ModelNode {
                        data: vec![],
                        version: 0,
                        owner,
                    },
                );
            }
            Op::Delete(p, v) => {
                let n = self.nodes.get(p).ok_or(ErrorCode::NoNode)?;
                if *v != -1 && *v != n.version {
                    return Err(ErrorCode::BadVersion);
                }
                if self.has_children(p) {
                    return Err(ErrorCode::NotEmpty);
                }
                self.nodes.remove(p);
            }
            Op::Set(p, v, d) => {
                let n = self.nodes.get_mut(p).ok_or(ErrorCode::NoNode)?;
                if *v != -1 && *v != n.version {
                    return Err(ErrorCode::BadVersion);
                }
                n.version += 1;
                n.data = d.clone();
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create(String, bool),
    Delete(String, i32),
    Set(String, i32, Vec<u8>),
}

impl Op {
    fn request(&self) -> Request {
        match self {
            Op::Create(p, e) => Request::Create {
                op: OpCode::Create,
                req: CreateRequest {
                    path: p.clone(),
                    data: Some(Bytes::new()),
                    acl: acl::open_acl(),
                    flags: *e as i32,
                },
            },
            Op::Delete(p, v) => Request::Delete(PathVersionRequest {
                path: p.clone(),
                version: *v,
            }),
            Op::Set(p, v, d) => Request::SetData(SetDataRequest {
                path: p.clone(),
                data: Some(Bytes::from(d.clone())),
                version: *v,
            }),
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Single(i64, Op),
    Multi(i64, Vec<Op>),
    Close(i64),
}

fn paths() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z"]).prop_map(String::from)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (paths(), any::<bool>()).prop_map(|(p, e)| Op::Create(p, e)),
        (paths(), -1i32..2).prop_map(|(p, v)| Op::Delete(p, v)),
        (paths(), -1i32..2, prop::collection::vec(any::<u8>(), 0..3))
            .prop_map(|(p, v, d)| Op::Set(p, v, d)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1i64..3, op()).prop_map(|(s, o)| Step::Single(s, o)),
        2 => (1i64..3, prop::collection::vec(op(), 0..4)).prop_map(|(s, o)| Step::Multi(s, o)),
        1 => (1i64..3).prop_map(Step::Close),
    ]
}

struct Harness {
    tree: DataTree,
    zxid: i64,
}

impl Harness {
    fn apply(&mut self, session: i64, txn: Txn) -> corral_tree::Applied {
        self.zxid += 1;
        self.tree.apply(&Entry {
            providers: corral_tree::acl::Providers::ALL,
            zxid: self.zxid,
            time_ms: self.zxid * 10,
            session_id: session,
            auth: vec![],
            txn,
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn tree_agrees_with_model(steps in prop::collection::vec(step(), 1..40)) {
        let mut h = Harness { tree: DataTree::new(TreeConfig::default()), zxid: 0 };
        let mut model = Model::default();
        for s in [1, 2] {
            h.apply(s, Txn::CreateSession { timeout_ms: 10_000 });
        }
        for step in steps {
            match step {
                Step::Single(s, op) => {
                    let want = model.op(s, &op);
                    let got = h.apply(s, Txn::Client(op.request())).result.map(|_| ());
                    prop_assert_eq!(got, want, "{:?}", op);
                }
                Step::Multi(s, ops) => {
                    let mut trial = model.clone();
                    let mut failed = None;
                    for (i, op) in ops.iter().enumerate() {
                        if let Err(e) = trial.op(s, op) { failed = Some((i, e)); break; }
                    }
                    let reqs = ops.iter().map(Op::request).collect();
                    let got = h.apply(s, Txn::Client(Request::Multi(reqs))).result.unwrap();
                    let Response::Multi(results) = got else { panic!("multi answered {got:?}") };
                    prop_assert_eq!(results.len(), ops.len());
                    match failed {
                        None => { model = trial; prop_assert!(results.iter().all(|r| matches!(r, MultiResult::Ok(..)))); }
                        Some((i, e)) => {
                            for (j, r) in results.iter().enumerate() {
                                let want = if j < i { ErrorCode::Ok } else if j == i { e } else { ErrorCode::RuntimeInconsistency };
                                prop_assert_eq!(r, &MultiResult::Error(want));
                            }
                        }
                    }
                }
                Step::Close(s) => {
                    h.apply(s, Txn::CloseSession);
                    model.nodes.retain(|_, n| n.owner != s);
                    h.apply(s, Txn::CreateSession { timeout_ms: 10_000 });
                }
            }
            // Compare every user node.
            for (p, n) in &model.nodes {
                let node = h.tree.get(p);
                prop_assert!(node.is_some(), "missing {}", p);
                let node = node.unwrap();
                prop_assert_eq!(&*node.data, &n.data[..]);
                prop_assert_eq!(node.version, n.version);
                prop_assert_eq!(node.ephemeral_owner, n.owner);
            }
            let user_nodes = h.tree.descendant_count("/") - 3; // minus the /zookeeper nodes
            prop_assert_eq!(user_nodes, model.nodes.len());
        }
        // A snapshot of whatever the sequence built restores the same tree.
        let bytes = h.tree.snapshot_bytes();
        let restored = DataTree::decode_snapshot(&bytes).unwrap();
        prop_assert_eq!(restored.snapshot_bytes(), bytes);
        prop_assert_eq!(restored.ephemerals_of(1), h.tree.ephemerals_of(1));
    }
}
