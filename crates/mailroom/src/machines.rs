//! `mailroom chaos --machines`: every Corral member and every worker on its own "machine", a
//! network namespace (root only), and a nemesis that cuts machines off the network as well as
//! SIGKILLing them. The schedule comes from a seed, is printed first, and is replayed by
//! passing the same `--seed`.
//!
//! Workers reach the members over the network the nemesis cuts; this process (the chaos
//! controller, in the root namespace) reaches each member over a link no cut touches, to find
//! the leader and to audit.

use crate::chaos::{operations_logged, spawn_worker_with, wait_for_ensemble, ChaosConfig, Proc};
use crate::coord::Job;
use crate::report;
use corral_netns::Network;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Ports are the same on every machine: each namespace has its own.
const CLIENT_PORT: u16 = 2181;
/// How long a cut lasts: longer than the workers' session timeout (2 s), so a cut-off worker's
/// claims expire and another worker takes its batches over.
const CUT_FOR: Duration = Duration::from_millis(3000);
/// How long a killed member stays down.
const DOWN_FOR: Duration = Duration::from_millis(2000);

/// Which member an action hits: the leader at that moment, or a fixed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Leader,
    Follower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    KillWorker(usize),
    CutWorker(usize),
    KillMember(Member),
    CutMember(Member),
    /// The manager design's manager: nothing restarts it, as nothing watches it.
    KillManager,
    /// SIGSTOP, then SIGCONT: a worker stalled (a long GC pause, a swapped-out process) past
    /// its session timeout, which comes back believing it still holds its batch.
    PauseWorker(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Since the workers started.
    pub at: Duration,
    pub action: Action,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.at.as_secs_f64();
        let cut = CUT_FOR.as_secs_f64();
        match self.action {
            Action::KillWorker(w) => write!(f, "+{at:.1}s SIGKILL worker w{w} (restarted)"),
            Action::CutWorker(w) => write!(f, "+{at:.1}s cut worker w{w} off for {cut:.1}s"),
            Action::KillMember(m) => write!(
                f,
                "+{at:.1}s SIGKILL the {m:?} member (restarted after {:.1}s)",
                DOWN_FOR.as_secs_f64()
            ),
            Action::CutMember(m) => write!(f, "+{at:.1}s cut the {m:?} member off for {cut:.1}s"),
            Action::KillManager => write!(f, "+{at:.1}s SIGKILL the manager (for good)"),
            Action::PauseWorker(w) => {
                write!(f, "+{at:.1}s pause worker w{w} (SIGSTOP) for {cut:.1}s")
            }
        }
    }
}

/// The nemesis schedule for `seed`: the same seed, the same schedule.
pub fn schedule(seed: u64, cfg: &ChaosConfig) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let workers = cfg.workers.max(1);
    let mut actions = Vec::new();
    for _ in 0..cfg.worker_kills {
        actions.push(Action::KillWorker(rng.gen_range(0..workers)));
    }
    for p in 0..cfg.partitions {
        actions.push(match p % 3 {
            0 | 1 => Action::CutWorker(rng.gen_range(0..workers)),
            _ => Action::CutMember(
                *[Member::Leader, Member::Follower]
                    .choose(&mut rng)
                    .expect("two"),
            ),
        });
    }
    if cfg.partitions >= 2 {
        // The leader cut off is the case the serving rule exists for: always in the mix.
        actions.push(Action::CutMember(Member::Leader));
        actions.push(Action::PauseWorker(rng.gen_range(0..workers)));
    }
    if cfg.kill_member {
        actions.push(Action::KillMember(Member::Leader));
    }
    actions.shuffle(&mut rng);
    if managed(cfg) {
        // Early, while most batches are still to be handed out.
        actions.insert(0, Action::KillManager);
    }
    let mut at = Duration::from_millis(800);
    actions
        .into_iter()
        .map(|action| {
            let e = Event { at, action };
            at += Duration::from_millis(rng.gen_range(600..1400));
            e
        })
        .collect()
}

fn managed(cfg: &ChaosConfig) -> bool {
    cfg.strategy == "naive-manager"
}

