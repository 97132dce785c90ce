//! Certificates reloaded when their files change, so a rotation needs no restart: what was
//! loaded is kept with the files' modification times, and the next connection that finds one
//! changed loads them again. A file that does not load (half written, say) keeps what is in
//! use and says why, so a rotation never takes a port down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// How often the files' modification times are looked at, at most: a connection storm costs
/// no storm of `stat`s.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Builds a `T` from the stores, and names the files it read.
pub(super) type Loader<T> = Box<dyn Fn() -> Result<(T, Vec<PathBuf>), String> + Send + Sync>;

/// The files a value was loaded from, with their modification times then.
type Stamps = Vec<(PathBuf, Option<SystemTime>)>;

pub(super) struct Reloading<T> {
    load: Loader<T>,
    /// For the log: which certificates these are.
    what: &'static str,
    current: Mutex<(Arc<T>, Stamps)>,
    checked: Mutex<Instant>,
}

impl<T> Reloading<T> {
    /// Loads now; an error says which file and what is wrong with it.
    pub(super) fn new(what: &'static str, load: Loader<T>) -> Result<Reloading<T>, String> {
        let (value, files) = load()?;
        Ok(Reloading {
            load,
            what,
            current: Mutex::new((Arc::new(value), stamped(files))),
            checked: Mutex::new(Instant::now()),
        })
    }

    /// What is in use, loaded again first if one of its files changed.
    pub(super) fn get(&self) -> Arc<T> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if self.due() && current.1.iter().any(|(path, at)| modified(path) != *at) {
            match (self.load)() {
                Ok((value, files)) => {
                    tracing::info!(
                        what = self.what,
                        "certificates reloaded: their files changed"
                    );
                    *current = (Arc::new(value), stamped(files));
                }
                Err(e) => {
                    tracing::warn!(what = self.what, error = %e, "certificate files changed but do not load; keeping the ones in use");
                    // Tried again when they change again.
                    let files = current.1.iter().map(|(p, _)| p.clone()).collect();
                    current.1 = stamped(files);
                }
            }
        }
        current.0.clone()
    }

    /// Whether it is time to look at the files again.
    fn due(&self) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(*checked) < CHECK_EVERY {
            return false;
        }
        *checked = now;
        true
    }
}

fn stamped(files: Vec<PathBuf>) -> Stamps {
    files
        .into_iter()
        .map(|p| {
            let at = modified(&p);
            (p, at)
        })
        .collect()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn reloads_when_a_file_changes_and_keeps_the_old_on_failure() {
        let dir = std::env::temp_dir().join(format!("corral-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cert.pem");
        std::fs::write(&file, "one").unwrap();
        let loads = Arc::new(AtomicUsize::new(0));
        let (path, counter) = (file.clone(), loads.clone());
        let r = Reloading::new(
            "test",
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                match text.as_str() {
                    "bad" => Err("does not load".into()),
                    _ => Ok((text, vec![path.clone()])),
                }
            }),
        )
        .unwrap();
        assert_eq!(*r.get(), "one");
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "unchanged: not loaded again"
        );
        let touch = |text: &str| {
            std::fs::write(&file, text).unwrap();
            // A modification time the filesystem can tell from the last one.
            let later = SystemTime::now()
                + std::time::Duration::from_secs(loads.load(Ordering::SeqCst) as u64 + 1);
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(later)
                .unwrap();
        };
        let rewind = || *r.checked.lock().unwrap() -= CHECK_EVERY;
        touch("two");
        assert_eq!(*r.get(), "one", "looked at once a second at most");
        rewind();
        assert_eq!(*r.get(), "two");
        touch("bad");
        rewind();
        assert_eq!(*r.get(), "two", "a file that does not load keeps the old");
        let before = loads.load(Ordering::SeqCst);
        rewind();
        assert_eq!(*r.get(), "two");
        assert_eq!(
            loads.load(Ordering::SeqCst),
            before,
            "not retried until it changes again"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
