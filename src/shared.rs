//! The state every session shares, and building it from a configuration: the leaf that the
//! listener (`server`), the sessions, the admin listener and the reloader all hold.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::admin::clients::ClientRegistry;
use crate::admin::metrics::{Metrics, Snapshot};
use crate::admin::readiness::Readiness;
use crate::config::{Config, ConfigError, PoolMode};
use crate::frontend::cancel::CancelRegistry;
use crate::policy::context::ContextSpec;
use crate::pool::Pool;
use crate::pool::pins::PinRegistry;
use crate::protocol::budget::BufferBudget;
use crate::reload::live::Live;
use crate::upstream::UpstreamTarget;

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
    /// Large client messages being received, over all sessions (`limits.max_buffered_bytes`).
    pub buffers: BufferBudget,
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

/// Builds every shared component from a configuration, reading every file it names; used by
/// `run` and `check-config`. Fetches nothing: `jwt.jwks_url` is fetched by [`crate::Proxy::bind`].
pub fn build_shared(config: Config, shutdown: watch::Receiver<bool>) -> Result<Shared, ConfigError> {
    let target = UpstreamTarget::from_config(&config.upstream, &config.tcp)?;
    let allow_unforced = config.upstream.allow_unforced_owned_tables;
    let pool = Pool::new(target, &config.pool, config.jwt.allowed_roles.clone(), allow_unforced);
    Ok(Shared {
        metrics: Metrics::new(config.admin.tenant_label_limit),
        clients: Arc::default(),
        readiness: Readiness::default(),
        pins: Arc::default(),
        buffers: BufferBudget::default(),
        context: ContextSpec::from_config(&config)?,
        pool,
        pool_mode: config.pool.mode,
        cancels: CancelRegistry::default(),
        shutdown,
        live: ArcSwap::from_pointee(Live::build(config, None)?),
    })
}
