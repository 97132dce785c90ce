//! The core: the one task that owns the data tree, the live sessions and the watches.
//!
//! Connections decode frames and hand requests here in arrival order; the core answers each one
//! by putting frames on that connection's outbox. Because one task does all of it, per-session
//! FIFO holds by construction, and a watch event is queued on a connection before the reply to
//! any later request that could observe the change that fired it.
//!
//! A write becomes an [`Entry`] stamped here (zxid, time, session, identities) and is *proposed*:
//! sent to the log thread. Only when the log reports the entry durable is it applied to the tree
//! and answered. Meanwhile a connection's later reads wait in its queue (they must see its own
//! writes); its later writes are proposed at once, so a pipelining client fills a group commit.
//! Time and session expiry are decided here, never inside `apply`.

use crate::config::ServerConfig;
use crate::durability::{self, LogCmd};
use crate::session::{self, SessionIds};
use crate::stats::{ConnStats, ServerStats};
use crate::watch::{ConnId, WatchKind, WatchManager, WatcherType};
use bytes::Bytes;
use corral_proto::codes::{add_watch_mode, keeper_state, perms, xid};
use corral_proto::frame::{connect_response_frame, Handshake};
use corral_proto::message::encode_frame;
use corral_proto::records::*;
use corral_proto::{DecodeError, ErrorCode, EventType, MultiResult, OpCode, Request, Response};
use corral_storage::snapshot::SnapshotStore;
use corral_tree::{acl, DataTree, Entry, Txn};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// What a connection's writer is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Bytes),
    /// Flush what was queued, then close the connection.
    Close,
}

pub type Outbox = mpsc::UnboundedSender<Outgoing>;

/// Messages from connections, the log thread and the snapshot writer to the core.
pub enum CoreMsg {
    Connect {
        conn: ConnId,
        peer: SocketAddr,
        handshake: Handshake,
        out: Outbox,
    },
    Packet {
        conn: ConnId,
        xid: i32,
        op: i32,
        request: Result<Request, DecodeError>,
        received: Instant,
    },
    Closed {
        conn: ConnId,
    },
    FourLetter {
        word: String,
        reply: oneshot::Sender<String>,
    },
    /// The log is durable through this zxid.
    Durable {
        zxid: i64,
    },
    /// The log cannot be written; no write can be acknowledged any more.
    LogFailed {
        why: String,
    },
    SnapshotDone {
        result: Result<i64, String>,
    },
}

struct LiveSession {
    timeout_ms: i32,
    deadline: Instant,
    conn: Option<ConnId>,
}

/// A request held back until the connection's earlier writes are applied.
struct Queued {
    xid: i32,
    op: i32,
    request: Result<Request, DecodeError>,
    received: Instant,
}

pub(crate) struct Conn {
    pub session_id: i64,
    pub out: Outbox,
    pub auth: Vec<Id>,
    pub peer: SocketAddr,
    pub stats: ConnStats,
    pub timeout_ms: i32,
    in_flight: usize,
    queued: VecDeque<Queued>,
}

