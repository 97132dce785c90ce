//! The core: the one task that owns the data tree, the live sessions and the watches.
//!
//! Connections decode frames and hand requests here in arrival order; the core answers each one
//! by putting frames on that connection's outbox. Because one task does all of it, per-session
//! FIFO holds by construction, and a watch event is queued on a connection before the reply to
//! any later request that could observe the change that fired it.
//!
//! A write becomes a [`Proposal`] tagged with this server's id and a sequence number, and goes to
//! the replicated log. Every member applies every committed batch in order (`ToCore::Apply`),
//! giving each proposal the next zxid; the member that proposed it answers its client then.
//! Meanwhile a connection's later reads wait in its queue (they must see its own writes); its
//! later writes are proposed at once, so a pipelining client fills a batch.
//!
//! Time is stamped by the leader into each batch; session expiry is decided by the leader only,
//! from liveness the other members report; `apply` itself reads no clock.

use crate::budget::{ConnBudget, Global};
use crate::config::ServerConfig;
use crate::read_only::{self, ReadOnly};
use crate::serving::{self, Change, Serving};
use crate::session::{self, SessionIds};
use crate::stats::{ConnStats, ServerStats};
use crate::watch::{ConnId, WatchKind, WatchManager, WatcherType};
use bytes::Bytes;
use corral_proto::codes::{add_watch_mode, keeper_state, perms, xid};
use corral_proto::frame::{connect_response_frame, Handshake};
use corral_proto::message::encode_frame;
use corral_proto::records::*;
use corral_proto::{DecodeError, ErrorCode, EventType, MultiResult, OpCode, Request, Response};
use corral_replication::{AppliedMark, Applying, ReplicaHandle, Role, ToCore, Touched};
use corral_tree::{acl, DataTree, Entry, Proposal, Txn};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

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

pub type Outbox = mpsc::UnboundedSender<Outgoing>;

/// How long a proposal may wait for its entry before its client is told the connection is lost.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest interval between a follower's touch rounds (a quarter tick when shorter).
const TOUCH_EVERY_MAX_MS: u64 = 100;

/// Messages from connections (and the core's own helper tasks) to the core.
pub enum CoreMsg {
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
    FourLetter {
        word: String,
        /// The asking connection, which ZooKeeper lists among the connections in stat and cons.
        peer: SocketAddr,
        reply: oneshot::Sender<String>,
    },
    /// A question from the admin HTTP server.
    Admin {
        query: crate::admin::AdminQuery,
        reply: oneshot::Sender<crate::admin::AdminReply>,
    },
    /// A graceful stop: take no new requests, answer the writes in flight, then report.
    Drain {
        done: oneshot::Sender<()>,
    },
    /// The leader's read index for a reconnect naming a session this member did not know.
    ConnectIndex {
        incoming: Incoming,
        index: Option<u64>,
    },
    /// A connection the core held back (its replies were over budget) has drained.
    Resume {
        conn: ConnId,
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
        conn: ConnId,
        xid: i32,
        path: String,
        received: Instant,
        index: Option<u64>,
    },
}

/// A new connection: who it is, its connect request, and where its answers go.
pub struct Incoming {
    pub conn: ConnId,
    pub peer: SocketAddr,
    pub handshake: Handshake,
    pub out: Outbox,
    pub budget: Arc<ConnBudget>,
}

impl Incoming {
    /// Closes the connection unanswered (the client tries another server).
    fn refuse(self) {
        let _ = self.out.send(Outgoing::Close);
    }

    /// Answers "expired" (a session gone, or a wrong password), then closes.
    fn expired(self) {
        let read_only = self.handshake.read_only.map(|_| false);
        let _ = self.out.send(Outgoing::Handshake(expired_frame(read_only)));
        let _ = self.out.send(Outgoing::Close);
    }
}

struct LiveSession {
    timeout_ms: i32,
    /// When the leader expires it unless heard from: last heard plus the timeout.
    deadline: Instant,
    conn: Option<ConnId>,
    /// While this member does not lead: how long the leader is known to keep the session alive
    /// (from granted touch rounds). Its connection here is closed before then.
    confirmed: Option<Instant>,
}

impl LiveSession {
    fn new(timeout_ms: i32, heard: Instant, conn: Option<ConnId>) -> Self {
        LiveSession {
            timeout_ms,
            deadline: heard + Duration::from_millis(timeout_ms.max(0) as u64),
            conn,
            confirmed: None,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(0) as u64)
    }

    fn heard(&self) -> Instant {
        self.deadline - self.timeout()
    }
}

/// A request held back until the connection's earlier writes are applied.
struct Queued {
    xid: i32,
    op: i32,
    request: Result<Request, DecodeError>,
    received: Instant,
    /// For a read or sync: the connection's writes it must see (its `writes_seen` when it came).
    after: u64,
}

impl Conn {
    /// Its writes proposed and not yet applied or refused.
    fn proposals_in_flight(&self) -> usize {
        self.in_flight.saturating_sub(self.syncs_in_flight)
    }

