//! HTTPS on the admin port, as ZooKeeper's Jetty admin server does it: `admin.forceHttps`
//! (TLS only) or `admin.portUnification` (TLS or plain HTTP, told apart by the first byte),
//! with the members' key store (`ssl.quorum.keyStore.*`). Browsers bring no client
//! certificate, so none is asked for. Certificates reload when their files change, as the
//! client port's do.

use super::config::AdminTransport;
use crate::budget::Global;
use crate::tls::config::{ClientAuth, TlsConfig};
use crate::tls::{sniff, Sniffed, TlsAcceptor};
use corral_io::BoxStream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Connections through their handshake and waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// The TLS side of the admin port, built from the members' stores. Its handshakes are
/// counted and bounded apart from the client port's, so a flood on one port cannot hold up
/// the other.
pub fn acceptor(tls: &TlsConfig) -> Result<Arc<TlsAcceptor>, String> {
    let mut admin = tls.clone();
    admin.client = tls.quorum.clone();
    admin.client.client_auth = ClientAuth::None;
    let own = Arc::new(Global::default());
    Ok(Arc::new(TlsAcceptor::new(Arc::new(admin), own)?))
}

/// A listener whose connections have been through TLS (or were sniffed as plain HTTP on a
/// unified port) before the HTTP server sees them. Handshakes run on their own tasks, so a
/// client that stalls in one holds up nobody else.
pub struct SecureListener {
    ready: mpsc::Receiver<(BoxStream, AdminPeer)>,
    local: SocketAddr,
}

impl SecureListener {
    pub fn new(tcp: TcpListener, tls: Arc<TlsAcceptor>, transport: AdminTransport) -> Self {
        let local = tcp.local_addr().expect("a bound listener has an address");
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, tls, transport, tx));
        SecureListener { ready, local }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Arc<TlsAcceptor>,
    transport: AdminTransport,
    ready: mpsc::Sender<(BoxStream, AdminPeer)>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = ready.closed() => return,
        };
        let (tls, ready) = (tls.clone(), ready.clone());
        tokio::spawn(async move {
            let stream = Box::new(stream) as BoxStream;
            let secured = match transport {
                AdminTransport::Unified => match sniff(stream, Duration::from_secs(5)).await {
                    Ok(Sniffed::Plain(s)) => Some((s, false)),
                    Ok(Sniffed::Tls(s)) => handshake(&tls, s, peer).await.map(|s| (s, true)),
                    Err(_) => None,
                },
                _ => handshake(&tls, stream, peer).await.map(|s| (s, true)),
            };
            if let Some((s, tls)) = secured {
                let _ = ready.send((s, AdminPeer { addr: peer, tls })).await;
            }
        });
    }
}

async fn handshake(tls: &TlsAcceptor, stream: BoxStream, peer: SocketAddr) -> Option<BoxStream> {
    match tls.accept(stream, peer).await {
        Ok((s, _)) => Some(s),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "admin server: refusing a connection that failed its TLS handshake");
            None
        }
    }
}

/// An admin client: its address (what the console logs and shows as a login's client), and
/// whether its connection is under TLS (on a unified port, some are not).
#[derive(Debug, Clone, Copy)]
pub struct AdminPeer {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, SecureListener>>
    for AdminPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, SecureListener>) -> Self {
        *stream.remote_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>>
    for AdminPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        AdminPeer {
            addr: *stream.remote_addr(),
            tls: false,
        }
    }
}

impl axum::serve::Listener for SecureListener {
    type Io = BoxStream;
    type Addr = AdminPeer;

    async fn accept(&mut self) -> (BoxStream, AdminPeer) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended only because this listener is gone; wait to be dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<AdminPeer> {
        Ok(AdminPeer {
            addr: self.local,
            tls: true,
        })
    }
}
