//! A connection that is either plain TCP or TLS over TCP, so the relay code is
//! the same for both without boxing every read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::TcpConfig;

/// Sets `TCP_NODELAY` (the protocol's messages are small and answered at once) and the
/// dead-peer detection of `[tcp]` on a client or server socket.
pub fn tune(tcp: &TcpStream, cfg: &TcpConfig) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let socket = SockRef::from(tcp);
    if cfg.keepalive_idle_s > 0 {
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(cfg.keepalive_idle_s))
            .with_interval(Duration::from_secs(cfg.keepalive_interval_s))
            .with_retries(cfg.keepalive_count);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    if cfg.user_timeout_ms > 0 {
        socket.set_tcp_user_timeout(Some(Duration::from_millis(cfg.user_timeout_ms)))?;
    }
    Ok(())
}

/// Plain or TLS stream; `T` is tokio-rustls' server or client TLS stream.
#[derive(Debug)]
pub enum Stream<T> {
    /// Cleartext TCP.
    Plain(TcpStream),
    /// TLS; boxed because the TLS state is large and most time is spent elsewhere.
    Tls(Box<T>),
}

impl<T> Stream<T> {
    /// True for TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The client side of a proxy connection.
pub type ClientStream = Stream<tokio_rustls::server::TlsStream<TcpStream>>;
/// The server side of a proxy connection.
pub type ServerStream = Stream<tokio_rustls::client::TlsStream<TcpStream>>;
