//! What the simulated clients do: a register workload (setData, compare-and-set on the version,
//! sync then getData with a watch, plain getData) on one znode, a counter (sequential creates),
//! idle spells with pings, each client with an ephemeral node for its session, moving to
//! another member when a connection is lost, as real clients do. Every operation goes into the
//! histories the checkers read.

use crate::client::{connect, Conn, Notification, Session};
use crate::run::{Shared, SERVING_BOUND_MS};
use bytes::Bytes;
use corral_proto::records::{PathRequest, PathWatchRequest, SetDataRequest};
use corral_proto::{ErrorCode, Request, Response};
use corral_testkit::create;
use corral_testkit::linearizable::{Event, Op, Outcome, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

pub const REGISTER: &str = "/reg";
pub const EPHEMERALS: &str = "/eph";
/// The counter's parent: each increment creates a sequential child.
pub const COUNTER: &str = "/ctr";
/// The session timeout the clients ask for.
pub const SESSION_TIMEOUT_MS: i32 = 3000;

pub fn member_addr(m: usize) -> String {
    format!("m{}:2181", m + 1)
}

pub fn sim_nanos() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64
}

pub fn sim_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

/// One simulated client.
pub struct Client {
    pub id: usize,
    shared: Rc<RefCell<Shared>>,
    rng: StdRng,
    session: Option<Session>,
    conn: Option<Conn>,
    member: usize,
    /// How many members the ensemble has.
    members: usize,
    last_zxid: i64,
    sessions_opened: u32,
    next_value: u64,
    last_version: i32,
    /// Whether a getData watch on the register is set on the current connection and has not
    /// fired (a connection holds one such watch however often it is set).
    watch_armed: bool,
    /// The register's version when that watch was (last) set.
    watched_version: i32,
    /// The newest version of the register this client has seen: what it sees never goes back.
    seen_version: i32,
}

