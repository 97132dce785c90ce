//! Length-prefixed framing: every message is a 4-byte big-endian length and that many bytes.
//!
//! The decoder is sans-I/O: the connection feeds it whatever bytes arrived and asks for whole
//! frames. A length above `max_frame_len` (ZooKeeper's `jute.maxbuffer`) or below zero is an
//! error that the connection answers by closing; nothing of such a frame is buffered.

use crate::jute::{DecodeError, Jute, Reader};
use crate::records::{ConnectRequest, ConnectResponse};
use bytes::{Buf, Bytes, BytesMut};

/// ZooKeeper's default `jute.maxbuffer`: 0xfffff bytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 0xfffff;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} is larger than jute.maxbuffer ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("negative frame length {0}")]
    Negative(i32),
}

/// Takes whole frames out of a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    pub max_frame_len: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder { max_frame_len }
    }

    /// Peeks at the length prefix without consuming anything.
    pub fn peek_len(buf: &[u8]) -> Option<i32> {
        (buf.len() >= 4).then(|| i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))
    }

    /// The next whole frame (without its length prefix), `None` if more bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = checked_len([buf[0], buf[1], buf[2], buf[3]], self.max_frame_len)?;
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

/// The body length a frame's 4-byte prefix announces, refused when negative or over `max_len`:
/// what every reader of frames checks before it allocates (the server's decoder, and blocking
/// or async clients reading the prefix themselves).
pub fn checked_len(prefix: [u8; 4], max_len: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(prefix);
    if len < 0 {
        return Err(FrameError::Negative(len));
    }
    let len = len as usize;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    Ok(len)
}

/// Reads one frame's body from a blocking stream (tests and tools; the server decodes with
/// [`FrameDecoder`]), refusing a length over `max_len` before allocating.
pub fn read_frame(r: &mut impl std::io::Read, max_len: usize) -> std::io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let len = checked_len(prefix, max_len).map_err(std::io::Error::other)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// The first frame of a session: `ConnectRequest` plus the optional trailing `readOnly` byte that
/// clients since 3.3 send. Whether the byte was there decides whether the reply carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub request: ConnectRequest,
    pub read_only: Option<bool>,
}

impl Handshake {
    pub fn decode(frame: &[u8]) -> Result<Handshake, DecodeError> {
        let mut r = Reader::new(frame);
        let request = ConnectRequest::decode(&mut r)?;
        let read_only = if r.is_empty() { None } else { Some(r.bool()?) };
        Ok(Handshake { request, read_only })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        self.request.encode(out);
        if let Some(ro) = self.read_only {
            ro.encode(out);
        }
    }

    /// The whole frame a client sends first: length prefix, then the handshake.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = vec![0; 4];
        self.encode(&mut out);
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }
}

/// Encodes the whole handshake reply frame.
pub fn connect_response_frame(resp: &ConnectResponse, read_only: Option<bool>) -> Vec<u8> {
    let mut body = Vec::with_capacity(40);
    resp.encode(&mut body);
    if let Some(ro) = read_only {
        ro.encode(&mut body);
    }
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_reads_refuse_lengths_over_the_limit_before_allocating() {
        let hs = Handshake {
            request: ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 7,
                time_out: 4000,
                session_id: 0,
                passwd: Bytes::from_static(&[0; 16]),
            },
            read_only: Some(false),
        };
        let frame = hs.to_frame();
        let body = read_frame(&mut &frame[..], 100).unwrap();
        assert_eq!(Handshake::decode(&body).unwrap(), hs);
        let err = read_frame(&mut &frame[..], 10).unwrap_err();
        assert!(err.to_string().contains("jute.maxbuffer"), "{err}");
        let negative = (-5i32).to_be_bytes();
        assert!(read_frame(&mut &negative[..], 100).is_err());
    }

    #[test]
    fn frames_split_across_reads() {
        let d = FrameDecoder::new(100);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 3, 1]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[2, 3, 0, 0]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().as_ref(), &[1, 2, 3]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 2);
    }

    #[test]
    fn oversized_and_negative_frames_are_errors() {
        let d = FrameDecoder::new(10);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 11][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        let mut buf = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(d.decode(&mut buf), Err(FrameError::Negative(-5)));
    }

    #[test]
    fn handshake_with_and_without_read_only_byte() {
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 7,
            time_out: 30000,
            session_id: 0,
            passwd: Bytes::from_static(&[0; 16]),
        };
        for ro in [None, Some(false), Some(true)] {
            let h = Handshake {
                request: req.clone(),
                read_only: ro,
            };
            let mut b = Vec::new();
            h.encode(&mut b);
            assert_eq!(Handshake::decode(&b).unwrap(), h);
        }
    }
}
