//! The driver's side of SASL: each connection's exchange in progress, DIGEST-MD5 or GSSAPI as
//! the server's login says. A DIGEST-MD5 step is a little hashing and runs at once; a GSSAPI
//! step reads the keytab and the replay cache, so it runs on a blocking thread and its outcome
//! comes back later, still in the connection's order (the core holds the connection).

use super::digest_md5::{DigestMd5, DigestStep};
use super::gssapi::{self, GssStep, Gssapi};
use super::{AuthConfig, ServerLogin};
use crate::watch::ConnId;
use corral_io::hash::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

/// GSSAPI steps running at once (each on a blocking thread); more wait their turn.
const GSS_STEPS_AT_ONCE: usize = 8;

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

pub struct SaslServers {
    config: Arc<AuthConfig>,
    digest: HashMap<ConnId, DigestMd5>,
    gss: HashMap<ConnId, Arc<Mutex<Option<Gssapi>>>>,
    /// Connections whose exchange is over: a further SASL packet is refused, as a completed
    /// Java `SaslServer` refuses more tokens.
    completed: HashSet<ConnId>,
    /// The acceptor credentials, acquired from the keytab at the first GSSAPI login.
    cred: gssapi::Acceptor,
    slots: Arc<tokio::sync::Semaphore>,
}

impl SaslServers {
    pub fn new(config: Arc<AuthConfig>) -> SaslServers {
        SaslServers {
            config,
            digest: HashMap::default(),
            gss: HashMap::default(),
            completed: HashSet::default(),
            cred: gssapi::Acceptor::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(GSS_STEPS_AT_ONCE)),
        }
    }

    /// What bounds the GSSAPI steps running at once.
    pub fn slots(&self) -> Arc<tokio::sync::Semaphore> {
        self.slots.clone()
    }

    /// One step of a connection's exchange.
    pub fn step(&mut self, conn: ConnId, token: &[u8]) -> SaslRun {
        if self.completed.contains(&conn) {
            let why = "a SASL packet after the exchange was complete".to_owned();
            return SaslRun::Now(SaslOutcome::Failed(why));
        }
        let config = self.config.clone();
        match config.sasl.as_deref() {
            // As ZooKeeper: without a JAAS server section there is no SASL login at all.
            None => SaslRun::Now(SaslOutcome::Off),
            Some(ServerLogin::Digest { .. }) => {
                let outcome = self.digest_step(conn, token);
                if outcome.ends() {
                    self.finished(conn);
                }
                SaslRun::Now(outcome)
            }
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
        let exchange = match self.digest.entry(conn) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match nonce() {
                Some(nonce) => e.insert(DigestMd5::new(nonce)),
                None => return SaslOutcome::Failed("no randomness for a nonce".into()),
            },
        };
        let config = &self.config;
        match exchange.step(token, |user| config.password(user)) {
            Ok(DigestStep::Challenge(c)) => SaslOutcome::Continue(c),
            Ok(DigestStep::Complete { token, user }) => SaslOutcome::Done {
                token: Some(token),
                id: config.sasl_id(&user),
            },
            Err(why) => SaslOutcome::Failed(why),
        }
    }

    /// A connection's exchange ended (succeeded or failed): its state is dropped, and it takes
    /// no second one.
    pub fn finished(&mut self, conn: ConnId) {
        self.digest.remove(&conn);
        self.gss.remove(&conn);
        self.completed.insert(conn);
    }

    /// A connection closed: whatever it had is dropped.
    pub fn forget(&mut self, conn: ConnId) {
        self.digest.remove(&conn);
        self.gss.remove(&conn);
        self.completed.remove(&conn);
    }
}

fn gss_step(
    config: &AuthConfig,
    exchange: &Mutex<Option<Gssapi>>,
    cred: &gssapi::Acceptor,
    principal: &str,
    token: &[u8],
) -> SaslOutcome {
    // A step that panicked left nothing a later one could wrongly trust.
    let mut exchange = exchange.lock().unwrap_or_else(PoisonError::into_inner);
    if exchange.is_none() {
        match cred.cred(principal) {
            Ok(cred) => *exchange = Some(Gssapi::new(cred)),
            Err(why) => return SaslOutcome::Failed(why),
        }
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

/// A fresh DIGEST-MD5 nonce: 30 random bytes, base64 (as Java's server makes them); none
/// without the system's randomness (a guessable nonce would let responses be replayed).
pub(super) fn nonce() -> Option<String> {
    use base64::Engine;
    let mut bytes = [0u8; 30];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}