/// The ensemble's three members and the workers, each on its machine; the manager design's
/// manager on one more.
struct Machines {
    net: Network,
    members: Vec<Option<Proc>>,
    workers: Vec<Proc>,
    manager: Option<Proc>,
}

impl Machines {
    fn worker_host(&self, w: usize) -> usize {
        3 + w
    }

    /// A machine's name in the run's messages.
    fn name(&self, host: usize) -> String {
        match host {
            0..=2 => format!("member {}", host + 1),
            h if h - 3 < self.workers.len() => format!("worker w{}", h - 3),
            _ => "the manager".into(),
        }
    }

    fn start_manager(&mut self, cfg: &ChaosConfig, root: &Path) -> Result<(), String> {
        let host = 3 + cfg.workers;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("manager.log"))
            .map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = self
            .net
            .command(host, exe)
            .args(["manager", "--connect", &self.worker_hosts()])
            .arg("--inbox")
            .arg(&cfg.inbox)
            .args(["--batch", &cfg.batch.to_string()])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the manager: {e}"))?;
        self.manager = Some(Proc {
            child,
            name: "manager".into(),
        });
        Ok(())
    }

    /// Where workers reach the members: over the network the nemesis cuts.
    fn worker_hosts(&self) -> String {
        hosts(|i| self.net.peer_addr(i))
    }

    /// Where this process reaches them: over links no cut touches.
    fn controller_hosts(&self) -> String {
        hosts(|i| self.net.client_addr(i))
    }

    fn start_member(&mut self, cfg: &ChaosConfig, root: &Path, i: usize) -> Result<(), String> {
        let dir = root.join(format!("corral-{}", i + 1));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("corral.log"))
            .map_err(|e| e.to_string())?;
        let child = self
            .net
            .command(i, &cfg.corral)
            .arg("server")
            .arg("--config")
            .arg(dir.join("zoo.cfg"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start corral: {e}"))?;
        self.members[i] = Some(Proc {
            child,
            name: format!("corral-{}", i + 1),
        });
        Ok(())
    }

    /// The member that says it leads (asked over the uncut links), if one does.
    fn leader(&self) -> Option<usize> {
        (0..3).find(|&i| mode(&format!("{}:{CLIENT_PORT}", self.net.client_addr(i))) == "leader")
    }

    fn pick(&self, m: Member, rng: &mut StdRng) -> usize {
        let leader = self.leader();
        match (m, leader) {
            (Member::Leader, Some(l)) => l,
            (Member::Follower, Some(l)) => (l + rng.gen_range(1..3)) % 3,
            (_, None) => rng.gen_range(0..3),
        }
    }
}

