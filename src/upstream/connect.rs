//! Connection establishment: TCP, SSLRequest/TLS, StartupMessage, authentication,
//! then ParameterStatus/BackendKeyData up to the first ReadyForQuery.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{CancelKey, ServerConn, UpstreamError, UpstreamTarget};
use crate::config::SslMode;
use crate::net::{ServerStream, Stream};
use crate::protocol::{Frame, Framer, backend, codec, error};

/// Largest message accepted from the server during startup.
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

pub(super) async fn connect(
    target: &UpstreamTarget,
    database: &str,
    startup: &[(String, String)],
) -> Result<ServerConn, UpstreamError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    crate::net::tune(&tcp, &target.tcp)?;
    let addr = tcp.peer_addr()?;
    let stream = negotiate_tls(tcp, target).await?;
    let mut conn = ServerConn {
        stream,
        framer: Framer::default(),
        database: database.to_string(),
        cancel_key: CancelKey { addr, pid: 0, secret: 0 },
        params: BTreeMap::new(),
        injection_prepared: false,
        context: None,
        adopted_at: None,
        owner: None,
        startup: startup.to_vec(),
        statements: Default::default(),
        gate: Default::default(),
        created: Instant::now(),
        last_used: Instant::now(),
        setup_timeout: target.connect_timeout,
    };
    let mut buf = BytesMut::new();
    let pinned = pinned(target, startup);
    let params = [("user", target.user.as_str()), ("database", database)]
        .into_iter()
        .chain(startup.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .chain(pinned);
    frontend::startup_message(params, &mut buf)?;
    conn.write_all(&buf).await?;
    authenticate(&mut conn, target).await?;
    loop {
        let (tag, msg) = read_message(&mut conn).await?;
        let body = codec::body(&msg);
        match tag {
            b'S' => {
                if let Some((k, v)) = backend::parse_parameter_status(body) {
                    conn.params.insert(k, v);
                }
            }
            b'K' => {
                let (pid, secret) = backend::parse_backend_key_data(body)
                    .ok_or_else(|| UpstreamError::Protocol("malformed BackendKeyData".into()))?;
                conn.cancel_key.pid = pid;
                conn.cancel_key.secret = secret;
            }
            b'Z' => return Ok(conn),
            b'E' => return Err(server_error(body)),
            b'N' => {}
            other => return Err(UpstreamError::Protocol(format!("unexpected message '{}' at startup", other as char))),
        }
    }
}

/// Settings sent as startup parameters of every connection, next to the client's: a startup
/// parameter takes precedence over `ALTER ROLE`/`ALTER DATABASE … SET` (and `DISCARD ALL`
/// returns to it), and every tenant is the same role, so one tenant's `ALTER ROLE CURRENT_USER
/// SET …` must not decide how later connections resolve names (`search_path`), who they run as
/// (`role`) or how the server reads SQL text that the statement guard parsed as UTF-8 with
/// standard conforming strings (`standard_conforming_strings`, `backslash_quote`, and
/// `client_encoding` when the client sent none; the client's own is one the guard accepts).
pub(super) fn pinned<'a>(target: &'a UpstreamTarget, startup: &[(String, String)]) -> Vec<(&'a str, &'a str)> {
    let mut pinned = vec![
        ("search_path", target.search_path.as_str()),
        ("role", "none"),
        ("standard_conforming_strings", "on"),
        ("backslash_quote", "safe_encoding"),
    ];
    if !startup.iter().any(|(name, _)| name.eq_ignore_ascii_case("client_encoding")) {
        pinned.push(("client_encoding", "UTF8"));
    }
    pinned
}

pub(super) async fn negotiate_tls(mut tcp: TcpStream, target: &UpstreamTarget) -> Result<ServerStream, UpstreamError> {
    let Some(tls) = target.tls() else { return Ok(Stream::Plain(tcp)) };
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await?;
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {
            let connector = tokio_rustls::TlsConnector::from(tls);
            let stream = connector.connect(target.server_name.clone(), tcp).await?;
            Ok(Stream::Tls(Box::new(stream)))
        }
        b'N' if target.sslmode == SslMode::Prefer => Ok(Stream::Plain(tcp)),
        b'N' => Err(UpstreamError::TlsRefused),
        other => Err(UpstreamError::Protocol(format!("unexpected SSLRequest answer '{}'", other as char))),
    }
}

async fn authenticate(conn: &mut ServerConn, target: &UpstreamTarget) -> Result<(), UpstreamError> {
    let password = target.password().unwrap_or_default();
    let password = password.as_bytes();
    let mut scram: Option<ScramSha256> = None;
    loop {
        let (tag, msg) = read_message(conn).await?;
        let mut body = codec::body(&msg);
        if tag == b'E' {
            return Err(server_error(body));
        }
        if tag != b'R' || body.len() < 4 {
            return Err(UpstreamError::Protocol(format!("unexpected message '{}' during auth", tag as char)));
        }
        let code = body.get_i32();
        let mut out = BytesMut::new();
        match code {
            0 => return Ok(()),
            3 => frontend::password_message(password, &mut out)?,
            5 => {
                let salt: [u8; 4] = body
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| UpstreamError::Protocol("malformed md5 request".into()))?;
                let hash = postgres_protocol::authentication::md5_hash(target.user.as_bytes(), password, salt);
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            10 => {
                let offers_scram = body.split(|&b| b == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(UpstreamError::UnsupportedAuth(code));
                }
                let s = ScramSha256::new(password, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                scram = Some(s);
            }
            11 => {
                let s = scram.as_mut().ok_or_else(|| UpstreamError::Protocol("SASL continue without start".into()))?;
                s.update(body)?;
                frontend::sasl_response(s.message(), &mut out)?;
            }
            12 => {
                let s = scram.as_mut().ok_or_else(|| UpstreamError::Protocol("SASL final without start".into()))?;
                s.finish(body)?;
                continue;
            }
            other => return Err(UpstreamError::UnsupportedAuth(other)),
        }
        conn.write_all(&out).await?;
    }
}

/// Reads one whole message (tag, raw bytes) during connection setup.
pub(super) async fn read_message(conn: &mut ServerConn) -> Result<(u8, bytes::Bytes), UpstreamError> {
    loop {
        if let Some(frame) = conn.framer.next(|_| false, MAX_STARTUP_MESSAGE)? {
            return match frame {
                Frame::Message(m) => Ok((m[0], m)),
                Frame::Piece(_) => Err(UpstreamError::Protocol("unexpected partial message".into())),
            };
        }
        if conn.stream.read_buf(conn.framer.buffer()).await? == 0 {
            return Err(UpstreamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

pub(super) fn server_error(body: &[u8]) -> UpstreamError {
    let e = error::from_server(body);
    UpstreamError::Server { code: e.code, message: e.message }
}
