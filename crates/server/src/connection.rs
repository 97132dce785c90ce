//! One client connection: framing on the socket, nothing else.
//!
//! The reader takes frames off the socket (closing the connection on a frame larger than
//! `jute.maxbuffer`, a negative length or a frame too short for its header), decodes them and
//! hands them to the core in order, pausing while the connection is over one of its limits
//! (`budget`): then it reads nothing, and TCP pushes back on the client. The writer drains the
//! connection's outbox, writing whatever has queued in one go, so a burst of replies costs one
//! syscall, and tells the budget what it wrote. A four-letter word in the first four bytes is
//! answered as text and the connection closed.

use crate::budget::{ConnBudget, Global, Limits};
use crate::core::{CoreMsg, Incoming, Input, Outgoing};
use crate::four_letter::parse_word;
use crate::status::StatusSource;
use crate::watch::ConnId;
use bytes::BytesMut;
use corral_io::net::{ReadHalf, WriteHalf};
use corral_io::BoxStream;
use corral_proto::frame::{FrameDecoder, Handshake};
use corral_proto::records::Id;
use corral_proto::reply::{encode_reply, reply_len};
use corral_proto::{Jute, Request, RequestHeader};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Most bytes gathered into one write.
const MAX_WRITE_BATCH: usize = 1 << 20;
/// How long a connection whose session was closed waits for its client to close it first.
const SESSION_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// At most one log line per connection this often about its reads being held back.
const THROTTLE_LOG_EVERY: Duration = Duration::from_secs(60);

pub async fn serve(
    stream: BoxStream,
    peer: SocketAddr,
    conn: ConnId,
    core: mpsc::Sender<CoreMsg>,
    limits: ConnLimits,
    status: StatusSource,
    identities: Vec<Id>,
) {
    let (mut rd, mut wr) = stream.split();
    // Small to start: most connections are idle sessions; busy ones grow their buffers.
    let mut buf = BytesMut::with_capacity(1024);
    let decoder = FrameDecoder::new(limits.max_frame_len);
    // As ZooKeeper's sessionlessCnxnTimeout: a connection that never asks for a session (or a
    // four-letter word) must not hold a file descriptor and a maxClientCnxns slot forever.
    let opening = tokio::time::timeout(
        limits.sessionless_timeout,
        read_opening(&mut rd, &mut buf, &decoder, peer),
    )
    .await;
    let handshake = match opening {
        Err(_) => {
            tracing::warn!(%peer, timeout_ms = limits.sessionless_timeout.as_millis() as u64, "closing: no connect request in time");
            return;
        }
        Ok(None) => return,
        Ok(Some(Opening::Connect(h))) => h,
        Ok(Some(Opening::FourLetter(word))) => {
            let text = crate::four_letter::answer(&status, word, peer).await;
            let _ = wr.write_all(text.as_bytes()).await;
            let _ = wr.shutdown().await;
            return;
        }
    };

    let (out, outbox) = mpsc::unbounded_channel();
    let (closed_tx, mut closed) = oneshot::channel();
    let (client_gone, client_gone_rx) = oneshot::channel();
    let budget = Arc::new(ConnBudget::new(limits.budget, limits.global.clone()));
    let writer = Writer {
        conn,
        budget: budget.clone(),
        core: core.clone(),
    };
    tokio::spawn(writer.run(wr, outbox, closed_tx, client_gone_rx));
    let connect = CoreMsg::Connect {
        incoming: Incoming {
            conn,
            peer,
            handshake,
            budget: budget.clone(),
            identities,
        },
        out,
    };
    if core.send(connect).await.is_err() {
        return;
    }
    let mut throttle_logged: Option<Instant> = None;
    'conn: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let room = tokio::select! {
                        over = budget.room_to_read() => over,
                        _ = budget.aborted() => break 'conn,
                    };
                    if let Some(over) = room {
                        let due = match throttle_logged {
                            Some(at) => corral_io::now() - at >= THROTTLE_LOG_EVERY,
                            None => true,
                        };
                        if due {
                            throttle_logged = Some(corral_io::now());
                            let l = budget.limits();
                            tracing::info!(%peer, ?over, max_outstanding = l.max_outstanding, max_reply_bytes = l.max_reply_bytes, global_outstanding = l.global_outstanding, "a client's reads held back at a limit");
                        }
                    }
                    let received = corral_io::now();
                    if frame.len() < 8 {
                        tracing::warn!(%peer, len = frame.len(), "closing: frame too short for a request header");
                        break 'conn;
                    }
                    let header = RequestHeader::from_bytes(&frame[..8]).expect("8 bytes checked");
                    let request = Request::decode(header.op_type, &frame[8..]);
                    budget.request_read(frame.len());
                    let msg = CoreMsg::Input(Input::Packet {
                        conn,
                        xid: header.xid,
                        op: header.op_type,
                        request,
                        received,
                        size: frame.len() as u32,
                    });
                    if core.send(msg).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing connection");
                    break 'conn;
                }
            }
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = &mut closed => break,
            _ = budget.aborted() => break,
        }
    }
    let _ = client_gone.send(());
    budget.release();
    let _ = core.send(CoreMsg::Input(Input::Closed { conn })).await;
}

