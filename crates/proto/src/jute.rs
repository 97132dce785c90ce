//! Jute, ZooKeeper's serialization format, as a pair of traits over byte buffers.
//!
//! Jute is big-endian and untagged: `int` is 4 bytes, `long` 8, `boolean` one byte, `buffer` and
//! `ustring` a 4-byte length (−1 for null) followed by the bytes, `vector` a 4-byte count (−1 for
//! null) followed by the elements. A record is its fields in declaration order. Nothing here does
//! I/O: decoding reads from a borrowed slice, encoding appends to a `Vec<u8>`.

use bytes::Bytes;

/// Why a byte sequence is not the record that was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} more bytes for {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("negative length {len} for {what}")]
    NegativeLength { what: &'static str, len: i32 },
    #[error("length {len} for {what} exceeds the {limit} bytes left in the frame")]
    LengthTooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("unknown opcode {0}")]
    UnknownOpCode(i32),
    #[error("{0}")]
    Invalid(&'static str),
}

/// A cursor over the bytes of one frame.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    /// The length it started with, so errors can say where they were.
    start_len: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            start_len: buf.len(),
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> usize {
        self.start_len - self.buf.len()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                what,
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4, "int")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8, "long")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1, "boolean")?[0] != 0)
    }

    /// A length prefix: −1 means null (returned as `None`); any other negative value is an error,
    /// and so is a length longer than what is left, so a hostile length never allocates.
    fn length(
        &mut self,
        what: &'static str,
        elem_min: usize,
    ) -> Result<Option<usize>, DecodeError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(DecodeError::NegativeLength { what, len });
        }
        let len = len as usize;
        if len.saturating_mul(elem_min) > self.buf.len() {
            return Err(DecodeError::LengthTooLarge {
                what,
                len,
                limit: self.buf.len(),
            });
        }
        Ok(Some(len))
    }

    pub fn buffer(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.length("buffer", 1)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.take(n, "buffer")?)),
        }
    }

    pub fn ustring(&mut self) -> Result<Option<&'a str>, DecodeError> {
        match self.length("ustring", 1)? {
            None => Ok(None),
            Some(n) => {
                let b = self.take(n, "ustring")?;
                std::str::from_utf8(b)
                    .map(Some)
                    .map_err(|_| DecodeError::InvalidUtf8)
            }
        }
    }

    /// The count of a vector whose elements take at least `elem_min` bytes each.
    pub fn vector_len(&mut self, elem_min: usize) -> Result<Option<usize>, DecodeError> {
        self.length("vector", elem_min.max(1))
    }
}

/// A jute `ustring` as Java wrote it. ZooKeeper's own writer (its snapshots and logs) encodes each
/// UTF-16 unit on its own, so a character outside the BMP arrives as a CESU-8 surrogate pair (6
/// bytes); those are joined back into the character. Anything else that is not UTF-8 becomes
/// U+FFFD, as Java's decoder does.
pub fn java_string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => decode_cesu8_lossy(bytes),
    }
}

fn decode_cesu8_lossy(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // `valid` is UTF-8 by construction of `valid_up_to`.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                if let Some(c) = surrogate_pair(rest) {
                    out.push(c);
                    bytes = &rest[6..];
                } else {
                    out.push(char::REPLACEMENT_CHARACTER);
                    let skip = e.error_len().unwrap_or(rest.len()).max(1);
                    bytes = &rest[skip.min(rest.len())..];
                }
            }
        }
    }
}

/// A CESU-8 high+low surrogate pair at the start of `b`, as one character.
fn surrogate_pair(b: &[u8]) -> Option<char> {
    let unit = |s: &[u8], lead: u8| -> Option<u32> {
        (s[0] == 0xed && s[1] & 0xf0 == lead && s[2] & 0xc0 == 0x80)
            .then(|| 0xd000 | (u32::from(s[1] & 0x3f) << 6) | u32::from(s[2] & 0x3f))
    };
    if b.len() < 6 {
        return None;
    }
    let high = unit(&b[..3], 0xa0)?;
    let low = unit(&b[3..6], 0xb0)?;
    char::from_u32(0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00))
}

/// A value with a jute encoding.
pub trait Jute: Sized {
    /// The fewest bytes an encoding can take; bounds vector counts before allocating.
    const MIN_LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a whole slice; trailing bytes are tolerated as ZooKeeper tolerates them.
    fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        Self::decode(&mut Reader::new(b))
    }
}

impl Jute for i32 {
    const MIN_LEN: usize = 4;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.i32()
    }
}

