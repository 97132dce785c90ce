//! Who a client is, beyond `digest` and `ip`: SASL as a JAAS file's server section sets it up
//! (DIGEST-MD5 users, or Kerberos through GSSAPI), and the settings that make authentication
//! required (`enforce.auth.*`, `sessionRequireClientSASLAuth`).
//!
//! The core stays pure: a client's SASL token becomes [`crate::core::Effect::Sasl`], the driver
//! runs the step here ([`SaslServers`]) and hands the outcome back as an input, which the core
//! answers in the connection's order and turns into a `sasl` identity.

pub mod digest_md5;
pub mod gssapi;
pub mod jaas;
mod login;
mod servers;

pub use login::ServerLogin;
pub use servers::{SaslOutcome, SaslRun, SaslServers};

use crate::config::{bad, parse_bool, ConfigError};
use std::path::PathBuf;
use std::sync::Arc;

/// ZooKeeper's SASL provider, the one `authProvider.N` must name for `sasl` ACLs.
const SASL_PROVIDER: &str = "org.apache.zookeeper.server.auth.SASLAuthenticationProvider";
/// Providers that ZooKeeper registers itself; naming them again changes nothing.
const BUILT_IN_PROVIDERS: &[&str] = &[
    "org.apache.zookeeper.server.auth.DigestAuthenticationProvider",
    "org.apache.zookeeper.server.auth.IPAuthenticationProvider",
    // The x509 scheme comes with TLS (see `tls`).
    "org.apache.zookeeper.server.auth.X509AuthenticationProvider",
];

/// The authentication settings, with their ZooKeeper names (`zookeeper.` dropped).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `authProvider.N` names the SASL provider.
    pub sasl_provider: bool,
    /// `java.security.auth.login.config`: the JAAS file.
    pub jaas_file: Option<PathBuf>,
    /// The JAAS section the server logs in with (`sasl.serverconfig`, "Server").
    pub jaas_section: Option<String>,
    /// How clients log in by SASL, from the JAAS file's server section (read at load).
    pub sasl: Option<Arc<ServerLogin>>,
    /// `java.security.krb5.conf`: the Kerberos configuration (MIT's `KRB5_CONFIG`).
    pub krb5_conf: Option<PathBuf>,
    /// `superUser` (and `superUser.*`): the SASL identities that are also the super user.
    pub super_users: Vec<String>,
    /// `SASLAuthenticationProvider.superPassword`: the password of the SASL user `super`.
    pub super_password: Option<String>,
    /// `kerberos.removeHostFromPrincipal` and `kerberos.removeRealmFromPrincipal`.
    pub remove_host: bool,
    pub remove_realm: bool,
    /// The schemes a session must have authenticated with before any request but auth is
    /// answered (`enforce.auth.enabled` + `enforce.auth.schemes`, or
    /// `sessionRequireClientSASLAuth`); empty when not enforced.
    pub required_schemes: Vec<String>,
    /// `allowSaslFailedClients`: a client whose SASL fails keeps its connection (unless SASL is
    /// required).
    pub allow_sasl_failed: bool,
    enforce_enabled: bool,
    enforce_schemes: Vec<String>,
    require_client_sasl: bool,
}

/// The settings [`AuthConfig::set`] takes, as zoo.cfg keys or JVM properties.
pub fn is_auth_key(key: &str) -> bool {
    let key = key.strip_prefix("zookeeper.").unwrap_or(key);
    key.starts_with("authProvider.")
        || key.starts_with("superUser.")
        || key.starts_with("quorum.auth.")
        || matches!(
            key,
            "java.security.auth.login.config"
                | "java.security.krb5.conf"
                | "sasl.serverconfig"
                | "superUser"
                | "SASLAuthenticationProvider.superPassword"
                | "kerberos.removeHostFromPrincipal"
                | "kerberos.removeRealmFromPrincipal"
                | "sessionRequireClientSASLAuth"
                | "enforce.auth.enabled"
                | "enforce.auth.schemes"
                | "allowSaslFailedClients"
        )
}

