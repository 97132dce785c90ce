//! Watches: who wants to hear about which path.
//!
//! ZooKeeper's semantics: a data watch (from getData, or exists) fires once on NodeCreated,
//! NodeDataChanged or NodeDeleted of its path; a child watch fires once on NodeChildrenChanged or
//! NodeDeleted; a persistent watch fires on every event of its path and stays; a
//! persistent-recursive watch fires on every event of its path and of every path below it, except
//! NodeChildrenChanged, and stays. Watches belong to a connection and die with it; a reconnecting
//! client restores them with setWatches.
//!
//! One table maps a path to its watchers, so a million watches on a million paths cost one entry
//! each, and a second index per connection makes dropping a connection cheap.

use corral_io::hash::{HashMap, HashSet};
use corral_proto::EventType;
use corral_tree::path;

pub type ConnId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchKind {
    Data,
    Child,
    Persistent,
    Recursive,
}

impl WatchKind {
    /// Whether a watch of this kind on the event's own path fires for `event`.
    fn fires_on(self, event: EventType) -> bool {
        use EventType::*;
        match self {
            WatchKind::Data => matches!(event, NodeCreated | NodeDataChanged | NodeDeleted),
            WatchKind::Child => matches!(event, NodeChildrenChanged | NodeDeleted),
            WatchKind::Persistent => true,
            WatchKind::Recursive => event != NodeChildrenChanged,
        }
    }

    fn is_one_shot(self) -> bool {
        matches!(self, WatchKind::Data | WatchKind::Child)
    }
}

/// Which watches a removeWatches or checkWatches names (`WatcherType`, with 3.9's two
/// persistent types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherType {
    Children,
    Data,
    Any,
    Persistent,
    PersistentRecursive,
}

impl WatcherType {
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            1 => Some(WatcherType::Children),
            2 => Some(WatcherType::Data),
            3 => Some(WatcherType::Any),
            4 => Some(WatcherType::Persistent),
            5 => Some(WatcherType::PersistentRecursive),
            _ => None,
        }
    }

    /// As ZooKeeper's `DataTree.removeWatch` and `containsWatcher`: Children and Data name only
    /// the one-shot watches of getChildren and getData/exists; the persistent kinds are named by
    /// their own types, or by Any.
    fn covers(self, kind: WatchKind) -> bool {
        match self {
            WatcherType::Children => kind == WatchKind::Child,
            WatcherType::Data => kind == WatchKind::Data,
            WatcherType::Persistent => kind == WatchKind::Persistent,
            WatcherType::PersistentRecursive => kind == WatchKind::Recursive,
            WatcherType::Any => true,
        }
    }
}

#[derive(Debug, Default)]
pub struct WatchManager {
    by_path: HashMap<Box<str>, Vec<(ConnId, WatchKind)>>,
    by_conn: HashMap<ConnId, HashSet<(Box<str>, WatchKind)>>,
    recursive_count: usize,
}

impl WatchManager {
    pub fn add(&mut self, conn: ConnId, path: &str, kind: WatchKind) {
        let watchers = self.by_path.entry(path.into()).or_default();
        if watchers.contains(&(conn, kind)) {
            if corral_io::broken::is(corral_io::broken::Broken::DropWatch) {
                self.remove_one(conn, path, kind);
            }
            return;
        }
        watchers.push((conn, kind));
        self.by_conn
            .entry(conn)
            .or_default()
            .insert((path.into(), kind));
        if kind == WatchKind::Recursive {
            self.recursive_count += 1;
        }
    }