fn hosts(addr: impl Fn(usize) -> std::net::Ipv4Addr) -> String {
    (0..3)
        .map(|i| format!("{}:{CLIENT_PORT}", addr(i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A member's mode from its `srvr` ("" if it does not answer within half a second).
fn mode(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(sock) = addr.parse() else {
        return String::new();
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(500)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.write_all(b"srvr");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .unwrap_or("")
        .to_owned()
}

/// Writes each member's zoo.cfg: the same ports on every machine, the peers' addresses on the
/// network the nemesis cuts, clients taken on every address.
fn configure(net: &Network, root: &Path) -> Result<(), String> {
    let servers: String = (0..3)
        .map(|i| format!("server.{}={}:2888:3888\n", i + 1, net.peer_addr(i)))
        .collect();
    for i in 0..3 {
        let dir = root.join(format!("corral-{}", i + 1));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        std::fs::write(data.join("myid"), format!("{}\n", i + 1)).map_err(|e| e.to_string())?;
        let cfg = format!(
            "tickTime=500\nclientPort={CLIENT_PORT}\nclientPortAddress=0.0.0.0\ndataDir={}\n\
             4lw.commands.whitelist=ruok,srvr\nadmin.enableServer=false\nmaxClientCnxns=0\n{servers}",
            data.display()
        );
        std::fs::write(dir.join("zoo.cfg"), cfg).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the scenario on machines; Ok(audit passed).
pub async fn scenario(cfg: &ChaosConfig, root: &Path) -> Result<bool, String> {
    if let Some(why) = corral_netns::unavailable() {
        return Err(format!("--machines needs network namespaces: {why}"));
    }
    let seed = cfg.seed.unwrap_or_else(|| rand::thread_rng().gen());
    let plan = schedule(seed, cfg);
    println!("chaos: schedule (replay with --machines --seed {seed}):");
    for e in &plan {
        println!("  {e}");
    }
    let hosts = 3 + cfg.workers + usize::from(managed(cfg));
    let net = Network::new(hosts).map_err(|e| format!("cannot build the network: {e}"))?;
    configure(&net, root)?;
    let mut m = Machines {
        net,
        members: (0..3).map(|_| None).collect(),
        workers: Vec::new(),
        manager: None,
    };
    for i in 0..3 {
        m.start_member(cfg, root, i)?;
    }
    let conn = wait_for_ensemble(&m.controller_hosts()).await?;
    if managed(cfg) {
        m.start_manager(cfg, root)?;
    }
    let worker_hosts = m.worker_hosts();
    println!(
        "chaos: 3 members and {} workers, each on its own machine (network namespace); members at {worker_hosts}",
        cfg.workers
    );
    for w in 0..cfg.workers {
        let cmd = m.net.command(
            m.worker_host(w),
            std::env::current_exe().map_err(|e| e.to_string())?,
        );
        let p = spawn_worker_with(cmd, cfg, &worker_hosts, &format!("w{w}"), root)
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        m.workers.push(p);
    }
    let started = Instant::now();
    let outcome = play(cfg, root, &mut m, &plan, seed, started).await;
    m.net.heal_all();
    outcome?;
    let elapsed = started.elapsed();
    let job = Job::new("inbox");
    let audit = report::audit(&conn, &job, &cfg.inbox).await?;
    let ops = operations_logged(root);
    println!(
        "chaos: finished in {:.1}s; {:.0} emails/s; {ops} Corral operations by the workers that finished",
        elapsed.as_secs_f64(),
        audit.results as f64 / elapsed.as_secs_f64(),
    );
    report::print_audit(&audit);
    let duplicates = crate::chaos::duplicates(root, &audit.writers);
    crate::chaos::print_duplicates(&duplicates, audit.results);
    Ok(audit.passed())
}

/// Carries out the schedule until every worker has finished (the job is done).
async fn play(
    cfg: &ChaosConfig,
    root: &Path,
    m: &mut Machines,
    plan: &[Event],
    seed: u64,
    started: Instant,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut next = 0;
    let mut heals: Vec<(Instant, usize)> = Vec::new();
    let mut restarts: Vec<(Instant, usize)> = Vec::new();
    let mut paused: Vec<(Instant, usize)> = Vec::new();
    // The manager design stalls for good once its manager is gone: the run ends when the job
    // has made no progress for a while after the last event, and the audit says what is left.
    let mut stalled = Stall::default();
    let mut generation = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > cfg.timeout {
            return Err(format!("the job did not finish within {:?}", cfg.timeout));
        }
        let now = Instant::now();
        for (_, host) in heals.iter().filter(|(at, _)| *at <= now) {
            m.net.heal(*host);
            println!(
                "chaos: +{:.1}s healed {}",
                started.elapsed().as_secs_f64(),
                m.name(*host)
            );
        }
        heals.retain(|(at, _)| *at > now);
        for (_, i) in restarts.iter().filter(|(at, _)| *at <= now) {
            println!(
                "chaos: +{:.1}s restarting member {}",
                started.elapsed().as_secs_f64(),
                i + 1
            );
            m.start_member(cfg, root, *i)?;
        }
        restarts.retain(|(at, _)| *at > now);
        for (_, w) in paused.iter().filter(|(at, _)| *at <= now) {
            signal(&m.workers[*w], libc::SIGCONT);
            println!(
                "chaos: +{:.1}s resumed worker w{w}",
                started.elapsed().as_secs_f64()
            );
        }
        paused.retain(|(at, _)| *at > now);
        while next < plan.len() && plan[next].at <= started.elapsed() {
            let e = plan[next];
            next += 1;
            println!("chaos: {e}");
            match e.action {
                Action::KillWorker(w) if w < m.workers.len() && m.workers[w].running() => {
                    m.workers[w].kill();
                    generation += 1;
                    let cmd = m.net.command(
                        m.worker_host(w),
                        std::env::current_exe().map_err(|e| e.to_string())?,
                    );
                    let id = format!("w{w}-r{generation}");
                    m.workers[w] = spawn_worker_with(cmd, cfg, &m.worker_hosts(), &id, root)
                        .map_err(|e| e.to_string())?;
                }
                Action::CutWorker(w) if w < m.workers.len() => {
                    cut(m, &mut heals, m.worker_host(w), now);
                }
                Action::CutMember(which) => {
                    let i = m.pick(which, &mut rng);
                    println!("chaos:   (member {})", i + 1);
                    cut(m, &mut heals, i, now);
                }
                Action::KillManager => {
                    if let Some(mut p) = m.manager.take() {
                        p.kill();
                    }
                }
                Action::PauseWorker(w) if w < m.workers.len() => {
                    signal(&m.workers[w], libc::SIGSTOP);
                    paused.push((now + CUT_FOR, w));
                }
                Action::KillMember(which) => {
                    let i = m.pick(which, &mut rng);
                    println!("chaos:   (member {})", i + 1);
                    if let Some(mut p) = m.members[i].take() {
                        p.kill();
                    }
                    restarts.push((now + DOWN_FOR, i));
                }
                _ => {}
            }
        }
        let running = m
            .workers
            .iter_mut()
            .map(|w| w.running())
            .filter(|r| *r)
            .count();
        let quiet = heals.is_empty() && restarts.is_empty() && paused.is_empty();
        if running == 0 && quiet {
            return Ok(());
        }
        let stalled_for_good = managed(cfg) && m.manager.is_none() && quiet && next == plan.len();
        if stalled_for_good && stalled.no_progress_for(journal_lines(root)) > STALL {
            println!(
                "chaos: +{:.1}s no progress for {:.0}s without a manager: stopping the workers",
                started.elapsed().as_secs_f64(),
                STALL.as_secs_f64()
            );
            for w in &mut m.workers {
                w.kill();
            }
            return Ok(());
        }
    }
}

/// How long the manager design may make no progress, with its manager gone, before the run
/// stops waiting for it.
const STALL: Duration = Duration::from_secs(3);

/// Tracks when a measure of progress last moved.
#[derive(Default)]
struct Stall {
    last: usize,
    since: Option<Instant>,
}

impl Stall {
    fn no_progress_for(&mut self, progress: usize) -> Duration {
        if self.since.is_none() || progress != self.last {
            self.last = progress;
            self.since = Some(Instant::now());
        }
        self.since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// Lines in all the workers' journals: it grows while anyone classifies anything.
fn journal_lines(root: &Path) -> usize {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "journal"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|t| t.lines().count())
        .sum()
}

fn signal(p: &Proc, sig: libc::c_int) {
    // SAFETY: kill(2) on a child this process started and has not reaped.
    unsafe {
        libc::kill(p.child.id() as libc::pid_t, sig);
    }
}

/// Cuts `host` off until `now + CUT_FOR`; a host cut already stays cut that much longer.
fn cut(m: &Machines, heals: &mut Vec<(Instant, usize)>, host: usize, now: Instant) {
    heals.retain(|(_, h)| *h != host);
    m.net.isolate(host);
    heals.push((now + CUT_FOR, host));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ChaosConfig {
        ChaosConfig {
            corral: "corral".into(),
            inbox: "inbox".into(),
            model: "model.json".into(),
            workers: 4,
            worker_kills: 2,
            kill_member: true,
            strategy: "claims".into(),
            batch: 25,
            work_ms: 10,
            timeout: Duration::from_secs(60),
            keep: false,
            machines: true,
            seed: None,
            partitions: 3,
        }
    }

    #[test]
    fn a_seed_replays_its_schedule() {
        let a = schedule(7, &cfg());
        assert_eq!(a, schedule(7, &cfg()));
        assert_ne!(a, schedule(8, &cfg()));
        // 2 worker kills, 3 partitions, the leader cut off, a worker paused, the leader killed.
        assert_eq!(a.len(), 8);
        assert!(a
            .iter()
            .any(|e| e.action == Action::CutMember(Member::Leader)));
        assert!(a.windows(2).all(|w| w[0].at < w[1].at));
    }
}
