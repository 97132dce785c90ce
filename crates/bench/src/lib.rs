//! # corral-bench
//!
//! A load generator for any server that speaks ZooKeeper's client protocol (Corral or Apache
//! ZooKeeper alike). Each connection keeps a window of requests in flight; replies come back in
//! request order, so the reader matches each to its send time without a map. With a target rate,
//! latency is measured from when a request was *due*, not when it was sent, so a stalled server
//! is not flattered (coordinated omission).

pub mod plot;

use bytes::Bytes;
use corral_proto::frame::Handshake;
use corral_proto::message::request_frame;
use corral_proto::records::*;
use corral_proto::{Jute, OpCode, Request};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Create,
    GetData,
    SetData,
    Exists,
    Delete,
    GetChildren,
    Multi,
    /// getData with probability `read_ratio`, setData otherwise.
    Mix,
    /// Ephemeral churn: create an ephemeral znode, then delete it, alternately.
    Ephemeral,
    /// Session storm: connect and close sessions as fast as possible (an op is one session).
    Sessions,
    /// Watch fan-out: `connections` sessions watch one znode; one write; an op is one watcher
    /// notified, and its latency the time from the write to that notification.
    Watch,
    /// Concurrent sessions: `connections` sessions held open at once for the duration, each
    /// pinging every few seconds. An op is a session established; its latency is the pings';
    /// errors are sessions that could not be opened or were lost.
    Hold,
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "create" => Workload::Create,
            "get" | "getData" => Workload::GetData,
            "set" | "setData" => Workload::SetData,
            "exists" => Workload::Exists,
            "delete" => Workload::Delete,
            "children" | "getChildren" => Workload::GetChildren,
            "multi" => Workload::Multi,
            "mix" => Workload::Mix,
            "ephemeral" => Workload::Ephemeral,
            "sessions" => Workload::Sessions,
            "watch" => Workload::Watch,
            "hold" => Workload::Hold,
            other => return Err(format!("unknown workload {other:?} (create, get, set, exists, delete, children, multi, mix, ephemeral, sessions, watch, hold)")),
        })
    }
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub hosts: Vec<SocketAddr>,
    pub workload: Workload,
    pub connections: usize,
    /// Requests in flight per connection.
    pub window: usize,
    pub duration: Duration,
    /// Stop after this many operations in all (instead of, or before, the duration).
    pub ops: Option<u64>,
    pub value_size: usize,
    /// Keys pre-created for get/set/exists/delete/mix and children of the getChildren node.
    pub keys: usize,
    pub read_ratio: f64,
    /// Target operations per second over all connections (none: as fast as the window allows).
    pub rate: Option<f64>,
    /// Local addresses to connect from, in turn (e.g. 127.0.0.2, 127.0.0.3): one address has
    /// only ~28k ephemeral ports towards one server. Empty: the system chooses.
    pub source_ips: Vec<std::net::IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {why}")]
    Protocol { addr: SocketAddr, why: String },
    #[error("setup failed: {0}")]
    Setup(String),
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Report {
    pub workload: String,
    pub connections: usize,
    pub window: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Report {
    pub fn table_header() -> &'static str {
        "workload      conns  window        ops   errors   seconds        ops/s    p50_us    p99_us  p99.9_us    max_us"
    }

    pub fn table_row(&self) -> String {
        format!(
            "{:<12} {:>6} {:>7} {:>10} {:>8} {:>9.2} {:>12.0} {:>9} {:>9} {:>9} {:>9}",
            self.workload,
            self.connections,
            self.window,
            self.ops,
            self.errors,
            self.seconds,
            self.ops_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )
    }

    pub fn json(&self) -> String {
        format!(
            "{{\"workload\":\"{}\",\"connections\":{},\"window\":{},\"ops\":{},\"errors\":{},\"seconds\":{:.3},\"ops_per_sec\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
            self.workload, self.connections, self.window, self.ops, self.errors, self.seconds,
            self.ops_per_sec, self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}

/// A connected session with a frame reader and a buffered writer.
struct Session {
    addr: SocketAddr,
    reader: tokio::net::tcp::OwnedReadHalf,
    writer: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
}

/// Turns an error of the exchange with `addr` into a `BenchError`.
fn protocol<E: std::fmt::Display>(addr: SocketAddr) -> impl Fn(E) -> BenchError {
    move |e| BenchError::Protocol {
        addr,
        why: e.to_string(),
    }
}

impl Session {
    /// Writes one request and flushes it.
    async fn send(&mut self, req: &Request) -> Result<(), BenchError> {
        let err = protocol(self.addr);
        self.writer
            .write_all(&request_frame(1, req))
            .await
            .map_err(&err)?;
        self.writer.flush().await.map_err(err)
    }

    /// The error code of the next reply, notifications skipped.
    async fn reply(&mut self) -> Result<i32, BenchError> {
        let (_, err) = reply_err(&mut self.reader)
            .await
            .map_err(protocol(self.addr))?;
        Ok(err)
    }
}

async fn connect(addr: SocketAddr) -> Result<Session, BenchError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| BenchError::Connect { addr, source })?;
    handshake(addr, stream, 8 * 1024).await
}