    fn remove_one(&mut self, conn: ConnId, path: &str, kind: WatchKind) {
        if let Some(watchers) = self.by_path.get_mut(path) {
            watchers.retain(|w| *w != (conn, kind));
            if watchers.is_empty() {
                self.by_path.remove(path);
            }
        }
        if let Some(set) = self.by_conn.get_mut(&conn) {
            set.remove(&(Box::from(path), kind));
            if set.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
        if kind == WatchKind::Recursive {
            self.recursive_count = self.recursive_count.saturating_sub(1);
        }
    }

    /// The connections to notify of `event` on `path`, each once; one-shot watches are consumed.
    pub fn trigger(&mut self, path: &str, event: EventType) -> Vec<ConnId> {
        let mut fired: Vec<ConnId> = Vec::new();
        let mut consumed = Vec::new();
        if let Some(watchers) = self.by_path.get(path) {
            for &(conn, kind) in watchers {
                if kind.fires_on(event) {
                    fired.push(conn);
                    if kind.is_one_shot() {
                        consumed.push((conn, kind));
                    }
                }
            }
        }
        for (conn, kind) in consumed {
            self.remove_one(conn, path, kind);
        }
        if self.recursive_count > 0 && event != EventType::NodeChildrenChanged {
            let mut p = path;
            while let Some(parent) = path::parent_of(p) {
                let ancestor = if parent.is_empty() { "/" } else { parent };
                if let Some(watchers) = self.by_path.get(ancestor) {
                    fired.extend(
                        watchers
                            .iter()
                            .filter(|(_, k)| *k == WatchKind::Recursive)
                            .map(|(c, _)| *c),
                    );
                }
                if parent.is_empty() {
                    break;
                }
                p = parent;
            }
        }
        fired.sort_unstable();
        fired.dedup();
        fired
    }

    /// Removes a connection's watches of `which` kinds on `path`; whether any were there.
    pub fn remove(&mut self, conn: ConnId, path: &str, which: WatcherType) -> bool {
        let kinds = self.kinds_of(conn, path, which);
        for k in &kinds {
            self.remove_one(conn, path, *k);
        }
        !kinds.is_empty()
    }

    pub fn contains(&self, conn: ConnId, path: &str, which: WatcherType) -> bool {
        !self.kinds_of(conn, path, which).is_empty()
    }

    fn kinds_of(&self, conn: ConnId, path: &str, which: WatcherType) -> Vec<WatchKind> {
        self.by_path
            .get(path)
            .map(|ws| {
                ws.iter()
                    .filter(|(c, k)| *c == conn && which.covers(*k))
                    .map(|(_, k)| *k)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets everything a closed connection watched.
    pub fn drop_connection(&mut self, conn: ConnId) {
        if let Some(set) = self.by_conn.remove(&conn) {
            for (path, kind) in set {
                if let Some(watchers) = self.by_path.get_mut(&path) {
                    watchers.retain(|w| *w != (conn, kind));
                    if watchers.is_empty() {
                        self.by_path.remove(&path);
                    }
                }
                if kind == WatchKind::Recursive {
                    self.recursive_count = self.recursive_count.saturating_sub(1);
                }
            }
        }
    }

    /// Watches as ZooKeeper's `watch_count` counts them: its data and child watch tables
    /// summed, where a persistent watch sits in both.
    pub fn watch_count(&self) -> usize {
        self.by_conn
            .values()
            .flatten()
            .map(|(_, kind)| if *kind == WatchKind::Persistent { 2 } else { 1 })
            .sum()
    }

    /// Watches, watched paths and watching connections of ZooKeeper's data-watch table (which
    /// is what wchs, wchc and wchp show): every watch but the one-shot child watches.
    /// Counted in place, with no copy of a path (`mntr` asks on the core's task).
    pub fn counts(&self) -> (usize, usize, usize) {
        let data = |kind: &WatchKind| *kind != WatchKind::Child;
        let mut total = 0;
        let mut paths = 0;
        for ws in self.by_path.values() {
            // Distinct connections with a data-table watch on this path (lists are short).
            let distinct = ws
                .iter()
                .enumerate()
                .filter(|(i, (c, k))| {
                    data(k) && !ws[..*i].iter().any(|(c2, k2)| c2 == c && data(k2))
                })
                .count();
            total += distinct;
            paths += usize::from(distinct > 0);
        }
        let conns = self
            .by_conn
            .values()
            .filter(|set| set.iter().any(|(_, k)| data(k)))
            .count();
        (total, paths, conns)
    }

    /// Paths watched by each connection (wchc), from the data-watch table.
    pub fn by_connection(&self) -> Vec<(ConnId, Vec<String>)> {
        let mut out: Vec<_> = self
            .by_conn
            .iter()
            .filter_map(|(c, set)| {
                let mut paths: Vec<String> = set
                    .iter()
                    .filter(|(_, kind)| *kind != WatchKind::Child)
                    .map(|(p, _)| p.to_string())
                    .collect();
                paths.sort();
                paths.dedup();
                (!paths.is_empty()).then_some((*c, paths))
            })
            .collect();
        out.sort();
        out
    }

    /// Connections watching each path (wchp), from the data-watch table.
    pub fn by_path(&self) -> Vec<(String, Vec<ConnId>)> {
        let mut out: Vec<_> = self
            .by_path
            .iter()
            .filter_map(|(p, ws)| {
                let mut conns: Vec<ConnId> = ws
                    .iter()
                    .filter(|(_, kind)| *kind != WatchKind::Child)
                    .map(|(c, _)| *c)
                    .collect();
                conns.sort_unstable();
                conns.dedup();
                (!conns.is_empty()).then_some((p.to_string(), conns))
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;

    #[test]
    fn counts_agree_with_the_lists_they_summarize() {
        let mut w = WatchManager::default();
        let kinds = [
            WatchKind::Data,
            WatchKind::Child,
            WatchKind::Persistent,
            WatchKind::Recursive,
        ];
        for i in 0..200usize {
            let conn = (i % 7) as ConnId;
            let path = format!("/p{}", i % 13);
            w.add(conn, &path, kinds[i % 4]);
            w.add(conn, &path, kinds[(i / 4) % 4]);
        }
        let by_conn = w.by_connection();
        let total: usize = by_conn.iter().map(|(_, p)| p.len()).sum();
        assert_eq!(w.counts(), (total, w.by_path().len(), by_conn.len()));
    }

    #[test]
    fn one_shot_watches_fire_once() {
        let mut w = WatchManager::default();
        w.add(1, "/a", WatchKind::Data);
        w.add(2, "/a", WatchKind::Child);
        assert_eq!(w.trigger("/a", NodeDataChanged), vec![1]);
        assert_eq!(w.trigger("/a", NodeDataChanged), Vec::<ConnId>::new());
        assert_eq!(w.trigger("/a", NodeDeleted), vec![2]);
        assert_eq!(w.counts(), (0, 0, 0));
    }

    #[test]
    fn persistent_and_recursive() {
        let mut w = WatchManager::default();
        w.add(1, "/a", WatchKind::Persistent);
        w.add(2, "/", WatchKind::Recursive);
        assert_eq!(w.trigger("/a", NodeChildrenChanged), vec![1]);
        assert_eq!(w.trigger("/a", NodeDataChanged), vec![1, 2]);
        assert_eq!(w.trigger("/a/b/c", NodeCreated), vec![2]);
        assert_eq!(w.trigger("/a/b", NodeChildrenChanged), Vec::<ConnId>::new());
        assert_eq!(w.counts().0, 2);
        w.drop_connection(2);
        assert_eq!(w.trigger("/a/b/c", NodeCreated), Vec::<ConnId>::new());
    }

    #[test]
    fn each_type_removes_only_its_own_watches() {
        use WatchKind::*;
        let all = [Data, Child, Persistent, Recursive];
        let cases = [
            (WatcherType::Children, vec![Child]),
            (WatcherType::Data, vec![Data]),
            (WatcherType::Persistent, vec![Persistent]),
            (WatcherType::PersistentRecursive, vec![Recursive]),
            (WatcherType::Any, all.to_vec()),
        ];
        for (which, removed) in cases {
            // Every mix of the four kinds on one path, by one connection.
            for mask in 0u8..16 {
                let mut w = WatchManager::default();
                let present: Vec<WatchKind> = (0..4)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| all[i])
                    .collect();
                for k in &present {
                    w.add(1, "/a", *k);
                }
                let hit = present.iter().any(|k| removed.contains(k));
                assert_eq!(w.contains(1, "/a", which), hit, "{which:?} {present:?}");
                assert_eq!(w.remove(1, "/a", which), hit, "{which:?} {present:?}");
                let left: Vec<WatchKind> = present
                    .iter()
                    .copied()
                    .filter(|k| !removed.contains(k))
                    .collect();
                for k in all {
                    let kept = left.contains(&k);
                    let named = match k {
                        Data => WatcherType::Data,
                        Child => WatcherType::Children,
                        Persistent => WatcherType::Persistent,
                        Recursive => WatcherType::PersistentRecursive,
                    };
                    assert_eq!(
                        w.contains(1, "/a", named),
                        kept,
                        "{which:?} {present:?} {k:?}"
                    );
                }
                // What remains still fires: a persistent watch on NodeChildrenChanged.
                let fires = left.contains(&Persistent) || left.contains(&Child);
                assert_eq!(!w.trigger("/a", NodeChildrenChanged).is_empty(), fires);
            }
        }
    }

    #[test]
    fn remove_by_type() {
        let mut w = WatchManager::default();
        w.add(1, "/a", WatchKind::Data);
        w.add(1, "/a", WatchKind::Child);
        assert!(w.contains(1, "/a", WatcherType::Data));
        assert!(w.remove(1, "/a", WatcherType::Children));
        assert!(!w.remove(1, "/a", WatcherType::Children));
        assert!(w.remove(1, "/a", WatcherType::Any));
        assert!(!w.contains(1, "/a", WatcherType::Any));
    }
}
