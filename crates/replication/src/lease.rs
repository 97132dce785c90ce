//! Leases: a member's proof that it still belongs to a quorum, renewed as it talks with the rest.
//!
//! A member serves clients only while it holds a lease (ARCHITECTURE.md, "The serving rule"). A
//! lease starts at an instant that a quorum is known to have vouched for, and lasts
//! [`LeaseTimes::serve`]:
//!
//! - **A leader's** starts at the latest instant a quorum of voters acknowledged: the send time
//!   of the newest AppendEntries (heartbeats included) that a majority accepted, this member
//!   counting as "now". A voter that accepted it refuses to vote for anyone else for openraft's
//!   leader lease (`election_timeout_max`) after receiving it, so no other leader can be elected
//!   before that instant plus the leader lease.
//! - **A follower's or observer's** starts at the send time of its latest touch round that the
//!   leader granted. The leader grants only within [`LeaseTimes::exclusive`] of its own quorum
//!   acknowledgement, while no other leader can exist yet, so what it vouched for (the sessions
//!   the round reported) holds under any later leader too.
//!
//! Both kinds count: a follower that has just been elected keeps serving on the lease its old
//! leader granted until its own first quorum acknowledgement arrives. Time is passed in, so the
//! rules are tested with plain instants.

use crate::types::NodeId;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The largest rate difference assumed between two members' monotonic clocks: 1%, far above
/// what NTP allows itself when it slews a clock (0.05%).
pub const CLOCK_DRIFT_PERCENT: u32 = 1;

/// How long leases last, derived from ZooKeeper's settings (see [`LeaseTimes::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    /// How long a lease lets a member serve after the instant it was vouched for.
    pub serve: Duration,
    /// How long after its latest quorum acknowledgement a leader may still vouch that it is the
    /// only leader: the voters' refusal to vote, less the drift margin.
    pub exclusive: Duration,
}

impl LeaseTimes {
    /// `serve` is min(syncLimit × tickTime, minSessionTimeout), less the drift margin: a
    /// partitioned member stops serving within ZooKeeper's sync limit, and always before a new
    /// leader could expire one of its clients' sessions, which takes at least
    /// `vote_lease + minSessionTimeout` after the last quorum acknowledgement.
    pub fn new(
        tick_ms: u64,
        sync_limit: u64,
        min_session_timeout_ms: u64,
        vote_lease_ms: u64,
    ) -> Self {
        let serve_ms = (tick_ms * sync_limit).min(min_session_timeout_ms);
        LeaseTimes {
            serve: Duration::from_millis(less_drift(serve_ms)),
            exclusive: Duration::from_millis(less_drift(vote_lease_ms)),
        }
    }

    /// The safety inequality: a member isolated right after its last quorum acknowledgement at
    /// `q` stops serving at `q + serve`, strictly before the earliest moment the majority can
    /// expire one of its sessions, `q + vote_lease + minSessionTimeout` (as measured by clocks
    /// that may run `CLOCK_DRIFT_PERCENT` apart).
    pub fn is_safe(&self, vote_lease_ms: u64, min_session_timeout_ms: u64) -> bool {
        let earliest_expiry = less_drift(vote_lease_ms + min_session_timeout_ms);
        (self.serve.as_millis() as u64) < earliest_expiry
            && (self.exclusive.as_millis() as u64) < vote_lease_ms
    }
}

/// `ms` as a clock running `CLOCK_DRIFT_PERCENT` fast could measure it.
pub fn less_drift(ms: u64) -> u64 {
    ms * u64::from(100 - CLOCK_DRIFT_PERCENT) / 100
}

/// The evidence of quorum contact this member holds; shared by the network layer (which records
/// it) and the core (which asks whether it may serve).
#[derive(Debug)]
pub struct Lease {
    times: LeaseTimes,
    me: NodeId,
    state: Mutex<Evidence>,
}

#[derive(Debug, Default)]
struct Evidence {
    /// The voters of the current membership: one set, or two while a reconfiguration is in its
    /// joint phase (a quorum then means a majority of each, as for a commit).
    voters: Vec<Vec<NodeId>>,
    /// The term `acks` belong to: the newest term this member led.
    term: u64,
    /// For each voter, the send time of the newest AppendEntries it accepted in `term`.
    acks: BTreeMap<NodeId, Instant>,
    /// The send time of the newest touch round a leader granted.
    granted: Option<Instant>,
    /// The membership does not hold this member (a reconfiguration removed it): no evidence
    /// lets it serve.
    removed: bool,
}

impl Lease {
    pub fn new(me: NodeId, voters: Vec<NodeId>, times: LeaseTimes) -> Self {
        Lease {
            times,
            me,
            state: Mutex::new(Evidence {
                voters: vec![voters],
                ..Evidence::default()
            }),
        }
    }

    pub fn times(&self) -> LeaseTimes {
        self.times
    }

    fn evidence(&self) -> std::sync::MutexGuard<'_, Evidence> {
        // Nothing panics while holding it; a poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The membership changed.
    pub fn set_voters(&self, voters: Vec<Vec<NodeId>>) {
        self.evidence().voters = voters;
    }

