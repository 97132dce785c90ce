//! Reading one transaction-log file (`FileTxnLog.FileTxnIterator`): a 16-byte header, then
//! records `long adler32; int len; len bytes; byte 'B'`.
//!
//! ZooKeeper preallocates logs with zeros, so the valid data ends at the first record that is
//! zero-length, runs past the end of the file, or lacks its 'B' marker (a write torn by a crash).
//! Those end the file, and the restore goes on with the next one. A record that is complete but
//! whose checksum does not hold is damage, and an error, as in ZooKeeper.

use crate::adler32::adler32;
use crate::error::ImportError;
use crate::jute::{JuteError, JuteReader};
use crate::txn::{parse_entry, EntryError, LogEntry};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

const LOG_MAGIC: i32 = 0x5A4B_4C47; // "ZKLG"
const HEADER_LEN: u64 = 16;
const END_MARKER: u8 = b'B';

/// One decoded record and where it starts.
#[derive(Debug)]
pub struct Record {
    pub offset: u64,
    pub entry: LogEntry,
}

/// An open log file, positioned at its next record.
pub struct LogReader {
    path: PathBuf,
    len: u64,
    r: JuteReader<BufReader<File>>,
    ended: bool,
}

/// What ended the valid data of a log, when it was not a clean end.
type Torn = &'static str;

/// What the bytes at a record's offset hold.
enum Slot {
    Entry(Vec<u8>),
    /// The end of the valid data: cleanly (`None`) or at a torn record.
    End(Option<Torn>),
}

impl LogReader {
    /// Opens a log and checks its header; `None` for an empty file (a log created just before a
    /// crash: ZooKeeper 3.9.3+ deletes it).
    pub fn open(path: &Path) -> Result<Option<LogReader>, ImportError> {
        let io_err = |source| ImportError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            return Ok(None);
        }
        if len < HEADER_LEN {
            return Err(ImportError::LogHeader {
                path: path.to_owned(),
                len,
            });
        }
        let mut reader = LogReader {
            path: path.to_owned(),
            len,
            r: JuteReader::new(BufReader::with_capacity(256 * 1024, file)),
            ended: false,
        };
        reader.header()?;
        Ok(Some(reader))
    }

    fn header(&mut self) -> Result<(), ImportError> {
        let magic = self.r.int("log magic").map_err(|e| self.read_error(e))?;
        if magic != LOG_MAGIC {
            return Err(ImportError::LogMagic {
                path: self.path.clone(),
                found: magic as u32,
            });
        }
        // Version and dbid are not checked by ZooKeeper either.
        self.r.int("log version").map_err(|e| self.read_error(e))?;
        self.r.long("log dbid").map_err(|e| self.read_error(e))?;
        Ok(())
    }

    fn read_error(&self, e: JuteError) -> ImportError {
        let offset = e.offset();
        let source = match e {
            JuteError::Io { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        };
        ImportError::LogRead {
            path: self.path.clone(),
            offset,
            source,
        }
    }

    /// Ends the file at `offset`, warning when that is not a clean end.
    fn end(&mut self, offset: u64, torn: Option<Torn>) {
        self.ended = true;
        if let Some(why) = torn {
            tracing::warn!(
                log = %self.path.display(),
                offset,
                "{why}; treating it as the end of this log, as ZooKeeper does"
            );
        }
    }

    /// The next record, or `None` at the end of the valid data.
    pub fn next_record(&mut self) -> Result<Option<Record>, ImportError> {
        if self.ended {
            return Ok(None);
        }
        let offset = self.r.offset();
        let entry = match self.slot(offset)? {
            Slot::Entry(entry) => entry,
            Slot::End(torn) => {
                self.end(offset, torn);
                return Ok(None);
            }
        };
        let entry = parse_entry(&entry).map_err(|e| self.entry_error(offset, e))?;
        Ok(Some(Record { offset, entry }))
    }

    /// The checked bytes of the record at `offset`, or why the valid data ends there.
    fn slot(&mut self, offset: u64) -> Result<Slot, ImportError> {
        if offset == self.len {
            return Ok(Slot::End(None));
        }
        let Some(crc) = self.eof_is_end(|r| r.long("record checksum"))? else {
            return Ok(Slot::End(Some("partial record header")));
        };
        let Some(len) = self.eof_is_end(|r| r.int("record length"))? else {
            return Ok(Slot::End(Some("partial record header")));
        };
        match len {
            0 if crc == 0 => return Ok(Slot::End(None)),
            0 | -1 => return Ok(Slot::End(Some("empty record"))),
            l if l < 0 => {
                return Err(ImportError::LogLength {
                    path: self.path.clone(),
                    offset,
                    len,
                })
            }
            _ => {}
        }
        // A length that cannot fit in the file is a torn write; don't read to the end for it.
        if self.r.offset() + len as u64 + 1 > self.len {
            return Ok(Slot::End(Some("record runs past the end of the file")));
        }
        let Some(entry) = self.eof_is_end(|r| r.bytes(len as usize, "record"))? else {
            return Ok(Slot::End(Some("partial record")));
        };
        if self.eof_is_end(|r| r.byte("end-of-record marker"))? != Some(END_MARKER) {
            return Ok(Slot::End(Some("record without its end marker")));
        }
        let computed = adler32(&entry);
        if crc != i64::from(computed) {
            return Err(ImportError::LogChecksum {
                path: self.path.clone(),
                offset,
                stored: crc,
                computed,
            });
        }
        Ok(Slot::Entry(entry))
    }

    /// Runs one read; end of data becomes `None`, other failures an error.
    fn eof_is_end<T>(
        &mut self,
        read: impl FnOnce(&mut JuteReader<BufReader<File>>) -> Result<T, JuteError>,
    ) -> Result<Option<T>, ImportError> {
        match read(&mut self.r) {
            Ok(v) => Ok(Some(v)),
            Err(JuteError::Eof { .. }) => Ok(None),
            Err(e) => Err(self.read_error(e)),
        }
    }

    fn entry_error(&self, offset: u64, e: EntryError) -> ImportError {
        match e {
            EntryError::Unsupported { op, zxid } => ImportError::UnsupportedTxn {
                path: self.path.clone(),
                offset,
                zxid,
                txn_type: op,
            },
            malformed => ImportError::BadTxn {
                path: self.path.clone(),
                offset,
                what: malformed.to_string(),
            },
        }
    }
}

