//! Transaction pooling (`pool.mode = "transaction"`, issue 3, DESIGN.md section 3):
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
use rlsproxy::config::{Config, PoolMode};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, GenericClient, NoTls, SimpleQueryMessage};

/// Titles of tenant 1's documents, by id.
pub const ACME_TITLES: [&str; 3] = ["acme roadmap", "acme payroll", "acme onboarding"];
/// Titles of tenant 2's documents, by id.
pub const GLOBEX_TITLES: [&str; 2] = ["globex merger plan", "globex handbook"];

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

/// The rows of a simple query (text format, NULL is `None`), or the error's (SQLSTATE, message).
pub async fn try_rows(client: &impl GenericClient, sql: &str) -> Result<Vec<Vec<Option<String>>>, (String, String)> {
    let messages = client.simple_query(sql).await.map_err(|e| proxy::db_error(&e))?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect())
}

/// The rows of a simple query, which must succeed.
pub async fn rows(client: &impl GenericClient, sql: &str) -> Vec<Vec<Option<String>>> {
    try_rows(client, sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// The single non-NULL value of a simple query.
pub async fn value(client: &impl GenericClient, sql: &str) -> String {
    let rows = rows(client, sql).await;
    assert!(rows.len() == 1 && rows[0].len() == 1, "{sql}: expected one value, got {rows:?}");
    rows[0][0].clone().unwrap_or_else(|| panic!("{sql}: NULL"))
}

/// The (SQLSTATE, message) of a simple query that must fail.
pub async fn fails(client: &impl GenericClient, sql: &str) -> (String, String) {
    match try_rows(client, sql).await {
        Ok(rows) => panic!("{sql}: expected an error, got rows {rows:?}"),
        Err(e) => e,
    }
}

/// The upstream backend serving this transaction.
pub async fn backend_pid(client: &impl GenericClient) -> i32 {
    value(client, "SELECT pg_backend_pid()").await.parse().unwrap()
}

/// `current_setting('app.current_tenant')` (extended protocol).
pub async fn current_tenant(client: &impl GenericClient) -> String {
    client.query_one("SELECT current_setting('app.current_tenant')", &[]).await.expect("current_setting").get(0)
}

/// Document titles by id (extended protocol).
pub async fn titles(client: &impl GenericClient) -> Vec<String> {
    let rows = client.query("SELECT title FROM documents ORDER BY id", &[]).await.expect("select titles");
    rows.iter().map(|r| r.get(0)).collect()
}

/// A superuser connected straight to database `app`.
pub async fn superuser() -> Client {
    postgres().superuser_client(common::Postgres::APP_DB).await
}

/// A client whose connection task forwards notices and notifications.
pub struct Session {
    /// The client.
    pub client: Client,
    /// Notices and notifications, in arrival order.
    pub messages: mpsc::UnboundedReceiver<AsyncMessage>,
    /// The task driving the connection; aborting it drops the socket without a Terminate.
    pub task: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Connects through `proxy` with `token`.
    pub async fn open(proxy: &TestProxy, token: &str) -> Session {
        let (client, mut connection) =
            proxy.client_config(token).connect(NoTls).await.expect("connect through the proxy");
        let (tx, messages) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                let _ = tx.send(message);
            }
        });
        Session { client, messages, task }
    }

    /// Notifications received so far, as "channel: payload".
    pub fn notifications(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(message) = self.messages.try_recv() {
            if let AsyncMessage::Notification(n) = message {
                seen.push(format!("{}: {}", n.channel(), n.payload()));
            }
        }
        seen
    }

    /// The next notification, failing the test after 5 seconds.
    pub async fn next_notification(&mut self) -> String {
        let wait = async {
            loop {
                match self.messages.recv().await.expect("connection still open") {
                    AsyncMessage::Notification(n) => return format!("{}: {}", n.channel(), n.payload()),
                    _ => continue,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("a notification within 5 s")
    }

    /// Drops the client and waits until its connection has closed (a clean Terminate).
    pub async fn close(self) {
        drop(self.client);
        self.task.await.expect("connection task");
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, failing after `timeout` with `what`.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the pool shows `stats` (open, idle).
pub async fn wait_for_pool(proxy: &TestProxy, stats: (usize, usize)) {
    wait_for(&format!("pool stats {stats:?}"), Duration::from_secs(10), || (proxy.pool.stats() == stats).then_some(()))
        .await;
}

/// Waits until a statement containing `marker` is running upstream (pg_stat_activity).
pub async fn wait_until_running(marker: &str) {
    let su = superuser().await;
    let pattern = format!("%{marker}%");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = su
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
                &[&pattern],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "statement {marker} never started upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
