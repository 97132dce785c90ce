//! `mailroom status` (progress while the job runs) and `mailroom audit` (afterwards: every email
//! has exactly one committed result, and how good the labels are).

use crate::classify::Scores;
use crate::coord::{batch_index, ClaimInfo, Conn, Job, Manifest};
use crate::corpus::{self, Label, Split};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use zookeeper_client as zk;

/// A snapshot of the job's progress.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub emails: usize,
    pub done: usize,
    pub claimed_batches: usize,
    /// Per worker: batches committed, and what it holds now.
    pub workers: BTreeMap<String, (usize, Option<String>)>,
    pub live_workers: usize,
}

pub async fn progress(conn: &Conn, job: &Job) -> Result<Progress, zk::Error> {
    let (data, _) = conn.op().get_data(&job.base).await?;
    let manifest: Manifest = serde_json::from_slice(&data)
        .map_err(|_| zk::Error::UnexpectedError("the job node holds no manifest".into()))?;
    let mut p = Progress {
        emails: manifest.emails,
        live_workers: conn.children(&job.workers()).await?.len(),
        ..Progress::default()
    };
    for name in conn.children(&job.done()).await? {
        let Some(b) = batch_index(&name) else {
            continue;
        };
        p.done += manifest.range(b).len();
        if let Ok((who, _)) = conn.op().get_data(&format!("{}/{name}", job.done())).await {
            p.workers
                .entry(String::from_utf8_lossy(&who).into_owned())
                .or_default()
                .0 += 1;
        }
    }
    for batch in conn.children(&job.claims()).await? {
        let dir = format!("{}/{batch}", job.claims());
        let claims = conn.children(&dir).await?;
        let Some(holder) = claims.first() else {
            continue;
        };
        p.claimed_batches += 1;
        if let Ok((data, _)) = conn.op().get_data(&format!("{dir}/{holder}")).await {
            if let Ok(info) = serde_json::from_slice::<ClaimInfo>(&data) {
                p.workers.entry(info.worker).or_default().1 =
                    Some(format!("{batch} {}", info.status));
            }
        }
    }
    // The naive strategy has no batches: count its results instead.
    if p.done == 0 {
        p.done = conn.children(&job.results()).await?.len();
    }
    Ok(p)
}

pub fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// Prints progress every second until the job is complete (or once, with `follow` false).
/// The job's progress as a bar with emails/s and an ETA, on stderr (a terminal only).
pub struct JobBar(indicatif::ProgressBar);

impl JobBar {
    /// A bar if stderr is a terminal; None otherwise (logs and pipes get lines instead).
    pub fn on_terminal() -> Option<JobBar> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{wide_bar} {pos}/{len} emails  {per_sec}  ETA {eta}  {msg}",
        )
        .expect("a valid template");
        bar.set_style(style);
        Some(JobBar(bar))
    }

    pub fn show(&self, p: &Progress, note: &str) {
        self.0.set_length(p.emails as u64);
        self.0.set_position(p.done as u64);
        self.0.set_message(format!(
            "{} workers, {} batches claimed{note}",
            p.live_workers, p.claimed_batches
        ));
    }

    pub fn finish(&self) {
        self.0.finish();
    }
}

