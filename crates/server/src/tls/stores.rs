//! Key and trust stores as ZooKeeper reads them: PEM (a key and its certificate chain in one
//! file; the key PKCS#8, encrypted when the store has a password) and PKCS#12. And the
//! certificate subject as Java writes it (RFC 2253), which is the `x509` id.

use super::config::{Store, StoreType};
use base64::Engine;
use pkcs8::der::Decode;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

type Chain = Vec<CertificateDer<'static>>;

/// The server's certificate chain and private key.
pub fn key_store(store: &Store, prefix: &str) -> Result<(Chain, PrivateKeyDer<'static>), String> {
    let name = format!("{prefix}.keyStore");
    let (path, bytes, password) = read(store, &name)?;
    let (chain, key) = match store.store_type(&name).map_err(|e| e.to_string())? {
        StoreType::Pem => pem_key_store(&bytes, &password),
        // As Java's keystore.type.compat: either binary type is read whatever it is called.
        StoreType::Pkcs12 | StoreType::Jks if super::jks::is_jks(&bytes) => {
            jks_key_store(&bytes, &password)
        }
        StoreType::Pkcs12 | StoreType::Jks => pkcs12_key_store(&bytes, &password),
    }
    .map_err(|e| format!("{name} {path}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{name} {path}: no certificate"));
    }
    Ok((chain, key))
}

/// The certificates client certificates are checked against.
pub fn trust_store(store: &Store, prefix: &str) -> Result<RootCertStore, String> {
    let name = format!("{prefix}.trustStore");
    let (path, bytes, password) = read(store, &name)?;
    let certs = match store.store_type(&name).map_err(|e| e.to_string())? {
        StoreType::Pem => pem_certificates(&bytes),
        StoreType::Pkcs12 | StoreType::Jks if super::jks::is_jks(&bytes) => {
            jks_certificates(&bytes, &password)
        }
        StoreType::Pkcs12 | StoreType::Jks => pkcs12_certificates(&bytes, &password),
    }
    .map_err(|e| format!("{name} {path}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| format!("{name} {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{name} {path}: no certificate"));
    }
    Ok(roots)
}

fn read(store: &Store, key: &str) -> Result<(String, Vec<u8>, String), String> {
    let path = store
        .location
        .as_ref()
        .ok_or_else(|| format!("{key}.location is not set"))?;
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| format!("{key} {shown}: {e}"))?;
    let password = store.password(key).map_err(|e| e.to_string())?;
    Ok((shown, bytes, password))
}

fn pem_certificates(bytes: &[u8]) -> Result<Chain, String> {
    CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))
}

fn pem_key_store(bytes: &[u8], password: &str) -> Result<(Chain, PrivateKeyDer<'static>), String> {
    let chain = pem_certificates(bytes)?;
    let text = String::from_utf8_lossy(bytes);
    if let Some(der) = pem_block(&text, "ENCRYPTED PRIVATE KEY")? {
        if password.is_empty() {
            return Err("the key is encrypted: set the key store's password".into());
        }
        let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der)
            .map_err(|e| format!("bad encrypted key: {e}"))?;
        let plain = info
            .decrypt(password)
            .map_err(|e| format!("cannot decrypt the key with the key store's password: {e}"))?;
        let key = PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec());
        return Ok((chain, PrivateKeyDer::Pkcs8(key)));
    }
    let key = PrivateKeyDer::from_pem_slice(bytes)
        .map_err(|e| format!("no private key (PKCS#8 PEM expected): {e}"))?;
    Ok((chain, key))
}

/// The DER of the first PEM block with this label.
fn pem_block(text: &str, label: &str) -> Result<Option<Vec<u8>>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        return Ok(None);
    };
    let body = &text[start + begin.len()..];
    let stop = body
        .find(&end)
        .ok_or_else(|| format!("{label} block not closed"))?;
    let b64: String = body[..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(Some)
        .map_err(|e| format!("bad base64 in {label}: {e}"))
}