    /// `creating`: the session's creation is still to be applied; nothing may be answered
    /// before its connect response (the creation counts as a write the connection's reads and
    /// auth replies wait for).
    fn new(
        session_id: i64,
        inc: &Incoming,
        timeout_ms: i32,
        read_only: bool,
        creating: bool,
    ) -> Self {
        Conn {
            session_id,
            out: inc.out.clone(),
            budget: inc.budget.clone(),
            request_sizes: VecDeque::new(),
            stalled: (0, None),
            auth: vec![Id::new("ip", &inc.peer.ip().to_string())],
            peer: inc.peer,
            stats: ConnStats::new(),
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
    fn is_write(&self) -> bool {
        matches!(&self.request, Ok(r) if r.is_write())
    }
}

pub(crate) struct Conn {
    pub session_id: i64,
    pub out: Outbox,
    /// What the connection holds against its limits, shared with its reader and writer.
    budget: Arc<ConnBudget>,
    /// The frame lengths of its requests not yet answered, oldest first: replies go out in
    /// request order, so an answer releases the front one.
    request_sizes: VecDeque<u32>,
    /// Bytes its socket had taken at the last check, and since when that has not changed while
    /// replies were queued.
    stalled: (u64, Option<Instant>),
    pub auth: Vec<Id>,
    pub peer: SocketAddr,
    pub stats: ConnStats,
    pub timeout_ms: i32,
    /// A read-only session (read-only mode): local to this member, writes refused.
    pub read_only: bool,
    in_flight: usize,
    /// Writes received on this connection, and how many of them are applied or refused. A read
    /// may be answered once every write before it is resolved: right after the apply of the last
    /// of them, before the next entry, so it never sees the connection's later writes.
    writes_seen: u64,
    writes_resolved: u64,
    /// `sync`s not yet answered: until they are, nothing after them may be answered either.
    syncs_in_flight: usize,
    /// The term its writes in flight are stamped with (see `Core::propose`).
    write_stamp: u64,
    queued: VecDeque<Queued>,
}

/// Who waits for a proposal of this server.
enum Origin {
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
}

impl Origin {
    fn conn(&self) -> Option<ConnId> {
        match self {
            Origin::Nobody => None,
            Origin::Reply { conn, .. }
            | Origin::Connect { conn, .. }
            | Origin::Close { conn, .. } => Some(*conn),
        }
    }
}

/// A proposal of this member waiting for its entry.
struct Pending {
    origin: Origin,
    /// The term its one live copy is stamped with: a copy stamped otherwise is skipped by apply.
    /// `None` once its fate is unknown here (a snapshot installed over it may already hold it):
    /// it is answered if applied, never proposed again.
    term: Option<u64>,
    /// Its encoding, to propose it again under a newer term once the term it was stamped with
    /// is known to have lost it.
    framed: Bytes,
}

/// A reconnect waiting until this member has applied the leader's read index, to decide whether
/// the session it names exists.
struct ConnectWait {
    index: u64,
    incoming: Incoming,
}

/// A `sync` waiting for this member to apply the leader's read index.
struct SyncWait {
    index: u64,
    conn: ConnId,
    xid: i32,
    path: String,
    received: Instant,
}

pub struct Core {
    pub(crate) cfg: Arc<ServerConfig>,
    pub(crate) tree: DataTree,
    mark: AppliedMark,
    pub(crate) watches: WatchManager,
    sessions: HashMap<i64, LiveSession>,
    /// Sessions whose close is proposed but not yet applied.
    closing: HashSet<i64>,
    /// Sessions with traffic here since the last report to the leader.
    active: HashSet<i64>,
    pub(crate) conns: HashMap<ConnId, Conn>,
    ids: SessionIds,
    pub(crate) stats: ServerStats,
    next_reap: Instant,
    pub(crate) replica: ReplicaHandle,
    pub(crate) role: Role,
    leader: Option<u64>,
    /// The Raft term this member last saw (0 before the first report).
    term: u64,
    /// This member's proposals not yet applied, by sequence number (ordered, so refusals go out
    /// in request order).
    pending: BTreeMap<u64, Pending>,
    /// When each of `pending` was proposed, oldest first, to time out proposals lost on the way.
    proposed_at: VecDeque<(u64, Instant)>,
    next_seq: u64,
    refusing_writes: bool,
    applied_since_snapshot: u64,
    syncs: Vec<SyncWait>,
    reconnects: Vec<ConnectWait>,
    inbox: mpsc::Sender<CoreMsg>,
    /// Set by a graceful stop: reported once no proposal of this member is pending.
    draining: Option<oneshot::Sender<()>>,
    /// Since when this member has known no leader (for the `election_time` metric).
    leaderless_since: Option<Instant>,
    /// Since when this member has led (for the `leader_uptime` metric).
    pub(crate) leading_since: Option<Instant>,
    /// The zxid and time (seconds since the epoch) of the last snapshot started here.
    last_snapshot: (i64, i64),
    /// Whether this member may serve clients now (see `serving`).
    pub(crate) serving: Serving,
    /// Read-only mode, while this member does not serve (see `read_only`).
    pub(crate) read_only: ReadOnly,
    /// Tells whoever listens (the server's start-up) whether this member serves.
    serving_tx: tokio::sync::watch::Sender<bool>,
    /// What all connections hold against the limits, and how often the limits were reached.
    pub(crate) limits: Arc<Global>,
    /// A touch round is on its way to the leader.
    touching: bool,
    next_touch: Instant,
    /// How often a follower or observer sends a touch round and checks its sessions.
    touch_every: Duration,
}
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn reply_frame(xid: i32, zxid: i64, result: &Result<Response, ErrorCode>) -> Bytes {
    let mut out = Vec::with_capacity(64);
    encode_reply(xid, zxid, result, &mut out);
    Bytes::from(out)
}

/// The bytes a reply takes in a connection's queue: what [`encode_reply`] writes for it.
pub(crate) fn reply_len(result: &Result<Response, ErrorCode>) -> usize {
    const FRAME_AND_HEADER: usize = 4 + 16;
    FRAME_AND_HEADER + result.as_ref().map_or(0, Response::encoded_len)
}

/// Appends a framed reply: header, then the body when the request succeeded.
pub(crate) fn encode_reply(
    xid: i32,
    zxid: i64,
    result: &Result<Response, ErrorCode>,
    out: &mut Vec<u8>,
) {
    let err = match result {
        Ok(_) => 0,
        Err(e) => e.code(),
    };
    encode_frame(
        &ReplyHeader { xid, zxid, err },
        |o| {
            if let Ok(resp) = result {
                resp.encode(o)
            }
        },
        out,
    );
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
fn expired_frame(read_only: Option<bool>) -> Bytes {
    let resp = ConnectResponse {
        protocol_version: 0,
        time_out: 0,
        session_id: 0,
        passwd: Bytes::from_static(&[0; 16]),
    };
    Bytes::from(connect_response_frame(&resp, read_only))
}

/// The zxid of an event that no change fired.
const NO_ZXID: i64 = -1;

/// A watch event. Its header carries the zxid of the change that fired it, as ZooKeeper 3.9
/// sends it (ZOOKEEPER-4655); -1 (3.8's value everywhere) for events with no such change, such
/// as those replayed for a reconnecting client's setWatches.
fn notification_frame(path: &str, kind: EventType, zxid: i64) -> Bytes {
    let mut out = Vec::with_capacity(32 + path.len());
    let header = ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid,
        err: 0,
    };
    let event = WatcherEvent {
        event_type: kind as i32,
        state: keeper_state::SYNC_CONNECTED,
        path: path.to_owned(),
    };
    encode_frame(&header, |o| corral_proto::Jute::encode(&event, o), &mut out);
    Bytes::from(out)
}

impl Core {
    pub fn new(
        cfg: Arc<ServerConfig>,
        tree: DataTree,
        mark: AppliedMark,
        replica: ReplicaHandle,
        inbox: mpsc::Sender<CoreMsg>,
        limits: Arc<Global>,
    ) -> Self {
        let reap_every = Duration::from_millis(cfg.container_check_interval_ms);
        let now = Instant::now();
        let sessions = tree
            .sessions()
            .map(|(id, timeout_ms)| (id, LiveSession::new(timeout_ms, now, None)))
            .collect();
        let touch_every =
            Duration::from_millis((cfg.tick_time_ms as u64 / 4).clamp(10, TOUCH_EVERY_MAX_MS));
        let server_id = replica.id().min(255) as u8;
        let read_only = ReadOnly::new(
            cfg.read_only_mode,
            Duration::from_millis(cfg.tick_time_ms.into()),
            now,
        );
        Core {
            cfg,
            tree,
            mark,
            watches: WatchManager::default(),
            sessions,
            closing: HashSet::new(),
            active: HashSet::new(),
            conns: HashMap::new(),
            ids: SessionIds::new(server_id, now_ms()),
            stats: ServerStats::new(),
            next_reap: now + reap_every,
            replica,
            role: Role::Looking,
            leader: None,
            term: 0,
            pending: BTreeMap::new(),
            proposed_at: VecDeque::new(),
            // Unique across restarts: entries a previous run proposed may still be applied after
            // this one starts, and must not be taken for this run's.
            next_seq: (now_ms() as u64) << 20,
            refusing_writes: false,
            applied_since_snapshot: 0,
            syncs: Vec::new(),
            reconnects: Vec::new(),
            inbox,
            draining: None,
            leaderless_since: Some(Instant::now()),
            leading_since: None,
            last_snapshot: (0, now_ms() / 1000),
            serving: Serving::new(),
            read_only,
            serving_tx: tokio::sync::watch::Sender::new(false),
            limits,
            touching: false,
            next_touch: now,
            touch_every,
        }
    }

    /// Follows whether this member serves clients.
    pub fn serving_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.serving_tx.subscribe()
    }

    /// Runs until `shutdown` fires.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<CoreMsg>,
        mut replication: mpsc::Receiver<ToCore>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        let tick = Duration::from_millis((self.cfg.tick_time_ms as u64 / 2).clamp(10, 500));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Wakes the core when its lease ends or a touch round is due.
        let mut alarm = Box::pin(tokio::time::sleep_until(self.next_alarm().into()));
        loop {
            let wake = self.next_alarm();
            if alarm.deadline() != wake.into() {
                alarm.as_mut().reset(wake.into());
            }
            tokio::select! {
                msg = replication.recv() => match msg {
                    Some(msg) => self.replicated(msg),
                    None => self.stop_writes("the replicated log has stopped"),
                },
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = ticker.tick() => self.tick(Instant::now()),
                _ = &mut alarm => self.alarm(Instant::now()),
                _ = &mut shutdown => break,
            }
        }
        for conn in self.conns.values() {
            let _ = conn.out.send(Outgoing::Close);
        }
    }

