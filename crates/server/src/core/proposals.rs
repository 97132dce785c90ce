//! This member's proposals: stamped with the term they are proposed under, remembered until
//! their entry is applied, proposed again when a failover loses them while their client waits,
//! refused when the log stops taking writes, and timed out when they vanish on the way.

use super::{Core, Effect, PROPOSAL_TIMEOUT};
use crate::watch::ConnId;
use bytes::Bytes;
use corral_proto::records::Id;
use corral_proto::ErrorCode;
use corral_replication::{LogStopped, Role};
use corral_tree::{Proposal, Txn};
use std::collections::BTreeMap;
use std::time::Instant;

/// Who waits for a proposal of this server.
pub(super) enum Origin {
    Nobody,
    Reply {
        conn: ConnId,
        xid: i32,
        received: Instant,
    },
    /// A new session: the connect response goes out once the session is in the log.
    Connect {
        conn: ConnId,
        frame: Bytes,
    },
    /// closeSession: answer, then close the connection.
    Close {
        conn: ConnId,
        xid: i32,
        received: Instant,
    },
    /// A reconfig's answer: it holds its connection as a `sync` does (it is not one of the
    /// connection's writes), until this entry is applied.
    Reconfig {
        conn: ConnId,
        xid: i32,
        received: Instant,
    },
}

impl Origin {
    pub(super) fn conn(&self) -> Option<ConnId> {
        match self {
            Origin::Nobody => None,
            Origin::Reply { conn, .. }
            | Origin::Connect { conn, .. }
            | Origin::Close { conn, .. }
            | Origin::Reconfig { conn, .. } => Some(*conn),
        }
    }
}

/// A proposal of this member waiting for its entry.
pub(super) struct Pending {
    pub(super) origin: Origin,
    /// The term its one live copy is stamped with: a copy stamped otherwise is skipped by apply.
    /// `None` once its fate is unknown here (a snapshot installed over it may already hold it):
    /// it is answered if applied, never proposed again.
    pub(super) term: Option<u64>,
    /// Its encoding, to propose it again under a newer term once the term it was stamped with
    /// is known to have lost it.
    pub(super) framed: Bytes,
}

/// This member's proposals not yet applied, by sequence number (ordered, so refusals go out in
/// request order), with the bytes they take.
#[derive(Default)]
pub(super) struct PendingSet {
    map: BTreeMap<u64, Pending>,
    bytes: usize,
}

impl PendingSet {
    pub(super) fn insert(&mut self, seq: u64, p: Pending) {
        self.bytes += p.framed.len();
        if let Some(old) = self.map.insert(seq, p) {
            self.bytes = self.bytes.saturating_sub(old.framed.len());
        }
    }

