//! Prometheus metrics (`prometheus-client`, OpenMetrics text at `/metrics`).
//!
//! The hot path only touches pre-resolved handles (an atomic add, or a short
//! uncontended lock for a histogram): per-tenant counters are looked up once per
//! session, label families never per message. Gauges that describe state (client
//! and server connections) are computed when scraped, from the client registry
//! and the pool, so they can never drift from the truth.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of every tenant beyond the first `tenant_label_limit` seen.
pub const OTHER_TENANTS: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SqlstateLabel {
    sqlstate: String,
}

/// What became of a client's CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Sent to the server connection serving that client.
    Forwarded,
    /// Its transaction had ended (the connection may serve another client now): dropped.
    Stale,
    /// The key is not one this process issued (or its client is gone): dropped. Behind a
    /// Service of several replicas, a cancel that reached another replica counts here.
    UnknownKey,
    /// The server could not be reached.
    Failed,
}

impl CancelOutcome {
    fn label(self) -> &'static str {
        match self {
            CancelOutcome::Forwarded => "forwarded",
            CancelOutcome::Stale => "stale",
            CancelOutcome::UnknownKey => "unknown_key",
            CancelOutcome::Failed => "failed",
        }
    }
}

/// One label with a fixed name and a value from a closed set (reason, rule, side, state…).
type Label = [(&'static str, &'static str); 1];

/// Counters of one tenant (or of [`OTHER_TENANTS`]), resolved once per session.
#[derive(Clone, Debug, Default)]
pub struct TenantCounters {
    /// Transactions started.
    pub transactions: Counter,
    /// Query and Execute messages.
    pub queries: Counter,
}

/// Byte counters of one side of the relay.
#[derive(Clone, Debug, Default)]
pub struct Bytes {
    /// Read from that side.
    pub received: Counter,
    /// Written to that side.
    pub sent: Counter,
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    transactions: Family<TenantLabel, Counter>,
    queries: Family<TenantLabel, Counter>,
    /// Tenants with a label of their own; bounded by `tenant_label_limit`.
    tenants: Mutex<HashMap<String, TenantCounters>>,
    tenant_label_limit: usize,
    auth_failures: Family<Label, Counter>,
    guard_rejections: Family<Label, Counter>,
    upstream_errors: Family<Label, Counter>,
    config_reloads: Family<Label, Counter>,
    client_errors: Family<SqlstateLabel, Counter>,
    cancel_requests: Family<Label, Counter>,
    resident_memory: Gauge,
    open_fds: Gauge,
    /// Context injections that failed (the client got an error, no row).
    pub injection_failures: Counter,
    /// Time from asking the pool for a connection to getting one, in seconds.
    pub pool_wait: Histogram,
    /// Time from a transaction's first message to its end, in seconds.
    pub transaction_duration: Histogram,
    /// Bytes exchanged with clients.
    pub client_bytes: Bytes,
    /// Bytes exchanged with the upstream server.
    pub server_bytes: Bytes,
    client_connections: Family<Label, Gauge>,
    server_connections: Family<[(&'static str, &'static str); 2], Gauge>,
    pool_max: Gauge,
    pool_waiting: Gauge,
}

/// What the scrape reads from the live state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Clients in a transaction, holding a server connection.
    pub clients_active: i64,
    /// Clients between transactions.
    pub clients_idle: i64,
    /// Clients waiting for a server connection.
    pub clients_waiting: i64,
    /// Server connections lent or owned by a client.
    pub servers_active: i64,
    /// Server connections idle in the pool.
    pub servers_idle: i64,
    /// `pool.size`.
    pub pool_max: i64,
    /// Clients queued in the pool.
    pub pool_waiting: i64,
    /// `pool.mode`: `session` or `transaction`.
    pub mode: &'static str,
}

