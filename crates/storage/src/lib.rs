//! # corral-storage
//!
//! Corral's durable files, as bytes: a segmented write-ahead [`log`] whose records carry a
//! checksum and are synced in groups, and [`snapshot`] files written atomically. What the bytes
//! mean (log entries, trees) is the business of the layers above; this crate only makes sure that
//! what it acknowledged as synced comes back intact, and that damage is detected, not served.

pub mod fsutil;
pub mod log;
pub mod snapshot;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt at byte {offset}: {why}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("log index {got} does not follow {last}")]
    NotContiguous { last: u64, got: u64 },
    #[error("log index {0} is not in the log")]
    Missing(u64),
}

impl StorageError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