/// Writes logs for tests, as `FileTxnLog.append` does.
#[cfg(test)]
pub mod write {
    use crate::adler32::adler32;
    use crate::txn::{encode, LogEntry};

    pub fn header() -> Vec<u8> {
        let mut out = Vec::new();
        encode::int(&mut out, super::LOG_MAGIC);
        encode::int(&mut out, 2);
        encode::long(&mut out, 0);
        out
    }

    pub fn record(out: &mut Vec<u8>, entry: &LogEntry) {
        let bytes = encode::entry(entry);
        encode::long(out, i64::from(adler32(&bytes)));
        encode::int(out, bytes.len() as i32);
        out.extend_from_slice(&bytes);
        out.push(b'B');
    }

    /// A log holding `entries`, padded with `zeros` preallocated bytes.
    pub fn log(entries: &[LogEntry], zeros: usize) -> Vec<u8> {
        let mut out = header();
        for e in entries {
            record(&mut out, e);
        }
        out.resize(out.len() + zeros, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{op, Txn, TxnHeader};

    fn entry(zxid: i64) -> LogEntry {
        LogEntry {
            header: TxnHeader {
                client_id: 1,
                cxid: 1,
                zxid,
                time: 5,
                op: op::DELETE,
            },
            txn: Txn::Delete {
                path: format!("/n{zxid}"),
            },
            digest: None,
        }
    }

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("zkimport-txnlog-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn file(&self, bytes: &[u8]) -> PathBuf {
            let p = self.0.join("log.1");
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn read_all(path: &Path) -> Result<Vec<i64>, ImportError> {
        let Some(mut r) = LogReader::open(path)? else {
            return Ok(vec![]);
        };
        let mut zxids = Vec::new();
        while let Some(rec) = r.next_record()? {
            zxids.push(rec.entry.header.zxid);
        }
        Ok(zxids)
    }

    #[test]
    fn reads_records_up_to_the_preallocated_zeros() {
        let dir = Dir::new("zeros");
        let entries = [entry(1), entry(2), entry(3)];
        assert_eq!(
            read_all(&dir.file(&write::log(&entries, 4096))).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(
            read_all(&dir.file(&write::log(&entries, 0))).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(
            read_all(&dir.file(&write::log(&[], 100))).unwrap(),
            Vec::<i64>::new()
        );
        assert_eq!(read_all(&dir.file(&[])).unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn a_torn_last_record_ends_the_log() {
        let dir = Dir::new("torn");
        let full = write::log(&[entry(1), entry(2)], 0);
        let one = write::log(&[entry(1)], 0).len();
        // Every cut inside the second record keeps the first one only.
        for cut in one..full.len() {
            assert_eq!(
                read_all(&dir.file(&full[..cut])).unwrap(),
                vec![1],
                "cut {cut}"
            );
        }
        // A missing end marker, followed by zeros.
        let mut bad_marker = full.clone();
        *bad_marker.last_mut().unwrap() = 0;
        bad_marker.resize(bad_marker.len() + 64, 0);
        assert_eq!(read_all(&dir.file(&bad_marker)).unwrap(), vec![1]);
    }

    #[test]
    fn damage_inside_a_record_is_an_error() {
        let dir = Dir::new("damage");
        let full = write::log(&[entry(1), entry(2)], 64);
        let one = write::log(&[entry(1)], 0).len();
        let mut flipped = full.clone();
        flipped[one + 20] ^= 0x10; // inside the second entry's bytes
        let err = read_all(&dir.file(&flipped)).unwrap_err();
        assert!(
            matches!(err, ImportError::LogChecksum { offset, .. } if offset == one as u64),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("checksum mismatch in the record at offset"),
            "{err}"
        );
        let mut negative = full.clone();
        negative[one + 8] = 0x80; // the length's sign bit
        assert!(matches!(
            read_all(&dir.file(&negative)),
            Err(ImportError::LogLength { .. })
        ));
        let mut magic = full.clone();
        magic[0] = b'X';
        let err = read_all(&dir.file(&magic)).unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        assert!(matches!(
            read_all(&dir.file(&full[..10])),
            Err(ImportError::LogHeader { len: 10, .. })
        ));
    }

    #[test]
    fn every_single_bit_flip_is_an_error_or_an_earlier_end() {
        let dir = Dir::new("flips");
        let full = write::log(&[entry(1), entry(2), entry(3)], 32);
        for i in 0..full.len() * 8 {
            let mut bytes = full.clone();
            bytes[i / 8] ^= 1 << (i % 8);
            match read_all(&dir.file(&bytes)) {
                Err(_) => {}
                // Flips in a length, checksum or marker can only end the log early (or, in the
                // preallocated zeros, not matter); they never change what is read.
                Ok(zxids) => assert!([1, 2, 3].starts_with(&zxids), "bit {i}: {zxids:?}"),
            }
        }
    }
}
