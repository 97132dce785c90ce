//! The TLS settings of the client port, with ZooKeeper's names (`zookeeper.` dropped): what
//! `secureClientPort`, `client.portUnification` and the `ssl.*` keys ask for.

use crate::config::{bad, parse_bool, ConfigError};
use std::net::IpAddr;
use std::path::PathBuf;

/// `ssl.clientAuth`: whether a client must show a certificate. ZooKeeper's default is `need`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    Need,
    Want,
    None,
}

/// The file type of a key or trust store (`ssl.*Store.type`, or the file's suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreType {
    Pem,
    Pkcs12,
    /// Java's own format (see `jks`).
    Jks,
}

/// A key store or trust store: where, with which password, of which type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    pub location: Option<PathBuf>,
    pub password: String,
    pub password_path: Option<PathBuf>,
    pub kind: Option<String>,
}

impl Store {
    /// The store's type: as configured, else from the file name as ZooKeeper infers it
    /// (`.pem`, `.p12`, `.jks`); BCFKS, Bouncy Castle's format, is not read.
    pub fn store_type(&self, key: &str) -> Result<StoreType, ConfigError> {
        let location = self.location.as_ref().map(|p| p.display().to_string());
        let location = location.as_deref().unwrap_or("");
        let named = match &self.kind {
            Some(k) => k.to_ascii_uppercase(),
            None if location.ends_with(".pem") => "PEM".into(),
            None if location.ends_with(".p12") => "PKCS12".into(),
            None if location.ends_with(".jks") => "JKS".into(),
            None if location.ends_with(".bcfks") => "BCFKS".into(),
            None => return Err(bad(
                &format!("{key}.type"),
                location,
                "cannot tell the store's type from its file name (.pem, .p12, .jks): set the type",
            )),
        };
        match named.as_str() {
            "PEM" => Ok(StoreType::Pem),
            "PKCS12" => Ok(StoreType::Pkcs12),
            "JKS" => Ok(StoreType::Jks),
            "BCFKS" => Err(bad(
                &format!("{key}.type"),
                &named,
                "Corral reads PEM, PKCS12 and JKS stores; convert with \
                 `keytool -importkeystore -deststoretype pkcs12`",
            )),
            other => Err(bad(
                &format!("{key}.type"),
                other,
                "not a store type (PEM, PKCS12, JKS)",
            )),
        }
    }

    /// The password: from `passwordPath` when given (it wins, as in ZooKeeper), else
    /// `password`, else empty.
    pub fn password(&self, key: &str) -> Result<String, ConfigError> {
        match &self.password_path {
            Some(path) => std::fs::read_to_string(path)
                .map(|p| p.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| {
                    let shown = path.display().to_string();
                    bad(&format!("{key}.passwordPath"), &shown, &e.to_string())
                }),
            None => Ok(self.password.clone()),
        }
    }
}

/// One side's stores and choices: the client port's (`ssl.*`) or the members' (`ssl.quorum.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSide {
    pub key_store: Store,
    pub trust_store: Store,
    pub client_auth: ClientAuth,
    /// `enabledProtocols` (or `protocol`): TLSv1.2 and TLSv1.3 by default.
    pub protocols: Vec<String>,
    /// `ciphersuites`, by their IANA (Java) names; empty for rustls' defaults.
    pub ciphersuites: Vec<String>,
    /// `hostnameVerification`: a member checks that the member it dials is named in its
    /// certificate (the client port never checks clients' names, as in ZooKeeper).
    pub hostname_verification: bool,
    /// The key prefix, for messages: `ssl` or `ssl.quorum`.
    pub prefix: &'static str,
}

impl TlsSide {
    fn new(prefix: &'static str) -> TlsSide {
        TlsSide {
            key_store: Store::default(),
            trust_store: Store::default(),
            client_auth: ClientAuth::Need,
            protocols: vec!["TLSv1.2".into(), "TLSv1.3".into()],
            ciphersuites: Vec::new(),
            hostname_verification: true,
            prefix,
        }
    }

