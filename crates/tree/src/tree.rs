//! The namespace of znodes and the queries on it. Changes go through [`crate::apply`] only.
//!
//! Nodes are kept in one hash map keyed by full path (as ZooKeeper does), so a lookup is one probe
//! whatever the depth. Each node keeps the names of its children, allocated only once it has some:
//! most znodes are leaves. Data is a boxed slice, ACLs a 4-byte reference into a shared table.

use crate::acl::{self, AclRef, AclTable};
use crate::path;
use crate::store::{Children, NodeId, NodeStore};
use corral_proto::codes::ephemeral_owner;
use corral_proto::{Acl, Stat};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The paths ZooKeeper creates in every tree and treats as special.
pub const ZOOKEEPER_PATH: &str = "/zookeeper";
pub const QUOTA_PATH: &str = "/zookeeper/quota";
pub const CONFIG_PATH: &str = "/zookeeper/config";

/// A znode's data: up to 22 bytes inline (most coordination data is small: ids, flags,
/// addresses), longer on the heap. Reads as a byte slice; null data (a client may create a
/// znode with none, and reads null back) reads as empty and says so through [`Data::is_null`].
#[derive(Clone, PartialEq, Eq)]
pub enum Data {
    /// `len` is [`NULL_LEN`] for null data.
    Inline {
        len: u8,
        bytes: [u8; INLINE_DATA],
    },
    Heap(Box<[u8]>),
}

const INLINE_DATA: usize = 22;
/// The inline length that marks null data; never a real length (at most `INLINE_DATA`).
const NULL_LEN: u8 = u8::MAX;

impl Data {
    pub const NULL: Data = Data::Inline {
        len: NULL_LEN,
        bytes: [0; INLINE_DATA],
    };

    pub fn is_null(&self) -> bool {
        matches!(self, Data::Inline { len: NULL_LEN, .. })
    }

    /// The data as the wire carries it: `None` for null.
    pub fn to_buffer(&self) -> Option<bytes::Bytes> {
        (!self.is_null()).then(|| bytes::Bytes::copy_from_slice(self))
    }
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Inline { len: NULL_LEN, .. } => &[],
            Data::Inline { len, bytes } => &bytes[..*len as usize],
            Data::Heap(b) => b,
        }
    }
}

impl From<Option<Vec<u8>>> for Data {
    fn from(d: Option<Vec<u8>>) -> Data {
        d.map_or(Data::NULL, Data::from)
    }
}

impl From<Option<&[u8]>> for Data {
    fn from(d: Option<&[u8]>) -> Data {
        d.map_or(Data::NULL, Data::from)
    }
}

impl From<&[u8]> for Data {
    fn from(d: &[u8]) -> Data {
        if d.len() <= INLINE_DATA {
            let mut bytes = [0; INLINE_DATA];
            bytes[..d.len()].copy_from_slice(d);
            Data::Inline {
                len: d.len() as u8,
                bytes,
            }
        } else {
            Data::Heap(d.into())
        }
    }
}

impl From<Vec<u8>> for Data {
    fn from(d: Vec<u8>) -> Data {
        if d.len() <= INLINE_DATA {
            Data::from(&d[..])
        } else {
            Data::Heap(d.into())
        }
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_null() {
            return f.write_str("null");
        }
        write!(f, "{:?}", &**self)
    }
}

/// One znode. Its children are in the tree's node store, which alone can name them.
#[derive(Debug, Clone)]
pub struct Node {
    pub czxid: i64,
    pub mzxid: i64,
    pub pzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub acl: AclRef,
    pub data: Data,
    pub(crate) children: Option<Box<Children>>,
}

/// Equal znodes: equal Stat fields, ACL reference, data and children.
impl PartialEq for Node {
    fn eq(&self, o: &Node) -> bool {
        let kids = |n: &Node| {
            let mut ids: Vec<NodeId> = n
                .children
                .iter()
                .flat_map(|t| t.iter().map(|e| e.id))
                .collect();
            ids.sort_unstable();
            ids
        };
        (self.czxid, self.mzxid, self.pzxid, self.ctime, self.mtime)
            == (o.czxid, o.mzxid, o.pzxid, o.ctime, o.mtime)
            && (
                self.version,
                self.cversion,
                self.aversion,
                self.ephemeral_owner,
            ) == (o.version, o.cversion, o.aversion, o.ephemeral_owner)
            && self.acl == o.acl
            && self.data == o.data
            && kids(self) == kids(o)
    }
}