    /// Whether the membership holds this member. One that a reconfiguration removed stops
    /// serving at once rather than when its evidence runs out: it knows no quorum will vouch
    /// for it again.
    pub fn set_member(&self, member: bool) {
        self.evidence().removed = !member;
    }

    /// `voter` accepted an AppendEntries this member sent at `sent_at` as leader of `term`.
    pub fn acked(&self, term: u64, voter: NodeId, sent_at: Instant) {
        let mut e = self.evidence();
        if term < e.term {
            return;
        }
        if term > e.term {
            e.term = term;
            e.acks.clear();
        }
        let newest = e.acks.entry(voter).or_insert(sent_at);
        *newest = (*newest).max(sent_at);
    }

    /// While this member leads: for each voter, the send time of the newest AppendEntries it
    /// accepted in this member's newest term (its last contact, as the console shows it).
    pub fn acks(&self) -> BTreeMap<NodeId, Instant> {
        self.evidence().acks.clone()
    }

    /// A leader granted the touch round this member sent at `sent_at`.
    pub fn granted(&self, sent_at: Instant) {
        let mut e = self.evidence();
        e.granted = Some(e.granted.map_or(sent_at, |g| g.max(sent_at)));
    }

    /// The latest instant a quorum of voters acknowledged this member as leader, if any did.
    /// During a joint reconfiguration that is the earlier of the two majorities' instants: a
    /// candidate needs both, so both must be bound to refuse it.
    pub fn quorum_acked(&self, now: Instant) -> Option<Instant> {
        let e = self.evidence();
        let per_config = e
            .voters
            .iter()
            .map(|voters| self.majority_acked(&e, voters, now));
        per_config.reduce(|a, b| a.zip(b).map(|(a, b)| a.min(b)))?
    }

    /// The latest instant a majority of `voters` acknowledged this member.
    fn majority_acked(&self, e: &Evidence, voters: &[NodeId], now: Instant) -> Option<Instant> {
        let mut times: Vec<Instant> = voters
            .iter()
            .filter_map(|v| {
                if *v == self.me {
                    Some(now)
                } else {
                    e.acks.get(v).copied()
                }
            })
            .collect();
        let quorum = voters.len() / 2 + 1;
        if times.len() < quorum {
            return None;
        }
        times.sort_unstable_by(|a, b| b.cmp(a));
        Some(times[quorum - 1])
    }

    /// Whether this member, leading `term`, may vouch at `now` that no other leader exists.
    pub fn exclusive(&self, term: u64, now: Instant) -> bool {
        if self.evidence().term != term {
            return false;
        }
        self.quorum_acked(now)
            .is_some_and(|q| now.saturating_duration_since(q) < self.times.exclusive)
    }