    pub fn handle(&mut self, msg: CoreMsg) {
        // Before anything is answered: a member that wakes from a long pause (SIGSTOP, a
        // stalled VM) past its lease must not answer a single request first.
        self.check_serving(Instant::now());
        match msg {
            CoreMsg::Connect(incoming) => self.connect(incoming, false),
            CoreMsg::ConnectIndex { incoming, index } => match index {
                Some(index) => {
                    self.reconnects.push(ConnectWait { index, incoming });
                    self.finish_syncs();
                }
                // No leader could say: the client tries another server, as after a lost
                // connection, rather than being told its session is gone.
                None => incoming.refuse(),
            },
            CoreMsg::Resume { conn } => self.drain(conn),
            CoreMsg::Packet {
                conn,
                xid,
                op,
                size,
                request,
                received,
            } => {
                self.limits.taken();
                self.packet(conn, xid, op, size, request, received)
            }
            CoreMsg::Closed { conn } => self.connection_closed(conn),
            CoreMsg::Drain { done } => {
                tracing::info!(
                    pending = self.pending.len(),
                    "stopping: answering the writes in flight"
                );
                self.draining = Some(done);
                self.check_drained();
            }
            CoreMsg::FourLetter { word, peer, reply } => {
                let _ = reply.send(self.four_letter(&word, peer));
            }
            CoreMsg::Admin { query, reply } => {
                let _ = reply.send(self.admin(query));
            }
            CoreMsg::Touched { touched, sessions } => self.touched(touched, sessions),
            CoreMsg::Revalidated { incoming, touched } => self.revalidated(incoming, touched),
            CoreMsg::SyncIndex {
                conn,
                xid,
                path,
                received,
                index,
            } => match index {
                Some(index) => {
                    self.syncs.push(SyncWait {
                        index,
                        conn,
                        xid,
                        path,
                        received,
                    });
                    self.finish_syncs();
                }
                None => {
                    // No leader to ask: the client learns of it as a lost connection.
                    tracing::warn!("sync: no leader answered; closing the connection");
                    self.close_connection(conn);
                }
            },
        }
    }

