//! TLS on the client port, with rustls: the stores ZooKeeper's operators bring (PEM, PKCS#12, JKS),
//! client certificates as `x509` identities, and certificates reloaded when their files change.
//!
//! A connection on a TLS port (`secureClientPort`), or on a unified port
//! (`client.portUnification`) whose first byte opens a TLS handshake, is handed to
//! [`TlsAcceptor::accept`] before it reaches `connection::serve`; what comes out is a plain
//! byte stream and the identities its certificate proves.

pub mod config;
mod jks;
mod quorum;
mod reload;
mod stores;

pub use quorum::QuorumNet;

use crate::budget::Global;
use bytes::{Buf, Bytes};
use config::{ClientAuth, TlsConfig, TlsSide};
use corral_io::net::{ReadHalf, WriteHalf};
use corral_io::{BoxStream, Stream};
use corral_proto::records::Id;
use reload::Reloading;
use rustls::server::WebPkiClientVerifier;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The first byte of a TLS record that carries a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// Accepts TLS connections with the configured stores, reloading them when their files change.
pub struct TlsAcceptor {
    cfg: Arc<TlsConfig>,
    server: Reloading<rustls::ServerConfig>,
    global: Arc<Global>,
}

/// Why a connection did not get through its TLS handshake.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    #[error("{0} TLS handshakes under way already (netty.server.outstandingHandshake.limit)")]
    TooMany(usize),
}

impl TlsAcceptor {
    /// Loads the stores; an error says which file and what is wrong with it.
    pub fn new(cfg: Arc<TlsConfig>, global: Arc<Global>) -> Result<TlsAcceptor, String> {
        let side = cfg.client.clone();
        let server = Reloading::new("client port", Box::new(move || load(&side)))?;
        Ok(TlsAcceptor {
            cfg,
            server,
            global,
        })
    }

    /// Runs the server side of the handshake on `stream`, bounded in time and in number; on
    /// success, the encrypted stream and the identities the client's certificate proves.
    pub async fn accept(
        &self,
        stream: BoxStream,
        peer: SocketAddr,
    ) -> Result<(BoxStream, Vec<Id>), HandshakeError> {
        let outstanding = self.global.tls_outstanding.fetch_add(1, Relaxed);
        let _guard = Outstanding(&self.global);
        if outstanding >= self.cfg.handshake_limit {
            self.global.tls_exceeded.fetch_add(1, Relaxed);
            return Err(HandshakeError::TooMany(outstanding));
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.get());
        let timeout = Duration::from_millis(self.cfg.handshake_timeout_ms);
        let result = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Err(_) => Err(HandshakeError::Timeout(timeout)),
            Ok(Err(e)) => Err(HandshakeError::Failed(e)),
            Ok(Ok(tls)) => {
                let ids = self.identities(&tls, peer);
                Ok((Box::new(Joined(tls)) as BoxStream, ids))
            }
        };
        if result.is_err() {
            self.global.tls_failed.fetch_add(1, Relaxed);
        }
        result
    }

    /// The `x509` identity of the client's certificate (its subject, as Java writes it), and
    /// `super` when it is the configured super user.
    fn identities(
        &self,
        tls: &tokio_rustls::server::TlsStream<BoxStream>,
        peer: SocketAddr,
    ) -> Vec<Id> {
        let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
            return Vec::new();
        };
        let subject = match stores::subject_rfc2253(leaf) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot read the client certificate's subject; no x509 identity");
                return Vec::new();
            }
        };
        tracing::info!(%peer, %subject, "TLS client authenticated by certificate");
        let mut ids = vec![Id::new("x509", &subject)];
        if self.cfg.x509_super_user.as_deref() == Some(subject.as_str()) {
            ids.push(Id::new("super", &subject));
        }
        ids
    }
}

/// Counts a handshake under way for as long as it lives.
struct Outstanding<'a>(&'a Global);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.tls_outstanding.fetch_sub(1, Relaxed);
    }
}

/// Builds the rustls configuration from the stores, as they are on disk now; and the files.
fn load(cfg: &TlsSide) -> Result<(rustls::ServerConfig, Vec<PathBuf>), String> {
    let mut files = Vec::new();
    let (chain, key) = stores::key_store(&cfg.key_store, cfg.prefix)?;
    files.extend(cfg.key_store.location.clone());
    let provider = Arc::new(provider(cfg)?);
    let versions = versions(cfg)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("{}.enabledProtocols with its ciphersuites: {e}", cfg.prefix))?;
    let builder = match cfg.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let roots = stores::trust_store(&cfg.trust_store, cfg.prefix)?;
            files.extend(cfg.trust_store.location.clone());
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Want {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| {
                format!(
                    "{}.trustStore: cannot verify clients with it: {e}",
                    cfg.prefix
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "{}.keyStore: the key does not go with the certificate: {e}",
            cfg.prefix
        )
    })?;
    Ok((server, files))
}

