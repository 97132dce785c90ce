//! SASL between members (`quorum.auth.*`), as ZooKeeper's `SaslQuorumAuthLearner` and
//! `SaslQuorumAuthServer` run it.
//!
//! The member that dials a link is the *learner*: it logs in with the JAAS `QuorumLearner`
//! section (a DIGEST-MD5 user and password, or a Kerberos principal). The member that accepts
//! it is the *server*: it checks the login against its `QuorumServer` section (DIGEST-MD5 users,
//! or its own Kerberos principal, `zkquorum/host@REALM`). A Kerberos learner must also be a
//! principal of one of the ensemble's hosts (`name/host@REALM`, the host as a `server.N` line
//! writes it), so a client's principal from the same realm cannot open a member link.
//!
//! On the wire, each message is ZooKeeper's `QuorumAuthPacket` (magic, status, token) in jute.
//! A learner's first bytes are the magic, which no peer frame can start with (its length would
//! be over the frame limit), so a server that does not require SASL still takes links that do
//! not log in: the switch-on path ZooKeeper documents (enable, then require on learners, then on
//! servers) works member by member.
//!
//! ```text
//! learner                         server
//!    -- IN_PROGRESS(first token) -->
//!    <-- IN_PROGRESS(challenge) ---      (as many rounds as the mechanism needs, at most 5)
//!    -- IN_PROGRESS(response) ----->
//!    <-- SUCCESS(last token) ------      or ERROR: the link is closed
//! ```

use super::digest_md5::{self, DigestClient, DigestMd5, DigestStep};
use super::gssapi::{self, GssStep, Gssapi, Initiator};
use super::login::{LearnerLogin, ServerLogin};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// ZooKeeper's `QUORUM_AUTH_MAGIC_NUMBER`, the first field of every packet.
pub const MAGIC: i64 = 0x5f24_3501_3501_edcc;
/// The magic's first four bytes, as a peer frame's length would be read.
pub const MAGIC_HEAD: [u8; 4] = [0x5f, 0x24, 0x35, 0x01];
/// Tokens are small (a Kerberos AP-REQ is a few KiB); a larger one is refused unread.
const MAX_TOKEN: usize = 64 << 10;
/// Challenges a server sends before it gives up, as ZooKeeper's `MAX_RETRIES`.
const MAX_ROUNDS: usize = 5;
/// How long a member link may take from its first byte to the end of its login.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dialed-in link may wait before its first bytes: a member writes at once (its
/// login or its first request), so an idle connection is not one and gives its slot back soon.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(2);
/// Kerberos steps running at once (each on a blocking thread); more wait their turn.
const GSS_STEPS_AT_ONCE: usize = 4;

/// A packet's status, as ZooKeeper numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    InProgress = 0,
    Success = 1,
    Error = -1,
}

/// This member's side of member logins: how it logs in to the members it dials, and how it
/// checks the members that dial it.
pub struct QuorumSasl {
    /// `quorum.auth.learnerRequireSasl`: log in to every member dialed.
    pub learner_require: bool,
    /// `quorum.auth.serverRequireSasl`: refuse links that do not log in.
    pub server_require: bool,
    learner: LearnerLogin,
    server: ServerLogin,
    /// `quorum.auth.kerberos.servicePrincipal`: whom a Kerberos learner asks a ticket for.
    service_principal: String,
    /// `zookeeper.server.realm`.
    server_realm: Option<String>,
    /// The ensemble's hosts as its `server.N` lines write them: a Kerberos learner's principal
    /// must name one (ZooKeeper's `authzHosts`).
    hosts: Vec<String>,
    /// The acceptor's credentials, from the keytab at the first Kerberos login.
    acceptor: gssapi::Acceptor,
    gss_slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for QuorumSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumSasl")
            .field("learner_require", &self.learner_require)
            .field("server_require", &self.server_require)
            .finish_non_exhaustive()
    }
}

impl QuorumSasl {
    pub fn new(
        settings: &super::QuorumAuthConfig,
        logins: (LearnerLogin, ServerLogin),
        hosts: Vec<String>,
    ) -> QuorumSasl {
        QuorumSasl {
            learner_require: settings.learner_require,
            server_require: settings.server_require,
            learner: logins.0,
            server: logins.1,
            service_principal: settings.service_principal().to_owned(),
            server_realm: settings.server_realm.clone(),
            hosts,
            acceptor: gssapi::Acceptor::default(),
            gss_slots: Arc::new(tokio::sync::Semaphore::new(GSS_STEPS_AT_ONCE)),
        }
    }

