//! A lock recipe, as ZooKeeper's lock recipes (Curator's, kazoo's) build it, and the check that
//! no two clients ever believed they held it at once.
//!
//! Each client keeps an ephemeral sequential znode under the lock's path; the lowest holds the
//! lock. A holder believes it holds the lock from the reply that showed its znode lowest until
//! it sends the delete that releases it, or until it sees Disconnected: its connection closed, or
//! no answer within two thirds of its session timeout, as ZooKeeper's own client decides. Every
//! lock recipe assumes that, after a Disconnected, the lock may be gone; safety is that the next
//! holder's lock never starts before the previous belief ended.
//!
//! The clients spread over the members and move to the next member when a connection fails, so
//! partitions and crashes move them around. A holder notices a closed connection within
//! `NOTICE` (it waits for its server by peeking at the socket), as a client blocked in a read
//! would.

use crate::{create, delete, get_children, RawClient};
use bytes::Bytes;
use corral_proto::{OpCode, Request, Response};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often a holder looks at its socket for the server's close.
const NOTICE: Duration = Duration::from_millis(20);
/// How often a waiting client looks whether it is lowest yet.
const POLL: Duration = Duration::from_millis(50);

/// One client's time with the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub client: usize,
    pub session: i64,
    pub from: Instant,
    pub to: Instant,
    /// Ended by Disconnected rather than by releasing.
    pub lost: bool,
}

/// How the clients run.
#[derive(Debug, Clone)]
pub struct LockConfig {
    /// The lock's znode, which must exist.
    pub path: String,
    pub clients: usize,
    pub session_timeout_ms: i32,
    /// How long a holder keeps the lock before releasing it, between these bounds.
    pub hold_ms: (u64, u64),
    pub seed: u64,
}

/// Runs the clients against `addrs` until `until`; returns every holding.
pub fn run(addrs: &[SocketAddr], cfg: &LockConfig, until: Instant) -> Vec<Holding> {
    let threads: Vec<_> = (0..cfg.clients)
        .map(|client| {
            let addrs = addrs.to_vec();
            let cfg = cfg.clone();
            std::thread::spawn(move || Client::new(client, addrs, cfg).run(until))
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("lock client thread"))
        .collect()
}

/// A client that queues for the lock through `addr` alone and, once it holds it, keeps it until
/// it sees Disconnected (or until `until`): the client a test cuts off with its member. `acquired`
/// is told the moment it holds the lock. Returns its holding, if it got the lock.
pub fn hold_until_lost(
    addr: SocketAddr,
    cfg: &LockConfig,
    until: Instant,
    acquired: std::sync::mpsc::Sender<()>,
) -> Option<Holding> {
    let mut client = Client::new(usize::MAX, vec![addr], cfg.clone());
    client.until_lost = Some(acquired);
    let c = RawClient::resume(
        addr,
        0,
        Bytes::from_static(&[0; 16]),
        0,
        cfg.session_timeout_ms,
    );
    client.with_session(&mut c.ok()?, until);
    client.holdings.pop()
}

/// Two clients that believed they held the lock at once, if any did.
pub fn overlap(holdings: &[Holding]) -> Option<(Holding, Holding)> {
    let mut sorted = holdings.to_vec();
    sorted.sort_by_key(|h| h.from);
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if b.from >= a.to {
                break;
            }
            if a.session != b.session {
                return Some((*a, *b));
            }
        }
    }
    None
}

struct Client {
    id: usize,
    addrs: Vec<SocketAddr>,
    cfg: LockConfig,
    member: usize,
    rand: u64,
    holdings: Vec<Holding>,
    /// Hold the first lock until Disconnected, telling this sender when it is held.
    until_lost: Option<std::sync::mpsc::Sender<()>>,
}

impl Client {
    fn new(id: usize, addrs: Vec<SocketAddr>, cfg: LockConfig) -> Self {
        let member = id % addrs.len();
        let rand = cfg.seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul((id as u64).wrapping_add(1));
        Client {
            id,
            addrs,
            cfg,
            member,
            rand: rand | 1,
            holdings: Vec::new(),
            until_lost: None,
        }
    }

    fn random(&mut self) -> u64 {
        self.rand ^= self.rand << 13;
        self.rand ^= self.rand >> 7;
        self.rand ^= self.rand << 17;
        self.rand
    }

    fn run(mut self, until: Instant) -> Vec<Holding> {
        while Instant::now() < until {
            let c = RawClient::resume(
                self.addrs[self.member],
                0,
                Bytes::from_static(&[0; 16]),
                0,
                self.cfg.session_timeout_ms,
            );
            match c {
                Ok(mut c) => {
                    self.with_session(&mut c, until);
                    if Instant::now() >= until {
                        // Done: leave cleanly, so the session's znode goes at once.
                        let _ = c.stream.set_read_timeout(Some(Duration::from_secs(2)));
                        c.send(0, &Request::CloseSession);
                        let _ = c.read_reply(0, OpCode::CloseSession);
                    }
                }
                Err(_) => std::thread::sleep(POLL),
            }
            self.member = (self.member + 1) % self.addrs.len();
        }
        self.holdings
    }

