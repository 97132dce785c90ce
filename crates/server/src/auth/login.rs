//! The server's SASL login, from the JAAS file's server section: DIGEST-MD5 users
//! (`DigestLoginModule`, `user_NAME="password"`), or a Kerberos service principal and its keytab
//! (`Krb5LoginModule`), which makes the mechanism GSSAPI, as in ZooKeeper.

use crate::config::{bad, ConfigError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(crate) const DIGEST_LOGIN_MODULE: &str = "org.apache.zookeeper.server.auth.DigestLoginModule";
const KRB5_LOGIN_MODULE: &str = "com.sun.security.auth.module.Krb5LoginModule";

/// How clients log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLogin {
    /// DIGEST-MD5 against these users' passwords.
    Digest { passwords: BTreeMap<String, String> },
    /// GSSAPI as `principal` (`zookeeper/host@REALM`), with its key in `keytab`.
    Kerberos {
        principal: String,
        keytab: Option<PathBuf>,
    },
}

/// The JAAS file's server section, if it has one; an error if the file cannot be read or the
/// section asks for a login module Corral does not have.
pub(crate) fn read_server_section(
    path: &Path,
    section: &str,
) -> Result<Option<ServerLogin>, ConfigError> {
    let key = "java.security.auth.login.config";
    let shown = path.display().to_string();
    let refuse = |why: String| bad(key, &shown, &format!("section {section}: {why}"));
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(key, &shown, &format!("cannot read the JAAS file: {e}")))?;
    let jaas = super::jaas::Jaas::parse(&text).map_err(|e| bad(key, &shown, &e))?;
    let Some(modules) = jaas.section(section) else {
        tracing::info!(file = %shown, section, "the JAAS file has no server section; SASL is off");
        return Ok(None);
    };
    // As ZooKeeper: a Kerberos login makes the mechanism GSSAPI, whatever else is there.
    if let Some(m) = modules.iter().find(|m| m.class == KRB5_LOGIN_MODULE) {
        let principal = m.options.get("principal").ok_or_else(|| {
            refuse("Krb5LoginModule needs principal=\"service/host@REALM\"".into())
        })?;
        if !principal.contains('/') {
            return Err(refuse(format!(
                "the server principal {principal:?} must name its host (service/host@REALM)"
            )));
        }
        if m.options.get("useKeyTab").map(String::as_str) != Some("true") {
            return Err(refuse(
                "Krb5LoginModule needs useKeyTab=true (a server logs in from its keytab)".into(),
            ));
        }
        let keytab = m.options.get("keyTab").map(PathBuf::from);
        if let Some(k) = &keytab {
            std::fs::metadata(k).map_err(|e| refuse(format!("keyTab {}: {e}", k.display())))?;
        }
        return Ok(Some(ServerLogin::Kerberos {
            principal: principal.clone(),
            keytab,
        }));
    }
    let mut passwords = BTreeMap::new();
    for m in modules {
        if m.class != DIGEST_LOGIN_MODULE {
            return Err(refuse(format!("login module {} is not supported", m.class)));
        }
        for (k, v) in &m.options {
            if let Some(user) = k.strip_prefix("user_") {
                passwords.insert(user.to_owned(), v.clone());
            }
        }
    }
    Ok(Some(ServerLogin::Digest { passwords }))
}

/// How this member logs in to the members it dials (`QuorumLearner`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LearnerLogin {
    /// DIGEST-MD5 as `username` with `password` (a `DigestLoginModule`).
    Digest { username: String, password: String },
    /// GSSAPI as `principal`, with its key in `keytab`.
    Kerberos {
        principal: String,
        keytab: Option<PathBuf>,
    },
}

