//! The designs the case study's seed calls naive, run under the same chaos to show what they
//! lose or duplicate beside Corral's claims:
//!
//! - **read flags** (`naive-flags`): mark emails read, then process them. A reader that dies in
//!   between loses what it marked.
//! - **timestamps** (`naive-timestamps`): a central store without sessions. A claim is a
//!   persistent node holding its worker and a timestamp the worker refreshes; a claim older
//!   than [`STALE`] is taken over. A worker that is only cut off (or paused) comes back and
//!   commits a batch that is no longer its own: the work is done twice, and the batch's results
//!   come from two workers.
//! - **a manager** (`naive-manager`): one process hands out batches (`assign/<worker>`) and
//!   keeps who has what in its memory. Killed, nothing is handed out until it is restarted; the
//!   restarted manager knows only what is done, and hands out again what was in flight: the
//!   work is done twice, and a slow holder's results land in a batch another has committed.

use crate::classify::tokens;
use crate::coord::{batch_index, batch_name, now_ms, ClaimInfo, Conn, Job, Manifest};
use crate::corpus::{self, Email};
use crate::journal::note;
use crate::worker::{reconnecting, Report, WorkerConfig};
use rand::seq::SliceRandom;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// A timestamp claim older than this is taken over: the workers' session timeout, so the
/// naive design gets as long as Corral's claims do.
pub const STALE: Duration = Duration::from_millis(2000);

/// The read-flags design: a worker marks emails as read, then processes them, then writes
/// results. A worker that dies between the two loses what it marked.
pub async fn run_flags(cfg: &WorkerConfig) -> Result<Report, String> {
    let emails = corpus::load(&cfg.inbox).map_err(|e| e.to_string())?;
    // A lost connection is reconnected: what this design loses, it loses by its flags.
    reconnecting(cfg, async |conn, report| {
        flags(cfg, conn, &emails, report).await
    })
    .await
}

async fn flags(
    cfg: &WorkerConfig,
    conn: &Conn,
    emails: &[Email],
    report: &mut Report,
) -> Result<(), zk::Error> {
    let job = Job::new(&cfg.job);
    conn.manifest(&job, manifest(cfg, emails)).await?;
    loop {
        let read: HashSet<String> = conn
            .children(&job.read_flags())
            .await?
            .into_iter()
            .collect();
        let mut unread: Vec<&Email> = emails.iter().filter(|e| !read.contains(&e.id)).collect();
        if unread.is_empty() {
            return Ok(());
        }
        unread.shuffle(&mut rand::thread_rng());
        let mut mine = Vec::new();
        for e in unread.into_iter().take(cfg.batch) {
            let flag = format!("{}/{}", job.read_flags(), e.id);
            match conn
                .op()
                .create(&flag, cfg.id.as_bytes(), &crate::coord::open())
                .await
            {
                Ok(_) => mine.push(e),
                Err(zk::Error::NodeExists) => {}
                Err(err) => return Err(err),
            }
        }
        for e in mine {
            let label = classify(cfg, e).await;
            write_result(conn, &job, e, &label, &cfg.id).await?;
            report.emails += 1;
        }
    }
}

fn manifest(cfg: &WorkerConfig, emails: &[Email]) -> Manifest {
    Manifest {
        emails: emails.len(),
        batch: cfg.batch,
    }
}

async fn classify(cfg: &WorkerConfig, e: &Email) -> String {
    let label = match corpus::read_email(&cfg.inbox, &e.id) {
        Ok(raw) => cfg.model.predict(&tokens(&raw)).as_str(),
        Err(_) => "unreadable",
    };
    if !cfg.work_per_email.is_zero() {
        tokio::time::sleep(cfg.work_per_email).await;
    }
    label.to_owned()
}

/// Writes one result; false if another worker's was there first.
async fn write_result(
    conn: &Conn,
    job: &Job,
    e: &Email,
    label: &str,
    worker: &str,
) -> Result<bool, zk::Error> {
    let data = format!("{label} {worker}");
    match conn
        .op()
        .create(
            &job.result_of(&e.id),
            data.as_bytes(),
            &crate::coord::open(),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(zk::Error::NodeExists) => Ok(false),
        Err(err) => Err(err),
    }
}

/// The timestamps design: claims without sessions. See the module's comment.
pub async fn run_timestamps(cfg: &WorkerConfig) -> Result<Report, String> {
    let emails = corpus::load(&cfg.inbox).map_err(|e| e.to_string())?;
    // Sessions play no part in this design: a lost one is just reconnected, and the batch in
    // hand committed anyway.
    let mut unsent: Option<Unsent> = None;
    reconnecting(cfg, async |conn, report| {
        timestamps(cfg, conn, &emails, report, &mut unsent).await
    })
    .await
}

