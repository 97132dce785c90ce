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
pub mod keytab;
mod login;
pub mod quorum;
mod quorum_net;
mod servers;

pub use login::{LearnerLogin, ServerLogin};
pub use quorum_net::SaslNet;
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
    /// Its `default_realm`: only principals of that realm are shortened.
    pub default_realm: Option<String>,
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
    /// SASL between members (`quorum.auth.*`).
    pub quorum: QuorumAuthConfig,
    enforce_enabled: bool,
    enforce_schemes: Vec<String>,
    require_client_sasl: bool,
}

/// SASL between members (`quorum.auth.*`), with ZooKeeper's names and defaults.
#[derive(Debug, Clone, Default)]
pub struct QuorumAuthConfig {
    /// `quorum.auth.enableSasl`: members may log in to each other.
    pub enabled: bool,
    /// `quorum.auth.learnerRequireSasl`: this member logs in to every member it dials.
    pub learner_require: bool,
    /// `quorum.auth.serverRequireSasl`: this member refuses links that do not log in.
    pub server_require: bool,
    /// `quorum.auth.learner.saslLoginContext` ("QuorumLearner").
    pub learner_context: Option<String>,
    /// `quorum.auth.server.saslLoginContext` ("QuorumServer").
    pub server_context: Option<String>,
    /// `quorum.auth.kerberos.servicePrincipal` ("zkquorum/localhost").
    pub kerberos_service_principal: Option<String>,
    /// `zookeeper.server.realm`: the service principal's realm when it names none (else the
    /// learner's own).
    pub server_realm: Option<String>,
    /// The learner's and server's logins, read from the JAAS file when enabled.
    pub logins: Option<(LearnerLogin, ServerLogin)>,
}

impl QuorumAuthConfig {
    pub fn service_principal(&self) -> &str {
        self.kerberos_service_principal
            .as_deref()
            .unwrap_or("zkquorum/localhost")
    }

    pub fn server_login(&self) -> Option<&ServerLogin> {
        self.logins.as_ref().map(|(_, server)| server)
    }

    pub fn learner_login(&self) -> Option<&LearnerLogin> {
        self.logins.as_ref().map(|(learner, _)| learner)
    }

    /// Takes one `quorum.*` key (`name` without `zookeeper.`).
    fn set(&mut self, name: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        match name {
            "quorum.auth.enableSasl" => self.enabled = parse_bool(key, value)?,
            "quorum.auth.learnerRequireSasl" => self.learner_require = parse_bool(key, value)?,
            "quorum.auth.serverRequireSasl" => self.server_require = parse_bool(key, value)?,
            "quorum.auth.learner.saslLoginContext" => self.learner_context = Some(value.into()),
            "quorum.auth.server.saslLoginContext" => self.server_context = Some(value.into()),
            "quorum.auth.kerberos.servicePrincipal" => {
                self.kerberos_service_principal = Some(value.into())
            }
            // ZooKeeper's threads for member logins; Corral's run on tasks, at most 64 at once.
            "quorum.cnxn.threads.size" => {
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| bad(key, value, "not a number"))?;
            }
            _ => tracing::warn!(key, "unknown quorum.auth key ignored"),
        }
        Ok(())
    }

    /// Checks the settings together, as ZooKeeper's `QuorumPeerConfig` does, and reads the
    /// logins from the JAAS file.
    fn finish(&mut self, jaas: Option<&std::path::Path>) -> Result<(), ConfigError> {
        let refuse = |key: &str, why: &str| Err(bad(key, "true", why));
        if !self.enabled && self.server_require {
            return refuse(
                "quorum.auth.serverRequireSasl",
                "quorum.auth.enableSasl is disabled, so cannot enable quorum.auth.serverRequireSasl",
            );
        }
        if !self.enabled && self.learner_require {
            return refuse(
                "quorum.auth.learnerRequireSasl",
                "quorum.auth.enableSasl is disabled, so cannot enable quorum.auth.learnerRequireSasl",
            );
        }
        if !self.learner_require && self.server_require {
            return refuse(
                "quorum.auth.serverRequireSasl",
                "quorum.auth.learnerRequireSasl is disabled, so cannot enable \
                 quorum.auth.serverRequireSasl",
            );
        }
        if !self.enabled {
            return Ok(());
        }
        let Some(path) = jaas else {
            return refuse(
                "quorum.auth.enableSasl",
                "members log in by SASL with a JAAS file's QuorumServer and QuorumLearner \
                 sections: name it with -Djava.security.auth.login.config",
            );
        };
        let server_section = self.server_context.as_deref().unwrap_or("QuorumServer");
        let server = login::read_server_section(path, server_section)?.ok_or_else(|| {
            bad(
                "quorum.auth.server.saslLoginContext",
                server_section,
                &format!("{} has no such section", path.display()),
            )
        })?;
        let learner_section = self.learner_context.as_deref().unwrap_or("QuorumLearner");
        let learner = login::read_learner_section(path, learner_section)?;
        self.logins = Some((learner, server));
        Ok(())
    }
}

