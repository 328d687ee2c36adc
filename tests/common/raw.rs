//! A minimal raw-bytes PostgreSQL frontend for protocol edge cases that real
//! drivers never produce (malformed or oversized messages, odd orderings,
//! pipelining without waiting). It frames messages and nothing else: the test
//! chooses every byte, and reads every reply as `(tag, body)`.
//!
//! ```ignore
//! let mut c = raw::connect(proxy_addr).await;
//! c.send_startup(&[("user", "alice"), ("database", "app")]).await;
//! let (tag, _) = c.read_message().await;          // b'R': AuthenticationCleartextPassword
//! c.send_password(&token).await;
//! c.read_until_ready().await;                     // ..., ReadyForQuery
//! c.send_query("SET ROLE admin_role").await;
//! let (tag, body) = c.read_message().await;       // b'E'
//! assert_eq!(raw::error_fields(&body)[&'C'], "42501");
//! ```
//!
//! Messages are built with [`Msgs`] and replies decoded with [`Reply`].

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::reply::Reply;
use super::wire::Msgs;

/// Protocol 3.0 in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The SSLRequest code (answered by a single byte, `S` or `N`).
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The CancelRequest code.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// How long [`RawClient::read_message`] waits before failing the test.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection; the test owns the byte stream.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    /// Timeout of [`RawClient::read_message`] and [`RawClient::read_byte`].
    pub timeout: Duration,
}

/// Opens a TCP connection (Nagle off, so each `send` leaves at once).
pub async fn connect(addr: impl ToSocketAddrs) -> RawClient {
    let stream = TcpStream::connect(addr).await.expect("raw connect");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    RawClient { stream, timeout: DEFAULT_TIMEOUT }
}

/// Connects to a proxy at `addr` and logs in as user alice to database `app` (plus `extra`
/// startup parameters) with `token` as the cleartext password; panics unless the login
/// reaches ReadyForQuery with AuthenticationOk. Returns the client and what the login got.
pub async fn login(addr: SocketAddr, token: &str, extra: &[(&str, &str)]) -> (RawClient, Vec<(u8, Vec<u8>)>) {
    let mut c = connect(addr).await;
    let mut params = vec![("user", "alice"), ("database", "app")];
    params.extend_from_slice(extra);
    c.send_startup(&params).await;
    let (tag, body) = c.read_message().await;
    assert_eq!((tag as char, body), ('R', 3i32.to_be_bytes().to_vec()), "AuthenticationCleartextPassword");
    c.send_password(token).await;
    let msgs = c.read_until_ready().await;
    assert!(
        msgs.iter().any(|(t, b)| *t == b'R' && b[..] == 0i32.to_be_bytes()),
        "no AuthenticationOk in {:?}",
        msgs.iter().map(|(t, _)| *t as char).collect::<String>()
    );
    (c, msgs)
}

impl RawClient {
    /// StartupMessage (protocol 3.0) with these parameters, e.g. `("user", "alice")`.
    pub async fn send_startup(&mut self, params: &[(&str, &str)]) {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        for (key, value) in params {
            body.extend(cstr(key));
            body.extend(cstr(value));
        }
        body.push(0);
        self.send_untagged(&body).await;
    }

    /// SSLRequest; returns the one-byte answer (`b'S'` or `b'N'`).
    pub async fn send_ssl_request(&mut self) -> u8 {
        self.send_untagged(&SSL_REQUEST_CODE.to_be_bytes()).await;
        self.read_byte().await
    }

    /// PasswordMessage (`p`) carrying `password` as a C string (cleartext auth).
    pub async fn send_password(&mut self, password: &str) {
        self.send(b'p', &cstr(password)).await;
    }

    /// Simple-protocol Query (`Q`).
    pub async fn send_query(&mut self, sql: &str) {
        self.send(b'Q', &cstr(sql)).await;
    }

    /// A tagged message: `tag`, then the length (4 + body), then `body`.
    pub async fn send(&mut self, tag: u8, body: &[u8]) {
        self.send_msgs(&Msgs::new().msg(tag, body)).await;
    }

