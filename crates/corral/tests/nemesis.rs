//! The nemesis suite: real `corral` processes, each in its own network namespace, cut apart,
//! paused and killed while clients run a lock recipe, a register and a counter against them.
//!
//! Each member runs inside a namespace of `corral_testkit::netns`: its peers reach it over a
//! network the test cuts (packets dropped silently, as in a real partition), its clients (this
//! test's threads, in the root namespace) over a link no fault touches, so a member cut off from
//! its quorum still has its clients, which is when the serving rule matters. The settings are
//! the issue's own, scaled down: tickTime 500 ms, syncLimit 2, lock sessions of 2 s.
//!
//! Checked every run:
//! - no two lock holders overlap, a holder counting until its client sees Disconnected;
//! - the register's and the counter's histories are linearizable;
//! - a member cut off from its quorum stops serving within its lease;
//! - after healing, every member holds the same tree, the lock clients' ephemerals are gone
//!   with their sessions, and the lock is taken again.
//!
//! Every test prints its seed and the schedule the seed gave; `CORRAL_NEMESIS_SEED=<seed>` replays
//! a schedule. The tests need root (`ip netns`); without it they say so and pass, unless
//! `CORRAL_REQUIRE_NETNS` is set.

use corral_proto::{Jute, PathRequest, Request, Response};
use corral_testkit::linearizable::{self, State, Workload};
use corral_testkit::lock::{self, LockConfig};
use corral_testkit::netns::{self, Network};
use corral_testkit::{create, get_children, try_four_letter, wait_for_serving_leader, RawClient};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TICK_MS: u64 = 500;
const SYNC_LIMIT: u64 = 2;
/// The lease: min(syncLimit × tickTime, minSessionTimeout = 2 ticks), less 1% drift.
const LEASE: Duration = Duration::from_millis(990);
/// openraft's vote lease (election_timeout_max): no new leader is elected sooner after the
/// last quorum acknowledgement.
const VOTE_LEASE: Duration = Duration::from_millis(350);
/// The shortest session the majority could expire: minSessionTimeout, 2 ticks.
const MIN_SESSION: Duration = Duration::from_millis(2 * TICK_MS);
/// The lock clients' sessions. A fault lasts at least 4.5 s: long enough for the majority to
/// elect (up to 0.7 s), expire the sessions of the member hit (a fresh 2 s) and hand the lock on.
const LOCK_SESSION_MS: i32 = 2000;
/// How long the clients go on after the last fault is healed: time to elect, rejoin and take the
/// lock again, with room for a loaded machine.
const AFTER_HEALING: Duration = Duration::from_secs(8);

/// Where a member's admin HTTP server listens: its client address, this far above the client port.
const ADMIN_PORT_OFFSET: u16 = 1000;

/// The tests share the machine's two cores: one at a time keeps their timing honest.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Member {
    client: SocketAddr,
    /// The admin HTTP server, for `/ready`.
    admin: SocketAddr,
    cfg: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A 3-member ensemble, one member per network namespace.
struct Cluster {
    members: Vec<Member>,
    dir: PathBuf,
    // Dropped last: it kills whatever still runs in its namespaces.
    net: Network,
}

