//! snappy-java's stream format (`SnappyOutputStream`), which ZooKeeper 3.6+ writes for
//! `snapshot.*.snappy` files: a 16-byte header (`82 'SNAPPY' 00`, int version, int compatible
//! version), then chunks of `[int32 BE compressed length][raw snappy block]`. A chunk length equal
//! to the header's first four bytes starts a concatenated stream's header, as in
//! `SnappyInputStream.hasNextChunk`. Each block is decoded with the `snap` crate's raw decoder.

use std::io::{self, Read};

/// The first eight header bytes, as `SnappyCodec.MAGIC_HEADER`.
pub const MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const HEADER_LEN: usize = 16;
/// Snappy cannot expand a block by more than about 21x (a 3-byte copy makes at most 64 bytes);
/// a header claiming more is corrupt, and is refused before anything is allocated for it.
const MAX_EXPANSION: usize = 32;

/// Decompresses a snappy-java stream.
pub struct SnappyJavaReader<R> {
    inner: R,
    block: Vec<u8>,
    pos: usize,
    started: bool,
    done: bool,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: Read> SnappyJavaReader<R> {
    pub fn new(inner: R) -> Self {
        SnappyJavaReader {
            inner,
            block: Vec::new(),
            pos: 0,
            started: false,
            done: false,
        }
    }

    /// Reads up to `buf.len()` bytes; returns how many (fewer only at end of input).
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }

    fn check_header(header: &[u8]) -> io::Result<()> {
        if header[..8] != MAGIC {
            return Err(invalid("not a snappy-java stream (bad magic)".into()));
        }
        let compatible = i32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        if compatible < 1 {
            return Err(invalid(format!(
                "unsupported snappy-java compatible version {compatible}"
            )));
        }
        Ok(())
    }

    /// Loads the next block into `self.block`; false at end of stream.
    fn next_block(&mut self) -> io::Result<bool> {
        if !self.started {
            let mut header = [0u8; HEADER_LEN];
            if self.read_full(&mut header)? < HEADER_LEN {
                return Err(invalid("snappy-java header truncated".into()));
            }
            Self::check_header(&header)?;
            self.started = true;
        }
        loop {
            let mut len_bytes = [0u8; 4];
            // As snappy-java: fewer than four bytes left is the end of the stream.
            if self.read_full(&mut len_bytes)? < 4 {
                return Ok(false);
            }
            if len_bytes == MAGIC[..4] {
                self.concatenated_header(len_bytes)?;
                continue;
            }
            let len = i32::from_be_bytes(len_bytes);
            let len = usize::try_from(len)
                .map_err(|_| invalid(format!("invalid snappy chunk length {len}")))?;
            self.decode_block(len)?;
            return Ok(true);
        }
    }

    fn concatenated_header(&mut self, head: [u8; 4]) -> io::Result<()> {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&head);
        if self.read_full(&mut header[4..])? < HEADER_LEN - 4 {
            return Err(invalid(
                "snappy-java header of a concatenated stream truncated".into(),
            ));
        }
        Self::check_header(&header)
    }

    fn decode_block(&mut self, len: usize) -> io::Result<()> {
        let mut compressed = Vec::with_capacity(len.min(1 << 20));
        (&mut self.inner)
            .take(len as u64)
            .read_to_end(&mut compressed)?;
        if compressed.len() < len {
            return Err(invalid(format!(
                "snappy chunk truncated: {} of {len} bytes",
                compressed.len()
            )));
        }
        let out_len = snap::raw::decompress_len(&compressed)
            .map_err(|e| invalid(format!("bad snappy block: {e}")))?;
        if out_len > compressed.len().saturating_mul(MAX_EXPANSION) + 64 {
            return Err(invalid(format!(
                "snappy block claims {out_len} bytes from {len} compressed bytes"
            )));
        }
        self.block = snap::raw::Decoder::new()
            .decompress_vec(&compressed)
            .map_err(|e| invalid(format!("bad snappy block: {e}")))?;
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for SnappyJavaReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.block.len() {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            if !self.next_block()? {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Compresses `data` in snappy-java's stream format with `block` bytes per chunk (tests only).
#[cfg(test)]
pub fn encode(data: &[u8], block: usize) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    for chunk in data.chunks(block.max(1)) {
        let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
        out.extend_from_slice(&(c.len() as i32).to_be_bytes());
        out.extend_from_slice(&c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        SnappyJavaReader::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trip_with_several_blocks_and_concatenation() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(decode(&encode(&data, 32 * 1024)).unwrap(), data);
        let mut two = encode(b"hello ", 4);
        two.extend_from_slice(&encode(b"world", 4));
        assert_eq!(decode(&two).unwrap(), b"hello world");
        assert_eq!(decode(&encode(b"", 4)).unwrap(), b"");
    }

    #[test]
    fn corrupt_streams_are_errors() {
        assert!(decode(b"\x82SNAPPY\0\0\0").is_err());
        assert!(decode(b"garbage garbage garbage").is_err());
        let mut bad = encode(b"some data to compress", 1024);
        bad.truncate(bad.len() - 3);
        assert!(decode(&bad).is_err());
        let mut neg = encode(b"", 4);
        neg.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(decode(&neg).is_err());
        // A block claiming 4 GiB from a few bytes is refused up front.
        let mut bomb = encode(b"", 4);
        bomb.extend_from_slice(&5i32.to_be_bytes());
        bomb.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&bomb).is_err());
    }
}
