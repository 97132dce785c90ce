//! A disk in memory, for the simulation: it keeps apart what was synced and what was merely
//! written, so a simulated crash loses exactly what a real one may, and it fails on request.
//!
//! - A file's contents are durable up to its last `sync_data`. A crash keeps the durable bytes
//!   and, of the bytes written after them, a prefix of a length the caller chooses: a write torn
//!   by the crash (a length of 0 keeps only the synced bytes; the whole length keeps writes the
//!   page cache happened to flush).
//! - A file's name (its creation, removal or renaming) is durable once its directory is synced.
//!   A crash restores the directory as last synced.
//! - Faults: the next syncs can fail (EIO, as a dying disk's fsync does), and the disk can be
//!   full (ENOSPC on every write until it is freed).
//!
//! Directories themselves are kept as created; nothing here loses a directory.

use crate::disk::{Disk, DiskFile, OpenMode};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Contents {
    durable: Vec<u8>,
    current: Vec<u8>,
}

type Inode = Arc<Mutex<Contents>>;

#[derive(Default)]
struct State {
    dirs: BTreeSet<PathBuf>,
    /// The names as the running process sees them.
    live: BTreeMap<PathBuf, Inode>,
    /// The names as a crash would leave them.
    durable: BTreeMap<PathBuf, Inode>,
    failing_syncs: u32,
    full: bool,
}

/// An in-memory disk with a crash model. Clones share the same disk.
#[derive(Clone, Default)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MemDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemDisk")
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Makes the next `n` syncs fail.
    pub fn fail_syncs(&self, n: u32) {
        self.state().failing_syncs = n;
    }

    /// Fills the disk (every write fails with ENOSPC) or frees it.
    pub fn set_full(&self, full: bool) {
        self.state().full = full;
    }

    /// Whether injected faults are armed: syncs set to fail, or a full disk.
    pub fn is_failing(&self) -> bool {
        let s = self.state();
        s.failing_syncs > 0 || s.full
    }

    /// What a crash leaves: the synced names and contents, plus of each file's unsynced
    /// appended bytes the prefix `torn(unsynced_len)` chooses. Writes that did not extend the
    /// synced contents (a truncation, say) are lost whole.
    pub fn crash(&self, mut torn: impl FnMut(usize) -> usize) {
        let mut s = self.state();
        s.live = s.durable.clone();
        for inode in s.durable.values() {
            let mut c = lock(inode);
            let extends = c.current.len() > c.durable.len() && c.current.starts_with(&c.durable);
            if extends {
                let extra = c.current.len() - c.durable.len();
                let kept = c.durable.len() + torn(extra).min(extra);
                c.current.truncate(kept);
                c.durable = c.current.clone();
            } else {
                c.current = c.durable.clone();
            }
        }
        // Failing syncs are a fault of the running machine, not of what a restart finds.
        s.failing_syncs = 0;
    }
}

struct MemFile {
    disk: MemDisk,
    inode: Inode,
    writable: bool,
}

impl MemFile {
    fn check_writable(&self) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened for reading",
            ));
        }
        if self.disk.state().full {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl DiskFile for MemFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        lock(&self.inode).current.extend_from_slice(bytes);
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let c = lock(&self.inode);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let part = start
            .checked_add(buf.len())
            .and_then(|end| c.current.get(start..end))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(part);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.inode).current.len() as u64)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        lock(&self.inode).current.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.disk.state();
        if s.failing_syncs > 0 {
            s.failing_syncs -= 1;
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        drop(s);
        let mut c = lock(&self.inode);
        c.durable = c.current.clone();
        Ok(())
    }
}

