//! The replicated log's network with SASL logins on member links (`quorum.auth.*`): a [`Net`]
//! that wraps the one replication dials and listens with (TLS's when `sslQuorum` is on, so the
//! login runs inside TLS). Replication itself does not know: it gets the links that logged in.

use super::quorum::{read_magic_tail, QuorumSasl, FIRST_BYTES_TIMEOUT, LOGIN_TIMEOUT, MAGIC_HEAD};
use crate::budget::Global;
use crate::gate::{gated, Check};
use corral_io::net::BoxFuture;
use corral_io::{BoxStream, Listener, Net};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

#[derive(Debug)]
pub struct SaslNet {
    inner: Arc<dyn Net>,
    sasl: Arc<QuorumSasl>,
    limits: Arc<Global>,
}

impl SaslNet {
    pub fn new(inner: Arc<dyn Net>, sasl: QuorumSasl, limits: Arc<Global>) -> SaslNet {
        SaslNet {
            inner,
            sasl: Arc::new(sasl),
            limits,
        }
    }
}

impl Net for SaslNet {
    /// Dials a member and, when `quorum.auth.learnerRequireSasl` says so, logs in to it first.
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>> {
        let inner = self.inner.connect(addr);
        let (sasl, addr) = (self.sasl.clone(), addr.to_owned());
        Box::pin(async move {
            let mut stream = inner.await?;
            if !sasl.learner_require {
                return Ok(stream);
            }
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
            let host = host.trim_matches(['[', ']']);
            let why = match timeout(LOGIN_TIMEOUT, sasl.log_in(&mut stream, host)).await {
                Ok(Ok(())) => return Ok(stream),
                Ok(Err(why)) => why,
                Err(_) => "no answer in time".to_owned(),
            };
            tracing::warn!(member = %addr, %why, "SASL login to a member failed; closing the link");
            Err(io::Error::new(io::ErrorKind::PermissionDenied, why))
        })
    }

    /// Listens for members; each link that dials in logs in before replication sees it.
    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let inner = self.inner.bind(addr);
        let (sasl, limits) = (self.sasl.clone(), self.limits.clone());
        Box::pin(async move {
            let check: Check =
                Arc::new(move |stream, peer| Box::pin(admit(sasl.clone(), stream, peer)));
            gated(inner.await?, check, limits)
        })
    }
}

/// Lets a member link through if it logs in, or if it does not try and
/// `quorum.auth.serverRequireSasl` is off; None when it is refused (logged).
async fn admit(
    sasl: Arc<QuorumSasl>,
    mut stream: BoxStream,
    peer: SocketAddr,
) -> Option<BoxStream> {
    // A member sends as soon as it dials: its login, or its first request.
    let mut head = [0u8; 4];
    match timeout(FIRST_BYTES_TIMEOUT, stream.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "a member link closed before its first bytes");
            return None;
        }
        Err(_) => {
            tracing::warn!(%peer, "refusing a member link: it sent nothing in time");
            return None;
        }
    }
    if head != MAGIC_HEAD {
        if sasl.server_require {
            tracing::warn!(%peer, "refusing a member link: it did not log in by SASL (quorum.auth.serverRequireSasl=true)");
            return None;
        }
        return Some(crate::tls::rewound(&head, stream));
    }
    let login = async {
        read_magic_tail(&mut stream)
            .await
            .map_err(|e| e.to_string())?;
        sasl.check(&mut stream).await
    };
    let why = match timeout(LOGIN_TIMEOUT, login).await {
        Ok(Ok(who)) => {
            tracing::info!(%peer, %who, "a member logged in by SASL");
            return Some(stream);
        }
        Ok(Err(why)) => why,
        Err(_) => "no login in time".to_owned(),
    };
    // The learner was told ERROR and gives the link up, whether or not this member requires
    // SASL.
    tracing::warn!(%peer, %why, "refusing a member link: its SASL login failed");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::quorum::tests::digest_sasl;
    use tokio::io::AsyncWriteExt;

    /// A connected pair of real TCP streams: (dialer's, listener's).
    async fn pair() -> (tokio::net::TcpStream, BoxStream, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialed = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (dialed, accepted) = tokio::join!(dialed, listener.accept());
        let (accepted, peer) = accepted.unwrap();
        (dialed.unwrap(), Box::new(accepted), peer)
    }

    #[tokio::test]
    async fn a_link_that_does_not_log_in_passes_only_where_sasl_is_not_required() {
        let frame = [0u8, 0, 0, 1, 7];
        for required in [false, true] {
            let mut sasl = digest_sasl("learner", "learner-secret");
            sasl.server_require = required;
            let (mut dialer, accepted, peer) = pair().await;
            dialer.write_all(&frame).await.unwrap();
            match admit(Arc::new(sasl), accepted, peer).await {
                // Replication reads the frame whole, first bytes included.
                Some(mut link) if !required => {
                    let mut got = [0u8; 5];
                    link.read_exact(&mut got).await.unwrap();
                    assert_eq!(got, frame);
                }
                None if required => {}
                other => panic!("required={required}: admitted={}", other.is_some()),
            }
        }
    }

    #[tokio::test]
    async fn a_member_logs_in_over_a_real_link() {
        let server = Arc::new(digest_sasl("unused", "unused"));
        for (password, admitted) in [("learner-secret", true), ("guess", false)] {
            let learner = digest_sasl("learner", password);
            let (mut dialer, accepted, peer) = pair().await;
            let (logged_in, link) = tokio::join!(
                learner.log_in(&mut dialer, "127.0.0.1"),
                admit(server.clone(), accepted, peer)
            );
            assert_eq!(logged_in.is_ok(), admitted, "{logged_in:?}");
            assert_eq!(link.is_some(), admitted);
        }
    }
}
