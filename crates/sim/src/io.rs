//! Corral's I/O seams filled by the simulation: turmoil's network, a wall clock that follows
//! simulated time (with a per-member skew), and each member's [`MemDisk`].

use corral_io::net::{BoxFuture, ReadHalf, WriteHalf};
use corral_io::{BoxStream, Io, Listener, Net, Stream, WallClock};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where simulated wall-clock time starts: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

#[derive(Debug)]
pub struct SimNet;

struct SimStream(turmoil::net::TcpStream);

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Stream for SimStream {
    fn split(self: Box<Self>) -> (ReadHalf, WriteHalf) {
        let (rd, wr) = self.0.into_split();
        (Box::new(rd), Box::new(wr))
    }
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            Ok((Box::new(SimStream(stream)) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Net for SimNet {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            Ok(Box::new(SimStream(stream)) as BoxStream)
        })
    }

    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        // A member binds its own name's address; turmoil binds the host's.
        let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        Box::pin(async move {
            let port = port.ok_or_else(|| io::Error::other("no port in the address"))?;
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }
}

/// Wall-clock time as a member sees it: simulated time since the start, plus its skew.
#[derive(Debug)]
pub struct SimClock {
    pub skew_ms: i64,
}

impl WallClock for SimClock {
    fn now_ms(&self) -> i64 {
        EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as i64 + self.skew_ms
    }
}

/// The I/O of one simulated member.
pub fn member_io(disk: corral_io::mem_disk::MemDisk, skew_ms: i64) -> Io {
    Io {
        disk: Arc::new(disk),
        net: Arc::new(SimNet),
        clock: Arc::new(SimClock { skew_ms }),
        inline_blocking: true,
        fork_snapshots: false,
    }
}
