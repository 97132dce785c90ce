//! The serving rule: whether this member may answer clients at a given instant.
//!
//! A member serves only while it holds a lease, its proof of recent contact with a quorum
//! (`corral_replication`'s lease: quorum acknowledgements on a leader, granted touch rounds on
//! a follower or observer). When the lease runs out, the core closes its clients' connections
//! and refuses new sessions, so that clients see Disconnected, and go to another member, strictly
//! before the majority could expire their sessions (ARCHITECTURE.md states the inequality).
//!
//! A follower adds a rule per session: its clients' sessions are kept alive by the leader only as
//! far as touch rounds the leader granted reported them, so each connection is closed before that
//! confirmed deadline passes, whatever the member's own lease says.
//!
//! Everything here takes `now` as an argument; the core passes the time it read once per message.

use corral_io::broken::Broken;
use std::time::{Duration, Instant};

/// The member's serving state, with the lease end cached: the lease only moves forward while
/// evidence arrives, so it is read again only once the cached end has passed.
#[derive(Debug)]
pub(crate) struct Serving {
    serving: bool,
    until: Option<Instant>,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Same,
    Started,
    Stopped,
}

impl Serving {
    pub fn new() -> Self {
        Serving {
            serving: false,
            until: None,
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving
    }

    /// Drops the cached lease end, so that the next check reads the lease again: the membership
    /// changed, and a member it no longer holds has no lease however recent its evidence.
    pub fn forget_lease(&mut self) {
        self.until = None;
    }

    /// When the serving state must next be checked, if this member serves.
    pub fn until(&self) -> Option<Instant> {
        self.serving.then_some(self.until).flatten()
    }

    /// Decides whether this member serves at `now`. `lease` reads the current lease end (taken
    /// only when the cached one has passed); `knows_leader` says whether a leader is known,
    /// which starting to serve needs (going on serving needs only the lease).
    pub fn check(
        &mut self,
        now: Instant,
        knows_leader: bool,
        lease: impl FnOnce() -> Option<Instant>,
    ) -> Change {
        if !matches!(self.until, Some(u) if now < u) {
            self.until = lease();
        }
        let mut held = self.until.is_some_and(|u| now < u);
        if !held && self.serving && corral_io::broken::is(Broken::SkipServingRule) {
            // The planted bug: serving on past the lease (with no lease end to wake up for).
            self.until = None;
            held = true;
        }
        let serving = held && (self.serving || knows_leader);
        match (self.serving, serving) {
            (false, true) => {
                self.serving = true;
                Change::Started
            }
            (true, false) => {
                self.serving = false;
                Change::Stopped
            }
            _ => Change::Same,
        }
    }
}

/// How late a check may run after it was due, a busy core's delay.
const CHECK_SLACK: Duration = Duration::from_millis(10);

/// Whether a follower must close a session's connection now: its leader keeps the session alive
/// until at least `confirmed` (as the leader's clock may run up to `drift_percent` slower), and
/// the next check comes `check_every` later (and maybe `CHECK_SLACK` more).
pub(crate) fn past_confirmation(
    now: Instant,
    confirmed: Instant,
    timeout: Duration,
    check_every: Duration,
    drift_percent: u32,
) -> bool {
    if corral_io::broken::is(Broken::SkipServingRule) {
        return false;
    }
    let drift = timeout * drift_percent / 100;
    now + drift + check_every + CHECK_SLACK >= confirmed
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn serving_starts_with_a_lease_and_a_leader_and_stops_when_the_lease_ends() {
        let t0 = Instant::now();
        let mut s = Serving::new();
        assert_eq!(s.check(t0, false, || Some(t0 + 100 * MS)), Change::Same);
        assert!(!s.is_serving(), "no leader known yet");
        assert_eq!(s.check(t0, true, || unreachable!()), Change::Started);
        // Without a leader (an election) the lease alone keeps it serving.
        assert_eq!(
            s.check(t0 + 50 * MS, false, || unreachable!()),
            Change::Same
        );
        assert!(s.is_serving());
        assert_eq!(s.until(), Some(t0 + 100 * MS));
        assert_eq!(s.check(t0 + 100 * MS, false, || None), Change::Stopped);
    }

    #[test]
    fn a_renewed_lease_is_read_only_once_the_cached_one_has_passed() {
        let t0 = Instant::now();
        let mut s = Serving::new();
        s.check(t0, true, || Some(t0 + 100 * MS));
        let renewed = s.check(t0 + 100 * MS, true, || Some(t0 + 300 * MS));
        assert_eq!(renewed, Change::Same);
        assert_eq!(s.until(), Some(t0 + 300 * MS));
    }

    #[test]
    fn a_woken_member_past_its_lease_stops_before_anything_else() {
        // A SIGSTOPped member wakes long after its lease: the first check stops it.
        let t0 = Instant::now();
        let mut s = Serving::new();
        s.check(t0, true, || Some(t0 + 100 * MS));
        let woke = t0 + 30_000 * MS;
        assert_eq!(s.check(woke, true, || Some(t0 + 100 * MS)), Change::Stopped);
    }

    #[test]
    fn a_connection_is_closed_ahead_of_the_confirmed_deadline() {
        let t0 = Instant::now();
        let timeout = 4000 * MS;
        let confirmed = t0 + timeout;
        let every = 100 * MS;
        // 1% of 4 s, one check and its slack: 150 ms ahead.
        assert!(!past_confirmation(
            t0 + 3849 * MS,
            confirmed,
            timeout,
            every,
            1
        ));
        assert!(past_confirmation(
            t0 + 3850 * MS,
            confirmed,
            timeout,
            every,
            1
        ));
    }
}