impl Cluster {
    fn start(net: Network) -> Cluster {
        let dir = corral_testkit::temp_data_dir();
        let n = net.hosts();
        // Each cluster of this run on its own client port: clients of an earlier test that
        // failed (and left its threads running) cannot reach a later test's members, which may
        // be given the same addresses.
        static CLUSTERS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let port = 2181 + CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let servers: String = (0..n)
            .map(|j| format!("server.{}={}:2888:3888\n", j + 1, net.peer_addr(j)))
            .collect();
        let members = (0..n)
            .map(|i| {
                let data = dir.join(format!("m{}", i + 1));
                std::fs::create_dir_all(&data).unwrap();
                std::fs::write(data.join("myid"), format!("{}\n", i + 1)).unwrap();
                let cfg = dir.join(format!("zoo{}.cfg", i + 1));
                let text = format!(
                    "tickTime={TICK_MS}\ninitLimit=10\nsyncLimit={SYNC_LIMIT}\ndataDir={}\n\
                     clientPort={port}\nclientPortAddress={}\n4lw.commands.whitelist=*\n\
                     maxClientCnxns=0\nadmin.serverAddress={}\nadmin.serverPort={}\n{servers}",
                    data.display(),
                    net.client_addr(i),
                    net.client_addr(i),
                    port + ADMIN_PORT_OFFSET
                );
                std::fs::write(&cfg, text).unwrap();
                Member {
                    client: SocketAddr::new(net.client_addr(i).into(), port),
                    admin: SocketAddr::new(net.client_addr(i).into(), port + ADMIN_PORT_OFFSET),
                    cfg,
                    log: dir.join(format!("m{}.log", i + 1)),
                    child: None,
                }
            })
            .collect();
        let mut cluster = Cluster { members, dir, net };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let child = self
            .net
            .command(i, env!("CARGO_BIN_EXE_corral"))
            .args(["server", "--config"])
            .arg(&m.cfg)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        m.child = Some(child);
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.client).collect()
    }

    fn pid(&self, i: usize) -> i32 {
        self.members[i].child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, i: usize, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid(i).to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} member {}", i + 1);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until all of `among` serve and one of them leads; returns the leader.
    fn wait_for_leader(&self, among: &[usize]) -> usize {
        wait_for_serving_leader(&self.addrs(), among)
    }

    /// How long after `since` member `i` stopped serving (srvr says so); panics past `within`.
    fn stops_serving(&self, i: usize, since: Instant, within: Duration) -> Duration {
        loop {
            let answer = try_four_letter(self.members[i].client, "srvr").unwrap_or_default();
            if answer.starts_with("This ZooKeeper instance is not currently serving requests") {
                let took = since.elapsed();
                let ready = self.ready_status(i);
                assert_eq!(ready, 503, "/ready of a member that does not serve");
                return took;
            }
            assert!(
                since.elapsed() < within,
                "member {} still serving {:?} after it was cut off:\n{answer}",
                i + 1,
                since.elapsed()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The HTTP status of the member's admin `/ready`.
    fn ready_status(&self, i: usize) -> u16 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.members[i].admin).expect("admin port");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /ready HTTP/1.0\r\nHost: corral\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- member {} ---\n{}\n", i + 1, tail.join("\n"))
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(c) = &self.members[i].child {
                // A paused member must wake to die promptly.
                let _ = Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status();
            }
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The seed of this run (`CORRAL_NEMESIS_SEED` replays one), printed with the test's name.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("CORRAL_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {seed} (replay with CORRAL_NEMESIS_SEED={seed})");
    seed
}

/// A small deterministic generator: the schedule is a function of the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// A client that pipelines its writes, ten at a time, through one member after another, and what
/// it saw: the creates it sent on each session and the czxid of each acknowledged one.
#[derive(Default)]
struct Pipelined {
    /// Per session, the numbers of the creates sent on it, in order.
    sent: std::collections::BTreeMap<i64, Vec<u64>>,
    /// (session, number, czxid) of every acknowledged create.
    acked: Vec<(i64, u64, i64)>,
}

fn pipe_path(session: i64, n: u64) -> String {
    format!("/pipe/{session:016x}-{n:08}")
}

/// Reads a session's create replies until its connection fails; each must answer the next
/// request in order. Returns (session, number, czxid) of the acknowledged ones.
fn read_creates(
    mut s: std::net::TcpStream,
    session: i64,
    first: u64,
    in_flight: &std::sync::atomic::AtomicUsize,
) -> Vec<(i64, u64, i64)> {
    let mut acked = Vec::new();
    let mut next_xid = 1;
    while let Ok(frame) = corral_testkit::read_frame(&mut s) {
        let header = corral_proto::ReplyHeader::from_bytes(&frame).expect("a reply header");
        if header.xid == -1 {
            continue; // a watch event
        }
        assert_eq!(
            header.xid, next_xid,
            "session {session:#x}: a reply out of request order"
        );
        let n = first + (next_xid - 1) as u64;
        next_xid += 1;
        in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if header.err == 0 {
            let body = Response::decode(corral_proto::OpCode::Create2, &frame[16..]);
            if let Ok(Response::Create2(created)) = body {
                acked.push((session, n, created.stat.czxid));
            }
        }
    }
    acked
}

impl Pipelined {
    /// Keeps up to 50 creates in flight on each session, sending the next while earlier ones
    /// are unanswered (as an asynchronous client does), until `until`.
    fn run(addrs: Vec<SocketAddr>, until: Instant) -> Pipelined {
        let mut seen = Pipelined::default();
        let mut member = 1 % addrs.len();
        let mut n = 0u64;
        while Instant::now() < until {
            let c = RawClient::resume(
                addrs[member],
                0,
                bytes::Bytes::from_static(&[0; 16]),
                0,
                4000,
            );
            member = (member + 1) % addrs.len();
            let Ok(mut c) = c else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let session = c.session_id;
            let _ = c.stream.set_read_timeout(Some(Duration::from_secs(3)));
            let reading = c.stream.try_clone().expect("a second handle on the socket");
            let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let first = n;
            let replies = {
                let in_flight = in_flight.clone();
                std::thread::spawn(move || read_creates(reading, session, first, &in_flight))
            };
            // Send until the reader gives up on the connection (or the run ends).
            while Instant::now() < until && !replies.is_finished() {
                if in_flight.load(std::sync::atomic::Ordering::Relaxed) >= 50 {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let req = Request::Create {
                    op: corral_proto::OpCode::Create2,
                    req: corral_proto::CreateRequest {
                        path: pipe_path(session, n),
                        data: Some(bytes::Bytes::new()),
                        acl: corral_testkit::open_acl(),
                        flags: 0,
                    },
                };
                in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c.send((n - first) as i32 + 1, &req);
                seen.sent.entry(session).or_default().push(n);
                n += 1;
            }
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            seen.acked.extend(replies.join().expect("the reply reader"));
        }
        seen
    }

    /// Each session's acknowledged writes were applied in the order it sent them, and none
    /// was applied without every write it sent before it.
    fn check(&self, cluster: &Cluster) {
        let mut by_session: std::collections::BTreeMap<i64, Vec<(u64, i64)>> = Default::default();
        for (session, n, czxid) in &self.acked {
            by_session.entry(*session).or_default().push((*n, *czxid));
        }
        let mut c = RawClient::connect(cluster.members[0].client);
        assert_eq!(
            c.call(Request::Sync(PathRequest { path: "/".into() })).err,
            0
        );
        for (session, mut acked) in by_session {
            acked.sort();
            for pair in acked.windows(2) {
                assert!(
                    pair[0].1 < pair[1].1,
                    "session {session:#x}: create {} applied at {:#x}, after create {} at {:#x}",
                    pair[0].0,
                    pair[0].1,
                    pair[1].0,
                    pair[1].1
                );
            }
            let last = acked.last().expect("at least one").0;
            for n in self.sent[&session].iter().filter(|n| **n < last) {
                let r = c.call(corral_testkit::exists(&pipe_path(session, *n), false));
                assert_eq!(
                    r.err, 0,
                    "session {session:#x}: create {n} missing, though create {last}, sent after \
                     it, was applied"
                );
            }
        }
        eprintln!(
            "pipelined writes: {} acknowledged, in order",
            self.acked.len()
        );
    }
}

/// How long linearizability clients pause between operations: histories of a few thousand
/// operations, which the checker goes through in a second or two.
const PACE: Duration = Duration::from_millis(5);

/// The clients' work during the faults, running on threads until `until`.
struct Workloads {
    locks: std::thread::JoinHandle<Vec<lock::Holding>>,
    pipelined: std::thread::JoinHandle<Pipelined>,
    /// A client that took the lock through the member a fault hit, and held it until it saw
    /// Disconnected.
    long_holder: Option<std::thread::JoinHandle<Option<lock::Holding>>>,
    register: std::thread::JoinHandle<Vec<linearizable::Event>>,
    counter: std::thread::JoinHandle<Vec<linearizable::Event>>,
}

impl Workloads {
    /// Starts the clients, to run for `run_for`. `hold_through`: a member through which one
    /// client takes the lock first and holds it until it sees Disconnected (the member a fault
    /// will hit); it holds the lock when this returns.
    fn start(
        cluster: &Cluster,
        seed: u64,
        hold_through: Option<usize>,
        run_for: Duration,
    ) -> Workloads {
        let leader = cluster.wait_for_leader(&[0, 1, 2]);
        let mut c = RawClient::connect(cluster.members[leader].client);
        for path in ["/lock", "/register", "/counter", "/pipe"] {
            let data: &[u8] = if path == "/lock" || path == "/pipe" {
                b""
            } else {
                b"0"
            };
            assert_eq!(c.call(create(path, data, 0)).err, 0);
        }
        let addrs = cluster.addrs();
        let cfg = LockConfig {
            path: "/lock".into(),
            clients: 4,
            session_timeout_ms: LOCK_SESSION_MS,
            hold_ms: (100, 600),
            seed,
        };
        // The long holder goes first, alone in the queue: it holds the lock at once, and the
        // run's length does not depend on how long it waited.
        let holder_until = Instant::now() + run_for + Duration::from_secs(2);
        let long_holder = hold_through.map(|member| {
            let (acquired, held) = std::sync::mpsc::channel();
            let addr = cluster.members[member].client;
            let cfg = cfg.clone();
            let t = std::thread::spawn(move || {
                lock::hold_until_lost(addr, &cfg, holder_until, acquired)
            });
            held.recv_timeout(Duration::from_secs(20))
                .expect("a client of the member took the lock");
            t
        });
        let until = Instant::now() + run_for;
        let locks = {
            let addrs = addrs.clone();
            let cfg = cfg.clone();
            std::thread::spawn(move || lock::run(&addrs, &cfg, until))
        };
        let record = |path: &'static str, workload| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                linearizable::record_paced(&addrs, path, 3, until, workload, PACE)
            })
        };
        let pipelined = {
            let addrs = addrs.clone();
            std::thread::spawn(move || Pipelined::run(addrs, until))
        };
        Workloads {
            locks,
            pipelined,
            long_holder,
            register: record("/register", Workload::Register),
            counter: record("/counter", Workload::Counter),
        }
    }

    /// Joins the clients and checks what they saw. `fault`: when the member of the long
    /// holder was hit, if one was.
    fn check(self, cluster: &Cluster, fault: Option<Instant>, healed_at: Instant) {
        let mut holdings = self.locks.join().expect("lock clients");
        self.pipelined
            .join()
            .expect("the pipelining client")
            .check(cluster);
        if let (Some(t), Some(fault)) = (self.long_holder, fault) {
            let long = t.join().expect("long holder").expect("it held the lock");
            assert!(
                long.lost,
                "the client of the member hit never saw Disconnected"
            );
            let noticed = long.to.saturating_duration_since(fault);
            eprintln!("lock: the member's client saw Disconnected {noticed:?} after the fault");
            let taken_over = holdings
                .iter()
                .filter(|h| h.from > long.to && h.from < healed_at)
                .count();
            assert!(
                taken_over > 0,
                "the majority's clients never took the lock over"
            );
            holdings.push(long);
        }
        if let Some((a, b)) = lock::overlap(&holdings) {
            panic!(
                "two clients held the lock at once: client {} (session {:#x}, {:?} long, \
                 lost: {}) until {:?} after client {} (session {:#x}) took it\n{}",
                a.client,
                a.session,
                a.to - a.from,
                a.lost,
                a.to - b.from,
                b.client,
                b.session,
                cluster.logs()
            );
        }
        let after_heal = holdings.iter().filter(|h| h.from > healed_at).count();
        let lost = holdings.iter().filter(|h| h.lost).count();
        eprintln!(
            "lock: {} holdings ({lost} ended by Disconnected), {after_heal} after healing",
            holdings.len()
        );
        if after_heal == 0 {
            let last = holdings.iter().map(|h| h.from).max();
            panic!(
                "nobody took the lock after healing; the last took it {:?} before\n{}",
                last.map(|l| healed_at.saturating_duration_since(l)),
                cluster.logs()
            );
        }
        let start = State {
            value: 0,
            version: 0,
        };
        for (name, t) in [("register", self.register), ("counter", self.counter)] {
            let history = t.join().expect("linearizability clients");
            let checking = Instant::now();
            let answered = history.iter().filter(|e| e.answered != u64::MAX).count();
            eprintln!("{name}: {} operations, {answered} answered", history.len());
            assert!(answered > 10, "the {name} made no progress");
            if let Err(e) = linearizable::check(&history, start) {
                panic!("{name} history not linearizable: {e}");
            }
            eprintln!("{name}: checked in {:?}", checking.elapsed());
        }
    }
}

