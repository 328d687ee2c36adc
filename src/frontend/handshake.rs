//! From an accepted socket to a verified [`TenantContext`], or a clear FATAL error.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::startup::{self, ClientStartup};
use crate::admin::metrics::CancelOutcome;
use crate::auth::TenantContext;
use crate::config::RequireTls;
use crate::net::{ClientStream, Stream};
use crate::protocol::{self, PgError, ProxyError, backend, frontend::StartupPacket};
use crate::shared::Shared;
use crate::tls::ALPN_POSTGRESQL;

/// Largest password message accepted: a token, never a document.
pub const MAX_PASSWORD_MESSAGE: usize = 16 * 1024;

/// What a new connection turned out to be.
#[derive(Debug)]
pub enum Accepted {
    /// An authenticated client.
    Session(Box<Handshake>),
    /// A CancelRequest, already handled.
    Cancel,
}

/// An authenticated client, ready for a server connection.
#[derive(Debug)]
pub struct Handshake {
    /// The client's socket.
    pub stream: ClientStream,
    /// What the token says.
    pub context: TenantContext,
    /// Filtered startup parameters.
    pub startup: ClientStartup,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Why a handshake ended without a session.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// Socket or TLS failure.
    #[error("client connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client was refused with this error (already sent to it).
    #[error("client refused: {0}")]
    Refused(String),
}

/// Runs the handshake on a fresh connection.
pub async fn accept(tcp: TcpStream, peer: SocketAddr, shared: &Shared) -> Result<Accepted, FrontendError> {
    // One configuration from the first byte to the verdict, even if a reload lands meanwhile.
    let live = shared.live_full();
    let mut stream: ClientStream = Stream::Plain(tcp);
    let mut first = [0u8; 1];
    if let Stream::Plain(tcp) = &stream
        && tcp.peek(&mut first).await? == 1
        && first[0] == 0x16
    {
        // PG17 direct TLS: a TLS ClientHello instead of SSLRequest; ALPN is mandatory.
        stream = upgrade(stream, &live.client_tls).await?;
        if let Stream::Tls(tls) = &stream
            && tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL)
        {
            return Err(FrontendError::Refused("direct TLS without the postgresql ALPN".into()));
        }
    }
    let packet = loop {
        let (code, body) = read_startup_packet(&mut stream).await?;
        match code {
            protocol::SSL_REQUEST if !stream.is_tls() && live.client_tls.is_some() => {
                stream.write_all(b"S").await?;
                stream = upgrade(stream, &live.client_tls).await?;
            }
            protocol::SSL_REQUEST | protocol::GSSENC_REQUEST if !stream.is_tls() => stream.write_all(b"N").await?,
            protocol::CANCEL_REQUEST => {
                handle_cancel(&body, shared).await;
                return Ok(Accepted::Cancel);
            }
            version if version >> 16 == 3 => {
                break StartupPacket::parse(version, &body)
                    .ok_or_else(|| FrontendError::Refused("malformed startup packet".into()))?;
            }
            _ => {
                return refuse(&mut stream, shared, ProxyError::UnsupportedProtocol.into()).await;
            }
        }
    };
    let startup = match startup::filter(&packet) {
        Ok(s) => s,
        Err(e) => return refuse(&mut stream, shared, e).await,
    };
    if !stream.is_tls() && tls_required(live.config.listen.require_tls, peer) {
        return refuse(&mut stream, shared, ProxyError::TlsRequired { client: peer.ip().to_string() }.into()).await;
    }
    let mut out = BytesMut::new();
    let minor = packet.version & 0xffff;
    if minor > 0 || !startup.unsupported_options.is_empty() {
        backend::negotiate_protocol_version(&mut out, crate::protocol::PROTOCOL_3_0, &startup.unsupported_options);
    }
    backend::authentication(&mut out, 3);
    stream.write_all(&out).await?;
    let token = match read_password(&mut stream).await? {
        Ok(token) => token,
        Err(e) => {
            shared.metrics.auth_failure("password_message");
            return refuse(&mut stream, shared, e).await;
        }
    };
    match live.verifier.verify_or_refresh(&token).await {
        Ok(context) => Ok(Accepted::Session(Box::new(Handshake { stream, context, startup, peer }))),
        Err(e) => {
            shared.metrics.auth_failure(e.reason());
            tracing::info!(reason = %e, "token rejected");
            refuse(&mut stream, shared, PgError::fatal(e.sqlstate(), e.to_string())).await
        }
    }
}