/// A session from a chosen local address, with a small write buffer (for many idle sessions).
async fn connect_from(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
) -> Result<Session, BenchError> {
    let err = |source| BenchError::Connect { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(err)?;
    }
    let stream = socket.connect(addr).await.map_err(err)?;
    handshake(addr, stream, 256).await
}

async fn handshake(
    addr: SocketAddr,
    stream: TcpStream,
    buffer: usize,
) -> Result<Session, BenchError> {
    stream.set_nodelay(true).ok();
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::with_capacity(buffer, writer);
    let hs = Handshake {
        request: ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            time_out: 30_000,
            session_id: 0,
            passwd: Bytes::from_static(&[0; 16]),
        },
        read_only: Some(false),
    };
    let frame = hs.to_frame();
    let io = |e: std::io::Error| BenchError::Protocol {
        addr,
        why: e.to_string(),
    };
    writer.write_all(&frame).await.map_err(io)?;
    writer.flush().await.map_err(io)?;
    let reply = read_frame(&mut reader).await.map_err(io)?;
    let resp = ConnectResponse::from_bytes(&reply).map_err(|e| BenchError::Protocol {
        addr,
        why: e.to_string(),
    })?;
    if resp.time_out <= 0 {
        return Err(BenchError::Protocol {
            addr,
            why: "session refused".into(),
        });
    }
    Ok(Session {
        addr,
        reader,
        writer,
    })
}

impl Session {
    /// The connection as a blocking std socket (after the handshake, nothing is buffered).
    fn into_std(self) -> Result<std::net::TcpStream, BenchError> {
        let addr = self.addr;
        let stream = self
            .reader
            .reunite(self.writer.into_inner())
            .map_err(protocol(addr))?
            .into_std()
            .map_err(protocol(addr))?;
        stream.set_nonblocking(false).map_err(protocol(addr))?;
        Ok(stream)
    }
}

/// What every connection's driver adds its results to.
struct Counters {
    histogram: Arc<Mutex<Histogram<u64>>>,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

/// One connection at a fixed rate: a sender thread that sleeps until each request is due (the
/// kernel's timers are precise to tens of microseconds) and the calling thread reading replies.
/// Latency counts from when a request was due, so a stalled server is not flattered.
struct Paced {
    addr: SocketAddr,
    conn: usize,
    plan: Arc<Plan>,
    window: usize,
    deadline: Instant,
    limit: Option<u64>,
    interval: Duration,
}

impl Paced {
    fn drive(self, stream: std::net::TcpStream, counters: Counters) -> Result<(), BenchError> {
        use std::io::{Read, Write};
        let addr = self.addr;
        let mut writer = stream.try_clone().map_err(protocol(addr))?;
        let mut reader = std::io::BufReader::new(stream);
        // Bounded by the window: the sender blocks while `window` requests are unanswered,
        // and their due times keep passing, as they would for a real client.
        let (due_tx, due_rx) = std::sync::mpsc::sync_channel::<Instant>(self.window);
        let Paced {
            conn,
            plan,
            deadline,
            limit,
            interval,
            ..
        } = self;
        let sender = std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (conn as u64 + 1));
            let mut due = Instant::now();
            let mut n = 0u64;
            while due < deadline && limit.is_none_or(|l| n < l) {
                due += interval;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let req = plan.request(conn, n, &mut rng);
                n += 1;
                // Queued before it is written, so the reader always finds it by the reply.
                if due_tx.send(due).is_err() {
                    break;
                }
                let frame = request_frame((n % i32::MAX as u64) as i32, &req);
                if writer.write_all(&frame).is_err() {
                    break;
                }
            }
        });
        let mut local =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        let mut frame = Vec::new();
        while let Ok(due) = due_rx.recv() {
            let err = loop {
                let mut len = [0u8; 4];
                reader.read_exact(&mut len).map_err(protocol(addr))?;
                frame.resize(u32::from_be_bytes(len) as usize, 0);
                reader.read_exact(&mut frame).map_err(protocol(addr))?;
                let h = ReplyHeader::from_bytes(&frame).map_err(protocol(addr))?;
                if h.xid != -1 {
                    break h.err;
                }
            };
            let _ = local.record(due.elapsed().as_micros().max(1) as u64);
            counters.done.fetch_add(1, Ordering::Relaxed);
            if err != 0 {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = sender.join();
        counters
            .histogram
            .lock()
            .expect("histogram lock")
            .add(&local)
            .expect("same bounds");
        Ok(())
    }
}

