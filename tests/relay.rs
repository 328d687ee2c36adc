//! The relay, end to end: real clients (tokio-postgres, psql, pgbench, a raw
//! protocol client) talk to PostgreSQL through rlsproxy in session mode, and
//! every result must be what the server itself would give to a connection of
//! the token's tenant.
//!
//! One PostgreSQL cluster serves the whole binary and tests run in parallel, so
//! no test leaves changed data behind: writes happen in transactions that are
//! rolled back, or in temp tables. Each test starts its own proxy (and pool).
//!
//! The cases, by module:
//! - [`tenancy`]: each tenant sees, changes and copies exactly its own rows; admin role.
//! - [`fidelity`]: results through the proxy equal results direct, text and binary.
//! - [`copy`]: COPY FROM STDIN / TO STDOUT, malformed data, CopyFail.
//! - [`extended`]: prepared statements, portals, errors in batches, pipelining.
//! - [`transactions`]: BEGIN/COMMIT, failed blocks, isolation levels, VACUUM, SET.
//! - [`lifecycle`]: cancel requests, a client killed mid-transaction, pool exhaustion.
//! - [`async_messages`]: LISTEN/NOTIFY, notices, ParameterStatus.
//! - [`pgbench`]: pgbench's initialisation and its simple and prepared modes.
//! - [`pipeline`]: long pipelines failing part-way (asyncpg's `executemany`), both pool modes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

#[path = "relay/async_messages.rs"]
mod async_messages;
#[path = "relay/copy.rs"]
mod copy;
#[path = "relay/extended.rs"]
mod extended;
#[path = "relay/fidelity.rs"]
mod fidelity;
#[path = "relay/lifecycle.rs"]
mod lifecycle;
#[path = "relay/pgbench.rs"]
mod pgbench;
#[path = "relay/pipeline.rs"]
mod pipeline;
#[path = "relay/tenancy.rs"]
mod tenancy;
#[path = "relay/transactions.rs"]
mod transactions;

use std::collections::HashMap;
use std::time::Duration;

use common::proxy::TestProxy;
pub use common::queries::{ACME_TITLES, GLOBEX_TITLES, Session, titles, wait_for, wait_until_running};
use common::raw::{self, RawClient};
pub use common::reply::Reply;
pub use common::wire::Msgs;
use common::{Postgres, postgres};
use tokio_postgres::Client;

/// A tokio-postgres client connected straight to PostgreSQL as the proxy's
/// role, with `tenant` set as the proxy would set it.
pub async fn direct(tenant: &str) -> Client {
    let client = common::connect(&postgres().proxy_config(Postgres::APP_DB)).await;
    client
        .execute("SELECT set_config('app.current_tenant', $1, false)", &[&tenant])
        .await
        .expect("set the tenant directly");
    client
}

/// The pool's (open, idle) counts once the connection a session held is no
/// longer lent out, i.e. after it was either reset into the idle list or closed.
pub async fn pool_after_release(proxy: &TestProxy, lent: (usize, usize)) -> (usize, usize) {
    wait_for("the session's connection to leave the client", Duration::from_secs(10), || {
        let now = proxy.pool.stats();
        (now != lent).then_some(now)
    })
    .await
}

/// A raw protocol session through the proxy, past authentication.
pub struct RawSession {
    /// The connection, ready for queries.
    pub conn: RawClient,
    /// The BackendKeyData the proxy issued.
    pub key: (i32, i32),
    /// ParameterStatus values sent at startup.
    pub params: HashMap<String, String>,
}

impl RawSession {
    /// Starts up as user alice on database app with extra startup `params`.
    pub async fn open(proxy: &TestProxy, token: &str, params: &[(&str, &str)]) -> RawSession {
        let (conn, startup) = raw::login(proxy.addr, token, params).await;
        let reply = Reply::from(startup);
        assert!(reply.errors.is_empty(), "startup failed: {:?}", reply.errors);
        let key = reply.backend_key.expect("BackendKeyData");
        RawSession { conn, key, params: reply.params.into_iter().collect() }
    }

    /// Sends a simple Query and reads its reply up to ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> Reply {
        self.conn.query(sql).await
    }

    /// Reads one reply up to ReadyForQuery.
    pub async fn reply(&mut self) -> Reply {
        self.conn.reply().await
    }
}
