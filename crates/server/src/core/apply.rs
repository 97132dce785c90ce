//! Applying the log: each committed proposal gets the next zxid and changes the tree; the
//! watches it fires are queued on their connections (before any later reply); the member that
//! proposed it answers its client. Also what waits for the log to reach a point: `sync`s and
//! reconnects naming a session this member had not seen, and snapshots from the leader.

use super::proposals::Origin;
use super::sessions::LiveSession;
use super::{Core, Effect, Incoming, SyncRequest};
use corral_io::hash::{HashMap, HashSet};
use corral_proto::codes::perms;
use corral_proto::reply::notification_frame;
use corral_proto::Response;
use corral_replication::{AppliedMark, Applying};
use corral_tree::{acl, DataTree, Entry, Txn};

/// A reconnect waiting until this member has applied the leader's read index, to decide whether
/// the session it names exists.
pub(super) struct ConnectWait {
    index: u64,
    pub(super) incoming: Incoming,
}

/// A `sync` waiting for this member to apply the leader's read index.
pub(super) struct SyncWait {
    index: u64,
    sync: SyncRequest,
}

impl Core {
    /// Applies one committed log entry: each proposal of its batch gets the next zxid.
    pub(super) fn apply_entry(&mut self, applying: Applying) {
        let entry_term = applying.mark.term();
        if entry_term > self.mark.term() {
            self.new_term_applied(entry_term);
        }
        if let Some(batch) = applying.batch {
            for proposal in batch.proposals {
                let mine = proposal.origin_server == self.quorum.id();
                let seq = proposal.origin_seq;
                if proposal.term != 0 && proposal.term != entry_term {
                    // Proposed under another leader: skipped here and everywhere. If it was this
                    // member's live copy, the write is proposed again under the current term.
                    let live = mine
                        && self
                            .pending
                            .get(&seq)
                            .is_some_and(|p| p.term == Some(proposal.term));
                    if live && proposal.term < entry_term {
                        // (The first entry of a newer term proposes such writes again already;
                        // this is the rule's own guard.)
                        self.proposal_lost(seq, self.quorum.term().max(entry_term));
                    } else if live {
                        // Stamped with a term later than its entry's: not expected. Its outcome
                        // is told as ZooKeeper tells an unknown one, a lost connection.
                        tracing::error!(
                            seq,
                            stamp = proposal.term,
                            entry_term,
                            "a proposal stamped with a later term than its entry"
                        );
                        if let Some(conn) = self.pending.remove(&seq).and_then(|p| p.origin.conn())
                        {
                            self.close_connection(conn);
                        }
                    }
                    continue;
                }
                let origin = if mine {
                    self.pending.remove(&seq).map(|p| {
                        debug_assert!(
                            p.term.is_none() || p.term == Some(proposal.term),
                            "only the live copy applies"
                        );
                        p.origin
                    })
                } else {
                    None
                };
                let entry = proposal.into_entry(self.tree.last_zxid() + 1, batch.time_ms);
                self.apply(entry, origin.unwrap_or(Origin::Nobody));
            }
        }
        self.mark = applying.mark;
    }