/// A batch classified and not yet committed when the connection went: (batch, results).
type Unsent = (usize, Vec<(Email, String)>);

async fn timestamps(
    cfg: &WorkerConfig,
    conn: &Conn,
    emails: &[Email],
    report: &mut Report,
    unsent: &mut Option<Unsent>,
) -> Result<(), zk::Error> {
    let job = Job::new(&cfg.job);
    let manifest = conn.manifest(&job, manifest(cfg, emails)).await?;
    conn.ensure(&job.stamps()).await?;
    if let Some((b, results)) = unsent.take() {
        // Nothing tells this worker the batch is no longer its own.
        let refs: Vec<(&Email, String)> = results.iter().map(|(e, l)| (e, l.clone())).collect();
        let name = batch_name(b);
        match commit(cfg, conn, &job, b, &refs).await {
            Ok(wrote) => {
                note(&cfg.journal, || format!("commit {name}"));
                report.emails += wrote;
            }
            Err(err) => {
                *unsent = Some((b, results));
                return Err(err);
            }
        }
    }
    loop {
        let done: HashSet<usize> = conn
            .children(&job.done())
            .await?
            .iter()
            .filter_map(|n| batch_index(n))
            .collect();
        if done.len() >= manifest.batches() {
            return Ok(());
        }
        let mut pending: Vec<usize> = (0..manifest.batches())
            .filter(|b| !done.contains(b))
            .collect();
        pending.shuffle(&mut rand::thread_rng());
        let mut took = None;
        for b in pending {
            if take_stale(cfg, conn, &job, b).await? {
                took = Some(b);
                break;
            }
        }
        let Some(b) = took else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let name = batch_name(b);
        note(&cfg.journal, || format!("start {name}"));
        let mut results = Vec::new();
        let mut stamped = Instant::now();
        for e in &emails[manifest.range(b)] {
            results.push((e, classify(cfg, e).await));
            note(&cfg.journal, || format!("email {name} {}", e.id));
            if stamped.elapsed() > STALE / 4 {
                // The refresh is the design's only defence, and it does not check whether
                // the claim is still this worker's: a cut-off worker cannot even send it.
                let path = format!("{}/{name}", job.stamps());
                let _ = conn.op().set_data(&path, &stamp_of(cfg), None).await;
                stamped = Instant::now();
            }
        }
        let wrote = match commit(cfg, conn, &job, b, &results).await {
            Ok(n) => n,
            Err(err) => {
                let owned = results.into_iter().map(|(e, l)| (e.clone(), l)).collect();
                *unsent = Some((b, owned));
                return Err(err);
            }
        };
        note(&cfg.journal, || format!("commit {name}"));
        report.batches += 1;
        report.emails += wrote;
    }
}

/// Writes a batch's results one by one, then its done node, as this design does: nothing checks
/// that the batch is still this worker's. Returns how many results it wrote.
async fn commit(
    cfg: &WorkerConfig,
    conn: &Conn,
    job: &Job,
    b: usize,
    results: &[(&Email, String)],
) -> Result<usize, zk::Error> {
    let mut wrote = 0;
    for (e, label) in results {
        if write_result(conn, job, e, label, &cfg.id).await? {
            wrote += 1;
        }
    }
    match conn
        .op()
        .create(&job.done_of(b), cfg.id.as_bytes(), &crate::coord::open())
        .await
    {
        Ok(_) | Err(zk::Error::NodeExists) => Ok(wrote),
        Err(err) => Err(err),
    }
}

fn stamp_of(cfg: &WorkerConfig) -> Vec<u8> {
    let info = ClaimInfo {
        worker: cfg.id.clone(),
        ts_ms: now_ms(),
        status: "claimed".into(),
    };
    serde_json::to_vec(&info).expect("plain data")
}

