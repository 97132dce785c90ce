//! A segmented write-ahead log of numbered records.
//!
//! Layout: `DIR/<first index, 20 digits>.log` files, each starting with an 8-byte magic, then
//! records `len: u32 | crc32c: u32 | index: u64 | payload`, where `len` counts index and payload
//! and the checksum covers them. Indexes are contiguous across segments.
//!
//! Writes are buffered; [`SegmentedLog::sync`] makes everything appended so far durable with one
//! `fdatasync` (and an fsync of the directory when a segment was created), so a caller that
//! gathers many appends before one sync gets group commit. On open, every record is read back and
//! checked: a damaged record at the end of the last segment is a write torn by a crash and is cut
//! off (it was never acknowledged); damage anywhere else is corruption and opening fails.

use crate::fsutil::{create_dir_all, sync_dir};
use crate::StorageError;
use corral_io::disk::{FileWriter, RealDisk};
use corral_io::{Disk, DiskFile, OpenMode};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"CRLLOG01";
const HEADER: usize = 8;
/// The largest record accepted; anything larger in a file is damage, not data.
pub const MAX_RECORD: usize = 64 << 20;

struct Segment {
    first: u64,
    path: PathBuf,
    /// Byte offset of each record; record `first + i` starts at `offsets[i]`.
    offsets: Vec<u64>,
    len: u64,
    reader: Box<dyn DiskFile>,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }
}

pub struct SegmentedLog {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    segments: Vec<Segment>,
    writer: Option<BufWriter<FileWriter>>,
    max_segment_bytes: u64,
    unsynced: bool,
    dir_unsynced: bool,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

impl SegmentedLog {
    /// Opens (or creates) the log in `dir` on the machine's disk, checking every record.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<SegmentedLog, StorageError> {
        SegmentedLog::open_on(Arc::new(RealDisk), dir, max_segment_bytes)
    }

