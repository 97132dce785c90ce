//! A worker: claims batches, classifies their emails, commits each batch's results in one
//! multi. Any number run at once, on any machines; they share nothing but Corral.

use crate::classify::{tokens, Model};
use crate::coord::{batch_index, now_ms, Claim, ClaimInfo, Conn, Job, Manifest};
use crate::corpus::{self, Email};
use crate::journal::{note, Journal};
use rand::seq::SliceRandom;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// How long a worker keeps trying to reach the ensemble before it gives up.
const GIVE_UP_CONNECTING: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub hosts: String,
    pub job: String,
    pub inbox: PathBuf,
    pub model: Model,
    pub id: String,
    pub batch: usize,
    pub session_timeout: Duration,
    /// Extra time spent per email (to model a slower classifier in demos and chaos runs).
    pub work_per_email: Duration,
    /// Emails this worker has committed, for its progress bar.
    pub committed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Where to record each email classified and each batch's outcome (chaos runs).
    pub journal: Option<Journal>,
}

/// The classifier's time per email on this machine: the mean over the inbox's first few.
pub fn time_per_email(inbox: &std::path::Path, model: &Model) -> Result<Duration, String> {
    const SAMPLE: usize = 20;
    let emails = corpus::load(inbox).map_err(|e| e.to_string())?;
    let sample = &emails[..emails.len().min(SAMPLE)];
    let started = Instant::now();
    for e in sample {
        if let Ok(raw) = corpus::read_email(inbox, &e.id) {
            let _ = model.predict(&tokens(&raw));
        }
    }
    Ok(started.elapsed() / sample.len().max(1) as u32)
}

/// A batch that takes a quarter of the session timeout: a worker that dies, or is cut off,
/// with a batch in hand leaves that much work to be done again, and a long batch would also
/// outlast the session it is claimed under.
pub fn batch_for(session_timeout: Duration, per_email: Duration) -> usize {
    let quarter = session_timeout.as_secs_f64() / 4.0;
    let n = quarter / per_email.as_secs_f64().max(1e-6);
    (n as usize).clamp(1, 500)
}

/// What a worker did, printed when it exits.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub batches: usize,
    pub emails: usize,
    pub lost_claims: usize,
    pub ops: u64,
}

/// Runs until every batch of the job is done. Session loss is survived by starting a new
/// session: whatever the old one held is released by Corral and picked up again.
pub async fn run(cfg: &WorkerConfig) -> Result<Report, String> {
    let emails = corpus::load(&cfg.inbox).map_err(|e| e.to_string())?;
    let (stop_bar, bar_stopped) = tokio::sync::watch::channel(false);
    if let Some(bar) = crate::report::JobBar::on_terminal() {
        let mine = cfg.committed.clone();
        let note = move || format!(", {} by this worker", mine.load(Relaxed));
        let job = Job::new(&cfg.job);
        tokio::spawn(crate::report::follow_bar(
            cfg.hosts.clone(),
            job,
            bar,
            note,
            bar_stopped,
        ));
    }
    let outcome = run_sessions(cfg, &emails).await;
    let _ = stop_bar.send(true);
    outcome
}

/// Corral's design on a session at a time: anything that ends one session's work (expired,
/// cut off, the client gave up on its connection) starts another; what the old one held is
/// released by Corral and taken up again.
async fn run_sessions(cfg: &WorkerConfig, emails: &[Email]) -> Result<Report, String> {
    reconnecting(cfg, async |conn, report| {
        work_in_session(cfg, conn, emails, report).await
    })
    .await
}

