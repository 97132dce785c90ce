//! SASL DIGEST-MD5 (RFC 2831), as Java's `DigestMD5Server` runs it for ZooKeeper: protocol
//! `zookeeper`, server name and realm `zk-sasl-md5` (for members, `zookeeper-quorum` and
//! `zk-quorum-sasl-md5`), quality of protection `auth` only (ZooKeeper asks for no integrity or
//! privacy layer), `md5-sess`. The client's side ([`DigestClient`]) is for members logging in
//! to each other.
//!
//! Two steps: the client's empty first token gets the challenge (realm, nonce, charset,
//! algorithm; no qop directive, which means `auth`); its digest response is checked against the password the JAAS file gives for the
//! user, and answered with `rspauth`, which proves to the client that the server knew the
//! password too. Then the exchange is complete and the user is authenticated.

use md5::{Digest, Md5};
use std::collections::HashMap;

/// Whom an exchange is with: its realm (also the server name) and `digest-uri`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub realm: &'static str,
    pub digest_uri: &'static str,
}

/// Clients' logins: ZooKeeper's protocol `zookeeper` and server name `zk-sasl-md5`.
pub const CLIENTS: Service = Service {
    realm: "zk-sasl-md5",
    digest_uri: "zookeeper/zk-sasl-md5",
};

/// Members' logins to each other (`quorum.auth.*`): ZooKeeper's `zookeeper-quorum` and
/// `zk-quorum-sasl-md5`.
pub const QUORUM: Service = Service {
    realm: "zk-quorum-sasl-md5",
    digest_uri: "zookeeper-quorum/zk-quorum-sasl-md5",
};

/// Where the mechanism is in its exchange.
#[derive(Debug)]
enum State {
    Start,
    Challenged { nonce: String },
    Done,
}

/// One client's DIGEST-MD5 exchange.
#[derive(Debug)]
pub struct DigestMd5 {
    state: State,
    nonce: String,
    service: Service,
}

/// What a step of the exchange gives.
#[derive(Debug, PartialEq, Eq)]
pub enum DigestStep {
    /// Send this challenge; the client answers it.
    Challenge(Vec<u8>),
    /// Authenticated as `user`; send the final token.
    Complete { token: Vec<u8>, user: String },
}

impl DigestMd5 {
    /// A new exchange whose challenge will carry `nonce` (random, unguessable).
    pub fn new(nonce: String) -> DigestMd5 {
        DigestMd5::for_service(nonce, CLIENTS)
    }

    /// The same for another service (the members' [`QUORUM`]).
    pub fn for_service(nonce: String, service: Service) -> DigestMd5 {
        DigestMd5 {
            state: State::Start,
            nonce,
            service,
        }
    }

    /// Takes the client's next token. `password` looks a user's password up; a wrong password,
    /// an unknown user or a malformed token is an error that says which.
    pub fn step(
        &mut self,
        token: &[u8],
        password: impl Fn(&str) -> Option<String>,
    ) -> Result<DigestStep, String> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Start => {
                if !token.is_empty() {
                    return Err("DIGEST-MD5 must not have an initial response".into());
                }
                let nonce = self.nonce.clone();
                let realm = self.service.realm;
                let challenge =
                    format!("realm=\"{realm}\",nonce=\"{nonce}\",charset=utf-8,algorithm=md5-sess");
                self.state = State::Challenged { nonce };
                Ok(DigestStep::Challenge(challenge.into_bytes()))
            }
            State::Challenged { nonce } => check_response(token, &nonce, self.service, password),
            State::Done => Err("DIGEST-MD5 authentication is already complete".into()),
        }
    }
}

