//! The core driven without sockets, tasks or clocks: inputs with made-up times, effects read
//! back. A property test runs random interleavings of packets, commits, writer progress, ticks
//! and closed connections, and checks what a client must see: replies in request order, its own
//! writes in its reads, a watch event before any reply that shows the change, and replies held
//! at the budget.

use super::*;
use crate::budget::{ConnBudget, Limits};
use bytes::Bytes;
use corral_proto::frame::Handshake;
use corral_proto::records::*;
use corral_proto::{CreateMode, ErrorCode, EventType, Jute, Request, Response};
use corral_replication::{Applying, LeaseTimes, ReconfigRefused, Role};
use corral_tree::{Batch, TreeConfig};
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;

const LEADER: u64 = 1;
const TERM: u64 = 1;

/// A quorum whose lease never ends: a standalone server's, or an ensemble led by this member
/// whose membership a test sets.
#[derive(Default, Clone)]
struct AlwaysLeader {
    ensemble: Option<Arc<std::sync::Mutex<Arc<corral_replication::Membership>>>>,
}

impl Quorum for AlwaysLeader {
    fn id(&self) -> u64 {
        LEADER
    }
    fn term(&self) -> u64 {
        TERM
    }
    fn serving_until(&self, now: Instant) -> Option<Instant> {
        Some(now + Duration::from_secs(3600))
    }
    fn quorum_acked(&self, now: Instant) -> Option<Instant> {
        Some(now)
    }
    fn lease_times(&self) -> LeaseTimes {
        LeaseTimes::new(2000, 5, 4000, 350)
    }
    fn membership(&self) -> std::sync::Arc<corral_replication::Membership> {
        match &self.ensemble {
            Some(m) => m.lock().unwrap().clone(),
            None => Default::default(),
        }
    }
    fn standalone(&self) -> bool {
        self.ensemble.is_none()
    }
    fn reconfiguring(&self) -> bool {
        false
    }
}

/// What one connection has been sent, and its writer's state.
#[derive(Default)]
struct Client {
    /// Everything the core sent, in order.
    received: Vec<Outgoing>,
    /// How many of `received` the simulated writer has written to the socket.
    written: usize,
    /// (xid, request) sent, in order.
    sent: Vec<(i32, Request)>,
    budget: Option<Arc<ConnBudget>>,
    /// Its connection closed: it sends nothing more, and what it got is a prefix.
    dropped: bool,
}

