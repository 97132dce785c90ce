//! A worker's journal: one line per email it classified and one per batch outcome, appended
//! unbuffered so that a SIGKILLed worker's lines are all there. The chaos run reads every
//! worker's journal to count the classification work done more than once, and why.
//!
//! ```text
//! start b-00012            a batch's classification begins (its claim is held)
//! email b-00012 00042.eml  one email classified
//! commit b-00012           its results are committed
//! lost b-00012 REASON      abandoned: disconnected, session expired, claim lost
//! ```
//!
//! A batch with neither `commit` nor `lost` after its `start` belonged to a worker that died.
//! Whether an attempt committed is decided against the results (see [`tally`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Journal(Arc<Mutex<File>>);

impl Journal {
    pub fn create(path: &Path) -> std::io::Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Journal(Arc::new(Mutex::new(file))))
    }

    /// One line, written at once (no user-space buffer for a SIGKILL to lose). A failed
    /// write is ignored: the journal measures, it must not stop the work.
    pub fn line(&self, text: &str) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(format!("{text}\n").as_bytes());
    }
}

/// Writes lines only when there is a journal.
pub fn note(journal: &Option<Journal>, text: impl FnOnce() -> String) {
    if let Some(j) = journal {
        j.line(&text());
    }
}

/// Why a batch's classification was wasted.
pub const DIED: &str = "worker died";

/// What the journals say about work done more than once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Duplicates {
    /// Emails classified, in all (every attempt).
    pub classified: usize,
    /// Emails classified in attempts that committed.
    pub committed: usize,
    /// Emails classified in attempts that did not commit, by why.
    pub wasted_by_reason: BTreeMap<String, usize>,
    /// Emails classified more than once.
    pub emails_repeated: usize,
}

impl Duplicates {
    pub fn wasted(&self) -> usize {
        self.wasted_by_reason.values().sum()
    }
}

/// One attempt at a batch, as a journal tells it.
struct Attempt<'a> {
    batch: &'a str,
    emails: Vec<&'a str>,
    /// `None` while open; then `commit`, a `lost` reason, or [`DIED`].
    outcome: Option<&'a str>,
}

/// Reads every journal (each worker's id and text) beside the results' writers (email →
/// worker) and tallies the attempts. An attempt counts as committed when it is its worker's
/// last at the batch and the batch's results are that worker's, whatever its journal says (a
/// commit whose answer was lost did commit); any other is work done again, with its journal's
/// reason.
pub fn tally<'a>(
    journals: impl IntoIterator<Item = (&'a str, &'a str)>,
    writers: &std::collections::HashMap<String, String>,
) -> Duplicates {
    let mut d = Duplicates::default();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for (worker, text) in journals {
        let attempts = attempts(text);
        for (i, a) in attempts.iter().enumerate() {
            d.classified += a.emails.len();
            for e in &a.emails {
                *times.entry(e).or_default() += 1;
            }
            let last = !attempts[i + 1..].iter().any(|later| later.batch == a.batch);
            let theirs = a
                .emails
                .first()
                .and_then(|e| writers.get(*e))
                .is_some_and(|w| w == worker);
            if last && theirs {
                d.committed += a.emails.len();
            } else if !a.emails.is_empty() {
                let why = match a.outcome {
                    Some("commit") => COMMITTED_OVER,
                    Some(why) => why,
                    None => DIED,
                };
                *d.wasted_by_reason.entry(why.to_owned()).or_default() += a.emails.len();
            }
        }
    }
    d.emails_repeated = times.values().filter(|n| **n > 1).count();
    d
}

/// An attempt that committed what another worker had committed already: only a design
/// without exclusive claims has these.
pub const COMMITTED_OVER: &str = "committed over another's";

fn attempts(text: &str) -> Vec<Attempt<'_>> {
    let mut out: Vec<Attempt> = Vec::new();
    for line in text.lines() {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("start"), Some(batch), _) => out.push(Attempt {
                batch,
                emails: Vec::new(),
                outcome: None,
            }),
            (Some("email"), Some(_), Some(id)) => {
                if let Some(a) = out.last_mut().filter(|a| a.outcome.is_none()) {
                    a.emails.push(id);
                }
            }
            (Some("commit"), Some(_), _) => close(&mut out, "commit"),
            (Some("lost"), Some(_), why) => close(&mut out, why.unwrap_or("?")),
            _ => {}
        }
    }
    out
}

fn close<'a>(attempts: &mut [Attempt<'a>], outcome: &'a str) {
    if let Some(a) = attempts.last_mut().filter(|a| a.outcome.is_none()) {
        a.outcome = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_committed_lost_or_cut_short_by_death() {
        let a = "start b-1\nemail b-1 e1\nemail b-1 e2\ncommit b-1\nstart b-2\nemail b-2 e3\n";
        let b = "start b-2\nemail b-2 e3\nemail b-2 e4\nlost b-2 disconnected\n\
                 start b-2\nemail b-2 e3\nemail b-2 e4\ncommit b-2\n";
        let writers: std::collections::HashMap<String, String> =
            [("e1", "a"), ("e2", "a"), ("e3", "b"), ("e4", "b")]
                .into_iter()
                .map(|(e, w)| (e.to_owned(), w.to_owned()))
                .collect();
        let d = tally([("a", a), ("b", b)], &writers);
        assert_eq!(d.classified, 7);
        assert_eq!(d.committed, 4);
        assert_eq!(d.wasted_by_reason[DIED], 1);
        assert_eq!(d.wasted_by_reason["disconnected"], 2);
        assert_eq!(d.wasted(), 3);
        assert_eq!(d.emails_repeated, 2); // e3 three times, e4 twice
    }

    #[test]
    fn a_commit_whose_answer_was_lost_counts_as_committed() {
        let a = "start b-1\nemail b-1 e1\nlost b-1 disconnected\n";
        let writers = [("e1".to_owned(), "a".to_owned())].into_iter().collect();
        let d = tally([("a", a)], &writers);
        assert_eq!((d.committed, d.wasted()), (1, 0));
    }

    #[test]
    fn committing_what_another_committed_is_work_done_twice() {
        let a = "start b-1\nemail b-1 e1\ncommit b-1\n";
        let b = "start b-1\nemail b-1 e1\ncommit b-1\n";
        let writers = [("e1".to_owned(), "a".to_owned())].into_iter().collect();
        let d = tally([("a", a), ("b", b)], &writers);
        assert_eq!(d.wasted_by_reason[COMMITTED_OVER], 1);
    }
}