/// Draws the job's bar every second until `stop` fires or the job is complete; each refresh
/// is one read of the job's nodes on its own connection.
pub async fn follow_bar(
    hosts: String,
    job: Job,
    bar: JobBar,
    note: impl Fn() -> String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(conn) = Conn::connect(&hosts, Duration::from_secs(10)).await else {
        return;
    };
    loop {
        if let Ok(p) = progress(&conn, &job).await {
            bar.show(&p, &note());
            if p.done >= p.emails && p.emails > 0 {
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => break,
        }
    }
    bar.finish();
}

pub async fn status(conn: &Conn, job: &Job, follow: bool) -> Result<(), zk::Error> {
    if follow {
        if let Some(bar) = JobBar::on_terminal() {
            loop {
                let p = progress(conn, job).await?;
                bar.show(&p, "");
                if p.done >= p.emails {
                    bar.finish();
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let mut last: Option<(std::time::Instant, usize)> = None;
    loop {
        let p = progress(conn, job).await?;
        let rate = last.map_or(0.0, |(at, done)| {
            (p.done.saturating_sub(done)) as f64 / at.elapsed().as_secs_f64().max(0.001)
        });
        println!(
            "{} {}/{} emails done ({:.0}%), {} batches claimed, {} workers, {:.0} emails/s",
            bar(p.done, p.emails, 30),
            p.done,
            p.emails,
            100.0 * p.done as f64 / p.emails.max(1) as f64,
            p.claimed_batches,
            p.live_workers,
            rate
        );
        for (w, (batches, holding)) in &p.workers {
            println!(
                "  {w}: {batches} batches committed{}",
                holding
                    .as_ref()
                    .map_or(String::new(), |h| format!(", holding {h}"))
            );
        }
        if !follow || p.done >= p.emails {
            return Ok(());
        }
        last = Some((std::time::Instant::now(), p.done));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The audit's findings.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub emails: usize,
    pub results: usize,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    pub test: Scores,
    pub all: Scores,
    /// Results written by a worker other than the one that committed their batch: the work of
    /// a worker whose claim had passed to another (a design with exclusive, checked claims has
    /// none). Batches have no committer in the read-flags design, which is not checked.
    pub stale: usize,
    pub stale_batches: Vec<usize>,
    /// Who wrote each result (email → worker).
    pub writers: HashMap<String, String>,
}

impl Audit {
    pub fn passed(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.results == self.emails
            && self.stale == 0
    }
}

pub async fn audit(conn: &Conn, job: &Job, inbox: &Path) -> Result<Audit, String> {
    let emails = corpus::load(inbox).map_err(|e| e.to_string())?;
    let names = conn
        .children(&job.results())
        .await
        .map_err(|e| format!("cannot list results: {e}"))?;
    let results: HashSet<&str> = names.iter().map(String::as_str).collect();
    let known: HashSet<&str> = emails.iter().map(|e| e.id.as_str()).collect();
    let mut a = Audit {
        emails: emails.len(),
        // Znode names are unique: a result node per email is at most one result per email.
        results: names.len(),
        unexpected: names
            .iter()
            .filter(|n| !known.contains(n.as_str()))
            .cloned()
            .collect(),
        ..Audit::default()
    };
    let mut writers: HashMap<String, String> = HashMap::new();
    for chunk in emails.chunks(256) {
        let reads = chunk
            .iter()
            .map(|e| conn.op().get_data(&job.result_of(&e.id)));
        let answers = futures_join(reads).await;
        for (e, answer) in chunk.iter().zip(answers) {
            if !results.contains(e.id.as_str()) {
                a.missing.push(e.id.clone());
                continue;
            }
            let Ok((data, _)) = answer else {
                a.missing.push(e.id.clone());
                continue;
            };
            let text = String::from_utf8_lossy(&data);
            let mut words = text.split(' ');
            let Some(predicted) = words.next().and_then(Label::parse) else {
                continue;
            };
            writers.insert(e.id.clone(), words.next().unwrap_or("").to_owned());
            a.all.add(e.label, predicted);
            if e.split == Split::Test {
                a.test.add(e.label, predicted);
            }
        }
    }
    let flags = !conn
        .children(&job.read_flags())
        .await
        .unwrap_or_default()
        .is_empty();
    if !flags {
        stale_commits(conn, job, &emails, &writers, &mut a).await?;
    }
    a.writers = writers;
    Ok(a)
}

/// Compares every result's writer with its batch's committer (`done/<batch>`).
async fn stale_commits(
    conn: &Conn,
    job: &Job,
    emails: &[corpus::Email],
    writers: &HashMap<String, String>,
    a: &mut Audit,
) -> Result<(), String> {
    let (data, _) = conn
        .op()
        .get_data(&job.base)
        .await
        .map_err(|e| format!("cannot read the job: {e}"))?;
    let manifest: Manifest =
        serde_json::from_slice(&data).map_err(|_| "the job node holds no manifest".to_owned())?;
    for b in 0..manifest.batches() {
        let Ok((who, _)) = conn.op().get_data(&job.done_of(b)).await else {
            continue;
        };
        let committer = String::from_utf8_lossy(&who).into_owned();
        let stale = emails[manifest.range(b)]
            .iter()
            .filter(|e| writers.get(&e.id).is_some_and(|w| *w != committer))
            .count();
        if stale > 0 {
            a.stale += stale;
            a.stale_batches.push(b);
        }
    }
    Ok(())
}

/// Awaits futures concurrently, keeping their order (requests pipelined on one session).
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::with_capacity(handles.len());
    // zookeeper-client sends a request when its future is created, so awaiting in order still
    // overlaps them on the wire.
    for f in handles {
        out.push(f.await);
    }
    out
}

pub fn print_audit(a: &Audit) {
    println!(
        "audit: {} emails, {} results, {} missing, {} unexpected: {}",
        a.emails,
        a.results,
        a.missing.len(),
        a.unexpected.len(),
        if a.passed() {
            "every email has exactly one result"
        } else {
            "FAILED"
        }
    );
    if a.stale > 0 {
        println!(
            "  {} results written by a worker whose claim had passed to another, in {} batches (e.g. {})",
            a.stale,
            a.stale_batches.len(),
            crate::coord::batch_name(a.stale_batches[0])
        );
    }
    for m in a.missing.iter().take(10) {
        println!("  missing: {m}");
    }
    if a.missing.len() > 10 {
        println!("  ... and {} more", a.missing.len() - 10);
    }
    println!("held-out split: {}", a.test.report());
    println!("whole inbox:    {}", a.all.report());
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars() {
        assert_eq!(super::bar(0, 10, 10), "[..........]");
        assert_eq!(super::bar(5, 10, 10), "[#####.....]");
        assert_eq!(super::bar(10, 10, 4), "[####]");
        assert_eq!(super::bar(1, 0, 4), "[....]");
    }
}
