//! One seed's run: three (or five) members, the clients and the nemesis on turmoil's simulated network
//! and clock, each member on its own in-memory disk; then the checks.

use crate::io::member_io;
use crate::nemesis::{self, Fault, Scheduled};
use crate::workload::{self, member_addr, Client, EPHEMERALS};
use corral_io::mem_disk::MemDisk;
use corral_proto::records::{PathRequest, PathWatchRequest};
use corral_proto::{ErrorCode, Request, Response};
use corral_server::config::ServerLine;
use corral_server::core::status::Detail;
use corral_server::status::StatusSource;
use corral_server::{Server, ServerConfig};
use corral_testkit::linearizable::{self, Event, Outcome, State};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// What one run is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// How many members the ensemble has (3 or 5).
    pub members: usize,
    pub clients: usize,
    /// How long the workload and the faults last, in simulated milliseconds.
    pub workload_ms: u64,
    /// An operator removes members and adds them back meanwhile (`reconfig.rs`).
    pub reconfig: bool,
}

/// What the run's hosts share (all on one thread).
#[derive(Default)]
pub struct Shared {
    pub members: usize,
    pub trace: Vec<String>,
    pub history: Vec<Event>,
    pub failures: Vec<String>,
    pub statuses: BTreeMap<usize, StatusSource>,
    /// Clients told to go silent, until when (simulated ms).
    pub frozen: BTreeMap<usize, u64>,
    pub last_event_zxid: Vec<i64>,
    pub acked_writes: u64,
    /// The counter's acknowledged increments.
    pub increments: Vec<crate::counter::Increment>,
    pub expired_sessions: u64,
    pub events_fired: u64,
    /// What the checker found on each member: (last zxid, digest).
    pub converged: Vec<(i64, u64)>,
    /// Since when (simulated ms) each member can exchange messages with none of its peers.
    pub cut_since: Vec<Option<u64>>,
}

/// What a run found.
pub struct Report {
    pub failures: Vec<String>,
    pub trace: Vec<String>,
    pub trace_hash: u64,
    pub summary: String,
}

fn member_name(m: usize) -> String {
    format!("m{}", m + 1)
}

const TICK_MS: u32 = 500;
const SYNC_LIMIT: u32 = 5;
const MIN_SESSION_MS: u32 = 1000;

/// How long after a member is cut off from all its peers a client may still hear from it: its
/// lease `L = 0.99 × min(syncLimit × tickTime, minSessionTimeout)` (ARCHITECTURE.md, "The
/// serving rule"), the core's check slack (10 ms), and the slowest message twice over (a grant
/// in flight at the cut, a reply in flight at the lease's end).
pub const SERVING_BOUND_MS: u64 = LEASE_MS + 10 + 2 * nemesis::MAX_LATENCY_MS;

/// A member's lease, `L` above.
const LEASE_MS: u64 = {
    let quorum_ms = (SYNC_LIMIT * TICK_MS) as u64;
    let shorter = if quorum_ms < MIN_SESSION_MS as u64 {
        quorum_ms
    } else {
        MIN_SESSION_MS as u64
    };
    shorter * 99 / 100
};

/// How often the lease watch asks every member whether it serves.
const LEASE_WATCH_EVERY: Duration = Duration::from_millis(25);

/// The serving rule seen from inside: every `LEASE_WATCH_EVERY`, each member's core is asked
/// whether it serves (the question applies the rule first, as any request does). A member cut
/// off from all its peers for longer than its lease (plus the core's 10 ms of check slack) must
/// say no, whether or not a client happens to be talking to it.
async fn watch_leases(shared: Rc<RefCell<Shared>>, until_ms: u64) {
    let members = shared.borrow().members;
    let mut reported = vec![false; members];
    while workload::sim_ms() < until_ms {
        for (m, seen) in reported.iter_mut().enumerate() {
            let Some(source) = shared.borrow().statuses.get(&m).cloned() else {
                continue;
            };
            // A paused member answers nothing; the others are not kept waiting.
            let asked = tokio::time::timeout(LEASE_WATCH_EVERY, source.status(Detail::default()));
            let Ok(Some(status)) = asked.await else {
                continue;
            };
            let now = workload::sim_ms();
            let mut s = shared.borrow_mut();
            let cut_for = s.cut_since[m].map(|since| now.saturating_sub(since));
            if let Some(late) = cut_for.filter(|l| *l > LEASE_MS + 10) {
                if status.snap.serving && !*seen {
                    *seen = true;
                    s.failures.push(format!(
                        "m{} still serves {late} ms after it was cut off from its peers (its \
                         lease is {LEASE_MS} ms)",
                        m + 1
                    ));
                }
            }
        }
        tokio::time::sleep(LEASE_WATCH_EVERY).await;
    }
}

