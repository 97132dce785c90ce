//! File-system steps whose order matters for durability.

use crate::StorageError;
use corral_io::{Disk, OpenMode};
use std::path::Path;

/// fsyncs a directory, so that files created, renamed or removed in it survive a crash.
pub fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<(), StorageError> {
    disk.sync_dir(dir).map_err(|e| StorageError::io(dir, e))
}

/// Replaces `path` with `bytes` atomically: a temporary file is written and fsynced, renamed
/// over the target, and the directory fsynced. A crash leaves the old file or the new one.
pub fn atomic_write(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = disk
        .open(&tmp, OpenMode::Create)
        .map_err(|e| StorageError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| StorageError::io(&tmp, e))?;
    f.sync_data().map_err(|e| StorageError::io(&tmp, e))?;
    drop(f);
    disk.rename(&tmp, path)
        .map_err(|e| StorageError::io(path, e))?;
    sync_dir(disk, dir)
}

pub fn create_dir_all(disk: &dyn Disk, dir: &Path) -> Result<(), StorageError> {
    disk.create_dir_all(dir)
        .map_err(|e| StorageError::io(dir, e))
}
