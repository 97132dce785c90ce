//! The server side of SASL GSSAPI (Kerberos, RFC 4752), as Java's `GssKrb5Server` runs it for
//! ZooKeeper, on the system's MIT Kerberos (`libgssapi`).
//!
//! The exchange: the client's tokens go to `gss_accept_sec_context` until the context is
//! established (its AP-REP goes back when the client asked for mutual authentication, and the
//! client answers it with an empty token). Then the server offers its security layers in a
//! wrapped 4-byte message (`auth` only, as ZooKeeper offers, and a 64 KiB buffer); the client
//! answers with its choice and, optionally, an authorization id. Then the client is the
//! context's source principal, `alice@REALM`.
//!
//! [`Initiator`] is the client's side, for a member logging in to another (`QuorumLearner`).
//!
//! The keytab and krb5.conf are MIT's to find: `KRB5_KTNAME` and `KRB5_CONFIG`, which the binary
//! sets from the JAAS `keyTab` and `-Djava.security.krb5.conf` before any thread starts.

use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext, ServerCtx};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{OidSet, GSS_MECH_KRB5, GSS_NT_KRB5_PRINCIPAL};
use std::sync::{Arc, Mutex, PoisonError};

/// The security layers the server offers: bit 1, no protection (`auth`), as ZooKeeper's.
const LAYER_NONE: u8 = 0x01;
/// The largest message it takes with a layer (65536), in the offer's three bytes.
const MAX_BUFFER: [u8; 3] = [0x01, 0x00, 0x00];

/// Where an exchange is.
enum Stage {
    /// Taking the client's context tokens.
    Accepting,
    /// The context is up and its last token (the AP-REP) sent; the client's empty answer comes
    /// next, then the offer.
    Established,
    /// The offer is out; the client's choice comes next.
    Offered,
    Done,
}

/// One client's GSSAPI exchange.
pub struct Gssapi {
    ctx: ServerCtx,
    stage: Stage,
    peer: String,
}

/// What a step gives.
#[derive(Debug, PartialEq, Eq)]
pub enum GssStep {
    /// Send this token; the client answers it.
    Challenge(Vec<u8>),
    /// Authenticated as this principal; the final answer carries no token.
    Complete { principal: String },
}

/// The acceptor credentials of a server login, acquired from the keytab at its first use and
/// kept; shared by clones.
#[derive(Clone, Default)]
pub struct Acceptor(Arc<Mutex<Option<Cred>>>);

impl Acceptor {
    /// The credentials for `principal`, from the keytab the first time (run it on a blocking
    /// thread: that reads the keytab).
    pub fn cred(&self, principal: &str) -> Result<Cred, String> {
        let mut cached = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cred) = &*cached {
            return Ok(cred.clone());
        }
        Ok(cached.insert(acceptor(principal)?).clone())
    }
}

/// The server's acceptor credentials for `principal` (`zookeeper/host@REALM`), from the keytab.
fn acceptor(principal: &str) -> Result<Cred, String> {
    let name = Name::new(principal.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
        .map_err(|e| format!("bad principal {principal:?}: {e}"))?;
    let mut mechs = OidSet::new();
    mechs.add(GSS_MECH_KRB5).map_err(|e| e.to_string())?;
    Cred::acquire(Some(&name), None, CredUsage::Accept, Some(&mechs))
        .map_err(|e| format!("no keytab entry for {principal} (KRB5_KTNAME, JAAS keyTab): {e}"))
}

impl Gssapi {
    pub fn new(cred: Cred) -> Gssapi {
        Gssapi {
            ctx: ServerCtx::new(Some(cred)),
            stage: Stage::Accepting,
            peer: String::new(),
        }
    }

    /// Takes the client's next token; an error says what went wrong (a ticket for another
    /// service, a forged or replayed token, a bad layer choice).
    pub fn step(&mut self, token: &[u8]) -> Result<GssStep, String> {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Accepting => {
                let out = self
                    .ctx
                    .step(token, None)
                    .map_err(|e| format!("GSS accept failed: {e}"))?;
                if !self.ctx.is_complete() {
                    self.stage = Stage::Accepting;
                    return Ok(GssStep::Challenge(
                        out.map(|b| b.to_vec()).unwrap_or_default(),
                    ));
                }
                self.peer = self
                    .ctx
                    .source_name()
                    .map_err(|e| format!("no client name: {e}"))?
                    .to_string();
                match out {
                    Some(ap_rep) if !ap_rep.is_empty() => {
                        self.stage = Stage::Established;
                        Ok(GssStep::Challenge(ap_rep.to_vec()))
                    }
                    _ => self.offer(),
                }
            }
            Stage::Established => {
                if !token.is_empty() {
                    return Err("the client's answer to the AP-REP should be empty".into());
                }
                self.offer()
            }
            Stage::Offered => self.choice(token),
            Stage::Done => Err("GSSAPI authentication is already complete".into()),
        }
    }

    /// The wrapped offer: which layers, and how large a buffer (RFC 4752 3.1).
    fn offer(&mut self) -> Result<GssStep, String> {
        let offer = [LAYER_NONE, MAX_BUFFER[0], MAX_BUFFER[1], MAX_BUFFER[2]];
        let wrapped = self
            .ctx
            .wrap(false, &offer)
            .map_err(|e| format!("cannot wrap the layer offer: {e}"))?;
        self.stage = Stage::Offered;
        Ok(GssStep::Challenge(wrapped.to_vec()))
    }

    /// The client's wrapped choice: a layer the server offered, its buffer size, and an
    /// authorization id (logged; ZooKeeper names the client by its principal).
    fn choice(&mut self, token: &[u8]) -> Result<GssStep, String> {
        let plain = self
            .ctx
            .unwrap(token)
            .map_err(|e| format!("cannot unwrap the client's layer choice: {e}"))?;
        if plain.len() < 4 {
            return Err("the client's layer choice is shorter than 4 bytes".into());
        }
        if plain[0] & LAYER_NONE == 0 {
            return Err(format!(
                "the client chose security layer {:#04x}; ZooKeeper offers none (auth) only",
                plain[0]
            ));
        }
        let authzid = String::from_utf8_lossy(&plain[4..]);
        if !authzid.is_empty() && authzid != self.peer {
            tracing::info!(principal = %self.peer, %authzid, "GSSAPI client asked for another authorization id; it is named by its principal");
        }
        Ok(GssStep::Complete {
            principal: self.peer.clone(),
        })
    }
}