/// The largest reply the load generator takes (a server sends at most its `jute.maxbuffer`).
const MAX_FRAME_LEN: usize = 64 << 20;

async fn read_frame(r: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await?;
    let len =
        corral_proto::frame::checked_len(prefix, MAX_FRAME_LEN).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Reads replies until the one with `xid`, returning its error code (notifications skipped).
async fn reply_err(r: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<(i32, i32)> {
    loop {
        let frame = read_frame(r).await?;
        let h = ReplyHeader::from_bytes(&frame).map_err(std::io::Error::other)?;
        if h.xid != -1 {
            return Ok((h.xid, h.err));
        }
    }
}

fn open_acl() -> Vec<Acl> {
    vec![Acl::new(31, "world", "anyone")]
}

fn create_req(path: String, value: &Bytes) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path,
            data: Some(value.clone()),
            acl: open_acl(),
            flags: 0,
        },
    }
}

/// A small deterministic generator per connection (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Plan {
    root: String,
    value: Bytes,
    keys: usize,
    workload: Workload,
    read_ratio: f64,
}

impl Plan {
    fn key(&self, i: u64) -> String {
        format!("{}/k{:08}", self.root, i % self.keys as u64)
    }

    fn request(&self, conn: usize, n: u64, rng: &mut Rng) -> Request {
        let pick = |rng: &mut Rng| self.key(rng.next());
        match self.workload {
            Workload::Create => create_req(format!("{}/c{conn}-{n}", self.root), &self.value),
            Workload::GetData => Request::GetData(PathWatchRequest {
                path: pick(rng),
                watch: false,
            }),
            Workload::Exists => Request::Exists(PathWatchRequest {
                path: pick(rng),
                watch: false,
            }),
            Workload::SetData => Request::SetData(SetDataRequest {
                path: pick(rng),
                data: Some(self.value.clone()),
                version: -1,
            }),
            Workload::Delete => Request::Delete(PathVersionRequest {
                path: format!("{}/d{conn}-{n}", self.root),
                version: -1,
            }),
            Workload::GetChildren => Request::GetChildren(PathWatchRequest {
                path: self.root.clone(),
                watch: false,
            }),
            Workload::Multi => Request::Multi(
                (0..3)
                    .map(|_| {
                        Request::SetData(SetDataRequest {
                            path: pick(rng),
                            data: Some(self.value.clone()),
                            version: -1,
                        })
                    })
                    .collect(),
            ),
            Workload::Ephemeral => {
                let path = format!("{}/e{conn}-{}", self.root, n / 2);
                if n.is_multiple_of(2) {
                    Request::Create {
                        op: OpCode::Create,
                        req: CreateRequest {
                            path,
                            data: Some(self.value.clone()),
                            acl: open_acl(),
                            flags: 1,
                        },
                    }
                } else {
                    Request::Delete(PathVersionRequest { path, version: -1 })
                }
            }
            // Driven by their own loops, not by this request stream.
            Workload::Sessions | Workload::Watch | Workload::Hold => Request::Ping,
            Workload::Mix => {
                if (rng.next() % 10_000) as f64 / 10_000.0 < self.read_ratio {
                    Request::GetData(PathWatchRequest {
                        path: pick(rng),
                        watch: false,
                    })
                } else {
                    Request::SetData(SetDataRequest {
                        path: pick(rng),
                        data: Some(self.value.clone()),
                        version: -1,
                    })
                }
            }
        }
    }
}

