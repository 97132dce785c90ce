//! What can go wrong, each message naming the file and byte offset and saying what is wrong.

use std::io;
use std::path::PathBuf;

/// Why a ZooKeeper data directory could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{0} is not a ZooKeeper data directory: it has no version-2 directory and no \
         snapshot.* or log.* files"
    )]
    NotADataDir(PathBuf),
    /// One snapshot is unusable. Offsets count bytes of the uncompressed stream.
    #[error("snapshot {path}: {what} (at offset {offset}{})", if *compressed { " of the decompressed stream" } else { "" })]
    Snapshot {
        path: PathBuf,
        offset: u64,
        compressed: bool,
        what: String,
    },
    /// Snapshots exist but none is valid; ZooKeeper refuses to start in this case too.
    #[error("no valid snapshot among {count} in {dir}: {}", summarize(reasons))]
    NoValidSnapshot {
        dir: PathBuf,
        count: usize,
        reasons: Vec<String>,
    },
    #[error("log {path}: bad magic {found:#010x} at offset 0 (expected 0x5a4b4c47, \"ZKLG\")")]
    LogMagic { path: PathBuf, found: u32 },
    #[error("log {path}: file header truncated: {len} bytes, need 16")]
    LogHeader { path: PathBuf, len: u64 },
    #[error(
        "log {path}: checksum mismatch in the record at offset {offset}: stored {stored:#x}, \
         computed {computed:#x}"
    )]
    LogChecksum {
        path: PathBuf,
        offset: u64,
        stored: i64,
        computed: u32,
    },
    #[error("log {path}: invalid record length {len} at offset {offset}")]
    LogLength {
        path: PathBuf,
        offset: u64,
        len: i32,
    },
    #[error("log {path}: read error at offset {offset}: {source}")]
    LogRead {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// A record whose checksum holds but whose contents are not a valid transaction.
    #[error("log {path}: malformed transaction in the record at offset {offset}: {what}")]
    BadTxn {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error(
        "log {path}: unsupported transaction type {txn_type} (zxid {zxid:#x}) in the record at \
         offset {offset}"
    )]
    UnsupportedTxn {
        path: PathBuf,
        offset: u64,
        zxid: i64,
        txn_type: i32,
    },
    #[error(
        "node {node} refers to ACL {key}, which snapshot {snapshot}'s ACL table lacks and no \
         later transaction sets"
    )]
    MissingAcl {
        node: String,
        key: i64,
        snapshot: PathBuf,
    },
    #[error("the imported nodes do not make a tree: {0}")]
    Tree(#[from] corral_tree::ImportError),
}

/// The first few reasons, newest snapshot first; a directory may hold a hundred snapshots.
fn summarize(reasons: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = reasons[..reasons.len().min(SHOWN)].join("; ");
    if reasons.len() > SHOWN {
        text.push_str(&format!("; and {} more", reasons.len() - SHOWN));
    }
    text
}