impl Eq for Node {}

impl Node {
    pub fn new(
        zxid: i64,
        time_ms: i64,
        ephemeral_owner: i64,
        acl: AclRef,
        data: impl Into<Data>,
    ) -> Self {
        Node {
            czxid: zxid,
            mzxid: zxid,
            pzxid: zxid,
            ctime: time_ms,
            mtime: time_ms,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner,
            acl,
            data: data.into(),
            children: None,
        }
    }

    pub fn child_count(&self) -> usize {
        self.children.as_ref().map_or(0, |c| c.len())
    }

    pub fn stat(&self) -> Stat {
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            // ZooKeeper stores the number of child creations and shows creations + deletions.
            cversion: self
                .cversion
                .wrapping_mul(2)
                .wrapping_sub(self.child_count() as i32),
            aversion: self.aversion,
            // Containers and TTL nodes keep a marker in the owner field; clients see 0.
            ephemeral_owner: if self.is_session_ephemeral() {
                self.ephemeral_owner
            } else {
                0
            },
            data_length: self.data.len() as i32,
            num_children: self.child_count() as i32,
            pzxid: self.pzxid,
        }
    }

    /// An ephemeral node owned by a session (not a container or TTL node, whose owner field
    /// carries a marker instead).
    pub fn is_session_ephemeral(&self) -> bool {
        self.ephemeral_owner != 0
            && self.ephemeral_owner != ephemeral_owner::CONTAINER
            && ephemeral_owner::ttl_of(self.ephemeral_owner).is_none()
    }
}

/// Settings that change what a write does; every replica must apply the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeConfig {
    /// ZooKeeper's `extendedTypesEnabled`: TTL nodes are refused (Unimplemented) without it.
    pub extended_types: bool,
    /// ZooKeeper's `zookeeper.enforceQuota`: hard quota limits refuse writes (QuotaExceeded).
    pub enforce_quota: bool,
}

/// The whole replicated state: znodes, ACLs, sessions and their ephemerals.
#[derive(Debug, Clone)]
pub struct DataTree {
    pub(crate) nodes: NodeStore,
    pub(crate) acls: AclTable,
    pub(crate) ephemerals: HashMap<i64, BTreeSet<Box<str>>>,
    pub(crate) containers: BTreeSet<Box<str>>,
    pub(crate) ttls: BTreeSet<Box<str>>,
    /// Live sessions and their negotiated timeouts.
    pub(crate) sessions: BTreeMap<i64, i32>,
    pub(crate) last_zxid: i64,
    pub(crate) config: TreeConfig,
    /// Quota'd paths and their subtrees' usage (derived from the nodes; see `quota`).
    pub(crate) quotas: BTreeMap<Box<str>, crate::quota::Usage>,
}

