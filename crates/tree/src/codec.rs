//! Durable encodings: an [`Entry`] as a log record, and the whole [`DataTree`] as a snapshot.
//!
//! Both are jute-style big-endian records behind a version byte, so a future format can be told
//! apart. A snapshot lists nodes in path order, which makes it a deterministic function of the
//! tree: two replicas holding the same tree write the same bytes, and a digest of those bytes
//! says whether two trees are equal.

use crate::acl::Providers;
use crate::apply::{Entry, Txn};
use crate::path;
use crate::tree::{DataTree, Node, TreeConfig};
use bytes::Bytes;
use corral_proto::records::{Acl, Id};
use corral_proto::{DecodeError, Jute, Reader, Request};
use std::collections::HashMap;

/// Version 2 added the proposer's ACL providers after the identities; a version 1 entry was
/// checked with every scheme, and is read back that way.
const ENTRY_VERSION: u8 = 2;
/// A batch's own version: its proposals carry their entries' versions.
const BATCH_VERSION: u8 = 1;
const SNAPSHOT_MAGIC: &[u8; 8] = b"CRLTREE1";

/// Writes an entry's fields from references, so framing a proposal copies nothing first.
fn encode_entry(
    zxid: i64,
    time_ms: i64,
    session_id: i64,
    (auth, providers): (&[Id], Providers),
    txn: &Txn,
    out: &mut Vec<u8>,
) {
    out.push(ENTRY_VERSION);
    zxid.encode(out);
    time_ms.encode(out);
    session_id.encode(out);
    (auth.len() as i32).encode(out);
    for id in auth {
        id.encode(out);
    }
    out.push(providers.to_byte());
    match txn {
        Txn::CreateSession { timeout_ms } => {
            out.push(0);
            timeout_ms.encode(out);
        }
        Txn::CloseSession => out.push(1),
        Txn::Client(req) => {
            out.push(2);
            (req.op_code() as i32).encode(out);
            length_prefixed(out, |o| req.encode(o));
        }
        Txn::Reap { path } => {
            out.push(3);
            path.encode(out);
        }
        Txn::SetConfig { text } => {
            out.push(4);
            text.encode(out);
        }
        Txn::Error { code } => {
            out.push(5);
            code.encode(out);
        }
    }
}

/// Writes what `body` writes as a jute buffer (its length first), in place.
fn length_prefixed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

impl Entry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_entry(
            self.zxid,
            self.time_ms,
            self.session_id,
            (&self.auth, self.providers),
            &self.txn,
            out,
        );
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v);
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let r = &mut Reader::new(bytes);
        let version = r.take(1, "entry version")?[0];
        if version != 1 && version != ENTRY_VERSION {
            return Err(DecodeError::Invalid("unknown entry version"));
        }
        let zxid = i64::decode(r)?;
        let time_ms = i64::decode(r)?;
        let session_id = i64::decode(r)?;
        let auth = Vec::<Id>::decode(r)?;
        let providers = match version {
            1 => Providers::ALL,
            _ => Providers::from_byte(r.take(1, "entry providers")?[0]),
        };
        let txn = match r.take(1, "entry kind")?[0] {
            0 => Txn::CreateSession {
                timeout_ms: i32::decode(r)?,
            },
            1 => Txn::CloseSession,
            2 => {
                let op = i32::decode(r)?;
                let body = Bytes::decode(r)?;
                Txn::Client(Request::decode(op, &body)?)
            }
            3 => Txn::Reap {
                path: String::decode(r)?,
            },
            4 => Txn::SetConfig {
                text: String::decode(r)?,
            },
            5 => Txn::Error {
                code: i32::decode(r)?,
            },
            _ => return Err(DecodeError::Invalid("unknown entry kind")),
        };
        Ok(Entry {
            zxid,
            time_ms,
            session_id,
            auth,
            providers,
            txn,
        })
    }
}