/// The core, its log and its clients.
struct Harness {
    core: Core,
    now: Instant,
    /// Proposals not yet committed, in order.
    log: Vec<Bytes>,
    index: u64,
    clients: HashMap<ConnId, Client>,
    /// Reconfigurations the core handed to the log.
    reconfigs: Vec<ReconfigCall>,
    /// SASL steps the core handed to the driver.
    sasl: Vec<SaslStep>,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        let cfg = ServerConfig {
            limits,
            ..ServerConfig::default()
        };
        Harness::with(cfg, AlwaysLeader::default())
    }

    fn with(cfg: ServerConfig, quorum: AlwaysLeader) -> Harness {
        let now = Instant::now();
        let cfg = Arc::new(cfg);
        let tree = DataTree::new(TreeConfig::default());
        let global = Arc::new(Global::default());
        let core = Core::new(
            cfg,
            tree,
            AppliedMark::default(),
            Box::new(quorum),
            global,
            now,
            1_700_000_000_000,
        );
        let mut h = Harness {
            core,
            now,
            log: Vec::new(),
            index: 0,
            clients: HashMap::new(),
            reconfigs: Vec::new(),
            sasl: Vec::new(),
        };
        h.input(Input::Role {
            role: Role::Leader,
            leader: Some(LEADER),
            term: TERM,
        });
        h
    }

    fn input(&mut self, input: Input) {
        self.now += Duration::from_micros(100);
        self.core.handle(input, self.now);
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Send { conn, item } => {
                    self.clients.entry(conn).or_default().received.push(item)
                }
                Effect::Propose(framed) => self.log.push(framed),
                Effect::Reconfigure(call) => self.reconfigs.push(call),
                Effect::Sasl(step) => self.sasl.push(step),
                _ => {}
            }
        }
    }

    /// Commits and applies the first `n` proposals waiting, as one log entry.
    fn commit(&mut self, n: usize) {
        let n = n.min(self.log.len());
        if n == 0 {
            return;
        }
        let framed: Vec<Bytes> = self.log.drain(..n).collect();
        let batch = Batch::decode(&Batch::encode_framed(1_700_000_000_000, &framed)).unwrap();
        self.index += 1;
        let applying = Applying {
            mark: AppliedMark::at(TERM, LEADER, self.index),
            batch: Some(batch),
        };
        self.input(Input::Apply(vec![applying]));
    }

    /// Opens a connection with a new session and commits its creation.
    fn connect(&mut self, conn: ConnId, limits: Limits) {
        let budget = Arc::new(ConnBudget::new(limits, Arc::new(Global::default())));
        self.clients.entry(conn).or_default().budget = Some(budget.clone());
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let handshake = handshake(0);
        self.input(Input::Connect(Incoming {
            conn,
            peer,
            handshake,
            budget,
            identities: Vec::new(),
        }));
        self.commit(usize::MAX);
        assert!(matches!(
            self.clients[&conn].received.first(),
            Some(Outgoing::Handshake(_))
        ));
    }

    fn send(&mut self, conn: ConnId, xid: i32, request: Request) {
        let client = self.clients.get_mut(&conn).unwrap();
        client.sent.push((xid, request.clone()));
        let budget = client.budget.clone().unwrap();
        budget.request_read(64);
        let op = request.op_code() as i32;
        self.input(Input::Packet {
            conn,
            xid,
            op,
            size: 64,
            request: Ok(request),
            received: self.now,
        });
    }

    /// The connection's writer writes everything queued; the core resumes it if it held it.
    fn write_out(&mut self, conn: ConnId) {
        let client = self.clients.get_mut(&conn).unwrap();
        let budget = client.budget.clone().unwrap();
        let bytes: usize = client.received[client.written..]
            .iter()
            .map(counted_bytes)
            .sum();
        client.written = client.received.len();
        if budget.written(bytes) {
            self.input(Input::Resume { conn });
        }
    }
}

/// A connect request for `session_id` (0: a new session) with its right password.
fn handshake(session_id: i64) -> Handshake {
    let passwd = if session_id == 0 {
        Bytes::from_static(&[0; 16])
    } else {
        Bytes::copy_from_slice(&crate::session::password(session_id))
    };
    Handshake {
        request: ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            time_out: 30_000,
            session_id,
            passwd,
        },
        read_only: None,
    }
}

/// What an outgoing item counts against its connection's budget.
fn counted_bytes(item: &Outgoing) -> usize {
    match item {
        Outgoing::Frame(f) => f.len(),
        Outgoing::Reply { result, .. } => corral_proto::reply::reply_len(result),
        _ => 0,
    }
}

fn set(path: &str, data: &str) -> Request {
    Request::SetData(SetDataRequest {
        path: path.into(),
        data: Some(Bytes::copy_from_slice(data.as_bytes())),
        version: -1,
    })
}

fn get(path: &str, watch: bool) -> Request {
    Request::GetData(PathWatchRequest {
        path: path.into(),
        watch,
    })
}

