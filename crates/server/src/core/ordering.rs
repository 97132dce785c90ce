//! Per-connection ordering and what a connection holds: a connection's requests are answered
//! in the order they came. Its reads wait for its earlier writes (and `sync`s), and for its
//! replies to drain below its budget; its writes are proposed at once unless a `sync` or an
//! earlier write held back is in the way. Replies are queued on its outbox, counted against its
//! budget; a client that reads nothing for the grace time, or whose queue passes four budgets,
//! is closed and named.

use super::proposals::Origin;
use super::{Core, Effect, Incoming, Outgoing};
use crate::budget::ConnBudget;
use crate::stats::ConnStats;
use crate::watch::ConnId;
use bytes::Bytes;
use corral_proto::records::Id;
use corral_proto::reply::reply_len;
use corral_proto::{DecodeError, ErrorCode, OpCode, Request, Response};
use corral_tree::Txn;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// A request held back until the connection's earlier writes are applied.
pub(super) struct Queued {
    xid: i32,
    op: i32,
    request: Result<Request, DecodeError>,
    received: Instant,
    /// For a read or sync: the connection's writes it must see (its `writes_seen` when it came).
    after: u64,
}

impl Conn {
    /// Its writes proposed and not yet applied or refused.
    pub(super) fn proposals_in_flight(&self) -> usize {
        self.in_flight.saturating_sub(self.syncs_in_flight)
    }

    /// `creating`: the session's creation is still to be applied; nothing may be answered
    /// before its connect response (the creation counts as a write the connection's reads and
    /// auth replies wait for).
    pub(super) fn new(
        session_id: i64,
        inc: &Incoming,
        timeout_ms: i32,
        read_only: bool,
        creating: bool,
        epoch_ms: i64,
    ) -> Self {
        Conn {
            session_id,
            budget: inc.budget.clone(),
            request_sizes: VecDeque::new(),
            stalled: (0, None),
            auth: std::iter::once(Id::new("ip", &inc.peer.ip().to_string()))
                .chain(inc.identities.iter().cloned())
                .collect(),
            peer: inc.peer,
            stats: ConnStats::new(epoch_ms),
            timeout_ms,
            read_only,
            in_flight: 0,
            writes_seen: u64::from(creating),
            writes_resolved: 0,
            syncs_in_flight: 0,
            write_stamp: 0,
            queued: VecDeque::new(),
        }
    }
}

impl Queued {
    pub(super) fn is_write(&self) -> bool {
        matches!(&self.request, Ok(r) if proposes(r))
    }
}

/// A client connection with a session.
pub(super) struct Conn {
    pub(super) session_id: i64,
    /// What the connection holds against its limits, shared with its reader and writer.
    pub(super) budget: Arc<ConnBudget>,
    /// The frame lengths of its requests not yet answered, oldest first: replies go out in
    /// request order, so an answer releases the front one.
    pub(super) request_sizes: VecDeque<u32>,
    /// Bytes its socket had taken at the last check, and since when that has not changed while
    /// replies were queued.
    pub(super) stalled: (u64, Option<Instant>),
    pub(super) auth: Vec<Id>,
    pub(super) peer: SocketAddr,
    pub(super) stats: ConnStats,
    pub(super) timeout_ms: i32,
    /// A read-only session (read-only mode): local to this member, writes refused.
    pub(super) read_only: bool,
    pub(super) in_flight: usize,
    /// Writes received on this connection, and how many of them are applied or refused. A read
    /// may be answered once every write before it is resolved: right after the apply of the last
    /// of them, before the next entry, so it never sees the connection's later writes.
    pub(super) writes_seen: u64,
    pub(super) writes_resolved: u64,
    /// `sync`s not yet answered: until they are, nothing after them may be answered either.
    pub(super) syncs_in_flight: usize,
    /// The term its writes in flight are stamped with (see `Core::propose`).
    pub(super) write_stamp: u64,
    pub(super) queued: VecDeque<Queued>,
}

impl Core {
    /// Queues a frame (a notification, an auth reply) for a connection.
    pub(super) fn send(&mut self, conn: ConnId, frame: Bytes) {
        let bytes = frame.len();
        self.queue_out(conn, Outgoing::Frame(frame), bytes);
    }

    /// Queues what goes out on a connection, counted against its budget. A connection whose
    /// queue has passed its hard cap (a flood of notifications to a client that does not read)
    /// is closed at once.
    pub(super) fn queue_out(&mut self, conn: ConnId, item: Outgoing, bytes: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.stats.sent += 1;
        self.stats.packets_sent += 1;
        // Counted before it is handed over: the writer may take it and write it at once, and
        // must find it counted to uncount it.
        let over_cap = c.budget.queued(bytes);
        self.effect(Effect::Send { conn, item });
        if over_cap {
            self.close_slow(conn, "its queued replies passed four times the budget");
        }
    }