    /// Takes `name` (the key after `ssl.` or `ssl.quorum.`); false if it is not a store key.
    fn set(&mut self, key: &str, name: &str, value: &str) -> Result<bool, ConfigError> {
        match name {
            "keyStore.location" => self.key_store.location = Some(value.into()),
            "keyStore.password" => self.key_store.password = value.into(),
            "keyStore.passwordPath" => self.key_store.password_path = Some(value.into()),
            "keyStore.type" => self.key_store.kind = Some(value.into()),
            "trustStore.location" => self.trust_store.location = Some(value.into()),
            "trustStore.password" => self.trust_store.password = value.into(),
            "trustStore.passwordPath" => self.trust_store.password_path = Some(value.into()),
            "trustStore.type" => self.trust_store.kind = Some(value.into()),
            "clientAuth" => {
                self.client_auth = match value.to_ascii_lowercase().as_str() {
                    "need" | "" => ClientAuth::Need,
                    "want" => ClientAuth::Want,
                    "none" => ClientAuth::None,
                    _ => return Err(bad(key, value, "expected need, want or none")),
                }
            }
            "protocol" => self.protocols = vec![value.to_owned()],
            "enabledProtocols" => self.protocols = list(value),
            "ciphersuites" => self.ciphersuites = list(value),
            "hostnameVerification" => self.hostname_verification = parse_bool(key, value)?,
            "allowReverseDnsLookup" => {
                parse_bool(key, value)?;
            }
            "crl" | "ocsp" => {
                if parse_bool(key, value)? {
                    return Err(bad(
                        key,
                        value,
                        "Corral does not check revocation (CRL, OCSP)",
                    ));
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks that the stores a TLS endpoint needs are named and readable as their type.
    fn check(&self, needs_trust: bool) -> Result<(), ConfigError> {
        let key_store = format!("{}.keyStore", self.prefix);
        let trust_store = format!("{}.trustStore", self.prefix);
        if self.key_store.location.is_none() {
            let why = "TLS needs a key store";
            return Err(bad(&format!("{key_store}.location"), "", why));
        }
        if needs_trust && self.trust_store.location.is_none() {
            let why = "verifying certificates needs a trust store (or set clientAuth=none)";
            return Err(bad(&format!("{trust_store}.location"), "", why));
        }
        self.key_store.store_type(&key_store)?;
        if self.trust_store.location.is_some() {
            self.trust_store.store_type(&trust_store)?;
        }
        Ok(())
    }
}

/// What TLS is configured as: on the client ports, and between members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `secureClientPort`: a port that speaks TLS only.
    pub secure_port: Option<u16>,
    /// `secureClientPortAddress` (else the wildcard address, as ZooKeeper binds it).
    pub secure_address: Option<IpAddr>,
    /// `client.portUnification`: the plain `clientPort` takes TLS clients as well.
    pub port_unification: bool,
    /// The client port's stores (`ssl.*`).
    pub client: TlsSide,
    /// `sslQuorum`: members talk over TLS, with `ssl.quorum.*`.
    pub ssl_quorum: bool,
    pub quorum: TlsSide,
    /// `X509AuthenticationProvider.superUser`: the certificate subject that is the super user.
    pub x509_super_user: Option<String>,
    /// TLS handshakes in progress at once (`netty.server.outstandingHandshake.limit`);
    /// connections past it are closed and counted.
    pub handshake_limit: usize,
    /// How long a client may take over its handshake
    /// (`ssl.handshakeDetectionTimeoutMillis`, 5 s).
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            secure_port: None,
            secure_address: None,
            port_unification: false,
            client: TlsSide::new("ssl"),
            ssl_quorum: false,
            quorum: TlsSide::new("ssl.quorum"),
            x509_super_user: None,
            handshake_limit: 1000,
            handshake_timeout_ms: 5000,
        }
    }
}

/// The keys of one side, after `ssl.` or `ssl.quorum.`.
const SIDE_KEYS: &[&str] = &[
    "keyStore.location",
    "keyStore.password",
    "keyStore.passwordPath",
    "keyStore.type",
    "trustStore.location",
    "trustStore.password",
    "trustStore.passwordPath",
    "trustStore.type",
    "clientAuth",
    "protocol",
    "enabledProtocols",
    "ciphersuites",
    "hostnameVerification",
    "allowReverseDnsLookup",
    "crl",
    "ocsp",
];

/// Whether [`TlsConfig::set`] takes this zoo.cfg key or JVM property. Other `ssl.*` keys are
/// reported as unknown, as any key Corral does not know.
pub fn is_tls_key(key: &str) -> bool {
    let key = key.strip_prefix("zookeeper.").unwrap_or(key);
    let side = |rest: &str| SIDE_KEYS.contains(&rest);
    matches!(
        key,
        "secureClientPort"
            | "secureClientPortAddress"
            | "client.portUnification"
            | "client.certReload"
            | "serverCnxnFactory"
            | "X509AuthenticationProvider.superUser"
            | "netty.server.outstandingHandshake.limit"
            | "sslQuorum"
            | "portUnification"
            | "sslQuorumReloadCertFiles"
            | "ssl.authProvider"
            | "ssl.handshakeDetectionTimeoutMillis"
    ) || key.strip_prefix("ssl.quorum.").is_some_and(side)
        || key.strip_prefix("ssl.").is_some_and(side)
}

impl TlsConfig {
    /// Takes one setting (see [`is_tls_key`]).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let name = key.strip_prefix("zookeeper.").unwrap_or(key);
        match name {
            "secureClientPort" => {
                self.secure_port = Some(
                    value
                        .parse()
                        .map_err(|_| bad(key, value, "not a port number"))?,
                )
            }
            "secureClientPortAddress" => {
                self.secure_address = Some(
                    value
                        .parse()
                        .map_err(|_| bad(key, value, "not an IP address"))?,
                )
            }
            "client.portUnification" => self.port_unification = parse_bool(key, value)?,
            // Corral always reloads changed certificate files; ZooKeeper's Netty factory is
            // what its TLS needs, and Corral has one kind of connection.
            "client.certReload" | "serverCnxnFactory" => {}
            "X509AuthenticationProvider.superUser" => self.x509_super_user = Some(value.into()),
            "netty.server.outstandingHandshake.limit" => {
                // ZooKeeper's -1 means no limit; Corral keeps one (see `handshake_limit`).
                let n: i64 = value.parse().map_err(|_| bad(key, value, "not a number"))?;
                if n > 0 {
                    self.handshake_limit = n as usize;
                }
            }
            "ssl.handshakeDetectionTimeoutMillis" => {
                self.handshake_timeout_ms = value
                    .parse()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| bad(key, value, "expected a positive number of ms"))?
            }
            // The authentication provider for TLS is x509, the only one there is.
            "ssl.authProvider" if value == "x509" => {}
            "sslQuorum" => self.ssl_quorum = parse_bool(key, value)?,
            // Members' TLS is all-or-nothing: a member that also took plaintext would let a
            // peer without a certificate in.
            "portUnification" => {
                if parse_bool(key, value)? {
                    return Err(bad(
                        key,
                        value,
                        "Corral's members speak TLS to each other \
                        (sslQuorum) or not at all; there is no mixed mode",
                    ));
                }
            }
            "sslQuorumReloadCertFiles" => {
                parse_bool(key, value)?;
            }
            n if n.starts_with("ssl.quorum.")
                && self.quorum.set(key, &n["ssl.quorum.".len()..], value)? => {}
            n if n.starts_with("ssl.") && self.client.set(key, &n["ssl.".len()..], value)? => {}
            _ => return Err(bad(key, value, "not a TLS setting Corral knows")),
        }
        Ok(())
    }

    /// Whether any port speaks TLS.
    pub fn enabled(&self) -> bool {
        self.secure_port.is_some() || self.port_unification
    }

    /// Checks the settings together.
    pub fn finish(&self) -> Result<(), ConfigError> {
        if self.enabled() {
            self.client
                .check(self.client.client_auth != ClientAuth::None)?;
        }
        if self.ssl_quorum {
            // A member both dials (and checks the other's certificate) and is dialed.
            self.quorum.check(true)?;
        }
        Ok(())
    }
}

