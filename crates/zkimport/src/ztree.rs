//! ZooKeeper's `DataTree` as a restore rebuilds it: nodes keyed by full path (the root is `""`,
//! and `"/"` is an alias of it, as in ZooKeeper), every persisted Stat field, the ACL list and
//! the data, plus the session → ephemerals index and the tree digest that ZooKeeper 3.6+ logs.
//!
//! The mutations are ZooKeeper's own (`DataTree.createNode`, `deleteNode`, `setData`, `setACL`,
//! `setCversionPzxid`, `killSession`), including their quirks during replay of a fuzzy snapshot:
//! a create that finds its node keeps the node (and, as 3.9.4+, takes the txn's ACL); a delete
//! moves the parent's pzxid forward even when the child is already gone. Children are not kept:
//! nothing in replay depends on them, and `DataTree::from_imported` rebuilds them.

use corral_proto::codes::ephemeral_owner;
use corral_proto::Acl;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// ZooKeeper's `StatPersisted` (what a snapshot stores; no dataLength or numChildren).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatPersisted {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    /// The number of child creations, not what clients see.
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub pzxid: i64,
}

impl StatPersisted {
    /// `DataTree.createStat`.
    pub fn new(zxid: i64, time: i64, ephemeral_owner: i64) -> Self {
        StatPersisted {
            czxid: zxid,
            mzxid: zxid,
            ctime: time,
            mtime: time,
            ephemeral_owner,
            pzxid: zxid,
            ..Default::default()
        }
    }
}

/// A node's ACL: the list, or a snapshot ACL-table key the table did not have (possible in a
/// fuzzy snapshot; a later create of the node in the log supplies the list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAcl {
    List(Arc<Vec<Acl>>),
    Missing(i64),
}