/// After healing: every member holds the same lock children (none: the lock clients closed
/// their sessions) once synced, and the data the workloads wrote.
fn converged(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views: Vec<Option<(Vec<String>, Vec<u8>)>> =
            (0..3).map(|i| view(cluster.members[i].client)).collect();
        let settled = views
            .iter()
            .all(|v| v.as_ref().is_some_and(|(kids, _)| kids.is_empty()));
        if settled && views.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members did not converge (lock children, counter): {views:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A member's synced view: the lock's children and the counter's value.
fn view(addr: SocketAddr) -> Option<(Vec<String>, Vec<u8>)> {
    let mut c = RawClient::resume(addr, 0, bytes::Bytes::from_static(&[0; 16]), 0, 4000).ok()?;
    let synced = c.try_call(Request::Sync(PathRequest { path: "/".into() }));
    if !synced.is_ok_and(|r| r.err == 0) {
        return None;
    }
    let Ok(Some(Response::GetChildren(mut kids))) =
        c.try_call(get_children("/lock", false)).map(|r| r.body)
    else {
        return None;
    };
    kids.sort();
    let counter = match c.try_call(corral_testkit::get_data("/counter", false)) {
        Ok(r) => match r.body {
            Some(Response::GetData(d)) => d.data.map(|b| b.to_vec()).unwrap_or_default(),
            _ => return None,
        },
        Err(_) => return None,
    };
    let _ = c.try_call(Request::CloseSession);
    Some((kids, counter))
}

/// The network for a test, or why there can be none here. With `CORRAL_REQUIRE_NETNS` set (as
/// scripts/test.sh sets it when it runs as root), a network that cannot be built fails the test
/// rather than skipping it.
fn network(test: &str) -> Option<Network> {
    if let Some(why) = netns::unavailable() {
        assert!(
            std::env::var_os("CORRAL_REQUIRE_NETNS").is_none(),
            "{test}: network namespaces are required here: {why}"
        );
        eprintln!("{test}: skipped: {why}");
        return None;
    }
    Some(Network::new(3).expect("network namespaces"))
}

/// The earliest a member cut off at `cut` could see a session of its clients expired by the
/// majority: a new leader, then a fresh shortest session. It must stop serving before then.
fn expiry_bound() -> Duration {
    VOTE_LEASE + MIN_SESSION
}

/// Cuts a member off from the other two, while the workloads run; it must stop serving within
/// its lease, and the lock stays safe. `pick` chooses which member from the leader.
fn isolate_one(test: &str, pick: impl Fn(usize) -> usize) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(net) = network(test) else { return };
    let seed = seed(test);
    let mut rng = Rng(seed | 1);
    let cluster = Cluster::start(net);
    let cut_for = rng.millis(4500, 6000);
    let before = rng.millis(1000, 2000);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let victim = pick(leader);
    let run_for = before + cut_for + AFTER_HEALING;
    let work = Workloads::start(&cluster, seed, Some(victim), run_for);
    std::thread::sleep(before);
    eprintln!(
        "{test}: schedule: isolate member {} (leader {}) for {cut_for:?}",
        victim + 1,
        leader + 1
    );
    let cut = Instant::now();
    cluster.net.isolate(victim);
    let stopped = cluster.stops_serving(victim, cut, expiry_bound());
    eprintln!(
        "{test}: the cut-off member stopped serving {stopped:?} after the cut (lease {LEASE:?})"
    );
    let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    cluster.wait_for_leader(&others);
    std::thread::sleep(cut_for.saturating_sub(cut.elapsed()));
    cluster.net.heal_all();
    let healed = Instant::now();
    cluster.wait_for_leader(&[0, 1, 2]);
    for i in 0..3 {
        assert_eq!(cluster.ready_status(i), 200, "/ready of member {}", i + 1);
    }
    work.check(&cluster, Some(cut), healed);
    converged(&cluster);
}

#[test]
fn lock_stays_safe_when_the_leader_is_cut_off() {
    isolate_one("leader cut off", |leader| leader);
}

#[test]
fn lock_stays_safe_when_a_follower_is_cut_off() {
    isolate_one("follower cut off", |leader| (leader + 1) % 3);
}

#[test]
fn lock_stays_safe_while_the_majority_moves() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let test = "moving split";
    let Some(net) = network(test) else { return };
    let seed = seed(test);
    let mut rng = Rng(seed | 1);
    let cluster = Cluster::start(net);
    // Three splits, each leaving a different member in the minority.
    let first = rng.below(3) as usize;
    let schedule: Vec<(usize, Duration, Duration)> = (0..3)
        .map(|k| {
            (
                (first + k) % 3,
                rng.millis(2000, 3500),
                rng.millis(1000, 2500),
            )
        })
        .collect();
    eprintln!("{test}: schedule (minority member, cut, healed after): {schedule:?}");
    let total: Duration = schedule.iter().map(|(_, c, h)| *c + *h).sum();
    let run_for = Duration::from_secs(1) + total + AFTER_HEALING;
    let work = Workloads::start(&cluster, seed, None, run_for);
    std::thread::sleep(Duration::from_secs(1));
    let mut healed = Instant::now();
    for (minority, cut_for, heal_for) in schedule {
        let majority: Vec<usize> = (0..3).filter(|i| *i != minority).collect();
        let cut = Instant::now();
        cluster.net.split(&[&majority, &[minority]]);
        cluster.stops_serving(minority, cut, expiry_bound());
        std::thread::sleep(cut_for.saturating_sub(cut.elapsed()));
        cluster.net.heal_all();
        healed = Instant::now();
        std::thread::sleep(heal_for);
    }
    cluster.wait_for_leader(&[0, 1, 2]);
    work.check(&cluster, None, healed);
    converged(&cluster);
}

