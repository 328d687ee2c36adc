//! Restarting without refusing clients: a new proxy listens on the same port
//! (`listen.reuse_port`) while the old one drains. Clients that reconnect on an error lose no
//! acknowledged commit and never find the port closed; the old proxy ends its idle sessions
//! with 57P01 and stops as soon as its last session has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::restart::SERVER;
use crate::common::postgres;
use crate::common::proxy::{self, TestProxy};

const CLIENTS: i32 = 6;

/// Whether `e` says the port was closed or the connection reset before the login finished.
fn refused(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset);
        }
        source = s.source();
    }
    false
}

/// What one client saw: the sequence numbers whose INSERT was acknowledged, and every
/// connection attempt the port refused.
struct Seen {
    acked: Vec<i32>,
    refused: Vec<String>,
}

/// Inserts `(id, 1)`, `(id, 2)`, … one autocommit statement each, reconnecting on any error,
/// until `stop`.
async fn client(config: tokio_postgres::Config, id: i32, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen { acked: Vec::new(), refused: Vec::new() };
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let client = match config.connect(tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                client
            }
            Err(e) => {
                if refused(&e) {
                    seen.refused.push(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            match client.execute("INSERT INTO fault_ledger (client, seq) VALUES ($1, $2)", &[&id, &seq]).await {
                Ok(_) => seen.acked.push(seq),
                Err(_) => break,
            }
        }
    }
    seen
}

async fn start_on(port: u16) -> TestProxy {
    let mut cfg = proxy::base_config(postgres());
    cfg.listen.address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    cfg.listen.reuse_port = true;
    cfg.pool.size = CLIENTS as usize;
    proxy::start(cfg).await
}

#[tokio::test]
async fn a_restart_on_the_same_port_refuses_no_client_and_loses_no_commit() {
    let _server = SERVER.read().await;
    let admin = postgres().superuser_client("app").await;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS fault_ledger; \
             CREATE TABLE fault_ledger (client int, seq int, PRIMARY KEY (client, seq)); \
             GRANT SELECT, INSERT ON fault_ledger TO app_proxy",
        )
        .await
        .expect("fault_ledger");
    let old = start_on(0).await;
    let port = old.addr.port();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> =
        (1..=CLIENTS).map(|id| tokio::spawn(client(old.client_config(&old.token("1")), id, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The new proxy listens beside the old one, then the old one drains.
    let new = start_on(port).await;
    assert_eq!(new.addr, old.addr);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let draining = Instant::now();
    old.handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), old.task).await.expect("the old proxy stops").expect("task");
    let stopped = draining.elapsed();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);

    let mut acked = 0;
    for (id, task) in (1..=CLIENTS).zip(clients) {
        let seen = task.await.expect("client task");
        assert!(seen.refused.is_empty(), "client {id} was refused: {:?}", seen.refused);
        let stored: Vec<i32> = admin
            .query("SELECT seq FROM fault_ledger WHERE client = $1 ORDER BY seq", &[&id])
            .await
            .expect("ledger")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lost: Vec<&i32> = seen.acked.iter().filter(|s| !stored.contains(s)).collect();
        assert!(lost.is_empty(), "client {id}: acknowledged commits missing: {lost:?}");
        acked += seen.acked.len();
    }
    eprintln!("{acked} commits acknowledged; the old proxy stopped {stopped:?} after the shutdown began");
    assert!(stopped < Duration::from_secs(2), "the old proxy drained for {stopped:?} with only idle sessions");
    // Everyone is on the new proxy now.
    assert!(new.pool.stats().0 > 0, "the new proxy served nobody");
}

#[tokio::test]
async fn a_draining_proxy_ends_idle_sessions_with_57p01_and_stops_after_the_last_transaction() {
    let _server = SERVER.read().await;
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = rlsproxy::config::PoolMode::Transaction;
    let proxy = proxy::start(cfg).await;
    let (idle, idle_conn) = proxy.client_config(&proxy.token("1")).connect(tokio_postgres::NoTls).await.expect("idle");
    let idle_conn = tokio::spawn(idle_conn);
    let busy = proxy.connect(&proxy.token("2")).await;
    idle.simple_query("SELECT 1").await.expect("idle client works");
    busy.batch_execute("BEGIN").await.expect("begin");

    proxy.handle.shutdown();
    // The idle session ends at once, with PostgreSQL's code for an administrator's shutdown.
    let ended =
        tokio::time::timeout(Duration::from_secs(5), idle_conn).await.expect("idle session ends").expect("task");
    let err = ended.expect_err("ended with an error");
    assert_eq!(
        proxy::db_error(&err),
        ("57P01".into(), "terminating connection because rlsproxy is shutting down".into())
    );
    // The open transaction goes on to its end; then the session ends and nothing new starts.
    let count: i64 = busy.query_one("SELECT count(*) FROM documents", &[]).await.expect("in the block").get(0);
    assert_eq!(count, 2);
    busy.batch_execute("COMMIT").await.expect("commit");
    let committed = Instant::now();
    assert!(busy.batch_execute("BEGIN").await.is_err(), "a transaction started on a draining proxy");
    tokio::time::timeout(Duration::from_secs(2), proxy.task)
        .await
        .expect("stops after the last transaction")
        .expect("task");
    eprintln!("stopped {:?} after the last COMMIT", committed.elapsed());
}