    /// These messages, in one write.
    pub async fn send_msgs(&mut self, msgs: &Msgs) {
        self.send_raw(msgs.bytes()).await;
    }

    /// A message without tag (startup-phase packets): length, then `body`.
    pub async fn send_untagged(&mut self, body: &[u8]) {
        let mut msg = frame_len(body.len()).to_vec();
        msg.extend_from_slice(body);
        self.send_raw(&msg).await;
    }

    /// Exactly these bytes, unframed (for lies about lengths, partial writes…).
    /// Panics on a write error; see [`Self::try_send_raw`] when a closed peer is expected.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).await.expect("raw write");
    }

    /// As [`Self::send_raw`], returning the error (e.g. the peer already closed).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next message; panics on timeout, EOF or error (the usual test expectation).
    pub async fn read_message(&mut self) -> (u8, Vec<u8>) {
        match self.try_read_message(self.timeout).await {
            Ok(Some(msg)) => msg,
            Ok(None) => panic!("raw read: connection closed by the peer"),
            Err(e) => panic!("raw read: {e}"),
        }
    }

    /// The next message, `Ok(None)` on a clean EOF before its first byte, or an
    /// error (`TimedOut` after `timeout`, `UnexpectedEof` mid-message, a reset…).
    pub async fn try_read_message(&mut self, timeout: Duration) -> io::Result<Option<(u8, Vec<u8>)>> {
        tokio::time::timeout(timeout, async {
            let mut header = [0u8; 5];
            let first = self.stream.read(&mut header[..1]).await?;
            if first == 0 {
                return Ok(None);
            }
            self.stream.read_exact(&mut header[1..]).await?;
            let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let body_len = usize::try_from(len - 4)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("message length {len}")))?;
            let mut body = vec![0u8; body_len];
            self.stream.read_exact(&mut body).await?;
            Ok(Some((header[0], body)))
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no message before the timeout"))?
    }

    /// Messages up to and including the next ReadyForQuery (`Z`).
    pub async fn read_until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        loop {
            let msg = self.read_message().await;
            let done = msg.0 == b'Z';
            messages.push(msg);
            if done {
                return messages;
            }
        }
    }

    /// Simple Query, then its reply up to ReadyForQuery, decoded.
    pub async fn query(&mut self, sql: &str) -> Reply {
        self.send_query(sql).await;
        self.reply().await
    }

    /// The messages up to ReadyForQuery, decoded.
    pub async fn reply(&mut self) -> Reply {
        Reply::from(self.read_until_ready().await)
    }

    /// One byte (the answer to SSLRequest or GSSENCRequest).
    pub async fn read_byte(&mut self) -> u8 {
        let read = tokio::time::timeout(self.timeout, self.stream.read_u8());
        read.await.expect("raw read_byte: timeout").expect("raw read_byte")
    }

    /// The socket, e.g. to start TLS on it after `S`.
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }
}

/// `s` followed by a NUL byte.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(s.len() + 1);
    bytes.extend_from_slice(s.as_bytes());
    bytes.push(0);
    bytes
}

/// The fields of an ErrorResponse or NoticeResponse body, by code:
/// `'S'` severity, `'C'` SQLSTATE, `'M'` message, `'D'` detail, `'H'` hint…
pub fn error_fields(body: &[u8]) -> HashMap<char, String> {
    error_field_list(body)
        .into_iter()
        .map(|(code, value)| (char::from(code), String::from_utf8_lossy(value).into_owned()))
        .collect()
}

/// The fields of an ErrorResponse or NoticeResponse body as (code, raw value), in order.
pub fn error_field_list(body: &[u8]) -> Vec<(u8, &[u8])> {
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        fields.push((code, &tail[..end]));
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    fields
}

fn frame_len(body_len: usize) -> [u8; 4] {
    i32::try_from(body_len + 4).expect("message too large to frame").to_be_bytes()
}
