//! The console's ZooKeeper session: a real client session of this server, carried over an
//! in-memory stream instead of a socket, so every read and edit a console user makes goes
//! through the same connection code, core, ACL checks and limits as any client's.

use crate::budget::Global;
use crate::config::ServerConfig;
use crate::connection::{self, ConnLimits};
use crate::core::CoreMsg;
use crate::status::StatusSource;
use bytes::{Bytes, BytesMut};
use corral_proto::frame::{FrameDecoder, Handshake};
use corral_proto::message::request_frame;
use corral_proto::records::*;
use corral_proto::{ErrorCode, EventType, Jute, OpCode, Reader, Request, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};

/// Bytes buffered each way between the console and the connection it talks to.
const PIPE_BYTES: usize = 256 * 1024;
/// The session timeout the console asks for (the server bounds it as any client's).
const SESSION_TIMEOUT_MS: i32 = 30_000;
/// Requests one console login may have in flight at once.
const MAX_IN_FLIGHT: usize = 32;
/// Watch events queued for the console's live views before the slowest one has to resync.
pub const EVENT_QUEUE: usize = 1024;
/// How long a request may wait for its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest reply the console reads. The server does not bound its replies by
/// `jute.maxbuffer` (a node with 100k children answers getChildren with megabytes), and the
/// console must show such nodes.
const MAX_REPLY: usize = 64 << 20;
/// Whole frames queued for the connection's writer.
const WRITE_QUEUE: usize = 64;

/// Opens in-memory connections to this server, as its accept loops open socket ones.
#[derive(Clone)]
pub struct Dialer {
    pub cfg: Arc<ServerConfig>,
    pub core: mpsc::Sender<CoreMsg>,
    pub global: Arc<Global>,
    pub status: StatusSource,
    pub next_conn: Arc<AtomicU64>,
}

impl Dialer {
    /// A connection served as if `peer` had opened it: the returned end is the client's.
    fn dial(&self, peer: SocketAddr) -> DuplexStream {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let conn = self.next_conn.fetch_add(1, Relaxed);
        let limits = ConnLimits {
            max_frame_len: self.cfg.max_frame_len,
            sessionless_timeout: Duration::from_millis(self.cfg.sessionless_timeout_ms),
            budget: self.cfg.limits,
            global: self.global.clone(),
        };
        let (core, status) = (self.core.clone(), self.status.clone());
        tokio::spawn(async move {
            let stream = Box::new(server) as corral_io::BoxStream;
            connection::serve(stream, peer, conn, core, limits, status, Vec::new()).await;
        });
        client
    }
}

/// A watch event as the console's live views get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    pub path: String,
}

/// Why a call got no answer from the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{0:?}")]
    Zk(ErrorCode),
    #[error("the session ended: {0}")]
    Lost(&'static str),
}

type Pending = HashMap<i32, (OpCode, oneshot::Sender<Result<Response, ErrorCode>>)>;

/// One session, shared by a login's requests.
pub struct Session {
    pub id: i64,
    /// Whole frames, to the task that owns the write half: a request whose caller is dropped
    /// mid-way (the browser went) is sent whole or not at all, never half a frame.
    frames: mpsc::Sender<Vec<u8>>,
    pending: Arc<Mutex<Pending>>,
    next_xid: AtomicI32,
    in_flight: Semaphore,
    alive: Arc<AtomicBool>,
    events: broadcast::Sender<Event>,
}

impl Session {
    /// Connects as `peer` and authenticates with `digest user:password`, as `addauth` does.
    pub async fn open(
        dialer: &Dialer,
        peer: SocketAddr,
        user: &str,
        password: &str,
    ) -> Result<Arc<Session>, CallError> {
        let (rd, wr) = tokio::io::split(dialer.dial(peer));
        let decoder = FrameDecoder::new(MAX_REPLY);
        let (answer, rd, buf, wr) = handshake(rd, wr, &decoder).await?;
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let (frames, queued) = mpsc::channel(WRITE_QUEUE);
        let alive = Arc::new(AtomicBool::new(true));
        let session = Arc::new(Session {
            id: answer.session_id,
            frames,
            pending: Arc::default(),
            next_xid: AtomicI32::new(1),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            alive: alive.clone(),
            events: events.clone(),
        });
        tokio::spawn(write_frames(wr, queued, alive.clone()));
        let reader = Replies {
            pending: session.pending.clone(),
            alive,
            events,
        };
        tokio::spawn(reader.run(rd, buf, decoder));
        let every = Duration::from_millis(answer.time_out.max(30) as u64 / 3);
        tokio::spawn(keep_alive(Arc::downgrade(&session), every));
        let auth = AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Bytes::from(format!("{user}:{password}")),
        };
        session.call_xid(-4, Request::Auth(auth)).await?;
        Ok(session)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Relaxed)
    }

    /// Watch events from the persistent watches this session set.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Sends `req` and waits for its answer.
    pub async fn call(&self, req: Request) -> Result<Response, CallError> {
        // Positive xids, wrapping past i32::MAX back to 1 (the negative ones are the
        // protocol's own: pings, auth, notifications).
        let xid = (self.next_xid.fetch_add(1, Relaxed) & i32::MAX).max(1);
        self.call_xid(xid, req).await
    }

    async fn call_xid(&self, xid: i32, req: Request) -> Result<Response, CallError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| CallError::Lost("closed"))?;
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(xid, (req.op_code(), tx));
        // Taken out again however this call ends: answered, failed, timed out or dropped.
        let _waiting = Waiting(&self.pending, xid);
        let sent = self.is_alive() && self.frames.send(request_frame(xid, &req)).await.is_ok();
        if !sent {
            return Err(CallError::Lost("the connection is closed"));
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer.map_err(CallError::Zk),
            Ok(Err(_)) => Err(CallError::Lost("the connection closed before answering")),
            Err(_) => Err(CallError::Lost("no answer in time")),
        }
    }

    /// Ends the session now, so its ephemerals and watches go with it.
    pub async fn close(&self) {
        let xid = (self.next_xid.fetch_add(1, Relaxed) & i32::MAX).max(1);
        let _ = self
            .frames
            .send(request_frame(xid, &Request::CloseSession))
            .await;
        self.alive.store(false, Relaxed);
    }
}

