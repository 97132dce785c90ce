//! The coordination, through Corral only. Under `/mailroom/<job>`:
//!
//! - the job node holds the manifest (emails, batch size), written once by the first worker;
//! - `claims/<batch>/c-<seq>`: ephemeral-sequential claims. The lowest holds the batch (the
//!   lock recipe); a waiter watches only the claim just before its own, so a finished or dead
//!   holder wakes exactly one waiter. A claim holds the worker, a timestamp and a status, and
//!   the holder refreshes it during a long batch;
//! - `results/<email>`: one persistent node per email, holding the label and the worker;
//! - `done/<batch>`: written in the same `multi` as the batch's results. That multi first checks
//!   the holder's claim at the version it last wrote: if the holder's session expired its
//!   ephemeral claim is gone and the multi fails, so no batch is ever committed twice;
//! - `workers/<id>`: ephemeral presence, for `status`;
//! - `read/<email>`: only the naive read-flags design's flags (which lose emails when a reader
//!   dies); `stamps/<batch>`: only the naive timestamps design's claims (see `naive`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use zookeeper_client as zk;

pub const ROOT: &str = "/mailroom";

/// The paths of one job.
#[derive(Debug, Clone)]
pub struct Job {
    pub base: String,
}

impl Job {
    pub fn new(name: &str) -> Job {
        Job {
            base: format!("{ROOT}/{name}"),
        }
    }
    pub fn claims(&self) -> String {
        format!("{}/claims", self.base)
    }
    pub fn claim_dir(&self, batch: usize) -> String {
        format!("{}/claims/{}", self.base, batch_name(batch))
    }
    pub fn done(&self) -> String {
        format!("{}/done", self.base)
    }
    pub fn done_of(&self, batch: usize) -> String {
        format!("{}/done/{}", self.base, batch_name(batch))
    }
    pub fn results(&self) -> String {
        format!("{}/results", self.base)
    }
    pub fn result_of(&self, email: &str) -> String {
        format!("{}/results/{email}", self.base)
    }
    pub fn workers(&self) -> String {
        format!("{}/workers", self.base)
    }
    pub fn read_flags(&self) -> String {
        format!("{}/read", self.base)
    }
    /// The manager design's assignments: `assign/<worker>` holds the batch handed to it.
    pub fn assignments(&self) -> String {
        format!("{}/assign", self.base)
    }
    /// The timestamps design's claims (persistent nodes, no sessions).
    pub fn stamps(&self) -> String {
        format!("{}/stamps", self.base)
    }
}

pub fn batch_name(i: usize) -> String {
    format!("b-{i:05}")
}

pub fn batch_index(name: &str) -> Option<usize> {
    name.strip_prefix("b-")?.parse().ok()
}

/// The job's fixed facts, stored in the job node so every worker cuts the same batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub emails: usize,
    pub batch: usize,
}

impl Manifest {
    pub fn batches(&self) -> usize {
        self.emails.div_ceil(self.batch.max(1))
    }

    pub fn range(&self, batch: usize) -> std::ops::Range<usize> {
        let start = batch * self.batch;
        start..(start + self.batch).min(self.emails)
    }
}

/// What a claim node holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClaimInfo {
    pub worker: String,
    pub ts_ms: u64,
    pub status: String,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A session plus a count of the requests sent through it (for "operations per email").
pub struct Conn {
    pub client: zk::Client,
    pub ops: AtomicU64,
}

pub fn open() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

pub fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

pub fn ephemeral_sequential() -> zk::CreateOptions<'static> {
    zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all())
}

impl Conn {
    pub async fn connect(hosts: &str, session_timeout: Duration) -> Result<Conn, zk::Error> {
        let client = zk::Client::connector()
            .with_session_timeout(session_timeout)
            .with_connection_timeout(Duration::from_secs(5))
            .connect(hosts)
            .await?;
        Ok(Conn {
            client,
            ops: AtomicU64::new(1),
        })
    }

    pub fn op(&self) -> &zk::Client {
        self.ops.fetch_add(1, Relaxed);
        &self.client
    }