/// A connection's writing half and what it tells the budget.
struct Writer {
    conn: ConnId,
    budget: Arc<ConnBudget>,
    core: mpsc::Sender<CoreMsg>,
}

impl Writer {
    /// `write_all`, telling the budget of every part the socket takes: a client that reads
    /// slowly makes progress, one that reads nothing does not.
    async fn write_counting(&self, wr: &mut WriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let n = wr.write(buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.budget.sent(n);
            buf = &buf[n..];
        }
        Ok(())
    }

    async fn run(
        self,
        mut wr: WriteHalf,
        mut outbox: mpsc::UnboundedReceiver<Outgoing>,
        closed: oneshot::Sender<()>,
        client_gone: oneshot::Receiver<()>,
    ) {
        let mut batch = Vec::new();
        let mut close = false;
        let mut linger = false;
        while let Some(first) = outbox.recv().await {
            let mut counted = 0;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Outgoing::Frame(f) => {
                        counted += f.len();
                        batch.extend_from_slice(&f);
                    }
                    Outgoing::Handshake(f) => batch.extend_from_slice(&f),
                    Outgoing::Reply { xid, zxid, result } => {
                        counted += reply_len(&result);
                        encode_reply(xid, zxid, &result, &mut batch)
                    }
                    Outgoing::Close => {
                        close = true;
                        break;
                    }
                    Outgoing::SessionClosed => {
                        close = true;
                        linger = true;
                        break;
                    }
                }
                if batch.len() < MAX_WRITE_BATCH {
                    next = outbox.try_recv().ok();
                }
            }
            let wrote = tokio::select! {
                r = self.write_counting(&mut wr, &batch) => r.is_ok(),
                _ = self.budget.aborted() => false,
            };
            if !wrote {
                break;
            }
            batch.clear();
            if self.budget.written(counted) {
                // The core held this connection's reads back until its replies drained.
                let resume = CoreMsg::Input(Input::Resume { conn: self.conn });
                if self.core.send(resume).await.is_err() {
                    break;
                }
            }
            if close {
                break;
            }
        }
        if linger {
            let _ = tokio::time::timeout(SESSION_CLOSE_GRACE, client_gone).await;
        }
        let _ = wr.shutdown().await;
        let _ = closed.send(());
    }
}

/// What a connection's limits are, from the server's configuration.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// `jute.maxbuffer`: the largest frame accepted.
    pub max_frame_len: usize,
    /// How long a new connection may take to send its connect request.
    pub sessionless_timeout: std::time::Duration,
    /// What it may hold in the server.
    pub budget: Limits,
    /// What all connections hold together.
    pub global: Arc<Global>,
}

/// What a connection's first bytes ask for.
enum Opening {
    FourLetter(&'static str),
    Connect(Handshake),
}

/// Reads a four-letter word or the connect request; `None` when the connection closes first
/// or sends something else (logged).
async fn read_opening(
    rd: &mut ReadHalf,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
    peer: SocketAddr,
) -> Option<Opening> {
    while buf.len() < 4 {
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    if let Some(word) = parse_word(&buf[..4]) {
        return Some(Opening::FourLetter(word));
    }
    loop {
        match decoder.decode(buf) {
            Ok(Some(frame)) => match Handshake::decode(&frame) {
                Ok(h) => return Some(Opening::Connect(h)),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing: first frame is not a connect request");
                    return None;
                }
            },
            Ok(None) => match rd.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            Err(e) => {
                if buf.first() == Some(&0x16) {
                    // A TLS ClientHello's first bytes read as a huge frame length.
                    tracing::warn!(%peer, "closing: a TLS client on the plaintext port (secureClientPort, or client.portUnification, takes TLS)");
                } else {
                    tracing::warn!(%peer, error = %e, "closing connection");
                }
                return None;
            }
        }
    }
}
