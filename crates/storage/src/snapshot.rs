//! Snapshot files: `DIR/snap-<last index, 20 digits>-<term, 20 digits>.snap`.
//!
//! Format: magic `CRLSNAP1`, `meta_len: u32`, meta, `payload_len: u64`, payload, and a trailing
//! crc32c of everything before it. Files are written atomically (temporary file, fsync, rename,
//! directory fsync), so a crash never leaves a half snapshot under a real name. Loading takes the
//! newest file whose checksum holds; damaged ones are reported and skipped.

use crate::fsutil::{atomic_write, create_dir_all};
use crate::StorageError;
use std::fs;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CRLSNAP1";

/// Which log position a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotId {
    pub last_index: u64,
    pub term: u64,
}

#[derive(Debug)]
pub struct LoadedSnapshot {
    pub id: SnapshotId,
    pub meta: Vec<u8>,
    pub payload: Vec<u8>,
    pub path: PathBuf,
}

pub struct SnapshotStore {
    dir: PathBuf,
    retain: usize,
}

fn file_name(id: SnapshotId) -> String {
    format!("snap-{:020}-{:020}.snap", id.last_index, id.term)
}

fn parse_name(name: &str) -> Option<SnapshotId> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (index, term) = rest.split_once('-')?;
    Some(SnapshotId {
        last_index: index.parse().ok()?,
        term: term.parse().ok()?,
    })
}

impl SnapshotStore {
    /// A store keeping the `retain` newest snapshots (at least one).
    pub fn open(dir: &Path, retain: usize) -> Result<SnapshotStore, StorageError> {
        create_dir_all(dir)?;
        Ok(SnapshotStore {
            dir: dir.to_owned(),
            retain: retain.max(1),
        })
    }

    /// Snapshot ids on disk, newest first.
    pub fn list(&self) -> Result<Vec<SnapshotId>, StorageError> {
        let mut ids: Vec<SnapshotId> = fs::read_dir(&self.dir)
            .map_err(|e| StorageError::io(&self.dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_name(&e.file_name().to_string_lossy()))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// Writes a snapshot atomically, then removes all but the newest `retain`.
    pub fn save(
        &self,
        id: SnapshotId,
        meta: &[u8],
        payload: &[u8],
    ) -> Result<PathBuf, StorageError> {
        let mut bytes = Vec::with_capacity(32 + meta.len() + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        bytes.extend_from_slice(meta);
        bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        bytes.extend_from_slice(payload);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        let path = self.dir.join(file_name(id));
        atomic_write(&path, &bytes)?;
        for old in self.list()?.into_iter().skip(self.retain) {
            let p = self.dir.join(file_name(old));
            fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
        }
        Ok(path)
    }

    /// Reads and checks one snapshot file.
    pub fn load(&self, id: SnapshotId) -> Result<LoadedSnapshot, StorageError> {
        let path = self.dir.join(file_name(id));
        let bytes = fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
        let corrupt = |offset: usize, why: &str| StorageError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            why: why.to_owned(),
        };
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(corrupt(0, "not a Corral snapshot"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(tail.try_into().expect("4 bytes")) {
            return Err(corrupt(body.len(), "checksum mismatch"));
        }
        let meta_len = u32::from_be_bytes(body[8..12].try_into().expect("4")) as usize;
        let meta_end = 12 + meta_len;
        let payload_len_at = body
            .get(meta_end..meta_end + 8)
            .ok_or_else(|| corrupt(12, "meta length"))?;
        let payload_len = u64::from_be_bytes(payload_len_at.try_into().expect("8")) as usize;
        let payload = body
            .get(meta_end + 8..meta_end + 8 + payload_len)
            .ok_or_else(|| corrupt(meta_end, "payload length"))?;
        Ok(LoadedSnapshot {
            id,
            meta: body[12..meta_end].to_vec(),
            payload: payload.to_vec(),
            path,
        })
    }

    /// The newest snapshot whose checksum holds; damaged newer ones are skipped with a warning
    /// and returned in the second list so the caller can report them.
    pub fn load_newest_valid(
        &self,
    ) -> Result<(Option<LoadedSnapshot>, Vec<StorageError>), StorageError> {
        let mut damaged = Vec::new();
        for id in self.list()? {
            match self.load(id) {
                Ok(s) => return Ok((Some(s), damaged)),
                Err(e @ StorageError::Corrupt { .. }) => {
                    tracing::warn!(error = %e, "skipping a damaged snapshot");
                    damaged.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((None, damaged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("corral-snap-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn id(i: u64) -> SnapshotId {
        SnapshotId {
            last_index: i,
            term: 2,
        }
    }

    #[test]
    fn newest_valid_wins_and_retention_prunes() {
        let store = SnapshotStore::open(&temp("retain"), 2).unwrap();
        for i in [10, 20, 30] {
            store
                .save(id(i), b"meta", format!("tree at {i}").as_bytes())
                .unwrap();
        }
        assert_eq!(store.list().unwrap(), vec![id(30), id(20)]);
        let (s, damaged) = store.load_newest_valid().unwrap();
        let s = s.unwrap();
        assert_eq!(
            (s.id, &s.meta[..], &s.payload[..]),
            (id(30), &b"meta"[..], &b"tree at 30"[..])
        );
        assert!(damaged.is_empty());
    }

    #[test]
    fn a_damaged_newest_snapshot_falls_back_to_an_older_one() {
        let dir = temp("fallback");
        let store = SnapshotStore::open(&dir, 3).unwrap();
        store.save(id(1), b"", b"old").unwrap();
        let newest = store.save(id(2), b"", b"new").unwrap();
        let mut bytes = fs::read(&newest).unwrap();
        bytes[14] ^= 1;
        fs::write(&newest, bytes).unwrap();
        let (s, damaged) = store.load_newest_valid().unwrap();
        assert_eq!(s.unwrap().payload, b"old");
        assert_eq!(damaged.len(), 1);
        fs::remove_file(dir.join(file_name(id(1)))).unwrap();
        let (s, damaged) = store.load_newest_valid().unwrap();
        assert!(s.is_none());
        assert_eq!(
            damaged.len(),
            1,
            "the caller learns that a snapshot existed but was damaged"
        );
    }

    #[test]
    fn truncated_file_is_damage() {
        let dir = temp("trunc");
        let store = SnapshotStore::open(&dir, 3).unwrap();
        let p = store.save(id(5), b"m", &vec![7u8; 1000]).unwrap();
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            store.load(id(5)),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