/// A paused leader (SIGSTOP, as a long GC pause or a stalled VM would pause it) that wakes after
/// its lease has run out must not answer a single request before it learns of the new term.
#[test]
fn a_paused_leader_answers_nothing_when_it_wakes_after_its_lease() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let test = "paused leader";
    let Some(net) = network(test) else { return };
    let seed = seed(test);
    let mut rng = Rng(seed | 1);
    let cluster = Cluster::start(net);
    let pause = rng.millis(4500, 6000);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let run_for = Duration::from_secs(1) + pause + AFTER_HEALING;
    let work = Workloads::start(&cluster, seed, Some(leader), run_for);
    std::thread::sleep(Duration::from_secs(1));
    eprintln!(
        "{test}: schedule: SIGSTOP leader {} for {pause:?}",
        leader + 1
    );
    // A client of the leader, with a long session, whose requests sent during the pause wait
    // in the leader's socket for it to wake.
    let mut probe = RawClient::resume(
        cluster.members[leader].client,
        0,
        bytes::Bytes::from_static(&[0; 16]),
        0,
        10_000,
    )
    .unwrap();
    cluster.signal(leader, "-STOP");
    let stopped = Instant::now();
    std::thread::sleep(LEASE + VOTE_LEASE);
    probe.send(7, &Request::Ping);
    probe.send(8, &corral_testkit::get_data("/register", false));
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    cluster.wait_for_leader(&others);
    std::thread::sleep(pause.saturating_sub(stopped.elapsed()));
    cluster.signal(leader, "-CONT");
    let woke = Instant::now();
    probe
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match corral_testkit::read_frame(&mut probe.stream) {
        Ok(frame) => panic!(
            "the woken leader answered {} bytes {:?} after it woke, past its lease",
            frame.len(),
            woke.elapsed()
        ),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the woken leader neither answered nor closed the connection"
        ),
    }
    cluster.wait_for_leader(&[0, 1, 2]);
    work.check(&cluster, Some(stopped), woke);
    converged(&cluster);
}