/// Takes batch `b` if nobody claimed it or its claim is stale.
async fn take_stale(
    cfg: &WorkerConfig,
    conn: &Conn,
    job: &Job,
    b: usize,
) -> Result<bool, zk::Error> {
    let path = format!("{}/{}", job.stamps(), batch_name(b));
    let stamp = stamp_of(cfg);
    match conn.op().get_data(&path).await {
        Err(zk::Error::NoNode) => {
            match conn.op().create(&path, &stamp, &crate::coord::open()).await {
                Ok(_) => Ok(true),
                Err(zk::Error::NodeExists) => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
        Ok((data, stat)) => {
            let info: Option<ClaimInfo> = serde_json::from_slice(&data).ok();
            let age = now_ms().saturating_sub(info.map_or(0, |i| i.ts_ms));
            if age < STALE.as_millis() as u64 {
                return Ok(false);
            }
            match conn.op().set_data(&path, &stamp, Some(stat.version)).await {
                Ok(_) => Ok(true),
                Err(zk::Error::BadVersion) => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// How often the manager and its workers look at the assignments.
const MANAGER_POLL: Duration = Duration::from_millis(100);

/// The manager of the manager design: hands each idle worker the next batch that is neither
/// done nor, as far as this process remembers, handed out. Runs until every batch is done.
pub async fn run_manager(
    hosts: &str,
    job_name: &str,
    inbox: &std::path::Path,
    batch: usize,
) -> Result<(), String> {
    let emails = corpus::load(inbox).map_err(|e| e.to_string())?;
    let job = Job::new(job_name);
    let proposed = Manifest {
        emails: emails.len(),
        batch,
    };
    loop {
        let Ok(conn) = Conn::connect(hosts, Duration::from_secs(4)).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        match manage(&conn, &job, proposed).await {
            Ok(()) => return Ok(()),
            Err(e) => eprintln!("manager: connection lost ({e}); reconnecting"),
        }
    }
}

async fn manage(conn: &Conn, job: &Job, proposed: Manifest) -> Result<(), zk::Error> {
    let manifest = conn.manifest(job, proposed).await?;
    conn.ensure(&job.assignments()).await?;
    // Its whole memory: which batch it gave whom. A restart forgets it.
    let mut given: std::collections::HashMap<usize, String> = Default::default();
    loop {
        let done: HashSet<usize> = conn
            .children(&job.done())
            .await?
            .iter()
            .filter_map(|n| batch_index(n))
            .collect();
        if done.len() >= manifest.batches() {
            return Ok(());
        }
        let busy: HashSet<String> = conn
            .children(&job.assignments())
            .await?
            .into_iter()
            .collect();
        let live = conn.children(&job.workers()).await?;
        // A worker that left with a batch: give the batch out again.
        given.retain(|b, w| !done.contains(b) && live.contains(w));
        let free: Vec<usize> = (0..manifest.batches())
            .filter(|b| !done.contains(b) && !given.contains_key(b))
            .collect();
        let mut free = free.into_iter();
        for w in live.iter().filter(|w| !busy.contains(*w)) {
            let Some(b) = free.next() else { break };
            let path = format!("{}/{w}", job.assignments());
            match conn
                .op()
                .create(&path, b.to_string().as_bytes(), &crate::coord::open())
                .await
            {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e),
            }
            given.insert(b, w.clone());
        }
        tokio::time::sleep(MANAGER_POLL).await;
    }
}

/// A worker of the manager design: does what it is handed, until the job is done.
pub async fn run_managed(cfg: &WorkerConfig) -> Result<Report, String> {
    let emails = corpus::load(&cfg.inbox).map_err(|e| e.to_string())?;
    reconnecting(cfg, async |conn, report| {
        managed(cfg, conn, &emails, report).await
    })
    .await
}

async fn managed(
    cfg: &WorkerConfig,
    conn: &Conn,
    emails: &[Email],
    report: &mut Report,
) -> Result<(), zk::Error> {
    let job = Job::new(&cfg.job);
    let manifest = conn.manifest(&job, manifest(cfg, emails)).await?;
    conn.ensure(&job.assignments()).await?;
    conn.announce(&job, &cfg.id).await?;
    let mine = format!("{}/{}", job.assignments(), cfg.id);
    loop {
        let b = match conn.op().get_data(&mine).await {
            Ok((data, _)) => String::from_utf8_lossy(&data).parse::<usize>().ok(),
            Err(zk::Error::NoNode) => None,
            Err(e) => return Err(e),
        };
        let Some(b) = b.filter(|b| *b < manifest.batches()) else {
            if conn.children(&job.done()).await?.len() >= manifest.batches() {
                return Ok(());
            }
            tokio::time::sleep(MANAGER_POLL).await;
            continue;
        };
        let name = batch_name(b);
        note(&cfg.journal, || format!("start {name}"));
        let mut results = Vec::new();
        for e in &emails[manifest.range(b)] {
            results.push((e, classify(cfg, e).await));
            note(&cfg.journal, || format!("email {name} {}", e.id));
        }
        let wrote = match commit(cfg, conn, &job, b, &results).await {
            Ok(n) => n,
            Err(err) => {
                note(&cfg.journal, || format!("lost {name} disconnected"));
                return Err(err);
            }
        };
        note(&cfg.journal, || format!("commit {name}"));
        report.batches += 1;
        report.emails += wrote;
        match conn.op().delete(&mine, None).await {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
}