    /// One request of the connection is answered: its bytes stop counting against its budget.
    pub(super) fn answered(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let size = c.request_sizes.pop_front().unwrap_or(0);
            c.budget.answered(size as usize);
        }
    }

    /// Closes a connection whose client does not read its replies, saying who it was.
    pub(super) fn close_slow(&mut self, conn: ConnId, why: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        tracing::warn!(
            peer = %c.peer,
            session = format_args!("{:#x}", c.session_id),
            queued_bytes = c.budget.reply_bytes(),
            sent_bytes = c.budget.sent_bytes(),
            unanswered = c.request_sizes.len(),
            queued_requests = c.queued.len(),
            max_queued_reply_bytes = c.budget.limits().max_reply_bytes,
            "closing a client that does not read its replies: {why}"
        );
        self.limits
            .closed_slow
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Its writer may be blocked writing to a client that takes nothing: stop it there.
        c.budget.abort();
        self.close_connection(conn);
    }

    /// Closes the connections with replies queued whose sockets have taken nothing for the
    /// grace time: clients that do not read.
    pub(super) fn close_stalled(&mut self) {
        let now = self.now;
        let mut stalled = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            let sent = c.budget.sent_bytes();
            if c.budget.reply_bytes() == 0 || sent != c.stalled.0 {
                c.stalled = (sent, None);
                continue;
            }
            let since = *c.stalled.1.get_or_insert(now);
            if now.saturating_duration_since(since) >= c.budget.limits().stall_grace {
                stalled.push(*id);
            }
        }
        for conn in stalled {
            self.close_slow(conn, "its socket took nothing for the grace time");
        }
    }

    /// The connection's session was closed at its client's request (the reply is queued).
    pub(super) fn session_closed(&mut self, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.effect(Effect::Send {
                conn,
                item: Outgoing::SessionClosed,
            });
        }
        self.connection_closed(conn);
    }

    pub(super) fn close_connection(&mut self, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.effect(Effect::Send {
                conn,
                item: Outgoing::Close,
            });
        }
        self.connection_closed(conn);
    }

    /// A connect response, not counted against the connection's budget.
    pub(super) fn handshake(&mut self, conn: ConnId, frame: Bytes) {
        self.effect(Effect::Send {
            conn,
            item: Outgoing::Handshake(frame),
        });
    }

    /// Closes a connection the core has not taken (the client tries another server).
    pub(super) fn refuse_incoming(&mut self, inc: Incoming) {
        self.effect(Effect::Send {
            conn: inc.conn,
            item: Outgoing::Close,
        });
    }

    /// Answers "expired" (a session gone, or a wrong password), then closes.
    pub(super) fn expire_incoming(&mut self, inc: Incoming) {
        let read_only = inc.handshake.read_only.map(|_| false);
        self.handshake(inc.conn, super::sessions::expired_frame(read_only));
        self.refuse_incoming(inc);
    }

    pub(super) fn packet(
        &mut self,
        conn: ConnId,
        xid: i32,
        op: i32,
        size: u32,
        request: Result<Request, DecodeError>,
        received: Instant,
    ) {
        if self.draining {
            // Stopping: new requests are not taken; the connection closes when the server stops.
            return;
        }
        let log_full = self.log_full();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // A read-write session is answered only while serving, a read-only one only while not:
        // otherwise its connection is being closed, and nothing more is answered.
        if c.read_only == self.serving.is_serving() {
            return;
        }
        c.request_sizes.push_back(size);
        c.stats.received += 1;
        c.stats.last_op = OpCode::from_i32(op);
        c.stats.last_cxid = xid;
        self.stats.packets_received += 1;
        let now = self.now;
        if c.read_only {
            self.read_only.heard(c.session_id, now);
        } else {
            self.active.insert(c.session_id);
            if let Some(s) = self.sessions.get_mut(&c.session_id) {
                s.deadline = now + s.timeout();
            }
        }
        // A connection's reads wait for its earlier writes. Its writes are proposed at once,
        // past reads still waiting (those are answered as soon as the writes before them are
        // applied, before any later entry), unless a sync holds the connection.
        let is_write = matches!(&request, Ok(r) if proposes(r));
        let go = if is_write {
            // It may pass queued reads only while each waits for an earlier write: those are
            // answered at that write's apply, before this one's. A read held at the budget is
            // answered when the writer drains, so a write must wait behind it.
            c.syncs_in_flight == 0
                && c.queued
                    .iter()
                    .all(|q| !q.is_write() && !is_sync(q) && q.after > c.writes_resolved)
        } else {
            // A read waits, too, while the connection's replies are over its budget: requests
            // already read must not pile up more replies (its writer resumes it).
            c.syncs_in_flight == 0
                && c.queued.is_empty()
                && c.writes_resolved >= c.writes_seen
                && !c.budget.hold_reads()
        };
        if is_write {
            c.writes_seen += 1;
        }
        let go = go && !(is_write && log_full);
        if !go {
            let after = c.writes_seen;
            let first_held = c.queued.is_empty();
            c.queued.push_back(Queued {
                xid,
                op,
                request,
                received,
                after,
            });
            if is_write && log_full && first_held {
                self.wait_for_log(conn);
            }
            return;
        }
        self.dispatch(conn, xid, op, request, received);
    }

    /// Takes held-back requests of a connection as far as its in-flight writes allow.
    pub(super) fn drain(&mut self, conn: ConnId) {
        loop {
            let log_full = self.log_full();
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(front) = c.queued.front() else {
                return;
            };
            if front.is_write() && c.syncs_in_flight == 0 && log_full {
                return self.wait_for_log(conn);
            }
            // A read whose writes are resolved goes now if writes proposed after it are in
            // flight (their replies must follow its own), otherwise once under the budget.
            let ready = c.syncs_in_flight == 0
                && (front.is_write()
                    || (c.writes_resolved >= front.after
                        && (c.proposals_in_flight() > 0 || !c.budget.hold_reads())));
            if !ready {
                return;
            }
            let q = c.queued.pop_front().expect("checked");
            self.dispatch(conn, q.xid, q.op, q.request, q.received);
        }
    }

    pub(super) fn dispatch(
        &mut self,
        conn: ConnId,
        xid: i32,
        op: i32,
        request: Result<Request, DecodeError>,
        received: Instant,
    ) {
        let Some(session_id) = self.conns.get(&conn).map(|c| c.session_id) else {
            return;
        };
        let request = match request {
            Ok(r) => r,
            Err(DecodeError::UnknownOpCode(_)) => {
                // ZooKeeper answers Unimplemented with zxid -1, then closes the connection.
                tracing::warn!(
                    op,
                    "received packet of unknown type; closing the connection"
                );
                self.finish(conn, xid, -1, Err(ErrorCode::Unimplemented), received);
                return self.close_connection(conn);
            }
            Err(e) => {
                tracing::warn!(op, error = %e, "cannot decode request body");
                return self.finish(
                    conn,
                    xid,
                    self.tree.last_zxid(),
                    Err(ErrorCode::MarshallingError),
                    received,
                );
            }
        };
        if self.refused_unauthenticated(conn, xid, &request, received) {
            return;
        }
        if self.conns[&conn].read_only && self.refused_read_only(conn, xid, &request, received) {
            return;
        }
        match request {
            Request::Auth(p) => self.auth(conn, xid, p),
            Request::Sasl(token) => self.sasl(conn, xid, token, received),
            Request::Sync(r) => self.sync(conn, xid, r.path, received),
            Request::Reconfig(r) => self.reconfig(conn, xid, r, received),
            Request::CloseSession => {
                // Detach the connection so that applying the close answers it before closing it.
                if let Some(s) = self.sessions.get_mut(&session_id) {
                    s.conn = None;
                }
                self.closing.insert(session_id);
                let origin = Origin::Close {
                    conn,
                    xid,
                    received,
                };
                self.propose(session_id, Vec::new(), Txn::CloseSession, origin);
            }
            req if req.is_write() => {
                let auth = self.conns[&conn].auth.clone();
                let origin = Origin::Reply {
                    conn,
                    xid,
                    received,
                };
                self.propose(session_id, auth, Txn::Client(req), origin);
            }
            req => {
                let result = self.read(conn, session_id, req);
                self.stats
                    .read_latency
                    .record(self.now.saturating_duration_since(received));
                self.finish(conn, xid, self.tree.last_zxid(), result, received);
            }
        }
    }

    /// Queues the reply to a request; its latency is counted until now.
    pub(super) fn finish(
        &mut self,
        conn: ConnId,
        xid: i32,
        zxid: i64,
        result: Result<Response, ErrorCode>,
        received: Instant,
    ) {
        let latency = self.now.saturating_duration_since(received);
        self.stats.record_latency(latency);
        let epoch_ms = self.epoch_ms();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.stats.record(latency, zxid, epoch_ms);
        }
        self.answered(conn);
        let bytes = reply_len(&result);
        self.queue_out(conn, Outgoing::Reply { xid, zxid, result }, bytes);
    }
}

/// Whether a held request must not be passed by a later write: a `sync` or `reconfig` (the
/// write would be ordered before it), or an auth or SASL step (the write must carry the
/// identity it adds).
fn is_sync(q: &Queued) -> bool {
    matches!(
        q.request,
        Ok(Request::Sync(_) | Request::Reconfig(_) | Request::Auth(_) | Request::Sasl(_))
    )
}

/// Whether a request is a write proposed to the log as it comes. A `reconfig` is not: the log
/// changes the membership first, and the connection waits for it as for a `sync`.
fn proposes(r: &Request) -> bool {
    r.is_write() && !matches!(r, Request::Reconfig(_))
}
