//! Small query helpers shared by the integration tests: the seed data's titles,
//! the tenant a client runs as, simple-query rows and values, waiting for a
//! condition or an upstream statement, a client session that keeps its
//! notices and notifications, and pgbench through a proxy.

use std::process::Output;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, GenericClient, NoTls, SimpleQueryMessage};

use super::proxy::{self, TestProxy};
use super::{Postgres, postgres};

/// Titles of tenant 1's documents, by id.
pub const ACME_TITLES: [&str; 3] = ["acme roadmap", "acme payroll", "acme onboarding"];
/// Titles of tenant 2's documents, by id.
pub const GLOBEX_TITLES: [&str; 2] = ["globex merger plan", "globex handbook"];

/// The document titles a client sees, by id (extended protocol).
pub async fn titles(client: &impl GenericClient) -> Vec<String> {
    let rows = client.query("SELECT title FROM documents ORDER BY id", &[]).await.expect("select titles");
    rows.iter().map(|r| r.get(0)).collect()
}

/// `current_setting('app.current_tenant')` as the client sees it (extended protocol).
pub async fn current_tenant(client: &impl GenericClient) -> String {
    client.query_one("SELECT current_setting('app.current_tenant')", &[]).await.expect("current_setting").get(0)
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

/// The single non-NULL value of a simple query returning one row and one column.
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

/// Whether upstream backend `pid` has exited, polled every 50 ms for up to 5 s through `su`.
pub async fn backend_exits(su: &Client, pid: i32) -> bool {
    for _ in 0..100 {
        let n: i64 =
            su.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().get(0);
        if n == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A tokio-postgres client whose connection task forwards notices and
/// notifications; `task` lets a test kill the connection abruptly.
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

    /// The next notice or notification, failing the test after 5 seconds.
    pub async fn next_message(&mut self) -> AsyncMessage {
        tokio::time::timeout(Duration::from_secs(5), self.messages.recv())
            .await
            .expect("an asynchronous message within 5 s")
            .expect("connection still open")
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

/// Runs pgbench as tenant 1 against database bench through `proxy` with `args`,
/// off the runtime's threads.
pub async fn pgbench(proxy: &TestProxy, args: &[&str]) -> Output {
    let mut cmd = postgres().pgbench();
    cmd.args(["-h", "127.0.0.1", "-p", &proxy.addr.port().to_string(), "-U", "alice"])
        .args(args)
        .arg(Postgres::BENCH_DB)
        .env("PGPASSWORD", proxy.token("1"))
        .env("PGSSLMODE", "disable");
    tokio::task::spawn_blocking(move || cmd.output().expect("run pgbench")).await.unwrap()
}

/// pgbench's stdout, after checking that `what` exited 0.
pub fn pgbench_stdout(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} exited with {}: {stdout}\n{stderr}", out.status);
    stdout
}

/// pgbench's "number of transactions actually processed", if its report has one.
pub fn pgbench_processed(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
}
