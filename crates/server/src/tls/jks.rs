//! Java KeyStore files (`JKS`, keytool's `-storetype JKS` and Java 8's default), read by hand:
//! the one Rust crate for them is young and kept by one person, and the format is small and
//! fixed (Sun's `JavaKeyStore` and `KeyProtector`).
//!
//! ```text
//! u32 0xFEEDFEED, u32 version (1 or 2), u32 entries
//! entry: u32 tag (1 key, 2 trusted certificate), UTF alias, i64 date, then
//!   key:   u32 length + EncryptedPrivateKeyInfo (Sun's key protector), u32 certificates,
//!          each: [UTF type, if version 2] u32 length + DER
//!   trusted certificate: [UTF type] u32 length + DER
//! 20 bytes: SHA-1(password as UTF-16BE, "Mighty Aphrodite", everything before)
//! ```
//!
//! A key is protected with the store's password as ZooKeeper loads it: a SHA-1 keystream over
//! the password and a 20-byte salt, XORed in, with a SHA-1 check of the plain key after it.

use rustls_pki_types::CertificateDer;
use sha1::{Digest, Sha1};
use x509_parser::der_parser::{ber::BerObjectContent, der::parse_der};

const MAGIC: u32 = 0xFEED_FEED;
/// Sun's key protector algorithm (`1.3.6.1.4.1.42.2.17.1.1`).
const KEY_PROTECTOR: &str = "1.3.6.1.4.1.42.2.17.1.1";
/// Entries a store may claim; keytool's stores hold a handful.
const MAX_ENTRIES: u32 = 10_000;