    /// What the replicated log asks of the core.
    fn replicated(&mut self, msg: ToCore) {
        // As for client messages: a member woken past its lease stops before it answers
        // anything, applied writes' replies included.
        self.check_serving(Instant::now());
        match msg {
            ToCore::Apply { entries, done } => {
                for applying in entries {
                    self.apply_entry(applying);
                }
                let _ = done.send(());
                self.finish_syncs();
                self.check_drained();
            }
            ToCore::Snapshot { take, reply } => {
                let started = Instant::now();
                self.last_snapshot = (self.tree.last_zxid(), now_ms() / 1000);
                let _ = reply.send(take.start(&self.tree, &self.mark));
                tracing::debug!(pause = ?started.elapsed(), "snapshot started");
            }
            ToCore::Install { tree, mark, done } => {
                tracing::info!(
                    zxid = format_args!("{:#x}", tree.last_zxid()),
                    "installing a snapshot from the leader"
                );
                self.tree = *tree;
                self.mark = mark;
                // The snapshot may hold some of this member's proposals, applied without it
                // seeing them: none of them may be proposed again.
                for p in self.pending.values_mut() {
                    p.term = None;
                }
                self.resync_sessions();
                let _ = done.send(());
                self.finish_syncs();
            }
            ToCore::AppliedState { reply } => {
                let _ = reply.send(self.mark.clone());
            }
            ToCore::Touch { sessions, reply } => {
                let _ = reply.send(self.touch_sessions(Instant::now(), sessions));
            }
            ToCore::Lost { seqs } => {
                // No leader took them: the client learns of it as a lost connection, as from
                // ZooKeeper without a leader (nothing was appended, so nothing is applied later).
                for seq in seqs {
                    if let Some(conn) = self.pending.remove(&seq).and_then(|p| p.origin.conn()) {
                        self.close_connection(conn);
                    }
                }
                // A lost expiry must be decided again.
                self.closing.clear();
            }
            ToCore::Stopped { why } => self.stop_writes(&why),
            ToCore::Role { role, leader, term } => {
                self.role_changed(role, leader, term);
                self.check_serving(Instant::now());
            }
        }
    }