/// Checks the client's digest response; on success, the `rspauth` token and the user.
fn check_response(
    token: &[u8],
    nonce: &str,
    service: Service,
    password: impl Fn(&str) -> Option<String>,
) -> Result<DigestStep, String> {
    let text = std::str::from_utf8(token).map_err(|_| "response is not UTF-8".to_owned())?;
    let d = directives(text)?;
    let get = |k: &str| d.get(k).map(String::as_str);
    let need = |k: &str| get(k).ok_or_else(|| format!("digest response format violation: no {k}"));
    let user = need("username")?;
    if need("nonce")? != nonce {
        return Err("digest response format violation: mismatched nonce".into());
    }
    let qop = get("qop").unwrap_or("auth");
    if qop != "auth" {
        return Err(format!(
            "unsupported qop {qop:?} (ZooKeeper offers auth only)"
        ));
    }
    if need("nc")? != "00000001" {
        return Err("digest response format violation: nonce count is not 00000001".into());
    }
    let uri = need("digest-uri")?;
    if !uri.eq_ignore_ascii_case(service.digest_uri) {
        return Err(format!(
            "digest response format violation: mismatched URI {uri:?}"
        ));
    }
    let realm = get("realm").unwrap_or("");
    if !realm.is_empty() && realm != service.realm {
        return Err(format!(
            "digest response format violation: nonexistent realm {realm:?}"
        ));
    }
    let cnonce = need("cnonce")?;
    let response = need("response")?;
    let Some(password) = password(user) else {
        return Err(format!(
            "cannot acquire password for {user} in realm {}",
            service.realm
        ));
    };
    let utf8 = get("charset").is_some_and(|c| c.eq_ignore_ascii_case("utf-8"));
    let secret = Secret {
        user,
        realm,
        password: &password,
        utf8,
        nonce,
        cnonce,
        nc: "00000001",
        authzid: get("authzid"),
    };
    if secret.response(&format!("AUTHENTICATE:{uri}")) != response.to_ascii_lowercase() {
        return Err(format!("wrong password for {user} (mismatched response)"));
    }
    let rspauth = format!("rspauth={}", secret.response(&format!(":{uri}")));
    Ok(DigestStep::Complete {
        token: rspauth.into_bytes(),
        user: user.to_owned(),
    })
}

/// The client's side of the exchange, for a member logging in to another (`QuorumLearner`).
#[derive(Debug)]
pub struct DigestClient {
    service: Service,
    /// The `rspauth` the server must send back: proof that it knows the password too.
    expected_rspauth: Option<String>,
}

impl DigestClient {
    pub fn new(service: Service) -> DigestClient {
        DigestClient {
            service,
            expected_rspauth: None,
        }
    }

    /// The response to the server's challenge, as Java's client makes it (`charset=utf-8`,
    /// `qop=auth`, nonce count 1). `cnonce` must be fresh and unguessable.
    pub fn respond(
        &mut self,
        challenge: &[u8],
        user: &str,
        password: &str,
        cnonce: &str,
    ) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(challenge).map_err(|_| "challenge is not UTF-8")?;
        let d = directives(text)?;
        let nonce = d.get("nonce").ok_or("the challenge has no nonce")?;
        let realm = d.get("realm").map_or("", String::as_str);
        if let Some(qop) = d.get("qop") {
            if !qop.split(',').any(|q| q.trim() == "auth") {
                return Err(format!("the server offers qop {qop:?}, not auth"));
            }
        }
        let uri = self.service.digest_uri;
        let secret = Secret {
            user,
            realm,
            password,
            utf8: true,
            nonce,
            cnonce,
            nc: "00000001",
            authzid: None,
        };
        let response = secret.response(&format!("AUTHENTICATE:{uri}"));
        self.expected_rspauth = Some(secret.response(&format!(":{uri}")));
        let (user, realm, nonce) = (quoted(user), quoted(realm), quoted(nonce));
        Ok(format!(
            "charset=utf-8,username=\"{user}\",realm=\"{realm}\",nonce=\"{nonce}\",nc=00000001,\
             cnonce=\"{cnonce}\",digest-uri=\"{uri}\",maxbuf=65536,response={response},qop=auth"
        )
        .into_bytes())
    }

    /// Checks the server's final token: its `rspauth` proves it knew the password.
    pub fn finish(&self, token: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(token).map_err(|_| "final token is not UTF-8")?;
        let d = directives(text)?;
        match (d.get("rspauth"), &self.expected_rspauth) {
            (Some(got), Some(want)) if got.eq_ignore_ascii_case(want) => Ok(()),
            (Some(_), Some(_)) => {
                Err("the server's rspauth is wrong: it does not know the password".into())
            }
            _ => Err("the server answered without rspauth".into()),
        }
    }
}