    /// Logs in to the member at `host`, as its learner; an error says why it failed.
    pub async fn log_in<S>(&self, s: &mut S, host: &str) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        match &self.learner {
            LearnerLogin::Digest { username, password } => {
                let mut client = DigestClient::new(digest_md5::QUORUM);
                let challenge = self.exchange(s, &[]).await?.going_on()?;
                let cnonce = super::servers::nonce().ok_or("no randomness for a cnonce")?;
                let response = client.respond(&challenge, username, password, &cnonce)?;
                // The server's SUCCESS comes with its rspauth, which proves it knew the password.
                let last = self.exchange(s, &response).await?.success()?;
                client.finish(&last)
            }
            LearnerLogin::Kerberos { principal, .. } => {
                let realm = self.server_realm.as_deref();
                let target = service_principal(&self.service_principal, host, realm, principal);
                let principal = principal.clone();
                let (mut login, first) = self
                    .blocking(move || {
                        let mut login = Initiator::new(&principal, &target)?;
                        let first = login.start()?;
                        Ok((login, first))
                    })
                    .await?;
                let mut answer = self.exchange(s, &first).await?;
                while !login.is_done() {
                    let token = answer.going_on()?;
                    let (l, next) = self
                        .blocking(move || login.step(&token).map(|a| (login, a)))
                        .await?;
                    login = l;
                    answer = self.exchange(s, &next).await?;
                }
                answer.success().map(drop)
            }
        }
    }

    /// Sends one learner packet and reads the server's answer; an ERROR is the refusal.
    async fn exchange<S>(&self, s: &mut S, token: &[u8]) -> Result<Answer, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        write_packet(s, Status::InProgress, token)
            .await
            .map_err(|e| format!("cannot send a login packet: {e}"))?;
        let (status, token) = read_packet(s, true)
            .await
            .map_err(|e| format!("no answer to a login packet: {e}"))?;
        match status {
            Status::InProgress => Ok(Answer::GoOn(token)),
            Status::Success => Ok(Answer::Success(token)),
            Status::Error => Err(
                "the member refused the login (QuorumLearner's user, password or principal)".into(),
            ),
        }
    }

    /// Checks the login of a member that dialed this one; the magic is already read. Returns
    /// whom it logged in as. On failure the learner is told ERROR.
    pub async fn check<S>(&self, s: &mut S) -> Result<String, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let outcome = self.check_steps(s).await;
        if outcome.is_err() {
            // The learner may be gone already; the refusal is logged either way.
            let _ = write_packet(s, Status::Error, &[]).await;
        }
        outcome
    }

    async fn check_steps<S>(&self, s: &mut S) -> Result<String, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let mut mechanism = self.mechanism().await?;
        let (_, mut token) = read_packet(s, false)
            .await
            .map_err(|e| format!("a bad login packet: {e}"))?;
        let mut challenges = 0;
        loop {
            match self.step(&mut mechanism, token).await? {
                Step::Challenge(_) if challenges == MAX_ROUNDS => {
                    return Err(format!("no login after {MAX_ROUNDS} challenges"))
                }
                Step::Challenge(challenge) => {
                    challenges += 1;
                    write_packet(s, Status::InProgress, &challenge)
                        .await
                        .map_err(|e| format!("cannot send a challenge: {e}"))?;
                    (_, token) = read_packet(s, true)
                        .await
                        .map_err(|e| format!("a bad login packet: {e}"))?;
                }
                Step::Complete { token, who } => {
                    self.authorize(&who)?;
                    write_packet(s, Status::Success, &token)
                        .await
                        .map_err(|e| format!("cannot send success: {e}"))?;
                    return Ok(who);
                }
            }
        }
    }

    /// A fresh exchange for the server's login.
    async fn mechanism(&self) -> Result<Mechanism, String> {
        match &self.server {
            ServerLogin::Digest { .. } => {
                let nonce = super::servers::nonce().ok_or("no randomness for a nonce")?;
                Ok(Mechanism::Digest(DigestMd5::for_service(
                    nonce,
                    digest_md5::QUORUM,
                )))
            }
            ServerLogin::Kerberos { principal, .. } => {
                let (acceptor, principal) = (self.acceptor.clone(), principal.clone());
                let cred = self.blocking(move || acceptor.cred(&principal)).await?;
                Ok(Mechanism::Kerberos(Some(Box::new(Gssapi::new(cred)))))
            }
        }
    }

    async fn step(&self, mechanism: &mut Mechanism, token: Vec<u8>) -> Result<Step, String> {
        match mechanism {
            Mechanism::Digest(digest) => {
                let ServerLogin::Digest { passwords } = &self.server else {
                    unreachable!("a digest exchange comes from a digest login")
                };
                match digest.step(&token, |user| passwords.get(user).cloned())? {
                    DigestStep::Challenge(c) => Ok(Step::Challenge(c)),
                    DigestStep::Complete { token, user } => Ok(Step::Complete { token, who: user }),
                }
            }
            Mechanism::Kerberos(context) => {
                // The context moves to a blocking thread and back.
                let mut g = context.take().ok_or("a Kerberos step failed before")?;
                let (g, step) = self
                    .blocking(move || {
                        let step = g.step(&token);
                        Ok((g, step))
                    })
                    .await?;
                *context = Some(g);
                match step? {
                    GssStep::Challenge(c) => Ok(Step::Challenge(c)),
                    GssStep::Complete { principal } => Ok(Step::Complete {
                        token: Vec::new(),
                        who: principal,
                    }),
                }
            }
        }
    }

    /// Whether a member that logged in as `who` may hold a member link. A DIGEST-MD5 user is
    /// one the `QuorumServer` section lists; a Kerberos principal must be `name/host@REALM`
    /// for one of the ensemble's hosts.
    fn authorize(&self, who: &str) -> Result<(), String> {
        if matches!(self.server, ServerLogin::Digest { .. }) {
            return Ok(());
        }
        let parts: Vec<&str> = who.split(['/', '@']).collect();
        match parts.as_slice() {
            [_, host, _] if self.hosts.iter().any(|h| h == host) => Ok(()),
            _ => Err(format!(
                "{who} is not authorized to connect: a member's principal must be \
                 name/host@REALM for one of the ensemble's hosts {:?}",
                self.hosts
            )),
        }
    }

    /// Runs `work` on a blocking thread, a few at a time: Kerberos reads keytabs and asks the
    /// KDC. The slot goes with the thread, so a login given up on (its link timed out) still
    /// holds it until the thread is done: threads stuck on an unreachable KDC cannot pile up.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let slot = self
            .gss_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "shutting down".to_owned())?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(|e| format!("a Kerberos step failed: {e}"))?
    }
}

