//! The driver's side of SASL: each connection's exchange in progress, DIGEST-MD5 or GSSAPI as
//! the server's login says. A DIGEST-MD5 step is a little hashing and runs at once; a GSSAPI
//! step reads the keytab and the replay cache, so it runs on a blocking thread and its outcome
//! comes back later, still in the connection's order (the core holds the connection).

use super::digest_md5::{DigestMd5, DigestStep};
use super::gssapi::{self, GssStep, Gssapi};
use super::{AuthConfig, ServerLogin};
use crate::watch::ConnId;
use corral_io::hash::HashMap;
use std::sync::{Arc, Mutex};

/// What one SASL step came to, for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslOutcome {
    /// Send this token; the client answers it.
    Continue(Vec<u8>),
    /// Authenticated: send the token (GSSAPI's last answer has none), and the connection holds
    /// `sasl:id`.
    Done { token: Option<Vec<u8>>, id: String },
    /// Refused, with why (for the log).
    Failed(String),
    /// The server has no SASL login (no JAAS server section): answered with no token, as
    /// ZooKeeper does.
    Off,
}

impl SaslOutcome {
    /// Whether the exchange is over.
    pub fn ends(&self) -> bool {
        !matches!(self, SaslOutcome::Continue(_))
    }
}

/// How a step is to be run.
pub enum SaslRun {
    Now(SaslOutcome),
    /// Run this on a blocking thread.
    Blocking(Box<dyn FnOnce() -> SaslOutcome + Send>),
}

#[derive(Default)]
pub struct SaslServers {
    config: Arc<AuthConfig>,
    digest: HashMap<ConnId, DigestMd5>,
    gss: HashMap<ConnId, Arc<Mutex<Option<Gssapi>>>>,
    /// The acceptor credentials, acquired from the keytab at the first GSSAPI login.
    cred: Arc<Mutex<Option<libgssapi::credential::Cred>>>,
}

impl SaslServers {
    pub fn new(config: Arc<AuthConfig>) -> SaslServers {
        SaslServers {
            config,
            ..SaslServers::default()
        }
    }

    /// One step of a connection's exchange.
    pub fn step(&mut self, conn: ConnId, token: &[u8]) -> SaslRun {
        let config = self.config.clone();
        match config.sasl.as_deref() {
            // As ZooKeeper: without a JAAS server section there is no SASL login at all.
            None => SaslRun::Now(SaslOutcome::Off),
            Some(ServerLogin::Digest { .. }) => SaslRun::Now(self.digest_step(conn, token)),
            Some(ServerLogin::Kerberos { principal, .. }) => {
                let exchange = self.gss.entry(conn).or_default().clone();
                let (cred, principal, token) =
                    (self.cred.clone(), principal.clone(), token.to_vec());
                SaslRun::Blocking(Box::new(move || {
                    gss_step(&config, &exchange, &cred, &principal, &token)
                }))
            }
        }
    }

    fn digest_step(&mut self, conn: ConnId, token: &[u8]) -> SaslOutcome {
        let exchange = self
            .digest
            .entry(conn)
            .or_insert_with(|| DigestMd5::new(nonce()));
        let config = &self.config;
        let outcome = match exchange.step(token, |user| config.password(user)) {
            Ok(DigestStep::Challenge(c)) => return SaslOutcome::Continue(c),
            Ok(DigestStep::Complete { token, user }) => SaslOutcome::Done {
                token: Some(token),
                id: config.sasl_id(&user),
            },
            Err(why) => SaslOutcome::Failed(why),
        };
        self.digest.remove(&conn);
        outcome
    }

    /// A connection's exchange ended, or the connection closed: its state is dropped.
    pub fn forget(&mut self, conn: ConnId) {
        self.digest.remove(&conn);
        self.gss.remove(&conn);
    }
}

fn gss_step(
    config: &AuthConfig,
    exchange: &Mutex<Option<Gssapi>>,
    cred: &Mutex<Option<libgssapi::credential::Cred>>,
    principal: &str,
    token: &[u8],
) -> SaslOutcome {
    let mut exchange = exchange.lock().expect("GSSAPI exchange lock");
    if exchange.is_none() {
        let mut cred = cred.lock().expect("GSSAPI credentials lock");
        if cred.is_none() {
            match gssapi::acceptor(principal) {
                Ok(c) => *cred = Some(c),
                Err(why) => return SaslOutcome::Failed(why),
            }
        }
        *exchange = Some(Gssapi::new(cred.clone().expect("just set")));
    }
    let gss = exchange.as_mut().expect("just set");
    match gss.step(token) {
        Ok(GssStep::Challenge(c)) => SaslOutcome::Continue(c),
        Ok(GssStep::Complete { principal }) => SaslOutcome::Done {
            token: None,
            id: config.sasl_id(&principal),
        },
        Err(why) => SaslOutcome::Failed(why),
    }
}

/// A fresh DIGEST-MD5 nonce: 30 random bytes, base64 (as Java's server makes them).
fn nonce() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 30];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness is no reason to refuse a login; the time is unique enough to stop
        // a replayed response within one server's life.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..16].copy_from_slice(&t.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