/// SIGKILL of members, leader or not, restarted after a moment.
#[test]
fn lock_stays_safe_through_kills() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let test = "kills";
    let Some(net) = network(test) else { return };
    let seed = seed(test);
    let mut rng = Rng(seed | 1);
    let mut cluster = Cluster::start(net);
    let schedule: Vec<(bool, Duration, Duration)> = (0..3)
        .map(|_| {
            (
                rng.below(2) == 0,
                rng.millis(500, 2000),
                rng.millis(1500, 3000),
            )
        })
        .collect();
    eprintln!("{test}: schedule (the leader?, down for, up for): {schedule:?}");
    let total: Duration = schedule.iter().map(|(_, d, u)| *d + *u).sum();
    let run_for = Duration::from_secs(1) + total + AFTER_HEALING;
    let work = Workloads::start(&cluster, seed, None, run_for);
    std::thread::sleep(Duration::from_secs(1));
    let mut healed = Instant::now();
    for (the_leader, down, up) in schedule {
        let leader = cluster.wait_for_leader(&[0, 1, 2]);
        let victim = if the_leader { leader } else { (leader + 1) % 3 };
        eprintln!(
            "{test}: SIGKILL member {} (leader {})",
            victim + 1,
            leader + 1
        );
        cluster.kill(victim);
        std::thread::sleep(down);
        cluster.spawn(victim);
        healed = Instant::now();
        std::thread::sleep(up);
    }
    cluster.wait_for_leader(&[0, 1, 2]);
    work.check(&cluster, None, healed);
    converged(&cluster);
}