enum Mechanism {
    Digest(DigestMd5),
    /// None while a step runs on a blocking thread (or after one failed there).
    Kerberos(Option<Box<Gssapi>>),
}

/// The server's answer to a learner packet.
enum Answer {
    /// IN_PROGRESS: its token to go on with.
    GoOn(Vec<u8>),
    /// SUCCESS: its last token.
    Success(Vec<u8>),
}

impl Answer {
    fn going_on(self) -> Result<Vec<u8>, String> {
        match self {
            Answer::GoOn(token) => Ok(token),
            Answer::Success(_) => Err("the member said SUCCESS before the login was over".into()),
        }
    }

    fn success(self) -> Result<Vec<u8>, String> {
        match self {
            Answer::Success(token) => Ok(token),
            Answer::GoOn(_) => Err("the member wants more after the login was over".into()),
        }
    }
}

enum Step {
    Challenge(Vec<u8>),
    Complete { token: Vec<u8>, who: String },
}

/// Whom a learner asks a ticket for, as ZooKeeper's `SecurityUtils.getServerPrincipal`: a
/// configured `service/_HOST` takes the dialed host (lower case); a principal without a realm
/// takes `zookeeper.server.realm`, else the learner's own.
fn service_principal(configured: &str, host: &str, realm: Option<&str>, learner: &str) -> String {
    let mut target = match configured.split_once('/') {
        Some((service, "_HOST")) => format!("{service}/{}", host.to_ascii_lowercase()),
        _ => configured.to_owned(),
    };
    if !target.contains('@') {
        let learners = learner.rsplit_once('@').map(|(_, r)| r);
        if let Some(realm) = realm.or(learners) {
            target.push('@');
            target.push_str(realm);
        }
    }
    target
}

/// Writes one `QuorumAuthPacket`: magic, status, token (jute: a length, then the bytes).
async fn write_packet<S>(s: &mut S, status: Status, token: &[u8]) -> io::Result<()>
where
    S: AsyncWrite + Unpin + ?Sized,
{
    let mut out = Vec::with_capacity(16 + token.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&(status as i32).to_be_bytes());
    out.extend_from_slice(&(token.len() as i32).to_be_bytes());
    out.extend_from_slice(token);
    s.write_all(&out).await?;
    s.flush().await
}

/// Reads one packet; `with_magic` is false when its magic was read already.
async fn read_packet<S>(s: &mut S, with_magic: bool) -> io::Result<(Status, Vec<u8>)>
where
    S: AsyncRead + Unpin + ?Sized,
{
    if with_magic {
        let magic = s.read_i64().await?;
        if magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a login packet (wrong magic)",
            ));
        }
    }
    let status = match s.read_i32().await? {
        0 => Status::InProgress,
        1 => Status::Success,
        _ => Status::Error,
    };
    let len = s.read_i32().await?;
    if len > MAX_TOKEN as i32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a login token of {len} bytes (at most {MAX_TOKEN})"),
        ));
    }
    let mut token = vec![0; len.max(0) as usize];
    s.read_exact(&mut token).await?;
    Ok((status, token))
}