    pub(super) fn apply(&mut self, entry: Entry, origin: Origin) {
        let created = match &entry.txn {
            Txn::CreateSession { timeout_ms } => Some((entry.session_id, *timeout_ms)),
            _ => None,
        };
        let applied = self.tree.apply(&entry);
        let now = self.now;
        if let Some((id, timeout_ms)) = created {
            // Known everywhere, so the leader can expire it whichever member it is on.
            self.sessions
                .entry(id)
                .or_insert_with(|| LiveSession::new(timeout_ms, now, None));
        }
        for event in &applied.events {
            for conn in self.watches.trigger(&event.path, event.kind) {
                // A watcher that may not read the node is not told of it (ZooKeeper's fix for
                // CVE-2024-23944).
                let may_read = self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| acl::check(&event.acl, perms::READ, &c.auth).is_ok());
                if may_read {
                    self.send(
                        conn,
                        notification_frame(&event.path, event.kind, entry.zxid),
                    );
                }
            }
        }
        let origin_conn = origin.conn();
        match origin {
            Origin::Nobody => {}
            Origin::Reconfig {
                conn,
                xid,
                received,
            } => {
                self.finish(conn, xid, applied.zxid, applied.result, received);
                // Its proposal, then its hold on the connection; it was not one of the
                // connection's writes.
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                }
                self.release(conn);
                return self.after_apply();
            }
            Origin::Reply {
                conn,
                xid,
                received,
            } => {
                self.stats
                    .update_latency
                    .record(now.saturating_duration_since(received));
                self.finish(conn, xid, applied.zxid, applied.result, received)
            }
            Origin::Connect { conn, frame } => {
                if self.conns.contains_key(&conn) {
                    self.handshake(conn, frame);
                }
            }
            Origin::Close {
                conn,
                xid,
                received,
            } => {
                self.finish(conn, xid, applied.zxid, Ok(Response::Empty), received);
                self.session_closed(conn);
            }
        }
        if let Some(closed) = applied.closed_session {
            self.closing.remove(&closed);
            if let Some(s) = self.sessions.remove(&closed) {
                if let Some(conn) = s.conn {
                    self.close_connection(conn);
                }
            }
        }
        if let Some(conn) = origin_conn {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.in_flight = c.in_flight.saturating_sub(1);
                c.writes_resolved += 1;
            }
            self.drain(conn);
        }
        self.after_apply();
    }

    /// Counts an applied entry towards the next snapshot.
    fn after_apply(&mut self) {
        self.applied_since_snapshot += 1;
        if self.applied_since_snapshot >= self.cfg.snap_count {
            self.applied_since_snapshot = 0;
            self.effect(Effect::TriggerSnapshot);
        }
    }

    /// Answers the `sync`s, and decides the reconnects, whose read index this member has now
    /// applied.
    pub(super) fn finish_syncs(&mut self) {
        let applied = self.mark.index();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reconnects)
            .into_iter()
            .partition(|w| w.index <= applied);
        self.reconnects = waiting;
        for w in ready {
            if self.still_asked(w.incoming.conn) {
                self.connect(w.incoming, true);
            }
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.syncs)
            .into_iter()
            .partition(|s| s.index <= applied);
        self.syncs = waiting;
        for SyncWait { sync: s, .. } in ready {
            self.finish(
                s.conn,
                s.xid,
                self.tree.last_zxid(),
                Ok(Response::Path(s.path)),
                s.received,
            );
            if let Some(c) = self.conns.get_mut(&s.conn) {
                c.in_flight = c.in_flight.saturating_sub(1);
                c.syncs_in_flight = c.syncs_in_flight.saturating_sub(1);
            }
            self.drain(s.conn);
        }
    }

    /// A snapshot from the leader replaces the tree.
    pub(super) fn install(&mut self, tree: DataTree, mark: AppliedMark) {
        tracing::info!(
            zxid = format_args!("{:#x}", tree.last_zxid()),
            "installing a snapshot from the leader"
        );
        self.tree = tree;
        self.mark = mark;
        // The snapshot may hold some of this member's proposals, applied without it seeing
        // them: none of them may be proposed again.
        for p in self.pending.values_mut() {
            p.term = None;
        }
        self.resync_sessions();
        self.finish_syncs();
    }

    /// The leader's read index for a reconnect naming a session this member does not know.
    pub(super) fn connect_index(&mut self, incoming: Incoming, index: Option<u64>) {
        if !self.still_asked(incoming.conn) {
            return;
        }
        match index {
            Some(index) => {
                self.asking.insert(incoming.conn);
                self.reconnects.push(ConnectWait { index, incoming });
                self.finish_syncs();
            }
            // No leader could say: the client tries another server, as after a lost
            // connection, rather than being told its session is gone.
            None => self.refuse_incoming(incoming),
        }
    }

    /// The leader's read index for a `sync`.
    pub(super) fn sync_index(&mut self, sync: SyncRequest, index: Option<u64>) {
        match index {
            Some(index) => {
                self.syncs.push(SyncWait { index, sync });
                self.finish_syncs();
            }
            None => {
                // No leader to ask: the client learns of it as a lost connection.
                tracing::warn!("sync: no leader answered; closing the connection");
                self.close_connection(sync.conn);
            }
        }
    }

    /// After a snapshot replaced the tree: sessions follow the tree, except those whose creation
    /// this member has proposed and not yet seen applied (the snapshot may predate it).
    pub(super) fn resync_sessions(&mut self) {
        let now = self.now;
        let live: HashMap<i64, i32> = self.tree.sessions().collect();
        let creating: HashSet<i64> = self
            .pending
            .values()
            .filter_map(|p| match &p.origin {
                Origin::Connect { conn, .. } => self.conns.get(conn).map(|c| c.session_id),
                _ => None,
            })
            .collect();
        let gone: Vec<i64> = self
            .sessions
            .keys()
            .filter(|id| !live.contains_key(id) && !creating.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(conn) = self.sessions.remove(&id).and_then(|s| s.conn) {
                self.close_connection(conn);
            }
        }
        for (id, timeout_ms) in live {
            self.sessions
                .entry(id)
                .or_insert_with(|| LiveSession::new(timeout_ms, now, None));
        }
    }
}