    /// Opens (or creates) the log in `dir` on `disk`, checking every record.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        max_segment_bytes: u64,
    ) -> Result<SegmentedLog, StorageError> {
        create_dir_all(&*disk, dir)?;
        let mut firsts: Vec<u64> = disk
            .list(dir)
            .map_err(|e| StorageError::io(dir, e))?
            .into_iter()
            .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
            .collect();
        firsts.sort_unstable();
        let mut segments: Vec<Segment> = Vec::new();
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let path = dir.join(segment_name(first));
            let seg = scan_segment(&*disk, &path, first, is_last)?;
            if let Some(prev) = segments.last() {
                if let Some(prev_last) = prev.last() {
                    if prev_last + 1 != first {
                        return Err(StorageError::Corrupt {
                            path,
                            offset: 0,
                            why: format!(
                                "segment starts at {first} but the previous ends at {prev_last}"
                            ),
                        });
                    }
                }
            }
            segments.push(seg);
        }
        let mut log = SegmentedLog {
            disk,
            dir: dir.to_owned(),
            segments,
            writer: None,
            max_segment_bytes,
            unsynced: false,
            dir_unsynced: false,
        };
        if let Some(last) = log.segments.last() {
            let f = log
                .disk
                .open(&last.path, OpenMode::Append)
                .map_err(|e| StorageError::io(&last.path, e))?;
            log.writer = Some(BufWriter::with_capacity(256 << 10, FileWriter(f)));
        }
        Ok(log)
    }

    pub fn first_index(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| !s.offsets.is_empty())
            .map(|s| s.first)
    }

    pub fn last_index(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(Segment::last)
    }

    /// Appends records; each index must follow the last one (any index starts an empty log).
    pub fn append(&mut self, index: u64, payload: &[u8]) -> Result<(), StorageError> {
        if let Some(last) = self.last_index() {
            if index != last + 1 {
                return Err(StorageError::NotContiguous { last, got: index });
            }
        }
        let needs_segment = match self.segments.last() {
            None => true,
            Some(s) => {
                s.len >= self.max_segment_bytes || (s.offsets.is_empty() && s.first != index)
            }
        };
        if needs_segment {
            self.start_segment(index)?;
        }
        let body_len = 8 + payload.len();
        assert!(
            body_len <= MAX_RECORD,
            "record of {body_len} bytes exceeds MAX_RECORD"
        );
        let mut crc = crc32c::crc32c(&index.to_be_bytes());
        crc = crc32c::crc32c_append(crc, payload);
        let seg = self.segments.last_mut().expect("a segment was started");
        let w = self
            .writer
            .as_mut()
            .expect("the active segment has a writer");
        let io = |e| StorageError::io(&seg.path, e);
        w.write_all(&(body_len as u32).to_be_bytes()).map_err(io)?;
        w.write_all(&crc.to_be_bytes()).map_err(io)?;
        w.write_all(&index.to_be_bytes()).map_err(io)?;
        w.write_all(payload).map_err(io)?;
        seg.offsets.push(seg.len);
        seg.len += 8 + body_len as u64;
        self.unsynced = true;
        Ok(())
    }

    fn start_segment(&mut self, first: u64) -> Result<(), StorageError> {
        // The outgoing segment's unsynced tail must be made durable now: `sync` only reaches
        // the active segment.
        self.flush()?;
        if self.unsynced {
            if let (Some(w), Some(s)) = (self.writer.as_ref(), self.segments.last()) {
                w.get_ref()
                    .0
                    .sync_data()
                    .map_err(|e| StorageError::io(&s.path, e))?;
            }
        }
        // An empty active segment named for another index is replaced.
        if let Some(s) = self.segments.last() {
            if s.offsets.is_empty() {
                let s = self.segments.pop().expect("checked");
                self.disk
                    .remove_file(&s.path)
                    .map_err(|e| StorageError::io(&s.path, e))?;
            }
        }
        let path = self.dir.join(segment_name(first));
        let mut f = self
            .disk
            .open(&path, OpenMode::Create)
            .map_err(|e| StorageError::io(&path, e))?;
        f.write_all(MAGIC).map_err(|e| StorageError::io(&path, e))?;
        let reader = self
            .disk
            .open(&path, OpenMode::Read)
            .map_err(|e| StorageError::io(&path, e))?;
        self.segments.push(Segment {
            first,
            path,
            offsets: Vec::new(),
            len: HEADER as u64,
            reader,
        });
        self.writer = Some(BufWriter::with_capacity(256 << 10, FileWriter(f)));
        self.dir_unsynced = true;
        self.unsynced = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if let (Some(w), Some(s)) = (self.writer.as_mut(), self.segments.last()) {
            w.flush().map_err(|e| StorageError::io(&s.path, e))?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable: one fdatasync, plus a directory fsync when a
    /// segment was created or removed since the last sync.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.unsynced {
            self.flush()?;
            if let (Some(w), Some(s)) = (self.writer.as_ref(), self.segments.last()) {
                w.get_ref()
                    .0
                    .sync_data()
                    .map_err(|e| StorageError::io(&s.path, e))?;
            }
            self.unsynced = false;
        }
        if self.dir_unsynced {
            sync_dir(&*self.disk, &self.dir)?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Reads the records `from..to` (exclusive end).
    pub fn read(&mut self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        self.flush()?;
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        for index in from..to {
            out.push((index, self.read_one(index)?));
        }
        Ok(out)
    }

    fn read_one(&self, index: u64) -> Result<Vec<u8>, StorageError> {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.first <= index)
            .filter(|s| s.last().is_some_and(|l| index <= l))
            .ok_or(StorageError::Missing(index))?;
        let offset = seg.offsets[(index - seg.first) as usize];
        let mut head = [0u8; 16];
        seg.reader
            .read_exact_at(&mut head, offset)
            .map_err(|e| StorageError::io(&seg.path, e))?;
        let body_len = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let mut payload = vec![0u8; body_len - 8];
        seg.reader
            .read_exact_at(&mut payload, offset + 16)
            .map_err(|e| StorageError::io(&seg.path, e))?;
        Ok(payload)
    }

    /// Removes the records from `index` on (a Raft follower dropping a conflicting suffix).
    pub fn truncate_from(&mut self, index: u64) -> Result<(), StorageError> {
        self.flush()?;
        while let Some(s) = self.segments.last() {
            if s.first >= index && self.segments.len() > 1 {
                let s = self.segments.pop().expect("checked");
                self.disk
                    .remove_file(&s.path)
                    .map_err(|e| StorageError::io(&s.path, e))?;
                self.dir_unsynced = true;
            } else {
                break;
            }
        }
        if let Some(s) = self.segments.last_mut() {
            if index <= s.first {
                s.offsets.clear();
                s.len = HEADER as u64;
            } else if let Some(&cut) = s.offsets.get((index - s.first) as usize) {
                s.offsets.truncate((index - s.first) as usize);
                s.len = cut;
            }
            // The writer's buffer was flushed above; the file is cut and synced through a
            // fresh handle, which then becomes the writer.
            let mut f = self
                .disk
                .open(&s.path, OpenMode::Append)
                .map_err(|e| StorageError::io(&s.path, e))?;
            f.set_len(s.len).map_err(|e| StorageError::io(&s.path, e))?;
            f.sync_data().map_err(|e| StorageError::io(&s.path, e))?;
            self.writer = Some(BufWriter::with_capacity(256 << 10, FileWriter(f)));
        }
        self.sync()
    }

    /// Deletes whole segments whose records all lie at or below `index` (a snapshot covers
    /// them). The active segment stays.
    pub fn purge_through(&mut self, index: u64) -> Result<usize, StorageError> {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let next_first = self.segments[1].first;
            if next_first <= index + 1 {
                let s = self.segments.remove(0);
                self.disk
                    .remove_file(&s.path)
                    .map_err(|e| StorageError::io(&s.path, e))?;
                removed += 1;
            } else {
                break;
            }
        }
        if removed > 0 {
            sync_dir(&*self.disk, &self.dir)?;
        }
        Ok(removed)
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// Whether any whole, valid record of a later index than the damaged one at `pos` lies after it.
///
/// The damaged record's own length field cannot be trusted (a flip there would hide every record
/// behind it), so every byte offset is tried. Cheap tests (a plausible length and index) come
/// before the checksum, so the scan costs little even over a long tail of torn garbage.
fn valid_record_follows(bytes: &[u8], pos: usize, damaged_index: u64) -> bool {
    let max_later = (bytes.len().saturating_sub(pos) / 16) as u64;
    (pos + 1..bytes.len().saturating_sub(15)).any(|at| {
        let head = &bytes[at..at + 16];
        let body_len = u32::from_be_bytes(head[0..4].try_into().expect("4")) as usize;
        let index = u64::from_be_bytes(head[8..16].try_into().expect("8"));
        let plausible = (8..=MAX_RECORD).contains(&body_len)
            && index > damaged_index
            && index - damaged_index <= max_later;
        if !plausible {
            return false;
        }
        let crc = u32::from_be_bytes(head[4..8].try_into().expect("4"));
        bytes
            .get(at + 8..at + 8 + body_len)
            .is_some_and(|body| crc32c::crc32c(body) == crc)
    })
}

/// Reads a segment back, checking every record. Damage at the tail of the last segment is cut.
fn scan_segment(
    disk: &dyn Disk,
    path: &Path,
    first: u64,
    is_last: bool,
) -> Result<Segment, StorageError> {
    let bytes = disk.read(path).map_err(|e| StorageError::io(path, e))?;
    let corrupt = |offset: usize, why: String| StorageError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        why,
    };
    let mut offsets = Vec::new();
    let mut pos = HEADER;
    let mut damage: Option<String> = None;
    if bytes.len() < HEADER || &bytes[..HEADER] != MAGIC {
        if !is_last || bytes.len() >= HEADER {
            return Err(corrupt(0, "not a Corral log segment".into()));
        }
        damage = Some("segment header torn".into());
        pos = 0;
    }
    while damage.is_none() && pos < bytes.len() {
        let Some(head) = bytes.get(pos..pos + 16) else {
            damage = Some("record header torn".into());
            break;
        };
        let body_len = u32::from_be_bytes(head[0..4].try_into().expect("4")) as usize;
        let crc = u32::from_be_bytes(head[4..8].try_into().expect("4"));
        if !(8..=MAX_RECORD).contains(&body_len) {
            damage = Some(format!("record length {body_len} out of range"));
            break;
        }
        let Some(body) = bytes.get(pos + 8..pos + 8 + body_len) else {
            damage = Some("record body torn".into());
            break;
        };
        if crc32c::crc32c(body) != crc {
            damage = Some("checksum mismatch".into());
            break;
        }
        let index = u64::from_be_bytes(body[0..8].try_into().expect("8"));
        let expected = first + offsets.len() as u64;
        if index != expected {
            damage = Some(format!("record index {index}, expected {expected}"));
            break;
        }
        offsets.push(pos as u64);
        pos += 8 + body_len;
    }
    if let Some(why) = damage {
        // A torn write can only be the last record: if a valid record follows the damaged one,
        // an acknowledged record was damaged in place.
        if !is_last || valid_record_follows(&bytes, pos, first + offsets.len() as u64) {
            return Err(corrupt(pos, why));
        }
        // A crash tore the last write; it was never synced, so never acknowledged.
        tracing::warn!(path = %path.display(), offset = pos, %why, "cutting a torn tail off the log");
        let mut f = disk
            .open(path, OpenMode::Append)
            .map_err(|e| StorageError::io(path, e))?;
        if pos == 0 {
            f.set_len(0).map_err(|e| StorageError::io(path, e))?;
            f.write_all(MAGIC).map_err(|e| StorageError::io(path, e))?;
            pos = HEADER;
        } else {
            f.set_len(pos as u64)
                .map_err(|e| StorageError::io(path, e))?;
        }
        f.sync_data().map_err(|e| StorageError::io(path, e))?;
    }
    let reader = disk
        .open(path, OpenMode::Read)
        .map_err(|e| StorageError::io(path, e))?;
    Ok(Segment {
        first,
        path: path.to_owned(),
        offsets,
        len: pos as u64,
        reader,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("corral-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("entry-{i}")
            .repeat((i % 5 + 1) as usize)
            .into_bytes()
    }

    fn fill(dir: &Path, n: u64, seg: u64) -> SegmentedLog {
        let mut log = SegmentedLog::open(dir, seg).unwrap();
        for i in 1..=n {
            log.append(i, &payload(i)).unwrap();
        }
        log.sync().unwrap();
        log
    }

    #[test]
    fn appends_survive_reopen_across_segments() {
        let dir = temp("reopen");
        let log = fill(&dir, 500, 2048);
        assert!(log.segment_count() > 3);
        drop(log);
        let mut log = SegmentedLog::open(&dir, 2048).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (Some(1), Some(500)));
        for (i, p) in log.read(1, 501).unwrap() {
            assert_eq!(p, payload(i));
        }
        assert!(matches!(
            log.append(7, b"x"),
            Err(StorageError::NotContiguous { .. })
        ));
        log.append(501, b"next").unwrap();
        assert_eq!(log.read(501, 502).unwrap()[0].1, b"next");
    }

    #[test]
    fn torn_tail_is_cut_and_the_log_goes_on() {
        let dir = temp("torn");
        let log = fill(&dir, 20, 1 << 20);
        drop(log);
        let seg = dir.join(segment_name(1));
        let len = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let mut log = SegmentedLog::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.last_index(), Some(19));
        log.append(20, b"again").unwrap();
        log.sync().unwrap();
        drop(log);
        let mut log = SegmentedLog::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.read(20, 21).unwrap()[0].1, b"again");
    }

    #[test]
    fn flipped_byte_in_an_older_segment_is_corruption() {
        let dir = temp("flip");
        drop(fill(&dir, 300, 2048));
        let seg = dir.join(segment_name(1));
        let mut bytes = fs::read(&seg).unwrap();
        bytes[40] ^= 0x20;
        fs::write(&seg, bytes).unwrap();
        match SegmentedLog::open(&dir, 2048) {
            Err(StorageError::Corrupt { path, .. }) => assert_eq!(path, seg),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a flipped byte must be detected"),
        }
    }

    #[test]
    fn flipped_byte_mid_way_in_the_last_segment_is_corruption() {
        let dir = temp("flipmid");
        drop(fill(&dir, 10, 1 << 20));
        let seg = dir.join(segment_name(1));
        let mut bytes = fs::read(&seg).unwrap();
        bytes[HEADER + 20] ^= 0x01; // inside the first record's payload
        fs::write(&seg, bytes).unwrap();
        assert!(matches!(
            SegmentedLog::open(&dir, 1 << 20),
            Err(StorageError::Corrupt { .. })
        ));
    }

    #[test]
    fn flipped_length_field_mid_way_in_the_last_segment_is_corruption() {
        // A flip in a length field makes the records behind it unreachable by walking lengths;
        // they were acknowledged, so this must not pass for a torn tail.
        for (bit, what) in [(0x80, "length too large"), (0x01, "length off by one")] {
            let dir = temp("fliplen");
            drop(fill(&dir, 10, 1 << 20));
            let seg = dir.join(segment_name(1));
            let mut bytes = fs::read(&seg).unwrap();
            bytes[HEADER + 3 - usize::from(bit == 0x80) * 3] ^= bit;
            fs::write(&seg, bytes).unwrap();
            assert!(
                matches!(
                    SegmentedLog::open(&dir, 1 << 20),
                    Err(StorageError::Corrupt { .. })
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn flipped_byte_in_the_last_record_is_cut_like_a_torn_write() {
        let dir = temp("fliplast");
        drop(fill(&dir, 10, 1 << 20));
        let seg = dir.join(segment_name(1));
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        fs::write(&seg, bytes).unwrap();
        let log = SegmentedLog::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.last_index(), Some(9));
    }

    #[test]
    fn truncate_and_purge() {
        let dir = temp("trunc");
        let mut log = fill(&dir, 400, 2048);
        log.truncate_from(250).unwrap();
        assert_eq!(log.last_index(), Some(249));
        log.append(250, b"new").unwrap();
        log.sync().unwrap();
        let before = log.segment_count();
        let removed = log.purge_through(200).unwrap();
        assert!(removed > 0 && log.segment_count() == before - removed);
        let first = log.first_index().unwrap();
        assert!(
            first <= 201,
            "records after the purge point stay: first is {first}"
        );
        drop(log);
        let mut log = SegmentedLog::open(&dir, 2048).unwrap();
        assert_eq!(log.last_index(), Some(250));
        assert_eq!(log.read(250, 251).unwrap()[0].1, b"new");
        assert_eq!(log.read(201, 202).unwrap()[0].1, payload(201));
    }

    #[test]
    fn a_log_may_start_after_one() {
        let dir = temp("start");
        let mut log = SegmentedLog::open(&dir, 4096).unwrap();
        log.append(1000, b"a").unwrap();
        log.append(1001, b"b").unwrap();
        log.sync().unwrap();
        drop(log);
        let log = SegmentedLog::open(&dir, 4096).unwrap();
        assert_eq!(
            (log.first_index(), log.last_index()),
            (Some(1000), Some(1001))
        );
    }
}