fn member_config(
    m: usize,
    members: usize,
    disk: MemDisk,
    skew_ms: i64,
    reconfig: bool,
) -> ServerConfig {
    let mut servers = BTreeMap::new();
    for i in 0..members {
        let key = format!("server.{}", i + 1);
        let line =
            ServerLine::parse(&key, &format!("m{}:2888:3888", i + 1)).expect("a valid server line");
        servers.insert(i as u64 + 1, line);
    }
    ServerConfig {
        io: member_io(disk, skew_ms),
        tick_time_ms: TICK_MS,
        sync_limit: SYNC_LIMIT,
        init_limit: 10,
        client_port: 2181,
        client_address: [0, 0, 0, 0].into(),
        // Named per member only so that log lines say whose disk they are about.
        data_dir: format!("/m{}", m + 1).into(),
        min_session_timeout_ms: MIN_SESSION_MS,
        max_session_timeout_ms: 10_000,
        admin_addr: None,
        // Small, so that snapshots, log purges and snapshot installs happen within a run.
        snap_count: 50,
        my_id: m as u64 + 1,
        servers,
        reconfig_enabled: reconfig,
        // super:test, the operator's identity for reconfig.
        super_digest: Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=".into()),
        ..ServerConfig::default()
    }
}

/// FNV-1a over the trace: stable across runs and Rust versions.
fn hash_lines(lines: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for line in lines {
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The nemesis' hand on the simulation.
struct Nemesis<'s, 'a> {
    sim: &'s mut turmoil::Sim<'a>,
    disks: &'s [MemDisk],
    shared: &'s Rc<RefCell<Shared>>,
    clients: usize,
    members: usize,
    crashed: Vec<bool>,
    /// How many active faults cut each directed link (from, to): faults overlap, and a link
    /// heals only when the last fault cutting it ends.
    cuts: BTreeMap<(String, String), u32>,
}

impl Nemesis<'_, '_> {
    fn hosts_but(&self, m: usize) -> Vec<String> {
        (0..self.members)
            .filter(|o| *o != m)
            .map(member_name)
            .chain((0..self.clients).map(|c| format!("c{c}")))
            .chain(["checker".to_owned()])
            .collect()
    }

    fn peers_of(&self, m: usize) -> Vec<String> {
        (0..self.members)
            .filter(|o| *o != m)
            .map(member_name)
            .collect()
    }

    /// Cuts (`cut`) or heals one directed link, counting the faults on it.
    fn link(&mut self, from: &str, to: &str, cut: bool) {
        let key = (from.to_owned(), to.to_owned());
        let count = self.cuts.entry(key.clone()).or_default();
        if cut {
            *count += 1;
            if *count == 1 {
                self.sim.partition_oneway(from, to);
            }
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.cuts.remove(&key);
                self.sim.repair_oneway(from, to);
            }
        }
    }

    /// The directed links a network fault cuts (none for the other faults).
    fn links_cut_by(&self, fault: &Fault) -> Vec<(String, String)> {
        let both_ways = |a: String, others: Vec<String>| -> Vec<(String, String)> {
            others
                .into_iter()
                .flat_map(|o| [(a.clone(), o.clone()), (o, a.clone())])
                .collect()
        };
        match *fault {
            Fault::Isolate { member } => both_ways(member_name(member), self.hosts_but(member)),
            Fault::CutPeers { member } => both_ways(member_name(member), self.peers_of(member)),
            Fault::OneWay { from, to } => vec![(member_name(from), member_name(to))],
            Fault::CutClient { client, member } => {
                both_ways(format!("c{client}"), vec![member_name(member)])
            }
            _ => Vec::new(),
        }
    }

    /// Cuts (`cut`) or heals the links of a network fault.
    fn set_links(&mut self, fault: &Fault, cut: bool) {
        for (from, to) in self.links_cut_by(fault) {
            self.link(&from, &to, cut);
        }
        self.note_cut_members();
    }

    fn is_cut(&self, from: &str, to: &str) -> bool {
        self.cuts.contains_key(&(from.to_owned(), to.to_owned()))
    }

    /// Records which members can exchange messages with no peer now (a round trip needs both
    /// ways), for the serving-rule check.
    fn note_cut_members(&mut self) {
        let now = sim_now(self.sim);
        for m in 0..self.members {
            let me = member_name(m);
            let cut = self
                .peers_of(m)
                .iter()
                .all(|o| self.is_cut(&me, o) || self.is_cut(o, &me));
            let mut s = self.shared.borrow_mut();
            s.cut_since[m] = match (cut, s.cut_since[m]) {
                (true, since) => since.or(Some(now)),
                (false, _) => None,
            };
        }
    }

    fn trace(&self, what: String) {
        self.shared
            .borrow_mut()
            .trace
            .push(format!("{} nemesis {what}", sim_now(self.sim)));
    }

    /// A process restart: its page cache (unsynced writes) survives, its memory does not.
    fn restart(&mut self, m: usize) {
        self.disks[m].fail_syncs(0);
        self.disks[m].set_full(false);
        self.sim.crash(member_name(m));
        self.shared.borrow_mut().statuses.remove(&m);
        self.sim.bounce(member_name(m));
        self.crashed[m] = false;
    }

    /// SIGKILL or power loss: each file keeps none, some or all of what it had not synced.
    fn crash(&mut self, member: usize, torn_seed: u64) {
        if self.crashed[member] {
            return;
        }
        self.sim.crash(member_name(member));
        self.shared.borrow_mut().statuses.remove(&member);
        let mut torn = StdRng::seed_from_u64(torn_seed);
        self.disks[member].crash(|unsynced| match torn.gen_range(0..3) {
            0 => 0,
            1 => torn.gen_range(0..=unsynced),
            _ => unsynced,
        });
        self.crashed[member] = true;
    }

    fn power_on(&mut self, member: usize) {
        if self.crashed[member] {
            self.sim.bounce(member_name(member));
            self.crashed[member] = false;
        }
    }

    fn start(&mut self, f: &Scheduled) {
        self.trace(format!("start {} until {}", f.fault, f.end_ms));
        match f.fault {
            Fault::Isolate { .. }
            | Fault::CutPeers { .. }
            | Fault::OneWay { .. }
            | Fault::CutClient { .. } => self.set_links(&f.fault, true),
            Fault::Crash { member, torn_seed } => self.crash(member, torn_seed),
            Fault::PowerLoss { torn_seed } => {
                for member in 0..self.members {
                    self.crash(member, torn_seed.wrapping_add(member as u64));
                }
            }
            Fault::Pause { member } => self.sim.pause(member_name(member)),
            Fault::Slow { max_latency_ms } => self
                .sim
                .set_max_message_latency(Duration::from_millis(max_latency_ms)),
            Fault::FailSyncs { member, count } => self.disks[member].fail_syncs(count),
            Fault::DiskFull { member } => self.disks[member].set_full(true),
            Fault::Freeze { client } => {
                let until = sim_now(self.sim) + 2 * workload::SESSION_TIMEOUT_MS as u64 + 500;
                self.shared.borrow_mut().frozen.insert(client, until);
            }
        }
    }

    fn end(&mut self, f: &Scheduled) {
        self.trace(format!("end {}", f.fault));
        match f.fault {
            Fault::Isolate { .. }
            | Fault::CutPeers { .. }
            | Fault::OneWay { .. }
            | Fault::CutClient { .. } => self.set_links(&f.fault, false),
            Fault::Crash { member, .. } => self.power_on(member),
            Fault::PowerLoss { .. } => (0..self.members).for_each(|m| self.power_on(m)),
            Fault::Pause { member } => self.sim.resume(member_name(member)),
            Fault::Slow { .. } => self.sim.set_max_message_latency(BASE_LATENCY),
            Fault::FailSyncs { member, .. } | Fault::DiskFull { member } => self.restart(member),
            Fault::Freeze { .. } => {}
        }
    }
}

const BASE_LATENCY: Duration = Duration::from_millis(3);

fn sim_now(sim: &turmoil::Sim<'_>) -> u64 {
    sim.elapsed().as_millis() as u64
}

/// After the clients are done: every member holds no ephemeral of a closed or expired session
/// and all hold the same tree.
async fn check_members(shared: Rc<RefCell<Shared>>) {
    let members = shared.borrow().members;
    for m in 0..members {
        let addr = member_addr(m);
        let mut answer = None;
        // Up to about 20 s: a member that does not answer by then once faults stopped has a
        // liveness problem, reported as such.
        for _ in 0..12 {
            if let Ok((mut conn, _)) = crate::client::connect(&addr, None, 0, 3000).await {
                let sync = Request::Sync(PathRequest { path: "/".into() });
                let list = Request::GetChildren(PathWatchRequest {
                    path: EPHEMERALS.into(),
                    watch: false,
                });
                if let (Ok(_), Ok(r)) = (conn.call(&sync).await, conn.call(&list).await) {
                    let _ = conn.call(&Request::CloseSession).await;
                    answer = Some(r);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut s = shared.borrow_mut();
        match answer {
            None => s
                .failures
                .push(format!("m{} never answered once faults stopped", m + 1)),
            Some(r) => match (r.err, r.body) {
                (ErrorCode::Ok, Some(Response::GetChildren(left))) if !left.is_empty() => {
                    s.failures.push(format!(
                        "m{}: ephemerals outlived their sessions: {left:?}",
                        m + 1
                    ))
                }
                (ErrorCode::Ok, _) | (ErrorCode::NoNode, _) => {}
                (err, _) => s
                    .failures
                    .push(format!("m{}: listing {EPHEMERALS}: {err:?}", m + 1)),
            },
        }
    }
    // Let the checker's own session closes reach every member.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sources: Vec<(usize, StatusSource)> = shared
        .borrow()
        .statuses
        .iter()
        .map(|(m, s)| (*m, s.clone()))
        .collect();
    let detail = Detail {
        digest: true,
        ..Detail::default()
    };
    let mut seen = Vec::new();
    for (m, source) in sources {
        match source.status(detail).await {
            Some(st) => seen.push((st.snap.last_zxid, st.snap.digest.unwrap_or_default())),
            None => shared
                .borrow_mut()
                .failures
                .push(format!("m{} has no running core at the end", m + 1)),
        }
    }
    let mut s = shared.borrow_mut();
    if seen.len() == members && seen.windows(2).any(|w| w[0] != w[1]) {
        s.failures
            .push(format!("members did not converge: (zxid, digest) {seen:?}"));
    }
    s.converged = seen;
}

/// Runs one seed.
pub fn run(opts: &Options) -> Report {
    corral_replication::seed_elections(Some(opts.seed));
    corral_io::hash::seed_hashes(Some(opts.seed));
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let members = opts.members;
    let schedule = nemesis::schedule(&mut rng, opts.workload_ms, opts.clients, members);
    let skews: Vec<i64> = (0..members).map(|_| rng.gen_range(-200..=200)).collect();
    // Clock rates within ±0.5% of true, so any two members' clocks run at most 1% apart: the
    // drift the serving rule's inequality allows for (ARCHITECTURE.md, "The serving rule").
    let rates: Vec<f64> = (0..members)
        .map(|_| 1.0 + rng.gen_range(-0.005..=0.005))
        .collect();
    let disks: Vec<MemDisk> = (0..members).map(|_| MemDisk::new()).collect();
    let shared = Rc::new(RefCell::new(Shared {
        members,
        cut_since: vec![None; members],
        last_event_zxid: vec![0; opts.clients],
        ..Shared::default()
    }));
    let final_read_ms = opts.workload_ms + 3_000;
    let check_ms = final_read_ms + 2 * workload::SESSION_TIMEOUT_MS as u64 + 3_000;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(check_ms + 60_000))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(BASE_LATENCY)
        .rng_seed(opts.seed)
        .build();
    for m in 0..members {
        let (disk, skew, shared) = (disks[m].clone(), skews[m], shared.clone());
        let reconfig = opts.reconfig;
        sim.host(member_name(m), move || {
            let cfg = member_config(m, members, disk.clone(), skew, reconfig);
            let (disk, shared) = (disk.clone(), shared.clone());
            async move {
                let server = match Server::start(cfg).await {
                    Ok(server) => server,
                    Err(e) if disk.is_failing() => {
                        // As a real member on a failing disk: down until the fault ends and
                        // the nemesis restarts it.
                        shared.borrow_mut().trace.push(format!(
                            "{} m{} cannot start on its failing disk: {e}",
                            workload::sim_ms(),
                            m + 1
                        ));
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                    Err(e) => return Err(format!("m{} cannot start: {e}", m + 1).into()),
                };
                shared
                    .borrow_mut()
                    .statuses
                    .insert(m, server.status_source());
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    for (m, rate) in rates.iter().enumerate() {
        sim.set_clock_rate(member_name(m), *rate);
    }
    for c in 0..opts.clients {
        let client = Client::new(c, opts.seed, shared.clone());
        let until = opts.workload_ms;
        sim.client(format!("c{c}"), async move {
            client.run(until, final_read_ms).await;
            Ok(())
        });
    }
    let watch_shared = shared.clone();
    sim.client("lease-watch", async move {
        watch_leases(watch_shared, final_read_ms).await;
        Ok(())
    });
    if opts.reconfig {
        let (operator, seed, until) = (shared.clone(), opts.seed, opts.workload_ms);
        sim.client("operator", async move {
            crate::reconfig::operate(operator, seed, until, check_ms - 3_000).await;
            Ok(())
        });
    }
    let checker_shared = shared.clone();
    sim.client("checker", async move {
        tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(check_ms))
            .await;
        check_members(checker_shared).await;
        Ok(())
    });

    let mut nemesis = Nemesis {
        sim: &mut sim,
        disks: &disks,
        shared: &shared,
        clients: opts.clients,
        members,
        crashed: vec![false; members],
        cuts: BTreeMap::new(),
    };
    let mut next = 0;
    let mut active: Vec<Scheduled> = Vec::new();
    let mut failures = Vec::new();
    loop {
        let now = sim_now(nemesis.sim);
        while next < schedule.len() && schedule[next].start_ms <= now {
            nemesis.start(&schedule[next]);
            active.push(schedule[next].clone());
            next += 1;
        }
        let (due, rest): (Vec<_>, Vec<_>) = active.into_iter().partition(|f| f.end_ms <= now);
        active = rest;
        for f in &due {
            nemesis.end(f);
        }
        match nemesis.sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                failures.push(format!("the simulation stopped: {e}"));
                break;
            }
        }
    }
    corral_replication::seed_elections(None);
    corral_io::hash::seed_hashes(None);

    let mut s = shared.borrow_mut();
    failures.append(&mut s.failures);
    if linearizable::check(&s.history, INITIAL).is_err() {
        failures.push(format!(
            "history not linearizable; {}",
            first_violation(&s.history)
        ));
    }
    if let Err(why) = crate::counter::check(&s.increments) {
        failures.push(format!("the counter is not linearizable: {why}"));
    }
    let last_read = s
        .history
        .iter()
        .filter_map(|e| match e.outcome {
            Outcome::Saw(state) => Some((e.answered, state.version)),
            _ => None,
        })
        .max();
    if let Some((_, version)) = last_read {
        if (version as u64) < s.acked_writes {
            failures.push(format!(
                "acknowledged writes lost: {} acknowledged, the register's version is {version}",
                s.acked_writes
            ));
        }
    }
    let faults: Vec<String> = schedule.iter().map(|f| f.fault.to_string()).collect();
    let summary = format!(
        "{} ops, {} increments, {} writes acknowledged, {} sessions expired, {} watch events, {} faults, final (zxid, digest) {:?}",
        s.history.len(),
        s.increments.len(),
        s.acked_writes,
        s.expired_sessions,
        s.events_fired,
        faults.len(),
        s.converged.first()
    );
    let trace = std::mem::take(&mut s.trace);
    Report {
        failures,
        trace_hash: hash_lines(&trace),
        trace,
        summary,
    }
}

const INITIAL: State = State {
    value: 0,
    version: 0,
};

/// The history cut at the earliest answer after which it is no longer linearizable, and the
/// operations around that point: where to start reading a failing seed's trace.
fn first_violation(history: &[Event]) -> String {
    let cut = |t: u64| -> Vec<Event> {
        history
            .iter()
            .filter(|e| e.invoked <= t)
            .map(|e| {
                let mut e = e.clone();
                if e.answered > t {
                    e.outcome = Outcome::Unknown;
                    e.answered = u64::MAX;
                }
                e
            })
            .collect()
    };
    let mut answers: Vec<u64> = history
        .iter()
        .map(|e| e.answered)
        .filter(|a| *a != u64::MAX)
        .collect();
    answers.sort_unstable();
    // Binary search for the first answer whose prefix fails.
    let (mut lo, mut hi) = (0, answers.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if linearizable::check(&cut(answers[mid]), INITIAL).is_err() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let Some(&at) = answers.get(lo) else {
        return "no prefix fails (the whole history does)".into();
    };
    let around: Vec<String> = history
        .iter()
        .filter(|e| e.answered == at || (e.invoked <= at && e.answered >= at))
        .map(|e| format!("{e:?}"))
        .collect();
    truncate(
        &format!(
            "first fails at {} ms: {}",
            at / 1_000_000,
            around.join("; ")
        ),
        1200,
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}
