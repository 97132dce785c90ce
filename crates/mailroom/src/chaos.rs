//! `mailroom chaos`: a 3-member Corral ensemble and N workers on this machine, with workers and
//! one Corral member SIGKILLed and restarted during the run, then the audit.

use crate::coord::{Conn, Job};
use crate::report;
use rand::seq::SliceRandom;
use rand::Rng;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub corral: PathBuf,
    pub inbox: PathBuf,
    pub model: PathBuf,
    pub workers: usize,
    pub worker_kills: usize,
    pub kill_member: bool,
    /// The design the workers follow: `claims`, `naive-flags` or `naive-timestamps`.
    pub strategy: String,
    pub batch: usize,
    pub work_ms: u64,
    pub timeout: Duration,
    pub keep: bool,
    /// Members and workers each in their own network namespace, with partitions in the chaos.
    pub machines: bool,
    /// The nemesis schedule's seed (`--machines`); random when not given.
    pub seed: Option<u64>,
    /// Partitions in the schedule (`--machines`): workers and members cut off, then healed.
    pub partitions: usize,
}

/// A child process killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) name: String,
}

impl Proc {
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Member {
    id: usize,
    dir: PathBuf,
    client_port: u16,
}

struct Ensemble {
    corral: PathBuf,
    members: Vec<Member>,
    procs: Vec<Option<Proc>>,
}

impl Ensemble {
    fn create(corral: &Path, root: &Path) -> std::io::Result<Ensemble> {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<std::io::Result<_>>()?;
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, election))| {
                format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1)
            })
            .collect();
        let mut members = Vec::new();
        for (i, (client, _, _)) in ports.iter().enumerate() {
            let dir = root.join(format!("corral-{}", i + 1));
            std::fs::create_dir_all(dir.join("data"))?;
            std::fs::write(dir.join("data").join("myid"), format!("{}\n", i + 1))?;
            // tickTime 500: sessions may be as short as 1 s, so dead workers' claims go quickly.
            let cfg = format!(
                "tickTime=500\nclientPort={client}\nclientPortAddress=127.0.0.1\ndataDir={}\n\
                 4lw.commands.whitelist=ruok,srvr\nadmin.enableServer=false\nmaxClientCnxns=0\n{servers}",
                dir.join("data").display()
            );
            std::fs::write(dir.join("zoo.cfg"), cfg)?;
            members.push(Member {
                id: i + 1,
                dir,
                client_port: *client,
            });
        }
        let procs = members.iter().map(|_| None).collect();
        Ok(Ensemble {
            corral: corral.to_owned(),
            members,
            procs,
        })
    }

    fn hosts(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start(&mut self, i: usize) -> std::io::Result<()> {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.join("corral.log"))?;
        let child = Command::new(&self.corral)
            .arg("server")
            .arg("--config")
            .arg(m.dir.join("zoo.cfg"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.procs[i] = Some(Proc {
            child,
            name: format!("corral-{}", m.id),
        });
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill();
        }
    }
}

fn spawn_worker(cfg: &ChaosConfig, hosts: &str, id: &str, log_dir: &Path) -> std::io::Result<Proc> {
    let exe = std::env::current_exe()?;
    spawn_worker_with(Command::new(exe), cfg, hosts, id, log_dir)
}

/// Starts `cmd` (this binary, here or in a machine's namespace) as a worker of the job.
pub(crate) fn spawn_worker_with(
    mut cmd: Command,
    cfg: &ChaosConfig,
    hosts: &str,
    id: &str,
    log_dir: &Path,
) -> std::io::Result<Proc> {
    let log = std::fs::File::create(log_dir.join(format!("{id}.log")))?;
    let out = log.try_clone()?;
    cmd.args(["worker", "--connect", hosts, "--id", id])
        .arg("--inbox")
        .arg(&cfg.inbox)
        .arg("--model")
        .arg(&cfg.model)
        .args(["--batch", &cfg.batch.to_string()])
        .args(["--work-ms", &cfg.work_ms.to_string()])
        .args(["--session-timeout-ms", "2000"])
        .arg("--journal")
        .arg(log_dir.join(format!("{id}.journal")))
        .stdout(out)
        .stderr(log);
    cmd.args(["--strategy", &cfg.strategy]);
    Ok(Proc {
        child: cmd.spawn()?,
        name: id.to_owned(),
    })
}

/// Runs the chaos scenario; Ok(audit passed).
/// Checks, before anything starts, that the run has what it needs, and says how to make what
/// is missing: the inbox (`mailroom prepare`), the model (`mailroom train`), the corral binary.
pub fn check_inputs(cfg: &ChaosConfig) -> Result<(), String> {
    let labels = cfg.inbox.join("labels.tsv");
    if !labels.is_file() {
        return Err(format!(
            "no inbox at {} ({} is missing): run `mailroom prepare --inbox {}` first (it fetches \
             the corpus with npm), or pass --prepare to make the inbox and model now",
            cfg.inbox.display(),
            labels.display(),
            cfg.inbox.display()
        ));
    }
    if !cfg.model.is_file() {
        return Err(format!(
            "no model at {}: run `mailroom train --inbox {} --model {}` first, or pass --prepare",
            cfg.model.display(),
            cfg.inbox.display(),
            cfg.model.display()
        ));
    }
    if !cfg.corral.is_file() {
        return Err(format!(
            "no corral binary at {}: build it (`cargo build --release -p corral`) or pass --corral",
            cfg.corral.display()
        ));
    }
    Ok(())
}

