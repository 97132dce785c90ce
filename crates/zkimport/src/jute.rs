//! The streaming and checksum wrapper for ZooKeeper's files: jute read from a byte stream (a
//! snapshot can be gigabytes, compressed), keeping the running Adler-32 of everything consumed
//! (snapshot seals cover all bytes before them) and the offset (so errors can say where the data
//! went wrong). Values in memory (log entries) are decoded with `corral_proto`'s reader directly
//! (`txn.rs`); strings are decoded here as there, with `corral_proto::jute::java_string`.
//!
//! Jute is big-endian and untagged; `buffer`, `ustring` and `vector` carry a 4-byte length where
//! -1 means null. Lengths are never trusted for allocation: bytes are read through `Read::take`,
//! so a hostile length on a short input fails at end of data instead of allocating gigabytes.

use crate::adler32::Adler32;
use corral_proto::jute::java_string;
use corral_proto::{Acl, Jute};
use std::io::{self, BufRead, Read};

/// Why a jute value could not be read. The message leaves out the offset, which callers put
/// beside the file name.
#[derive(Debug, thiserror::Error)]
pub enum JuteError {
    #[error("unexpected end of data while reading {what}")]
    Eof { offset: u64, what: &'static str },
    #[error("invalid length {len} for {what}")]
    BadLength {
        offset: u64,
        what: &'static str,
        len: i32,
    },
    #[error("null {what}")]
    Null { offset: u64, what: &'static str },
    #[error("{source}")]
    Decode {
        offset: u64,
        source: corral_proto::DecodeError,
    },
    #[error("read error: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

impl JuteError {
    /// Where in the stream the failing value started.
    pub fn offset(&self) -> u64 {
        match self {
            JuteError::Eof { offset, .. }
            | JuteError::BadLength { offset, .. }
            | JuteError::Null { offset, .. }
            | JuteError::Decode { offset, .. }
            | JuteError::Io { offset, .. } => *offset,
        }
    }
}

/// A jute decoder over a buffered byte stream.
pub struct JuteReader<R> {
    inner: R,
    offset: u64,
    sum: Adler32,
}

impl<R: BufRead> JuteReader<R> {
    pub fn new(inner: R) -> Self {
        Self::resume(inner, 0, Adler32::default())
    }

    /// A reader that continues a stream already consumed up to `offset` with checksum `sum`.
    pub fn resume(inner: R, offset: u64, sum: Adler32) -> Self {
        JuteReader { inner, offset, sum }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Adler-32 state of every byte consumed so far.
    pub fn sum(&self) -> Adler32 {
        self.sum
    }

    /// Whether the stream has no more bytes.
    pub fn at_end(&mut self) -> Result<bool, JuteError> {
        let offset = self.offset;
        loop {
            match self.inner.fill_buf() {
                Ok(buf) => return Ok(buf.is_empty()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(JuteError::Io { offset, source }),
            }
        }
    }

    fn exact<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], JuteError> {
        let offset = self.offset;
        let mut buf = [0u8; N];
        let mut filled = 0;
        while filled < N {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => return Err(JuteError::Eof { offset, what }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(JuteError::Io { offset, source }),
            }
        }
        self.consumed(&buf);
        Ok(buf)
    }

    fn consumed(&mut self, bytes: &[u8]) {
        self.sum.update(bytes);
        self.offset += bytes.len() as u64;
    }

    pub fn byte(&mut self, what: &'static str) -> Result<u8, JuteError> {
        Ok(self.exact::<1>(what)?[0])
    }

    pub fn int(&mut self, what: &'static str) -> Result<i32, JuteError> {
        Ok(i32::from_be_bytes(self.exact(what)?))
    }

    pub fn long(&mut self, what: &'static str) -> Result<i64, JuteError> {
        Ok(i64::from_be_bytes(self.exact(what)?))
    }

    /// Exactly `len` bytes (or end of data).
    pub fn bytes(&mut self, len: usize, what: &'static str) -> Result<Vec<u8>, JuteError> {
        let offset = self.offset;
        // Grow as bytes arrive rather than trusting `len` up front.
        let mut out = Vec::with_capacity(len.min(64 * 1024));
        let got = (&mut self.inner)
            .take(len as u64)
            .read_to_end(&mut out)
            .map_err(|source| JuteError::Io { offset, source })?;
        self.consumed(&out);
        if got < len {
            return Err(JuteError::Eof { offset, what });
        }
        Ok(out)
    }

    /// Up to `limit` bytes, whatever is left (for the small, optional snapshot trailers).
    pub fn rest(&mut self, limit: usize) -> Result<Vec<u8>, JuteError> {
        let offset = self.offset;
        let mut out = Vec::new();
        (&mut self.inner)
            .take(limit as u64)
            .read_to_end(&mut out)
            .map_err(|source| JuteError::Io { offset, source })?;
        self.consumed(&out);
        Ok(out)
    }

    /// A length prefix: `None` for -1 (null); anything else negative is an error.
    fn length(&mut self, what: &'static str) -> Result<Option<usize>, JuteError> {
        let offset = self.offset;
        let len = self.int(what)?;
        match len {
            -1 => Ok(None),
            l if l < 0 => Err(JuteError::BadLength { offset, what, len }),
            l => Ok(Some(l as usize)),
        }
    }

    pub fn buffer(&mut self, what: &'static str) -> Result<Option<Vec<u8>>, JuteError> {
        match self.length(what)? {
            None => Ok(None),
            Some(len) => self.bytes(len, what).map(Some),
        }
    }

    pub fn ustring(&mut self, what: &'static str) -> Result<Option<String>, JuteError> {
        Ok(self.buffer(what)?.map(|b| java_string(&b)))
    }

    /// A string that must not be null.
    pub fn string(&mut self, what: &'static str) -> Result<String, JuteError> {
        let offset = self.offset;
        self.ustring(what)?.ok_or(JuteError::Null { offset, what })
    }

    /// A vector's element count; `None` for a null vector.
    pub fn vector_len(&mut self, what: &'static str) -> Result<Option<usize>, JuteError> {
        self.length(what)
    }

    /// One `ACL { int perms; Id { ustring scheme; ustring id } }`: its bytes taken from the
    /// stream, then decoded by `corral_proto` as any ACL is. A null scheme or id (which
    /// ZooKeeper's API cannot create) reads as empty.
    pub fn acl(&mut self) -> Result<Acl, JuteError> {
        let offset = self.offset;
        let mut record = self.exact::<4>("ACL perms")?.to_vec();
        for what in ["ACL scheme", "ACL id"] {
            let len = self.int(what)?;
            record.extend_from_slice(&len.to_be_bytes());
            match len {
                -1 => {}
                l if l < 0 => return Err(JuteError::BadLength { offset, what, len }),
                l => record.extend(self.bytes(l as usize, what)?),
            }
        }
        Acl::decode(&mut corral_proto::Reader::new(&record))
            .map_err(|source| JuteError::Decode { offset, source })
    }

    /// `vector<ACL>`; `None` for a null vector.
    pub fn acl_list(&mut self) -> Result<Option<Vec<Acl>>, JuteError> {
        let Some(count) = self.vector_len("ACL list")? else {
            return Ok(None);
        };
        let mut acls = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            acls.push(self.acl()?);
        }
        Ok(Some(acls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> JuteReader<&[u8]> {
        JuteReader::new(bytes)
    }

    #[test]
    fn primitives_are_big_endian() {
        let bytes = [
            1, 0, 0, 0, 0x2a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x07,
        ];
        let mut r = reader(&bytes);
        assert_eq!(r.byte("b").unwrap(), 1);
        assert_eq!(r.int("i").unwrap(), 42);
        assert_eq!(r.long("l").unwrap(), -2);
        assert_eq!(r.byte("x").unwrap(), 7);
        assert_eq!(r.offset(), 14);
        assert!(r.at_end().unwrap());
        assert_eq!(r.sum().value(), crate::adler32::adler32(&bytes));
    }

    #[test]
    fn buffers_strings_and_nulls() {
        let mut bytes = vec![0, 0, 0, 3, b'a', b'b', b'c'];
        bytes.extend_from_slice(&(-1i32).to_be_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        let mut r = reader(&bytes);
        assert_eq!(r.string("s").unwrap(), "abc");
        assert_eq!(r.buffer("b").unwrap(), None);
        assert_eq!(r.buffer("b").unwrap(), Some(vec![]));
    }

    #[test]
    fn bad_lengths_and_truncation_are_errors() {
        let minus_two = (-2i32).to_be_bytes();
        assert!(matches!(
            reader(&minus_two).buffer("data"),
            Err(JuteError::BadLength { len: -2, .. })
        ));
        // A huge length on a short input fails at end of data without allocating it.
        let mut bytes = i32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"xy");
        let err = reader(&bytes).buffer("data").unwrap_err();
        assert!(matches!(err, JuteError::Eof { offset: 4, .. }), "{err}");
        let err = reader(&[0, 0]).int("count").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected end of data while reading count"
        );
        assert_eq!(err.offset(), 0);
        let null = (-1i32).to_be_bytes();
        assert!(matches!(
            reader(&null).string("path"),
            Err(JuteError::Null { .. })
        ));
    }

    #[test]
    fn acl_lists() {
        let mut bytes = 2i32.to_be_bytes().to_vec();
        for (perms, scheme, id) in [(31i32, "world", "anyone"), (1, "digest", "u:h")] {
            bytes.extend_from_slice(&perms.to_be_bytes());
            for s in [scheme, id] {
                bytes.extend_from_slice(&(s.len() as i32).to_be_bytes());
                bytes.extend_from_slice(s.as_bytes());
            }
        }
        let acls = reader(&bytes).acl_list().unwrap().unwrap();
        assert_eq!(
            acls,
            vec![
                Acl::new(31, "world", "anyone"),
                Acl::new(1, "digest", "u:h")
            ]
        );
        // A hostile count fails at end of data.
        assert!(reader(&i32::MAX.to_be_bytes()).acl_list().is_err());
    }
}
