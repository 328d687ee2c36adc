//! One authenticated connection to the real PostgreSQL server, opened as the
//! proxy's own role: TCP, TLS per `sslmode`, SCRAM/md5/cleartext/trust, and the
//! startup messages the client later sees replayed.

pub mod catalog;
mod connect;
mod credentials;
mod query;
mod statements;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{ConfigError, UpstreamConfig};
use crate::net::ServerStream;
use crate::protocol::{Framer, ProtocolError};

use credentials::{Password, TlsRoots};
pub use query::{Row, array_literal, reset_session};
pub use statements::StatementCache;

/// Why an upstream connection failed or broke.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP, TLS or I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// connect_timeout_ms elapsed.
    #[error("timed out connecting to the upstream server")]
    Timeout,
    /// The server refused TLS that sslmode requires.
    #[error("the upstream server does not support TLS, which upstream.sslmode requires")]
    TlsRefused,
    /// The server asked for an authentication method the proxy does not speak.
    #[error("unsupported upstream authentication method {0}")]
    UnsupportedAuth(i32),
    /// The server sent an ErrorResponse.
    #[error("upstream server error {code}: {message}")]
    Server {
        /// SQLSTATE.
        code: String,
        /// Server message.
        message: String,
    },
    /// The server broke the protocol.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// Framing failure.
    #[error(transparent)]
    Framing(#[from] ProtocolError),
    /// The proxy's role would let policies of another role apply to every tenant.
    #[error("unsafe upstream role: {0}")]
    UnsafeRole(String),
    /// The server reports a setting under which the statement guard cannot read SQL.
    #[error("{0}")]
    UnsafeSetting(String),
    /// The awaited set-up of a lent connection (reset, injection) took too long.
    #[error("the upstream server did not answer the connection's set-up within upstream.connect_timeout_ms")]
    SetupTimeout,
}

/// Why the server's `name = value` (from ParameterStatus, at start or after any change)
/// breaks what the statement guard assumes of the text it checks: backslashes that are
/// literal in strings (`standard_conforming_strings`), and a client encoding whose
/// characters never contain ASCII bytes (see `policy::guard::encoding_is_safe`).
pub fn unsafe_setting(name: &str, value: &str) -> Option<String> {
    let unsafe_value = match name {
        "standard_conforming_strings" => !value.eq_ignore_ascii_case("on"),
        "client_encoding" => !crate::policy::guard::encoding_is_safe(value),
        _ => false,
    };
    unsafe_value
        .then(|| format!("the server reports {name} = {value}, which the statement guard cannot read SQL under"))
}

/// Everything needed to open upstream connections; built once from the config.
#[derive(Debug)]
pub struct UpstreamTarget {
    /// Host as configured (also the TLS server name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role the proxy logs in as.
    pub user: String,
    password: Password,
    sslmode: crate::config::SslMode,
    tls: Option<TlsRoots>,
    server_name: rustls_pki_types::ServerName<'static>,
    /// Timeout for connect + TLS + auth.
    pub connect_timeout: Duration,
    /// `upstream.search_path`, pinned on every connection (see `connect::pinned`).
    search_path: String,
    /// Dead-peer detection on server sockets.
    tcp: crate::config::TcpConfig,
}

impl UpstreamTarget {
    /// Validates TLS and secrets of `[upstream]`; server sockets get the options of `[tcp]`.
    pub fn from_config(cfg: &UpstreamConfig, tcp: &crate::config::TcpConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            host: cfg.host.clone(),
            port: cfg.port,
            user: cfg.user.clone(),
            password: Password::from_config(cfg)?,
            sslmode: cfg.sslmode,
            tls: TlsRoots::from_config(cfg)?,
            server_name: crate::tls::server_name(&cfg.host)?,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            search_path: cfg.search_path.clone(),
            tcp: tcp.clone(),
        })
    }
}

impl UpstreamTarget {
    /// The password to log in with now.
    pub(crate) fn password(&self) -> Option<String> {
        self.password.current()
    }

    /// The TLS configuration for a new connection now; `None` with `sslmode = disable`.
    pub(crate) fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.as_ref().map(TlsRoots::current)
    }
}

/// Where a CancelRequest for a server connection must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelKey {
    /// Server address the connection was opened to.
    pub addr: SocketAddr,
    /// Backend process id.
    pub pid: i32,
    /// Backend secret.
    pub secret: i32,
}

