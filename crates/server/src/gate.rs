//! Member links that must pass a check before replication sees them: a TLS handshake
//! (`sslQuorum`), a SASL login (`quorum.auth.*`). Each accepted link's check runs on its own
//! task, so one slow or hostile peer does not hold up the others; at most
//! [`CHECKS_IN_FLIGHT`] run at once, and further links wait in the kernel's backlog.

use crate::budget::Global;
use corral_io::net::BoxFuture;
use corral_io::{BoxStream, Listener};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Member links being checked at once, per listener.
pub const CHECKS_IN_FLIGHT: usize = 64;

/// A link's check: the link to hand on, or None when it is refused (the check logs why).
pub type Check =
    Arc<dyn Fn(BoxStream, SocketAddr) -> BoxFuture<'static, Option<BoxStream>> + Send + Sync>;

/// The listener whose accepted links are those `check` lets through; `limits` counts the
/// times the checks in flight were at their bound.
pub fn gated(
    listener: Box<dyn Listener>,
    check: Check,
    limits: Arc<Global>,
) -> io::Result<Box<dyn Listener>> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(CHECKS_IN_FLIGHT);
    tokio::spawn(accept_and_check(listener, check, limits, tx));
    Ok(Box::new(Gated { local, ready: rx }))
}

async fn accept_and_check(
    mut listener: Box<dyn Listener>,
    check: Check,
    limits: Arc<Global>,
    ready: mpsc::Sender<io::Result<(BoxStream, SocketAddr)>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CHECKS_IN_FLIGHT));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = ready.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if ready.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if slots.available_permits() == 0 {
            limits.member_link_checks_exceeded.fetch_add(1, Relaxed);
            tracing::warn!(%peer, limit = CHECKS_IN_FLIGHT, "member links being checked are at their limit; this one waits");
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (check, ready) = (check.clone(), ready.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Some(stream) = check(stream, peer).await {
                let _ = ready.send(Ok((stream, peer))).await;
            }
        });
    }
}

struct Gated {
    local: SocketAddr,
    ready: mpsc::Receiver<io::Result<(BoxStream, SocketAddr)>>,
}

impl Listener for Gated {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            match self.ready.recv().await {
                Some(r) => r,
                None => Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "listener stopped",
                )),
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_io::net::RealNet;
    use corral_io::Net;

    #[tokio::test]
    async fn links_beyond_the_bound_wait_and_are_counted() {
        let limits = Arc::new(Global::default());
        let listener = RealNet.bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A check that never ends holds its slot for good.
        let stuck: Check = Arc::new(|_, _| Box::pin(std::future::pending()));
        let _gated = gated(listener, stuck, limits.clone()).unwrap();
        let mut links = Vec::new();
        for _ in 0..=CHECKS_IN_FLIGHT {
            links.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let counted = async {
            while limits.member_link_checks_exceeded.load(Relaxed) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), counted)
            .await
            .expect("the link over the bound is counted");
        assert_eq!(limits.member_link_checks_exceeded.load(Relaxed), 1);
    }
}
