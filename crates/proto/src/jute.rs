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
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
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