/// A quoted-string's content (RFC 2831): `"` and `\` escaped.
fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// What both sides' digests are computed from.
struct Secret<'a> {
    user: &'a str,
    realm: &'a str,
    password: &'a str,
    utf8: bool,
    nonce: &'a str,
    cnonce: &'a str,
    nc: &'a str,
    authzid: Option<&'a str>,
}

impl Secret<'_> {
    /// RFC 2831 2.1.2.1: `HEX(KD(HEX(H(A1)), nonce:nc:cnonce:qop:HEX(H(A2))))` with `a2`.
    fn response(&self, a2: &str) -> String {
        let mut inner = Md5::new();
        inner.update(self.encode(self.user));
        inner.update(b":");
        inner.update(self.encode(self.realm));
        inner.update(b":");
        inner.update(self.encode(self.password));
        let mut a1 = inner.finalize().to_vec();
        a1.extend_from_slice(format!(":{}:{}", self.nonce, self.cnonce).as_bytes());
        if let Some(authzid) = self.authzid {
            a1.extend_from_slice(format!(":{authzid}").as_bytes());
        }
        let ha1 = hex(&Md5::digest(&a1));
        let ha2 = hex(&Md5::digest(a2.as_bytes()));
        let kd = format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            self.nonce, self.nc, self.cnonce
        );
        hex(&Md5::digest(kd.as_bytes()))
    }

    /// User, realm and password are hashed as UTF-8 when the client said `charset=utf-8`,
    /// otherwise as ISO 8859-1 (RFC 2831), which is the same for ASCII.
    fn encode(&self, s: &str) -> Vec<u8> {
        if self.utf8 || !s.chars().all(|c| (c as u32) < 256) {
            s.as_bytes().to_vec()
        } else {
            s.chars().map(|c| c as u8).collect()
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `key=value` and `key="quoted, value"` directives, comma-separated (RFC 2831's `#rule`).
fn directives(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("digest response format violation near {key:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err("digest response format violation: open quote".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, as pure-sasl and Java compute it, to drive the server.
    fn client_response(challenge: &str, user: &str, password: &str, cnonce: &str) -> String {
        let mut client = DigestClient::new(CLIENTS);
        let r = client.respond(challenge.as_bytes(), user, password, cnonce);
        String::from_utf8(r.unwrap()).unwrap()
    }

    fn users(user: &str) -> Option<String> {
        (user == "alice").then(|| "alice-secret".to_owned())
    }

    #[test]
    fn a_right_password_completes_with_rspauth() {
        let mut m = DigestMd5::new("OA6MG9tEQGm2hh".into());
        let DigestStep::Challenge(c) = m.step(b"", users).unwrap() else {
            panic!("expected a challenge")
        };
        let c = String::from_utf8(c).unwrap();
        assert_eq!(
            c,
            "realm=\"zk-sasl-md5\",nonce=\"OA6MG9tEQGm2hh\",charset=utf-8,algorithm=md5-sess"
        );
        let response = client_response(&c, "alice", "alice-secret", "OA6MHXh6VqTrRk");
        let DigestStep::Complete { token, user } = m.step(response.as_bytes(), users).unwrap()
        else {
            panic!("expected completion")
        };
        assert_eq!(user, "alice");
        let d = directives(std::str::from_utf8(&token).unwrap()).unwrap();
        let expected = Secret {
            user: "alice",
            realm: CLIENTS.realm,
            password: "alice-secret",
            utf8: true,
            nonce: "OA6MG9tEQGm2hh",
            cnonce: "OA6MHXh6VqTrRk",
            nc: "00000001",
            authzid: None,
        }
        .response(&format!(":{}", CLIENTS.digest_uri));
        assert_eq!(d["rspauth"], expected);
        assert!(m.step(b"", users).is_err(), "nothing after completion");
    }

    #[test]
    fn rfc_2831_example_digest() {
        // RFC 2831 section 4's IMAP example (digest-uri "imap/elwood.innosoft.com").
        let s = Secret {
            user: "chris",
            realm: "elwood.innosoft.com",
            password: "secret",
            utf8: false,
            nonce: "OA6MG9tEQGm2hh",
            cnonce: "OA6MHXh6VqTrRk",
            nc: "00000001",
            authzid: None,
        };
        assert_eq!(
            s.response("AUTHENTICATE:imap/elwood.innosoft.com"),
            "d388dad90d4bbd760a152321f2143af7"
        );
        assert_eq!(
            s.response(":imap/elwood.innosoft.com"),
            "ea40f60335c427b5527b84dbabcdfffd"
        );
    }

    #[test]
    fn wrong_password_unknown_user_and_garbage_are_refused() {
        let start = |m: &mut DigestMd5| match m.step(b"", users).unwrap() {
            DigestStep::Challenge(c) => String::from_utf8(c).unwrap(),
            _ => unreachable!(),
        };
        let mut m = DigestMd5::new("n1".into());
        let c = start(&mut m);
        let wrong = client_response(&c, "alice", "guess", "c");
        assert!(m
            .step(wrong.as_bytes(), users)
            .unwrap_err()
            .contains("wrong password"));

        let mut m = DigestMd5::new("n2".into());
        let c = start(&mut m);
        let bob = client_response(&c, "bob", "x", "c");
        assert!(m
            .step(bob.as_bytes(), users)
            .unwrap_err()
            .contains("cannot acquire password"));

        let mut m = DigestMd5::new("n3".into());
        start(&mut m);
        assert!(m.step(b"username=\"alice\",nonce=\"", users).is_err());
        assert!(m.step(&[0xff, 0xfe], users).is_err());

        let mut m = DigestMd5::new("n4".into());
        assert!(m.step(b"initial", users).is_err());

        let mut m = DigestMd5::new("n5".into());
        let c = start(&mut m);
        let replayed = client_response(&c, "alice", "alice-secret", "c").replace("n5", "n4");
        assert!(m
            .step(replayed.as_bytes(), users)
            .unwrap_err()
            .contains("nonce"));
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;

    fn users(user: &str) -> Option<String> {
        (user == "learner").then(|| "learner-secret".to_owned())
    }

    /// One whole exchange between [`DigestClient`] and [`DigestMd5`] for `service`s; the
    /// outcome of the server's check and of the client's check of its answer.
    fn exchange(server: Service, client: Service, password: &str) -> Result<String, String> {
        let mut s = DigestMd5::for_service("nonce-1".into(), server);
        let DigestStep::Challenge(c) = s.step(b"", users)? else {
            panic!("a challenge first")
        };
        let mut cl = DigestClient::new(client);
        let response = cl.respond(&c, "learner", password, "cnonce-1")?;
        match s.step(&response, users)? {
            DigestStep::Complete { token, user } => cl.finish(&token).map(|()| user),
            DigestStep::Challenge(_) => panic!("two steps"),
        }
    }

    #[test]
    fn members_log_in_with_the_quorum_service() {
        assert_eq!(
            exchange(QUORUM, QUORUM, "learner-secret").unwrap(),
            "learner"
        );
        let wrong = exchange(QUORUM, QUORUM, "guess").unwrap_err();
        assert!(wrong.contains("wrong password"), "{wrong}");
        // A client's login is not a member's, nor the other way round.
        let mismatched = exchange(QUORUM, CLIENTS, "learner-secret").unwrap_err();
        assert!(mismatched.contains("mismatched URI"), "{mismatched}");
    }

    #[test]
    fn a_server_that_does_not_know_the_password_is_caught() {
        let mut cl = DigestClient::new(QUORUM);
        let challenge = br#"realm="zk-quorum-sasl-md5",nonce="n",charset=utf-8,algorithm=md5-sess"#;
        cl.respond(challenge, "learner", "learner-secret", "c")
            .unwrap();
        assert!(cl
            .finish(b"rspauth=00000000000000000000000000000000")
            .is_err());
        assert!(cl.finish(b"").is_err());
        assert!(DigestClient::new(QUORUM)
            .respond(b"realm=\"r\"", "u", "p", "c")
            .is_err());
    }
}
