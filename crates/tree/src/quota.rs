//! Quotas, as ZooKeeper keeps them: a quota on `/a` is the node
//! `/zookeeper/quota/a/zookeeper_limits` (written by clients: `count=N,bytes=N` soft limits and,
//! since 3.7, `countHardLimit`/`byteHardLimit`), and the server keeps the subtree's usage in
//! `/zookeeper/quota/a/zookeeper_stats` (`count=N,bytes=N`: nodes including `/a` itself, and
//! bytes of their data). The stats node's data is rewritten in place, without touching its Stat,
//! exactly as ZooKeeper does.
//!
//! Exceeding a soft limit is logged; exceeding a hard limit refuses the write with
//! QuotaExceeded when the tree's `enforce_quota` is set (ZooKeeper's `zookeeper.enforceQuota`).
//! Usage is derived state: rebuilt from the nodes after a snapshot is loaded, never stored apart.

use crate::tree::{DataTree, QUOTA_PATH};
use corral_proto::quota::{stats_text as usage_text, Limits};
use corral_proto::ErrorCode;

pub const LIMITS_NODE: &str = "zookeeper_limits";
pub const STATS_NODE: &str = "zookeeper_stats";

/// A quota'd subtree's current size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub count: i64,
    pub bytes: i64,
}

/// `/zookeeper/quota/a/zookeeper_limits` -> `/a` (and the same for the stats node).
pub fn quota_target(path: &str, node_name: &str) -> Option<String> {
    let rest = path.strip_prefix(QUOTA_PATH)?;
    let target = rest.strip_suffix(node_name)?.strip_suffix('/')?;
    target.starts_with('/').then(|| target.to_owned())
}

fn stats_text(u: Usage) -> String {
    usage_text(u.count, u.bytes)
}

impl DataTree {
    /// The quota'd path that covers `path`, if any (the nearest one above or at it).
    fn quota_root(&self, path: &str) -> Option<String> {
        if self.quotas.is_empty() || path.starts_with("/zookeeper/") || path == "/zookeeper" {
            return None;
        }
        let mut p = path;
        loop {
            if self.quotas.contains_key(p) {
                return Some(p.to_owned());
            }
            match p.rfind('/') {
                Some(0) | None => return None,
                Some(i) => p = &p[..i],
            }
        }
    }

    /// Refuses a write that would take its subtree past a hard limit (when enforced), and
    /// logs one that passes a soft limit.
    pub(crate) fn check_quota(
        &self,
        path: &str,
        count_diff: i64,
        bytes_diff: i64,
    ) -> Result<(), ErrorCode> {
        let Some(root) = self.quota_root(path) else {
            return Ok(());
        };
        let usage = self.quotas[root.as_str()];
        let limits_path = format!("{QUOTA_PATH}{root}/{LIMITS_NODE}");
        let Some(node) = self.get(&limits_path) else {
            return Ok(());
        };
        let limits = Limits::parse(&node.data);
        let count = usage.count + count_diff;
        let bytes = usage.bytes + bytes_diff;
        let over_hard = (count_diff > 0 && limits.count_hard > -1 && count > limits.count_hard)
            || (bytes_diff > 0 && limits.bytes_hard > -1 && bytes > limits.bytes_hard);
        if over_hard && self.config.enforce_quota {
            tracing::warn!(quota = %root, count, bytes, ?limits, "hard quota exceeded; write refused");
            return Err(ErrorCode::QuotaExceeded);
        }
        let over_soft = (count_diff > 0 && limits.count > -1 && count > limits.count)
            || (bytes_diff > 0 && limits.bytes > -1 && bytes > limits.bytes);
        if over_soft || over_hard {
            tracing::warn!(quota = %root, count, bytes, ?limits, "quota exceeded");
        }
        Ok(())
    }

    /// Adds a change of `path`'s subtree to its quota's usage and rewrites the stats node.
    pub(crate) fn quota_changed(&mut self, path: &str, count_diff: i64, bytes_diff: i64) {
        let Some(root) = self.quota_root(path) else {
            return;
        };
        let usage = self.quotas.get_mut(root.as_str()).expect("found above");
        usage.count += count_diff;
        usage.bytes += bytes_diff;
        let usage = *usage;
        self.write_stats(&root, usage);
    }

    fn write_stats(&mut self, root: &str, usage: Usage) {
        let stats_path = format!("{QUOTA_PATH}{root}/{STATS_NODE}");
        if let Some(node) = self.nodes.get_mut(stats_path.as_str()) {
            node.data = stats_text(usage).into_bytes().into();
        }
    }

    /// A node under /zookeeper/quota appeared: a limits node starts a quota, a stats node gets
    /// the current usage.
    pub(crate) fn quota_node_created(&mut self, path: &str) {
        if !path.starts_with(QUOTA_PATH) {
            return;
        }
        if let Some(target) = quota_target(path, LIMITS_NODE) {
            let usage = self.subtree_usage(&target);
            self.quotas.insert(target.as_str().into(), usage);
            self.write_stats(&target, usage);
        } else if let Some(target) = quota_target(path, STATS_NODE) {
            let usage = self.subtree_usage(&target);
            self.write_stats(&target, usage);
        }
    }

    /// A node under /zookeeper/quota went: without its limits node a path has no quota.
    pub(crate) fn quota_node_deleted(&mut self, path: &str) {
        if let Some(target) = quota_target(path, LIMITS_NODE) {
            self.quotas.remove(target.as_str());
        }
    }

    /// Nodes and data bytes of the subtree at `root` (the root included).
    pub fn subtree_usage(&self, root: &str) -> Usage {
        let mut usage = Usage::default();
        let mut stack = vec![root.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.get(&p) else { continue };
            usage.count += 1;
            usage.bytes += node.data.len() as i64;
            for child in self.nodes.child_names(node) {
                stack.push(crate::path::join(&p, child));
            }
        }
        usage
    }

    /// Rebuilds every quota's usage from the nodes (after a snapshot is loaded).
    pub(crate) fn rebuild_quotas(&mut self) {
        self.quotas.clear();
        let limits: Vec<String> = self
            .nodes
            .iter()
            .map(|(p, _)| p)
            .filter(|p| p.starts_with(QUOTA_PATH) && p.ends_with(LIMITS_NODE))
            .map(|p| p.to_string())
            .collect();
        for p in limits {
            self.quota_node_created(&p);
        }
    }

    /// The quota'd paths and their usage.
    pub fn quotas(&self) -> impl Iterator<Item = (&str, Usage)> {
        self.quotas.iter().map(|(p, u)| (&**p, *u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_targets() {
        assert_eq!(
            quota_target("/zookeeper/quota/a/b/zookeeper_limits", LIMITS_NODE).as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            quota_target("/zookeeper/quota/zookeeper_limits", LIMITS_NODE),
            None
        );
        assert_eq!(quota_target("/a/zookeeper_limits", LIMITS_NODE), None);
    }
}