fn tls_required(policy: RequireTls, peer: SocketAddr) -> bool {
    match policy {
        RequireTls::Always => true,
        RequireTls::NonLoopback => !peer.ip().to_canonical().is_loopback(),
        RequireTls::Never => false,
    }
}

/// Sends `error` and ends the handshake.
pub(crate) async fn refuse<T>(stream: &mut ClientStream, shared: &Shared, error: PgError) -> Result<T, FrontendError> {
    shared.metrics.client_error(&error.code);
    let mut buf = BytesMut::new();
    error.encode(&mut buf);
    let _ = stream.write_all(&buf).await;
    let _ = stream.flush().await;
    Err(FrontendError::Refused(error.message))
}

async fn upgrade(
    stream: ClientStream,
    tls: &Option<std::sync::Arc<rustls::ServerConfig>>,
) -> Result<ClientStream, FrontendError> {
    let (Stream::Plain(tcp), Some(cfg)) = (stream, tls) else {
        return Err(FrontendError::Refused("TLS requested but not configured".into()));
    };
    let tls = tokio_rustls::TlsAcceptor::from(cfg.clone()).accept(tcp).await?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// Reads a length-prefixed startup-phase packet: (code, rest of body). Generic over the reader
/// so that the fuzz targets feed it bytes from memory.
pub(crate) async fn read_startup_packet(
    stream: &mut (impl AsyncRead + Unpin),
) -> Result<(i32, Vec<u8>), FrontendError> {
    let len = stream.read_i32().await?;
    if !(8..=protocol::MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(FrontendError::Refused(format!("invalid startup packet length {len}")));
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await?;
    let code = (&body[..4]).get_i32();
    body.drain(..4);
    Ok((code, body))
}

/// Reads the PasswordMessage; the outer error is I/O, the inner one goes to the client.
/// Generic over the reader, as [`read_startup_packet`].
pub(crate) async fn read_password(
    stream: &mut (impl AsyncRead + Unpin),
) -> Result<Result<String, PgError>, FrontendError> {
    let tag = stream.read_u8().await?;
    let len = stream.read_i32().await?;
    if tag != b'p' {
        return Ok(Err(ProxyError::ExpectedPassword { tag: tag as char }.into()));
    }
    if !(5..=(MAX_PASSWORD_MESSAGE as i32)).contains(&len) {
        return Ok(Err(ProxyError::PasswordTooLong { len, limit: MAX_PASSWORD_MESSAGE }.into()));
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await?;
    let token = protocol::read_cstr(&body)
        .and_then(|(t, _)| std::str::from_utf8(t).ok())
        .map(str::to_owned)
        .filter(|t| !t.is_empty());
    Ok(token.ok_or_else(|| ProxyError::NotAJwt.into()))
}

async fn handle_cancel(body: &[u8], shared: &Shared) {
    let Some((pid, secret)) = cancel_key(body) else { return };
    let outcome = match shared.cancels.lookup(pid, secret) {
        Some(target) => target.cancel().await,
        None => {
            tracing::info!("cancel request with an unknown key, or for a client with no query running, ignored");
            CancelOutcome::UnknownKey
        }
    };
    shared.metrics.cancel_request(outcome);
}

/// The process id and secret of a CancelRequest's body (after the code); `None` when short.
pub(crate) fn cancel_key(body: &[u8]) -> Option<(i32, i32)> {
    let mut b = body.get(..8)?;
    Some((b.get_i32(), b.get_i32()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `non-loopback` is the default: a token may cross loopback in clear, never a network.
    #[test]
    fn plaintext_is_refused_from_any_non_loopback_peer() {
        let peer = |ip: &str| SocketAddr::new(ip.parse().expect("ip"), 5000);
        for ip in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(!tls_required(RequireTls::NonLoopback, peer(ip)), "{ip}");
            assert!(tls_required(RequireTls::Always, peer(ip)), "{ip}");
        }
        for ip in ["10.0.0.5", "192.168.1.2", "::ffff:10.0.0.5", "fe80::1", "0.0.0.0"] {
            assert!(tls_required(RequireTls::NonLoopback, peer(ip)), "{ip}");
            assert!(!tls_required(RequireTls::Never, peer(ip)), "{ip}");
        }
    }
}