/// Sends `reqs` pipelined on one session and checks that all succeeded.
async fn pipelined(s: &mut Session, reqs: Vec<Request>) -> Result<(), BenchError> {
    let addr = s.addr;
    let io = |e: std::io::Error| BenchError::Setup(format!("{addr}: {e}"));
    for chunk in reqs.chunks(500) {
        for (i, r) in chunk.iter().enumerate() {
            s.writer
                .write_all(&request_frame(i as i32 + 1, r))
                .await
                .map_err(io)?;
        }
        s.writer.flush().await.map_err(io)?;
        for _ in chunk {
            let (_, err) = reply_err(&mut s.reader).await.map_err(io)?;
            if err != 0 && err != -110 {
                return Err(BenchError::Setup(format!(
                    "setup request failed with error {err}"
                )));
            }
        }
    }
    Ok(())
}

/// Runs one benchmark; `progress` is called about once a second with operations done so far.
pub async fn run(
    cfg: BenchConfig,
    progress: impl Fn(u64, Duration) + Send + 'static,
) -> Result<Report, BenchError> {
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let plan = Arc::new(Plan {
        root: format!("/corral-bench-{run_id}"),
        value: Bytes::from(vec![b'v'; cfg.value_size]),
        keys: cfg.keys.max(1),
        workload: cfg.workload,
        read_ratio: cfg.read_ratio,
    });
    // Setup: the root, the keys, and for delete the nodes each connection will delete.
    let mut setup = connect(cfg.hosts[0]).await?;
    let mut reqs = vec![create_req(plan.root.clone(), &Bytes::new())];
    reqs.extend((0..plan.keys as u64).map(|i| create_req(plan.key(i), &plan.value)));
    if cfg.workload == Workload::Delete {
        let per_conn = cfg.ops.unwrap_or(10_000) / cfg.connections as u64 + 1;
        for conn in 0..cfg.connections {
            reqs.extend(
                (0..per_conn)
                    .map(|n| create_req(format!("{}/d{conn}-{n}", plan.root), &Bytes::new())),
            );
        }
    }
    pipelined(&mut setup, reqs).await?;

    match cfg.workload {
        Workload::Sessions => return session_storm(&cfg, progress).await,
        Workload::Watch => return watch_fanout(&cfg, &plan).await,
        Workload::Hold => return hold_sessions(&cfg, progress).await,
        _ => {}
    }
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    ));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let per_conn_ops = cfg.ops.map(|o| o.div_ceil(cfg.connections as u64));
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r));
    let mut tasks = Vec::new();
    for conn in 0..cfg.connections {
        let session = connect(cfg.hosts[conn % cfg.hosts.len()]).await?;
        let plan = plan.clone();
        let (histogram, done, errors) = (histogram.clone(), done.clone(), errors.clone());
        let window = cfg.window.max(1);
        let counters = Counters {
            histogram,
            done,
            errors,
        };
        tasks.push(match interval {
            // Paced on OS threads: tokio's timer rounds every sleep up to the next millisecond,
            // which would add up to 1 ms of the client's own making to every latency.
            Some(interval) => {
                let run = Paced {
                    addr: session.addr,
                    conn,
                    plan,
                    window,
                    deadline,
                    limit: per_conn_ops,
                    interval,
                };
                let stream = session.into_std()?;
                tokio::task::spawn_blocking(move || run.drive(stream, counters))
            }
            None => tokio::spawn(async move {
                drive(
                    session,
                    conn,
                    plan,
                    window,
                    deadline,
                    per_conn_ops,
                    counters,
                )
                .await
            }),
        });
    }
    let reporter = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress(done.load(Ordering::Relaxed), started.elapsed());
            }
        })
    };
    for t in tasks {
        t.await.map_err(|e| BenchError::Setup(e.to_string()))??;
    }
    reporter.abort();
    let seconds = started.elapsed().as_secs_f64();
    let h = histogram.lock().expect("histogram lock");
    let ops = done.load(Ordering::Relaxed);
    Ok(Report {
        workload: format!("{:?}", cfg.workload).to_lowercase(),
        connections: cfg.connections,
        window: cfg.window,
        ops,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        ops_per_sec: ops as f64 / seconds,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    })
}