/// SIGTERM stops a member cut off from its quorum within a few seconds, leader or follower:
/// nothing it waits for (writes in flight, replication to unreachable peers) holds it up.
#[test]
fn a_cut_off_member_stops_promptly_on_sigterm() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let test = "sigterm while cut off";
    let Some(net) = network(test) else { return };
    let mut cluster = Cluster::start(net);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    for victim in [leader, follower] {
        // A write in flight on the member when it is cut off: the stop must not wait for it.
        let mut c = RawClient::connect(cluster.members[victim].client);
        let cut = Instant::now();
        cluster.net.isolate(victim);
        c.send(1, &create(&format!("/in-flight-{victim}"), b"", 0));
        cluster.stops_serving(victim, cut, expiry_bound());
        cluster.signal(victim, "-TERM");
        let asked = Instant::now();
        let child = cluster.members[victim].child.as_mut().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(3),
                "member {} still running 3 s after SIGTERM\n{}",
                victim + 1,
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        eprintln!(
            "{test}: member {} ({}) exited {status} {:?} after SIGTERM",
            victim + 1,
            if victim == leader {
                "leader"
            } else {
                "follower"
            },
            asked.elapsed()
        );
        assert!(status.success(), "a graceful stop exits 0");
        cluster.members[victim].child = None;
        cluster.net.heal_all();
        cluster.spawn(victim);
        cluster.wait_for_leader(&[0, 1, 2]);
    }
}
