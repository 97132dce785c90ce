//! # corral-testkit
//!
//! Test kit: a server started in-process on a free port, and a raw, synchronous ZooKeeper client
//! built on corral-proto that shows exactly what came over the wire (headers, error codes,
//! notifications), for the session, bad-input and differential tests.

use bytes::Bytes;
use corral_proto::frame::{connect_response_frame, Handshake};
use corral_proto::message::request_frame;
use corral_proto::records::*;
use corral_proto::{ErrorCode, Jute, OpCode, Request, Response};
use corral_server::{Server, ServerConfig};

pub mod linearizable;
pub mod lock;
/// Network namespaces for partition tests (its own crate, so `mailroom chaos --machines` uses it too).
pub use corral_netns as netns;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A Corral server on its own runtime thread; stopped when dropped, data removed with it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: std::path::PathBuf,
    /// The member's replication counters (e.g. snapshots installed from a leader).
    pub replica: std::sync::Arc<corral_server::ReplicaTimings>,
    keep_data: bool,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A fresh directory under the system's temp dir.
pub fn temp_data_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("corral-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn test_config() -> ServerConfig {
    ServerConfig {
        data_dir: temp_data_dir(),
        client_port: 0,
        tick_time_ms: 200,
        min_session_timeout_ms: 400,
        max_session_timeout_ms: 10_000,
        four_letter_whitelist: vec!["*".into()],
        super_digest: Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=".into()),
        extended_types: true,
        container_check_interval_ms: 100,
        admin_addr: None,
        ..ServerConfig::default()
    }
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(test_config())
    }

    pub fn start_with(mut cfg: ServerConfig) -> TestServer {
        // CORRAL_TEST_LOG=debug (any RUST_LOG filter) shows the servers' logs in a test run.
        if let Ok(filter) = std::env::var("CORRAL_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let wl: Vec<String> = cfg.four_letter_whitelist.clone();
        if wl == ["*"] {
            cfg.four_letter_whitelist = corral_server::config::ALL_FOUR_LETTER_WORDS
                .iter()
                .map(|s| s.to_string())
                .collect();
        }
        let data_dir = cfg.data_dir.clone();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::start(cfg).await.expect("server starts");
                addr_tx
                    .send((server.local_addr, server.replica_timings()))
                    .unwrap();
                tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                })
                .await
                .unwrap();
                server.stop().await;
            });
        });
        let (addr, replica) = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server address");
        TestServer {
            addr,
            data_dir,
            replica,
            keep_data: false,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl TestServer {
    /// Stops the server but keeps its data directory, for restart tests.
    pub fn stop_keeping_data(mut self) -> std::path::PathBuf {
        self.keep_data = true;
        self.data_dir.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A reply as it came: the header, and the decoded body when there was one.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Option<Response>,
}

impl Reply {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::from_i32(self.err).unwrap_or(ErrorCode::SystemError)
    }
}

pub struct RawClient {
    pub stream: TcpStream,
    pub session_id: i64,
    pub passwd: Bytes,
    pub timeout_ms: i32,
    next_xid: i32,
    pub events: VecDeque<Notification>,
}

/// A watch event as it arrived: the event and the zxid in its reply header.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The zxid of the change that fired it (ZooKeeper 3.9), or -1.
    pub zxid: i64,
    pub event_type: i32,
    pub state: i32,
    pub path: String,
}

impl Notification {
    fn parse(frame: &[u8]) -> Notification {
        let header = ReplyHeader::from_bytes(frame).unwrap();
        assert_eq!(header.xid, -1, "expected a notification, got {header:?}");
        let e = WatcherEvent::from_bytes(&frame[16..]).unwrap();
        Notification {
            zxid: header.zxid,
            event_type: e.event_type,
            state: e.state,
            path: e.path,
        }
    }
}

/// The largest frame the test clients take: above any `jute.maxbuffer` a test sets.
const MAX_FRAME_LEN: usize = 64 << 20;

pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    corral_proto::frame::read_frame(stream, MAX_FRAME_LEN)
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        Self::resume(addr, 0, Bytes::from_static(&[0; 16]), 0, 5000).expect("session established")
    }

    /// Sends a ConnectRequest and reads the answer; `Err` when the server answered "expired"
    /// (timeout 0) or closed the connection.
    pub fn resume(
        addr: SocketAddr,
        session_id: i64,
        passwd: Bytes,
        last_zxid: i64,
        timeout_ms: i32,
    ) -> Result<RawClient, String> {
        let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let hs = Handshake {
            request: ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: last_zxid,
                time_out: timeout_ms,
                session_id,
                passwd,
            },
            read_only: Some(false),
        };
        stream
            .write_all(&hs.to_frame())
            .map_err(|e| e.to_string())?;
        let reply = read_frame(&mut stream).map_err(|e| format!("connection closed: {e}"))?;
        let resp = ConnectResponse::from_bytes(&reply).map_err(|e| e.to_string())?;
        assert_eq!(
            reply,
            connect_response_frame(&resp, Some(false))[4..],
            "readOnly byte mirrors the request"
        );
        if resp.time_out <= 0 {
            return Err("session expired".into());
        }
        Ok(RawClient {
            stream,
            session_id: resp.session_id,
            passwd: resp.passwd,
            timeout_ms: resp.time_out,
            next_xid: 1,
            events: VecDeque::new(),
        })
    }

    /// Sends a request. A failed send (the server went away) shows at the next read, which is
    /// where callers handle a lost connection.
    pub fn send(&mut self, xid: i32, req: &Request) {
        let _ = self.stream.write_all(&request_frame(xid, req));
    }

    /// Reads frames until the reply to `xid`; notifications on the way are queued in `events`.
    pub fn read_reply(&mut self, xid: i32, op: OpCode) -> std::io::Result<Reply> {
        loop {
            let frame = read_frame(&mut self.stream)?;
            let header = ReplyHeader::from_bytes(&frame).unwrap();
            let body = &frame[16..];
            if header.xid == -1 {
                self.events.push_back(Notification::parse(&frame));
                continue;
            }
            assert_eq!(header.xid, xid, "replies come in request order");
            let body = if body.is_empty() && header.err != 0 {
                None
            } else {
                Some(Response::decode(op, body).expect("reply body decodes"))
            };
            return Ok(Reply {
                xid: header.xid,
                zxid: header.zxid,
                err: header.err,
                body,
            });
        }
    }

    pub fn call(&mut self, req: Request) -> Reply {
        self.try_call(req).expect("reply")
    }

    /// A request and its reply; `Err` when the connection failed or timed out first.
    pub fn try_call(&mut self, req: Request) -> std::io::Result<Reply> {
        let xid = self.next_xid;
        self.next_xid += 1;
        let op = req.op_code();
        self.send(xid, &req);
        self.read_reply(xid, op)
    }

    /// `addauth digest user:password`, sent as clients send it (xid -4); `Err` when the
    /// connection failed first.
    pub fn add_digest_auth(&mut self, credentials: &str) -> std::io::Result<Reply> {
        let auth = corral_proto::records::AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: bytes::Bytes::copy_from_slice(credentials.as_bytes()),
        };
        self.send(-4, &Request::Auth(auth));
        self.read_reply(-4, OpCode::Auth)
    }

    pub fn ping(&mut self) -> Reply {
        self.send(-2, &Request::Ping);
        self.read_reply(-2, OpCode::Ping).expect("ping reply")
    }

    /// Waits for the next watch notification.
    pub fn next_event(&mut self) -> std::io::Result<Notification> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        let frame = read_frame(&mut self.stream)?;
        Ok(Notification::parse(&frame))
    }

    /// Whether the server has closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

pub fn open_acl() -> Vec<Acl> {
    vec![Acl::new(31, "world", "anyone")]
}

pub fn create(path: &str, data: &[u8], flags: i32) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path: path.into(),
            data: Some(Bytes::copy_from_slice(data)),
            acl: open_acl(),
            flags,
        },
    }
}

pub fn get_data(path: &str, watch: bool) -> Request {
    Request::GetData(PathWatchRequest {
        path: path.into(),
        watch,
    })
}

pub fn exists(path: &str, watch: bool) -> Request {
    Request::Exists(PathWatchRequest {
        path: path.into(),
        watch,
    })
}

pub fn get_children(path: &str, watch: bool) -> Request {
    Request::GetChildren(PathWatchRequest {
        path: path.into(),
        watch,
    })
}

pub fn set_data(path: &str, data: &[u8], version: i32) -> Request {
    Request::SetData(SetDataRequest {
        path: path.into(),
        data: Some(Bytes::copy_from_slice(data)),
        version,
    })
}