/// What a store holds: its keys, each with its certificate chain, and its trusted certificates.
#[derive(Debug, Default)]
pub struct Jks {
    /// PKCS#8 private keys with their chains, in file order.
    pub keys: Vec<(Vec<u8>, Vec<CertificateDer<'static>>)>,
    pub trusted: Vec<CertificateDer<'static>>,
}

/// Whether `bytes` look like a JKS store.
pub fn is_jks(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[..4] == MAGIC.to_be_bytes()
}

/// Reads a store whose integrity and keys are protected by `password`.
pub fn read(bytes: &[u8], password: &str) -> Result<Jks, String> {
    let password: Vec<u8> = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
    check_integrity(bytes, &password)?;
    let mut r = Reader {
        bytes: &bytes[..bytes.len() - 20],
        at: 0,
    };
    if r.u32()? != MAGIC {
        return Err("not a JKS store".into());
    }
    let version = r.u32()?;
    if !matches!(version, 1 | 2) {
        return Err(format!("JKS version {version} is unknown"));
    }
    let entries = r.u32()?;
    if entries > MAX_ENTRIES {
        return Err(format!("a JKS store of {entries} entries"));
    }
    let mut store = Jks::default();
    for _ in 0..entries {
        let tag = r.u32()?;
        r.utf()?; // alias
        r.take(8)?; // date
        match tag {
            1 => {
                let protected = r.sized()?;
                let count = r.u32()?;
                if count > MAX_ENTRIES {
                    return Err(format!("a chain of {count} certificates"));
                }
                let mut chain = Vec::new();
                for _ in 0..count {
                    chain.push(r.certificate(version)?);
                }
                store.keys.push((recover_key(protected, &password)?, chain));
            }
            2 => store.trusted.push(r.certificate(version)?),
            _ => return Err(format!("unknown JKS entry tag {tag}")),
        }
    }
    Ok(store)
}

/// The store's last 20 bytes are a keyed SHA-1 of the rest: a wrong password shows here.
fn check_integrity(bytes: &[u8], password: &[u8]) -> Result<(), String> {
    if bytes.len() < 32 {
        return Err("too short for a JKS store".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 20);
    let mut md = Sha1::new();
    md.update(password);
    md.update(b"Mighty Aphrodite");
    md.update(body);
    if md.finalize().as_slice() != digest {
        return Err("the JKS store's password is wrong, or the store was altered".into());
    }
    Ok(())
}

/// A key's PKCS#8 from Sun's key protector: salt, XORed key, SHA-1 check.
fn recover_key(protected: &[u8], password: &[u8]) -> Result<Vec<u8>, String> {
    let (oid, encrypted) = encrypted_private_key_info(protected)?;
    if oid != KEY_PROTECTOR {
        return Err(format!(
            "a JKS key protected with {oid}, not Sun's key protector"
        ));
    }
    if encrypted.len() < 40 {
        return Err("a JKS key too short to hold its salt and check".into());
    }
    let (salt, rest) = encrypted.split_at(20);
    let (xored, check) = rest.split_at(rest.len() - 20);
    let key = xor_keystream(xored, salt, password);
    let mut md = Sha1::new();
    md.update(password);
    md.update(&key);
    if md.finalize().as_slice() != check {
        return Err("cannot recover a JKS key with the store's password".into());
    }
    Ok(key)
}

/// The key protector's cipher (its own inverse): XOR with a keystream of SHA-1 blocks, each of
/// the password and the block before, the first after the salt.
fn xor_keystream(data: &[u8], salt: &[u8], password: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut digest = salt.to_vec();
    for block in data.chunks(20) {
        let mut md = Sha1::new();
        md.update(password);
        md.update(&digest);
        digest = md.finalize().to_vec();
        out.extend(block.iter().zip(&digest).map(|(b, k)| b ^ k));
    }
    out
}

/// `EncryptedPrivateKeyInfo ::= SEQUENCE { SEQUENCE { OID, params }, OCTET STRING }`.
fn encrypted_private_key_info(der: &[u8]) -> Result<(String, &[u8]), String> {
    let bad = |why: &str| format!("bad JKS key: {why}");
    let (_, info) = parse_der(der).map_err(|e| bad(&e.to_string()))?;
    let fields = info.as_sequence().map_err(|_| bad("not a sequence"))?;
    let [algorithm, data, ..] = fields.as_slice() else {
        return Err(bad("too few fields"));
    };
    let algorithm = algorithm.as_sequence().map_err(|_| bad("no algorithm"))?;
    let oid = algorithm
        .first()
        .and_then(|o| o.as_oid().ok())
        .ok_or_else(|| bad("no algorithm id"))?;
    let BerObjectContent::OctetString(encrypted) = data.content else {
        return Err(bad("no encrypted data"));
    };
    Ok((oid.to_id_string(), encrypted))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or("the JKS store ends early")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Java's `writeUTF`: a u16 length, then (modified) UTF-8.
    fn utf(&mut self) -> Result<&'a [u8], String> {
        let b = self.take(2)?;
        let len = u16::from_be_bytes([b[0], b[1]]) as usize;
        self.take(len)
    }

    fn sized(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn certificate(&mut self, version: u32) -> Result<CertificateDer<'static>, String> {
        if version == 2 {
            let kind = self.utf()?;
            if kind != b"X.509" {
                let kind = String::from_utf8_lossy(kind);
                return Err(format!("a JKS certificate of type {kind}, not X.509"));
            }
        }
        Ok(CertificateDer::from(self.sized()?.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(p: &str) -> Vec<u8> {
        p.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    /// Protects `key` as Sun's key protector does, with a fixed salt.
    fn protect(key: &[u8], password: &[u8]) -> Vec<u8> {
        let salt = [7u8; 20];
        let mut out = salt.to_vec();
        out.extend(xor_keystream(key, &salt, password));
        let mut md = Sha1::new();
        md.update(password);
        md.update(key);
        out.extend_from_slice(&md.finalize());
        // EncryptedPrivateKeyInfo { { OID 1.3.6.1.4.1.42.2.17.1.1, NULL }, OCTET STRING }
        let oid = [
            0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x11, 0x01, 0x01,
        ];
        let mut algorithm = vec![0x30, (oid.len() + 2) as u8];
        algorithm.extend_from_slice(&oid);
        algorithm.extend_from_slice(&[0x05, 0x00]);
        let mut data = vec![0x04, out.len() as u8];
        data.extend_from_slice(&out);
        let mut info = vec![0x30, (algorithm.len() + data.len()) as u8];
        info.extend(algorithm);
        info.extend(data);
        info
    }

    fn store(pw: &str, key: &[u8], cert: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        let utf = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u16).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        let sized = |b: &mut Vec<u8>, s: &[u8]| {
            b.extend_from_slice(&(s.len() as u32).to_be_bytes());
            b.extend_from_slice(s);
        };
        b.extend_from_slice(&1u32.to_be_bytes());
        utf(&mut b, "server");
        b.extend_from_slice(&0i64.to_be_bytes());
        sized(&mut b, &protect(key, &password(pw)));
        b.extend_from_slice(&1u32.to_be_bytes());
        utf(&mut b, "X.509");
        sized(&mut b, cert);
        b.extend_from_slice(&2u32.to_be_bytes());
        utf(&mut b, "ca");
        b.extend_from_slice(&0i64.to_be_bytes());
        utf(&mut b, "X.509");
        sized(&mut b, b"ca-der");
        let mut md = Sha1::new();
        md.update(password(pw));
        md.update(b"Mighty Aphrodite");
        md.update(&b);
        b.extend_from_slice(&md.finalize());
        b
    }

    #[test]
    fn keys_chains_and_trusted_certificates() {
        let key = b"a PKCS#8 key longer than one SHA-1 block of twenty bytes";
        let bytes = store("changeit", key, b"cert-der");
        assert!(is_jks(&bytes));
        let jks = read(&bytes, "changeit").unwrap();
        assert_eq!(jks.keys.len(), 1);
        assert_eq!(jks.keys[0].0, key);
        assert_eq!(jks.keys[0].1[0].as_ref(), b"cert-der");
        assert_eq!(jks.trusted[0].as_ref(), b"ca-der");
    }

    #[test]
    fn wrong_passwords_and_damage_are_refused_without_panicking() {
        let bytes = store("changeit", b"key", b"cert");
        assert!(read(&bytes, "guess").unwrap_err().contains("password"));
        for cut in 0..bytes.len() {
            assert!(read(&bytes[..cut], "changeit").is_err());
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert!(read(&flipped, "changeit").is_err());
    }
}
