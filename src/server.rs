//! The listener: accepts clients, runs each one's handshake and session in its
//! own task under a tracing span, and drains sessions on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, field};

use crate::config::{Config, ConfigError};
use crate::frontend::{self, Accepted};
use crate::logging::LogHandle;
use crate::pool::Pool;
use crate::reload::Reloader;
pub use crate::shared::{Shared, build_shared};
use crate::upstream::UpstreamError;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration problem, naming its key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen or admin address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address from `listen.address`.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// A bound proxy, ready to run.
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
    admin: Option<TcpListener>,
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
    /// Validates `config`, fetches `jwt.jwks_url` (the proxy does not start without its keys),
    /// and binds the listener.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let (tx, rx) = watch::channel(false);
        let addr = config.listen.address;
        let admin_addr = config.admin.address;
        let shared = Arc::new(build_shared(config, rx)?);
        shared.live_full().ready().await?;
        let listener = listen(addr, shared.live().config.listen.reuse_port)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let admin = match admin_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        Ok(Self { shared, listener, admin, shutdown: tx })
    }

    /// The admin listener's address, when `[admin] address` is set (port 0 picks a free one).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
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
        let db = self.shared.live().config.upstream.database.clone().unwrap_or_else(|| "postgres".into());
        self.shared.pool.check_upstream(&db).await
    }

    /// A reloader for this proxy's configuration file `path` (whose text, as loaded, was
    /// `text`): call its `reload` on SIGHUP, run its `watch` for `[reload] watch_interval_s`.
    pub fn reloader(&self, path: &std::path::Path, text: &str, log: Option<LogHandle>) -> Arc<Reloader> {
        Arc::new(Reloader::new(self.shared.clone(), path, text, log))
    }

    /// Accepts clients until shutdown, then waits up to the grace period for sessions to end.
    pub async fn run(mut self) {
        if let Some(database) = self.shared.live().config.upstream.database.clone() {
            // Warm connections and idle expiry; the task ends with the pool.
            tokio::spawn(self.shared.pool.clone().maintain(database));
        }
        // Serves probes and scrapes until the sessions have drained, then ends with them.
        let admin = self.admin.take().map(|l| AbortOnDrop(tokio::spawn(crate::admin::serve(l, self.shared.clone()))));
        let mut sessions = JoinSet::new();
        let mut shutdown = self.shared.shutdown.clone();
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
                    let (max_clients, handshake_ms) = {
                        let live = self.shared.live();
                        if let Err(e) = crate::net::tune(&tcp, &live.config.tcp) {
                            tracing::warn!(%peer, error = %e, "could not set the client socket's options");
                        }
                        (live.config.listen.max_clients, live.config.limits.handshake_timeout_ms)
                    };
                    if sessions.len() >= max_clients {
                        tracing::warn!(%peer, "too many clients; connection refused");
                        let error = crate::protocol::PgError::from(crate::protocol::ProxyError::TooManyClients);
                        self.shared.metrics.client_error(&error.code);
                        tokio::spawn(refuse_busy(tcp, error));
                        continue;
                    }
                    let shared = self.shared.clone();
                    let span = tracing::info_span!("client", %peer, tenant = field::Empty, sub = field::Empty, backend_pid = field::Empty);
                    let handshake_timeout = Duration::from_millis(handshake_ms);
                    sessions.spawn(handle_client(tcp, peer, shared, handshake_timeout).instrument(span));
                }
                Some(_) = sessions.join_next() => {}
                _ = shutdown.changed() => break,
            }
        }
        drop(self.listener);
        let grace = Duration::from_secs(self.shared.live().config.listen.shutdown_grace_s);
        tracing::info!(sessions = sessions.len(), grace_s = grace.as_secs(), "shutting down");
        let drained = tokio::time::timeout(grace, async { while sessions.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(sessions = sessions.len(), "grace period over; closing the remaining sessions");
            sessions.abort_all();
        }
        drop(admin);
    }
}

/// The client listener; with `reuse_port`, one that other processes may bind as well (the
/// kernel spreads new connections over all of them).
async fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    if !reuse_port {
        return TcpListener::bind(addr).await;
    }
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    // The backlog std and tokio use for TcpListener::bind.
    socket.listen(1024)
}

/// Ends a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Tells a client over `listen.max_clients` why it is refused, as PostgreSQL does.
async fn refuse_busy(mut tcp: tokio::net::TcpStream, error: crate::protocol::PgError) {
    use tokio::io::AsyncWriteExt;
    let mut buf = bytes::BytesMut::new();
    error.encode(&mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&buf)).await;
}

async fn handle_client(tcp: tokio::net::TcpStream, peer: SocketAddr, shared: Arc<Shared>, timeout: Duration) {
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