impl Metrics {
    /// The registry, with at most `tenant_label_limit` tenant labels (0: every tenant is `other`).
    pub fn new(tenant_label_limit: usize) -> Self {
        let seconds = || Histogram::new(exponential_buckets(0.000_1, 4.0, 10));
        let received: Family<Label, Counter> = Family::default();
        let sent: Family<Label, Counter> = Family::default();
        let side = |side: &'static str| Bytes {
            received: received.get_or_create_owned(&[("side", side)]),
            sent: sent.get_or_create_owned(&[("side", side)]),
        };
        let mut m = Self {
            registry: Registry::with_prefix("rlsproxy"),
            transactions: Family::default(),
            queries: Family::default(),
            tenants: Mutex::new(HashMap::new()),
            tenant_label_limit,
            auth_failures: Family::default(),
            guard_rejections: Family::default(),
            upstream_errors: Family::default(),
            config_reloads: Family::default(),
            client_errors: Family::default(),
            cancel_requests: Family::default(),
            resident_memory: Gauge::default(),
            open_fds: Gauge::default(),
            injection_failures: Counter::default(),
            pool_wait: seconds(),
            transaction_duration: seconds(),
            client_bytes: side("client"),
            server_bytes: side("server"),
            client_connections: Family::default(),
            server_connections: Family::default(),
            pool_max: Gauge::default(),
            pool_waiting: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register("transactions", "Transactions started, by tenant", m.transactions.clone());
        r.register("queries", "Query and Execute messages, by tenant", m.queries.clone());
        r.register("auth_failures", "Refused tokens, by reason", m.auth_failures.clone());
        r.register("guard_rejections", "Statements refused by the guard, by rule", m.guard_rejections.clone());
        r.register("injection_failures", "Failed tenant context injections", m.injection_failures.clone());
        r.register("upstream_errors", "Upstream connection failures, by kind", m.upstream_errors.clone());
        r.register("config_reloads", "Configuration reloads, by result", m.config_reloads.clone());
        r.register("pool_wait_seconds", "Time waiting for a server connection", m.pool_wait.clone());
        r.register("transaction_duration_seconds", "Transaction duration", m.transaction_duration.clone());
        r.register("bytes_received", "Bytes read, by side", received);
        r.register("bytes_sent", "Bytes written, by side", sent);
        r.register("client_connections", "Client connections, by state", m.client_connections.clone());
        r.register("server_connections", "Server connections, by state and pool mode", m.server_connections.clone());
        r.register("pool_max_connections", "Server connections at most (pool.size)", m.pool_max.clone());
        r.register("pool_waiting_clients", "Clients waiting for a server connection", m.pool_waiting.clone());
        r.register(
            "client_errors",
            "Errors the proxy itself sent to clients (refusals, timeouts, lost servers), by SQLSTATE",
            m.client_errors.clone(),
        );
        r.register("cancel_requests", "Client CancelRequests, by outcome", m.cancel_requests.clone());
        r.register(
            "build",
            "The running build",
            prometheus_client::metrics::info::Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register("process_resident_memory_bytes", "Resident memory of the process", m.resident_memory.clone());
        r.register("process_open_fds", "Open file descriptors of the process", m.open_fds.clone());
        m
    }

    /// The counters for `tenant`: its own while fewer than the limit have labels, else `other`'s.
    pub fn tenant(&self, tenant: &str) -> TenantCounters {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = tenants.get(tenant) {
            return found.clone();
        }
        let own = tenants.len() < self.tenant_label_limit;
        let label = if own { tenant } else { OTHER_TENANTS };
        let counters = self.counters_for(label);
        if own {
            tenants.insert(tenant.to_string(), counters.clone());
        }
        counters
    }

    fn counters_for(&self, tenant: &str) -> TenantCounters {
        let label = TenantLabel { tenant: tenant.to_string() };
        TenantCounters {
            transactions: self.transactions.get_or_create_owned(&label),
            queries: self.queries.get_or_create_owned(&label),
        }
    }

    /// Counts a refused token.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&[("reason", reason)]).inc();
    }

    /// Counts a statement the guard refused.
    pub fn guard_rejection(&self, rule: &'static str) {
        self.guard_rejections.get_or_create(&[("rule", rule)]).inc();
    }

    /// Counts an upstream failure: `connect` (opening a connection) or `lost` (mid-session).
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// Counts an error the proxy sent to a client (not one it relayed from the server).
    pub fn client_error(&self, sqlstate: &str) {
        self.client_errors.get_or_create(&SqlstateLabel { sqlstate: sqlstate.to_string() }).inc();
    }

    /// Counts a client's CancelRequest by what became of it.
    pub fn cancel_request(&self, outcome: CancelOutcome) {
        self.cancel_requests.get_or_create(&[("outcome", outcome.label())]).inc();
    }

    /// Counts a configuration reload, `ok` or `error`.
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads.get_or_create(&[("result", result)]).inc();
    }

    /// The OpenMetrics text exposition, with the state gauges set from `snapshot`.
    pub fn encode(&self, snapshot: Snapshot) -> String {
        let state = |s: &'static str| [("state", s)];
        self.client_connections.get_or_create(&state("active")).set(snapshot.clients_active);
        self.client_connections.get_or_create(&state("idle")).set(snapshot.clients_idle);
        self.client_connections.get_or_create(&state("waiting")).set(snapshot.clients_waiting);
        let server = |s: &'static str| [("state", s), ("mode", snapshot.mode)];
        self.server_connections.get_or_create(&server("active")).set(snapshot.servers_active);
        self.server_connections.get_or_create(&server("idle")).set(snapshot.servers_idle);
        self.pool_max.set(snapshot.pool_max);
        self.pool_waiting.set(snapshot.pool_waiting);
        let (resident, fds) = process_usage();
        self.resident_memory.set(resident);
        self.open_fds.set(fds);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Resident memory in bytes and open file descriptors of this process, from /proc (0 where
/// there is none).
fn process_usage() -> (i64, i64) {
    let resident = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        })
        .map_or(0, |kib| kib * 1024);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as i64);
    (resident, fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_beyond_the_limit_share_the_other_label() {
        let m = Metrics::new(2);
        m.tenant("1").transactions.inc();
        m.tenant("2").transactions.inc_by(2);
        m.tenant("3").transactions.inc();
        m.tenant("4").transactions.inc();
        m.tenant("1").queries.inc();
        let text = m.encode(Snapshot::default());
        assert!(text.contains("rlsproxy_transactions_total{tenant=\"1\"} 1\n"), "{text}");
        assert!(text.contains("rlsproxy_transactions_total{tenant=\"2\"} 2\n"), "{text}");
        assert!(text.contains("rlsproxy_transactions_total{tenant=\"other\"} 2\n"), "{text}");
        assert!(!text.contains("tenant=\"3\""), "{text}");
        assert!(text.contains("rlsproxy_queries_total{tenant=\"1\"} 1\n"), "{text}");
    }

    #[test]
    fn state_gauges_come_from_the_snapshot() {
        let m = Metrics::new(10);
        let snapshot = Snapshot {
            clients_active: 3,
            clients_idle: 5,
            servers_idle: 2,
            pool_max: 20,
            mode: "transaction",
            ..Default::default()
        };
        let text = m.encode(snapshot);
        assert!(text.contains("rlsproxy_client_connections{state=\"active\"} 3\n"), "{text}");
        assert!(text.contains("rlsproxy_client_connections{state=\"idle\"} 5\n"), "{text}");
        assert!(text.contains("rlsproxy_server_connections{state=\"idle\",mode=\"transaction\"} 2\n"), "{text}");
        assert!(text.contains("rlsproxy_pool_max_connections 20\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
