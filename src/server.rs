//! The listener: accepts clients, runs each one's handshake and session in its
//! own task under a tracing span, and drains sessions on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, field};

use crate::auth::Verifier;
use crate::config::{Config, ConfigError};
use crate::frontend::cancel::CancelRegistry;
use crate::frontend::{self, Accepted};
use crate::policy::context::ContextSpec;
use crate::policy::guard::Guard;
use crate::pool::Pool;
use crate::upstream::{UpstreamError, UpstreamTarget};

/// Read-only state every session shares.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Token verification.
    pub verifier: Verifier,
    /// Upstream connections.
    pub pool: Pool,
    /// TLS offered to clients, when configured.
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// What the injection sets.
    pub context: ContextSpec,
    /// The statement guard.
    pub guard: Guard,
    /// Proxy-issued cancel keys.
    pub cancels: CancelRegistry,
    /// Becomes `true` when the proxy is shutting down.
    pub shutdown: watch::Receiver<bool>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration problem, naming its key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address from `listen.address`.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// Builds every shared component from a configuration; used by `run` and `check-config`.
pub fn build_shared(config: Config, shutdown: watch::Receiver<bool>) -> Result<Shared, ConfigError> {
    let verifier = Verifier::from_config(&config.jwt)?;
    let target = UpstreamTarget::from_config(&config.upstream)?;
    let client_tls = match (&config.listen.tls_cert_file, &config.listen.tls_key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
        _ => None,
    };
    let allow_unforced = config.upstream.allow_unforced_owned_tables;
    let pool = Pool::new(target, &config.pool, config.jwt.allowed_roles.clone(), allow_unforced);
    Ok(Shared {
        context: ContextSpec::from_config(&config)?,
        guard: Guard::from_config(&config),
        verifier,
        pool,
        client_tls,
        cancels: CancelRegistry::default(),
        shutdown,
        config,
    })
}

/// A bound proxy, ready to run.
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: watch::Sender<bool>,
}

/// Triggers a graceful shutdown from elsewhere (signal handler, tests).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Stops accepting, lets open transactions finish, then closes every session.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Proxy {
    /// Validates `config` and binds the listener.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let (tx, rx) = watch::channel(false);
        let addr = config.listen.address;
        let shared = Arc::new(build_shared(config, rx)?);
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self { shared, listener, shutdown: tx })
    }

    /// The address actually bound (port 0 picks a free one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that starts the graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// The shared pool, for tests and metrics.
    pub fn pool(&self) -> Pool {
        self.shared.pool.clone()
    }

    /// Opens one upstream connection and checks the role, as every pooled connection will be.
    pub async fn check_upstream(&self) -> Result<(), UpstreamError> {
        let db = self.shared.config.upstream.database.clone().unwrap_or_else(|| "postgres".into());
        self.shared.pool.check_upstream(&db).await
    }

    /// Accepts clients until shutdown, then waits up to the grace period for sessions to end.
    pub async fn run(self) {
        if let Some(database) = &self.shared.config.upstream.database {
            // Warm connections and idle expiry; the task ends with the pool.
            tokio::spawn(self.shared.pool.clone().maintain(database.clone()));
        }
        let mut sessions = JoinSet::new();
        let mut shutdown = self.shared.shutdown.clone();
        let handshake_timeout = Duration::from_millis(self.shared.config.limits.handshake_timeout_ms);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if sessions.len() >= self.shared.config.listen.max_clients {
                        tracing::warn!(%peer, "too many clients; connection refused");
                        tokio::spawn(refuse_busy(tcp));
                        continue;
                    }
                    let shared = self.shared.clone();
                    let span = tracing::info_span!("client", %peer, tenant = field::Empty, sub = field::Empty, backend_pid = field::Empty);
                    sessions.spawn(handle_client(tcp, peer, shared, handshake_timeout).instrument(span));
                }
                Some(_) = sessions.join_next() => {}
                _ = shutdown.changed() => break,
            }
        }
        drop(self.listener);
        let grace = Duration::from_secs(self.shared.config.listen.shutdown_grace_s);
        tracing::info!(sessions = sessions.len(), grace_s = grace.as_secs(), "shutting down");
        let drained = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(sessions = sessions.len(), "grace period over; closing the remaining sessions");
            sessions.abort_all();
        }
    }
}

/// Tells a client over `listen.max_clients` why it is refused, as PostgreSQL does.
async fn refuse_busy(mut tcp: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut buf = bytes::BytesMut::new();
    crate::protocol::PgError::fatal("53300", "sorry, too many clients already (rlsproxy listen.max_clients)")
        .encode(&mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&buf)).await;
}

async fn handle_client(tcp: tokio::net::TcpStream, peer: SocketAddr, shared: Arc<Shared>, timeout: Duration) {
    let _ = tcp.set_nodelay(true);
    // Boxed, as the session start is: an idle session task should not carry the handshake's state.
    let handshake = match tokio::time::timeout(timeout, Box::pin(frontend::accept(tcp, peer, &shared))).await {
        Ok(Ok(Accepted::Session(hs))) => *hs,
        Ok(Ok(Accepted::Cancel)) => return,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "handshake ended");
            return;
        }
        Err(_) => {
            tracing::info!("handshake timed out");
            return;
        }
    };
    match crate::session::run(handshake, &shared).await {
        Ok(()) => tracing::info!("session ended"),
        Err(e) => tracing::info!(error = %e, "session ended with an error"),
    }
}
