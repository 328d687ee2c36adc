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
#[path = "relay/tenancy.rs"]
mod tenancy;
#[path = "relay/transactions.rs"]
mod transactions;

use std::collections::HashMap;
use std::time::Duration;

use common::proxy::TestProxy;
use common::raw::{self, RawClient};
use common::{Postgres, postgres};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, GenericClient, NoTls, SimpleQueryMessage};

/// Titles of tenant 1's documents, by id.
pub const ACME_TITLES: [&str; 3] = ["acme roadmap", "acme payroll", "acme onboarding"];
/// Titles of tenant 2's documents, by id.
pub const GLOBEX_TITLES: [&str; 2] = ["globex merger plan", "globex handbook"];

/// The document titles a client sees, by id (extended protocol).
pub async fn titles(client: &impl GenericClient) -> Vec<String> {
    let rows = client.query("SELECT title FROM documents ORDER BY id", &[]).await.expect("select titles");
    rows.iter().map(|r| r.get(0)).collect()
}

/// The rows of a simple query (text format); NULL is `None`.
pub async fn simple_rows(client: &impl GenericClient, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client.simple_query(sql).await.expect("simple query");
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect()
}

/// The single value of a simple query returning one row and one column.
pub async fn simple_value(client: &impl GenericClient, sql: &str) -> String {
    let rows = simple_rows(client, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: expected one row, got {rows:?}");
    assert_eq!(rows[0].len(), 1, "{sql}: expected one column");
    rows[0][0].clone().expect("non-NULL value")
}

/// A tokio-postgres client whose connection task forwards notices and
/// notifications; `task` lets a test kill the connection abruptly.
pub struct Session {
    /// The client.
    pub client: Client,
    /// Notices and notifications, in arrival order.
    pub messages: mpsc::UnboundedReceiver<AsyncMessage>,
    /// The task driving the connection; aborting it drops the socket.
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

    /// The next notice or notification, failing the test after 5 seconds.
    pub async fn next_message(&mut self) -> AsyncMessage {
        tokio::time::timeout(Duration::from_secs(5), self.messages.recv())
            .await
            .expect("an asynchronous message within 5 s")
            .expect("connection still open")
    }

    /// Drops the client and waits until its connection has closed (a clean Terminate).
    pub async fn close(self) {
        drop(self.client);
        self.task.await.expect("connection task");
    }
}

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

/// Polls `probe` every 20 ms until it returns `Some`, failing after `timeout`
/// with `what` (an awaited condition, not a sleep).
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

/// The pool's (open, idle) counts once the connection a session held is no
/// longer lent out, i.e. after it was either reset into the idle list or closed.
pub async fn pool_after_release(proxy: &TestProxy, lent: (usize, usize)) -> (usize, usize) {
    wait_for("the session's connection to leave the client", Duration::from_secs(10), || {
        let now = proxy.pool.stats();
        (now != lent).then_some(now)
    })
    .await
}

/// Waits until a statement containing `marker` is running upstream
/// (pg_stat_activity), so that a cancel request cannot arrive before it.
pub async fn wait_until_running(marker: &str) {
    let su = postgres().superuser_client(Postgres::APP_DB).await;
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