/// Who waits for a proposed entry.
enum Origin {
    Nobody,
    Reply {
        conn: ConnId,
        xid: i32,
        received: Instant,
    },
    /// A new session: the connect response goes out once the session is durable.
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

struct Proposed {
    entry: Entry,
    origin: Origin,
}

/// Where the core's writes go, and what it needs to snapshot.
pub struct Durability {
    pub log: std_mpsc::Sender<LogCmd>,
    pub snapshots: Arc<SnapshotStore>,
    /// The core's own inbox, for the snapshot writer's report.
    pub inbox: mpsc::Sender<CoreMsg>,
}

pub struct Core {
    pub(crate) cfg: Arc<ServerConfig>,
    pub(crate) tree: DataTree,
    pub(crate) watches: WatchManager,
    sessions: HashMap<i64, LiveSession>,
    /// Sessions whose close is proposed but not yet applied.
    closing: HashSet<i64>,
    pub(crate) conns: HashMap<ConnId, Conn>,
    ids: SessionIds,
    pub(crate) stats: ServerStats,
    next_reap: Instant,
    durability: Durability,
    proposed: VecDeque<Proposed>,
    last_proposed: i64,
    log_failed: Option<String>,
    applied_since_snapshot: u64,
    snapshot_running: bool,
}
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn reply_frame(xid: i32, zxid: i64, result: &Result<Response, ErrorCode>) -> Bytes {
    let err = match result {
        Ok(_) => 0,
        Err(e) => e.code(),
    };
    let mut out = Vec::with_capacity(64);
    encode_frame(
        &ReplyHeader { xid, zxid, err },
        |o| {
            if let Ok(resp) = result {
                resp.encode(o)
            }
        },
        &mut out,
    );
    Bytes::from(out)
}

fn notification_frame(path: &str, kind: EventType) -> Bytes {
    let mut out = Vec::with_capacity(32 + path.len());
    let header = ReplyHeader {
        xid: xid::NOTIFICATION,
        zxid: -1,
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
    /// A core over a recovered tree. Sessions found in the tree get a fresh timeout, as after a
    /// ZooKeeper leader change: their clients have that long to come back.
    pub fn new(cfg: Arc<ServerConfig>, tree: DataTree, durability: Durability) -> Self {
        let reap_every = Duration::from_millis(cfg.container_check_interval_ms);
        let now = Instant::now();
        let sessions = tree
            .sessions()
            .map(|(id, timeout_ms)| {
                let deadline = now + Duration::from_millis(timeout_ms.max(0) as u64);
                (
                    id,
                    LiveSession {
                        timeout_ms,
                        deadline,
                        conn: None,
                    },
                )
            })
            .collect();
        let last_proposed = tree.last_zxid();
        Core {
            cfg,
            tree,
            watches: WatchManager::default(),
            sessions,
            closing: HashSet::new(),
            conns: HashMap::new(),
            // A standalone ZooKeeper makes session ids with server id 1.
            ids: SessionIds::new(1, now_ms()),
            stats: ServerStats::new(),
            next_reap: now + reap_every,
            durability,
            proposed: VecDeque::new(),
            last_proposed,
            log_failed: None,
            applied_since_snapshot: 0,
            snapshot_running: false,
        }
    }

    /// Runs until every sender is gone or `shutdown` fires.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<CoreMsg>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        let tick = Duration::from_millis((self.cfg.tick_time_ms as u64 / 2).clamp(10, 500));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = ticker.tick() => self.tick(Instant::now()),
                _ = &mut shutdown => break,
            }
        }
        for conn in self.conns.values() {
            let _ = conn.out.send(Outgoing::Close);
        }
    }

    pub fn handle(&mut self, msg: CoreMsg) {
        match msg {
            CoreMsg::Connect {
                conn,
                peer,
                handshake,
                out,
            } => self.connect(conn, peer, handshake, out),
            CoreMsg::Packet {
                conn,
                xid,
                op,
                request,
                received,
            } => self.packet(conn, xid, op, request, received),
            CoreMsg::Closed { conn } => self.connection_closed(conn),
            CoreMsg::FourLetter { word, reply } => {
                let _ = reply.send(self.four_letter(&word));
            }
            CoreMsg::Durable { zxid } => self.durable(zxid),
            CoreMsg::LogFailed { why } => self.log_failed(why),
            CoreMsg::SnapshotDone { result } => {
                self.snapshot_running = false;
                match result {
                    Ok(_) => {
                        // Keep the log that the oldest retained snapshot needs, so that any of
                        // them can serve as a fallback if a newer one turns out damaged.
                        let oldest = self
                            .durability
                            .snapshots
                            .list()
                            .ok()
                            .and_then(|l| l.last().copied());
                        if let Some(oldest) = oldest {
                            let through = oldest.last_index as i64;
                            let _ = self.durability.log.send(LogCmd::Purge { through });
                        }
                    }
                    Err(why) => tracing::error!(%why, "writing a snapshot failed"),
                }
                // Writes that came in while it was written may already call for the next one.
                if self.applied_since_snapshot >= self.cfg.snap_count {
                    self.start_snapshot();
                }
            }
        }
    }

    /// Stamps and proposes one write: the only place entries are made.
    fn propose(&mut self, session_id: i64, auth: Vec<Id>, txn: Txn, origin: Origin) {
        if self.log_failed.is_some() {
            return self.refuse(origin);
        }
        self.last_proposed += 1;
        let entry = Entry {
            zxid: self.last_proposed,
            time_ms: now_ms(),
            session_id,
            auth,
            txn,
        };
        let cmd = LogCmd::Append {
            zxid: entry.zxid,
            bytes: entry.to_bytes(),
        };
        if self.durability.log.send(cmd).is_err() {
            self.log_failed("the log thread has stopped".into());
            return self.refuse(origin);
        }
        if let Some(c) = origin.conn().and_then(|c| self.conns.get_mut(&c)) {
            c.in_flight += 1;
        }
        self.proposed.push_back(Proposed { entry, origin });
    }

    /// Answers a write that cannot be made durable.
    fn refuse(&mut self, origin: Origin) {
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

    fn log_failed(&mut self, why: String) {
        tracing::error!(%why, "transaction log failure: refusing writes until restart; reads go on");
        self.log_failed = Some(why);
        // Nothing still waiting can be acknowledged.
        for p in std::mem::take(&mut self.proposed) {
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

    /// The log is durable through `zxid`: apply and answer everything up to it, in order.
    fn durable(&mut self, zxid: i64) {
        while self.proposed.front().is_some_and(|p| p.entry.zxid <= zxid) {
            let p = self.proposed.pop_front().expect("checked");
            self.apply(p);
        }
    }

    fn apply(&mut self, p: Proposed) {
        let applied = self.tree.apply(&p.entry);
        for event in &applied.events {
            for conn in self.watches.trigger(&event.path, event.kind) {
                // A watcher that may not read the node is not told of it (ZooKeeper's fix for
                // CVE-2024-23944).
                let may_read = self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| acl::check(&event.acl, perms::READ, &c.auth).is_ok());
                if may_read {
                    self.send(conn, notification_frame(&event.path, event.kind));
                }
            }
        }
        let origin_conn = p.origin.conn();
        match p.origin {
            Origin::Nobody => {}
            Origin::Reply {
                conn,
                xid,
                received,
            } => self.finish(conn, xid, applied.zxid, applied.result, received),
            Origin::Connect { conn, frame } => {
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.out.send(Outgoing::Frame(frame));
                }
            }
            Origin::Close {
                conn,
                xid,
                received,
            } => {
                self.finish(conn, xid, applied.zxid, Ok(Response::Empty), received);
                self.close_connection(conn);
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
                c.in_flight -= 1;
            }
            self.drain(conn);
        }
        self.applied_since_snapshot += 1;
        if self.applied_since_snapshot >= self.cfg.snap_count && !self.snapshot_running {
            self.start_snapshot();
        }
    }

    /// Copies the tree and writes the copy on a blocking thread while writes go on.
    fn start_snapshot(&mut self) {
        self.applied_since_snapshot = 0;
        self.snapshot_running = true;
        let copy = self.tree.clone();
        let store = self.durability.snapshots.clone();
        let inbox = self.durability.inbox.clone();
        tokio::task::spawn_blocking(move || {
            let result = durability::write_snapshot(&store, &copy).map_err(|e| e.to_string());
            let _ = inbox.blocking_send(CoreMsg::SnapshotDone { result });
        });
    }

    fn send(&mut self, conn: ConnId, frame: Bytes) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.stats.sent += 1;
            self.stats.packets_sent += 1;
            let _ = c.out.send(Outgoing::Frame(frame));
        }
    }

    fn close_connection(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            let _ = c.out.send(Outgoing::Close);
            self.watches.drop_connection(conn);
        }
    }

    fn connect(&mut self, conn: ConnId, peer: SocketAddr, hs: Handshake, out: Outbox) {
        let req = &hs.request;
        if req.last_zxid_seen > self.tree.last_zxid() {
            tracing::warn!(
                %peer,
                client_zxid = format_args!("{:#x}", req.last_zxid_seen),
                our_zxid = format_args!("{:#x}", self.tree.last_zxid()),
                "refusing session: the client has seen a later zxid than this server"
            );
            let _ = out.send(Outgoing::Close);
            return;
        }
        let timeout_ms = self.cfg.negotiate_timeout(req.time_out);
        let read_only = hs.read_only.map(|_| false);
        let is_new = req.session_id == 0;
        let session_id = if is_new {
            self.ids.next_id()
        } else {
            let id = req.session_id;
            // Like ZooKeeper, a reconnect first closes the session's current connection, even
            // when the password then turns out to be wrong.
            if let Some(old) = self.sessions.get(&id).and_then(|s| s.conn) {
                self.close_connection(old);
            }
            let known = self.tree.session_timeout(id).is_some() && !self.closing.contains(&id);
            if !known || req.passwd.as_ref() != session::password(id) {
                tracing::info!(%peer, session = format_args!("{id:#x}"), "session expired or password wrong");
                let resp = ConnectResponse {
                    protocol_version: 0,
                    time_out: 0,
                    session_id: 0,
                    passwd: Bytes::from_static(&[0; 16]),
                };
                let frame = connect_response_frame(&resp, read_only);
                let _ = out.send(Outgoing::Frame(Bytes::from(frame)));
                let _ = out.send(Outgoing::Close);
                return;
            }
            id
        };
        let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
        self.sessions.insert(
            session_id,
            LiveSession {
                timeout_ms,
                deadline,
                conn: Some(conn),
            },
        );
        let resp = ConnectResponse {
            protocol_version: 0,
            time_out: timeout_ms,
            session_id,
            passwd: Bytes::copy_from_slice(&session::password(session_id)),
        };
        let frame = Bytes::from(connect_response_frame(&resp, read_only));
        self.conns.insert(
            conn,
            Conn {
                session_id,
                out: out.clone(),
                auth: vec![Id::new("ip", &peer.ip().to_string())],
                peer,
                stats: ConnStats::new(),
                timeout_ms,
                in_flight: 0,
                queued: VecDeque::new(),
            },
        );
        if is_new {
            tracing::debug!(%peer, session = format_args!("{session_id:#x}"), timeout_ms, "creating session");
            let origin = Origin::Connect { conn, frame };
            self.propose(
                session_id,
                Vec::new(),
                Txn::CreateSession { timeout_ms },
                origin,
            );
        } else {
            let _ = out.send(Outgoing::Frame(frame));
        }
    }

    fn connection_closed(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.watches.drop_connection(conn);
            if let Some(s) = self.sessions.get_mut(&c.session_id) {
                if s.conn == Some(conn) {
                    s.conn = None;
                }
            }
        }
    }

    /// Expires silent sessions and reaps containers and TTL nodes that are due.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            tracing::info!(session = format_args!("{id:#x}"), "session expired");
            if let Some(s) = self.sessions.remove(&id) {
                if let Some(conn) = s.conn {
                    self.close_connection(conn);
                }
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
        request: Result<Request, DecodeError>,
        received: Instant,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.stats.received += 1;
        c.stats.last_op = OpCode::from_i32(op);
        c.stats.last_cxid = xid;
        self.stats.packets_received += 1;
        if let Some(s) = self.sessions.get_mut(&c.session_id) {
            s.deadline = Instant::now() + Duration::from_millis(s.timeout_ms as u64);
        }
        // A connection's reads wait for its earlier writes; its writes may follow its writes.
        let is_write = matches!(&request, Ok(r) if r.is_write());
        let must_wait = c.in_flight > 0 || !c.queued.is_empty();
        if must_wait && !(is_write && c.queued.is_empty()) {
            c.queued.push_back(Queued {
                xid,
                op,
                request,
                received,
            });
            return;
        }
        self.dispatch(conn, xid, op, request, received);
    }

    /// Takes held-back requests of a connection as far as its in-flight writes allow.
    fn drain(&mut self, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let Some(front) = c.queued.front() else {
                return;
            };
            let is_write = matches!(&front.request, Ok(r) if r.is_write());
            if c.in_flight > 0 && !is_write {
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
        match request {
            Request::Auth(p) => self.auth(conn, xid, p),
            Request::CloseSession => {
                // Detach the connection so that applying the close answers it before closing it.
                if let Some(s) = self.sessions.get_mut(&session_id) {
                    s.conn = None;
                }
                self.sessions.remove(&session_id);
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
                self.finish(conn, xid, self.tree.last_zxid(), result, received);
            }
        }
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
        self.send(conn, reply_frame(xid, zxid, &result));
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
            Request::GetChildren(r) => {
                let children = self.children(&r.path, auth)?.0;
                if r.watch {
                    self.watches.add(conn, &r.path, WatchKind::Child);
                }
                Ok(Response::GetChildren(children))
            }
            Request::GetChildren2(r) => {
                let (children, stat) = self.children(&r.path, auth)?;
                if r.watch {
                    self.watches.add(conn, &r.path, WatchKind::Child);
                }
                Ok(Response::GetChildren2(GetChildren2Response {
                    children,
                    stat,
                }))
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
            Request::SetWatches(w) => {
                self.set_watches(
                    conn,
                    w.relative_zxid,
                    [
                        w.data_watches,
                        w.exist_watches,
                        w.child_watches,
                        vec![],
                        vec![],
                    ],
                );
                Ok(Response::Empty)
            }
            Request::SetWatches2(w) => {
                self.set_watches(
                    conn,
                    w.relative_zxid,
                    [
                        w.data_watches,
                        w.exist_watches,
                        w.child_watches,
                        w.persistent_watches,
                        w.persistent_recursive_watches,
                    ],
                );
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

    fn readable(&self, path: &str, auth: &[Id]) -> Result<(Bytes, Stat), ErrorCode> {
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(self.tree.acl(node), perms::READ, auth)?;
        Ok((Bytes::copy_from_slice(&node.data), node.stat()))
    }

    fn children(&self, path: &str, auth: &[Id]) -> Result<(Vec<String>, Stat), ErrorCode> {
        let node = self.tree.get(path).ok_or(ErrorCode::NoNode)?;
        acl::check(self.tree.acl(node), perms::READ, auth)?;
        Ok((self.tree.children_of(node), node.stat()))
    }

    /// Restores a reconnecting client's watches; fires at once what changed after `relative_zxid`.
    fn set_watches(&mut self, conn: ConnId, relative_zxid: i64, lists: [Vec<String>; 5]) {
        let [data, exist, child, persistent, recursive] = lists;
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
            self.send(conn, notification_frame(&p, kind));
        }
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.len()
    }
}