pub fn delete(path: &str, version: i32) -> Request {
    Request::Delete(PathVersionRequest {
        path: path.into(),
        version,
    })
}

/// Sends a four-letter word and returns the text answer.
pub fn four_letter(addr: SocketAddr, word: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(word.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A TCP proxy that can cut the link it stands for: while blocked it refuses new connections and
/// has closed the open ones, as a network partition would. For partition tests between real
/// processes, each member's configuration names proxies for its peers.
pub struct Proxy {
    pub addr: SocketAddr,
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().unwrap();
        let blocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>> = Default::default();
        let (b, o) = (blocked.clone(), open.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if b.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes
                }
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(i2), Ok(o2)) = (inbound.try_clone(), outbound.try_clone()) else {
                    continue;
                };
                {
                    let mut open = o.lock().unwrap();
                    open.push(inbound.try_clone().unwrap());
                    open.push(outbound.try_clone().unwrap());
                }
                pipe(inbound, o2);
                pipe(outbound, i2);
            }
        });
        Proxy {
            addr,
            blocked,
            open,
        }
    }

    /// Cuts the link (true) or restores it (false).
    pub fn block(&self, blocked: bool) {
        self.blocked
            .store(blocked, std::sync::atomic::Ordering::SeqCst);
        if blocked {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}

/// A four-letter word's answer, or `None` if the server is not answering.
pub fn try_four_letter(addr: SocketAddr, word: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(word.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The mode `srvr` shows for the member at `addr` ("leader", "follower", ...), or "" while it
/// does not serve (or cannot be reached).
pub fn mode_of(addr: SocketAddr) -> String {
    try_four_letter(addr, "srvr")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Mode: ").map(str::to_owned))
        .unwrap_or_default()
}

/// Waits (up to 30 s) until every member of `among` (indexes into `addrs`) serves and one of
/// them leads; returns the leader's index.
pub fn wait_for_serving_leader(addrs: &[SocketAddr], among: &[usize]) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let modes: Vec<String> = among.iter().map(|i| mode_of(addrs[*i])).collect();
        if let Some(at) = modes.iter().position(|m| m == "leader") {
            if modes.iter().all(|m| !m.is_empty()) {
                return among[at];
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no serving leader among {among:?}: {modes:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port nothing listens on right now, for a server to bind later. It is taken below the
/// kernel's ephemeral range (32768 and up on Linux): a port the kernel handed out and took back
/// could meanwhile become the source port of any outgoing connection, and the server's bind
/// would then fail. Each test process walks its own stretch of the range, and each port is
/// checked by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(997) % SPAN;
    for _ in 0..SPAN {
        let port = FIRST + (start + NEXT.fetch_add(1, Relaxed)) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// Waits until something accepts connections on `port`.
pub fn wait_listening(port: u16, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed (SIGKILL) when dropped, so a failing test never leaves a
/// server running (one would hold the test's output pipe open).
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `bin server --port PORT --data-dir DIR` (the `corral` binary of the calling test
/// crate) with its log going to `stderr`, and waits until it listens.
pub fn spawn_server(
    bin: &str,
    dir: &std::path::Path,
    port: u16,
    stderr: std::process::Stdio,
) -> KillOnDrop {
    spawn_server_with(bin, dir, port, "", stderr)
}

/// As [`spawn_server`], with `zoo_cfg` (zoo.cfg lines, e.g. `snapCount=100`) written to
/// `DIR.cfg` and given with `--config`; the flags still override the port and data dir.
pub fn spawn_server_with(
    bin: &str,
    dir: &std::path::Path,
    port: u16,
    zoo_cfg: &str,
    stderr: std::process::Stdio,
) -> KillOnDrop {
    let cfg_path = dir.with_extension("cfg");
    if let Some(parent) = cfg_path.parent() {
        std::fs::create_dir_all(parent).expect("the test's directory");
    }
    std::fs::write(&cfg_path, zoo_cfg).expect("write the test's zoo.cfg");
    let child = std::process::Command::new(bin)
        .arg("server")
        .arg("--config")
        .arg(&cfg_path)
        .args([
            "--admin-port",
            "0",
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stderr(stderr)
        .spawn()
        .expect("the corral binary starts");
    let child = KillOnDrop(child);
    wait_listening(port, Duration::from_secs(20));
    child
}