fn report(cfg: &BenchConfig, h: &Histogram<u64>, ops: u64, errors: u64, seconds: f64) -> Report {
    Report {
        workload: format!("{:?}", cfg.workload).to_lowercase(),
        connections: cfg.connections,
        window: cfg.window,
        ops,
        errors,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Sessions opened and closed by `connections` loops, for the duration or op count.
async fn session_storm(
    cfg: &BenchConfig,
    progress: impl Fn(u64, Duration) + Send + 'static,
) -> Result<Report, BenchError> {
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let per_conn = cfg.ops.map(|o| o.div_ceil(cfg.connections as u64));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for conn in 0..cfg.connections {
        let addr = cfg.hosts[conn % cfg.hosts.len()];
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = new_histogram();
            let mut n = 0u64;
            while Instant::now() < deadline && per_conn.is_none_or(|l| n < l) {
                let t = Instant::now();
                let mut s = connect(addr).await?;
                s.send(&Request::CloseSession).await?;
                s.reply().await?;
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, BenchError>(h)
        }));
    }
    let reporter = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress(done.load(Ordering::Relaxed), started.elapsed());
            }
        })
    };
    let mut all = new_histogram();
    for t in tasks {
        let h = t.await.map_err(|e| BenchError::Setup(e.to_string()))??;
        all.add(h).expect("same bounds");
    }
    reporter.abort();
    let ops = done.load(Ordering::Relaxed);
    Ok(report(cfg, &all, ops, 0, started.elapsed().as_secs_f64()))
}

/// How often a held session pings (its timeout is 30 s; clients ping at a third of it or more
/// often).
const HOLD_PING_EVERY: Duration = Duration::from_secs(5);

/// Opens `connections` sessions (at most 256 handshakes at a time), holds them all for the
/// duration with pings, and reports how many were established and how many stayed up.
async fn hold_sessions(
    cfg: &BenchConfig,
    progress: impl Fn(u64, Duration) + Send + 'static,
) -> Result<Report, BenchError> {
    let started = Instant::now();
    let opening = Arc::new(Semaphore::new(256));
    let established = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let (all_open_tx, _) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(cfg.connections);
    for conn in 0..cfg.connections {
        let addr = cfg.hosts[conn % cfg.hosts.len()];
        let source =
            (!cfg.source_ips.is_empty()).then(|| cfg.source_ips[conn % cfg.source_ips.len()]);
        let (opening, established, failed) = (opening.clone(), established.clone(), failed.clone());
        let (held, lost) = (held.clone(), lost.clone());
        let mut all_open = all_open_tx.subscribe();
        let hold_for = cfg.duration;
        tasks.push(tokio::spawn(async move {
            let mut h = new_histogram();
            let session = {
                let _permit = opening.acquire().await.expect("semaphore open");
                connect_from(source, addr).await
            };
            let Ok(mut s) = session else {
                failed.fetch_add(1, Ordering::Relaxed);
                return h;
            };
            established.fetch_add(1, Ordering::Relaxed);
            // Pings from the start (a session waiting for the others must not expire); the hold
            // window starts once every session is open, and all are held through it together.
            let mut until: Option<Instant> = None;
            loop {
                if until.is_none() && *all_open.borrow() {
                    until = Some(Instant::now() + hold_for);
                }
                if until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(HOLD_PING_EVERY) => {}
                    _ = all_open.changed(), if until.is_none() => continue,
                }
                let t = Instant::now();
                if s.send(&Request::Ping).await.is_err() || s.reply().await.is_err() {
                    lost.fetch_add(1, Ordering::Relaxed);
                    return h;
                }
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
            }
            held.fetch_add(1, Ordering::Relaxed);
            h
        }));
    }
    while established.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed)
        < cfg.connections as u64
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        progress(established.load(Ordering::Relaxed), started.elapsed());
    }
    let _ = all_open_tx.send(true);
    let mut all = new_histogram();
    for t in tasks {
        all.add(t.await.map_err(|e| BenchError::Setup(e.to_string()))?)
            .expect("same bounds");
    }
    // An op is a session held through the whole window; errors, sessions never opened or lost.
    let held = held.load(Ordering::Relaxed);
    let not_held = failed.load(Ordering::Relaxed) + lost.load(Ordering::Relaxed);
    Ok(report(
        cfg,
        &all,
        held,
        not_held,
        started.elapsed().as_secs_f64(),
    ))
}

