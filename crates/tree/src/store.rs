//! Where the znodes live, laid out for memory: a million znodes should cost well under the few
//! hundred bytes each that a `HashMap<String, Node>` with per-parent `HashSet<String>` children
//! costs.
//!
//! - Every node sits in one slot of a `Vec` (with its full path), addressed by a `u32` id; freed
//!   slots are reused.
//! - The path index is a hash table of ids, each with 32 bits of its path's hash (8 bytes a
//!   bucket); a lookup hashes the path and compares against the slot's stored path.
//! - A parent's children are a hash table of child ids, hashed by child name (taken from the
//!   child's path), so a name is stored once, in its path.
//! - Both kinds of table keep those 32 hash bits so that growing one rehashes from the table
//!   itself: rehashing from the paths meant a cache miss or two per node, a 100-200 ms stall of
//!   every write each time a table of half a million entries doubled.

use crate::path;
use crate::tree::Node;
use hashbrown::HashTable;
use std::hash::BuildHasher;

pub(crate) type NodeId = u32;

/// A parent's children: the ids of the child nodes, found by name.
pub(crate) type Children = HashTable<Keyed>;

/// A table entry: a node id and the low 32 bits of its key's hash (the path's in the index,
/// the name's in a children table).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyed {
    pub(crate) id: NodeId,
    hash: u32,
}

/// The table hash of 32 stored bits: multiplied out so that hashbrown's bucket bits (the low
/// ones) and tag bits (the top seven) both depend on them.
fn spread(hash: u32) -> u64 {
    (hash as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Cloning keeps every id where it was, so the children tables stay valid as they are.
#[derive(Clone)]
struct Slot {
    path: Box<str>,
    node: Node,
}

/// The slots, in chunks of fixed capacity: growing never moves the slots already there (one
/// `Vec` of a million slots, about 110 MB, was copied whole each time it doubled).
#[derive(Default)]
struct Slots {
    chunks: Vec<Vec<Option<Slot>>>,
}

const CHUNK: usize = 4096;

impl Slots {
    fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |c| (self.chunks.len() - 1) * CHUNK + c.len())
    }

    fn push(&mut self, slot: Option<Slot>) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room")
            .push(slot);
    }

    fn reserve(&mut self, additional: usize) {
        self.chunks.reserve(additional.div_ceil(CHUNK));
    }

    fn iter(&self) -> impl Iterator<Item = &Option<Slot>> {
        self.chunks.iter().flatten()
    }
}

impl Clone for Slots {
    fn clone(&self) -> Slots {
        // Each chunk keeps its full capacity, so the copy grows without moving either.
        let chunks = self
            .chunks
            .iter()
            .map(|c| {
                let mut copy = Vec::with_capacity(CHUNK);
                copy.extend(c.iter().cloned());
                copy
            })
            .collect();
        Slots { chunks }
    }
}