impl CancelKey {
    /// Sends a CancelRequest to the server (plain TCP: the server accepts it before any TLS).
    pub async fn cancel(&self) -> std::io::Result<()> {
        let mut tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(self.pid, self.secret, &mut buf);
        tcp.write_all(&buf).await?;
        // The server closes the connection when done; wait briefly so the request is processed.
        let mut sink = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut sink)).await;
        Ok(())
    }
}

/// An authenticated server connection and what the proxy knows about its session state.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: ServerStream,
    /// Bytes read but not yet consumed.
    pub framer: Framer,
    /// Database the connection is logged into.
    pub database: String,
    /// For cancel requests and logs.
    pub cancel_key: CancelKey,
    /// Current value of every reported setting, kept from ParameterStatus so a client can be told them.
    pub params: BTreeMap<String, String>,
    /// Whether the injection statement is prepared on this connection (a client's DISCARD drops it).
    pub injection_prepared: bool,
    /// The injection (Bind bytes) last committed on this connection: a failed injection then
    /// leaves at most this context in place, so only a connection whose context is exactly the
    /// client's may take the pipelined path.
    pub context: Option<Bytes>,
    /// When that context was taken (an adoption batch); strict mode takes it afresh after a while.
    pub adopted_at: Option<Instant>,
    /// Identity key (a hash of the injected values and startup settings) of the client whose
    /// session state the connection carries; `None` when clean. Another identity gets it only
    /// after a reset.
    pub owner: Option<Bytes>,
    /// Startup parameters it was opened with (the client settings it can serve).
    pub startup: Vec<(String, String)>,
    /// Client statements prepared here (transaction pooling).
    pub statements: StatementCache,
    /// Orders cancel requests against lending: see [`LendGate`].
    pub gate: Arc<LendGate>,
    /// When the connection was opened, for the lifetime limit.
    pub created: Instant,
    /// When it was last returned, for the idle timeout.
    pub last_used: Instant,
    /// Bound of the proxy's awaited set-up batches on it (`upstream.connect_timeout_ms`).
    pub setup_timeout: Duration,
}

/// A cancel request holds the lock while it is sent and goes out only if the connection is
/// still lent to the client that asked (same generation); returning the connection takes
/// the lock and bumps the generation, so a late cancel never reaches the next borrower.
#[derive(Debug, Default)]
pub struct LendGate {
    /// Held while a cancel is being sent, and while the connection changes hands.
    pub lock: tokio::sync::Mutex<()>,
    /// Incremented each time the connection is returned.
    pub generation: std::sync::atomic::AtomicU64,
}

impl ServerConn {
    /// Forgets the context the connection holds and its injection statement (a client's
    /// DISCARD, a failed injection, a reset): the next transaction on it takes a context
    /// afresh, the statement prepared again and, in strict mode, the admission forced.
    pub fn forget_context(&mut self) {
        self.context = None;
        self.injection_prepared = false;
    }

    /// Opens and authenticates a connection to `database` with the clients' `startup` settings.
    pub async fn connect(
        target: &UpstreamTarget,
        database: &str,
        startup: &[(String, String)],
    ) -> Result<Self, UpstreamError> {
        tokio::time::timeout(target.connect_timeout, connect::connect(target, database, startup))
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    /// True when nothing has arrived on an idle connection. A pooled connection that has
    /// something to say (a FATAL from a terminated backend, end of stream, a notification
    /// for a LISTEN of its last user) must not be lent: its bytes belong to nobody now.
    pub fn is_quiet(&self) -> bool {
        if !self.framer.is_empty() {
            return false;
        }
        let tcp = match &self.stream {
            crate::net::Stream::Plain(tcp) => tcp,
            crate::net::Stream::Tls(tls) => tls.get_ref().0,
        };
        let mut probe = [0u8; 1];
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        tcp.poll_peek(&mut cx, &mut buf).is_pending()
    }

    /// Backend process id.
    pub fn pid(&self) -> i32 {
        self.cancel_key.pid
    }

    /// Writes `bytes` and flushes.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Closes politely with Terminate.
    pub async fn terminate(mut self) {
        let mut buf = BytesMut::new();
        crate::protocol::frontend::terminate(&mut buf);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.write_all(&buf)).await;
    }
}
