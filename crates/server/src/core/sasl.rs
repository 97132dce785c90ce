//! SASL and required authentication, the core's side: a SASL token holds the connection's
//! later requests (as a `sync` does) while the driver runs the mechanism (`auth`), and the
//! outcome is answered in order. A session without an identity of a required scheme is refused
//! anything but auth and SASL, as ZooKeeper's `AuthenticationHelper` does.

use super::{Core, Effect, SaslStep};
use crate::auth::SaslOutcome;
use crate::watch::ConnId;
use bytes::Bytes;
use corral_proto::message::encode_frame;
use corral_proto::records::{Id, ReplyHeader};
use corral_proto::{ErrorCode, Jute, Request, Response};
use std::time::Instant;

/// The zxid SASL replies carry: ZooKeeper answers them outside the request pipeline, with 0.
const SASL_REPLY_ZXID: i64 = 0;

impl Core {
    /// A SASL token: the driver runs the step, and [`Core::sasl_done`] answers it.
    pub(super) fn sasl(&mut self, conn: ConnId, xid: i32, token: Bytes, received: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.in_flight += 1;
            c.syncs_in_flight += 1;
        }
        self.effect(Effect::Sasl(SaslStep {
            conn,
            xid,
            token,
            received,
        }));
    }

    pub(super) fn sasl_done(&mut self, step: SaslStep, outcome: SaslOutcome) {
        let SaslStep {
            conn,
            xid,
            received,
            ..
        } = step;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.in_flight = c.in_flight.saturating_sub(1);
        c.syncs_in_flight = c.syncs_in_flight.saturating_sub(1);
        let (peer, session_id) = (c.peer, c.session_id);
        let reply = |token: Option<Vec<u8>>| Ok(Response::Sasl(token.map(Bytes::from)));
        match outcome {
            SaslOutcome::Continue(token) => {
                self.finish(conn, xid, SASL_REPLY_ZXID, reply(Some(token)), received)
            }
            SaslOutcome::Done { token, id } => {
                tracing::info!(%peer, session = format_args!("{session_id:#x}"), id, "SASL authentication succeeded");
                let mut ids = vec![Id::new("sasl", &id)];
                if self.cfg.auth.super_users.contains(&id) {
                    tracing::info!(%peer, id, "the SASL user is the super user");
                    ids.push(Id::new("super", ""));
                }
                self.add_ids(conn, ids);
                self.finish(conn, xid, SASL_REPLY_ZXID, reply(token), received);
            }
            SaslOutcome::Off => {
                tracing::warn!(%peer, "a client asked for SASL, but this server has no JAAS server section");
                let none = Ok(Response::Sasl(None));
                self.finish(conn, xid, SASL_REPLY_ZXID, none, received);
            }
            SaslOutcome::Failed(why) => {
                self.stats.auth_refused += 1;
                let auth = &self.cfg.auth;
                if auth.allow_sasl_failed && !auth.sasl_required() {
                    tracing::warn!(%peer, %why, "SASL authentication failed; keeping the connection (allowSaslFailedClients)");
                    let none = Ok(Response::Sasl(None));
                    self.finish(conn, xid, SASL_REPLY_ZXID, none, received);
                } else {
                    let code = if auth.sasl_required() {
                        ErrorCode::SessionClosedRequireSaslAuth
                    } else {
                        ErrorCode::AuthFailed
                    };
                    tracing::warn!(%peer, %why, "SASL authentication failed; closing the connection");
                    self.refuse_sasl_step(conn, xid, code, received);
                    return self.close_after_refusal(conn);
                }
            }
        }
        self.drain(conn);
    }

    /// A failed step's answer as ZooKeeper writes it: the error, and a null token after it
    /// (Java's client reads that body even with an error, and without it reports the
    /// connection lost rather than AuthFailed).
    fn refuse_sasl_step(&mut self, conn: ConnId, xid: i32, code: ErrorCode, received: Instant) {
        let header = ReplyHeader {
            xid,
            zxid: SASL_REPLY_ZXID,
            err: code.code(),
        };
        let mut frame = Vec::new();
        encode_frame(&header, |out| None::<Bytes>.encode(out), &mut frame);
        self.stats
            .record_latency(self.now.saturating_duration_since(received));
        self.answered(conn);
        self.send(conn, Bytes::from(frame));
    }

    /// Adds identities to a connection's, once each.
    pub(super) fn add_ids(&mut self, conn: ConnId, ids: Vec<Id>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            for id in ids {
                if !c.auth.contains(&id) {
                    c.auth.push(id);
                }
            }
        }
    }

    /// Refuses a request from a session that has not authenticated with a required scheme
    /// (`enforce.auth.schemes`): SessionClosedRequireSaslAuth, and the connection is closed.
    /// Returns whether it was refused.
    pub(super) fn refused_unauthenticated(
        &mut self,
        conn: ConnId,
        xid: i32,
        request: &Request,
        received: Instant,
    ) -> bool {
        if matches!(request, Request::Auth(_) | Request::Sasl(_)) {
            return false;
        }
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        if self
            .cfg
            .auth
            .admits(c.auth.iter().map(|id| id.scheme.as_str()))
        {
            return false;
        }
        let schemes: Vec<&str> = c.auth.iter().map(|id| id.scheme.as_str()).collect();
        tracing::warn!(
            peer = %c.peer,
            has = ?schemes,
            required = ?self.cfg.auth.required_schemes,
            "a session that has not authenticated with a required scheme made a request; closing it"
        );
        self.stats.auth_refused += 1;
        let code = Err(ErrorCode::SessionClosedRequireSaslAuth);
        self.finish(conn, xid, SASL_REPLY_ZXID, code, received);
        self.close_after_refusal(conn);
        true
    }

    /// Closes a connection after its refusal is written, giving the client a moment (as a
    /// closed session's connection gets) to read it and hang up itself: a Java client that
    /// sees the close first reports Disconnected instead of AuthFailed.
    fn close_after_refusal(&mut self, conn: ConnId) {
        self.session_closed(conn);
    }
}