/// The key the map uses for a path: ZooKeeper's parent of `/a` is `""`, which is the root.
pub(crate) fn key(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

impl DataTree {
    /// A tree holding what every ZooKeeper tree holds: `/`, `/zookeeper`, `/zookeeper/quota` and
    /// `/zookeeper/config`, all with zeroed stats.
    pub fn new(config: TreeConfig) -> Self {
        let mut tree = DataTree {
            nodes: NodeStore::default(),
            acls: AclTable::default(),
            ephemerals: HashMap::new(),
            containers: BTreeSet::new(),
            ttls: BTreeSet::new(),
            sessions: BTreeMap::new(),
            last_zxid: 0,
            config,
            quotas: BTreeMap::new(),
        };
        let open = acl::open_acl();
        for p in ["/", ZOOKEEPER_PATH, QUOTA_PATH] {
            let r = tree.acls.intern(&open);
            tree.nodes
                .insert(p, Node::new(0, 0, 0, r, Data::from(&[][..])));
        }
        let r = tree.acls.intern(&acl::read_acl());
        let mut config = Node::new(0, 0, 0, r, Data::from(&[][..]));
        config.aversion = -1;
        tree.nodes.insert(CONFIG_PATH, config);
        for p in [ZOOKEEPER_PATH, QUOTA_PATH, CONFIG_PATH] {
            tree.link_to_parent(p);
        }
        tree
    }

    pub fn config(&self) -> TreeConfig {
        self.config
    }

    /// Settings come from this member's configuration, never from a snapshot it loaded.
    pub fn set_config(&mut self, config: TreeConfig) {
        self.config = config;
    }

    /// The zxid of the last entry applied.
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// The node at `path`; `""` is the root, as in ZooKeeper.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(key(path))
    }

    /// The node's ACL as a shared list, for events that must be filtered by it.
    pub fn acl_shared(&self, node: &Node) -> std::sync::Arc<[Acl]> {
        self.acls.get_shared(node.acl)
    }

    pub fn acl(&self, node: &Node) -> &[Acl] {
        self.acls.get(node.acl)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Total bytes of data held, for `mntr`'s approximate data size.
    pub fn data_size(&self) -> usize {
        self.nodes.iter().map(|(k, n)| k.len() + n.data.len()).sum()
    }

    /// Sorted names of a node's children.
    pub fn children_of(&self, node: &Node) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.child_names(node).map(str::to_owned).collect();
        names.sort_unstable();
        names
    }

    /// Names of a node's children, in no order.
    pub fn child_names<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = &'a str> + 'a {
        self.nodes.child_names(node)
    }

    /// Records the node at `path` among its parent's children (both must be in the store).
    pub(crate) fn link_to_parent(&mut self, p: &str) -> bool {
        let parent = key(path::parent_of(p).unwrap_or(""));
        match (self.nodes.id_of(parent), self.nodes.id_of(p)) {
            (Some(parent), Some(child)) => {
                self.nodes.link_child(parent, child);
                true
            }
            _ => false,
        }
    }

    /// Removes the node at `path` from its parent's children.
    pub(crate) fn unlink_from_parent(&mut self, p: &str) {
        let parent = key(path::parent_of(p).unwrap_or(""));
        if let (Some(parent), Some(child)) = (self.nodes.id_of(parent), self.nodes.id_of(p)) {
            self.nodes.unlink_child(parent, child);
        }
    }

    /// How many nodes lie below `path` (not counting itself).
    pub fn descendant_count(&self, path: &str) -> usize {
        let mut count = 0;
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            if let Some(node) = self.nodes.get(key(&p)) {
                for child in self.nodes.child_names(node) {
                    count += 1;
                    stack.push(path::join(&p, child));
                }
            }
        }
        count
    }

    /// The ephemeral nodes a session owns, sorted.
    pub fn ephemerals_of(&self, session_id: i64) -> Vec<String> {
        self.ephemerals
            .get(&session_id)
            .map(|s| s.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    /// Every session with ephemerals, and how many, for `dump`-style reports.
    pub fn ephemeral_counts(&self) -> impl Iterator<Item = (i64, usize)> + '_ {
        self.ephemerals.iter().map(|(s, p)| (*s, p.len()))
    }

    pub fn session_timeout(&self, session_id: i64) -> Option<i32> {
        self.sessions.get(&session_id).copied()
    }

    pub fn sessions(&self) -> impl Iterator<Item = (i64, i32)> + '_ {
        self.sessions.iter().map(|(s, t)| (*s, *t))
    }

    /// Containers and TTL nodes that may be due for removal at `now_ms`, as ZooKeeper's
    /// `ContainerManager` picks them: childless containers that once had a child, and childless
    /// TTL nodes unmodified for longer than their TTL. The removal itself is an entry that
    /// re-checks these conditions when applied.
    pub fn reap_candidates(&self, now_ms: i64) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.containers {
            if let Some(n) = self.nodes.get(p) {
                if container_emptied(n) {
                    out.push(p.to_string());
                }
            }
        }
        for p in &self.ttls {
            if let Some(n) = self.nodes.get(p) {
                if ttl_expired(n, now_ms) {
                    out.push(p.to_string());
                }
            }
        }
        out
    }
}