/// A comma-separated list, as ZooKeeper splits it (Corral also trims the parts).
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(pairs: &[(&str, &str)]) -> Result<TlsConfig, ConfigError> {
        let mut c = TlsConfig::default();
        for (k, v) in pairs {
            c.set(k, v)?;
        }
        c.finish()?;
        Ok(c)
    }

    #[test]
    fn zookeepers_keys_and_defaults() {
        let c = tls(&[
            ("secureClientPort", "2281"),
            (
                "serverCnxnFactory",
                "org.apache.zookeeper.server.NettyServerCnxnFactory",
            ),
            ("ssl.keyStore.location", "/etc/zk/server.pem"),
            ("zookeeper.ssl.trustStore.location", "/etc/zk/ca.p12"),
            ("ssl.trustStore.password", "changeit"),
            ("ssl.enabledProtocols", "TLSv1.3, TLSv1.2"),
        ])
        .unwrap();
        assert_eq!(c.secure_port, Some(2281));
        assert_eq!(c.client.client_auth, ClientAuth::Need);
        assert_eq!(c.client.protocols, ["TLSv1.3", "TLSv1.2"]);
        assert_eq!(c.client.key_store.store_type("k").unwrap(), StoreType::Pem);
        assert_eq!(
            c.client.trust_store.store_type("t").unwrap(),
            StoreType::Pkcs12
        );
        assert!(!tls(&[]).unwrap().enabled());
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let port = ("secureClientPort", "2281");
        let key = ("ssl.keyStore.location", "/k.pem");
        let err = |pairs: &[(&str, &str)]| tls(pairs).unwrap_err().to_string();
        assert!(err(&[port]).contains("ssl.keyStore.location"));
        assert!(err(&[port, key]).contains("ssl.trustStore.location"));
        assert!(tls(&[port, key, ("ssl.clientAuth", "none")]).is_ok());
        assert!(err(&[("ssl.clientAuth", "maybe")]).contains("need, want or none"));
        let bcfks = ("ssl.trustStore.location", "/t.bcfks");
        assert!(err(&[port, key, bcfks]).contains("keytool"));
        let odd = ("ssl.trustStore.location", "/t.store");
        assert!(err(&[port, key, odd]).contains("set the type"));
        assert!(err(&[("sslQuorum", "true")]).contains("ssl.quorum.keyStore.location"));
        let quorum = [
            ("sslQuorum", "true"),
            ("ssl.quorum.keyStore.location", "/q.pem"),
            ("ssl.quorum.trustStore.location", "/ca.pem"),
            ("ssl.quorum.hostnameVerification", "false"),
        ];
        let c = tls(&quorum).unwrap();
        assert!(c.ssl_quorum && !c.quorum.hostname_verification && !c.enabled());
        assert!(err(&[("portUnification", "true")]).contains("no mixed mode"));
        assert!(err(&[("ssl.ocsp", "true")]).contains("revocation"));
        assert!(!is_tls_key("ssl.nonsense") && !is_tls_key("zookeeper.ssl.context.supplier.class"));
        assert!(is_tls_key("zookeeper.ssl.quorum.keyStore.location"));
        assert!(err(&[("ssl.authProvider", "custom")]).contains("not a TLS setting"));
    }
}