/// One write on its way through the replicated log, before it has a zxid: who proposed it
/// (server and per-server sequence number, so the proposer can answer its client when the entry
/// is applied) and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub origin_server: u64,
    pub origin_seq: u64,
    /// The Raft term the proposer saw while it knew a leader (0: it knew none). A proposal
    /// carried by an entry of another term was made under a leader that is gone, and is skipped
    /// (it may be an expiry decided by a deposed leader, or a write whose client has since been
    /// told its connection was lost).
    pub term: u64,
    pub session_id: i64,
    pub auth: Vec<Id>,
    /// The ACL schemes the proposer has providers for.
    pub providers: Providers,
    pub txn: Txn,
}

/// What one replicated log entry carries: proposals stamped with the leader's clock. Applying a
/// batch gives each proposal the next zxid, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub time_ms: i64,
    pub proposals: Vec<Proposal>,
}

impl Proposal {
    /// The entry this proposal becomes at `zxid` in a batch stamped `time_ms`.
    pub fn into_entry(self, zxid: i64, time_ms: i64) -> Entry {
        Entry {
            zxid,
            time_ms,
            session_id: self.session_id,
            auth: self.auth,
            providers: self.providers,
            txn: self.txn,
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Proposal, DecodeError> {
        let origin_server = i64::decode(r)? as u64;
        let origin_seq = i64::decode(r)? as u64;
        let term = i64::decode(r)? as u64;
        let entry_bytes = Bytes::decode(r)?;
        let e = Entry::decode(&entry_bytes)?;
        Ok(Proposal {
            origin_server,
            origin_seq,
            term,
            session_id: e.session_id,
            auth: e.auth,
            providers: e.providers,
            txn: e.txn,
        })
    }
}

impl Batch {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(BATCH_VERSION);
        self.time_ms.encode(out);
        (self.proposals.len() as i32).encode(out);
        for p in &self.proposals {
            p.encode_framed(out);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 * self.proposals.len() + 16);
        self.encode(&mut v);
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
        let r = &mut Reader::new(bytes);
        if r.take(1, "batch version")?[0] != BATCH_VERSION {
            return Err(DecodeError::Invalid("unknown batch version"));
        }
        let time_ms = i64::decode(r)?;
        let n = count(r, 28)?;
        let mut proposals = Vec::with_capacity(n);
        for _ in 0..n {
            proposals.push(Proposal::decode(r)?);
        }
        Ok(Batch { time_ms, proposals })
    }
}

impl Batch {
    /// A batch's bytes from proposals already encoded with [`Proposal::to_framed_bytes`], so a
    /// leader batches forwarded proposals without decoding them.
    pub fn encode_framed<F: AsRef<[u8]>>(time_ms: i64, framed: &[F]) -> Vec<u8> {
        let bytes: usize = framed.iter().map(|f| f.as_ref().len()).sum();
        let mut out = Vec::with_capacity(16 + bytes);
        out.push(BATCH_VERSION);
        time_ms.encode(&mut out);
        (framed.len() as i32).encode(&mut out);
        for f in framed {
            out.extend_from_slice(f.as_ref());
        }
        out
    }
}

/// The fixed fields at the front of a framed proposal, read without decoding the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposalHeader {
    pub origin_server: u64,
    pub origin_seq: u64,
    pub term: u64,
}

impl ProposalHeader {
    /// The header of a proposal encoded with [`Proposal::to_framed_bytes`].
    pub fn decode(framed: &[u8]) -> Result<ProposalHeader, DecodeError> {
        let r = &mut Reader::new(framed);
        Ok(ProposalHeader {
            origin_server: i64::decode(r)? as u64,
            origin_seq: i64::decode(r)? as u64,
            term: i64::decode(r)? as u64,
        })
    }
}

impl Proposal {
    /// Where the term sits in [`Proposal::to_framed_bytes`]: after the origin server and sequence.
    const TERM_AT: std::ops::Range<usize> = 16..24;

    /// Stamps an encoded proposal with another term (the proposal proposed again under a new
    /// leader); the rest of its bytes are unchanged.
    pub fn restamp(framed: &mut [u8], term: u64) {
        framed[Self::TERM_AT].copy_from_slice(&(term as i64).to_be_bytes());
    }