impl Jute for i64 {
    const MIN_LEN: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.i64()
    }
}

impl Jute for bool {
    const MIN_LEN: usize = 1;
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.bool()
    }
}

/// `ustring`: a null string decodes as empty, which is how ZooKeeper's server treats it.
impl Jute for String {
    const MIN_LEN: usize = 4;
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as i32).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        // Java's `new String(bytes, UTF_8)`: malformed sequences become U+FFFD, which path
        // validation then refuses, so a bad path gets BadArguments as from ZooKeeper.
        match r.length("ustring", 1)? {
            None => Ok(String::new()),
            Some(n) => Ok(String::from_utf8_lossy(r.take(n, "ustring")?).into_owned()),
        }
    }
}

/// `buffer`: a null buffer decodes as empty.
impl Jute for Bytes {
    const MIN_LEN: usize = 4;
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as i32).encode(out);
        out.extend_from_slice(self);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Bytes::copy_from_slice(r.buffer()?.unwrap_or(&[])))
    }
}

/// A `buffer` that may be null (-1), as znode data is: a client that creates a znode with null
/// data reads null back, not an empty array.
impl Jute for Option<Bytes> {
    const MIN_LEN: usize = 4;
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Some(b) => b.encode(out),
            None => (-1i32).encode(out),
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(r.buffer()?.map(Bytes::copy_from_slice))
    }
}

/// `vector<T>`: a null vector decodes as empty.
impl<T: Jute> Jute for Vec<T> {
    const MIN_LEN: usize = 4;
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as i32).encode(out);
        for item in self {
            item.encode(out);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.vector_len(T::MIN_LEN)?.unwrap_or(0);
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::decode(r)?);
        }
        Ok(v)
    }
}

/// Declares a jute record: a struct whose encoding is its fields in order.
#[macro_export]
macro_rules! jute_record {
    ($(#[$meta:meta])* pub struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name { $(pub $field: $ty),* }

        impl $crate::jute::Jute for $name {
            const MIN_LEN: usize = 0 $(+ <$ty as $crate::jute::Jute>::MIN_LEN)*;
            fn encode(&self, _out: &mut Vec<u8>) {
                $($crate::jute::Jute::encode(&self.$field, _out);)*
            }
            fn decode(_r: &mut $crate::jute::Reader<'_>) -> Result<Self, $crate::jute::DecodeError> {
                Ok($name { $($field: <$ty as $crate::jute::Jute>::decode(_r)?),* })
            }
        }
    };
}

#[cfg(test)]
mod tests {

    #[test]
    fn java_strings_join_cesu8_surrogates() {
        // U+1F600 as Java's jute writer emits it: high D83D, low DE00, 3 bytes each.
        let cesu = [b'/', 0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80, b'x'];
        assert_eq!(java_string(&cesu), "/\u{1f600}x");
        assert_eq!(java_string(&[b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(java_string(&[0xed, 0xa0, 0xbd]), "\u{fffd}\u{fffd}\u{fffd}");
        assert_eq!(java_string("é".as_bytes()), "é");
    }

    #[test]
    fn the_offset_counts_what_was_read() {
        let bytes = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.offset(), 0);
        r.i32().unwrap();
        assert_eq!(r.offset(), 4);
        r.i64().unwrap();
        assert_eq!(r.offset(), 12);
    }

    use super::*;

    #[test]
    fn hostile_vector_length_does_not_allocate() {
        // A vector claiming 2^31-1 strings in a 4-byte frame must fail before allocating.
        let bytes = i32::MAX.to_be_bytes();
        let err = Vec::<String>::from_bytes(&bytes).unwrap_err();
        assert!(matches!(err, DecodeError::LengthTooLarge { .. }), "{err}");
    }

    #[test]
    fn null_values_decode_as_empty() {
        let bytes = (-1i32).to_be_bytes();
        assert_eq!(String::from_bytes(&bytes).unwrap(), "");
        assert!(Bytes::from_bytes(&bytes).unwrap().is_empty());
        assert!(Vec::<i32>::from_bytes(&bytes).unwrap().is_empty());
    }

    #[test]
    fn negative_lengths_other_than_null_are_errors() {
        let bytes = (-2i32).to_be_bytes();
        assert!(matches!(
            String::from_bytes(&bytes),
            Err(DecodeError::NegativeLength { len: -2, .. })
        ));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let mut b = 2i32.to_be_bytes().to_vec();
        b.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(String::from_bytes(&b).unwrap(), "\u{fffd}\u{fffd}");
    }
}
