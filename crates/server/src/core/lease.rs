//! The serving rule as the core applies it, and the touch rounds that keep it and the sessions
//! alive: a follower or observer reports the sessions it has heard from to the leader, whose
//! grant renews both this member's lease and those sessions' confirmed deadlines. A connection
//! whose session the leader no longer confirms is closed before the leader could expire it.

use super::{Core, Effect};
use crate::read_only;
use crate::serving::{self, Change};
use crate::watch::ConnId;
use corral_replication::{Role, Touched};
use std::time::{Duration, Instant};

impl Core {
    pub(super) fn role_changed(&mut self, role: Role, leader: Option<u64>, term: u64) {
        tracing::info!(mode = role.zk_mode(), ?leader, "role");
        let now = self.now;
        if role.leads() && !self.role.leads() {
            // As after a ZooKeeper leader election: every session gets a fresh timeout.
            for s in self.sessions.values_mut() {
                s.deadline = now + s.timeout();
            }
        }
        if self.role.leads() && !role.leads() {
            self.confirm_after_leading(now);
        }
        if role.leads() != self.role.leads() || term != self.term {
            self.leading_since = role.leads().then_some(now);
        }
        let term_changed = self.term != 0 && term != self.term;
        if (self.leader.is_some() && leader != self.leader) || term_changed {
            // Expiries decided under the old leader are decided again by the new one. Clients'
            // writes wait: once an entry of a newer term is applied, those the old term lost are
            // proposed again (see `new_term_applied`), so a failover costs them time, not the
            // connection.
            self.forget_expiry_decisions();
        }
        if leader.is_some() && leader != self.leader {
            // A new leader: report to it (and earn a lease from it) at once.
            self.next_touch = now;
        }
        self.term = term;
        self.role = role;
        self.note_leader(leader);
    }

    /// Applies the serving rule at `now` (see `serving`): starts or stops serving clients.
    pub(super) fn check_serving(&mut self) {
        let now = self.now;
        let knows_leader = self.leader.is_some();
        let quorum = &self.quorum;
        match self
            .serving
            .check(now, knows_leader, || quorum.serving_until(now))
        {
            Change::Same => {}
            Change::Started => {
                tracing::info!(mode = self.role.zk_mode(), "serving clients");
                self.effect(Effect::Serving(true));
            }
            Change::Stopped => {
                self.effect(Effect::Serving(false));
                self.stopped_serving();
            }
        }
        match self.read_only.check(now, self.serving.is_serving()) {
            read_only::Mode::Same => {}
            read_only::Mode::Started => {
                tracing::warn!("read-only mode: serving read-only clients until a quorum is back");
            }
            read_only::Mode::Ended => {
                // As ZooKeeper's read-only server shutting down: its clients reconnect, and
                // find a read-write member (this one, now).
                let conns = self.read_only.take_connections();
                tracing::info!(
                    connections = conns.len(),
                    "read-only mode over: closing read-only connections"
                );
                for conn in conns {
                    self.close_connection(conn);
                }
            }
        }
    }

