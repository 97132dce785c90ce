//! Adler-32, as `java.util.zip.Adler32` computes it. ZooKeeper seals snapshots with it (over the
//! uncompressed stream) and stamps every transaction-log record with it. Hand-written because it
//! is a dozen lines; the only subtlety is reducing modulo 65521 often enough that the `u32` sums
//! cannot overflow (every 5552 bytes, zlib's `NMAX`).

const MOD: u32 = 65_521;
/// The most bytes that can be summed before `b` may overflow a `u32` (zlib's bound).
const NMAX: usize = 5552;

/// A running Adler-32 checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adler32 {
    a: u32,
    b: u32,
}

impl Default for Adler32 {
    fn default() -> Self {
        Adler32 { a: 1, b: 0 }
    }
}

impl Adler32 {
    pub fn update(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(NMAX) {
            for &x in chunk {
                self.a += u32::from(x);
                self.b += self.a;
            }
            self.a %= MOD;
            self.b %= MOD;
        }
    }

    pub fn value(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

/// The Adler-32 of `bytes`.
pub fn adler32(bytes: &[u8]) -> u32 {
    let mut sum = Adler32::default();
    sum.update(bytes);
    sum.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"a"), 0x0062_0062);
        assert_eq!(adler32(b"abc"), 0x024d_0127);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert_eq!(
            adler32(b"The quick brown fox jumps over the lazy dog"),
            0x5bdc_0fda
        );
    }

    #[test]
    fn long_inputs_do_not_overflow_and_split_anywhere() {
        // 1 MiB of 0xff is the worst case for the running sums.
        let data = vec![0xffu8; 1 << 20];
        let whole = adler32(&data);
        // Reference: the plain definition with u64 sums reduced at the end.
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &data {
            a = (a + u64::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(u64::from(whole), (b << 16) | a);
        let mut split = Adler32::default();
        split.update(&data[..7777]);
        split.update(&data[7777..]);
        assert_eq!(split.value(), whole);
    }
}
