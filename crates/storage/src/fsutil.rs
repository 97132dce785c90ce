//! File-system steps whose order matters for durability.

use crate::StorageError;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// fsyncs a directory, so that files created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// Replaces `path` with `bytes` atomically: a temporary file is written and fsynced, renamed
/// over the target, and the directory fsynced. A crash leaves the old file or the new one.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StorageError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| StorageError::io(&tmp, e))?;
    f.sync_all().map_err(|e| StorageError::io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| StorageError::io(path, e))?;
    sync_dir(dir)
}

pub fn create_dir_all(dir: &Path) -> Result<(), StorageError> {
    fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))
}
