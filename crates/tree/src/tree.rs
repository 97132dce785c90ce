//! The namespace of znodes and the queries on it. Changes go through [`crate::apply`] only.
//!
//! Nodes are kept in one hash map keyed by full path (as ZooKeeper does), so a lookup is one probe
//! whatever the depth. Each node keeps the names of its children, allocated only once it has some:
//! most znodes are leaves. Data is a boxed slice, ACLs a 4-byte reference into a shared table.

use crate::acl::{self, AclRef, AclTable};
use crate::path;
use corral_proto::codes::ephemeral_owner;
use corral_proto::{Acl, Stat};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The paths ZooKeeper creates in every tree and treats as special.
pub const ZOOKEEPER_PATH: &str = "/zookeeper";
pub const QUOTA_PATH: &str = "/zookeeper/quota";
pub const CONFIG_PATH: &str = "/zookeeper/config";

/// One znode.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub data: Box<[u8]>,
    pub children: Option<Box<HashSet<Box<str>>>>,
}

impl Node {
    pub fn new(zxid: i64, time_ms: i64, ephemeral_owner: i64, acl: AclRef, data: &[u8]) -> Self {
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

    pub fn children(&self) -> impl Iterator<Item = &str> {
        self.children.iter().flat_map(|c| c.iter().map(|s| &**s))
    }

    pub fn add_child(&mut self, name: &str) {
        self.children
            .get_or_insert_with(Default::default)
            .insert(name.into());
    }

    pub fn remove_child(&mut self, name: &str) {
        if let Some(c) = &mut self.children {
            c.remove(name);
            if c.is_empty() {
                self.children = None;
            }
        }
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
    pub(crate) nodes: HashMap<Box<str>, Node>,
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
            nodes: HashMap::new(),
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
            tree.nodes.insert(p.into(), Node::new(0, 0, 0, r, &[]));
        }
        let r = tree.acls.intern(&acl::read_acl());
        let mut config = Node::new(0, 0, 0, r, &[]);
        config.aversion = -1;
        tree.nodes.insert(CONFIG_PATH.into(), config);
        for p in [ZOOKEEPER_PATH, QUOTA_PATH, CONFIG_PATH] {
            let parent = key(path::parent_of(p).unwrap_or(""));
            tree.nodes
                .get_mut(parent)
                .expect("built-in parent exists")
                .add_child(path::name_of(p));
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
        let mut names: Vec<String> = node.children().map(str::to_owned).collect();
        names.sort_unstable();
        names
    }

    /// How many nodes lie below `path` (not counting itself).
    pub fn descendant_count(&self, path: &str) -> usize {
        let mut count = 0;
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            if let Some(node) = self.nodes.get(key(&p)) {
                for child in node.children() {
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
    pub data: Vec<u8>,
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
            if let Some(old) = tree.nodes.insert(p.as_str().into(), node) {
                tree.acls.release(old.acl);
            } else {
                paths.push(p);
            }
        }
        if !tree.nodes.contains_key("/") {
            return Err(ImportError::Orphan("/".into()));
        }
        for p in &paths {
            if p == "/" {
                continue;
            }
            let parent = key(path::parent_of(p).ok_or_else(|| ImportError::BadPath(p.clone()))?);
            let owner = tree.nodes[p.as_str()].ephemeral_owner;
            tree.nodes
                .get_mut(parent)
                .ok_or_else(|| ImportError::Orphan(p.clone()))?
                .add_child(path::name_of(p));
            tree.index_special_pub(p, owner);
        }
        tree.rebuild_quotas();
        Ok(tree)
    }

    /// Every node with its path, in no particular order (for exports and comparisons).
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (&**p, n))
    }
}
