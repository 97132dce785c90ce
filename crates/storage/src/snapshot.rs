//! Snapshot files: `DIR/snap-<last index, 20 digits>-<term, 20 digits>.snap`.
//!
//! Format: magic `CRLSNAP1`, `meta_len: u32`, meta, `payload_len: u64`, payload, and a trailing
//! crc32c of everything before it. Files are written atomically (temporary file, fsync, rename,
//! directory fsync), so a crash never leaves a half snapshot under a real name. Loading takes the
//! newest file whose checksum holds; damaged ones are reported and skipped.

use crate::fsutil::{atomic_write, create_dir_all};
use crate::StorageError;
use corral_io::disk::RealDisk;
use corral_io::{Disk, OpenMode};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    disk: Arc<dyn Disk>,
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
    /// A store on the machine's disk keeping the `retain` newest snapshots (at least one).
    pub fn open(dir: &Path, retain: usize) -> Result<SnapshotStore, StorageError> {
        SnapshotStore::open_on(Arc::new(RealDisk), dir, retain)
    }

    /// A store on `disk` keeping the `retain` newest snapshots (at least one).
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        retain: usize,
    ) -> Result<SnapshotStore, StorageError> {
        create_dir_all(&*disk, dir)?;
        Ok(SnapshotStore {
            disk,
            dir: dir.to_owned(),
            retain: retain.max(1),
        })
    }

    /// Snapshot ids on disk, newest first.
    pub fn list(&self) -> Result<Vec<SnapshotId>, StorageError> {
        let mut ids: Vec<SnapshotId> = self
            .disk
            .list(&self.dir)
            .map_err(|e| StorageError::io(&self.dir, e))?
            .iter()
            .filter_map(|name| parse_name(name))
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
        atomic_write(&*self.disk, &path, &bytes)?;
        for old in self.list()?.into_iter().skip(self.retain) {
            let p = self.dir.join(file_name(old));
            self.disk
                .remove_file(&p)
                .map_err(|e| StorageError::io(&p, e))?;
        }
        Ok(path)
    }

    /// Reads and checks one snapshot file. The payload (the whole tree, often hundreds of MB)
    /// is read straight into its own buffer: no second copy and no second set of fresh pages.
    pub fn load(&self, id: SnapshotId) -> Result<LoadedSnapshot, StorageError> {
        let path = self.dir.join(file_name(id));
        let io = |e| StorageError::io(&path, e);
        let corrupt = |offset: usize, why: &str| StorageError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            why: why.to_owned(),
        };
        let file = self.disk.open(&path, OpenMode::Read).map_err(io)?;
        let file_len = file.len().map_err(io)? as usize;
        // What the header claims is checked against the file's size before anything is
        // allocated for it.
        let read_part = |len: usize, at: usize, what: &str| -> Result<Vec<u8>, StorageError> {
            if at + len > file_len {
                return Err(corrupt(at, what));
            }
            let mut part = vec![0u8; len];
            file.read_exact_at(&mut part, at as u64).map_err(io)?;
            Ok(part)
        };
        let head = read_part(12, 0, "not a Corral snapshot")?;
        if &head[..8] != MAGIC {
            return Err(corrupt(0, "not a Corral snapshot"));
        }
        let meta_len = u32::from_be_bytes(head[8..12].try_into().expect("4")) as usize;
        let meta = read_part(meta_len, 12, "meta length")?;
        let payload_len_at = 12 + meta_len;
        let len_bytes = read_part(8, payload_len_at, "payload length")?;
        let payload_len = u64::from_be_bytes(len_bytes[..].try_into().expect("8")) as usize;
        let payload_at = payload_len_at + 8;
        if payload_len.checked_add(payload_at + 4) != Some(file_len) {
            return Err(corrupt(payload_len_at, "payload length"));
        }
        let payload = read_part(payload_len, payload_at, "payload length")?;
        let tail = read_part(4, payload_at + payload_len, "checksum")?;
        let mut crc = crc32c::crc32c(&head);
        for part in [&meta, &len_bytes, &payload] {
            crc = crc32c::crc32c_append(crc, part);
        }
        if crc != u32::from_be_bytes(tail[..].try_into().expect("4 bytes")) {
            return Err(corrupt(payload_at + payload_len, "checksum mismatch"));
        }
        Ok(LoadedSnapshot {
            id,
            meta,
            payload,
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
    use std::fs;

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
        for cut in [0, 5, 12, 14, 20, bytes.len() / 2, bytes.len() - 1] {
            fs::write(&p, &bytes[..cut]).unwrap();
            assert!(
                matches!(store.load(id(5)), Err(StorageError::Corrupt { .. })),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn lengths_that_disagree_with_the_file_are_damage_not_allocations() {
        let dir = temp("lengths");
        let store = SnapshotStore::open(&dir, 3).unwrap();
        let p = store.save(id(6), b"meta", b"payload").unwrap();
        let good = fs::read(&p).unwrap();
        // The meta length, then the payload length, claiming far more than the file holds;
        // then bytes after the checksum.
        for (at, value) in [(8usize, u32::MAX as u64), (16, u64::MAX), (16, 1 << 40)] {
            let mut bad = good.clone();
            if at == 8 {
                bad[8..12].copy_from_slice(&(value as u32).to_be_bytes());
            } else {
                bad[at..at + 8].copy_from_slice(&value.to_be_bytes());
            }
            fs::write(&p, &bad).unwrap();
            assert!(matches!(
                store.load(id(6)),
                Err(StorageError::Corrupt { .. })
            ));
        }
        let mut longer = good.clone();
        longer.push(0);
        fs::write(&p, &longer).unwrap();
        assert!(matches!(
            store.load(id(6)),
            Err(StorageError::Corrupt { .. })
        ));
        fs::write(&p, &good).unwrap();
        assert_eq!(store.load(id(6)).unwrap().payload, b"payload");
    }
}