    /// Until when this member may serve, on the newest evidence it holds.
    pub fn serving_until(&self, now: Instant) -> Option<Instant> {
        let (granted, removed) = {
            let e = self.evidence();
            (e.granted, e.removed)
        };
        if removed {
            return None;
        }
        let vouched = match (self.quorum_acked(now), granted) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        vouched.map(|at| at + self.times.serve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn times() -> LeaseTimes {
        LeaseTimes::new(2000, 2, 4000, 350)
    }

    #[test]
    fn times_follow_zookeeper_settings_less_the_drift_margin() {
        let t = times();
        assert_eq!(t.serve, 3960 * MS);
        assert_eq!(t.exclusive, 346 * MS);
        // syncLimit × tickTime shorter than minSessionTimeout: that bounds the lease.
        assert_eq!(LeaseTimes::new(2000, 1, 4000, 350).serve, 1980 * MS);
        // A long syncLimit never makes the lease outlast the shortest session.
        assert_eq!(LeaseTimes::new(2000, 10, 4000, 350).serve, 3960 * MS);
    }

    #[test]
    fn the_safety_inequality_holds_for_every_setting_and_fails_when_broken() {
        for tick in [100, 500, 2000, 5000] {
            for sync_limit in 1..=10 {
                for min_timeout in [2 * tick, 3 * tick, 20 * tick] {
                    for vote_lease in [150, 350, 1000] {
                        let t = LeaseTimes::new(tick, sync_limit, min_timeout, vote_lease);
                        assert!(t.is_safe(vote_lease, min_timeout), "{tick} {sync_limit}");
                    }
                }
            }
        }
        // A lease as long as the session plus the vote lease would be unsafe; the check says so.
        let broken = LeaseTimes {
            serve: 4350 * MS,
            exclusive: 346 * MS,
        };
        assert!(!broken.is_safe(350, 4000));
        let vouching_too_long = LeaseTimes {
            serve: 3960 * MS,
            exclusive: 350 * MS,
        };
        assert!(!vouching_too_long.is_safe(350, 4000));
    }

    #[test]
    fn a_leader_serves_from_the_instant_a_majority_acknowledged() {
        let lease = Lease::new(1, vec![1, 2, 3], times());
        let t0 = Instant::now();
        assert_eq!(lease.serving_until(t0), None, "no evidence yet");
        lease.acked(5, 2, t0);
        assert_eq!(lease.quorum_acked(t0 + 100 * MS), Some(t0));
        assert_eq!(lease.serving_until(t0 + 100 * MS), Some(t0 + 3960 * MS));
        // The other voter's later acknowledgement moves it on; an older one does not.
        lease.acked(5, 3, t0 + 50 * MS);
        lease.acked(5, 2, t0 - 10 * MS);
        assert_eq!(lease.quorum_acked(t0 + 100 * MS), Some(t0 + 50 * MS));
    }

    #[test]
    fn five_voters_need_two_acknowledgements_besides_the_leader() {
        let lease = Lease::new(1, vec![1, 2, 3, 4, 5], times());
        let t0 = Instant::now();
        lease.acked(1, 2, t0 + 30 * MS);
        assert_eq!(lease.quorum_acked(t0 + 40 * MS), None);
        lease.acked(1, 4, t0 + 10 * MS);
        assert_eq!(lease.quorum_acked(t0 + 40 * MS), Some(t0 + 10 * MS));
    }

    #[test]
    fn acknowledgements_of_an_older_term_do_not_count_for_a_newer_one() {
        let lease = Lease::new(1, vec![1, 2, 3], times());
        let t0 = Instant::now();
        lease.acked(7, 2, t0);
        lease.acked(8, 3, t0 + 10 * MS);
        lease.acked(7, 2, t0 + 20 * MS);
        assert_eq!(lease.quorum_acked(t0 + 30 * MS), Some(t0 + 10 * MS));
        assert!(lease.exclusive(8, t0 + 30 * MS));
        assert!(!lease.exclusive(7, t0 + 30 * MS), "term 7 is over");
    }

    #[test]
    fn a_leader_vouches_only_while_no_other_leader_can_exist() {
        let lease = Lease::new(1, vec![1, 2, 3], times());
        let t0 = Instant::now();
        lease.acked(3, 2, t0);
        assert!(lease.exclusive(3, t0 + 345 * MS));
        assert!(!lease.exclusive(3, t0 + 346 * MS));
        // Still serving for a while: only the clients' sessions bound that.
        assert!(lease.serving_until(t0 + 346 * MS).unwrap() > t0 + 346 * MS);
    }

    #[test]
    fn observers_do_not_count_towards_the_quorum() {
        let lease = Lease::new(1, vec![1, 2, 3], times());
        let t0 = Instant::now();
        lease.acked(2, 9, t0);
        assert_eq!(lease.quorum_acked(t0), None);
    }

    #[test]
    fn a_single_voter_is_its_own_quorum() {
        let lease = Lease::new(1, vec![1], times());
        let t0 = Instant::now();
        assert_eq!(lease.serving_until(t0), Some(t0 + 3960 * MS));
    }

    #[test]
    fn a_follower_serves_on_granted_rounds() {
        let lease = Lease::new(2, vec![1, 2, 3], times());
        let t0 = Instant::now();
        assert_eq!(lease.serving_until(t0), None);
        lease.granted(t0);
        lease.granted(t0 - 5 * MS);
        assert_eq!(lease.serving_until(t0 + MS), Some(t0 + 3960 * MS));
    }

    #[test]
    fn a_joint_membership_needs_a_majority_of_each_configuration() {
        let lease = Lease::new(1, vec![1, 2, 3], times());
        lease.set_voters(vec![vec![1, 2, 3], vec![3, 4, 5]]);
        let t0 = Instant::now();
        lease.acked(1, 2, t0 + 20 * MS);
        assert_eq!(
            lease.quorum_acked(t0 + 40 * MS),
            None,
            "no majority of 3, 4, 5"
        );
        lease.acked(1, 4, t0 + 10 * MS);
        assert_eq!(
            lease.quorum_acked(t0 + 40 * MS),
            None,
            "4 alone is no majority"
        );
        lease.acked(1, 5, t0 + 30 * MS);
        // 1, 2 at 20 ms; 5, 4 at 10 ms: the earlier binds.
        assert_eq!(lease.quorum_acked(t0 + 40 * MS), Some(t0 + 10 * MS));
        lease.set_voters(vec![vec![3, 4, 5]]);
        lease.acked(1, 3, t0 + 35 * MS);
        // A leader outside the configuration counts only the voters' acknowledgements.
        assert_eq!(lease.quorum_acked(t0 + 40 * MS), Some(t0 + 30 * MS));
    }

    #[test]
    fn a_removed_member_serves_on_no_evidence() {
        let lease = Lease::new(2, vec![1, 2, 3], times());
        let t0 = Instant::now();
        lease.granted(t0);
        assert!(lease.serving_until(t0).is_some());
        lease.set_member(false);
        assert_eq!(lease.serving_until(t0), None);
        lease.set_member(true);
        assert!(lease.serving_until(t0).is_some(), "added back");
    }
}