/// Runs `work` on a new session, and again on another whenever it fails, until it is done.
/// Only an inbox that is not the job's ends it, or the ensemble out of reach for
/// [`GIVE_UP_CONNECTING`]. Every design's worker runs in it; the naive ones keep nothing in a
/// session (or ignore that they lost one).
pub(crate) async fn reconnecting(
    cfg: &WorkerConfig,
    mut work: impl AsyncFnMut(&Conn, &mut Report) -> Result<(), zk::Error>,
) -> Result<Report, String> {
    let mut report = Report::default();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let conn = match Conn::connect(&cfg.hosts, cfg.session_timeout).await {
            Ok(c) => c,
            // Cut off, or the members restarting: try again, for a while.
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP_CONNECTING {
                    return Err(format!("cannot connect to {}: {e}", cfg.hosts));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        unreachable_since = None;
        let outcome = work(&conn, &mut report).await;
        report.ops += conn.ops.load(Relaxed);
        match outcome {
            Ok(()) => return Ok(report),
            // The inbox is not the job's: no new session changes that.
            Err(e @ zk::Error::BadArguments(_)) => return Err(format!("{}: {e}", cfg.id)),
            Err(e) => {
                eprintln!("{}: session lost ({e}); starting a new one", cfg.id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Works while the session lives: a lost connection is retried on the same session (the
/// client reconnects to another server), after giving back the claim of the batch it
/// interrupted; only an ended session returns.
async fn work_in_session(
    cfg: &WorkerConfig,
    conn: &Conn,
    emails: &[Email],
    report: &mut Report,
) -> Result<(), zk::Error> {
    let job = Job::new(&cfg.job);
    loop {
        match work(cfg, conn, emails, report).await {
            Err(zk::Error::ConnectionLoss | zk::Error::Timeout)
                if !conn.client.state().is_terminated() =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                // The batch in hand was dropped mid-way: give back its claim first.
                match conn.release_own_claims(&job).await {
                    Ok(n) if n > 0 => eprintln!("{}: released {n} interrupted claim(s)", cfg.id),
                    _ => {}
                }
            }
            other => return other,
        }
    }
}

async fn work(
    cfg: &WorkerConfig,
    conn: &Conn,
    emails: &[Email],
    report: &mut Report,
) -> Result<(), zk::Error> {
    let job = Job::new(&cfg.job);
    let manifest = conn
        .manifest(
            &job,
            Manifest {
                emails: emails.len(),
                batch: cfg.batch,
            },
        )
        .await?;
    if manifest.emails != emails.len() {
        eprintln!(
            "{}: the job has {} emails, this inbox {}: is it the same inbox?",
            cfg.id,
            manifest.emails,
            emails.len()
        );
        return Err(zk::Error::BadArguments(&"the inbox does not match the job"));
    }
    conn.announce(&job, &cfg.id).await?;
    let total = manifest.batches();
    loop {
        let done: HashSet<usize> = conn
            .children(&job.done())
            .await?
            .iter()
            .filter_map(|n| batch_index(n))
            .collect();
        if done.len() >= total {
            return Ok(());
        }
        let mut pending: Vec<usize> = (0..total).filter(|b| !done.contains(b)).collect();
        // Workers start at different places, so they rarely race for the same batch.
        pending.shuffle(&mut rand::thread_rng());
        let claimed = claim_free(cfg, conn, &job, &pending).await?;
        let held = match claimed {
            Some(held) => Some(held),
            // Everything left is being worked on: queue behind one holder (if it dies, this
            // worker takes over; if it finishes, the batch is done and we move on).
            None => {
                let b = pending[0];
                let info = claim_info(cfg, "waiting");
                let path = conn.enqueue(&job, b, &info).await?;
                match conn.wait_for_turn(&job, b, path).await? {
                    Claim::Held { path, version } => Some((b, path, version)),
                    _ => None,
                }
            }
        };
        if let Some((b, path, version)) = held {
            process(cfg, conn, &job, &manifest, emails, b, path, version, report).await?;
        }
    }
}

fn claim_info(cfg: &WorkerConfig, status: &str) -> ClaimInfo {
    ClaimInfo {
        worker: cfg.id.clone(),
        ts_ms: now_ms(),
        status: status.into(),
    }
}

/// Takes the first batch nobody holds.
async fn claim_free(
    cfg: &WorkerConfig,
    conn: &Conn,
    job: &Job,
    pending: &[usize],
) -> Result<Option<(usize, String, i32)>, zk::Error> {
    for &b in pending {
        if !conn.children(&job.claim_dir(b)).await?.is_empty() {
            continue;
        }
        if let Claim::Held { path, version } =
            conn.try_claim(job, b, &claim_info(cfg, "claimed")).await?
        {
            return Ok(Some((b, path, version)));
        }
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
async fn process(
    cfg: &WorkerConfig,
    conn: &Conn,
    job: &Job,
    manifest: &Manifest,
    emails: &[Email],
    batch: usize,
    claim: String,
    mut version: i32,
    report: &mut Report,
) -> Result<(), zk::Error> {
    // The previous holder may have committed just before it released the claim.
    if conn.op().check_stat(&job.done_of(batch)).await?.is_some() {
        return conn.release(&claim).await;
    }
    let range = manifest.range(batch);
    let size = range.len();
    let mut results = Vec::with_capacity(size);
    let mut refreshed = Instant::now();
    let name = crate::coord::batch_name(batch);
    note(&cfg.journal, || format!("start {name}"));
    for (n, email) in emails[range].iter().enumerate() {
        // Cut off from the ensemble, the claim may already be gone (its session expiring on
        // the other side): stop at once rather than classify what another worker will redo.
        if !connected(conn) {
            note(&cfg.journal, || format!("lost {name} disconnected"));
            return Err(zk::Error::ConnectionLoss);
        }
        let label = match corpus::read_email(&cfg.inbox, &email.id) {
            Ok(raw) => cfg.model.predict(&tokens(&raw)).as_str(),
            Err(e) => {
                eprintln!("{}: {e}", cfg.id);
                "unreadable"
            }
        };
        if !cfg.work_per_email.is_zero() {
            tokio::time::sleep(cfg.work_per_email).await;
        }
        results.push((email.id.clone(), format!("{label} {}", cfg.id).into_bytes()));
        note(&cfg.journal, || format!("email {name} {}", email.id));
        // A long batch keeps its claim fresh: status and time, visible to `status`.
        if refreshed.elapsed() > Duration::from_secs(1) {
            let info = claim_info(cfg, &format!("{}/{size}", n + 1));
            match conn.refresh(&claim, version, &info).await {
                Ok(Some(v)) => version = v,
                Ok(None) => {
                    note(&cfg.journal, || format!("lost {name} claim lost"));
                    report.lost_claims += 1;
                    return Ok(());
                }
                Err(e) => {
                    note(&cfg.journal, || format!("lost {name} {}", why_lost(&e)));
                    return Err(e);
                }
            }
            refreshed = Instant::now();
        }
    }
    match conn
        .commit(job, batch, (&claim, version), &results, &cfg.id)
        .await
    {
        Ok(true) => {
            note(&cfg.journal, || format!("commit {name}"));
            report.batches += 1;
            report.emails += size;
            cfg.committed.fetch_add(size, Relaxed);
        }
        Ok(false) => {
            note(&cfg.journal, || format!("lost {name} claim lost"));
            report.lost_claims += 1;
        }
        Err(e) => {
            note(&cfg.journal, || format!("lost {name} {}", why_lost(&e)));
            return Err(e);
        }
    }
    conn.release(&claim).await
}

/// Whether the session is connected now, as the client last saw it.
fn connected(conn: &Conn) -> bool {
    matches!(
        conn.client.state(),
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly
    )
}

/// The journal's word for why an attempt ended with this error.
fn why_lost(e: &zk::Error) -> &'static str {
    match e {
        zk::Error::SessionExpired => "session expired",
        // The client's own "no response from connection" is a custom error.
        zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::Custom(_) => "disconnected",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_batches_take_a_quarter_of_the_session_timeout() {
        let timeout = Duration::from_secs(4);
        assert_eq!(batch_for(timeout, Duration::from_millis(10)), 100);
        assert_eq!(batch_for(timeout, Duration::from_secs(2)), 1);
        assert_eq!(batch_for(timeout, Duration::from_micros(1)), 500);
    }
}