    /// Creates `path` and its missing parents as persistent nodes.
    pub async fn ensure(&self, path: &str) -> Result<(), zk::Error> {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            match self.op().create(&prefix, b"", &open()).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Says that worker `id` is at work on `job`: its ephemeral node under the job's workers,
    /// gone with its session (already there when the session announced it before).
    pub async fn announce(&self, job: &Job, id: &str) -> Result<(), zk::Error> {
        let presence = format!("{}/{id}", job.workers());
        match self.op().create(&presence, b"", &ephemeral()).await {
            Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The job's manifest: written by the first worker, read by the others.
    pub async fn manifest(&self, job: &Job, proposed: Manifest) -> Result<Manifest, zk::Error> {
        self.ensure(ROOT).await?;
        let data = serde_json::to_vec(&proposed).expect("plain data");
        match self.op().create(&job.base, &data, &open()).await {
            Ok(_) => {}
            Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
        let (data, _) = self.op().get_data(&job.base).await?;
        let stored: Manifest = match serde_json::from_slice(&data) {
            Ok(m) => m,
            Err(_) => {
                // The job node was made by hand: adopt the proposal.
                self.op()
                    .set_data(
                        &job.base,
                        &serde_json::to_vec(&proposed).expect("plain"),
                        None,
                    )
                    .await?;
                proposed
            }
        };
        for dir in [
            job.claims(),
            job.done(),
            job.results(),
            job.workers(),
            job.read_flags(),
            job.stamps(),
        ] {
            self.ensure(&dir).await?;
        }
        Ok(stored)
    }

    /// Sorted children, empty if the node is gone.
    pub async fn children(&self, path: &str) -> Result<Vec<String>, zk::Error> {
        match self.op().list_children(path).await {
            Ok(mut c) => {
                c.sort();
                Ok(c)
            }
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// How taking a batch's lock went.
pub enum Claim {
    /// This worker holds the batch: its claim path and the claim's version.
    Held { path: String, version: i32 },
    /// Another worker holds it.
    Busy,
    /// This worker's claim is gone (its session expired).
    Lost,
}

/// The sequence number at the end of a claim's name, for ordering.
fn seq_of(name: &str) -> i64 {
    name.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(i64::MAX)
}

impl Conn {
    /// Adds a claim to `batch`'s queue; returns its full path.
    pub async fn enqueue(
        &self,
        job: &Job,
        batch: usize,
        info: &ClaimInfo,
    ) -> Result<String, zk::Error> {
        let dir = job.claim_dir(batch);
        match self.op().create(&dir, b"", &open()).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
        let data = serde_json::to_vec(info).expect("plain data");
        let (_, seq) = self
            .op()
            .create(&format!("{dir}/c-"), &data, &ephemeral_sequential())
            .await?;
        Ok(format!("{dir}/c-{seq}"))
    }

    /// Whether `path` is the lowest claim of its batch; if not, the claim just before it.
    async fn position(
        &self,
        job: &Job,
        batch: usize,
        path: &str,
    ) -> Result<Result<(), Option<String>>, zk::Error> {
        let dir = job.claim_dir(batch);
        let mut claims = self.children(&dir).await?;
        claims.sort_by_key(|c| seq_of(c));
        let mine = path.rsplit('/').next().unwrap_or_default();
        let Some(i) = claims.iter().position(|c| c == mine) else {
            return Ok(Err(None));
        };
        if i == 0 {
            Ok(Ok(()))
        } else {
            Ok(Err(Some(format!("{dir}/{}", claims[i - 1]))))
        }
    }

    /// Try-lock: claim `batch` if nobody holds it, else withdraw at once.
    pub async fn try_claim(
        &self,
        job: &Job,
        batch: usize,
        info: &ClaimInfo,
    ) -> Result<Claim, zk::Error> {
        let path = self.enqueue(job, batch, info).await?;
        match self.position(job, batch, &path).await? {
            Ok(()) => Ok(Claim::Held { path, version: 0 }),
            Err(None) => Ok(Claim::Lost),
            Err(Some(_)) => {
                self.release(&path).await?;
                Ok(Claim::Busy)
            }
        }
    }

    /// Lock: wait in `batch`'s queue until this claim is the lowest, watching only the claim
    /// just before it (no herd effect when the holder finishes or dies).
    pub async fn wait_for_turn(
        &self,
        job: &Job,
        batch: usize,
        path: String,
    ) -> Result<Claim, zk::Error> {
        loop {
            match self.position(job, batch, &path).await? {
                Ok(()) => return Ok(Claim::Held { path, version: 0 }),
                Err(None) => return Ok(Claim::Lost),
                Err(Some(before)) => {
                    let (stat, watcher) = self.op().check_and_watch_stat(&before).await?;
                    let Some(stat) = stat else { continue };
                    if stat.ephemeral_owner == self.session_id() {
                        // Our own claim from work abandoned when the connection dropped: this
                        // worker is not processing it, so it must not wait behind it.
                        self.release(&before).await?;
                        continue;
                    }
                    // Bounded, so a lost notification (a reconnect) only delays.
                    let _ = tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await;
                }
            }
        }
    }

    pub fn session_id(&self) -> i64 {
        self.client.session_id().0
    }

    /// Deletes every claim this session still has: after a lost connection interrupted a
    /// batch, the session lives on, and so would its claim, blocking the batch forever.
    pub async fn release_own_claims(&self, job: &Job) -> Result<usize, zk::Error> {
        let me = self.session_id();
        let mut released = 0;
        for batch in self.children(&job.claims()).await? {
            let dir = format!("{}/{batch}", job.claims());
            for claim in self.children(&dir).await? {
                let path = format!("{dir}/{claim}");
                if let Some(stat) = self.op().check_stat(&path).await? {
                    if stat.ephemeral_owner == me {
                        self.release(&path).await?;
                        released += 1;
                    }
                }
            }
        }
        Ok(released)
    }

    pub async fn release(&self, path: &str) -> Result<(), zk::Error> {
        match self.op().delete(path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Refreshes a held claim (status and timestamp); the new version, or None if it is lost.
    pub async fn refresh(
        &self,
        path: &str,
        version: i32,
        info: &ClaimInfo,
    ) -> Result<Option<i32>, zk::Error> {
        let data = serde_json::to_vec(info).expect("plain data");
        match self.op().set_data(path, &data, Some(version)).await {
            Ok(stat) => Ok(Some(stat.version)),
            Err(zk::Error::NoNode | zk::Error::BadVersion) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Commits a batch in one multi: the claim is still ours (at `version`), every result, and
    /// the batch's done marker. Ok(false): the claim was lost or the batch already committed.
    pub async fn commit(
        &self,
        job: &Job,
        batch: usize,
        claim: (&str, i32),
        results: &[(String, Vec<u8>)],
        worker: &str,
    ) -> Result<bool, zk::Error> {
        let client = self.op();
        let mut multi = client.new_multi_writer();
        multi.add_check_version(claim.0, claim.1)?;
        for (email, data) in results {
            multi.add_create(&job.result_of(email), data, &open())?;
        }
        multi.add_create(&job.done_of(batch), worker.as_bytes(), &open())?;
        match multi.commit().await {
            Ok(_) => Ok(true),
            Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::NoNode | zk::Error::BadVersion | zk::Error::NodeExists,
                ..
            }) => Ok(false),
            Err(zk::MultiWriteError::OperationFailed { source, .. }) => Err(source),
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_email_once() {
        let m = Manifest {
            emails: 103,
            batch: 25,
        };
        assert_eq!(m.batches(), 5);
        let covered: usize = (0..m.batches()).map(|b| m.range(b).len()).sum();
        assert_eq!(covered, 103);
        assert_eq!(m.range(4), 100..103);
    }

    #[test]
    fn names_and_sequences() {
        assert_eq!(batch_name(7), "b-00007");
        assert_eq!(batch_index("b-00007"), Some(7));
        assert_eq!(seq_of("c-0000000012"), 12);
    }
}