    pub fn to_framed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_framed(&mut out);
        out
    }

    /// The entry codec carries session, identities and txn; its zxid and time are unused here.
    /// Written in place: a proposal is not copied to be framed.
    fn encode_framed(&self, out: &mut Vec<u8>) {
        (self.origin_server as i64).encode(out);
        (self.origin_seq as i64).encode(out);
        (self.term as i64).encode(out);
        length_prefixed(out, |o| {
            let identities = (self.auth.as_slice(), self.providers);
            encode_entry(0, 0, self.session_id, identities, &self.txn, o)
        });
    }
}

impl DataTree {
    /// The whole tree as snapshot bytes (deterministic: nodes in path order).
    pub fn encode_snapshot(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(SNAPSHOT_MAGIC);
        self.last_zxid.encode(out);
        self.config.extended_types.encode(out);
        (self.sessions.len() as i32).encode(out);
        for (id, timeout) in &self.sessions {
            id.encode(out);
            timeout.encode(out);
        }
        let mut nodes: Vec<(&str, &Node)> = self.nodes.iter().collect();
        nodes.sort_unstable_by_key(|(p, _)| *p);
        // ACL lists, numbered densely in order of first use.
        let mut acl_ids: HashMap<u32, i32> = HashMap::new();
        let mut acl_lists: Vec<&[Acl]> = Vec::new();
        for (_, n) in &nodes {
            let r = n.acl;
            acl_ids.entry(r).or_insert_with(|| {
                acl_lists.push(self.acls.get(r));
                acl_lists.len() as i32 - 1
            });
        }
        (acl_lists.len() as i32).encode(out);
        for list in &acl_lists {
            (list.len() as i32).encode(out);
            for a in *list {
                a.encode(out);
            }
        }
        (nodes.len() as i32).encode(out);
        for (p, n) in nodes {
            p.to_owned().encode(out);
            for v in [
                n.czxid,
                n.mzxid,
                n.pzxid,
                n.ctime,
                n.mtime,
                n.ephemeral_owner,
            ] {
                v.encode(out);
            }
            for v in [n.version, n.cversion, n.aversion, acl_ids[&n.acl]] {
                v.encode(out);
            }
            // As jute writes a buffer: -1 for null data.
            if n.data.is_null() {
                (-1i32).encode(out);
            } else {
                (n.data.len() as i32).encode(out);
                out.extend_from_slice(&n.data);
            }
        }
    }

    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * self.nodes.len() + 64);
        self.encode_snapshot(&mut out);
        out
    }

    /// Rebuilds a tree from snapshot bytes, checking that every node's parent is present.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<DataTree, DecodeError> {
        let r = &mut Reader::new(bytes);
        if r.take(8, "snapshot magic")? != SNAPSHOT_MAGIC {
            return Err(DecodeError::Invalid("not a Corral tree snapshot"));
        }
        let last_zxid = i64::decode(r)?;
        let extended_types = bool::decode(r)?;
        let mut tree = DataTree::new(TreeConfig {
            extended_types,
            ..Default::default()
        });
        tree.nodes.clear();
        tree.acls = Default::default();
        tree.last_zxid = last_zxid;
        let sessions = count(r, 12)?;
        for _ in 0..sessions {
            let id = i64::decode(r)?;
            let timeout = i32::decode(r)?;
            tree.sessions.insert(id, timeout);
        }
        let lists = count(r, 4)?;
        let mut acl_lists = Vec::with_capacity(lists);
        for _ in 0..lists {
            let n = count(r, Acl::MIN_LEN)?;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                list.push(Acl::decode(r)?);
            }
            // Interned once here; each node then only counts a reference.
            acl_lists.push(tree.acls.intern(&list));
        }
        let nodes = count(r, 4 + 6 * 8 + 4 * 4 + 4)?;
        tree.nodes.reserve(nodes);
        let mut ids = Vec::with_capacity(nodes);
        let mut special = Vec::new();
        let mut previous: Option<&str> = None;
        for _ in 0..nodes {
            // Borrowed from the snapshot bytes: the store keeps its own copy, nothing else does.
            let p = r
                .ustring()?
                .ok_or(DecodeError::Invalid("a node without a path"))?;
            // The writer sorts by path, so strictly increasing paths also rule out duplicates
            // without a lookup per node.
            if previous.is_some_and(|q| p <= q) {
                return Err(DecodeError::Invalid("paths out of order or repeated"));
            }
            previous = Some(p);
            // The fixed part in one bounds check: six longs, then four ints.
            let fixed = r.take(6 * 8 + 4 * 4, "node stat")?;
            let long =
                |i: usize| i64::from_be_bytes(fixed[i * 8..i * 8 + 8].try_into().expect("8"));
            let int = |i: usize| {
                let at = 48 + i * 4;
                i32::from_be_bytes(fixed[at..at + 4].try_into().expect("4"))
            };
            let longs = [long(0), long(1), long(2), long(3), long(4), long(5)];
            let ints = [int(0), int(1), int(2), int(3)];
            let acl = *acl_lists
                .get(ints[3] as usize)
                .ok_or(DecodeError::Invalid("ACL index out of range"))?;
            tree.acls.retain(acl);
            let data = r.buffer()?;
            let owner = longs[5];
            let node = Node {
                czxid: longs[0],
                mzxid: longs[1],
                pzxid: longs[2],
                ctime: longs[3],
                mtime: longs[4],
                ephemeral_owner: owner,
                version: ints[0],
                cversion: ints[1],
                aversion: ints[2],
                acl,
                data: data.into(),
                children: None,
            };
            if owner != 0 {
                special.push((p, owner));
            }
            ids.push(tree.nodes.insert(p, node));
        }
        link_loaded(&mut tree, &ids)?;
        for (p, owner) in special {
            tree.index_special_pub(p, owner);
        }
        if !tree.nodes.contains("/") {
            return Err(DecodeError::Invalid("snapshot has no root"));
        }
        for acl in acl_lists {
            tree.acls.release(acl);
        }
        tree.rebuild_quotas();
        Ok(tree)
    }

    /// A 64-bit digest of the tree's content (FNV-1a over the snapshot bytes): equal trees have
    /// equal digests, whatever order they were built in.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.snapshot_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