impl AuthConfig {
    /// Takes one setting (see [`is_auth_key`]).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let name = key.strip_prefix("zookeeper.").unwrap_or(key);
        match name {
            n if n.starts_with("authProvider.") => match value {
                SASL_PROVIDER => self.sasl_provider = true,
                v if BUILT_IN_PROVIDERS.contains(&v) => {}
                _ => {
                    return Err(bad(
                        key,
                        value,
                        "Corral knows ZooKeeper's SASL provider only",
                    ))
                }
            },
            "java.security.auth.login.config" => self.jaas_file = Some(PathBuf::from(value)),
            "java.security.krb5.conf" => self.krb5_conf = Some(PathBuf::from(value)),
            "sasl.serverconfig" => self.jaas_section = Some(value.to_owned()),
            n if n == "superUser" || n.starts_with("superUser.") => {
                self.super_users.push(value.to_owned())
            }
            "SASLAuthenticationProvider.superPassword" => {
                self.super_password = Some(value.to_owned())
            }
            "kerberos.removeHostFromPrincipal" => self.remove_host = parse_bool(key, value)?,
            "kerberos.removeRealmFromPrincipal" => self.remove_realm = parse_bool(key, value)?,
            "sessionRequireClientSASLAuth" => self.require_client_sasl = parse_bool(key, value)?,
            "enforce.auth.enabled" => self.enforce_enabled = parse_bool(key, value)?,
            "enforce.auth.schemes" => {
                self.enforce_schemes = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            }
            "allowSaslFailedClients" => self.allow_sasl_failed = parse_bool(key, value)?,
            // Members authenticate each other by TLS (sslQuorum); running without the SASL an
            // operator asked for would be a silent hole, so it is refused.
            "quorum.auth.enableSasl"
            | "quorum.auth.learnerRequireSasl"
            | "quorum.auth.serverRequireSasl" => {
                if parse_bool(key, value)? {
                    return Err(bad(
                        key,
                        value,
                        "SASL between members is not supported yet; use sslQuorum (TLS with \
                         certificates) to authenticate members",
                    ));
                }
            }
            n if n.starts_with("quorum.auth.") => {}
            _ => unreachable!("is_auth_key admits {key}"),
        }
        Ok(())
    }

    /// Checks the settings together and reads the JAAS file. Schemes without
    /// `enforce.auth.enabled` enforce nothing; `sessionRequireClientSASLAuth` enforces `sasl`.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        self.required_schemes.clear();
        if self.enforce_enabled {
            if self.enforce_schemes.is_empty() {
                return Err(bad(
                    "enforce.auth.enabled",
                    "true",
                    "enforce.auth.schemes must name the schemes a session must authenticate with",
                ));
            }
            self.required_schemes = self.enforce_schemes.clone();
        }
        if self.require_client_sasl && !self.required_schemes.iter().any(|s| s == "sasl") {
            self.required_schemes.push("sasl".into());
        }
        for scheme in &self.required_schemes {
            let known = match scheme.as_str() {
                "digest" | "ip" => true,
                "sasl" => self.sasl_provider,
                _ => false,
            };
            if !known {
                return Err(bad(
                    "enforce.auth.schemes",
                    scheme,
                    "no authentication provider for this scheme (authProvider.N)",
                ));
            }
        }
        if let Some(path) = &self.jaas_file {
            let section = self.jaas_section.as_deref().unwrap_or("Server");
            self.sasl = login::read_server_section(path, section)?.map(Arc::new);
        }
        Ok(())
    }

    /// Whether a session with these identities may make requests (besides auth and SASL).
    pub fn admits(&self, schemes: impl IntoIterator<Item = impl AsRef<str>>) -> bool {
        if self.required_schemes.is_empty() {
            return true;
        }
        schemes
            .into_iter()
            .any(|s| s.as_ref() == "super" || self.required_schemes.iter().any(|r| r == s.as_ref()))
    }

    /// Whether SASL is required, so a failed SASL client is told so
    /// (SessionClosedRequireSaslAuth) rather than AuthFailed.
    pub fn sasl_required(&self) -> bool {
        self.required_schemes.iter().any(|s| s == "sasl")
    }

    /// The `sasl` id of an authenticated principal, as ZooKeeper's callback handler names it:
    /// `name[/host][@REALM]`, host and realm kept unless removed by the kerberos settings.
    pub fn sasl_id(&self, principal: &str) -> String {
        let (rest, realm) = match principal.rsplit_once('@') {
            Some((r, realm)) => (r, Some(realm)),
            None => (principal, None),
        };
        let (name, host) = match rest.split_once('/') {
            Some((n, h)) => (n, Some(h)),
            None => (rest, None),
        };
        let mut id = name.to_owned();
        if let Some(host) = host.filter(|_| !self.remove_host) {
            id.push('/');
            id.push_str(host);
        }
        if let Some(realm) = realm.filter(|_| !self.remove_realm) {
            id.push('@');
            id.push_str(realm);
        }
        id
    }

    /// A user's SASL password: the JAAS file's, or `superPassword` for `super`.
    pub(crate) fn password(&self, user: &str) -> Option<String> {
        if user == "super" {
            if let Some(p) = &self.super_password {
                return Some(p.clone());
            }
        }
        match self.sasl.as_deref()? {
            ServerLogin::Digest { passwords } => passwords.get(user).cloned(),
            ServerLogin::Kerberos { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        let mut c = AuthConfig::default();
        for (k, v) in pairs {
            c.set(k, v)?;
        }
        c.finish()?;
        Ok(c)
    }

    #[test]
    fn principals_keep_host_and_realm_unless_told() {
        let keep = AuthConfig::default();
        assert_eq!(keep.sasl_id("alice"), "alice");
        assert_eq!(
            keep.sasl_id("kafka/broker1@EXAMPLE.COM"),
            "kafka/broker1@EXAMPLE.COM"
        );
        let c = config(&[
            ("kerberos.removeHostFromPrincipal", "true"),
            ("zookeeper.kerberos.removeRealmFromPrincipal", "true"),
        ])
        .unwrap();
        assert_eq!(c.sasl_id("kafka/broker1@EXAMPLE.COM"), "kafka");
        assert_eq!(c.sasl_id("alice@EXAMPLE.COM"), "alice");
    }

    #[test]
    fn enforcement_needs_known_schemes() {
        let sasl = ("authProvider.1", SASL_PROVIDER);
        let on = ("enforce.auth.enabled", "true");
        let c = config(&[sasl, on, ("enforce.auth.schemes", "sasl,digest")]).unwrap();
        assert_eq!(c.required_schemes, ["sasl", "digest"]);
        assert!(c.admits(["ip", "digest"]));
        assert!(!c.admits(["ip"]));
        assert!(c.admits(["super"]));
        // Schemes without enforce.auth.enabled enforce nothing.
        let c = config(&[sasl, ("enforce.auth.schemes", "sasl")]).unwrap();
        assert!(c.admits(["ip"]));
        // sessionRequireClientSASLAuth is enforce.auth for sasl.
        let c = config(&[sasl, ("zookeeper.sessionRequireClientSASLAuth", "true")]).unwrap();
        assert!(c.sasl_required() && !c.admits(["ip"]));
        assert!(
            config(&[on, ("enforce.auth.schemes", "sasl")]).is_err(),
            "no provider"
        );
        assert!(config(&[sasl, on]).is_err(), "no schemes");
        assert!(config(&[("authProvider.2", "com.example.Mine")]).is_err());
        assert!(config(&[("quorum.auth.enableSasl", "true")]).is_err());
        assert!(config(&[("quorum.auth.enableSasl", "false")]).is_ok());
    }

    #[test]
    fn reads_the_users_of_the_server_section() {
        let dir = std::env::temp_dir().join(format!("corral-jaas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jaas.conf");
        std::fs::write(
            &path,
            format!("Server {{ {} required user_alice=\"a\" user_bob=\"b\"; }};\nQuorum {{ x required; }};", login::DIGEST_LOGIN_MODULE),
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = config(&[("java.security.auth.login.config", file)]).unwrap();
        assert_eq!(c.password("alice").as_deref(), Some("a"));
        assert_eq!(c.password("carol"), None);
        let c = config(&[
            ("java.security.auth.login.config", file),
            ("zookeeper.sasl.serverconfig", "Quorum"),
        ]);
        assert!(c.unwrap_err().to_string().contains("not supported"));
        let c = config(&[("java.security.auth.login.config", "/nonexistent/jaas.conf")]);
        assert!(c
            .unwrap_err()
            .to_string()
            .contains("cannot read the JAAS file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
