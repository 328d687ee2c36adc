//! The listener: accepts clients, runs each one's handshake and session in its
//! own task under a tracing span, and drains sessions on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, field};

use arc_swap::ArcSwap;

use crate::admin::Readiness;
use crate::admin::clients::ClientRegistry;
use crate::admin::metrics::{Metrics, Snapshot};
use crate::config::{Config, ConfigError, PoolMode};
use crate::frontend::cancel::CancelRegistry;
use crate::frontend::{self, Accepted};
use crate::logging::LogHandle;
use crate::policy::context::ContextSpec;
use crate::pool::Pool;
use crate::reload::{Live, Reloader};
use crate::session::pins::PinRegistry;
use crate::upstream::{UpstreamError, UpstreamTarget};

/// State every session shares.
#[derive(Debug)]
pub struct Shared {
    /// What a configuration reload replaces (configuration, verifier, guard, client TLS, admin
    /// token), swapped whole: read it with [`Shared::live`].
    live: ArcSwap<Live>,
    /// Upstream connections (its sizes and timeouts are reloaded in place).
    pub pool: Pool,
    /// `pool.mode` (needs a restart), outside [`Live`] because every client message asks.
    pub pool_mode: PoolMode,
    /// What the injection sets (`[context]` needs a restart: every server connection has the
    /// injection statement prepared).
    pub context: ContextSpec,
    /// Proxy-issued cancel keys.
    pub cancels: CancelRegistry,
    /// Becomes `true` when the proxy is shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Live sessions, for `/admin/clients` and the client gauges.
    pub clients: Arc<ClientRegistry>,
    /// `/readyz`'s cached upstream check.
    pub readiness: Readiness,
    /// Sessions pinned to a server connection, by tenant (`pool.max_pinned_per_tenant`).
    pub pins: Arc<PinRegistry>,
}

impl Shared {
    /// The configuration and components in force now. Lock-free and cheap enough for every
    /// message; hold it briefly and never across an `.await` (see [`Shared::live_full`]).
    pub fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// As [`Shared::live`], as an `Arc` to keep across awaits (a handshake sees one
    /// configuration from its start to its end).
    pub fn live_full(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in a reloaded configuration; connections that hold the old one finish with it.
    pub(crate) fn replace_live(&self, live: Live) {
        self.live.store(Arc::new(live));
    }

    /// The live state the metrics' gauges report.
    pub fn snapshot(&self) -> Snapshot {
        let (clients_active, clients_idle, clients_waiting) = self.clients.counts();
        let pool = self.pool.snapshot();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        Snapshot {
            clients_active,
            clients_idle,
            clients_waiting,
            servers_active: count(pool.open.saturating_sub(pool.idle)),
            servers_idle: count(pool.idle),
            pool_max: count(pool.size),
            pool_waiting: count(pool.waiting),
            mode: match pool.mode {
                PoolMode::Session => "session",
                PoolMode::Transaction => "transaction",
            },
        }
    }
}

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

/// Builds every shared component from a configuration, reading every file it names; used by
/// `run` and `check-config`. Fetches nothing: `jwt.jwks_url` is fetched by [`Proxy::bind`].
pub fn build_shared(config: Config, shutdown: watch::Receiver<bool>) -> Result<Shared, ConfigError> {
    let target = UpstreamTarget::from_config(&config.upstream)?;
    let allow_unforced = config.upstream.allow_unforced_owned_tables;
    let pool = Pool::new(target, &config.pool, config.jwt.allowed_roles.clone(), allow_unforced);
    Ok(Shared {
        metrics: Metrics::new(config.admin.tenant_label_limit),
        clients: Arc::default(),
        readiness: Readiness::default(),
        pins: Arc::default(),
        context: ContextSpec::from_config(&config)?,
        pool,
        pool_mode: config.pool.mode,
        cancels: CancelRegistry::default(),
        shutdown,
        live: ArcSwap::from_pointee(Live::build(config, None)?),
    })
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
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
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
                        (live.config.listen.max_clients, live.config.limits.handshake_timeout_ms)
                    };
                    if sessions.len() >= max_clients {
                        tracing::warn!(%peer, "too many clients; connection refused");
                        tokio::spawn(refuse_busy(tcp));
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

/// Ends a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