    fn role_changed(&mut self, role: Role, leader: Option<u64>, term: u64) {
        tracing::info!(mode = role.zk_mode(), ?leader, "role");
        let now = Instant::now();
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
            self.leading_since = role.leads().then(Instant::now);
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
    fn check_serving(&mut self, now: Instant) {
        let knows_leader = self.leader.is_some();
        let replica = &self.replica;
        match self
            .serving
            .check(now, knows_leader, || replica.serving_until(now))
        {
            Change::Same => {}
            Change::Started => {
                tracing::info!(mode = self.role.zk_mode(), "serving clients");
                self.serving_tx.send_replace(true);
            }
            Change::Stopped => {
                self.serving_tx.send_replace(false);
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

    /// Whether status requests get real answers: while serving, and in read-only mode.
    pub(crate) fn answers_status(&self) -> bool {
        self.serving.is_serving() || self.read_only.is_active()
    }

    /// The lease ran out: every client is disconnected, so that it knows its session (and
    /// whatever lock it holds) may be gone, and tries another member.
    fn stopped_serving(&mut self) {
        tracing::warn!(
            connections = self.conns.len(),
            lease_ms = self.replica.lease_times().serve.as_millis() as u64,
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
            w.incoming.refuse();
        }
        self.syncs.clear();
    }

    /// When the core must wake up on its own: its lease ends, a touch round is due, or
    /// read-only mode starts.
    fn next_alarm(&self) -> Instant {
        [self.serving.until(), self.read_only.starts_at()]
            .into_iter()
            .flatten()
            .fold(self.next_touch, Instant::min)
    }

    fn alarm(&mut self, now: Instant) {
        self.check_serving(now);
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
    fn touch_round(&mut self, now: Instant) {
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
        let replica = self.replica.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let touched = replica.touch(ages).await;
            let _ = inbox.send(CoreMsg::Touched { touched, sessions }).await;
        });
    }

    /// A touch round came back: a grant confirms the reported sessions until a timeout after
    /// they were heard from; otherwise they are reported again next round.
    fn touched(&mut self, touched: Touched, sessions: Vec<(i64, Instant)>) {
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
    fn touch_sessions(&mut self, now: Instant, sessions: Vec<(i64, u32)>) -> Vec<i64> {
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
    fn close_unconfirmed(&mut self, now: Instant) {
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
    fn confirm_after_leading(&mut self, now: Instant) {
        let exclusive = self.replica.lease_times().exclusive;
        let safe_from = self.replica.quorum_acked(now).map(|q| q + exclusive);
        for s in self.sessions.values_mut() {
            s.confirmed = Some(match safe_from {
                Some(from) => s.deadline.min(from + s.timeout()),
                None => now,
            });
        }
    }

    fn note_leader(&mut self, leader: Option<u64>) {
        match (leader, self.leaderless_since) {
            (Some(_), Some(since)) => {
                self.stats.election_time.record(since.elapsed());
                self.leaderless_since = None;
            }
            (None, None) => {
                self.stats.looking_count += 1;
                self.leaderless_since = Some(Instant::now());
            }
            _ => {}
        }
        self.leader = leader;
    }

    /// During a graceful stop: done once nothing this member proposed is waiting, or at once
    /// when it does not serve (the clients of its writes in flight were already disconnected).
    fn check_drained(&mut self) {
        if self.pending.is_empty() || !self.serving.is_serving() {
            if let Some(done) = self.draining.take() {
                let _ = done.send(());
            }
        }
    }

    /// Forgets the expiries and reaps this member proposed: whoever leads decides them again.
    fn forget_expiry_decisions(&mut self) {
        self.pending
            .retain(|_, p| !matches!(p.origin, Origin::Nobody));
        self.closing.clear();
    }

    /// The first entry of `term` was applied: every entry of an older term that will ever be
    /// applied has been. A proposal still stamped with an older term has lost its copy for good
    /// (a copy stamped so is skipped in any later entry), so it is proposed again, stamped anew.
    fn new_term_applied(&mut self, term: u64) {
        let lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.term.is_some_and(|t| t < term))
            .map(|(seq, _)| *seq)
            .collect();
        let now_term = self.replica.term().max(term);
        for seq in lost {
            self.proposal_lost(seq, now_term);
        }
    }

    /// A pending proposal's live copy is known never to be applied. A client's write whose
    /// connection is still open is proposed again under `term`; anything else is forgotten
    /// (an expiry is decided again; a client told its connection was lost must not have the
    /// write applied later).
    fn proposal_lost(&mut self, seq: u64, term: u64) {
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
            if !self.replica.propose(framed.clone()) {
                return self.stop_writes("the replicated log has stopped");
            }
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

    /// After a snapshot replaced the tree: sessions follow the tree, except those whose creation
    /// this member has proposed and not yet seen applied (the snapshot may predate it).
    fn resync_sessions(&mut self) {
        let now = Instant::now();
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

    /// Stamps and proposes one write: the only place proposals are made.
    fn propose(&mut self, session_id: i64, auth: Vec<Id>, txn: Txn, origin: Origin) {
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
            _ => self.replica.term(),
        };
        let proposal = Proposal {
            origin_server: self.replica.id(),
            origin_seq: seq,
            term,
            session_id,
            auth,
            txn,
        };
        let framed = Bytes::from(proposal.to_framed_bytes());
        if !self.replica.propose(framed.clone()) {
            self.stop_writes("the replicated log has stopped");
            return self.refuse(origin);
        }
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
        self.proposed_at.push_back((seq, Instant::now()));
    }

    /// Answers a write that cannot be made durable.
    fn refuse(&mut self, origin: Origin) {
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
        }
    }

    fn stop_writes(&mut self, why: &str) {
        if self.refusing_writes {
            return;
        }
        tracing::error!(%why, "refusing writes until restart; reads go on");
        self.refusing_writes = true;
        for (_, p) in std::mem::take(&mut self.pending) {
            if let Some(c) = p.origin.conn().and_then(|c| self.conns.get_mut(&c)) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            self.refuse(p.origin);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.drain(conn);
        }
    }

    /// Applies one committed log entry: each proposal of its batch gets the next zxid.
    fn apply_entry(&mut self, applying: Applying) {
        let entry_term = applying.mark.term();
        if entry_term > self.mark.term() {
            self.new_term_applied(entry_term);
        }
        if let Some(batch) = applying.batch {
            for proposal in batch.proposals {
                let mine = proposal.origin_server == self.replica.id();
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
                        self.proposal_lost(seq, self.replica.term().max(entry_term));
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

    fn apply(&mut self, entry: Entry, origin: Origin) {
        let created = match &entry.txn {
            Txn::CreateSession { timeout_ms } => Some((entry.session_id, *timeout_ms)),
            _ => None,
        };
        let applied = self.tree.apply(&entry);
        if let Some((id, timeout_ms)) = created {
            // Known everywhere, so the leader can expire it whichever member it is on.
            self.sessions
                .entry(id)
                .or_insert_with(|| LiveSession::new(timeout_ms, Instant::now(), None));
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
            Origin::Reply {
                conn,
                xid,
                received,
            } => {
                self.stats.update_latency.record(received.elapsed());
                self.finish(conn, xid, applied.zxid, applied.result, received)
            }
            Origin::Connect { conn, frame } => {
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.out.send(Outgoing::Handshake(frame));
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
        self.applied_since_snapshot += 1;
        if self.applied_since_snapshot >= self.cfg.snap_count {
            self.applied_since_snapshot = 0;
            self.replica.trigger_snapshot();
        }
    }

    /// Answers the `sync`s, and decides the reconnects, whose read index this member has now
    /// applied.
    fn finish_syncs(&mut self) {
        let applied = self.mark.index();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reconnects)
            .into_iter()
            .partition(|w| w.index <= applied);
        self.reconnects = waiting;
        for w in ready {
            self.connect(w.incoming, true);
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.syncs)
            .into_iter()
            .partition(|s| s.index <= applied);
        self.syncs = waiting;
        for s in ready {
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

    /// Queues a frame (a notification, an auth reply) for a connection.
    fn send(&mut self, conn: ConnId, frame: Bytes) {
        let bytes = frame.len();
        self.queue_out(conn, Outgoing::Frame(frame), bytes);
    }

    /// Queues what goes out on a connection, counted against its budget. A connection whose
    /// queue has passed its hard cap (a flood of notifications to a client that does not read)
    /// is closed at once.
    fn queue_out(&mut self, conn: ConnId, item: Outgoing, bytes: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.stats.sent += 1;
        self.stats.packets_sent += 1;
        // Counted before it is handed over: the writer may take it and write it at once, and
        // must find it counted to uncount it.
        let over_cap = c.budget.queued(bytes);
        let _ = c.out.send(item);
        if over_cap {
            self.close_slow(conn, "its queued replies passed four times the budget");
        }
    }

    /// One request of the connection is answered: its bytes stop counting against its budget.
    fn answered(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let size = c.request_sizes.pop_front().unwrap_or(0);
            c.budget.answered(size as usize);
        }
    }

    /// Closes a connection whose client does not read its replies, saying who it was.
    fn close_slow(&mut self, conn: ConnId, why: &str) {
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
    fn close_stalled(&mut self, now: Instant) {
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
    fn session_closed(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.out.send(Outgoing::SessionClosed);
        }
        self.connection_closed(conn);
    }

    fn close_connection(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.out.send(Outgoing::Close);
        }
        self.connection_closed(conn);
    }

    /// `rechecked`: this member has applied the leader's read index since the client asked, so
    /// a session it does not know is really gone.
    fn connect(&mut self, inc: Incoming, rechecked: bool) {
        let req = &inc.handshake.request;
        if req.last_zxid_seen > self.tree.last_zxid() {
            tracing::warn!(
                peer = %inc.peer,
                client_zxid = format_args!("{:#x}", req.last_zxid_seen),
                our_zxid = format_args!("{:#x}", self.tree.last_zxid()),
                "refusing session: the client has seen a later zxid than this server"
            );
            return inc.refuse();
        }
        if !self.serving.is_serving() {
            if self.read_only.is_active() && inc.handshake.read_only == Some(true) {
                return self.connect_read_only(inc);
            }
            // As ZooKeeper's member without a quorum: the connection closes unanswered, and the
            // client tries another server.
            tracing::debug!(peer = %inc.peer, "not serving: closing a new connection");
            return inc.refuse();
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
            let replica = self.replica.clone();
            let inbox = self.inbox.clone();
            tokio::spawn(async move {
                let index = replica.read_index().await;
                let msg = CoreMsg::ConnectIndex {
                    incoming: inc,
                    index,
                };
                let _ = inbox.send(msg).await;
            });
            return;
        }
        if !known || !password_ok {
            tracing::info!(peer = %inc.peer, session = format_args!("{id:#x}"), "session expired or password wrong");
            return inc.expired();
        }
        if self.role.leads() {
            return self.resume_session(inc, None);
        }
        // As ZooKeeper's Learner.validateSession: only the leader can say the session is still
        // alive, and keep it so for a timeout from now. A touch round naming it asks both.
        let replica = self.replica.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let touched = replica.revalidate(id).await;
            let msg = CoreMsg::Revalidated {
                incoming: inc,
                touched,
            };
            let _ = inbox.send(msg).await;
        });
    }

    /// The leader's answer to a reconnect's revalidation.
    fn revalidated(&mut self, inc: Incoming, touched: Touched) {
        let id = inc.handshake.request.session_id;
        let alive = touched
            .answer
            .as_ref()
            .is_some_and(|a| a.granted && !a.unknown.contains(&id));
        if !alive || !self.serving.is_serving() || self.closing.contains(&id) {
            // No leader vouched for it (or it is being closed): the client tries again, here or
            // elsewhere, and learns of an expiry once this member has applied it.
            tracing::debug!(peer = %inc.peer, session = format_args!("{id:#x}"), "reconnect not revalidated; closing");
            return inc.refuse();
        }
        self.resume_session(inc, Some(touched.sent_at));
    }

    /// Registers a new connection's session; `creating`: its creation is still to be applied.
    fn attach(
        &mut self,
        inc: &Incoming,
        session_id: i64,
        timeout_ms: i32,
        read_only: bool,
        creating: bool,
    ) {
        let conn = Conn::new(session_id, inc, timeout_ms, read_only, creating);
        self.conns.insert(inc.conn, conn);
    }

    /// Attaches a known session to a new connection and answers it. `vouched_at`: when the
    /// leader's revalidation was asked (on a member that does not lead).
    fn resume_session(&mut self, inc: Incoming, vouched_at: Option<Instant>) {
        let id = inc.handshake.request.session_id;
        let timeout_ms = self.cfg.negotiate_timeout(inc.handshake.request.time_out);
        let mut session = LiveSession::new(timeout_ms, Instant::now(), Some(inc.conn));
        session.confirmed = vouched_at.map(|at| at + session.timeout());
        if let Some(old) = self.sessions.insert(id, session).and_then(|s| s.conn) {
            // Another reconnect of the same session got here first.
            self.close_connection(old);
        }
        self.active.insert(id);
        self.attach(&inc, id, timeout_ms, false, false);
        let frame = session_frame(id, timeout_ms, inc.handshake.read_only.map(|_| false));
        let _ = inc.out.send(Outgoing::Handshake(frame));
    }

    /// A client asking for read-only access while this member is in read-only mode.
    fn connect_read_only(&mut self, inc: Incoming) {
        let now = Instant::now();
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
            return inc.refuse();
        } else {
            // A read-only session of another member, or of an earlier run: gone.
            return inc.expired();
        };
        self.attach(&inc, session_id, timeout_ms, true, false);
        let frame = session_frame(session_id, timeout_ms, Some(true));
        let _ = inc.out.send(Outgoing::Handshake(frame));
    }

    fn create_session(&mut self, inc: Incoming) {
        let session_id = self.ids.next_id();
        let timeout_ms = self.cfg.negotiate_timeout(inc.handshake.request.time_out);
        let now = Instant::now();
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

    fn connection_closed(&mut self, conn: ConnId) {
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
    pub fn tick(&mut self, now: Instant) {
        while let Some(&(seq, at)) = self.proposed_at.front() {
            // Answered ones leave from the front at once; the rest when they time out.
            let answered = !self.pending.contains_key(&seq);
            if !answered && now.duration_since(at) < PROPOSAL_TIMEOUT {
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
        for conn in self.read_only.expire(now) {
            self.close_connection(conn);
        }
        self.close_stalled(now);
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
            for path in self.tree.reap_candidates(now_ms()) {
                self.propose(0, Vec::new(), Txn::Reap { path }, Origin::Nobody);
            }
        }
    }

    fn packet(
        &mut self,
        conn: ConnId,
        xid: i32,
        op: i32,
        size: u32,
        request: Result<Request, DecodeError>,
        received: Instant,
    ) {
        if self.draining.is_some() {
            // Stopping: new requests are not taken; the connection closes when the server stops.
            return;
        }
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
        if c.read_only {
            self.read_only.heard(c.session_id, Instant::now());
        } else {
            self.active.insert(c.session_id);
            if let Some(s) = self.sessions.get_mut(&c.session_id) {
                s.deadline = Instant::now() + s.timeout();
            }
        }
        // A connection's reads wait for its earlier writes. Its writes are proposed at once,
        // past reads still waiting (those are answered as soon as the writes before them are
        // applied, before any later entry), unless a sync holds the connection.
        let is_write = matches!(&request, Ok(r) if r.is_write());
        let go = if is_write {
            c.syncs_in_flight == 0 && c.queued.iter().all(|q| !q.is_write() && !is_sync(q))
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
        if !go {
            let after = c.writes_seen;
            c.queued.push_back(Queued {
                xid,
                op,
                request,
                received,
                after,
            });
            return;
        }
        self.dispatch(conn, xid, op, request, received);
    }
}

/// A queued `sync`: nothing after it may pass it.
fn is_sync(q: &Queued) -> bool {
    matches!(q.request, Ok(Request::Sync(_)))
}

impl Core {
    /// Takes held-back requests of a connection as far as its in-flight writes allow.
    fn drain(&mut self, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(front) = c.queued.front() else {
                return;
            };
            let ready = c.syncs_in_flight == 0
                && (front.is_write()
                    || (c.writes_resolved >= front.after && !c.budget.hold_reads()));
            if !ready {
                return;
            }
            let q = c.queued.pop_front().expect("checked");
            self.dispatch(conn, q.xid, q.op, q.request, q.received);
        }
    }

    fn dispatch(
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
        if self.conns[&conn].read_only && self.refused_read_only(conn, xid, &request, received) {
            return;
        }
        match request {
            Request::Auth(p) => self.auth(conn, xid, p),
            Request::Sync(r) => self.sync(conn, xid, r.path, received),
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
                self.stats.read_latency.record(received.elapsed());
                self.finish(conn, xid, self.tree.last_zxid(), result, received);
            }
        }
    }

    /// A read-only session's request that is not answered from the tree: writes and `sync` get
    /// NotReadOnly, as from ZooKeeper's read-only server; closing the session is local.
    /// Returns whether the request was handled here.
    fn refused_read_only(
        &mut self,
        conn: ConnId,
        xid: i32,
        request: &Request,
        received: Instant,
    ) -> bool {
        let zxid = self.tree.last_zxid();
        match request {
            Request::CloseSession => {
                let id = self.conns[&conn].session_id;
                self.read_only.close(id);
                self.finish(conn, xid, zxid, Ok(Response::Empty), received);
                self.session_closed(conn);
            }
            r if r.is_write() || matches!(r, Request::Sync(_)) => {
                self.finish(conn, xid, zxid, Err(ErrorCode::NotReadOnly), received);
            }
            _ => return false,
        }
        true
    }

    /// `sync`: answered once this member has applied what the leader had committed when asked.
    /// The connection's later reads wait for it, as they wait for its writes.
    fn sync(&mut self, conn: ConnId, xid: i32, path: String, received: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.in_flight += 1;
            c.syncs_in_flight += 1;
        }
        let replica = self.replica.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let index = replica.read_index().await;
            let _ = inbox
                .send(CoreMsg::SyncIndex {
                    conn,
                    xid,
                    path,
                    received,
                    index,
                })
                .await;
        });
    }

    fn finish(
        &mut self,
        conn: ConnId,
        xid: i32,
        zxid: i64,
        result: Result<Response, ErrorCode>,
        received: Instant,
    ) {
        let latency = received.elapsed();
        self.stats.record_latency(latency);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.stats.record(latency, zxid);
        }
        self.answered(conn);
        let bytes = reply_len(&result);
        self.queue_out(conn, Outgoing::Reply { xid, zxid, result }, bytes);
    }

    fn auth(&mut self, conn: ConnId, xid: i32, p: AuthPacket) {
        let ids = match p.scheme.as_str() {
            "digest" => {
                let id = acl::digest_id(&String::from_utf8_lossy(&p.auth));
                let mut ids = Vec::new();
                if self.cfg.super_digest.as_deref() == Some(id.as_str()) {
                    ids.push(Id::new("super", ""));
                }
                ids.push(Id::new("digest", &id));
                Some(ids)
            }
            "ip" => Some(Vec::new()),
            _ => None,
        };
        self.answered(conn);
        let zxid = self.tree.last_zxid();
        match ids {
            Some(ids) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    for id in ids {
                        if !c.auth.contains(&id) {
                            c.auth.push(id);
                        }
                    }
                }
                self.send(conn, reply_frame(xid, 0, &Ok(Response::Empty)));
            }
            None => {
                tracing::warn!(scheme = %p.scheme, "authentication with an unknown scheme");
                self.stats.auth_failed += 1;
                self.send(
                    conn,
                    reply_frame(xid, zxid.min(0), &Err(ErrorCode::AuthFailed)),
                );
                self.close_connection(conn);
            }
        }
    }

    fn read(&mut self, conn: ConnId, session_id: i64, req: Request) -> Result<Response, ErrorCode> {
        let auth = &self.conns[&conn].auth;
        let req_op = req.op_code();
        match req {
            Request::Ping => Ok(Response::Empty),
            Request::Exists(r) => {
                if r.path.contains('\0') {
                    return Err(ErrorCode::BadArguments);
                }
                let node = self.tree.get(&r.path);
                // ZooKeeper 3.8.4+ and 3.9.2+ require READ on an existing node (ZOOKEEPER-2590).
                if let Some(n) = node {
                    acl::check(self.tree.acl(n), perms::READ, auth)?;
                }
                let stat = node.map(|n| n.stat());
                if r.watch {
                    // Registered even when the node is missing: it fires on NodeCreated.
                    self.watches.add(conn, &r.path, WatchKind::Data);
                }
                stat.map(Response::Stat).ok_or(ErrorCode::NoNode)
            }
            Request::GetData(r) => {
                let (data, stat) = self.readable(&r.path, auth)?;
                if r.watch {
                    self.watches.add(conn, &r.path, WatchKind::Data);
                }
                Ok(Response::GetData(GetDataResponse { data, stat }))
            }
            Request::GetChildren(r) | Request::GetChildren2(r) => {
                let with_stat = matches!(req_op, OpCode::GetChildren2);
                let body = self.children_body(&r.path, auth, with_stat)?;
                if r.watch {
                    self.watches.add(conn, &r.path, WatchKind::Child);
                }
                Ok(Response::Raw(body))
            }
            Request::GetAcl(r) => {
                let node = self.tree.get(&r.path).ok_or(ErrorCode::NoNode)?;
                let list = self.tree.acl(node);
                acl::check(list, perms::READ | perms::ADMIN, auth)?;
                let mut list = list.to_vec();
                if acl::check(&list, perms::ADMIN, auth).is_err() {
                    // Without ADMIN, digest hashes are not shown (ZooKeeper replaces them by "x").
                    for a in list.iter_mut().filter(|a| a.id.scheme == "digest") {
                        let user = a.id.id.split(':').next().unwrap_or("").to_owned();
                        a.id.id = format!("{user}:x");
                    }
                }
                Ok(Response::GetAcl(GetAclResponse {
                    acl: list,
                    stat: node.stat(),
                }))
            }
            Request::GetAllChildrenNumber(r) => {
                let node = self.tree.get(&r.path).ok_or(ErrorCode::NoNode)?;
                acl::check(self.tree.acl(node), perms::READ, auth)?;
                Ok(Response::Count(self.tree.descendant_count(&r.path) as i32))
            }
            Request::GetEphemerals(r) => {
                let prefix = r.path.trim();
                let all = self.tree.ephemerals_of(session_id);
                Ok(Response::Ephemerals(
                    if prefix.is_empty() || prefix == "/" {
                        all
                    } else {
                        all.into_iter().filter(|p| p.starts_with(&r.path)).collect()
                    },
                ))
            }
            Request::Sync(r) => Ok(Response::Path(r.path)),
            Request::WhoAmI => Ok(Response::WhoAmI(
                auth.iter()
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        user: acl::user_name(id),
                    })
                    .collect(),
            )),
            Request::AddWatch(r) => {
                let kind = match r.mode {
                    add_watch_mode::PERSISTENT => WatchKind::Persistent,
                    add_watch_mode::PERSISTENT_RECURSIVE => WatchKind::Recursive,
                    _ => return Err(ErrorCode::MarshallingError),
                };
                self.watches.add(conn, &r.path, kind);
                Ok(Response::ErrorBody(0))
            }
            Request::CheckWatches(ref r) | Request::RemoveWatches(ref r) => {
                let which =
                    WatcherType::from_i32(r.watcher_type).ok_or(ErrorCode::MarshallingError)?;
                let found = if matches!(req, Request::RemoveWatches(_)) {
                    self.watches.remove(conn, &r.path, which)
                } else {
                    self.watches.contains(conn, &r.path, which)
                };
                found.then_some(Response::Empty).ok_or(ErrorCode::NoWatcher)
            }
            Request::SetWatches(w) => self.read(conn, session_id, Request::SetWatches2(w.into())),
            Request::SetWatches2(w) => {
                self.set_watches(conn, w);
                Ok(Response::Empty)
            }
            Request::MultiRead(ops) => {
                // ZooKeeper's multiRead sets no watches, whatever the ops' flags say.
                let results = ops
                    .into_iter()
                    .map(|op| match op {
                        Request::GetData(r) => {
                            Request::GetData(PathWatchRequest { watch: false, ..r })
                        }
                        Request::GetChildren(r) => {
                            Request::GetChildren(PathWatchRequest { watch: false, ..r })
                        }
                        other => other,
                    })
                    .map(|op| {
                        let code = op.op_code();
                        match self.read(conn, session_id, op) {
                            Ok(resp) => MultiResult::Ok(code, resp),
                            Err(e) => MultiResult::Error(e),
                        }
                    })
                    .collect();
                Ok(Response::Multi(results))
            }
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    /// A node's data (`None` when null) and Stat, if `auth` may read it.
    fn readable(&self, path: &str, auth: &[Id]) -> Result<(Option<Bytes>, Stat), ErrorCode> {
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(self.tree.acl(node), perms::READ, auth)?;
        Ok((node.data.to_buffer(), node.stat()))
    }

    /// getChildren's (or getChildren2's) reply body, written straight from the tree: the names
    /// unsorted, as ZooKeeper sends them (clients that care sort), then the Stat if asked.
    fn children_body(&self, path: &str, auth: &[Id], with_stat: bool) -> Result<Bytes, ErrorCode> {
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(self.tree.acl(node), perms::READ, auth)?;
        let mut out = Vec::with_capacity(4 + 16 * node.child_count() + 80);
        out.extend_from_slice(&(node.child_count() as i32).to_be_bytes());
        for name in self.tree.child_names(node) {
            out.extend_from_slice(&(name.len() as i32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        if with_stat {
            corral_proto::Jute::encode(&node.stat(), &mut out);
        }
        Ok(Bytes::from(out))
    }

    /// Restores a reconnecting client's watches; fires at once what changed after `relative_zxid`.
    fn set_watches(&mut self, conn: ConnId, w: SetWatches2) {
        let relative_zxid = w.relative_zxid;
        let (data, exist, child) = (w.data_watches, w.exist_watches, w.child_watches);
        let (persistent, recursive) = (w.persistent_watches, w.persistent_recursive_watches);
        let mut fire = Vec::new();
        for p in data {
            match self.tree.get(&p) {
                None => fire.push((p, EventType::NodeDeleted)),
                Some(n) if n.mzxid > relative_zxid => fire.push((p, EventType::NodeDataChanged)),
                Some(_) => self.watches.add(conn, &p, WatchKind::Data),
            }
        }
        for p in exist {
            match self.tree.get(&p) {
                Some(_) => fire.push((p, EventType::NodeCreated)),
                None => self.watches.add(conn, &p, WatchKind::Data),
            }
        }
        for p in child {
            match self.tree.get(&p) {
                None => fire.push((p, EventType::NodeDeleted)),
                Some(n) if n.pzxid > relative_zxid => {
                    fire.push((p, EventType::NodeChildrenChanged))
                }
                Some(_) => self.watches.add(conn, &p, WatchKind::Child),
            }
        }
        for p in persistent {
            self.watches.add(conn, &p, WatchKind::Persistent);
        }
        for p in recursive {
            self.watches.add(conn, &p, WatchKind::Recursive);
        }
        for (p, kind) in fire {
            self.send(conn, notification_frame(&p, kind, NO_ZXID));
        }
    }

    /// This member's mode in ZooKeeper's words, as srvr and the admin commands show it. A member
    /// that serves without knowing a leader (an election is on; its lease holds) serves as a
    /// follower.
    pub(crate) fn mode(&self) -> &'static str {
        match self.role {
            _ if !self.serving.is_serving() && self.read_only.is_active() => "read-only",
            Role::Looking if self.serving.is_serving() => Role::Follower.zk_mode(),
            role => role.zk_mode(),
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    pub(crate) fn leader_id(&self) -> Option<u64> {
        self.leader
    }

    pub(crate) fn last_snapshot(&self) -> (i64, i64) {
        self.last_snapshot
    }

    /// When each live session expires unless heard from (ms since the epoch).
    pub(crate) fn session_expiries(&self) -> Vec<(i64, i64)> {
        self.sessions
            .iter()
            .map(|(id, s)| (*id, crate::admin::epoch_ms_of(s.deadline)))
            .collect()
    }

    /// Requests received and not yet answered, over all connections.
    /// Requests read from clients and not yet answered, over all connections.
    pub(crate) fn outstanding_requests(&self) -> usize {
        self.limits.inbox()
            + self
                .conns
                .values()
                .map(|c| c.request_sizes.len())
                .sum::<usize>()
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }
}