/// The JAAS file's learner section (`quorum.auth.learner.saslLoginContext`); an error if it is
/// missing or names no way to log in, since a member that must log in could not.
pub(crate) fn read_learner_section(
    path: &Path,
    section: &str,
) -> Result<LearnerLogin, ConfigError> {
    let key = "quorum.auth.learner.saslLoginContext";
    let refuse = |why: String| bad(key, section, &format!("{}: {why}", path.display()));
    let text = std::fs::read_to_string(path)
        .map_err(|e| refuse(format!("cannot read the JAAS file: {e}")))?;
    let jaas = super::jaas::Jaas::parse(&text).map_err(refuse)?;
    let modules = jaas
        .section(section)
        .ok_or_else(|| refuse("the JAAS file has no such section".into()))?;
    if let Some(m) = modules.iter().find(|m| m.class == KRB5_LOGIN_MODULE) {
        let principal = m
            .options
            .get("principal")
            .ok_or_else(|| refuse("Krb5LoginModule needs principal=\"name/host@REALM\"".into()))?;
        let keytab = m.options.get("keyTab").map(PathBuf::from);
        if let Some(k) = &keytab {
            std::fs::metadata(k).map_err(|e| refuse(format!("keyTab {}: {e}", k.display())))?;
        }
        return Ok(LearnerLogin::Kerberos {
            principal: principal.clone(),
            keytab,
        });
    }
    let digest = modules.iter().find(|m| m.class == DIGEST_LOGIN_MODULE);
    let option = |name: &str| digest.and_then(|m| m.options.get(name)).cloned();
    match (option("username"), option("password")) {
        (Some(username), Some(password)) => Ok(LearnerLogin::Digest { username, password }),
        _ => Err(refuse(
            "a DigestLoginModule with username and password, or a Krb5LoginModule, is needed"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Option<ServerLogin>, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "corral-login-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jaas.conf");
        std::fs::write(&path, text).unwrap();
        let keytab = dir.join("zk.keytab");
        std::fs::write(&keytab, b"").unwrap();
        let got = read_server_section(&path, "Server");
        std::fs::remove_dir_all(&dir).unwrap();
        got
    }

    #[test]
    fn kerberos_and_digest_sections() {
        let krb = format!(
            "Server {{ {KRB5_LOGIN_MODULE} required useKeyTab=true storeKey=true \
             principal=\"zookeeper/localhost@CORRAL.TEST\"; }};"
        );
        let Some(ServerLogin::Kerberos { principal, keytab }) = read(&krb).unwrap() else {
            panic!("a Kerberos login");
        };
        assert_eq!(
            (principal.as_str(), keytab),
            ("zookeeper/localhost@CORRAL.TEST", None)
        );
        let no_host = krb.replace("zookeeper/localhost@", "zookeeper@");
        assert!(read(&no_host)
            .unwrap_err()
            .to_string()
            .contains("must name its host"));
        let no_keytab = krb.replace("useKeyTab=true", "useTicketCache=true");
        assert!(read(&no_keytab)
            .unwrap_err()
            .to_string()
            .contains("useKeyTab"));
        let missing = krb.replace("storeKey=true", "keyTab=\"/nonexistent/zk.keytab\"");
        assert!(read(&missing)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/zk.keytab"));
        let digest = format!("Server {{ {DIGEST_LOGIN_MODULE} required user_alice=\"a\"; }};");
        let Some(ServerLogin::Digest { passwords }) = read(&digest).unwrap() else {
            panic!("a digest login");
        };
        assert_eq!(passwords["alice"], "a");
    }

    #[test]
    fn learner_sections() {
        let dir = std::env::temp_dir().join(format!("corral-learner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jaas.conf");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_learner_section(&path, "QuorumLearner")
        };
        let digest = format!(
            "QuorumLearner {{ {DIGEST_LOGIN_MODULE} required username=\"m\" password=\"s\"; }};"
        );
        assert_eq!(
            read(&digest).unwrap(),
            LearnerLogin::Digest {
                username: "m".into(),
                password: "s".into()
            }
        );
        let krb = format!(
            "QuorumLearner {{ {KRB5_LOGIN_MODULE} required useKeyTab=true \
             principal=\"learner/localhost@CORRAL.TEST\"; }};"
        );
        assert!(matches!(read(&krb).unwrap(), LearnerLogin::Kerberos { .. }));
        let no_password = digest.replace(" password=\"s\"", "");
        assert!(read(&no_password)
            .unwrap_err()
            .to_string()
            .contains("username and password"));
        let missing = digest.replace("QuorumLearner", "Other");
        assert!(read(&missing)
            .unwrap_err()
            .to_string()
            .contains("no such section"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
