//! Finding the files in a ZooKeeper data directory, and choosing which of them a restore reads,
//! by the rules of `FileSnap.findNValidSnapshots` and `FileTxnLog.getLogFiles`.

use crate::error::ImportError;
use std::fs;
use std::path::{Path, PathBuf};

/// How many snapshots ZooKeeper considers before giving up (`findNValidSnapshots(100)`).
pub const MAX_SNAPSHOTS_TRIED: usize = 100;

/// How a snapshot file is compressed, from its name's last dot-suffix (`SnapStream.getStreamMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
}

/// A `snapshot.<hex zxid>[.suffix]` or `log.<hex zxid>` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZxidFile {
    pub zxid: i64,
    pub path: PathBuf,
}

/// The snapshot and log files of one directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// Newest (highest zxid) first.
    pub snapshots: Vec<ZxidFile>,
    /// Oldest first.
    pub logs: Vec<ZxidFile>,
}

/// `dir/version-2` if it exists, else `dir` itself if it holds snapshots or logs.
pub fn version2_dir(dir: &Path) -> Result<PathBuf, ImportError> {
    let nested = dir.join("version-2");
    if nested.is_dir() {
        return Ok(nested);
    }
    let listing = list(dir)?;
    if listing.snapshots.is_empty() && listing.logs.is_empty() {
        return Err(ImportError::NotADataDir(dir.to_owned()));
    }
    Ok(dir.to_owned())
}

/// `Util.getZxidFromName`: the name split on '.', part 0 equal to `prefix`, part 1 hex.
pub fn zxid_from_name(name: &str, prefix: &str) -> Option<i64> {
    let mut parts = name.split('.');
    if parts.next()? != prefix {
        return None;
    }
    i64::from_str_radix(parts.next()?, 16).ok()
}

pub fn compression_of(path: &Path) -> Compression {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    match name.rsplit('.').next() {
        Some("gz") => Compression::Gzip,
        Some("snappy") => Compression::Snappy,
        _ => Compression::None,
    }
}

/// Lists the snapshots and logs in `dir`.
pub fn list(dir: &Path) -> Result<Listing, ImportError> {
    let io_err = |source| ImportError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        if let Some(zxid) = zxid_from_name(&name, "snapshot") {
            listing.snapshots.push(ZxidFile { zxid, path });
        } else if let Some(zxid) = zxid_from_name(&name, "log") {
            listing.logs.push(ZxidFile { zxid, path });
        }
    }
    // Ties (e.g. snapshot.5 and snapshot.5.gz) are broken by name so the order is stable.
    listing
        .snapshots
        .sort_by(|a, b| (b.zxid, &b.path).cmp(&(a.zxid, &a.path)));
    listing
        .logs
        .sort_by(|a, b| (a.zxid, &a.path).cmp(&(b.zxid, &b.path)));
    Ok(listing)
}

/// The logs a restore from a snapshot at `snap_zxid` reads, oldest first: the newest log that
/// starts at or before `snap_zxid` (it may hold the txns right after the snapshot) and every
/// later one (`FileTxnIterator.init`). Older logs hold only txns the snapshot already has.
pub fn logs_to_read(logs: &[ZxidFile], snap_zxid: i64) -> Vec<ZxidFile> {
    let start = logs.iter().rposition(|l| l.zxid <= snap_zxid).unwrap_or(0);
    logs[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(zxid: i64) -> ZxidFile {
        ZxidFile {
            zxid,
            path: PathBuf::from(format!("log.{zxid:x}")),
        }
    }

    #[test]
    fn names() {
        assert_eq!(zxid_from_name("snapshot.1a", "snapshot"), Some(0x1a));
        assert_eq!(zxid_from_name("snapshot.1a.gz", "snapshot"), Some(0x1a));
        assert_eq!(zxid_from_name("log.100000001", "log"), Some(0x1_0000_0001));
        assert_eq!(zxid_from_name("log.xyz", "log"), None);
        assert_eq!(zxid_from_name("snapshot", "snapshot"), None);
        assert_eq!(zxid_from_name("logs.1", "log"), None);
        assert_eq!(
            compression_of(Path::new("a/snapshot.5.gz")),
            Compression::Gzip
        );
        assert_eq!(
            compression_of(Path::new("snapshot.5.snappy")),
            Compression::Snappy
        );
        assert_eq!(compression_of(Path::new("snapshot.5")), Compression::None);
        assert_eq!(
            compression_of(Path::new("snapshot.5.tmp")),
            Compression::None
        );
    }

    #[test]
    fn log_selection_follows_zookeeper() {
        let logs = vec![f(1), f(10), f(20), f(30)];
        let zx = |v: Vec<ZxidFile>| v.iter().map(|l| l.zxid).collect::<Vec<_>>();
        assert_eq!(zx(logs_to_read(&logs, 0)), vec![1, 10, 20, 30]);
        assert_eq!(zx(logs_to_read(&logs, 15)), vec![10, 20, 30]);
        assert_eq!(zx(logs_to_read(&logs, 20)), vec![20, 30]);
        assert_eq!(zx(logs_to_read(&logs, 99)), vec![30]);
        assert!(logs_to_read(&[], 5).is_empty());
    }
}