fn create(path: &str) -> Request {
    Request::Create {
        op: corral_proto::OpCode::Create,
        req: CreateRequest {
            path: path.into(),
            data: Some(Bytes::from_static(b"0")),
            acl: vec![Acl::new(corral_proto::codes::perms::ALL, "world", "anyone")],
            flags: CreateMode::Persistent as i32,
        },
    }
}

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Step {
    /// Client `c` writes its own key.
    Write(usize),
    /// Client `c` reads key `k` (with a watch when `w`).
    Read(usize, usize, bool),
    /// The log commits this many waiting proposals.
    Commit(usize),
    /// Client `c`'s writer catches up.
    Flush(usize),
    Tick,
    /// Client `c`'s connection closes (its session lives on).
    Drop(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize).prop_map(Step::Write),
        4 => (0..3usize, 0..3usize, any::<bool>()).prop_map(|(c, k, w)| Step::Read(c, k, w)),
        3 => (1..4usize).prop_map(Step::Commit),
        2 => (0..3usize).prop_map(Step::Flush),
        1 => Just(Step::Tick),
        1 => (0..3usize).prop_map(Step::Drop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn clients_see_fifo_their_own_writes_and_watches_first(
        steps in proptest::collection::vec(step(), 1..120)
    ) {
        let limits = Limits { max_reply_bytes: 400, ..Limits::default() };
        let mut h = Harness::new(limits);
        let conns: Vec<ConnId> = (1..=3).collect();
        for &c in &conns {
            h.connect(c, limits);
        }
        // Each client's key, created before the schedule.
        for (i, &c) in conns.iter().enumerate() {
            h.send(c, 1, create(&format!("/k{i}")));
        }
        h.commit(usize::MAX);
        let mut next_xid: HashMap<ConnId, i32> = conns.iter().map(|&c| (c, 2)).collect();
        let mut writes: HashMap<usize, u32> = HashMap::new();
        let replies = |h: &Harness, c: ConnId| {
            h.clients[&c]
                .received
                .iter()
                .filter(|o| matches!(o, Outgoing::Reply { .. }))
                .count()
        };
        for s in steps {
            let sender = match s {
                Step::Write(i) | Step::Read(i, ..) => Some(conns[i]),
                _ => None,
            };
            if sender.is_some_and(|c| h.clients[&c].dropped) {
                continue;
            }
            match s {
                Step::Write(i) => {
                    let c = conns[i];
                    let n = writes.entry(i).or_default();
                    *n += 1;
                    let xid = next_xid[&c];
                    *next_xid.get_mut(&c).unwrap() += 1;
                    h.send(c, xid, set(&format!("/k{i}"), &n.to_string()));
                }
                Step::Read(i, k, watch) => {
                    let c = conns[i];
                    let xid = next_xid[&c];
                    *next_xid.get_mut(&c).unwrap() += 1;
                    let budget = h.clients[&c].budget.clone().unwrap();
                    let over = budget.reply_bytes() >= limits.max_reply_bytes;
                    let before = replies(&h, c);
                    h.send(c, xid, get(&format!("/k{k}"), watch));
                    // A client over its budget gets no reply to a new read until it drains.
                    if over {
                        prop_assert_eq!(replies(&h, c), before, "a read answered over budget");
                    }
                }
                Step::Commit(n) => h.commit(n),
                Step::Flush(i) => h.write_out(conns[i]),
                Step::Tick => {
                    h.now += Duration::from_millis(50);
                    h.input(Input::Tick);
                }
                Step::Drop(i) => {
                    let conn = conns[i];
                    h.clients.get_mut(&conn).unwrap().dropped = true;
                    h.input(Input::Closed { conn });
                }
            }
        }
        // Quiesce: everything commits, every writer drains.
        for _ in 0..50 {
            h.commit(usize::MAX);
            for &c in &conns {
                h.write_out(c);
            }
        }
        for (i, &c) in conns.iter().enumerate() {
            check_client(&h.clients[&c], i)?;
        }
    }
}

/// Replies in request order, every request answered once, reads of the client's own key showing
/// its latest write before them, and a data watch's event before any reply showing the change.
fn check_client(client: &Client, me: usize) -> Result<(), TestCaseError> {
    let replies: Vec<(i32, &Result<Response, ErrorCode>)> = client
        .received
        .iter()
        .filter_map(|o| match o {
            Outgoing::Reply { xid, result, .. } => Some((*xid, result)),
            _ => None,
        })
        .collect();
    let mut xids: Vec<i32> = client.sent.iter().map(|(x, _)| *x).collect();
    let answered: Vec<i32> = replies.iter().map(|(x, _)| *x).collect();
    // A client whose queue passed four budgets was closed: what it got is a prefix.
    let closed = client.dropped || client.received.iter().any(|o| matches!(o, Outgoing::Close));
    if closed {
        xids.truncate(answered.len());
    }
    prop_assert_eq!(&answered, &xids, "replies in request order, each once");
    let requests: HashMap<i32, &Request> = client.sent.iter().map(|(x, r)| (*x, r)).collect();
    // Read-your-writes: the value of my key is my last write before the read.
    let mut my_last: u32 = 0;
    for (xid, result) in &replies {
        match (requests[xid], result) {
            (Request::SetData(r), Ok(_)) => {
                my_last = std::str::from_utf8(r.data.as_deref().unwrap_or_default())
                    .unwrap()
                    .parse()
                    .unwrap();
            }
            (Request::GetData(r), Ok(Response::GetData(g))) if r.path == format!("/k{me}") => {
                let seen: u32 = g
                    .data
                    .as_ref()
                    .map(|d| std::str::from_utf8(d).unwrap().parse().unwrap())
                    .unwrap_or(0);
                prop_assert_eq!(seen, my_last, "read-your-writes on /k{}", me);
            }
            _ => {}
        }
    }
    // Watch order: once a getData with a watch saw version v of a path, a later reply showing
    // a newer version comes after the NodeDataChanged event for that path.
    let mut armed: HashMap<String, i32> = HashMap::new();
    for item in &client.received {
        match item {
            Outgoing::Frame(f) => {
                let mut r = corral_proto::Reader::new(&f[4..]);
                let header = ReplyHeader::decode(&mut r).unwrap();
                prop_assert_eq!(header.xid, -1);
                let event = WatcherEvent::decode(&mut r).unwrap();
                prop_assert_eq!(event.event_type, EventType::NodeDataChanged as i32);
                armed.remove(&event.path);
            }
            Outgoing::Reply {
                xid,
                result: Ok(Response::GetData(g)),
                ..
            } => {
                let Request::GetData(r) = requests[xid] else {
                    continue;
                };
                if let Some(&v) = armed.get(&r.path) {
                    prop_assert!(g.stat.version <= v, "{} changed before its event", r.path);
                }
                if r.watch {
                    armed.entry(r.path.clone()).or_insert(g.stat.version);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The replies a connection got, as (xid, result), in order.
fn replies(h: &Harness, conn: ConnId) -> Vec<(i32, Result<Response, ErrorCode>)> {
    h.clients[&conn]
        .received
        .iter()
        .filter_map(|o| match o {
            Outgoing::Reply { xid, result, .. } => Some((*xid, result.clone())),
            _ => None,
        })
        .collect()
}

fn member(port: u16) -> corral_replication::Member {
    corral_replication::Member {
        raft_addr: format!("10.0.0.1:{port}"),
        election_port: port + 1000,
        client_addr: String::new(),
        observer: false,
    }
}

#[test]
fn a_reconfig_is_answered_once_the_leader_published_it_and_holds_what_follows() {
    let membership = |ids: &[u64]| corral_replication::Membership {
        members: ids
            .iter()
            .map(|id| (*id, member(2887 + *id as u16)))
            .collect(),
        joint: false,
        replicated: true,
    };
    let shared = Arc::new(std::sync::Mutex::new(Arc::new(membership(&[1, 2, 3]))));
    let quorum = AlwaysLeader {
        ensemble: Some(shared.clone()),
    };
    let cfg = ServerConfig {
        reconfig_enabled: true,
        super_digest: Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=".into()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(cfg, quorum);
    // Leading, the core publishes the membership.
    h.commit(usize::MAX);
    let config = |h: &Harness| {
        let node = h.core.tree().get("/zookeeper/config").unwrap();
        String::from_utf8(node.data.to_vec()).unwrap()
    };
    let before = config(&h);
    assert!(
        before.starts_with("server.1=10.0.0.1:2888:3888:participant\n"),
        "{before}"
    );
    assert_eq!(before.matches("server.").count(), 3);
    h.connect(1, Limits::default());
    let leave = |id: &str| {
        Request::Reconfig(ReconfigRequest {
            joining_servers: String::new(),
            leaving_servers: id.into(),
            new_members: String::new(),
            cur_config_id: -1,
        })
    };
    h.send(1, 1, leave("3"));
    assert!(h.reconfigs.is_empty(), "refused before the log is asked");
    // As in ZooKeeper, the refusal spends a zxid: it is answered when its entry is applied.
    let zxid = h.core.tree().last_zxid();
    assert!(replies(&h, 1).is_empty());
    h.commit(usize::MAX);
    assert_eq!(h.core.tree().last_zxid(), zxid + 1);
    h.send(
        1,
        -4,
        Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: "digest".into(),
            auth: Bytes::from_static(b"super:test"),
        }),
    );
    h.send(1, 2, leave("3"));
    h.send(
        1,
        3,
        Request::GetData(PathWatchRequest {
            path: "/zookeeper/config".into(),
            watch: false,
        }),
    );
    let call = h.reconfigs.pop().expect("handed to the log");
    assert_eq!(call.target.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(
        replies(&h, 1).len(),
        1,
        "the read waits behind the reconfig"
    );
    assert_eq!(replies(&h, 1)[0], (1, Err(ErrorCode::NoAuth)));
    // The log carried it out; the leader publishes; the reply shows the new membership.
    *shared.lock().unwrap() = Arc::new(membership(&[1, 2]));
    h.input(Input::Reconfigured {
        call,
        outcome: Ok(()),
    });
    assert_eq!(replies(&h, 1).len(), 1, "answered only once published");
    h.commit(usize::MAX);
    let after = config(&h);
    assert_eq!(after.matches("server.").count(), 2, "{after}");
    let got = replies(&h, 1);
    let (Ok(Response::GetData(reconfigured)), Ok(Response::GetData(read))) = (&got[1].1, &got[2].1)
    else {
        panic!("{got:?}")
    };
    assert_eq!((got[1].0, got[2].0), (2, 3), "in request order");
    assert_eq!(reconfigured.data.as_deref(), Some(after.as_bytes()));
    assert_eq!(read.data.as_deref(), Some(after.as_bytes()));
    assert_eq!(reconfigured.stat.version, -1);
    // Down to one voter: refused here (standaloneEnabled). The log refusing one answers its
    // error; the connection goes on.
    h.send(1, 4, leave("2"));
    assert!(h.reconfigs.is_empty());
    h.send(1, 5, leave("9"));
    h.commit(usize::MAX);
    let call = h.reconfigs.pop().expect("handed to the log");
    h.input(Input::Reconfigured {
        call,
        outcome: Err(ReconfigRefused::NoQuorum),
    });
    h.commit(usize::MAX);
    let got = replies(&h, 1);
    assert_eq!(got[3], (4, Err(ErrorCode::BadArguments)));
    assert_eq!(got[4], (5, Err(ErrorCode::NewConfigNoQuorum)));
}

#[test]
fn a_reconnect_whose_connection_closed_while_the_leader_was_asked_is_dropped() {
    let mut h = Harness::new(Limits::default());
    h.connect(1, Limits::default());
    let session_id = h.core.conns[&1].session_id;
    // The member stops leading: a reconnect must be revalidated by the new leader.
    h.input(Input::Role {
        role: Role::Follower,
        leader: Some(2),
        term: TERM + 1,
    });
    let budget = Arc::new(ConnBudget::new(
        Limits::default(),
        Arc::new(Global::default()),
    ));
    let handshake = handshake(session_id);
    let peer: SocketAddr = "127.0.0.1:10".parse().unwrap();
    h.core.handle(
        Input::Connect(Incoming {
            conn: 2,
            peer,
            handshake,
            budget,
            identities: Vec::new(),
        }),
        h.now,
    );
    let mut asked = None;
    while let Some(effect) = h.core.poll_effect() {
        if let Effect::Revalidate(inc) = effect {
            asked = Some(inc);
        }
    }
    let incoming = asked.expect("the leader is asked");
    // The client gives up before the answer comes.
    h.input(Input::Closed { conn: 2 });
    let touched = corral_replication::Touched {
        sent_at: h.now,
        answer: Some(corral_replication::TouchAnswer {
            granted: true,
            unknown: Vec::new(),
            removed: false,
        }),
    };
    h.input(Input::Revalidated { incoming, touched });
    assert!(
        !h.core.conns.contains_key(&2),
        "a closed connection was attached"
    );
    assert!(h.clients.get(&2).is_none_or(|c| c.received.is_empty()));
}

#[test]
fn reads_wait_while_replies_are_over_budget_and_resume_when_written() {
    let limits = Limits {
        max_reply_bytes: 300,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.connect(1, limits);
    h.send(1, 1, create("/big"));
    h.commit(usize::MAX);
    h.send(1, 2, set("/big", &"x".repeat(200)));
    h.commit(usize::MAX);
    for xid in 3..13 {
        h.send(1, xid, get("/big", false));
    }
    let replies = |h: &Harness| {
        h.clients[&1]
            .received
            .iter()
            .filter(|o| matches!(o, Outgoing::Reply { .. }))
            .count()
    };
    // Two replies of ~300 bytes pass the budget: the rest wait.
    let before = replies(&h);
    assert!(before < 2 + 10, "reads were held back ({before} replies)");
    for _ in 0..20 {
        h.write_out(1);
    }
    assert_eq!(
        replies(&h),
        12,
        "every read is answered once the writer drains"
    );
}

#[test]
fn writes_wait_while_the_proposals_in_flight_are_at_their_limit() {
    let limits = Limits {
        max_pending_proposal_bytes: 300,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    h.connect(1, limits);
    h.send(1, 1, create("/w"));
    h.commit(usize::MAX);
    for xid in 2..22 {
        h.send(1, xid, set("/w", &xid.to_string()));
        // A read between the writes must still come back in its place.
        if xid % 5 == 0 {
            h.send(1, 1000 + xid, get("/w", false));
        }
    }
    // Only as many writes as fit in the limit went to the log; the rest wait in the queue.
    let proposed = h.log.len();
    assert!(
        (1..20).contains(&proposed),
        "{proposed} of 20 writes proposed at once"
    );
    assert!(
        h.core
            .limits
            .proposals_throttled
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    for _ in 0..40 {
        h.commit(1);
        h.write_out(1);
    }
    let answered: Vec<i32> = h.clients[&1]
        .received
        .iter()
        .filter_map(|o| match o {
            Outgoing::Reply { xid, .. } => Some(*xid),
            _ => None,
        })
        .collect();
    let sent: Vec<i32> = h.clients[&1].sent.iter().map(|(x, _)| *x).collect();
    assert_eq!(answered, sent, "every request answered, in order");
}

#[test]
fn a_sasl_step_holds_what_follows_and_required_sasl_refuses_the_rest() {
    let jaas = std::env::temp_dir().join(format!("corral-core-jaas-{}", std::process::id()));
    std::fs::write(
        &jaas,
        "Server { org.apache.zookeeper.server.auth.DigestLoginModule required user_admin=\"a\"; };",
    )
    .unwrap();
    let mut auth = crate::auth::AuthConfig::default();
    for (key, value) in [
        (
            "authProvider.1",
            "org.apache.zookeeper.server.auth.SASLAuthenticationProvider",
        ),
        ("zookeeper.sessionRequireClientSASLAuth", "true"),
        ("zookeeper.superUser", "admin"),
        ("java.security.auth.login.config", jaas.to_str().unwrap()),
    ] {
        auth.set(key, value).unwrap();
    }
    auth.finish(false).unwrap();
    std::fs::remove_file(&jaas).unwrap();
    let cfg = ServerConfig {
        auth: Arc::new(auth),
        ..ServerConfig::default()
    };
    let mut h = Harness::with(cfg, AlwaysLeader::default());
    h.connect(1, Limits::default());
    h.send(1, 1, Request::Sasl(Bytes::new()));
    let step = h.sasl.pop().expect("handed to the driver");
    let challenge = b"realm=...".to_vec();
    h.input(Input::Sasl {
        step,
        outcome: crate::auth::SaslOutcome::Continue(challenge.clone()),
    });
    h.send(1, 2, Request::Sasl(Bytes::from_static(b"response")));
    // A client that pipelines: the write waits for the SASL step, and carries its identity.
    let mine = Request::Create {
        op: corral_proto::OpCode::Create,
        req: CreateRequest {
            path: "/mine".into(),
            data: None,
            acl: vec![Acl::new(corral_proto::codes::perms::ALL, "auth", "")],
            flags: CreateMode::Persistent as i32,
        },
    };
    h.send(1, 3, mine);
    h.send(1, 4, get("/mine", false));
    assert!(h.log.is_empty(), "the write waits behind the SASL step");
    let step = h.sasl.pop().expect("second step");
    h.input(Input::Sasl {
        step,
        outcome: crate::auth::SaslOutcome::Done {
            token: Some(b"rspauth=x".to_vec()),
            id: "admin".into(),
        },
    });
    h.commit(usize::MAX);
    let got = replies(&h, 1);
    let sasl = |t: &[u8]| Ok(Response::Sasl(Some(Bytes::copy_from_slice(t))));
    assert_eq!(got[0], (1, sasl(&challenge)));
    assert_eq!(got[1], (2, sasl(b"rspauth=x")));
    assert_eq!(got[2], (3, Ok(Response::Path("/mine".into()))));
    assert!(matches!(got[3], (4, Ok(Response::GetData(_)))), "{got:?}");
    let node = h.core.tree().get("/mine").unwrap();
    let acl = h.core.tree().acl(node);
    assert_eq!(
        acl,
        [Acl::new(corral_proto::codes::perms::ALL, "sasl", "admin")]
    );

    // Without SASL, a session gets SessionClosedRequireSaslAuth and loses its connection.
    h.connect(2, Limits::default());
    h.send(2, 1, get("/mine", false));
    assert_eq!(
        replies(&h, 2),
        [(1, Err(ErrorCode::SessionClosedRequireSaslAuth))]
    );
    assert!(matches!(
        h.clients[&2].received.last(),
        Some(Outgoing::SessionClosed)
    ));

    // A failed step: refused with ZooKeeper's null-token body, closed, counted.
    h.connect(3, Limits::default());
    h.send(3, 1, Request::Sasl(Bytes::new()));
    let step = h.sasl.pop().unwrap();
    h.input(Input::Sasl {
        step,
        outcome: crate::auth::SaslOutcome::Failed("wrong password".into()),
    });
    let received = &h.clients[&3].received;
    let Some(Outgoing::Frame(frame)) = received.iter().rev().nth(1) else {
        panic!("{received:?}")
    };
    let mut expected = 20i32.to_be_bytes().to_vec();
    expected.extend(1i32.to_be_bytes());
    expected.extend(0i64.to_be_bytes());
    expected.extend((ErrorCode::SessionClosedRequireSaslAuth.code()).to_be_bytes());
    expected.extend((-1i32).to_be_bytes());
    assert_eq!(&frame[..], &expected[..]);
    assert!(matches!(received.last(), Some(Outgoing::SessionClosed)));
    assert_eq!(h.core.stats.auth_refused, 2);
}
