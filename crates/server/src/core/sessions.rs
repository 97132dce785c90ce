//! Sessions: created through the log, resumed on any member (after the leader vouches for
//! them), closed at a client's request or expired by the leader, and read-only ones kept local
//! in read-only mode. Also the tick: expiry and reaping on the leader, timeouts everywhere.

use super::ordering::Conn;
use super::proposals::Origin;
use super::{Core, Effect, Incoming};
use crate::session;
use crate::watch::ConnId;
use bytes::Bytes;
use corral_proto::frame::connect_response_frame;
use corral_proto::records::ConnectResponse;
use corral_replication::Touched;
use corral_tree::Txn;
use std::time::{Duration, Instant};

/// A session this member knows of (every live session, once its creation is applied).
pub(super) struct LiveSession {
    pub(super) timeout_ms: i32,
    /// When the leader expires it unless heard from: last heard plus the timeout.
    pub(super) deadline: Instant,
    pub(super) conn: Option<ConnId>,
    /// While this member does not lead: how long the leader is known to keep the session alive
    /// (from granted touch rounds). Its connection here is closed before then.
    pub(super) confirmed: Option<Instant>,
}

impl LiveSession {
    pub(super) fn new(timeout_ms: i32, heard: Instant, conn: Option<ConnId>) -> Self {
        LiveSession {
            timeout_ms,
            deadline: heard + Duration::from_millis(timeout_ms.max(0) as u64),
            conn,
            confirmed: None,
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(0) as u64)
    }

    pub(super) fn heard(&self) -> Instant {
        self.deadline - self.timeout()
    }
}

/// A connect response for a live session. `read_only`: the byte after it, sent when the client
/// sent one (mirrored as ZooKeeper does: 1 only from a read-only session).
fn session_frame(session_id: i64, timeout_ms: i32, read_only: Option<bool>) -> Bytes {
    let resp = ConnectResponse {
        protocol_version: 0,
        time_out: timeout_ms,
        session_id,
        passwd: Bytes::copy_from_slice(&session::password(session_id)),
    };
    Bytes::from(connect_response_frame(&resp, read_only))
}

/// ZooKeeper's answer for a session that has expired (or a wrong password): timeout 0.
pub(super) fn expired_frame(read_only: Option<bool>) -> Bytes {
    let resp = ConnectResponse {
        protocol_version: 0,
        time_out: 0,
        session_id: 0,
        passwd: Bytes::from_static(&[0; 16]),
    };
    Bytes::from(connect_response_frame(&resp, read_only))
}

impl Core {
    /// `rechecked`: this member has applied the leader's read index since the client asked, so
    /// a session it does not know is really gone.
    pub(super) fn connect(&mut self, inc: Incoming, rechecked: bool) {
        let req = &inc.handshake.request;
        if req.last_zxid_seen > self.tree.last_zxid() {
            tracing::warn!(
                peer = %inc.peer,
                client_zxid = format_args!("{:#x}", req.last_zxid_seen),
                our_zxid = format_args!("{:#x}", self.tree.last_zxid()),
                "refusing session: the client has seen a later zxid than this server"
            );
            return self.refuse_incoming(inc);
        }
        if !self.serving.is_serving() {
            if self.read_only.is_active() && inc.handshake.read_only == Some(true) {
                return self.connect_read_only(inc);
            }
            // As ZooKeeper's member without a quorum: the connection closes unanswered, and the
            // client tries another server.
            tracing::debug!(peer = %inc.peer, "not serving: closing a new connection");
            return self.refuse_incoming(inc);
        }
        if req.session_id == 0 {
            return self.create_session(inc);
        }
        let id = req.session_id;
        // Like ZooKeeper, a reconnect first closes the session's current connection, even
        // when the password then turns out to be wrong.
        if let Some(old) = self.sessions.get(&id).and_then(|s| s.conn) {
            self.close_connection(old);
        }
        let known = self.tree.session_timeout(id).is_some() && !self.closing.contains(&id);
        let password_ok = req.passwd.as_ref() == session::password(id);
        if !known && password_ok && !rechecked && !self.closing.contains(&id) {
            // This member may not have applied the session's creation yet (it lags, or is
            // replaying after a restart): "expired" is final for a client, so first catch up
            // with the leader's commit point.
            return self.effect(Effect::ConnectIndex(inc));
        }
        if !known || !password_ok {
            tracing::info!(peer = %inc.peer, session = format_args!("{id:#x}"), "session expired or password wrong");
            return self.expire_incoming(inc);
        }
        if self.role.leads() {
            return self.resume_session(inc, None);
        }
        // As ZooKeeper's Learner.validateSession: only the leader can say the session is still
        // alive, and keep it so for a timeout from now. A touch round naming it asks both.
        self.effect(Effect::Revalidate(inc));
    }

    /// The leader's answer to a reconnect's revalidation.
    pub(super) fn revalidated(&mut self, inc: Incoming, touched: Touched) {
        if !self.still_asked(inc.conn) {
            return;
        }
        let id = inc.handshake.request.session_id;
        let alive = touched
            .answer
            .as_ref()
            .is_some_and(|a| a.granted && !a.unknown.contains(&id));
        if !alive || !self.serving.is_serving() || self.closing.contains(&id) {
            // No leader vouched for it (or it is being closed): the client tries again, here or
            // elsewhere, and learns of an expiry once this member has applied it.
            tracing::debug!(peer = %inc.peer, session = format_args!("{id:#x}"), "reconnect not revalidated; closing");
            return self.refuse_incoming(inc);
        }
        self.resume_session(inc, Some(touched.sent_at));
    }