    /// Queues for the lock and holds it, again and again, on one session, until the time is up
    /// or the client sees Disconnected.
    fn with_session(&mut self, c: &mut RawClient, until: Instant) {
        // The client's own rule: no answer within 2/3 of the session timeout is Disconnected.
        let read_timeout = Duration::from_millis(c.timeout_ms as u64 * 2 / 3);
        let _ = c.stream.set_read_timeout(Some(read_timeout));
        let prefix = format!("{}/lock-", self.cfg.path);
        while Instant::now() < until {
            let Some(mine) = call(c, create(&prefix, b"", 3)).and_then(|r| match r {
                Response::Path(p) => Some(p),
                _ => None,
            }) else {
                return;
            };
            let name = mine.rsplit('/').next().unwrap_or_default().to_owned();
            // Wait until lowest (polling, which also keeps the session alive).
            loop {
                let Some(Response::GetChildren(mut kids)) =
                    call(c, get_children(&self.cfg.path, false))
                else {
                    return;
                };
                kids.sort();
                if kids.first() == Some(&name) {
                    break;
                }
                if Instant::now() >= until {
                    return;
                }
                std::thread::sleep(POLL);
            }
            let from = Instant::now();
            let (lo, hi) = self.cfg.hold_ms;
            let mut hold = Duration::from_millis(lo + self.random() % (hi - lo).max(1));
            if let Some(acquired) = self.until_lost.take() {
                let _ = acquired.send(());
                hold = until.saturating_duration_since(from);
            }
            let (client, session) = (self.id, c.session_id);
            let holding = |to, lost| Holding {
                client,
                session,
                from,
                to,
                lost,
            };
            if let Err(lost_at) = hold_for(c, hold, read_timeout) {
                self.holdings.push(holding(lost_at, true));
                return;
            }
            // The belief ends as the release is sent.
            self.holdings.push(holding(Instant::now(), false));
            if call(c, delete(&mine, -1)).is_none() {
                return;
            }
        }
    }
}

/// A request's successful answer; `None` on an error reply or a lost connection.
fn call(c: &mut RawClient, req: Request) -> Option<Response> {
    match c.try_call(req) {
        Ok(r) if r.err == 0 => Some(r.body.unwrap_or(Response::Empty)),
        _ => None,
    }
}

/// Holds the lock for `hold`, pinging and watching the socket; `Err(when)` if the client saw
/// Disconnected.
fn hold_for(c: &mut RawClient, hold: Duration, read_timeout: Duration) -> Result<(), Instant> {
    let end = Instant::now() + hold;
    let ping_every = read_timeout / 2;
    let mut last_heard = Instant::now();
    let mut next_ping = Instant::now();
    let mut awaiting_ping = false;
    while Instant::now() < end {
        if !awaiting_ping && Instant::now() >= next_ping {
            c.send(-2, &Request::Ping);
            awaiting_ping = true;
            next_ping = Instant::now() + ping_every;
        }
        let _ = c.stream.set_read_timeout(Some(NOTICE));
        let mut byte = [0u8; 1];
        match c.stream.peek(&mut byte) {
            Ok(0) => return Err(Instant::now()),
            Ok(_) => {
                let _ = c.stream.set_read_timeout(Some(read_timeout));
                match c.read_reply(-2, OpCode::Ping) {
                    Ok(_) => {
                        awaiting_ping = false;
                        last_heard = Instant::now();
                    }
                    Err(_) => return Err(Instant::now()),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Err(Instant::now()),
        }
        if last_heard.elapsed() >= read_timeout {
            return Err(Instant::now());
        }
    }
    let _ = c.stream.set_read_timeout(Some(read_timeout));
    if awaiting_ping && c.read_reply(-2, OpCode::Ping).is_err() {
        return Err(Instant::now());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(client: usize, session: i64, from_ms: u64, to_ms: u64, t0: Instant) -> Holding {
        Holding {
            client,
            session,
            from: t0 + Duration::from_millis(from_ms),
            to: t0 + Duration::from_millis(to_ms),
            lost: false,
        }
    }

    #[test]
    fn back_to_back_holdings_do_not_overlap() {
        let t0 = Instant::now();
        let hs = [
            h(0, 1, 0, 100, t0),
            h(1, 2, 100, 200, t0),
            h(0, 1, 250, 300, t0),
        ];
        assert_eq!(overlap(&hs), None);
    }

    #[test]
    fn two_believers_at_once_are_found_in_any_order() {
        let t0 = Instant::now();
        let hs = [
            h(1, 2, 150, 400, t0),
            h(0, 1, 0, 100, t0),
            h(0, 1, 120, 200, t0),
        ];
        let (a, b) = overlap(&hs).expect("an overlap");
        assert_eq!((a.session, b.session), (1, 2));
    }

    #[test]
    fn a_long_holding_overlapping_a_later_one_is_found() {
        let t0 = Instant::now();
        let hs = [
            h(0, 1, 0, 1000, t0),
            h(1, 2, 100, 150, t0),
            h(2, 3, 500, 600, t0),
        ];
        assert!(overlap(&hs).is_some());
    }
}