    pub(super) fn remove(&mut self, seq: &u64) -> Option<Pending> {
        let p = self.map.remove(seq)?;
        self.bytes = self.bytes.saturating_sub(p.framed.len());
        Some(p)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&u64, &Pending) -> bool) {
        let mut freed = 0;
        self.map.retain(|seq, p| {
            let kept = keep(seq, p);
            if !kept {
                freed += p.framed.len();
            }
            kept
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }

    pub(super) fn get(&self, seq: &u64) -> Option<&Pending> {
        self.map.get(seq)
    }

    /// (Its framing may be replaced only by one of the same length: a restamp.)
    pub(super) fn get_mut(&mut self, seq: &u64) -> Option<&mut Pending> {
        self.map.get_mut(seq)
    }

    pub(super) fn contains_key(&self, seq: &u64) -> bool {
        self.map.contains_key(seq)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &Pending)> {
        self.map.iter()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Pending> {
        self.map.values()
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Pending> {
        self.map.values_mut()
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of the proposals pending.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every pending proposal, oldest first, leaving none.
    pub(super) fn take_all(&mut self) -> Vec<Pending> {
        self.bytes = 0;
        std::mem::take(&mut self.map).into_values().collect()
    }
}

impl Core {
    /// Whether this member's proposals in flight are at their byte limit: clients' writes then
    /// wait in their connections' queues.
    pub(super) fn log_full(&self) -> bool {
        self.pending.bytes() >= self.cfg.limits.max_pending_proposal_bytes
    }

    /// A client's write waits for room in the log: counted, said once per episode, and the
    /// connection woken once there is room.
    pub(super) fn wait_for_log(&mut self, conn: ConnId) {
        if self.waiting_for_log.contains(&conn) {
            return;
        }
        self.limits
            .proposals_throttled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.waiting_for_log.is_empty() {
            tracing::info!(
                pending_bytes = self.pending.bytes(),
                max_pending_proposal_bytes = self.cfg.limits.max_pending_proposal_bytes,
                "writes held back: this member's proposals in flight are at their limit"
            );
        }
        self.waiting_for_log.push_back(conn);
    }

    /// Lets the connections whose writes waited for room go on, while there is room.
    pub(super) fn wake_writers(&mut self) {
        while !self.log_full() {
            let Some(conn) = self.waiting_for_log.pop_front() else {
                return;
            };
            self.drain(conn);
        }
    }

    /// Forgets the expiries and reaps this member proposed: whoever leads decides them again.
    pub(super) fn forget_expiry_decisions(&mut self) {
        self.pending
            .retain(|_, p| !matches!(p.origin, Origin::Nobody));
        self.closing.clear();
    }

    /// The first entry of `term` was applied: every entry of an older term that will ever be
    /// applied has been. A proposal still stamped with an older term has lost its copy for good
    /// (a copy stamped so is skipped in any later entry), so it is proposed again, stamped anew.
    pub(super) fn new_term_applied(&mut self, term: u64) {
        let lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.term.is_some_and(|t| t < term))
            .map(|(seq, _)| *seq)
            .collect();
        let now_term = self.quorum.term().max(term);
        for seq in lost {
            self.proposal_lost(seq, now_term);
        }
    }

    /// A pending proposal's live copy is known never to be applied. A client's write whose
    /// connection is still open is proposed again under `term`; anything else is forgotten
    /// (an expiry is decided again; a client told its connection was lost must not have the
    /// write applied later).
    pub(super) fn proposal_lost(&mut self, seq: u64, term: u64) {
        let Some(p) = self.pending.get(&seq) else {
            return;
        };
        let client_waits = p.origin.conn().is_some_and(|c| self.conns.contains_key(&c));
        let stamped = p.term.unwrap_or(u64::MAX);
        if client_waits && term > stamped && !self.refusing_writes {
            tracing::debug!(
                seq,
                from = stamped,
                to = term,
                "proposing again under a new term"
            );
            let mut framed = p.framed.to_vec();
            Proposal::restamp(&mut framed, term);
            let framed = Bytes::from(framed);
            self.effect(Effect::Propose(framed.clone()));
            let p = self.pending.get_mut(&seq).expect("looked up above");
            p.term = Some(term);
            p.framed = framed;
            if let Some(c) = p.origin.conn().and_then(|c| self.conns.get_mut(&c)) {
                c.write_stamp = term;
            }
            return;
        }
        if let Some(conn) = self.pending.remove(&seq).and_then(|p| p.origin.conn()) {
            self.close_connection(conn);
        }
    }

    /// Stamps and proposes one write: the only place proposals are made.
    pub(super) fn propose(&mut self, session_id: i64, auth: Vec<Id>, txn: Txn, origin: Origin) {
        if self.refusing_writes {
            return self.refuse(origin);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        // A connection's writes share one stamp while any of them is in flight: across a
        // failover they are lost, and proposed again, together and in order, so a later write
        // can never be applied before an earlier one.
        let term = match origin.conn().and_then(|c| self.conns.get(&c)) {
            Some(c) if c.proposals_in_flight() > 0 => c.write_stamp,
            _ => self.quorum.term(),
        };
        let proposal = Proposal {
            origin_server: self.quorum.id(),
            origin_seq: seq,
            term,
            session_id,
            auth,
            providers: self.cfg.acl_providers(),
            txn,
        };
        let framed = Bytes::from(proposal.to_framed_bytes());
        // Should the log refuse it, the driver says so (`Input::Stopped`), and every pending
        // proposal, this one too, is refused then.
        self.effect(Effect::Propose(framed.clone()));
        if let Some(c) = origin.conn().and_then(|c| self.conns.get_mut(&c)) {
            c.in_flight += 1;
            c.write_stamp = term;
        }
        let pending = Pending {
            origin,
            term: Some(term),
            framed,
        };
        self.pending.insert(seq, pending);
        self.proposed_at.push_back((seq, self.now));
    }

    /// Answers a write that cannot be made durable.
    pub(super) fn refuse(&mut self, origin: Origin) {
        if let Origin::Reconfig {
            conn,
            xid,
            received,
        } = origin
        {
            let zxid = self.tree.last_zxid();
            self.finish(conn, xid, zxid, Err(ErrorCode::NotReadOnly), received);
            return self.release(conn);
        }
        if let Some(c) = origin.conn().and_then(|c| self.conns.get_mut(&c)) {
            c.writes_resolved += 1;
        }
        match origin {
            Origin::Nobody => {}
            Origin::Reply {
                conn,
                xid,
                received,
            }
            | Origin::Close {
                conn,
                xid,
                received,
            } => {
                // ZooKeeper's answer from a server that cannot take writes.
                self.finish(
                    conn,
                    xid,
                    self.tree.last_zxid(),
                    Err(ErrorCode::NotReadOnly),
                    received,
                );
            }
            Origin::Connect { conn, .. } => self.close_connection(conn),
            Origin::Reconfig { .. } => unreachable!("answered above"),
        }
    }

    pub(super) fn stop_writes(&mut self, why: &LogStopped) {
        if self.refusing_writes {
            return;
        }
        tracing::error!(%why, "refusing writes until restart; reads go on");
        self.refusing_writes = true;
        // A standalone server's log is the only one: what it failed to write is certainly not
        // applied, and ZooKeeper's refusal says so. In an ensemble a pending write may already
        // be with the leader (forwarded, or replicated before this member's own fsync failed)
        // and commit without this member: its outcome is unknown, so its client loses the
        // connection, never hears "not applied" (found by the simulation, seed 52).
        let certain = self.role == Role::Standalone
            || corral_io::broken::is(corral_io::broken::Broken::RefusePending);
        for p in self.pending.take_all() {
            if let Some(c) = p.origin.conn().and_then(|c| self.conns.get_mut(&c)) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            match p.origin.conn() {
                Some(conn) if !certain => self.close_connection(conn),
                _ => self.refuse(p.origin),
            }
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.drain(conn);
        }
    }

    /// Proposals no leader took: the client learns of it as a lost connection, as from
    /// ZooKeeper without a leader (nothing was appended, so nothing is applied later).
    pub(super) fn lost(&mut self, seqs: Vec<u64>) {
        for seq in seqs {
            if let Some(conn) = self.pending.remove(&seq).and_then(|p| p.origin.conn()) {
                self.close_connection(conn);
            }
        }
        // A lost expiry must be decided again.
        self.closing.clear();
    }

    /// Closes the connections of writes that went unanswered for [`PROPOSAL_TIMEOUT`].
    pub(super) fn time_out_proposals(&mut self) {
        let now = self.now;
        while let Some(&(seq, at)) = self.proposed_at.front() {
            // Answered ones leave from the front at once; the rest when they time out.
            let answered = !self.pending.contains_key(&seq);
            if !answered && now.saturating_duration_since(at) < PROPOSAL_TIMEOUT {
                break;
            }
            self.proposed_at.pop_front();
            if let Some(p) = self.pending.remove(&seq) {
                tracing::warn!(seq, "a write went unanswered; closing its connection");
                if let Some(conn) = p.origin.conn() {
                    self.close_connection(conn);
                }
                self.closing.clear();
            }
        }
    }
}