    /// The lease ran out: every client is disconnected, so that it knows its session (and
    /// whatever lock it holds) may be gone, and tries another member.
    pub(super) fn stopped_serving(&mut self) {
        tracing::warn!(
            connections = self.conns.len(),
            lease_ms = self.quorum.lease_times().serve.as_millis() as u64,
            "not serving: no contact with a quorum within the lease; closing client connections"
        );
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.read_only)
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            self.close_connection(conn);
        }
        for w in std::mem::take(&mut self.reconnects) {
            self.asking.remove(&w.incoming.conn);
            self.abandoned.remove(&w.incoming.conn);
            self.refuse_incoming(w.incoming);
        }
        self.syncs.clear();
    }

    /// When the core must wake up on its own: its lease ends, a touch round is due, or
    /// read-only mode starts.
    pub fn next_alarm(&self) -> Instant {
        [self.serving.until(), self.read_only.starts_at()]
            .into_iter()
            .flatten()
            .fold(self.next_touch, Instant::min)
    }

    pub(super) fn alarm(&mut self) {
        let now = self.now;
        if now >= self.next_touch {
            self.next_touch = now + self.touch_every;
            if !self.role.leads() {
                self.touch_round(now);
                self.close_unconfirmed(now);
            }
        }
    }

    /// A follower or observer reports the sessions heard from since its last granted round;
    /// the leader's grant renews this member's lease.
    pub(super) fn touch_round(&mut self, now: Instant) {
        if self.touching {
            return;
        }
        self.touching = true;
        let sessions: Vec<(i64, Instant)> = self
            .active
            .drain()
            .filter_map(|id| self.sessions.get(&id).map(|s| (id, s.heard())))
            .collect();
        let ages = sessions
            .iter()
            .map(|(id, heard)| {
                (
                    *id,
                    now.saturating_duration_since(*heard).as_millis() as u32,
                )
            })
            .collect();
        self.effect(Effect::Touch { sessions, ages });
    }

    /// A touch round came back: a grant confirms the reported sessions until a timeout after
    /// they were heard from; otherwise they are reported again next round.
    pub(super) fn touched(&mut self, touched: Touched, sessions: Vec<(i64, Instant)>) {
        self.touching = false;
        let (granted, unknown) = match touched.answer {
            Some(a) => (a.granted, a.unknown),
            None => (false, Vec::new()),
        };
        for (id, heard) in sessions {
            if !granted {
                self.active.insert(id);
            } else if unknown.contains(&id) {
                // The leader is closing it, or has not applied its creation yet: nothing is
                // confirmed (a new session keeps what its creation gave it).
            } else if let Some(s) = self.sessions.get_mut(&id) {
                let until = heard + s.timeout();
                s.confirmed = Some(s.confirmed.map_or(until, |c| c.max(until)));
            }
        }
    }

    /// The leader's side of a touch round: each known session is kept alive for its timeout
    /// from when the member last heard from it. Returns those it does not know or is closing.
    /// (Called by the driver when another member's touch round arrives.)
    pub fn touch_sessions(&mut self, now: Instant, sessions: Vec<(i64, u32)>) -> Vec<i64> {
        self.now = self.now.max(now);
        let now = self.now;
        let mut unknown = Vec::new();
        for (id, age_ms) in sessions {
            match self.sessions.get_mut(&id) {
                Some(s) if !self.closing.contains(&id) => {
                    let heard = now
                        .checked_sub(Duration::from_millis(age_ms.into()))
                        .unwrap_or(now);
                    s.deadline = s.deadline.max(heard + s.timeout());
                }
                _ => unknown.push(id),
            }
        }
        unknown
    }

    /// On a member that does not lead: closes each client connection whose session the
    /// leader has not been confirmed to keep alive much longer, before it could expire it.
    pub(super) fn close_unconfirmed(&mut self, now: Instant) {
        let every = self.touch_every;
        let drift = corral_replication::CLOCK_DRIFT_PERCENT;
        let due: Vec<ConnId> = self
            .sessions
            .values()
            .filter_map(|s| {
                let conn = s.conn?;
                let unconfirmed = match s.confirmed {
                    Some(c) => serving::past_confirmation(now, c, s.timeout(), every, drift),
                    None => true,
                };
                unconfirmed.then_some(conn)
            })
            .collect();
        for conn in due {
            tracing::info!(
                conn,
                "closing a connection whose session the leader no longer confirms"
            );
            self.close_connection(conn);
        }
    }

    /// This member stops leading. Its sessions are safe until a timeout after the earliest
    /// moment another leader could have been elected: its last quorum acknowledgement plus the
    /// time no voter would vote for anyone else. Past that, it needs touch rounds.
    pub(super) fn confirm_after_leading(&mut self, now: Instant) {
        let exclusive = self.quorum.lease_times().exclusive;
        let safe_from = self.quorum.quorum_acked(now).map(|q| q + exclusive);
        for s in self.sessions.values_mut() {
            s.confirmed = Some(match safe_from {
                Some(from) => s.deadline.min(from + s.timeout()),
                None => now,
            });
        }
    }

    pub(super) fn note_leader(&mut self, leader: Option<u64>) {
        match (leader, self.leaderless_since) {
            (Some(_), Some(since)) => {
                self.stats.election_time.record(self.now - since);
                self.leaderless_since = None;
            }
            (None, None) => {
                self.stats.looking_count += 1;
                self.leaderless_since = Some(self.now);
            }
            _ => {}
        }
        self.leader = leader;
    }

    /// During a graceful stop: done once nothing this member proposed is waiting, or at once
    /// when it does not serve (the clients of its writes in flight were already disconnected).
    pub(super) fn check_drained(&mut self) {
        let done = self.pending.is_empty() || !self.serving.is_serving();
        if done && std::mem::take(&mut self.draining) {
            self.effect(Effect::Drained);
        }
    }
}