impl NodeAcl {
    /// A txn's ACL vector; ZooKeeper stores a null one as OPEN_ACL_UNSAFE (`convertAcls(null)`).
    pub fn from_txn(acl: Option<Vec<Acl>>) -> Self {
        NodeAcl::List(Arc::new(acl.unwrap_or_else(corral_tree::acl::open_acl)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZNode {
    pub stat: StatPersisted,
    pub acl: NodeAcl,
    /// `None`: null data, as a client may create.
    pub data: Option<Vec<u8>>,
}

/// Why a mutation did not happen. Replay ignores `NoNode` and `NodeExists` as ZooKeeper does;
/// `Invalid` is input ZooKeeper itself could not process (it would fail with a runtime error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    NoNode,
    NodeExists,
    Invalid(String),
}

/// A session's ephemeral (not a container or TTL node, which carry markers in the owner field).
pub fn is_session_ephemeral(owner: i64) -> bool {
    owner != 0 && owner != ephemeral_owner::CONTAINER && ephemeral_owner::ttl_of(owner).is_none()
}

/// The map key of a path: `"/"` is an alias of the root `""`.
pub fn key(path: &str) -> &str {
    if path == "/" {
        ""
    } else {
        path
    }
}

/// Splits at the last '/' into (parent, name), as ZooKeeper does; a path without one would make
/// ZooKeeper throw StringIndexOutOfBoundsException.
fn split(path: &str) -> Result<(&str, &str), ApplyError> {
    let i = path
        .rfind('/')
        .ok_or_else(|| ApplyError::Invalid(format!("path {path:?} is not absolute")))?;
    Ok((&path[..i], &path[i + 1..]))
}

/// `DigestCalculator.calculateDigest` (digest version 2): CRC32 of path, data and the stat
/// fields; nodes under `/zookeeper/` count as 0 because ZooKeeper rewrites quota nodes locally.
pub fn node_digest(path: &str, node: &ZNode) -> u64 {
    if path.starts_with("/zookeeper/") {
        return 0;
    }
    let s = &node.stat;
    let mut h = crc32fast::Hasher::new();
    h.update(key(path).as_bytes());
    // ZooKeeper hashes no data bytes for null data, as for empty.
    h.update(node.data.as_deref().unwrap_or_default());
    for v in [s.czxid, s.mzxid, s.pzxid, s.ctime, s.mtime] {
        h.update(&v.to_be_bytes());
    }
    for v in [s.version, s.cversion, s.aversion] {
        h.update(&v.to_be_bytes());
    }
    h.update(&s.ephemeral_owner.to_be_bytes());
    u64::from(h.finalize())
}

/// The tree being restored.
#[derive(Debug, Default)]
pub struct ZkTree {
    nodes: HashMap<String, ZNode>,
    /// Session id → paths of its ephemerals (ZooKeeper's `ephemerals` map).
    by_session: HashMap<i64, BTreeSet<String>>,
    /// ZooKeeper's AdHash: the wrapping sum of every node's digest.
    digest: u64,
}

impl ZkTree {
    /// What a fresh ZooKeeper 3.5+ holds: the root, `/zookeeper`, `/zookeeper/quota` (open ACL)
    /// and `/zookeeper/config` (world:anyone READ, set through setACL(-1) so aversion is -1).
    pub fn fresh() -> Self {
        let mut tree = ZkTree::default();
        let open = NodeAcl::List(Arc::new(corral_tree::acl::open_acl()));
        for p in ["", "/zookeeper", "/zookeeper/quota"] {
            tree.insert(p.into(), Self::zeroed(open.clone()));
        }
        let mut config = Self::zeroed(NodeAcl::List(Arc::new(corral_tree::acl::read_acl())));
        config.stat.aversion = -1;
        tree.insert("/zookeeper/config".into(), config);
        tree
    }

    fn zeroed(acl: NodeAcl) -> ZNode {
        ZNode {
            stat: StatPersisted::default(),
            acl,
            data: Some(Vec::new()),
        }
    }

    #[cfg(test)]
    pub fn get(&self, path: &str) -> Option<&ZNode> {
        self.nodes.get(key(path))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(key(path))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn into_nodes(self) -> HashMap<String, ZNode> {
        self.nodes
    }

    /// Adds or replaces a node, keeping the digest and the ephemerals index.
    pub fn insert(&mut self, path: String, node: ZNode) {
        self.remove(&path);
        self.digest = self.digest.wrapping_add(node_digest(&path, &node));
        let owner = node.stat.ephemeral_owner;
        if is_session_ephemeral(owner) {
            self.by_session
                .entry(owner)
                .or_default()
                .insert(path.clone());
        }
        self.nodes.insert(path, node);
    }

    /// Removes a node (not its children: ZooKeeper's deleteNode does not look at them).
    pub fn remove(&mut self, path: &str) -> Option<ZNode> {
        let node = self.nodes.remove(path)?;
        self.forget(path, &node);
        Some(node)
    }

    fn forget(&mut self, path: &str, node: &ZNode) {
        self.digest = self.digest.wrapping_sub(node_digest(path, node));
        let owner = node.stat.ephemeral_owner;
        if let Some(set) = self.by_session.get_mut(&owner) {
            set.remove(path);
            if set.is_empty() {
                self.by_session.remove(&owner);
            }
        }
    }

    /// Changes a node in place, keeping the digest; false if there is no such node.
    fn modify(&mut self, path: &str, f: impl FnOnce(&mut ZNode)) -> bool {
        let path = key(path);
        let Some(node) = self.nodes.get_mut(path) else {
            return false;
        };
        let before = node_digest(path, node);
        f(node);
        let after = node_digest(path, node);
        self.digest = self.digest.wrapping_sub(before).wrapping_add(after);
        true
    }

    /// `DataTree.createNode`.
    #[allow(clippy::too_many_arguments)] // mirrors ZooKeeper's signature, field for field
    pub fn create_node(
        &mut self,
        path: &str,
        data: Option<Vec<u8>>,
        acl: NodeAcl,
        owner: i64,
        parent_cversion: i32,
        zxid: i64,
        time: i64,
    ) -> Result<(), ApplyError> {
        let (parent, _) = split(path)?;
        if !self.contains(parent) {
            return Err(ApplyError::NoNode);
        }
        // 3.9.4+: the node a fuzzy snapshot already holds may point at an ACL-table entry the
        // snapshot missed; the create's ACL is the right one (ACLs are not in the digest).
        if let Some(existing) = self.nodes.get_mut(key(path)) {
            existing.acl = acl;
            return Err(ApplyError::NodeExists);
        }
        self.modify(parent, |p| {
            let cversion = if parent_cversion == -1 {
                p.stat.cversion.wrapping_add(1)
            } else {
                parent_cversion
            };
            // A create replayed over a snapshot that saw later creates must not move it back.
            if cversion > p.stat.cversion {
                p.stat.cversion = cversion;
                p.stat.pzxid = zxid;
            }
        });
        let stat = StatPersisted::new(zxid, time, owner);
        self.insert(path.to_owned(), ZNode { stat, acl, data });
        Ok(())
    }

    /// `DataTree.deleteNode` (3.5+): the parent's pzxid moves forward even if the child is gone.
    pub fn delete_node(&mut self, path: &str, zxid: i64) -> Result<(), ApplyError> {
        let (parent, _) = split(path)?;
        if !self.modify(parent, |p| p.stat.pzxid = p.stat.pzxid.max(zxid)) {
            return Err(ApplyError::NoNode);
        }
        if key(path).is_empty() {
            // ZooKeeper removes only the "/" alias; the root itself stays.
            return Ok(());
        }
        self.remove(path).map(|_| ()).ok_or(ApplyError::NoNode)
    }

    /// `DataTree.setData`: data, mtime, mzxid and the new version; nothing else.
    pub fn set_data(
        &mut self,
        path: &str,
        data: Option<Vec<u8>>,
        version: i32,
        zxid: i64,
        time: i64,
    ) -> Result<(), ApplyError> {
        let found = self.modify(path, |n| {
            n.data = data;
            n.stat.mtime = time;
            n.stat.mzxid = zxid;
            n.stat.version = version;
        });
        found.then_some(()).ok_or(ApplyError::NoNode)
    }

    /// `DataTree.setACL`: the list and the new aversion; no zxid or time changes.
    pub fn set_acl(&mut self, path: &str, acl: NodeAcl, version: i32) -> Result<(), ApplyError> {
        let found = self.modify(path, |n| {
            n.acl = acl;
            n.stat.aversion = version;
        });
        found.then_some(()).ok_or(ApplyError::NoNode)
    }

    /// `DataTree.setCversionPzxid`: the fix-up after a replayed create finds its node.
    pub fn set_cversion_pzxid(
        &mut self,
        path: &str,
        new_cversion: i32,
        zxid: i64,
    ) -> Result<(), ApplyError> {
        let path = if path.len() > 1 {
            path.strip_suffix('/').unwrap_or(path)
        } else {
            path
        };
        let found = self.modify(path, |n| {
            let cversion = if new_cversion == -1 {
                n.stat.cversion.wrapping_add(1)
            } else {
                new_cversion
            };
            if cversion > n.stat.cversion {
                n.stat.cversion = cversion;
                n.stat.pzxid = zxid;
            }
        });
        found.then_some(()).ok_or(ApplyError::NoNode)
    }

    /// Sessions that own ephemerals (ZooKeeper's `DataTree.getSessions`).
    pub fn ephemeral_owners(&self) -> Vec<i64> {
        self.by_session.keys().copied().collect()
    }

    /// `DataTree.killSession`: the paths the txn names (3.6+), then whatever else the session
    /// still owns. Missing nodes are skipped.
    pub fn kill_session(
        &mut self,
        session: i64,
        zxid: i64,
        paths: Option<&[String]>,
    ) -> Result<(), ApplyError> {
        let owned = self.by_session.remove(&session).unwrap_or_default();
        let named = paths.unwrap_or_default();
        for path in named {
            self.delete_ignoring_missing(path, zxid)?;
        }
        for path in owned.iter().filter(|p| !named.contains(p)) {
            self.delete_ignoring_missing(path, zxid)?;
        }
        Ok(())
    }

    fn delete_ignoring_missing(&mut self, path: &str, zxid: i64) -> Result<(), ApplyError> {
        match self.delete_node(path, zxid) {
            Err(ApplyError::NoNode) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> NodeAcl {
        NodeAcl::from_txn(None)
    }

    fn full_digest(t: &ZkTree) -> u64 {
        t.nodes
            .iter()
            .fold(0u64, |d, (p, n)| d.wrapping_add(node_digest(p, n)))
    }

    #[test]
    fn create_sets_stat_and_parent() {
        let mut t = ZkTree::fresh();
        t.create_node("/a", Some(b"x".to_vec()), acl(), 0, 1, 5, 1000)
            .unwrap();
        let a = t.get("/a").unwrap();
        assert_eq!(a.stat, StatPersisted::new(5, 1000, 0));
        let root = t.get("/").unwrap();
        assert_eq!(
            (root.stat.cversion, root.stat.pzxid, root.stat.mzxid),
            (1, 5, 0)
        );
        // parentCVersion -1 (pre-3.3 txns) means "one more than now".
        t.create_node("/b", Some(vec![]), acl(), 0, -1, 6, 1001)
            .unwrap();
        assert_eq!(t.get("").unwrap().stat.cversion, 2);
        // A smaller parentCVersion (replay over a fuzzy snapshot) leaves the parent alone.
        t.create_node("/c", Some(vec![]), acl(), 0, 1, 7, 1002)
            .unwrap();
        assert_eq!(
            (
                t.get("").unwrap().stat.cversion,
                t.get("").unwrap().stat.pzxid
            ),
            (2, 6)
        );
        assert_eq!(
            t.create_node("/x/y", Some(vec![]), acl(), 0, 1, 8, 0),
            Err(ApplyError::NoNode)
        );
        assert_eq!(
            t.create_node("/a", Some(vec![]), acl(), 0, 9, 8, 0),
            Err(ApplyError::NodeExists)
        );
        assert!(matches!(
            t.create_node("a", Some(vec![]), acl(), 0, 1, 8, 0),
            Err(ApplyError::Invalid(_))
        ));
        assert_eq!(t.digest(), full_digest(&t));
    }

    #[test]
    fn node_exists_takes_the_txn_acl() {
        let mut t = ZkTree::fresh();
        t.insert(
            "/a".into(),
            ZNode {
                stat: StatPersisted::new(3, 0, 0),
                acl: NodeAcl::Missing(7),
                data: Some(vec![]),
            },
        );
        let read = NodeAcl::List(Arc::new(corral_tree::acl::read_acl()));
        assert_eq!(
            t.create_node("/a", Some(vec![]), read.clone(), 0, 1, 3, 0),
            Err(ApplyError::NodeExists)
        );
        assert_eq!(t.get("/a").unwrap().acl, read);
    }

    #[test]
    fn delete_moves_pzxid_even_when_child_is_gone() {
        let mut t = ZkTree::fresh();
        t.create_node("/a", Some(vec![]), acl(), 0, 1, 5, 0)
            .unwrap();
        t.delete_node("/a", 9).unwrap();
        assert!(t.get("/a").is_none());
        assert_eq!(t.get("").unwrap().stat.pzxid, 9);
        assert_eq!(t.delete_node("/a", 12), Err(ApplyError::NoNode));
        assert_eq!(t.get("").unwrap().stat.pzxid, 12);
        // Never backwards; cversion untouched by deletes.
        assert_eq!(t.delete_node("/a", 10), Err(ApplyError::NoNode));
        assert_eq!(t.get("").unwrap().stat.pzxid, 12);
        assert_eq!(t.get("").unwrap().stat.cversion, 1);
        assert_eq!(t.delete_node("/q/r", 13), Err(ApplyError::NoNode));
        // "/" is an alias: deleting it keeps the root.
        t.delete_node("/", 14).unwrap();
        assert!(t.get("").is_some());
        assert_eq!(t.digest(), full_digest(&t));
    }

    #[test]
    fn set_data_and_acl_touch_only_their_fields() {
        let mut t = ZkTree::fresh();
        t.create_node("/a", Some(b"1".to_vec()), acl(), 0, 1, 5, 100)
            .unwrap();
        t.set_data("/a", Some(b"22".to_vec()), 3, 6, 200).unwrap();
        let s = t.get("/a").unwrap().stat;
        assert_eq!(
            (s.mzxid, s.mtime, s.version, s.czxid, s.ctime, s.pzxid),
            (6, 200, 3, 5, 100, 5)
        );
        let read = NodeAcl::List(Arc::new(corral_tree::acl::read_acl()));
        t.set_acl("/a", read.clone(), 4).unwrap();
        let n = t.get("/a").unwrap();
        assert_eq!((n.stat.aversion, n.stat.mzxid, &n.acl), (4, 6, &read));
        assert_eq!(
            t.set_data("/nope", Some(vec![]), 1, 7, 0),
            Err(ApplyError::NoNode)
        );
        assert_eq!(t.set_acl("/nope", acl(), 1), Err(ApplyError::NoNode));
        // setData on "/" reaches the root.
        t.set_data("/", Some(b"r".to_vec()), 1, 8, 300).unwrap();
        assert_eq!(t.get("").unwrap().data.as_deref(), Some(&b"r"[..]));
        assert_eq!(t.digest(), full_digest(&t));
    }

    #[test]
    fn kill_session_deletes_named_and_owned_nodes() {
        let mut t = ZkTree::fresh();
        t.create_node("/p", Some(vec![]), acl(), 0, 1, 1, 0)
            .unwrap();
        t.create_node("/p/e1", Some(vec![]), acl(), 42, 1, 2, 0)
            .unwrap();
        t.create_node("/p/e2", Some(vec![]), acl(), 42, 2, 3, 0)
            .unwrap();
        t.create_node("/p/other", Some(vec![]), acl(), 43, 3, 4, 0)
            .unwrap();
        t.create_node(
            "/p/c",
            Some(vec![]),
            acl(),
            ephemeral_owner::CONTAINER,
            4,
            5,
            0,
        )
        .unwrap();
        t.create_node(
            "/p/t",
            Some(vec![]),
            acl(),
            ephemeral_owner::for_ttl(1000),
            5,
            6,
            0,
        )
        .unwrap();
        // 3.6+ names the paths; a named path that is gone is skipped.
        t.kill_session(42, 10, Some(&["/p/e1".into(), "/p/missing".into()]))
            .unwrap();
        assert!(t.get("/p/e1").is_none() && t.get("/p/e2").is_none());
        assert!(t.get("/p/other").is_some() && t.get("/p/c").is_some() && t.get("/p/t").is_some());
        assert_eq!(t.get("/p").unwrap().stat.pzxid, 10);
        // Without a path list (<= 3.5) everything the session owns goes.
        t.kill_session(43, 11, None).unwrap();
        assert!(t.get("/p/other").is_none());
        assert_eq!(t.digest(), full_digest(&t));
    }

    #[test]
    fn set_cversion_pzxid_only_moves_forward() {
        let mut t = ZkTree::fresh();
        t.set_cversion_pzxid("", 3, 9).unwrap();
        assert_eq!(
            (
                t.get("").unwrap().stat.cversion,
                t.get("").unwrap().stat.pzxid
            ),
            (3, 9)
        );
        t.set_cversion_pzxid("", 2, 10).unwrap();
        assert_eq!(t.get("").unwrap().stat.pzxid, 9);
        t.set_cversion_pzxid("", -1, 11).unwrap();
        assert_eq!(t.get("").unwrap().stat.cversion, 4);
        assert_eq!(t.set_cversion_pzxid("/none", 1, 1), Err(ApplyError::NoNode));
    }

    #[test]
    fn digest_of_a_fresh_tree() {
        // Only "" and "/zookeeper" count; both have zeroed stats and no data.
        let t = ZkTree::fresh();
        let zero = ZNode {
            stat: StatPersisted::default(),
            acl: acl(),
            data: Some(vec![]),
        };
        assert_eq!(
            t.digest(),
            node_digest("", &zero).wrapping_add(node_digest("/zookeeper", &zero))
        );
        assert_eq!(node_digest("/zookeeper/quota", &zero), 0);
    }
}