/// Reads the rest of the magic after [`MAGIC_HEAD`].
pub async fn read_magic_tail<S>(s: &mut S) -> io::Result<()>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let mut tail = [0u8; 4];
    s.read_exact(&mut tail).await?;
    if tail != MAGIC.to_be_bytes()[4..] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a login packet (wrong magic)",
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::auth::QuorumAuthConfig;

    /// Both sides by DIGEST-MD5: logs in as `user`, and knows the user `learner`.
    pub(crate) fn digest_sasl(user: &str, password: &str) -> QuorumSasl {
        let settings = QuorumAuthConfig {
            enabled: true,
            learner_require: true,
            server_require: true,
            ..Default::default()
        };
        let learner = LearnerLogin::Digest {
            username: user.into(),
            password: password.into(),
        };
        let server = ServerLogin::Digest {
            passwords: [("learner".to_owned(), "learner-secret".to_owned())].into(),
        };
        QuorumSasl::new(&settings, (learner, server), vec!["127.0.0.1".into()])
    }

    /// A learner's login against a server, over an in-memory link: each side's outcome.
    async fn login(
        learner: &QuorumSasl,
        server: &QuorumSasl,
    ) -> (Result<(), String>, Result<String, String>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let serving = async {
            let mut head = [0u8; 4];
            b.read_exact(&mut head).await.unwrap();
            assert_eq!(head, MAGIC_HEAD, "a login starts with the magic");
            read_magic_tail(&mut b).await.unwrap();
            server.check(&mut b).await
        };
        tokio::join!(learner.log_in(&mut a, "127.0.0.1"), serving)
    }

    #[tokio::test]
    async fn a_member_with_the_right_password_logs_in() {
        let server = digest_sasl("unused", "unused");
        let (learned, checked) = login(&digest_sasl("learner", "learner-secret"), &server).await;
        assert_eq!(learned, Ok(()));
        assert_eq!(checked, Ok("learner".to_owned()));
    }

    #[tokio::test]
    async fn wrong_passwords_and_unknown_users_are_refused_on_both_sides() {
        let server = digest_sasl("unused", "unused");
        for (user, password) in [("learner", "guess"), ("mallory", "learner-secret")] {
            let (learned, checked) = login(&digest_sasl(user, password), &server).await;
            assert!(learned.unwrap_err().contains("refused the login"));
            let why = checked.unwrap_err();
            assert!(
                why.contains("wrong password") || why.contains("cannot acquire password"),
                "{why}"
            );
        }
    }

    #[tokio::test]
    async fn garbage_and_oversized_tokens_are_refused_without_hanging() {
        let server = digest_sasl("unused", "unused");
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let mut bad = Vec::new();
        bad.extend_from_slice(&0i32.to_be_bytes());
        bad.extend_from_slice(&(1i32 << 30).to_be_bytes());
        a.write_all(&bad).await.unwrap();
        let why = server.check(&mut b).await.unwrap_err();
        assert!(why.contains("at most"), "{why}");
        // The learner is told ERROR.
        let (status, _) = read_packet(&mut a, true).await.unwrap();
        assert_eq!(status, Status::Error);
    }

    #[test]
    fn kerberos_learners_must_be_principals_of_ensemble_hosts() {
        let settings = QuorumAuthConfig::default();
        let sasl = QuorumSasl::new(
            &settings,
            (
                LearnerLogin::Kerberos {
                    principal: "learner/m1@R".into(),
                    keytab: None,
                },
                ServerLogin::Kerberos {
                    principal: "zkquorum/m1@R".into(),
                    keytab: None,
                },
            ),
            vec!["m1".into(), "m2".into()],
        );
        assert!(sasl.authorize("zkquorum/m2@R").is_ok());
        assert!(sasl.authorize("alice@R").is_err(), "no host");
        assert!(sasl.authorize("zkquorum/elsewhere@R").is_err());
    }

    #[test]
    fn service_principals_as_zookeeper_makes_them() {
        let p = |c, h, l| service_principal(c, h, None, l);
        let other_realm = service_principal("zkquorum/localhost", "m2", Some("S"), "l/m1@R");
        assert_eq!(other_realm, "zkquorum/localhost@S");
        assert_eq!(
            p("zkquorum/localhost", "m2", "l/m1@R"),
            "zkquorum/localhost@R"
        );
        assert_eq!(
            p("zkquorum/_HOST", "M2.example", "l/m1@R"),
            "zkquorum/m2.example@R"
        );
        assert_eq!(p("zkquorum/_HOST@S", "m2", "l/m1@R"), "zkquorum/_HOST@S");
        assert_eq!(MAGIC.to_be_bytes()[..4], MAGIC_HEAD);
    }
}
