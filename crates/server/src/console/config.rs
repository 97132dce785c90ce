//! The admin server's web settings: the console (`admin.console.*`), and HTTPS as ZooKeeper's
//! Jetty admin server takes it (`admin.forceHttps`, `admin.portUnification`, with the members'
//! key store, `ssl.quorum.keyStore.*`).

use crate::config::{bad, parse_bool, ConfigError};

/// How the admin port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminTransport {
    #[default]
    Http,
    /// `admin.forceHttps=true`: HTTPS only.
    Https,
    /// `admin.portUnification=true`: HTTPS or HTTP, told apart by the first byte.
    Unified,
}

/// `admin.console.*` and the admin port's transport.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsoleConfig {
    /// `admin.console.enabled`: off unless asked for, since a console can edit data.
    pub enabled: bool,
    /// `admin.console.users`: who may log in besides the super user, each as the digest id
    /// ZooKeeper's ACLs use (`name:base64(sha1(name:password))`).
    pub users: Vec<(String, String)>,
    pub transport: AdminTransport,
}

/// Whether `key` is one of these settings (zoo.cfg name or JVM property).
pub fn is_console_key(key: &str) -> bool {
    matches!(
        key.strip_prefix("zookeeper.").unwrap_or(key),
        "admin.console.enabled"
            | "admin.console.users"
            | "admin.forceHttps"
            | "admin.portUnification"
    )
}

impl ConsoleConfig {
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key.strip_prefix("zookeeper.").unwrap_or(key) {
            "admin.console.enabled" => self.enabled = parse_bool(key, value)?,
            "admin.console.users" => self.users = parse_users(key, value)?,
            "admin.forceHttps" => {
                if parse_bool(key, value)? {
                    self.transport = AdminTransport::Https;
                }
            }
            "admin.portUnification" => {
                if parse_bool(key, value)? && self.transport == AdminTransport::Http {
                    self.transport = AdminTransport::Unified;
                }
            }
            _ => unreachable!("is_console_key said it was ours"),
        }
        Ok(())
    }

    /// Checks what the settings need from the rest of the configuration.
    pub fn finish(
        &self,
        super_digest: Option<&str>,
        quorum_key_store: bool,
    ) -> Result<(), ConfigError> {
        if self.transport != AdminTransport::Http && !quorum_key_store {
            return Err(bad(
                "admin.forceHttps",
                "true",
                "HTTPS on the admin port needs ssl.quorum.keyStore.location, as in ZooKeeper",
            ));
        }
        if self.enabled && self.users.is_empty() && super_digest.is_none() {
            return Err(bad(
                "admin.console.enabled",
                "true",
                "the console needs someone to log in: set admin.console.users or superDigest",
            ));
        }
        Ok(())
    }
}

/// `alice:DIGEST,bob:DIGEST` (commas or spaces between users).
fn parse_users(key: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    value
        .split([',', ' '])
        .filter(|u| !u.is_empty())
        .map(|u| match u.split_once(':') {
            Some((name, digest)) if !name.is_empty() && digest.len() == 28 => {
                Ok((name.to_owned(), digest.to_owned()))
            }
            _ => Err(bad(
                key,
                value,
                "expected name:base64(sha1(name:password)) for each user, as digest ACLs name them",
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_digest_ids() {
        let mut c = ConsoleConfig::default();
        c.set(
            "admin.console.users",
            "alice:X/NSthOB0fcDAqP+5BFhYcmv3Y8=, bob:YB/MXUhbxmRxKzhuQk5H1UR7aUM=",
        )
        .unwrap();
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users[1].0, "bob");
        assert!(c.set("admin.console.users", "alice:secret").is_err());
    }

    #[test]
    fn a_console_needs_a_login_and_https_needs_a_key() {
        let mut c = ConsoleConfig::default();
        c.set("zookeeper.admin.console.enabled", "true").unwrap();
        assert!(c.finish(None, false).is_err());
        assert!(c
            .finish(Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU="), false)
            .is_ok());
        c.set("admin.forceHttps", "true").unwrap();
        assert_eq!(c.transport, AdminTransport::Https);
        assert!(c.finish(Some("super:x"), false).is_err());
        assert!(c.finish(Some("super:x"), true).is_ok());
    }
}