/// A call's entry in the pending table, removed when the call is over.
struct Waiting<'a>(&'a Mutex<Pending>, i32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("pending lock").remove(&self.1);
    }
}

/// Sends the connect request and reads the answer: the new session, or why there is none.
async fn handshake(
    mut rd: ReadHalf<DuplexStream>,
    mut wr: WriteHalf<DuplexStream>,
    decoder: &FrameDecoder,
) -> Result<
    (
        ConnectResponse,
        ReadHalf<DuplexStream>,
        BytesMut,
        WriteHalf<DuplexStream>,
    ),
    CallError,
> {
    let hello = Handshake {
        request: ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            time_out: SESSION_TIMEOUT_MS,
            session_id: 0,
            passwd: Bytes::from_static(&[0; 16]),
        },
        read_only: Some(false),
    };
    let lost = |_| CallError::Lost("the server closed the connection");
    wr.write_all(&hello.to_frame()).await.map_err(lost)?;
    let mut buf = BytesMut::new();
    let first = tokio::time::timeout(CALL_TIMEOUT, next_frame(&mut rd, &mut buf, decoder))
        .await
        .map_err(|_| CallError::Lost("no answer to the connect request"))?
        .ok_or(CallError::Lost("this member is not serving clients"))?;
    let answer = ConnectResponse::decode(&mut Reader::new(&first))
        .map_err(|_| CallError::Lost("a malformed connect response"))?;
    if answer.session_id == 0 || answer.time_out <= 0 {
        return Err(CallError::Lost("this member is not serving clients"));
    }
    Ok((answer, rd, buf, wr))
}

/// Owns the write half: writes whole frames as they come, until the session ends.
async fn write_frames(
    mut wr: WriteHalf<DuplexStream>,
    mut frames: mpsc::Receiver<Vec<u8>>,
    alive: Arc<AtomicBool>,
) {
    while let Some(frame) = frames.recv().await {
        if wr.write_all(&frame).await.is_err() {
            break;
        }
        if !alive.load(Relaxed) {
            // A close request was the last frame.
            break;
        }
    }
    alive.store(false, Relaxed);
    let _ = wr.shutdown().await;
}

/// Pings while the session lives, so an idle console keeps its session.
async fn keep_alive(session: std::sync::Weak<Session>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = session.upgrade() else { return };
        if !s.is_alive()
            || s.frames
                .send(request_frame(-2, &Request::Ping))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// Takes frames off the connection: answers to their callers, watch events to the live views.
struct Replies {
    pending: Arc<Mutex<Pending>>,
    alive: Arc<AtomicBool>,
    events: broadcast::Sender<Event>,
}

impl Replies {
    async fn run(self, mut rd: ReadHalf<DuplexStream>, mut buf: BytesMut, decoder: FrameDecoder) {
        while let Some(frame) = next_frame(&mut rd, &mut buf, &decoder).await {
            if !self.take(&frame) {
                break;
            }
        }
        self.alive.store(false, Relaxed);
        // Dropping the senders tells every waiting caller the connection is gone.
        self.pending.lock().expect("pending lock").clear();
    }

    /// One frame; false if it cannot be read (the connection is then dropped).
    fn take(&self, frame: &[u8]) -> bool {
        let mut r = Reader::new(frame);
        let Ok(header) = ReplyHeader::decode(&mut r) else {
            return false;
        };
        let body = &frame[r.offset()..];
        match header.xid {
            -1 => {
                if let Ok(e) = WatcherEvent::decode(&mut Reader::new(body)) {
                    if let Some(kind) = EventType::from_i32(e.event_type) {
                        // No receiver is fine: nobody is watching live right now.
                        let _ = self.events.send(Event { kind, path: e.path });
                    }
                }
                true
            }
            -2 => true,
            xid => {
                let Some((op, tx)) = self.pending.lock().expect("pending lock").remove(&xid) else {
                    return true;
                };
                let answer = match ErrorCode::from_i32(header.err) {
                    Some(ErrorCode::Ok) => match Response::decode(op, body) {
                        Ok(r) => Ok(r),
                        Err(_) => Err(ErrorCode::MarshallingError),
                    },
                    Some(code) => Err(code),
                    None => Err(ErrorCode::SystemError),
                };
                let _ = tx.send(answer);
                true
            }
        }
    }
}

/// The next whole frame, or None once the stream ends or breaks its framing.
async fn next_frame(
    rd: &mut ReadHalf<DuplexStream>,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
) -> Option<Bytes> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(frame)) => return Some(frame),
            Ok(None) => {}
            Err(_) => return None,
        }
        if rd.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}