/// A container that once had a child and has none now (ZooKeeper's ContainerManager rule).
pub(crate) fn container_emptied(n: &Node) -> bool {
    n.child_count() == 0 && n.cversion > 0
}

pub(crate) fn ttl_expired(n: &Node, now_ms: i64) -> bool {
    match ephemeral_owner::ttl_of(n.ephemeral_owner) {
        Some(ttl) => n.child_count() == 0 && ttl != 0 && now_ms - n.mtime > ttl,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tree_has_zookeepers_built_in_nodes() {
        let t = DataTree::new(TreeConfig::default());
        let root = t.get("/").unwrap();
        assert_eq!(t.children_of(root), vec!["zookeeper"]);
        let zk = t.get("/zookeeper").unwrap();
        assert_eq!(t.children_of(zk), vec!["config", "quota"]);
        assert_eq!(t.acl(t.get(CONFIG_PATH).unwrap()), acl::read_acl());
        assert_eq!(t.descendant_count("/"), 3);
        assert_eq!(t.get("").unwrap(), root);
        // What a fresh ZooKeeper shows: cversion is derived from creations and children.
        assert_eq!(root.stat().cversion, -1);
        assert_eq!(zk.stat().cversion, -2);
        assert_eq!(t.get(CONFIG_PATH).unwrap().stat().aversion, -1);
    }
}

/// One znode as an importer found it (another system's snapshot): every Stat field ZooKeeper
/// persists, the ACL list itself, and the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedNode {
    pub czxid: i64,
    pub mzxid: i64,
    pub pzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    /// As ZooKeeper stores it: the number of child creations.
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub acl: Vec<Acl>,
    /// `None`: null data.
    pub data: Option<Vec<u8>>,
}

/// Why imported nodes do not make a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("{0} has no parent among the imported nodes")]
    Orphan(String),
    #[error("{0} is not an absolute path")]
    BadPath(String),
}

impl DataTree {
    /// Builds a tree from imported nodes (any order; `/` must be among them, and every other
    /// node's parent), the live sessions, and the zxid of the last transaction they reflect.
    pub fn from_imported(
        config: TreeConfig,
        last_zxid: i64,
        sessions: BTreeMap<i64, i32>,
        nodes: impl IntoIterator<Item = (String, ImportedNode)>,
    ) -> Result<DataTree, ImportError> {
        let mut tree = DataTree::new(config);
        tree.nodes.clear();
        tree.acls = Default::default();
        tree.last_zxid = last_zxid;
        tree.sessions = sessions;
        let mut paths = Vec::new();
        for (p, n) in nodes {
            if !p.starts_with('/') {
                return Err(ImportError::BadPath(p));
            }
            let acl = tree.acls.intern(&n.acl);
            let node = Node {
                czxid: n.czxid,
                mzxid: n.mzxid,
                pzxid: n.pzxid,
                ctime: n.ctime,
                mtime: n.mtime,
                version: n.version,
                cversion: n.cversion,
                aversion: n.aversion,
                ephemeral_owner: n.ephemeral_owner,
                acl,
                data: n.data.into(),
                children: None,
            };
            // A path given twice: the later node wins.
            if let Some(old) = tree.nodes.remove(&p) {
                tree.acls.release(old.acl);
            } else {
                paths.push(p.clone());
            }
            tree.nodes.insert(&p, node);
        }
        if !tree.nodes.contains("/") {
            return Err(ImportError::Orphan("/".into()));
        }
        for p in &paths {
            if p == "/" {
                continue;
            }
            if path::parent_of(p).is_none() {
                return Err(ImportError::BadPath(p.clone()));
            }
            if !tree.link_to_parent(p) {
                return Err(ImportError::Orphan(p.clone()));
            }
            let owner = tree.nodes.get(p).expect("inserted above").ephemeral_owner;
            tree.index_special_pub(p, owner);
        }
        tree.rebuild_quotas();
        Ok(tree)
    }

    /// Every node with its path, in no particular order (for exports and comparisons).
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter()
    }
}
