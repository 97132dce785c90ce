//! The network: TCP streams and listeners behind traits, so the simulation can carry the same
//! peer and client protocols over its simulated network.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// A connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin {
    /// Splits into halves a reader and a writer task can own.
    fn split(self: Box<Self>) -> (ReadHalf, WriteHalf);
}

pub type BoxStream = Box<dyn Stream>;

/// A bound listening socket.
pub trait Listener: Send {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

pub trait Net: Send + Sync + Debug + 'static {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>>;
    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
}

/// The machine's TCP, with Nagle's algorithm off on every stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealNet;

impl Stream for tokio::net::TcpStream {
    fn split(self: Box<Self>) -> (ReadHalf, WriteHalf) {
        let (rd, wr) = self.into_split();
        (Box::new(rd), Box::new(wr))
    }
}

/// An in-memory stream: the admin console's own session with the server it runs in.
impl Stream for tokio::io::DuplexStream {
    fn split(self: Box<Self>) -> (ReadHalf, WriteHalf) {
        let (rd, wr) = tokio::io::split(*self);
        (Box::new(rd), Box::new(wr))
    }
}

struct RealListener(tokio::net::TcpListener);

impl Listener for RealListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Box::new(stream) as BoxStream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Net for RealNet {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            Ok(Box::new(RealListener(listener)) as Box<dyn Listener>)
        })
    }
}
