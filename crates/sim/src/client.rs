//! A ZooKeeper client for the simulation: the wire protocol (`corral-proto`) over turmoil's
//! TCP, with the reconnect rule real clients follow: on a lost connection, resume the session on
//! another member, naming the last zxid seen, until the session is declared expired.

use bytes::Bytes;
use corral_proto::frame::Handshake;
use corral_proto::message::request_frame;
use corral_proto::records::{ConnectRequest, ConnectResponse, ReplyHeader, WatcherEvent};
use corral_proto::{ErrorCode, Jute, Request, Response};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

/// The largest frame a simulated client takes.
const MAX_FRAME: usize = 4 << 20;
/// How long a client waits for a reply before it takes the connection for lost (ZooKeeper's
/// clients wait two thirds of the session timeout, 3 s here, without hearing anything).
pub const REPLY_WAIT: Duration = Duration::from_millis(2000);

pub struct Reply {
    pub err: ErrorCode,
    pub body: Option<Response>,
}

/// A watch notification as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub zxid: i64,
    pub event_type: i32,
    pub path: String,
}

/// Why a call got no reply.
#[derive(Debug)]
pub enum Lost {
    /// The connection failed or went silent: the request may or may not have taken effect.
    Connection,
}

pub struct Session {
    pub id: i64,
    pub passwd: Bytes,
}

pub struct Conn {
    stream: TcpStream,
    pub member: String,
    next_xid: i32,
    pub last_zxid: i64,
    pub events: Vec<Notification>,
}

async fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_i32().await?;
    if len < 0 || len as usize > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Opens (`session` None) or resumes a session on `member`. `Err(true)` when the member
/// declared the session expired, `Err(false)` when it did not answer.
pub async fn connect(
    member: &str,
    session: Option<&Session>,
    last_zxid: i64,
    timeout_ms: i32,
) -> Result<(Conn, Session), bool> {
    let attempt = async {
        let mut stream = TcpStream::connect(member).await.map_err(|_| false)?;
        let hs = Handshake {
            request: ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: last_zxid,
                time_out: timeout_ms,
                session_id: session.map_or(0, |s| s.id),
                passwd: session.map_or(Bytes::from_static(&[0; 16]), |s| s.passwd.clone()),
            },
            read_only: Some(false),
        };
        stream.write_all(&hs.to_frame()).await.map_err(|_| false)?;
        let frame = read_frame(&mut stream).await.map_err(|_| false)?;
        let resp = ConnectResponse::from_bytes(&frame).map_err(|_| false)?;
        if resp.time_out <= 0 {
            return Err(true);
        }
        let conn = Conn {
            stream,
            member: member.to_owned(),
            next_xid: 1,
            last_zxid,
            events: Vec::new(),
        };
        let session = Session {
            id: resp.session_id,
            passwd: resp.passwd,
        };
        Ok((conn, session))
    };
    tokio::time::timeout(REPLY_WAIT, attempt)
        .await
        .unwrap_or(Err(false))
}

impl Conn {
    /// Sends a request and waits for its reply, queueing the notifications that come first.
    pub async fn call(&mut self, req: &Request) -> Result<Reply, Lost> {
        // Pings carry xid -2, as ZooKeeper's clients send them.
        let xid = if matches!(req, Request::Ping) {
            -2
        } else {
            self.next_xid += 1;
            self.next_xid - 1
        };
        let op = req.op_code();
        let exchange = async {
            self.stream
                .write_all(&request_frame(xid, req))
                .await
                .map_err(|_| Lost::Connection)?;
            loop {
                let frame = read_frame(&mut self.stream)
                    .await
                    .map_err(|_| Lost::Connection)?;
                let header = ReplyHeader::from_bytes(&frame).map_err(|_| Lost::Connection)?;
                if header.xid == -1 {
                    let e = WatcherEvent::from_bytes(&frame[16..]).map_err(|_| Lost::Connection)?;
                    self.events.push(Notification {
                        zxid: header.zxid,
                        event_type: e.event_type,
                        path: e.path,
                    });
                    continue;
                }
                if header.xid != xid {
                    // Replies come in request order; anything else is a broken server.
                    panic!("reply to xid {} while waiting for {xid}", header.xid);
                }
                let err = ErrorCode::from_i32(header.err).unwrap_or(ErrorCode::SystemError);
                let body = &frame[16..];
                let body = if body.is_empty() && header.err != 0 {
                    None
                } else {
                    Response::decode(op, body).ok()
                };
                return Ok((header, err, body));
            }
        };
        let (header, err, body) = tokio::time::timeout(REPLY_WAIT, exchange)
            .await
            .map_err(|_| Lost::Connection)??;
        if header.zxid > 0 {
            assert!(
                header.zxid >= self.last_zxid,
                "a reply's zxid {} went back from {} on {}",
                header.zxid,
                self.last_zxid,
                self.member
            );
            self.last_zxid = header.zxid;
        }
        Ok(Reply { err, body })
    }
}
