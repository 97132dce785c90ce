//! TLS between members (`sslQuorum=true` with `ssl.quorum.*`): a [`Net`] that wraps the one the
//! replicated log dials and listens with. Each side shows its certificate and checks the
//! other's against the quorum trust store; the dialing member also checks that the member it
//! dialed is named in its certificate (`ssl.quorum.hostnameVerification`, on by default).
//! Replication itself does not know: it gets plain byte streams. The stores are loaded again
//! when their files change.

use super::config::{ClientAuth, TlsSide};
use super::reload::Reloading;
use super::{load, provider, stores, versions, Joined};
use crate::gate::{gated, Check};
use corral_io::net::BoxFuture;
use corral_io::{BoxStream, Listener, Net};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a member may take over the TLS handshake of a member link.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The replicated log's network, with TLS on every member link.
pub struct QuorumNet {
    inner: Arc<dyn Net>,
    limits: Arc<crate::budget::Global>,
    configs: Arc<Reloading<Configs>>,
    /// `ssl.quorum.hostnameVerification`: each end checks the other's certificate names it.
    check_names: bool,
}

impl std::fmt::Debug for QuorumNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumNet")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Both ends of a member link: the listening member's, and the dialing member's.
struct Configs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl QuorumNet {
    /// Loads the quorum stores; an error names the file and what is wrong with it. They are
    /// loaded again when their files change (ZooKeeper's `sslQuorumReloadCertFiles`).
    pub fn new(
        inner: Arc<dyn Net>,
        side: &TlsSide,
        limits: Arc<crate::budget::Global>,
    ) -> Result<QuorumNet, String> {
        let check_names = side.hostname_verification;
        let side = side.clone();
        let configs = Reloading::new("member links", Box::new(move || configs(&side)))?;
        Ok(QuorumNet {
            inner,
            limits,
            configs: Arc::new(configs),
            check_names,
        })
    }
}

fn configs(side: &TlsSide) -> Result<(Configs, Vec<PathBuf>), String> {
    let mut server_side = side.clone();
    // A member must prove itself to the member it dials, whatever clientAuth says.
    server_side.client_auth = ClientAuth::Need;
    let (server, files) = load(&server_side)?;
    let provider = Arc::new(provider(side)?);
    let roots = Arc::new(stores::trust_store(&side.trust_store, side.prefix)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("{}.trustStore: {e}", side.prefix))?;
    let verifier = Arc::new(MemberVerifier {
        webpki,
        check_name: side.hostname_verification,
    });
    let (chain, key) = stores::key_store(&side.key_store, side.prefix)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions(side)?)
        .map_err(|e| format!("{}: {e}", side.prefix))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{}.keyStore: {e}", side.prefix))?;
    let configs = Configs {
        server: Arc::new(server),
        client: Arc::new(client),
    };
    Ok((configs, files))
}

impl Net for QuorumNet {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>> {
        let inner = self.inner.connect(addr);
        let connector = tokio_rustls::TlsConnector::from(self.configs.get().client.clone());
        let addr = addr.to_owned();
        Box::pin(async move {
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = inner.await?;
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
                .inspect_err(
                    |e| tracing::warn!(member = %addr, error = %e, "TLS to a member failed"),
                )?;
            Ok(Box::new(Joined(tls)) as BoxStream)
        })
    }

    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let inner = self.inner.bind(addr);
        let (configs, check_names) = (self.configs.clone(), self.check_names);
        let limits = self.limits.clone();
        Box::pin(async move {
            let check: Check = Arc::new(move |stream, peer| {
                let acceptor = tokio_rustls::TlsAcceptor::from(configs.get().server.clone());
                Box::pin(handshake(acceptor, stream, peer, check_names))
            });
            gated(inner.await?, check, limits)
        })
    }
}

/// The TLS handshake of a member link that dialed this member; None when it is refused.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: BoxStream,
    peer: SocketAddr,
    check_names: bool,
) -> Option<BoxStream> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            if check_names {
                if let Err(why) = names_peer(leaf, peer).await {
                    tracing::warn!(%peer, %why, "refusing a member link: its certificate does not name it");
                    return None;
                }
            }
            Some(Box::new(Joined(tls)) as BoxStream)
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "refusing a member link: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, "refusing a member link: no TLS handshake in time");
            None
        }
    }
}

/// Whether the dialing member's certificate names the address it dials from, as ZooKeeper's
/// quorum checks its peers' host names: an IP address in it, or a DNS name that resolves to
/// the address. Without this, any certificate the quorum CA signed (a client's, a removed
/// member's) could open a member link.
async fn names_peer(leaf: Option<&CertificateDer<'_>>, peer: SocketAddr) -> Result<(), String> {
    let leaf = leaf.ok_or("no certificate")?;
    let (names_ip, dns) = stores::alt_names(leaf, peer.ip())?;
    if names_ip {
        return Ok(());
    }
    for name in &dns {
        let lookup = tokio::net::lookup_host((name.as_str(), peer.port()));
        if let Ok(Ok(addrs)) = tokio::time::timeout(Duration::from_secs(2), lookup).await {
            if addrs.map(|a| a.ip()).any(|ip| ip == peer.ip()) {
                return Ok(());
            }
        }
    }
    Err(format!("its names {dns:?} do not include {}", peer.ip()))
}

/// Checks a dialed member's certificate against the quorum trust store; its name too unless
/// `hostnameVerification=false`.
#[derive(Debug)]
struct MemberVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for MemberVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