pub async fn run(cfg: ChaosConfig) -> Result<bool, String> {
    check_inputs(&cfg)?;
    if cfg.strategy == "naive-manager" && !cfg.machines {
        return Err(
            "the manager design runs with --machines (its manager on a machine of its own)".into(),
        );
    }
    let root = std::env::temp_dir().join(format!("mailroom-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let outcome = if cfg.machines {
        crate::machines::scenario(&cfg, &root).await
    } else {
        scenario(&cfg, &root).await
    };
    if cfg.keep || outcome.is_err() {
        eprintln!("chaos: logs kept in {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    outcome
}

async fn scenario(cfg: &ChaosConfig, root: &Path) -> Result<bool, String> {
    let mut ensemble = Ensemble::create(&cfg.corral, root).map_err(|e| e.to_string())?;
    for i in 0..3 {
        ensemble
            .start(i)
            .map_err(|e| format!("cannot start corral: {e}"))?;
    }
    let hosts = ensemble.hosts();
    let conn = wait_for_ensemble(&hosts).await?;
    let strategy = &cfg.strategy;
    println!(
        "chaos: 3-member ensemble at {hosts}; {} workers, strategy {strategy}",
        cfg.workers
    );
    let mut workers: Vec<Proc> = (0..cfg.workers)
        .map(|i| spawn_worker(cfg, &hosts, &format!("w{i}"), root))
        .collect::<std::io::Result<_>>()
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    let job = Job::new("inbox");
    let started = Instant::now();
    let mut kills_left = cfg.worker_kills;
    let mut member_killed: Option<(usize, Instant)> = None;
    let mut member_restarted = !cfg.kill_member;
    let mut next_kill = Instant::now() + Duration::from_millis(700);
    let mut restarts = 0;
    let mut rng = rand::thread_rng();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > cfg.timeout {
            return Err(format!("the job did not finish within {:?}", cfg.timeout));
        }
        let running: Vec<usize> = (0..workers.len())
            .filter(|&i| workers[i].running())
            .collect();
        if running.is_empty() && member_restarted {
            break;
        }
        if kills_left > 0 && Instant::now() >= next_kill && !running.is_empty() {
            let victim = *running.choose(&mut rng).expect("not empty");
            println!(
                "chaos: SIGKILL worker {} at {:.1}s",
                workers[victim].name,
                started.elapsed().as_secs_f64()
            );
            workers[victim].kill();
            kills_left -= 1;
            restarts += 1;
            let id = format!("w{victim}-r{restarts}");
            workers[victim] = spawn_worker(cfg, &hosts, &id, root).map_err(|e| e.to_string())?;
            next_kill = Instant::now() + Duration::from_millis(rng.gen_range(500..1200));
        }
        if cfg.kill_member
            && member_killed.is_none()
            && started.elapsed() > Duration::from_millis(1500)
        {
            let victim = rng.gen_range(0..3);
            println!(
                "chaos: SIGKILL corral member {} at {:.1}s",
                victim + 1,
                started.elapsed().as_secs_f64()
            );
            ensemble.kill(victim);
            member_killed = Some((victim, Instant::now()));
        }
        if let Some((victim, at)) = member_killed {
            if !member_restarted && at.elapsed() > Duration::from_secs(2) {
                println!("chaos: restarting corral member {}", victim + 1);
                ensemble.start(victim).map_err(|e| e.to_string())?;
                member_restarted = true;
            }
        }
    }
    let elapsed = started.elapsed();
    let ops = operations_logged(root);
    let audit = report::audit(&conn, &job, &cfg.inbox).await?;
    println!(
        "chaos: finished in {:.1}s with {} worker kill(s) and {} member kill(s)",
        elapsed.as_secs_f64(),
        cfg.worker_kills - kills_left,
        usize::from(member_killed.is_some())
    );
    println!(
        "chaos: {:.0} emails/s; {ops} Corral operations by the workers that finished, {:.2} per email",
        audit.results as f64 / elapsed.as_secs_f64(),
        ops as f64 / audit.results.max(1) as f64
    );
    report::print_audit(&audit);
    print_duplicates(&duplicates(root, &audit.writers), audit.results);
    for i in 0..3 {
        ensemble.kill(i);
    }
    Ok(audit.passed())
}

/// The work done more than once, from every worker's journal in `dir` and who wrote each
/// result.
pub fn duplicates(
    dir: &Path,
    writers: &std::collections::HashMap<String, String>,
) -> crate::journal::Duplicates {
    let journals: Vec<(String, String)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "journal"))
        .filter_map(|e| {
            let worker = e.path().file_stem()?.to_string_lossy().into_owned();
            Some((worker, std::fs::read_to_string(e.path()).ok()?))
        })
        .collect();
    let pairs = journals.iter().map(|(w, t)| (w.as_str(), t.as_str()));
    crate::journal::tally(pairs, writers)
}

pub fn print_duplicates(d: &crate::journal::Duplicates, results: usize) {
    let pct = |n: usize| 100.0 * n as f64 / results.max(1) as f64;
    println!(
        "chaos: work done twice: {} classifications repeated ({:.1}% of {results} emails), {} emails classified more than once",
        d.wasted(),
        pct(d.wasted()),
        d.emails_repeated
    );
    for (why, n) in &d.wasted_by_reason {
        println!("  {why:>26}: {n} ({:.1}%)", pct(*n));
    }
}

pub(crate) async fn wait_for_ensemble(hosts: &str) -> Result<Conn, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(conn) = Conn::connect(hosts, Duration::from_secs(10)).await {
            // A write proves a leader is elected.
            if conn.ensure(crate::coord::ROOT).await.is_ok() {
                return Ok(conn);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("the ensemble at {hosts} did not come up"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Corral operations the workers report when they finish (killed ones report nothing).
pub(crate) fn operations_logged(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| {
                    let (_, rest) = l.split_once(" claims lost, ")?;
                    rest.split(' ').next()?.parse::<u64>().ok()
                })
                .collect::<Vec<_>>()
        })
        .sum()
}
