//! ZooKeeper's read-only mode (`readonlymode.enabled`): a member that is not serving (cut off
//! from its quorum) still takes clients that ask for read-only access in their connect request,
//! answers their reads from its own, possibly stale, tree and refuses their writes with
//! NotReadOnly.
//!
//! As in ZooKeeper 3.8:
//! - the mode starts once the member has gone `max(2 s, tickTime)` without serving, so a brief
//!   loss of quorum does not hand out read-only sessions;
//! - its sessions are local to the member, never in the replicated log: they end when the member
//!   serves again (every read-only connection is closed then, and the clients find a read-write
//!   member) and are not valid anywhere else;
//! - a client resuming a replicated session is refused, as ZooKeeper's read-only server refuses
//!   "global session reconnection".
//!
//! ZooKeeper hands out such sessions only with `localSessionsEnabled=true`; Corral always does.

use crate::watch::ConnId;
use corral_io::hash::HashMap;
use std::time::{Duration, Instant};

/// The shortest time without serving before read-only mode starts (ZooKeeper's 2 s).
const MIN_DELAY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct ReadOnly {
    enabled: bool,
    delay: Duration,
    /// Since when this member has not served (None while it serves).
    not_serving_since: Option<Instant>,
    active: bool,
    sessions: HashMap<i64, Local>,
}

/// A read-only session: local to this member, expired here when its client goes silent.
#[derive(Debug)]
struct Local {
    timeout: Duration,
    deadline: Instant,
    conn: Option<ConnId>,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Same,
    Started,
    /// Read-only mode ended: these connections must close.
    Ended,
}

impl ReadOnly {
    pub fn new(enabled: bool, tick: Duration, now: Instant) -> Self {
        ReadOnly {
            enabled,
            delay: tick.max(MIN_DELAY),
            not_serving_since: Some(now),
            active: false,
            sessions: HashMap::default(),
        }
    }

    /// Whether read-only clients are being served.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// When read-only mode is due to start, if it is enabled and not yet active.
    pub fn starts_at(&self) -> Option<Instant> {
        if !self.enabled || self.active {
            return None;
        }
        self.not_serving_since.map(|since| since + self.delay)
    }

    /// Follows the member's serving state at `now`.
    pub fn check(&mut self, now: Instant, serving: bool) -> Mode {
        if serving {
            self.not_serving_since = None;
            if self.active {
                self.active = false;
                return Mode::Ended;
            }
            return Mode::Same;
        }
        let since = *self.not_serving_since.get_or_insert(now);
        if self.enabled && !self.active && now >= since + self.delay {
            self.active = true;
            return Mode::Started;
        }
        Mode::Same
    }

    /// The connections of every read-only session, which end with the mode.
    pub fn take_connections(&mut self) -> Vec<ConnId> {
        self.sessions.drain().filter_map(|(_, s)| s.conn).collect()
    }

    pub fn open(&mut self, id: i64, timeout: Duration, conn: ConnId, now: Instant) {
        let session = Local {
            timeout,
            deadline: now + timeout,
            conn: Some(conn),
        };
        self.sessions.insert(id, session);
    }

    /// A resumed read-only session: its previous connection (to be closed), if it is known.
    pub fn resume(&mut self, id: i64, conn: ConnId, now: Instant) -> Option<Option<ConnId>> {
        let s = self.sessions.get_mut(&id)?;
        s.deadline = now + s.timeout;
        Some(s.conn.replace(conn))
    }

    pub fn knows(&self, id: i64) -> bool {
        self.sessions.contains_key(&id)
    }

    /// The client of session `id` was heard from.
    pub fn heard(&mut self, id: i64, now: Instant) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.deadline = now + s.timeout;
        }
    }

    /// The session's connection closed; the session lives on until it expires.
    pub fn detach(&mut self, id: i64, conn: ConnId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if s.conn == Some(conn) {
                s.conn = None;
            }
        }
    }

    pub fn close(&mut self, id: i64) {
        self.sessions.remove(&id);
    }

    /// Removes the sessions silent past their timeout; returns their connections.
    pub fn expire(&mut self, now: Instant) -> Vec<ConnId> {
        let gone: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter()
            .filter_map(|id| self.sessions.remove(&id).and_then(|s| s.conn))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_after_two_seconds_without_serving_and_ends_when_serving() {
        let t0 = Instant::now();
        let mut ro = ReadOnly::new(true, 500 * MS, t0);
        assert_eq!(ro.starts_at(), Some(t0 + 2000 * MS));
        assert_eq!(ro.check(t0 + 1999 * MS, false), Mode::Same);
        assert_eq!(ro.check(t0 + 2000 * MS, false), Mode::Started);
        assert!(ro.is_active() && ro.starts_at().is_none());
        ro.open(7, 1000 * MS, 3, t0 + 2000 * MS);
        assert_eq!(ro.check(t0 + 2100 * MS, true), Mode::Ended);
        assert_eq!(ro.take_connections(), vec![3]);
        assert!(!ro.knows(7));
        // Serving again, then not: the delay counts from the new loss.
        assert_eq!(ro.check(t0 + 3000 * MS, false), Mode::Same);
        assert_eq!(ro.starts_at(), Some(t0 + 5000 * MS));
    }

    #[test]
    fn a_long_tick_is_the_delay() {
        let t0 = Instant::now();
        let ro = ReadOnly::new(true, 3000 * MS, t0);
        assert_eq!(ro.starts_at(), Some(t0 + 3000 * MS));
    }

    #[test]
    fn disabled_never_starts() {
        let t0 = Instant::now();
        let mut ro = ReadOnly::new(false, 500 * MS, t0);
        assert_eq!(ro.starts_at(), None);
        assert_eq!(ro.check(t0 + 60_000 * MS, false), Mode::Same);
    }

    #[test]
    fn silent_sessions_expire_and_heard_ones_live() {
        let t0 = Instant::now();
        let mut ro = ReadOnly::new(true, 500 * MS, t0);
        ro.open(1, 1000 * MS, 10, t0);
        ro.open(2, 1000 * MS, 20, t0);
        ro.heard(2, t0 + 900 * MS);
        assert_eq!(ro.expire(t0 + 1000 * MS), vec![10]);
        assert!(ro.knows(2) && !ro.knows(1));
        assert_eq!(ro.resume(2, 21, t0 + 1500 * MS), Some(Some(20)));
        assert_eq!(ro.expire(t0 + 2400 * MS), Vec::<ConnId>::new());
    }
}
