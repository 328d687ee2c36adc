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
        let mut conn = raw::connect(proxy.addr).await;
        let mut startup = vec![("user", "alice"), ("database", "app")];
        startup.extend_from_slice(params);
        conn.send_startup(&startup).await;
        assert_eq!(conn.read_message().await, (b'R', 3i32.to_be_bytes().to_vec()), "cleartext password request");
        conn.send_password(token).await;
        let reply = Reply::from(conn.read_until_ready().await);
        assert!(reply.errors.is_empty(), "startup failed: {:?}", reply.errors);
        let key = reply.backend_key.expect("BackendKeyData");
        RawSession { conn, key, params: reply.params.into_iter().collect() }
    }

    /// Sends a simple Query and reads its reply up to ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> Reply {
        self.conn.send_query(sql).await;
        Reply::from(self.conn.read_until_ready().await)
    }

    /// Reads one reply up to ReadyForQuery.
    pub async fn reply(&mut self) -> Reply {
        Reply::from(self.conn.read_until_ready().await)
    }
}

/// The messages of one reply, decoded into what tests assert on.
#[derive(Debug, Default)]
pub struct Reply {
    /// DataRow values as text (NULL is `None`), in order.
    pub rows: Vec<Vec<Option<String>>>,
    /// CommandComplete tags.
    pub tags: Vec<String>,
    /// ErrorResponse fields.
    pub errors: Vec<HashMap<char, String>>,
    /// NoticeResponse fields.
    pub notices: Vec<HashMap<char, String>>,
    /// ParameterStatus name/value pairs.
    pub params: Vec<(String, String)>,
    /// BackendKeyData (pid, secret).
    pub backend_key: Option<(i32, i32)>,
    /// Tags of every message, in order (e.g. `"1 2 D C Z"`).
    pub sequence: String,
    /// ReadyForQuery status: `I`, `T` or `E`.
    pub status: char,
}

impl Reply {
    /// The SQLSTATE and message of the only error.
    pub fn error(&self) -> (&str, &str) {
        assert_eq!(self.errors.len(), 1, "expected one error in {self:?}");
        (&self.errors[0][&'C'], &self.errors[0][&'M'])
    }

    /// The rows, each value required non-NULL.
    pub fn texts(&self) -> Vec<Vec<String>> {
        self.rows.iter().map(|r| r.iter().map(|v| v.clone().expect("non-NULL")).collect()).collect()
    }

    /// The first column of every row.
    pub fn column(&self) -> Vec<String> {
        self.texts().into_iter().map(|mut r| r.remove(0)).collect()
    }
}

impl From<Vec<(u8, Vec<u8>)>> for Reply {
    fn from(messages: Vec<(u8, Vec<u8>)>) -> Reply {
        let mut reply = Reply::default();
        let mut tags = Vec::new();
        for (tag, body) in messages {
            tags.push((tag as char).to_string());
            match tag {
                b'D' => reply.rows.push(data_row(&body)),
                b'C' => reply.tags.push(cstr_at(&body, 0).0),
                b'E' => reply.errors.push(raw::error_fields(&body)),
                b'N' => reply.notices.push(raw::error_fields(&body)),
                b'S' => {
                    let (name, rest) = cstr_at(&body, 0);
                    reply.params.push((name, cstr_at(&body, rest).0));
                }
                b'K' => {
                    let n = |i: usize| i32::from_be_bytes(body[i..i + 4].try_into().unwrap());
                    reply.backend_key = Some((n(0), n(4)));
                }
                b'Z' => reply.status = body[0] as char,
                _ => {}
            }
        }
        reply.sequence = tags.join(" ");
        reply
    }
}

fn cstr_at(body: &[u8], start: usize) -> (String, usize) {
    let len = body[start..].iter().position(|&b| b == 0).expect("NUL");
    let s = String::from_utf8(body[start..start + len].to_vec()).expect("UTF-8");
    (s, start + len + 1)
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let count = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            values.push(None);
        } else {
            let end = at + len as usize;
            values.push(Some(String::from_utf8_lossy(&body[at..end]).into_owned()));
            at = end;
        }
    }
    values
}

/// Builders of extended-protocol messages for the raw client, appended to one
/// buffer so that a test can send a whole pipeline in one write.
pub mod wire {
    use super::raw::cstr;

    fn push(buf: &mut Vec<u8>, tag: u8, body: &[u8]) {
        buf.push(tag);
        buf.extend(((body.len() + 4) as i32).to_be_bytes());
        buf.extend_from_slice(body);
    }

    /// Parse of `sql` as statement `name`, parameter types left to the server.
    pub fn parse(buf: &mut Vec<u8>, name: &str, sql: &str) {
        let mut body = cstr(name);
        body.extend(cstr(sql));
        body.extend(0i16.to_be_bytes());
        push(buf, b'P', &body);
    }

    /// Bind of the unnamed portal to `statement`, text parameters and results.
    pub fn bind(buf: &mut Vec<u8>, statement: &str, params: &[&str]) {
        let mut body = cstr("");
        body.extend(cstr(statement));
        body.extend(0i16.to_be_bytes());
        body.extend((params.len() as i16).to_be_bytes());
        for p in params {
            body.extend((p.len() as i32).to_be_bytes());
            body.extend_from_slice(p.as_bytes());
        }
        body.extend(0i16.to_be_bytes());
        push(buf, b'B', &body);
    }

    /// Describe of statement `name`.
    pub fn describe_statement(buf: &mut Vec<u8>, name: &str) {
        let mut body = vec![b'S'];
        body.extend(cstr(name));
        push(buf, b'D', &body);
    }

    /// Execute of the unnamed portal, all rows.
    pub fn execute(buf: &mut Vec<u8>) {
        let mut body = cstr("");
        body.extend(0i32.to_be_bytes());
        push(buf, b'E', &body);
    }

    /// Sync.
    pub fn sync(buf: &mut Vec<u8>) {
        push(buf, b'S', &[]);
    }

    /// Flush.
    pub fn flush(buf: &mut Vec<u8>) {
        push(buf, b'H', &[]);
    }

    /// Simple Query.
    pub fn query(buf: &mut Vec<u8>, sql: &str) {
        push(buf, b'Q', &cstr(sql));
    }

    /// Parse, Bind, Execute and Sync of `sql` with text `params`: one batch.
    pub fn batch(buf: &mut Vec<u8>, sql: &str, params: &[&str]) {
        parse(buf, "", sql);
        bind(buf, "", params);
        execute(buf);
        sync(buf);
    }
}