    /// Registers a new connection's session; `creating`: its creation is still to be applied.
    pub(super) fn attach(
        &mut self,
        inc: &Incoming,
        session_id: i64,
        timeout_ms: i32,
        read_only: bool,
        creating: bool,
    ) {
        let epoch_ms = self.epoch_ms();
        let conn = Conn::new(session_id, inc, timeout_ms, read_only, creating, epoch_ms);
        self.conns.insert(inc.conn, conn);
    }

    /// Attaches a known session to a new connection and answers it. `vouched_at`: when the
    /// leader's revalidation was asked (on a member that does not lead).
    pub(super) fn resume_session(&mut self, inc: Incoming, vouched_at: Option<Instant>) {
        let id = inc.handshake.request.session_id;
        let timeout_ms = self.cfg.negotiate_timeout(inc.handshake.request.time_out);
        let mut session = LiveSession::new(timeout_ms, self.now, Some(inc.conn));
        session.confirmed = vouched_at.map(|at| at + session.timeout());
        if let Some(old) = self.sessions.insert(id, session).and_then(|s| s.conn) {
            // Another reconnect of the same session got here first.
            self.close_connection(old);
        }
        self.active.insert(id);
        self.attach(&inc, id, timeout_ms, false, false);
        let frame = session_frame(id, timeout_ms, inc.handshake.read_only.map(|_| false));
        self.handshake(inc.conn, frame);
    }

    /// A client asking for read-only access while this member is in read-only mode.
    pub(super) fn connect_read_only(&mut self, inc: Incoming) {
        let now = self.now;
        let req = &inc.handshake.request;
        let timeout_ms = self.cfg.negotiate_timeout(req.time_out);
        let timeout = Duration::from_millis(timeout_ms as u64);
        let id = req.session_id;
        let password_ok = req.passwd.as_ref() == session::password(id);
        let session_id = if id == 0 {
            let id = self.ids.next_id();
            self.read_only.open(id, timeout, inc.conn, now);
            tracing::info!(peer = %inc.peer, session = format_args!("{id:#x}"), "read-only session");
            id
        } else if self.read_only.knows(id) && password_ok {
            if let Some(Some(old)) = self.read_only.resume(id, inc.conn, now) {
                self.close_connection(old);
            }
            id
        } else if self.tree.session_timeout(id).is_some() {
            // A replicated session cannot be kept alive from here (ZooKeeper: "Refusing global
            // session reconnection in RO mode"): the client tries the other members.
            tracing::debug!(peer = %inc.peer, session = format_args!("{id:#x}"), "read-only mode: refusing a replicated session");
            return self.refuse_incoming(inc);
        } else {
            // A read-only session of another member, or of an earlier run: gone.
            return self.expire_incoming(inc);
        };
        self.attach(&inc, session_id, timeout_ms, true, false);
        let frame = session_frame(session_id, timeout_ms, Some(true));
        self.handshake(inc.conn, frame);
    }

    pub(super) fn create_session(&mut self, inc: Incoming) {
        let session_id = self.ids.next_id();
        let timeout_ms = self.cfg.negotiate_timeout(inc.handshake.request.time_out);
        let now = self.now;
        let mut session = LiveSession::new(timeout_ms, now, Some(inc.conn));
        // The leader applies the creation after this, and keeps it a timeout from then.
        session.confirmed = Some(now + session.timeout());
        self.sessions.insert(session_id, session);
        self.active.insert(session_id);
        self.attach(&inc, session_id, timeout_ms, false, true);
        let frame = session_frame(
            session_id,
            timeout_ms,
            inc.handshake.read_only.map(|_| false),
        );
        tracing::debug!(peer = %inc.peer, session = format_args!("{session_id:#x}"), timeout_ms, "creating session");
        let origin = Origin::Connect {
            conn: inc.conn,
            frame,
        };
        self.propose(
            session_id,
            Vec::new(),
            Txn::CreateSession { timeout_ms },
            origin,
        );
    }

    pub(super) fn connection_closed(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.watches.drop_connection(conn);
        if c.read_only {
            self.read_only.detach(c.session_id, conn);
        } else if let Some(s) = self.sessions.get_mut(&c.session_id) {
            if s.conn == Some(conn) {
                s.conn = None;
            }
        }
    }

    /// The leader expires silent sessions and reaps due containers and TTL nodes; the other
    /// members report which sessions they have heard from. Everyone times out lost proposals.
    pub(super) fn tick(&mut self) {
        let now = self.now;
        self.time_out_proposals();
        for conn in self.read_only.expire(now) {
            self.close_connection(conn);
        }
        self.close_stalled();
        if !self.role.leads() {
            return;
        }
        self.active.clear();
        let expired: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(id, s)| s.deadline <= now && !self.closing.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            tracing::info!(session = format_args!("{id:#x}"), "session expired");
            if let Some(conn) = self.sessions.get(&id).and_then(|s| s.conn) {
                self.close_connection(conn);
            }
            self.closing.insert(id);
            self.propose(id, Vec::new(), Txn::CloseSession, Origin::Nobody);
        }
        if now >= self.next_reap {
            self.next_reap = now + Duration::from_millis(self.cfg.container_check_interval_ms);
            for path in self.tree.reap_candidates(self.epoch_ms()) {
                self.propose(0, Vec::new(), Txn::Reap { path }, Origin::Nobody);
            }
        }
    }
}
