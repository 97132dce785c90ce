//! What goes into the core and what comes out of it.
//!
//! The core is a state machine: [`Input`]s go in with the time they happen at, [`Effect`]s come
//! out, and the driver (`driver.rs`) carries them out: it writes to connections' outboxes,
//! proposes to the replicated log, asks the leader questions and feeds the answers back as
//! inputs. What the core reads of the replicated log's live state (its term, its lease) it
//! reads through [`Quorum`], which tests implement with plain values.

use crate::budget::ConnBudget;
use crate::watch::ConnId;
use bytes::Bytes;
use corral_proto::frame::Handshake;
use corral_proto::{DecodeError, ErrorCode, Request, Response};
use corral_replication::{
    AppliedMark, Applying, LeaseTimes, LogStopped, Membership, ReconfigRefused, Role, Touched,
};
use corral_tree::DataTree;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What a connection's writer is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Bytes),
    /// A reply, encoded by the connection's own task: serializing large replies (a getChildren
    /// of thousands of names, big data) then runs beside the core instead of in it.
    Reply {
        xid: i32,
        zxid: i64,
        result: Result<Response, ErrorCode>,
    },
    /// A connect response: not a reply to a request, not counted against the budget.
    Handshake(Bytes),
    /// Flush what was queued, then close the connection.
    Close,
    /// The session was closed at the client's request: flush the reply, then close once the
    /// client has (it does as soon as it reads the reply), or after a grace period. A server
    /// that closes first races the client's own close, and ZooKeeper's Java client then logs an
    /// EndOfStreamException warning.
    SessionClosed,
}

impl Outgoing {
    /// Whether the connection is done once this is written.
    pub fn closes(&self) -> bool {
        matches!(self, Outgoing::Close | Outgoing::SessionClosed)
    }
}

/// A new connection: who it is, its connect request, and what it holds against its limits.
#[derive(Debug)]
pub struct Incoming {
    pub conn: ConnId,
    pub peer: SocketAddr,
    pub handshake: Handshake,
    pub budget: Arc<ConnBudget>,
    /// Who the connection proved to be before its first request: its TLS certificate's
    /// `x509` identity (and `super`), or nothing.
    pub identities: Vec<corral_proto::records::Id>,
}

/// A client's `sync` request, waiting for the leader's read index.
#[derive(Debug)]
pub struct SyncRequest {
    pub conn: ConnId,
    pub xid: i32,
    pub path: String,
    pub received: Instant,
}

/// A client's SASL token, for the driver to run the mechanism on.
#[derive(Debug)]
pub struct SaslStep {
    pub conn: ConnId,
    pub xid: i32,
    pub token: Bytes,
    pub received: Instant,
}

/// Something that happened, for the core to act on.
pub enum Input {
    Connect(Incoming),
    Packet {
        conn: ConnId,
        xid: i32,
        op: i32,
        /// The request's frame length, held against the connection's budget until answered.
        size: u32,
        request: Result<Request, DecodeError>,
        received: Instant,
    },
    Closed {
        conn: ConnId,
    },
    /// A connection the core held back (its replies were over budget) has drained.
    Resume {
        conn: ConnId,
    },
    /// A graceful stop: take no new requests, answer the writes in flight, then
    /// [`Effect::Drained`].
    Drain,
    /// The leader's read index for a reconnect naming a session this member did not know.
    ConnectIndex {
        incoming: Incoming,
        index: Option<u64>,
    },
    /// A touch round's outcome, on a follower or observer.
    Touched {
        touched: Touched,
        /// The sessions the round reported, each with when it was last heard from.
        sessions: Vec<(i64, Instant)>,
    },
    /// The leader's answer to a reconnect this (not leading) member asked it to revalidate.
    Revalidated {
        incoming: Incoming,
        touched: Touched,
    },
    /// The leader's read index for a `sync` (none: no leader could be asked).
    SyncIndex {
        sync: SyncRequest,
        index: Option<u64>,
    },
    /// `crst` (the connections' counters) or `srst` (the server's).
    ResetStats {
        connections: bool,
    },
    /// Committed log entries, in order.
    Apply(Vec<Applying>),
    /// A snapshot from the leader replaces the tree.
    Install {
        tree: Box<DataTree>,
        mark: AppliedMark,
    },
    /// A snapshot of the tree is being taken (for `lsnp`).
    SnapshotTaken,
    /// Proposals no leader took: nothing was appended, so nothing is applied later.
    Lost {
        seqs: Vec<u64>,
    },
    /// The replicated log stopped taking writes.
    Stopped {
        why: LogStopped,
    },
    Role {
        role: Role,
        leader: Option<u64>,
        term: u64,
    },
    /// The replicated membership changed ([`Quorum::membership`]).
    Membership,
    /// The replicated log's answer to [`Effect::Reconfigure`].
    Reconfigured {
        call: super::ReconfigCall,
        outcome: Result<(), ReconfigRefused>,
    },
    /// What a SASL step ([`Effect::Sasl`]) came to.
    Sasl {
        step: SaslStep,
        outcome: crate::auth::SaslOutcome,
    },
    /// The periodic tick: expiries, reaping, timeouts.
    Tick,
    /// The time [`super::Core::next_alarm`] named has come.
    Alarm,
}

/// What the core asks the driver to do, in order.
#[derive(Debug)]
pub enum Effect {
    /// Put this on a connection's outbox (after [`Outgoing::closes`], forget the outbox).
    Send {
        conn: ConnId,
        item: Outgoing,
    },
    /// Append this framed proposal to the replicated log (if the log refuses it, feed back
    /// [`Input::Stopped`]).
    Propose(Bytes),
    TriggerSnapshot,
    /// Ask the leader to renew these sessions (and this member's lease): [`Input::Touched`].
    Touch {
        sessions: Vec<(i64, Instant)>,
        /// The same sessions with how long ago each was heard from (ms).
        ages: Vec<(i64, u32)>,
    },
    /// Ask the leader whether the session of this reconnect is alive: [`Input::Revalidated`].
    Revalidate(Incoming),
    /// Ask the leader's read index for this reconnect: [`Input::ConnectIndex`].
    ConnectIndex(Incoming),
    /// Ask the leader's read index for this `sync`: [`Input::SyncIndex`].
    SyncIndex(SyncRequest),
    /// Run a step of the connection's SASL exchange: [`Input::Sasl`].
    Sasl(SaslStep),
    /// Move the ensemble to this membership: [`Input::Reconfigured`].
    Reconfigure(super::ReconfigCall),
    /// Whether this member serves clients changed.
    Serving(bool),
    /// A graceful stop found nothing of this member's left in flight.
    Drained,
}

/// What the core reads of the replicated log's live state.
pub trait Quorum: Send {
    fn id(&self) -> u64;
    /// The current Raft term, which a new proposal is stamped with.
    fn term(&self) -> u64;
    /// Until when this member's lease lets it serve, if it holds one at `now`.
    fn serving_until(&self, now: Instant) -> Option<Instant>;
    /// When a quorum last acknowledged this member as leader.
    fn quorum_acked(&self, now: Instant) -> Option<Instant>;
    fn lease_times(&self) -> LeaseTimes;
    /// The ensemble's membership, as the replicated log has it.
    fn membership(&self) -> Arc<Membership>;
    /// A server configured standalone (no `server.N` lines), which cannot be reconfigured.
    fn standalone(&self) -> bool;
    /// This member, leading, is changing the membership: what it is meanwhile is not final.
    fn reconfiguring(&self) -> bool;
}
