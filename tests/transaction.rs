//! Transaction pooling (`pool.mode = "transaction"`, docs/transaction-pooling.md):
//! many clients of many tenants share a few server connections, each lent for
//! one transaction. What must hold, by module:
//! - [`state`]: session state (temp tables, WITH HOLD cursors, SQL PREPARE,
//!   session SET, set_config) never reaches another identity: the creator is
//!   pinned, and a connection changes identity only through DISCARD ALL;
//! - [`state_async`]: the same for LISTEN and session advisory locks; the
//!   same-identity control; the tenant context in every transaction;
//! - [`statements`]: named protocol-level statements across connections,
//!   eviction, and a table dropped and recreated under a prepared statement;
//! - [`load`]: pgbench (prepared and TPC-B-like) and 200 clients of 21 tenants
//!   over 4 connections;
//! - [`settings`]: startup settings and ParameterStatus in every transaction;
//! - [`cancel`]: cancel requests reach the current query and never the next borrower;
//! - [`pool`]: warm connections, bounded FIFO waiting, lifetime and idle limits,
//!   a client killed mid-transaction, a backend that died while idle in the pool.
//!
//! One PostgreSQL cluster serves the whole binary and tests run in parallel:
//! each test starts its own proxy, uses its own table names, and never changes
//! the seed data.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

#[path = "transaction/cancel.rs"]
mod cancel;
#[path = "transaction/load.rs"]
mod load;
#[path = "transaction/pool.rs"]
mod pool;
#[path = "transaction/settings.rs"]
mod settings;
#[path = "transaction/state.rs"]
mod state;
#[path = "transaction/state_async.rs"]
mod state_async;
#[path = "transaction/statements.rs"]
mod statements;

use std::time::Duration;

use common::postgres;
use common::proxy::{self, TestProxy, base_config};
pub use common::queries::{
    ACME_TITLES, GLOBEX_TITLES, Session, current_tenant, fails, rows, titles, try_rows, value, wait_for,
    wait_until_running,
};
use rlsproxy::config::{Config, PoolMode};
use tokio_postgres::{Client, GenericClient};

/// The base test configuration in transaction mode with `size` server connections.
pub fn tx_config(size: usize) -> Config {
    // These tests are about pooling and the resets behind the statement guard: they reach
    // past it on purpose (DO blocks, RESET ALL…). The guard is tested in tests/security.
    let mut cfg = base_config(postgres());
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.size = size;
    cfg.guard.enabled = false;
    cfg
}

/// A transaction-mode proxy with `size` connections and the given acquire timeout.
pub async fn start(size: usize, acquire_timeout_ms: u64) -> TestProxy {
    let mut cfg = tx_config(size);
    cfg.pool.acquire_timeout_ms = acquire_timeout_ms;
    proxy::start(cfg).await
}

/// The upstream backend serving this transaction.
pub async fn backend_pid(client: &impl GenericClient) -> i32 {
    value(client, "SELECT pg_backend_pid()").await.parse().unwrap()
}

/// A superuser connected straight to database `app`.
pub async fn superuser() -> Client {
    postgres().superuser_client(common::Postgres::APP_DB).await
}

/// Waits until the pool shows `stats` (open, idle).
pub async fn wait_for_pool(proxy: &TestProxy, stats: (usize, usize)) {
    wait_for(&format!("pool stats {stats:?}"), Duration::from_secs(10), || (proxy.pool.stats() == stats).then_some(()))
        .await;
}
