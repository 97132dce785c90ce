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

/// Reads every journal (each worker's text) and tallies the attempts.
pub fn tally<'a>(journals: impl IntoIterator<Item = &'a str>) -> Duplicates {
    let mut d = Duplicates::default();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for text in journals {
        // The batch in progress and the emails classified in it so far.
        let mut open: Option<usize> = None;
        for line in text.lines() {
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("start"), Some(_), _) => {
                    close(&mut d, open.take(), Some(DIED));
                    open = Some(0);
                }
                (Some("email"), Some(_), Some(id)) => {
                    d.classified += 1;
                    *times.entry(id).or_default() += 1;
                    if let Some(n) = open.as_mut() {
                        *n += 1;
                    }
                }
                (Some("commit"), Some(_), _) => close(&mut d, open.take(), None),
                (Some("lost"), Some(_), why) => {
                    close(&mut d, open.take(), Some(why.unwrap_or("?")))
                }
                _ => {}
            }
        }
        close(&mut d, open.take(), Some(DIED));
    }
    d.emails_repeated = times.values().filter(|n| **n > 1).count();
    d
}

/// Counts an attempt's emails as committed (no reason) or wasted (why).
fn close(d: &mut Duplicates, attempt: Option<usize>, wasted_because: Option<&str>) {
    let Some(n) = attempt.filter(|n| *n > 0) else {
        return;
    };
    match wasted_because {
        None => d.committed += n,
        Some(why) => *d.wasted_by_reason.entry(why.to_owned()).or_default() += n,
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
        let d = tally([a, b]);
        assert_eq!(d.classified, 7);
        assert_eq!(d.committed, 4);
        assert_eq!(d.wasted_by_reason[DIED], 1);
        assert_eq!(d.wasted_by_reason["disconnected"], 2);
        assert_eq!(d.wasted(), 3);
        assert_eq!(d.emails_repeated, 2); // e3 three times, e4 twice
    }
}