impl Disk for MemDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        for d in dir.ancestors() {
            s.dirs.insert(d.to_owned());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state();
        let inode = s.live.get(path).ok_or_else(|| not_found(path))?;
        let bytes = lock(inode).current.clone();
        Ok(bytes)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        let mut s = self.state();
        let inode = match (mode, s.live.get(path)) {
            (OpenMode::Create, _) if s.full => return Err(io::Error::from_raw_os_error(28)),
            (OpenMode::Create, Some(inode)) => {
                lock(inode).current.clear();
                inode.clone()
            }
            (OpenMode::Create, None) => {
                let parent = path.parent().unwrap_or(Path::new(""));
                if !s.dirs.contains(parent) {
                    return Err(not_found(parent));
                }
                let inode = Inode::default();
                s.live.insert(path.to_owned(), inode.clone());
                inode
            }
            (_, Some(inode)) => inode.clone(),
            (_, None) => return Err(not_found(path)),
        };
        Ok(Box::new(MemFile {
            disk: self.clone(),
            inode,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state()
            .live
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        let inode = s.live.remove(from).ok_or_else(|| not_found(from))?;
        s.live.insert(to.to_owned(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        if s.failing_syncs > 0 {
            s.failing_syncs -= 1;
            return Err(io::Error::from_raw_os_error(5));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable.retain(|p, _| !in_dir(p));
        let synced: Vec<(PathBuf, Inode)> = s
            .live
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        s.durable.extend(synced);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_dir() -> (MemDisk, PathBuf) {
        let d = MemDisk::new();
        let dir = PathBuf::from("/data/log");
        d.create_dir_all(&dir).unwrap();
        (d, dir)
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_a_chosen_prefix_of_the_rest() {
        let (d, dir) = disk_with_dir();
        let p = dir.join("a");
        let mut f = d.open(&p, OpenMode::Create).unwrap();
        f.write_all(b"synced").unwrap();
        f.sync_data().unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all(b"-unsynced").unwrap();
        d.crash(|extra| {
            assert_eq!(extra, 9);
            3
        });
        assert_eq!(d.read(&p).unwrap(), b"synced-un");
        d.crash(|_| 0);
        assert_eq!(
            d.read(&p).unwrap(),
            b"synced-un",
            "what survived is now on disk"
        );
    }

    #[test]
    fn a_name_is_durable_only_once_its_directory_is_synced() {
        let (d, dir) = disk_with_dir();
        let p = dir.join("new");
        let mut f = d.open(&p, OpenMode::Create).unwrap();
        f.write_all(b"x").unwrap();
        f.sync_data().unwrap();
        d.crash(|n| n);
        assert!(
            d.read(&p).is_err(),
            "created, synced, but not its directory"
        );

        let tmp = dir.join("tmp");
        let mut f = d.open(&tmp, OpenMode::Create).unwrap();
        f.write_all(b"new").unwrap();
        f.sync_data().unwrap();
        d.rename(&tmp, &p).unwrap();
        d.sync_dir(&dir).unwrap();
        d.remove_file(&p).unwrap();
        d.crash(|n| n);
        assert_eq!(d.read(&p).unwrap(), b"new", "the removal was never synced");
        assert_eq!(d.list(&dir).unwrap(), vec!["new".to_owned()]);
    }

    #[test]
    fn failing_syncs_and_a_full_disk_refuse_and_keep_nothing_new() {
        let (d, dir) = disk_with_dir();
        let p = dir.join("f");
        let mut f = d.open(&p, OpenMode::Create).unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all(b"abc").unwrap();
        d.fail_syncs(1);
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
        d.set_full(true);
        assert_eq!(f.write_all(b"d").unwrap_err().raw_os_error(), Some(28));
        d.set_full(false);
        d.crash(|_| 0);
        assert_eq!(d.read(&p).unwrap(), b"");
    }

    #[test]
    fn a_truncation_not_synced_is_undone_by_a_crash() {
        let (d, dir) = disk_with_dir();
        let p = dir.join("f");
        let mut f = d.open(&p, OpenMode::Create).unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all(b"abcdef").unwrap();
        f.sync_data().unwrap();
        f.set_len(2).unwrap();
        f.write_all(b"XY").unwrap();
        d.crash(|n| n);
        assert_eq!(d.read(&p).unwrap(), b"abcdef");
    }
}