/// `connections` sessions each watch one znode; it is changed; the delay from the write to each
/// notification being read is recorded. Repeated for the duration (at least once).
async fn watch_fanout(cfg: &BenchConfig, plan: &Plan) -> Result<Report, BenchError> {
    let target = plan.key(0);
    let mut watchers = Vec::with_capacity(cfg.connections);
    for conn in 0..cfg.connections {
        watchers.push(connect(cfg.hosts[conn % cfg.hosts.len()]).await?);
    }
    let mut writer = connect(cfg.hosts[0]).await?;
    let mut h = new_histogram();
    let started = Instant::now();
    let mut ops = 0u64;
    let mut rounds = 0;
    while rounds == 0 || started.elapsed() < cfg.duration {
        rounds += 1;
        let watch = Request::GetData(PathWatchRequest {
            path: target.clone(),
            watch: true,
        });
        for s in watchers.iter_mut() {
            s.send(&watch).await?;
        }
        for s in watchers.iter_mut() {
            s.reply().await?;
        }
        let change = Request::SetData(SetDataRequest {
            path: target.clone(),
            data: Some(plan.value.clone()),
            version: -1,
        });
        let changed = Instant::now();
        writer.send(&change).await?;
        // Each watcher's next frame is its notification (the server sends them at the write).
        for s in watchers.iter_mut() {
            let err = protocol(s.addr);
            let frame = read_frame(&mut s.reader).await.map_err(&err)?;
            let header = ReplyHeader::from_bytes(&frame).map_err(protocol(s.addr))?;
            if header.xid != -1 {
                return Err(protocol(s.addr)("expected a watch notification"));
            }
            let _ = h.record(changed.elapsed().as_micros().max(1) as u64);
            ops += 1;
        }
        writer.reply().await?;
    }
    Ok(report(cfg, &h, ops, 0, started.elapsed().as_secs_f64()))
}

async fn drive(
    session: Session,
    conn: usize,
    plan: Arc<Plan>,
    window: usize,
    deadline: Instant,
    limit: Option<u64>,
    counters: Counters,
) -> Result<(), BenchError> {
    let Counters {
        histogram,
        done,
        errors,
    } = counters;
    let Session {
        addr,
        mut reader,
        mut writer,
    } = session;
    let permits = Arc::new(Semaphore::new(window));
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
    let writer_permits = permits.clone();
    let sender = tokio::spawn(async move {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (conn as u64 + 1));
        let mut n = 0u64;
        while Instant::now() < deadline && limit.is_none_or(|l| n < l) {
            let permit = writer_permits.acquire().await.expect("semaphore open");
            permit.forget();
            let due = Instant::now();
            let req = plan.request(conn, n, &mut rng);
            n += 1;
            if writer
                .write_all(&request_frame((n % i32::MAX as u64) as i32, &req))
                .await
                .is_err()
            {
                break;
            }
            let _ = sent_tx.send(due);
            // Flush when nothing more can be sent right now: one syscall for a burst.
            if writer_permits.available_permits() == 0 && writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
        drop(sent_tx);
        // Handed back, not dropped: closing our half now would make the server close the
        // connection before the last replies are read.
        writer
    });
    let mut outstanding: VecDeque<Instant> = VecDeque::new();
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    loop {
        // Wait for a request to be in flight (or for the sender to finish).
        if outstanding.is_empty() {
            match sent_rx.recv().await {
                Some(t) => outstanding.push_back(t),
                None => break,
            }
        }
        let (_, err) = reply_err(&mut reader)
            .await
            .map_err(|e| BenchError::Protocol {
                addr,
                why: e.to_string(),
            })?;
        // A request's time is queued before the request is flushed, so by its reply it is here.
        while let Ok(t) = sent_rx.try_recv() {
            outstanding.push_back(t);
        }
        let Some(t) = outstanding.pop_front() else {
            return Err(BenchError::Protocol {
                addr,
                why: "a reply no request asked for".into(),
            });
        };
        let _ = local.record(t.elapsed().as_micros().max(1) as u64);
        done.fetch_add(1, Ordering::Relaxed);
        if err != 0 {
            errors.fetch_add(1, Ordering::Relaxed);
        }
        permits.add_permits(1);
    }
    let writer = sender.await;
    drop(writer);
    histogram
        .lock()
        .expect("histogram lock")
        .add(&local)
        .expect("same bounds");
    Ok(())
}