impl Client {
    pub fn new(id: usize, seed: u64, shared: Rc<RefCell<Shared>>) -> Client {
        let members = shared.borrow().members;
        Client {
            id,
            shared,
            rng: StdRng::seed_from_u64(
                seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(id as u64 + 1)),
            ),
            session: None,
            conn: None,
            member: id % members,
            members,
            last_zxid: 0,
            sessions_opened: 0,
            next_value: 1,
            last_version: 0,
            watch_armed: false,
            watched_version: 0,
            seen_version: 0,
        }
    }

    fn trace(&self, what: String) {
        self.shared
            .borrow_mut()
            .trace
            .push(format!("{} c{} {what}", sim_ms(), self.id));
    }

    /// Connects, resuming the session if there is one, on this member or the next ones.
    async fn ensure_connected(&mut self) {
        while self.conn.is_none() {
            for _ in 0..self.members {
                let addr = member_addr(self.member);
                match connect(
                    &addr,
                    self.session.as_ref(),
                    self.last_zxid,
                    SESSION_TIMEOUT_MS,
                )
                .await
                {
                    Ok((conn, session)) => {
                        let fresh = self.session.as_ref().is_none_or(|s| s.id != session.id);
                        self.trace(format!(
                            "connected to m{} session {:x}",
                            self.member + 1,
                            session.id
                        ));
                        self.session = Some(session);
                        self.conn = Some(conn);
                        self.watch_armed = false;
                        if fresh {
                            self.on_new_session().await;
                        }
                        return;
                    }
                    Err(true) => {
                        self.trace(format!("session expired (told by m{})", self.member + 1));
                        self.shared.borrow_mut().expired_sessions += 1;
                        self.session = None;
                    }
                    Err(false) => {}
                }
                self.member = (self.member + 1) % self.members;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new session sets up the tree (first come, first served) and its own ephemeral node.
    async fn on_new_session(&mut self) {
        self.sessions_opened += 1;
        let eph = format!("{EPHEMERALS}/c{}-{}", self.id, self.sessions_opened);
        for req in [
            create(REGISTER, b"0", 0),
            create(EPHEMERALS, b"", 0),
            create(COUNTER, b"", 0),
            create(&eph, b"", 1),
        ] {
            if self.call(&req).await.is_none() {
                return;
            }
        }
    }

    /// A call on the current connection; None (and the connection dropped) when it was lost.
    async fn call(&mut self, req: &Request) -> Option<crate::client::Reply> {
        let conn = self.conn.as_mut()?;
        match conn.call(req).await {
            Ok(reply) => {
                self.last_zxid = conn.last_zxid;
                self.collect_events();
                self.check_serving();
                Some(reply)
            }
            Err(_) => {
                self.collect_events();
                self.trace(format!("lost the connection to m{}", self.member + 1));
                self.conn = None;
                self.member = (self.member + 1) % self.members;
                None
            }
        }
    }

    /// Checks the watch notifications that arrived: each fires once (no more than were set on
    /// the connection) and their zxids only go up.
    fn collect_events(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let events: Vec<Notification> = std::mem::take(&mut conn.events);
        let mut shared = self.shared.borrow_mut();
        for e in events {
            if !self.watch_armed {
                shared.failures.push(format!(
                    "c{}: a watch fired that was not set (or fired twice): {e:?}",
                    self.id
                ));
            }
            self.watch_armed = false;
            let last = shared.last_event_zxid[self.id];
            if e.zxid > 0 && e.zxid < last {
                shared.failures.push(format!(
                    "c{}: watch events out of order: zxid {} after {last}",
                    self.id, e.zxid
                ));
            }
            shared.last_event_zxid[self.id] = e.zxid.max(shared.last_event_zxid[self.id]);
            shared.events_fired += 1;
        }
    }

    /// The serving rule: a member cut off from all its peers stops answering within its lease.
    fn check_serving(&mut self) {
        let mut shared = self.shared.borrow_mut();
        if let Some(since) = shared.cut_since[self.member] {
            let late = sim_ms().saturating_sub(since);
            if late > SERVING_BOUND_MS {
                shared.failures.push(format!(
                    "c{}: m{} answered {late} ms after it was cut off from its peers (its lease \
                     allows {SERVING_BOUND_MS} ms)",
                    self.id,
                    self.member + 1
                ));
            }
        }
    }

    /// A version of the register seen in a reply on the current connection: it never goes back
    /// (not even on another member), and it is newer than a watched one only once that watch
    /// has fired (ZooKeeper: a client sees the event before the data that triggered it).
    fn saw_version(&mut self, version: i32) {
        let mut shared = self.shared.borrow_mut();
        if version < self.seen_version {
            shared.failures.push(format!(
                "c{}: saw version {version} of {REGISTER} after version {} (on m{})",
                self.id,
                self.seen_version,
                self.member + 1
            ));
        }
        if self.watch_armed && version > self.watched_version {
            shared.failures.push(format!(
                "c{}: saw version {version} of {REGISTER} before its watch set at version {} \
                 fired (on m{})",
                self.id,
                self.watched_version,
                self.member + 1
            ));
            // Reported once.
            self.watch_armed = false;
        }
        self.seen_version = self.seen_version.max(version);
    }

    fn record(&mut self, op: Op, outcome: Outcome, invoked: u64) {
        let answered = if outcome == Outcome::Unknown {
            u64::MAX
        } else {
            sim_nanos()
        };
        self.trace(format!("{op:?} -> {outcome:?}"));
        self.shared.borrow_mut().history.push(Event {
            client: self.id,
            op,
            outcome,
            invoked,
            answered,
        });
    }

    fn value_of(data: &Option<Bytes>) -> u64 {
        data.as_deref()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX)
    }

    async fn write(&mut self, cas: bool) {
        let value = (self.id as u64 + 1) * 1_000_000 + self.next_value;
        self.next_value += 1;
        let version = if cas { self.last_version } else { -1 };
        let op = if cas {
            Op::Cas {
                expected_version: version,
                value,
            }
        } else {
            Op::Write { value }
        };
        let req = Request::SetData(SetDataRequest {
            path: REGISTER.into(),
            data: Some(Bytes::from(value.to_string())),
            version,
        });
        let invoked = sim_nanos();
        let outcome = match self.call(&req).await {
            None => Outcome::Unknown,
            Some(r) => match (r.err, r.body) {
                (ErrorCode::Ok, Some(Response::Stat(stat))) => {
                    self.saw_version(stat.version);
                    self.last_version = stat.version;
                    self.shared.borrow_mut().acked_writes += 1;
                    Outcome::Written {
                        version: stat.version,
                    }
                }
                (ErrorCode::BadVersion, _) => Outcome::CasFailed,
                // Certainly not applied: no node yet, or a member that takes no writes.
                (ErrorCode::NoNode | ErrorCode::NotReadOnly, _) => Outcome::Refused,
                _ => Outcome::Unknown,
            },
        };
        self.record(op, outcome, invoked);
    }

    /// sync, then getData with a watch: the read sees every write acknowledged before the sync.
    async fn read(&mut self) -> bool {
        let invoked = sim_nanos();
        let sync = Request::Sync(PathRequest {
            path: REGISTER.into(),
        });
        let synced = matches!(self.call(&sync).await, Some(r) if r.err == ErrorCode::Ok);
        let get = Request::GetData(PathWatchRequest {
            path: REGISTER.into(),
            watch: true,
        });
        let outcome = match synced {
            false => Outcome::Unknown,
            true => match self.call(&get).await {
                Some(r) => match (r.err, r.body) {
                    (ErrorCode::Ok, Some(Response::GetData(d))) => {
                        self.saw_version(d.stat.version);
                        self.watch_armed = true;
                        self.watched_version = d.stat.version;
                        self.last_version = d.stat.version;
                        Outcome::Saw(State {
                            value: Self::value_of(&d.data),
                            version: d.stat.version,
                        })
                    }
                    _ => Outcome::Unknown,
                },
                None => Outcome::Unknown,
            },
        };
        let seen = outcome != Outcome::Unknown;
        self.record(Op::Read, outcome, invoked);
        seen
    }

    /// getData without sync or watch, as most reads are: answered by the member from what it
    /// has applied, so not linearizable, but never older than what this client saw, and (like
    /// any reply) only from a member that may serve.
    async fn local_read(&mut self) {
        let get = Request::GetData(PathWatchRequest {
            path: REGISTER.into(),
            watch: false,
        });
        if let Some(r) = self.call(&get).await {
            if let (ErrorCode::Ok, Some(Response::GetData(d))) = (r.err, r.body) {
                self.trace(format!("local read -> version {}", d.stat.version));
                self.saw_version(d.stat.version);
            }
        }
    }

    /// Increments the counter: a persistent sequential create under it.
    async fn increment(&mut self) {
        let invoked = sim_nanos();
        let req = create(&format!("{COUNTER}/n-"), b"", 2);
        let Some(reply) = self.call(&req).await else {
            return;
        };
        if let (ErrorCode::Ok, Some(Response::Path(path))) = (reply.err, reply.body) {
            let value = crate::counter::number_of(&path).unwrap_or(u64::MAX);
            self.trace(format!("increment -> {value}"));
            self.shared
                .borrow_mut()
                .increments
                .push(crate::counter::Increment {
                    invoked,
                    answered: sim_nanos(),
                    value,
                });
        }
    }

    /// Idle for a while, pinging as a client does that holds a lock and waits: its session
    /// lives on what the pings hear.
    async fn idle(&mut self) {
        let until = sim_ms() + self.rng.gen_range(300..1500);
        while sim_ms() < until {
            if self.call(&Request::Ping).await.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn frozen_until(&self) -> Option<u64> {
        self.shared.borrow().frozen.get(&self.id).copied()
    }

    /// Runs the workload until `until_ms`, then reads the register once more (after faults
    /// have healed) and closes the session.
    pub async fn run(mut self, until_ms: u64, final_read_ms: u64) {
        while sim_ms() < until_ms {
            if let Some(until) = self.frozen_until() {
                // Silent: no requests, no pings; the connection stays open.
                let wait = until.saturating_sub(sim_ms());
                self.trace(format!("frozen for {wait} ms"));
                tokio::time::sleep(Duration::from_millis(wait)).await;
                self.shared.borrow_mut().frozen.remove(&self.id);
                continue;
            }
            self.ensure_connected().await;
            match self.rng.gen_range(0..20) {
                0..=4 => self.write(false).await,
                5..=9 => self.write(true).await,
                10..=11 => self.increment().await,
                12..=14 => self.local_read().await,
                15..=17 => {
                    self.read().await;
                }
                _ => self.idle().await,
            }
            let think = self.rng.gen_range(0..30);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
        // A freeze that began late (or during the last operation) still runs its course.
        let until = self.frozen_until().unwrap_or(0).max(final_read_ms);
        while sim_ms() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.shared.borrow_mut().frozen.remove(&self.id);
        loop {
            self.ensure_connected().await;
            if self.read().await {
                break;
            }
        }
        if self.call(&Request::CloseSession).await.is_some() {
            self.trace("closed its session".into());
        }
    }
}