/// The settings [`AuthConfig::set`] takes, as zoo.cfg keys or JVM properties.
pub fn is_auth_key(key: &str) -> bool {
    let key = key.strip_prefix("zookeeper.").unwrap_or(key);
    key.starts_with("authProvider.")
        || key.starts_with("superUser.")
        || key.starts_with("quorum.auth.")
        || key == "quorum.cnxn.threads.size"
        || key == "server.realm"
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
            n if n.starts_with("quorum.") => self.quorum.set(n, key, value)?,
            // The realm of the members' service principal when it names none.
            "server.realm" => self.quorum.server_realm = Some(value.to_owned()),
            _ => unreachable!("is_auth_key admits {key}"),
        }
        Ok(())
    }

    /// Checks the settings together and reads the JAAS file. Schemes without
    /// `enforce.auth.enabled` enforce nothing; `sessionRequireClientSASLAuth` enforces `sasl`.
    pub fn finish(&mut self, x509: bool) -> Result<(), ConfigError> {
        self.quorum.finish(self.jaas_file.as_deref())?;
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
                // Client certificates prove it, when the TLS port asks for them.
                "x509" => x509,
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
        let only_sasl = self.required_schemes.iter().all(|s| s == "sasl");
        if self.sasl_required() && only_sasl && self.sasl.is_none() {
            // No session could ever be admitted.
            return Err(bad(
                "sessionRequireClientSASLAuth",
                "true",
                "SASL is required, but no JAAS server section says how clients log in \
                 (java.security.auth.login.config)",
            ));
        }
        if matches!(self.sasl.as_deref(), Some(ServerLogin::Kerberos { .. })) {
            self.default_realm = default_realm(self.krb5_conf.as_deref());
        }
        Ok(())
    }

    /// The acceptor keytabs the server sections name (clients' `Server`, members'
    /// `QuorumServer`), each once. MIT reads one (`KRB5_KTNAME`): when there are two, the binary
    /// merges them ([`keytab::merge`]).
    pub fn acceptor_keytabs(&self) -> Vec<&std::path::Path> {
        let logins = self
            .sasl
            .as_deref()
            .into_iter()
            .chain(self.quorum.server_login());
        let mut keytabs: Vec<&std::path::Path> = Vec::new();
        for login in logins {
            if let ServerLogin::Kerberos {
                keytab: Some(k), ..
            } = login
            {
                if !keytabs.contains(&k.as_path()) {
                    keytabs.push(k);
                }
            }
        }
        keytabs
    }

    /// Whether a session with these identities may make requests (besides auth and SASL).
    pub fn admits(&self, schemes: impl IntoIterator<Item = impl AsRef<str>>) -> bool {
        if self.required_schemes.is_empty() {
            return true;
        }
        // As ZooKeeper's AuthenticationHelper: only the required schemes count (not `super`).
        schemes
            .into_iter()
            .any(|s| self.required_schemes.iter().any(|r| r == s.as_ref()))
    }

    /// Whether SASL is required, so a failed SASL client is told so
    /// (SessionClosedRequireSaslAuth) rather than AuthFailed.
    pub fn sasl_required(&self) -> bool {
        self.required_schemes.iter().any(|s| s == "sasl")
    }

    /// The `sasl` id of an authenticated principal, as ZooKeeper's callback handler names it
    /// (Kerberos's DEFAULT rule): a plain name stays as it is; `name[/host]@REALM` of the
    /// default realm keeps its host and realm unless the kerberos settings remove them; a
    /// principal of another realm keeps its whole name.
    pub fn sasl_id(&self, principal: &str) -> String {
        let Some((rest, realm)) = principal.rsplit_once('@') else {
            return principal.to_owned();
        };
        if self.default_realm.as_deref().is_some_and(|d| d != realm) {
            return principal.to_owned();
        }
        let (name, host) = match rest.split_once('/') {
            Some((n, h)) => (n, Some(h)),
            None => (rest, None),
        };
        let mut id = name.to_owned();
        if let Some(host) = host.filter(|_| !self.remove_host) {
            id.push('/');
            id.push_str(host);
        }
        if !self.remove_realm {
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

/// The `default_realm` of a krb5.conf's `[libdefaults]`: the one named, else `KRB5_CONFIG`'s,
/// else /etc/krb5.conf's; none if there is none to read.
fn default_realm(conf: Option<&std::path::Path>) -> Option<String> {
    let path = conf
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("KRB5_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/krb5.conf"));
    let text = std::fs::read_to_string(path).ok()?;
    let mut in_libdefaults = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_libdefaults = line == "[libdefaults]";
        } else if let Some((k, v)) = line.split_once('=').filter(|_| in_libdefaults) {
            if k.trim() == "default_realm" {
                return Some(v.trim().to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        let mut c = AuthConfig::default();
        for (k, v) in pairs {
            c.set(k, v)?;
        }
        c.finish(false)?;
        Ok(c)
    }

    #[test]
    fn principals_keep_host_and_realm_unless_told() {
        let keep = AuthConfig::default();
        assert_eq!(keep.sasl_id("alice"), "alice");
        assert_eq!(keep.sasl_id("a/b"), "a/b", "a plain name, not a host");
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
        // Only the default realm's principals are shortened.
        let c = AuthConfig {
            default_realm: Some("EXAMPLE.COM".into()),
            ..c
        };
        assert_eq!(c.sasl_id("kafka/broker1@EXAMPLE.COM"), "kafka");
        assert_eq!(c.sasl_id("alice@PARTNER.COM"), "alice@PARTNER.COM");
    }

    #[test]
    fn enforcement_needs_known_schemes() {
        let sasl = ("authProvider.1", SASL_PROVIDER);
        let on = ("enforce.auth.enabled", "true");
        let c = config(&[sasl, on, ("enforce.auth.schemes", "sasl,digest")]).unwrap();
        assert_eq!(c.required_schemes, ["sasl", "digest"]);
        assert!(c.admits(["ip", "digest"]));
        assert!(!c.admits(["ip"]));
        assert!(!c.admits(["super"]));
        // Schemes without enforce.auth.enabled enforce nothing.
        let c = config(&[sasl, ("enforce.auth.schemes", "sasl")]).unwrap();
        assert!(c.admits(["ip"]));
        // sessionRequireClientSASLAuth is enforce.auth for sasl, which needs a way to log in.
        let require = ("zookeeper.sessionRequireClientSASLAuth", "true");
        assert!(config(&[sasl, require])
            .unwrap_err()
            .to_string()
            .contains("JAAS"));
        assert!(
            config(&[on, ("enforce.auth.schemes", "sasl")]).is_err(),
            "no provider"
        );
        assert!(config(&[sasl, on]).is_err(), "no schemes");
        assert!(config(&[("authProvider.2", "com.example.Mine")]).is_err());
        assert!(config(&[("quorum.auth.enableSasl", "false")]).is_ok());
        // Without a JAAS file there is nothing to log in with.
        assert!(config(&[("quorum.auth.enableSasl", "true")]).is_err());
        // ZooKeeper's order of switching it on: enable, require on learners, then servers.
        let why = |pairs: &[(&str, &str)]| config(pairs).unwrap_err().to_string();
        assert!(why(&[("quorum.auth.learnerRequireSasl", "true")])
            .contains("quorum.auth.enableSasl is disabled"));
        assert!(why(&[
            ("quorum.auth.enableSasl", "true"),
            ("quorum.auth.serverRequireSasl", "true")
        ])
        .contains("learnerRequireSasl is disabled"));
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
        let sasl = ("authProvider.1", SASL_PROVIDER);
        let jaas = ("java.security.auth.login.config", file);
        let c = config(&[sasl, jaas, ("sessionRequireClientSASLAuth", "true")]).unwrap();
        assert!(c.sasl_required() && !c.admits(["ip"]) && c.admits(["sasl"]));
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