fn count(r: &mut Reader<'_>, elem_min: usize) -> Result<usize, DecodeError> {
    Ok(r.vector_len(elem_min)?.unwrap_or(0))
}

/// Links loaded nodes to their parents. The snapshot is in path order, so siblings come
/// together and their parent is looked up once; each parent's children table is sized before
/// it is filled, so a parent of a million children is not rehashed twenty times.
fn link_loaded(tree: &mut DataTree, ids: &[crate::store::NodeId]) -> Result<(), DecodeError> {
    let mut links = Vec::with_capacity(ids.len());
    let mut last: Option<(String, crate::store::NodeId)> = None;
    for &id in ids {
        let p = tree.nodes.path_of(id);
        if p == "/" {
            continue;
        }
        let parent_path =
            crate::tree::key(path::parent_of(p).ok_or(DecodeError::Invalid("relative path"))?);
        let parent = match &last {
            Some((lp, lid)) if lp == parent_path => *lid,
            _ => {
                let pid = tree
                    .nodes
                    .id_of(parent_path)
                    .ok_or(DecodeError::Invalid("node without parent"))?;
                last = Some((parent_path.to_owned(), pid));
                pid
            }
        };
        links.push((parent, id));
    }
    let mut counts: HashMap<crate::store::NodeId, usize> = HashMap::new();
    for (parent, _) in &links {
        *counts.entry(*parent).or_default() += 1;
    }
    for (parent, n) in counts {
        tree.nodes.reserve_children(parent, n);
    }
    for (parent, child) in links {
        tree.nodes.link_child(parent, child);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl;
    use corral_proto::records::*;
    use corral_proto::OpCode;

    fn sample_tree() -> (DataTree, Vec<Entry>) {
        let mut tree = DataTree::new(TreeConfig {
            extended_types: true,
            ..Default::default()
        });
        let mut entries = Vec::new();
        let mut push = |tree: &mut DataTree, session: i64, txn: Txn| {
            let e = Entry {
                providers: crate::acl::Providers::ALL,
                zxid: tree.last_zxid() + 1,
                time_ms: 1000 + tree.last_zxid(),
                session_id: session,
                auth: vec![Id::new("digest", "u:h")],
                txn,
            };
            tree.apply(&e);
            entries.push(e);
        };
        push(&mut tree, 7, Txn::CreateSession { timeout_ms: 4000 });
        let create = |path: &str, flags: i32, acl: Vec<Acl>| {
            Txn::Client(Request::Create {
                op: OpCode::Create,
                req: CreateRequest {
                    path: path.into(),
                    data: Some(Bytes::from(path.as_bytes().to_vec())),
                    acl,
                    flags,
                },
            })
        };
        push(&mut tree, 7, create("/a", 0, acl::open_acl()));
        push(&mut tree, 7, create("/a/e", 1, acl::open_acl()));
        push(
            &mut tree,
            7,
            create("/a/s-", 2, vec![Acl::new(31, "auth", "")]),
        );
        push(
            &mut tree,
            7,
            Txn::Client(Request::CreateTtl(CreateTtlRequest {
                path: "/t".into(),
                data: Some(Bytes::new()),
                acl: acl::read_acl(),
                flags: 5,
                ttl: 99,
            })),
        );
        push(&mut tree, 0, Txn::Reap { path: "/t".into() });
        // Null data (zkCli's `create /n`), and a node whose data is set to null.
        let null_data = |path: &str| {
            Txn::Client(Request::Create {
                op: OpCode::Create,
                req: CreateRequest {
                    path: path.into(),
                    data: None,
                    acl: acl::open_acl(),
                    flags: 0,
                },
            })
        };
        push(&mut tree, 7, null_data("/n"));
        push(
            &mut tree,
            7,
            Txn::Client(Request::SetData(SetDataRequest {
                path: "/a".into(),
                data: None,
                version: -1,
            })),
        );
        (tree, entries)
    }

    #[test]
    fn entries_before_providers_read_back_with_every_scheme() {
        let entry = Entry {
            zxid: 7,
            time_ms: 1,
            session_id: 2,
            auth: vec![],
            providers: Providers {
                sasl: false,
                x509: true,
            },
            txn: Txn::CloseSession,
        };
        let v2 = entry.to_bytes();
        assert_eq!(Entry::decode(&v2).unwrap(), entry);
        // Version 1: no providers byte after the (empty) identities at offset 29.
        let mut v1 = vec![1];
        v1.extend_from_slice(&v2[1..29]);
        v1.extend_from_slice(&v2[30..]);
        let old = Entry::decode(&v1).unwrap();
        assert_eq!(old.providers, Providers::ALL);
        assert_eq!((old.zxid, old.txn), (7, Txn::CloseSession));
    }

    #[test]
    fn null_data_stays_null_through_writes_and_snapshots() {
        let (tree, _) = sample_tree();
        let back = DataTree::decode_snapshot(&tree.snapshot_bytes()).unwrap();
        for t in [&tree, &back] {
            for path in ["/n", "/a"] {
                let node = t.get(path).unwrap();
                assert!(node.data.is_null(), "{path}");
                assert_eq!((node.data.to_buffer(), node.stat().data_length), (None, 0));
            }
            let e = t.get("/a/e").unwrap();
            assert_eq!(e.data.to_buffer().as_deref(), Some(&b"/a/e"[..]));
            assert!(!t.get("/t").is_some_and(|n| n.data.is_null()));
        }
    }

    #[test]
    fn entries_round_trip() {
        let (_, entries) = sample_tree();
        for e in entries {
            assert_eq!(Entry::decode(&e.to_bytes()).unwrap(), e);
        }
        assert!(Entry::decode(&[9, 9]).is_err());
    }

    #[test]
    fn snapshot_round_trips_and_is_deterministic() {
        let (tree, entries) = sample_tree();
        let bytes = tree.snapshot_bytes();
        let back = DataTree::decode_snapshot(&bytes).unwrap();
        assert_eq!(back.snapshot_bytes(), bytes);
        assert_eq!(back.digest(), tree.digest());
        assert_eq!(back.ephemerals_of(7), vec!["/a/e".to_string()]);
        assert_eq!(back.last_zxid(), tree.last_zxid());
        // Replaying the same entries on a fresh tree gives the same bytes.
        let mut replay = DataTree::new(TreeConfig {
            extended_types: true,
            ..Default::default()
        });
        for e in &entries {
            replay.apply(e);
        }
        assert_eq!(replay.snapshot_bytes(), bytes);
    }

    #[test]
    fn batches_round_trip() {
        let (_, entries) = sample_tree();
        let batch = Batch {
            time_ms: 42,
            proposals: entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| Proposal {
                    providers: crate::acl::Providers::ALL,
                    origin_server: 3,
                    origin_seq: i as u64,
                    term: 2,
                    session_id: e.session_id,
                    auth: e.auth,
                    txn: e.txn,
                })
                .collect(),
        };
        assert_eq!(Batch::decode(&batch.to_bytes()).unwrap(), batch);
        let framed: Vec<Vec<u8>> = batch
            .proposals
            .iter()
            .map(Proposal::to_framed_bytes)
            .collect();
        assert_eq!(Batch::encode_framed(42, &framed), batch.to_bytes());
        assert!(Batch::decode(&batch.to_bytes()[..10]).is_err());
        // Restamped, a proposal decodes the same but for its term.
        let mut restamped = framed.clone();
        for f in &mut restamped {
            Proposal::restamp(f, 9);
        }
        let again = Batch::decode(&Batch::encode_framed(42, &restamped)).unwrap();
        for (a, b) in again.proposals.iter().zip(&batch.proposals) {
            assert_eq!(a.term, 9);
            assert_eq!(
                Proposal {
                    term: 2,
                    ..a.clone()
                },
                *b
            );
        }
    }

    #[test]
    fn corrupt_snapshots_are_rejected_not_panicked_on() {
        let (tree, _) = sample_tree();
        let bytes = tree.snapshot_bytes();
        for cut in [0, 5, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                DataTree::decode_snapshot(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[0] ^= 1;
        assert!(DataTree::decode_snapshot(&flipped).is_err());
    }

    #[test]
    fn repeated_or_unsorted_paths_are_rejected() {
        let tree = tree_with(&["/x1", "/x2"]);
        let bytes = tree.snapshot_bytes();
        let at = |needle: &[u8]| {
            bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        // "/x2" renamed "/x1": the same path twice.
        let mut twice = bytes.clone();
        twice[at(b"/x2") + 2] = b'1';
        let err = DataTree::decode_snapshot(&twice).unwrap_err();
        assert!(
            err.to_string().contains("out of order or repeated"),
            "{err}"
        );
        // "/x1" renamed "/x3": after "/x2" in the file, out of order.
        let mut unsorted = bytes.clone();
        unsorted[at(b"/x1") + 2] = b'3';
        assert!(DataTree::decode_snapshot(&unsorted).is_err());
        assert_eq!(
            DataTree::decode_snapshot(&bytes).unwrap().digest(),
            tree.digest()
        );
    }

    fn tree_with(paths: &[&str]) -> DataTree {
        let mut tree = DataTree::new(TreeConfig::default());
        let mut txns = vec![Txn::CreateSession { timeout_ms: 4000 }];
        for p in paths {
            let req = Request::Create {
                op: OpCode::Create,
                req: CreateRequest {
                    path: p.to_string(),
                    data: Some(bytes::Bytes::from_static(b"d")),
                    acl: acl::open_acl(),
                    flags: 0,
                },
            };
            txns.push(Txn::Client(req));
        }
        for txn in txns {
            let applied = tree.apply(&Entry {
                providers: crate::acl::Providers::ALL,
                zxid: tree.last_zxid() + 1,
                time_ms: 0,
                session_id: 7,
                auth: vec![],
                txn,
            });
            assert!(applied.result.is_ok());
        }
        tree
    }
}
