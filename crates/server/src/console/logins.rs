//! Console logins: who may log in, the cookie that names a login, its CSRF token, and the
//! ZooKeeper session each login works through.
//!
//! A login is a ZooKeeper identity: the super user (`superDigest`) or a user of
//! `admin.console.users`, each checked against the digest ZooKeeper's ACLs use. Its session
//! authenticates with that digest, so the console can do no more than the same user's zkCli.

use super::client::{CallError, Dialer, Session};
use crate::budget::Global;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Logins kept at once; one more is refused (and counted) until one ends.
pub const MAX_LOGINS: usize = 64;
/// A login unused this long ends, with its session.
pub const IDLE_LOGOUT: Duration = Duration::from_secs(30 * 60);
/// How often logins are checked for idleness.
const REAP_EVERY: Duration = Duration::from_secs(60);

/// The cookie that names a login on the admin port `port`. Cookies do not tell ports apart, so
/// the port is in the name: logins to two members on one host keep their own.
pub fn cookie_name(port: u16) -> String {
    format!("corral_console_{port}")
}

/// One logged-in user.
pub struct Login {
    pub user: String,
    /// Sent back with every edit (the `X-CSRF-Token` header): a page another site serves cannot
    /// read it, so it cannot forge an edit with the user's cookie.
    pub csrf: String,
    password: String,
    peer: SocketAddr,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    last_used: Mutex<Instant>,
    /// Logged out: a request still running then must not open a session again.
    ended: std::sync::atomic::AtomicBool,
}

impl Login {
    /// The login's session, opened again if the last one ended (this member stopped serving,
    /// say).
    pub async fn session(&self, dialer: &Dialer) -> Result<Arc<Session>, CallError> {
        let mut current = self.session.lock().await;
        if self.ended.load(Relaxed) {
            return Err(CallError::Lost("logged out"));
        }
        if let Some(s) = current.as_ref().filter(|s| s.is_alive()) {
            return Ok(s.clone());
        }
        let s = Session::open(dialer, self.peer, &self.user, &self.password).await?;
        *current = Some(s.clone());
        Ok(s)
    }

    /// The user did something: the login is not idle.
    pub fn touch(&self) {
        *self.last_used.lock().expect("login lock") = Instant::now();
    }

    async fn end(&self) {
        self.ended.store(true, Relaxed);
        if let Some(s) = self.session.lock().await.take() {
            s.close().await;
        }
    }

    fn idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(*self.last_used.lock().expect("login lock")) > IDLE_LOGOUT
    }
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("wrong user name or password")]
    Credentials,
    #[error("{MAX_LOGINS} console logins are open already; try again when one ends")]
    TooMany,
    #[error("{0}")]
    Session(String),
}

/// Every login, by its cookie.
pub struct Logins {
    /// `name` → digest, the super user's included.
    users: HashMap<String, String>,
    open: Mutex<Open>,
    global: Arc<Global>,
}

/// The logins, and those whose session is being opened (they count against the bound too).
#[derive(Default)]
struct Open {
    by_cookie: HashMap<String, Arc<Login>>,
    opening: usize,
}

impl Logins {
    pub fn new(
        users: &[(String, String)],
        super_digest: Option<&str>,
        global: Arc<Global>,
    ) -> Self {
        let mut known: HashMap<String, String> = users.iter().cloned().collect();
        if let Some((name, digest)) = super_digest.and_then(|d| d.split_once(':')) {
            known.insert(name.to_owned(), digest.to_owned());
        }
        Logins {
            users: known,
            open: Mutex::default(),
            global,
        }
    }

    /// Ends idle logins every minute, until `stop` is dropped or fires.
    pub fn reap(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let logins = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(REAP_EVERY) => {}
                    _ = stop.changed() => return,
                }
                let Some(l) = logins.upgrade() else { return };
                l.end_idle().await;
            }
        });
    }

    /// Checks the password, opens the login's session and returns its cookie value.
    pub async fn log_in(
        &self,
        dialer: &Dialer,
        user: &str,
        password: &str,
        peer: SocketAddr,
    ) -> Result<(String, Arc<Login>), Refused> {
        let expected = self.users.get(user).map(String::as_str);
        let given = corral_tree::acl::digest_id(&format!("{user}:{password}"));
        let given = given.split_once(':').map_or("", |(_, d)| d);
        if expected.is_none_or(|e| !same(e.as_bytes(), given.as_bytes())) {
            self.global.console_login_failed.fetch_add(1, Relaxed);
            tracing::warn!(%peer, user, "console login refused: wrong user name or password");
            return Err(Refused::Credentials);
        }
        self.end_idle().await;
        {
            let mut open = self.open.lock().expect("logins lock");
            if open.by_cookie.len() + open.opening >= MAX_LOGINS {
                self.global.console_logins_exceeded.fetch_add(1, Relaxed);
                tracing::warn!(%peer, user, max = MAX_LOGINS, "console login refused: too many logins open");
                return Err(Refused::TooMany);
            }
            open.opening += 1;
        }
        let login = Arc::new(Login {
            user: user.to_owned(),
            csrf: token(),
            password: password.to_owned(),
            peer,
            session: tokio::sync::Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            ended: Default::default(),
        });
        let opened = login.session(dialer).await;
        let cookie = token();
        let mut open = self.open.lock().expect("logins lock");
        open.opening -= 1;
        opened.map_err(|e| Refused::Session(e.to_string()))?;
        open.by_cookie.insert(cookie.clone(), login.clone());
        self.global
            .console_logins
            .store(open.by_cookie.len(), Relaxed);
        tracing::info!(%peer, user, "console login");
        Ok((cookie, login))
    }

    /// The login a cookie names, if it is open.
    pub fn find(&self, cookie: &str) -> Option<Arc<Login>> {
        let login = self
            .open
            .lock()
            .expect("logins lock")
            .by_cookie
            .get(cookie)
            .cloned()?;
        (!login.idle(Instant::now())).then_some(login)
    }

    pub async fn log_out(&self, cookie: &str) {
        let login = {
            let mut open = self.open.lock().expect("logins lock");
            let l = open.by_cookie.remove(cookie);
            self.global
                .console_logins
                .store(open.by_cookie.len(), Relaxed);
            l
        };
        if let Some(l) = login {
            tracing::info!(user = %l.user, "console logout");
            l.end().await;
        }
    }

    async fn end_idle(&self) {
        let now = Instant::now();
        let idle: Vec<Arc<Login>> = {
            let mut open = self.open.lock().expect("logins lock");
            let gone: Vec<String> = open
                .by_cookie
                .iter()
                .filter(|(_, l)| l.idle(now))
                .map(|(k, _)| k.clone())
                .collect();
            let idle = gone
                .iter()
                .filter_map(|k| open.by_cookie.remove(k))
                .collect();
            self.global
                .console_logins
                .store(open.by_cookie.len(), Relaxed);
            idle
        };
        for l in idle {
            tracing::info!(user = %l.user, "console login ended: idle");
            l.end().await;
        }
    }
}

/// Equal, in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 128 random bits, as hex.
fn token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; corral_console_8080=abc; b=2";
        assert_eq!(cookie_value(h, &cookie_name(8080)), Some("abc"));
        assert_eq!(cookie_value(h, &cookie_name(8081)), None);
        assert_eq!(cookie_value(h, "c"), None);
    }

    #[test]
    fn tokens_are_random_and_comparison_is_exact() {
        assert_ne!(token(), token());
        assert_eq!(token().len(), 32);
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
