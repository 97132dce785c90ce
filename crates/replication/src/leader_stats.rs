//! What a leader reports of its followers and proposals, for `mntr` and `/metrics` (ZooKeeper's
//! leader-only values: `learners`, `synced_followers`, `synced_observers`, `pending_syncs`,
//! `*_proposal_size`). Lock-free: the proposer and the peer server write the counters while the
//! core reads them.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// Counters a leader keeps as it works.
#[derive(Debug)]
pub struct LeaderCounters {
    /// `sync` read-index requests being answered by this member as leader.
    pending_syncs: AtomicI64,
    /// Bytes of the last, smallest and largest entry proposed (-1 before the first, as
    /// ZooKeeper's `BufferStats`).
    last_proposal: AtomicI64,
    min_proposal: AtomicI64,
    max_proposal: AtomicI64,
}

impl Default for LeaderCounters {
    fn default() -> Self {
        LeaderCounters {
            pending_syncs: AtomicI64::new(0),
            last_proposal: AtomicI64::new(-1),
            min_proposal: AtomicI64::new(i64::MAX),
            max_proposal: AtomicI64::new(-1),
        }
    }
}

/// Counts one `sync` being answered until dropped.
pub(crate) struct PendingSync<'a>(&'a LeaderCounters);

impl Drop for PendingSync<'_> {
    fn drop(&mut self) {
        self.0.pending_syncs.fetch_sub(1, Relaxed);
    }
}

impl LeaderCounters {
    pub(crate) fn sync_started(&self) -> PendingSync<'_> {
        self.pending_syncs.fetch_add(1, Relaxed);
        PendingSync(self)
    }

    pub(crate) fn proposed(&self, bytes: usize) {
        let bytes = bytes as i64;
        self.last_proposal.store(bytes, Relaxed);
        self.min_proposal.fetch_min(bytes, Relaxed);
        self.max_proposal.fetch_max(bytes, Relaxed);
    }

    pub fn pending_syncs(&self) -> i64 {
        self.pending_syncs.load(Relaxed)
    }

    /// Last, smallest and largest proposal in bytes; -1 each before the first.
    pub fn proposal_sizes(&self) -> (i64, i64, i64) {
        let min = self.min_proposal.load(Relaxed);
        (
            self.last_proposal.load(Relaxed),
            if min == i64::MAX { -1 } else { min },
            self.max_proposal.load(Relaxed),
        )
    }
}

/// The leader's view of the other members, from what they have acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderView {
    /// Members replicating from this leader (voters and observers).
    pub learners: usize,
    /// Voting members that have acknowledged an entry of this leader's term: their log agrees
    /// with the leader's, as a ZooKeeper follower's does once synced.
    pub synced_followers: usize,
    /// Observers that have acknowledged an entry of this leader's term.
    pub synced_observers: usize,
}

/// What a leader knows of each member's progress (the console's ensemble page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The leader's last log index.
    pub last_index: u64,
    pub members: Vec<MemberProgress>,
}

/// One member as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberProgress {
    pub id: crate::NodeId,
    /// The last log index the member has acknowledged, if it has acknowledged any.
    pub matched: Option<u64>,
    /// How long ago the newest heartbeat it accepted was sent (voters only: observers do not
    /// count towards the lease, and the lease is where this is recorded).
    pub last_contact: Option<std::time::Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_start_unknown_and_track_last_min_max() {
        let c = LeaderCounters::default();
        assert_eq!(c.proposal_sizes(), (-1, -1, -1));
        c.proposed(300);
        c.proposed(100);
        c.proposed(200);
        assert_eq!(c.proposal_sizes(), (200, 100, 300));
    }

    #[test]
    fn a_sync_counts_while_it_is_answered() {
        let c = LeaderCounters::default();
        let a = c.sync_started();
        let b = c.sync_started();
        assert_eq!(c.pending_syncs(), 2);
        drop(a);
        assert_eq!(c.pending_syncs(), 1);
        drop(b);
        assert_eq!(c.pending_syncs(), 0);
    }
}