impl std::ops::Index<usize> for Slots {
    type Output = Option<Slot>;
    fn index(&self, i: usize) -> &Option<Slot> {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Slots {
    fn index_mut(&mut self, i: usize) -> &mut Option<Slot> {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[derive(Default, Clone)]
pub(crate) struct NodeStore {
    slots: Slots,
    free: Vec<NodeId>,
    index: HashTable<Keyed>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl std::fmt::Debug for NodeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStore")
            .field("nodes", &self.index.len())
            .finish()
    }
}

impl NodeStore {
    /// The 32 bits of a key's hash that the tables keep.
    fn hash(&self, s: &str) -> u32 {
        self.hasher.hash_one(s) as u32
    }

    fn slot(&self, id: NodeId) -> &Slot {
        self.slots[id as usize].as_ref().expect("a live node id")
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn id_of(&self, path: &str) -> Option<NodeId> {
        let h = self.hash(path);
        self.index
            .find(spread(h), |e| e.hash == h && &*self.slot(e.id).path == path)
            .map(|e| e.id)
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.id_of(path).map(|id| &self.slot(id).node)
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Node> {
        let id = self.id_of(path)?;
        self.slots[id as usize].as_mut().map(|s| &mut s.node)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.id_of(path).is_some()
    }

    pub fn path_of(&self, id: NodeId) -> &str {
        &self.slot(id).path
    }

    /// Adds a node that is not there yet (not linked to its parent: see `link_child`).
    pub fn insert(&mut self, path: &str, node: Node) -> NodeId {
        debug_assert!(!self.contains(path), "{path} inserted twice");
        let slot = Some(Slot {
            path: path.into(),
            node,
        });
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as NodeId
            }
        };
        let hash = self.hash(path);
        self.index
            .insert_unique(spread(hash), Keyed { id, hash }, |e| spread(e.hash));
        id
    }

    /// Takes a node out (its parent's child link must be removed first: see `unlink_child`).
    pub fn remove(&mut self, path: &str) -> Option<Node> {
        let h = self.hash(path);
        let slots = &self.slots;
        let entry = self
            .index
            .find_entry(spread(h), |e| {
                e.hash == h && &*slots[e.id as usize].as_ref().expect("indexed").path == path
            })
            .ok()?;
        let (Keyed { id, .. }, _) = entry.remove();
        let slot = self.slots[id as usize].take().expect("indexed");
        self.free.push(id);
        Some(slot.node)
    }

    /// Room for `additional` more nodes, so a bulk load (a snapshot) does not rehash as it goes.
    pub fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
        self.index.reserve(additional, |e| spread(e.hash));
    }

    /// Room for `additional` more children of `parent`.
    pub fn reserve_children(&mut self, parent: NodeId, additional: usize) {
        let mut table = self.take_children(parent);
        table.reserve(additional, |e| spread(e.hash));
        // Kept even while empty: the children are about to be linked.
        let node = &mut self.slots[parent as usize]
            .as_mut()
            .expect("a live parent")
            .node;
        node.children = Some(table);
    }

    /// Records `child` among `parent`'s children.
    pub fn link_child(&mut self, parent: NodeId, child: NodeId) {
        let hash = self.hash(path::name_of(self.path_of(child)));
        let mut table = self.take_children(parent);
        table.insert_unique(spread(hash), Keyed { id: child, hash }, |e| spread(e.hash));
        self.put_children(parent, table);
    }

    /// Forgets `child` among `parent`'s children.
    pub fn unlink_child(&mut self, parent: NodeId, child: NodeId) {
        let hash = self.hash(path::name_of(self.path_of(child)));
        let mut table = self.take_children(parent);
        if let Ok(entry) = table.find_entry(spread(hash), |e| e.id == child) {
            entry.remove();
        }
        self.put_children(parent, table);
    }

    /// The parent's children table, taken out of its node (boxed as it lives there, so taking
    /// it out and putting it back costs no allocation) while `slots` is read to rehash it.
    fn take_children(&mut self, parent: NodeId) -> Box<Children> {
        let node = &mut self.slots[parent as usize]
            .as_mut()
            .expect("a live parent")
            .node;
        node.children.take().unwrap_or_default()
    }

    fn put_children(&mut self, parent: NodeId, table: Box<Children>) {
        let node = &mut self.slots[parent as usize]
            .as_mut()
            .expect("a live parent")
            .node;
        node.children = if table.is_empty() { None } else { Some(table) };
    }

    /// The ids of a node's children, in no order.
    pub fn child_ids<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = NodeId> + 'a {
        node.children.iter().flat_map(|t| t.iter().map(|e| e.id))
    }

    /// The names of a node's children, in no order.
    pub fn child_names<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = &'a str> + 'a {
        self.child_ids(node)
            .map(|id| path::name_of(self.path_of(id)))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.slots.iter().flatten().map(|s| (&*s.path, &s.node))
    }

    pub fn clear(&mut self) {
        *self = NodeStore::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::AclRef;

    fn node() -> Node {
        Node::new(1, 1, 0, AclRef::default(), &b"d"[..])
    }

    #[test]
    fn insert_find_link_remove_and_reuse() {
        let mut s = NodeStore::default();
        let root = s.insert("/", node());
        let a = s.insert("/a", node());
        let b = s.insert("/b", node());
        s.link_child(root, a);
        s.link_child(root, b);
        let mut names: Vec<&str> = s.child_names(s.get("/").unwrap()).collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(s.get("/").unwrap().child_count(), 2);
        s.unlink_child(root, a);
        assert!(s.remove("/a").is_some());
        assert!(s.get("/a").is_none() && s.remove("/a").is_none());
        assert_eq!(s.len(), 2);
        // The freed slot is reused.
        assert_eq!(s.insert("/c", node()), a);
        let c = s.clone();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("/").unwrap().child_count(), 1);
        assert_eq!(
            c.child_names(c.get("/").unwrap()).collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn many_children_of_one_parent() {
        let mut s = NodeStore::default();
        let root = s.insert("/", node());
        for i in 0..10_000 {
            let id = s.insert(&format!("/n{i}"), node());
            s.link_child(root, id);
        }
        for i in (0..10_000).step_by(2) {
            let p = format!("/n{i}");
            let id = s.id_of(&p).unwrap();
            s.unlink_child(root, id);
            s.remove(&p);
        }
        assert_eq!(s.get("/").unwrap().child_count(), 5_000);
        assert!(s.get("/n1").is_some() && s.get("/n2").is_none());
    }
}