fn pkcs12(bytes: &[u8], password: &str) -> Result<p12_keystore::KeyStore, String> {
    p12_keystore::KeyStore::from_pkcs12(bytes, password)
        .map_err(|e| format!("cannot open the PKCS#12 store (wrong password?): {e}"))
}

fn pkcs12_key_store(
    bytes: &[u8],
    password: &str,
) -> Result<(Chain, PrivateKeyDer<'static>), String> {
    let store = pkcs12(bytes, password)?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or("the PKCS#12 store has no private key")?;
    let certs = chain
        .chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().to_vec()));
    Ok((certs, key))
}

fn jks_key_store(bytes: &[u8], password: &str) -> Result<(Chain, PrivateKeyDer<'static>), String> {
    let store = super::jks::read(bytes, password)?;
    let (key, chain) = store
        .keys
        .into_iter()
        .next()
        .ok_or("the JKS store has no private key")?;
    Ok((chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))))
}

/// A JKS trust store's certificates: its trusted entries and its keys' own certificates, as
/// Java's trust manager takes them.
fn jks_certificates(bytes: &[u8], password: &str) -> Result<Chain, String> {
    let store = super::jks::read(bytes, password)?;
    let own = store
        .keys
        .into_iter()
        .filter_map(|(_, chain)| chain.into_iter().next());
    Ok(store.trusted.into_iter().chain(own).collect())
}

fn pkcs12_certificates(bytes: &[u8], password: &str) -> Result<Chain, String> {
    let store = pkcs12(bytes, password)?;
    let mut certs = Vec::new();
    for (_, entry) in store.entries() {
        match entry {
            p12_keystore::KeyStoreEntry::Certificate(c) => {
                certs.push(CertificateDer::from(c.as_der().to_vec()))
            }
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => certs.extend(
                chain
                    .chain()
                    .iter()
                    .map(|c| CertificateDer::from(c.as_der().to_vec())),
            ),
        }
    }
    Ok(certs)
}

/// A certificate's subject as Java's `X500Principal.getName()` writes it (RFC 2253): the last
/// RDN first, `CN=alice,O=Corral`; attribute types without a short name as dotted OIDs with
/// their value in `#hex` DER.
pub fn subject_rfc2253(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let rdns: Vec<String> = cert
        .subject()
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    match (short_name(&oid), attr.as_str()) {
                        (Some(name), Ok(value)) => format!("{name}={}", escape(value)),
                        _ => format!("{oid}=#{}", hex_der(attr.attr_value())),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Ok(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// What a certificate's subject alternative names say of where it may be used: whether it
/// names `ip`, and the DNS names it gives.
pub fn alt_names(
    cert: &CertificateDer<'_>,
    ip: std::net::IpAddr,
) -> Result<(bool, Vec<String>), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = X509Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let octets = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let (mut names_ip, mut dns) = (false, Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::IPAddress(bytes) => names_ip |= *bytes == octets.as_slice(),
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    Ok((names_ip, dns))
}

/// The attribute types RFC 2253 (and Java) write by name.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 escaping: `,+"\<>;` anywhere, `#` or a space first, a space last.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An attribute value as DER bytes in hex (tag, length, content), for `OID=#...`.
fn hex_der(value: &x509_parser::der_parser::asn1_rs::Any<'_>) -> String {
    use x509_parser::der_parser::asn1_rs::ToDer;
    let der = value.to_der_vec().unwrap_or_default();
    der.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2253_escapes() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(escape("Smith, Jane"), "Smith\\, Jane");
        assert_eq!(escape("#1 "), "\\#1\\ ");
        assert_eq!(escape("a+b=c"), "a\\+b=c");
    }

    #[test]
    fn pem_blocks_and_garbage() {
        let text = "junk\n-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            pem_block(text, "ENCRYPTED PRIVATE KEY").unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(pem_block(text, "CERTIFICATE").unwrap(), None);
        assert!(pem_block("-----BEGIN X-----\nabc", "X").is_err());
        assert!(pem_key_store(b"not a pem", "").is_err());
        assert!(pkcs12_certificates(b"not a p12", "x")
            .unwrap_err()
            .contains("PKCS#12"));
    }
}