/// ring's cipher suites, narrowed to `ssl.ciphersuites` when it names some. Names are IANA's
/// (as Java's); ones rustls does not implement (CBC suites, say) are skipped with a warning.
fn provider(cfg: &TlsSide) -> Result<rustls::crypto::CryptoProvider, String> {
    // ring, not aws-lc-rs: it builds with a plain C compiler. rustls marks it deprecated for
    // lacking post-quantum key exchange, which ZooKeeper's Java clients do not offer either.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if cfg.ciphersuites.is_empty() {
        return Ok(provider);
    }
    let name =
        |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite()).replace("TLS13_", "TLS_");
    let (known, unknown): (Vec<_>, Vec<_>) = cfg
        .ciphersuites
        .iter()
        .partition(|want| provider.cipher_suites.iter().any(|s| &name(s) == *want));
    if !unknown.is_empty() {
        tracing::warn!(
            prefix = cfg.prefix,
            ?unknown,
            "ciphersuites names suites Corral does not offer; skipped"
        );
    }
    provider.cipher_suites.retain(|s| known.contains(&&name(s)));
    if provider.cipher_suites.is_empty() {
        return Err(format!(
            "{}.ciphersuites: none of {:?} is offered",
            cfg.prefix, cfg.ciphersuites
        ));
    }
    Ok(provider)
}

/// `ssl.enabledProtocols`: TLSv1.2 and TLSv1.3 (older ones are not offered; they are skipped
/// with a warning).
fn versions(cfg: &TlsSide) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let mut out = Vec::new();
    for p in &cfg.protocols {
        match p.as_str() {
            "TLSv1.2" => out.push(&rustls::version::TLS12),
            "TLSv1.3" => out.push(&rustls::version::TLS13),
            "TLS" => out.extend([&rustls::version::TLS12, &rustls::version::TLS13]),
            other => tracing::warn!(
                prefix = cfg.prefix,
                protocol = other,
                "enabledProtocols: not offered (TLSv1.2 and TLSv1.3 are)"
            ),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{}.enabledProtocols: none of {:?} is offered",
            cfg.prefix, cfg.protocols
        ));
    }
    Ok(out)
}

/// What a connection on a unified port turned out to be.
pub enum Sniffed {
    Tls(BoxStream),
    Plain(BoxStream),
}

/// Reads the first byte of a connection on a unified port: a TLS handshake record starts with
/// 0x16, which no ZooKeeper request (a length's high byte) or four-letter word does. The byte
/// is given back to whoever reads the stream next.
pub async fn sniff(mut stream: BoxStream, timeout: Duration) -> std::io::Result<Sniffed> {
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(timeout, stream.read(&mut first))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "nothing sent"))??;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let rewound = rewound(&first, stream);
    Ok(if first[0] == TLS_HANDSHAKE {
        Sniffed::Tls(rewound)
    } else {
        Sniffed::Plain(rewound)
    })
}

/// `stream` with `prefix`, bytes already read from it to tell what it carries, put back in
/// front for the next reader.
pub(crate) fn rewound(prefix: &[u8], stream: BoxStream) -> BoxStream {
    Box::new(Joined(Rewound {
        prefix: Bytes::copy_from_slice(prefix),
        inner: stream,
    }))
}

/// A stream with bytes already read from it put back in front.
struct Rewound {
    prefix: Bytes,
    inner: BoxStream,
}

/// A stream whose halves a reader and a writer task can own (`tokio::io::split`).
struct Joined<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Joined<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Joined<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for Joined<T> {
    fn split(self: Box<Self>) -> (ReadHalf, WriteHalf) {
        let (rd, wr) = tokio::io::split(self.0);
        (Box::new(rd), Box::new(wr))
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(protocols: &[&str], ciphersuites: &[&str]) -> TlsSide {
        let mut cfg = TlsConfig::default();
        cfg.client.protocols = protocols.iter().map(|p| p.to_string()).collect();
        cfg.client.ciphersuites = ciphersuites.iter().map(|c| c.to_string()).collect();
        cfg.client
    }

    #[test]
    fn protocols_and_suites_by_their_java_names() {
        let both = versions(&side(&["TLSv1.2", "TLSv1.3"], &[])).unwrap();
        assert_eq!(both.len(), 2);
        let one = versions(&side(&["TLSv1", "TLSv1.3"], &[])).unwrap();
        assert_eq!(one.len(), 1, "TLSv1 is not offered");
        assert!(versions(&side(&["SSLv3"], &[])).is_err());
        let suites = [
            "TLS_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        ];
        let p = provider(&side(&[], &suites)).unwrap();
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            names,
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        assert!(provider(&side(&[], &["TLS_RSA_WITH_RC4_128_MD5"])).is_err());
    }
}