/// Where a login is.
enum InitStage {
    /// Building the context: the AP-REQ out, the AP-REP back.
    Context,
    /// The context is up; the server's wrapped layer offer comes next.
    Layers,
    Done,
}

/// The client's side of GSSAPI, as Java's `GssKrb5Client` runs it, for a member logging in to
/// another as its `QuorumLearner` principal. Its key comes from the client keytab
/// (`KRB5_CLIENT_KTNAME`, which the binary sets from the JAAS `keyTab`). Making one and its
/// first step may ask the KDC for tickets, so they run on a blocking thread.
pub struct Initiator {
    ctx: ClientCtx,
    stage: InitStage,
}

impl Initiator {
    /// Logs in as `principal` to talk to `target` (`zkquorum/host@REALM`), asking for mutual
    /// authentication: the member dialed proves itself too.
    pub fn new(principal: &str, target: &str) -> Result<Initiator, String> {
        let me = Name::new(principal.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
            .map_err(|e| format!("bad principal {principal:?}: {e}"))?;
        let mut mechs = OidSet::new();
        mechs.add(GSS_MECH_KRB5).map_err(|e| e.to_string())?;
        let cred =
            Cred::acquire(Some(&me), None, CredUsage::Initiate, Some(&mechs)).map_err(|e| {
                format!("cannot log in as {principal} (KRB5_CLIENT_KTNAME, JAAS keyTab): {e}")
            })?;
        let target_name = Name::new(target.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
            .map_err(|e| format!("bad service principal {target:?}: {e}"))?;
        let flags = CtxFlags::GSS_C_MUTUAL_FLAG;
        Ok(Initiator {
            ctx: ClientCtx::new(Some(cred), target_name, flags, Some(GSS_MECH_KRB5)),
            stage: InitStage::Context,
        })
    }

    /// The first token: the AP-REQ, with a ticket for the target.
    pub fn start(&mut self) -> Result<Vec<u8>, String> {
        self.context_step(None)
    }

    /// Takes the server's next token and gives the answer to send.
    pub fn step(&mut self, token: &[u8]) -> Result<Vec<u8>, String> {
        match self.stage {
            InitStage::Context => self.context_step(Some(token)),
            InitStage::Layers => self.choose(token),
            InitStage::Done => Err("the GSSAPI login is already complete".into()),
        }
    }

    /// Whether the login has answered the layer offer (the server's success is next).
    pub fn is_done(&self) -> bool {
        matches!(self.stage, InitStage::Done)
    }

    fn context_step(&mut self, token: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let out = self
            .ctx
            .step(token, None)
            .map_err(|e| format!("GSS init failed: {e}"))?;
        if self.ctx.is_complete() {
            self.stage = InitStage::Layers;
        }
        Ok(out.map(|b| b.to_vec()).unwrap_or_default())
    }

    /// Answers the server's wrapped offer with no security layer (`auth`), as ZooKeeper's
    /// members do, and no authorization id: the server names us by our principal.
    fn choose(&mut self, offer: &[u8]) -> Result<Vec<u8>, String> {
        let plain = self
            .ctx
            .unwrap(offer)
            .map_err(|e| format!("cannot unwrap the server's layer offer: {e}"))?;
        if plain.len() < 4 || plain[0] & LAYER_NONE == 0 {
            return Err("the server does not offer the security layer none (auth)".into());
        }
        let choice = [LAYER_NONE, MAX_BUFFER[0], MAX_BUFFER[1], MAX_BUFFER[2]];
        let wrapped = self
            .ctx
            .wrap(false, &choice)
            .map_err(|e| format!("cannot wrap the layer choice: {e}"))?;
        self.stage = InitStage::Done;
        Ok(wrapped.to_vec())
    }
}
