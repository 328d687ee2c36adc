//! Peers that go silent without closing (`[tcp]`): a server or client behind a network that
//! drops every packet is found by TCP keepalive and `TCP_USER_TIMEOUT`, in seconds rather than
//! the kernel's 15 minutes, and what it held is given back.

use std::time::{Duration, Instant};

use rlsproxy::config::{PoolMode, RequireTls, TcpConfig};

use super::blackhole::Link;
use super::restart::SERVER;
use crate::common::postgres;
use crate::common::proxy::{self, db_error};

/// Seconds, for a test that would otherwise wait as long as the kernel does.
const FOUND_WITHIN: Duration = Duration::from_secs(10);

/// Dead-peer detection in a few seconds: one second idle, one probe a second, two probes;
/// 1.5 s of unacknowledged data.
fn quick_tcp() -> TcpConfig {
    TcpConfig { keepalive_idle_s: 1, keepalive_interval_s: 1, keepalive_count: 2, user_timeout_ms: 1500 }
}

/// The test cluster's Unix socket, which no network namespace separates.
fn unix_socket() -> std::path::PathBuf {
    let pg = postgres();
    pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port()))
}

async fn titles(client: &tokio_postgres::Client) -> Vec<String> {
    let rows = client.query("SELECT title FROM documents ORDER BY id", &[]).await.expect("titles");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn a_silent_upstream_gives_08006_within_the_user_timeout_and_the_pool_recovers() {
    let _server = SERVER.read().await;
    let link = Link::new();
    let upstream = link.forward_to_unix(unix_socket());
    let mut cfg = proxy::base_config(postgres());
    cfg.upstream.host = upstream.ip().to_string();
    cfg.upstream.port = upstream.port();
    cfg.upstream.connect_timeout_ms = 1500;
    cfg.tcp = quick_tcp();
    cfg.pool.mode = PoolMode::Transaction;
    let proxy = proxy::start(cfg).await;
    let client = proxy.connect(&proxy.token("1")).await;
    assert_eq!(titles(&client).await, ["acme roadmap", "acme payroll", "acme onboarding"]);
    // Lent for an open transaction when the network goes.
    client.batch_execute("BEGIN; SELECT 1").await.expect("begin");

    link.cut();
    let started = Instant::now();
    let err = tokio::time::timeout(FOUND_WITHIN, client.simple_query("SELECT 2"))
        .await
        .expect("an answer before the kernel gives up")
        .expect_err("the server is gone");
    let waited = started.elapsed();
    let (code, message) = db_error(&err);
    eprintln!("in-flight statement: {code} {message} after {waited:?}");
    assert_eq!(code, "08006", "{message}");
    assert!(message.starts_with("rlsproxy: lost the upstream connection: "), "{message}");
    assert!(waited < FOUND_WITHIN, "found after {waited:?}");

    // A new client's server connection cannot be opened: connect_timeout_ms, then 08006.
    let started = Instant::now();
    let err = tokio::time::timeout(FOUND_WITHIN, proxy.try_connect(&proxy.token("2")))
        .await
        .expect("an answer within connect_timeout_ms")
        .expect_err("no upstream");
    let waited = started.elapsed();
    let (code, message) = db_error(&err);
    eprintln!("new client: {code} {message} after {waited:?}");
    assert_eq!(code, "08006", "{message}");
    assert!(message.starts_with("rlsproxy: the upstream server is unavailable: "), "{message}");
    assert!(waited < FOUND_WITHIN, "refused after {waited:?}");

    // The network is back: the same proxy serves new clients, on new server connections, as
    // soon as the host's neighbour entry for the namespace is usable again.
    link.restore();
    let started = Instant::now();
    let client = loop {
        match proxy.try_connect(&proxy.token("2")).await {
            Ok(client) => break client,
            Err(e) => assert!(started.elapsed() < FOUND_WITHIN, "still refused after {:?}: {e}", started.elapsed()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(titles(&client).await, ["globex merger plan", "globex handbook"]);
}

#[tokio::test]
async fn a_vanished_client_is_dropped_and_its_transaction_rolled_back() {
    let _server = SERVER.read().await;
    let link = Link::new();
    let mut cfg = proxy::base_config(postgres());
    cfg.listen.address = std::net::SocketAddr::from((link.host_ip, 0));
    cfg.listen.require_tls = RequireTls::Never;
    cfg.tcp = quick_tcp();
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.size = 1;
    let proxy = proxy::start(cfg).await;

    let stream = link.connect_from_ns(proxy.addr);
    stream.set_nonblocking(true).expect("nonblocking");
    let stream = tokio::net::TcpStream::from_std(stream).expect("tokio stream");
    let (client, conn) =
        proxy.client_config(&proxy.token("1")).connect_raw(stream, tokio_postgres::NoTls).await.expect("login");
    tokio::spawn(conn);
    client.batch_execute("BEGIN; SELECT id FROM documents WHERE id = 1 FOR UPDATE").await.expect("lock a row");

    link.cut();
    let started = Instant::now();
    let admin = postgres().superuser_client("app").await;
    let lock = "SELECT id FROM documents WHERE id = 1 FOR UPDATE NOWAIT";
    let held = admin.simple_query(lock).await.expect_err("the vanished client holds the row");
    assert_eq!(db_error(&held).0, "55P03", "{held}");
    loop {
        match admin.simple_query(lock).await {
            Ok(_) => break,
            Err(e) => assert_eq!(db_error(&e).0, "55P03", "{e}"),
        }
        assert!(started.elapsed() < FOUND_WITHIN, "the row is still locked after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("lock released {:?} after the client vanished", started.elapsed());

    // The one server connection is clean for its next borrower (from the host's side).
    link.restore();
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.expect("connect");
    let (client, conn) =
        proxy.client_config(&proxy.token("2")).connect_raw(stream, tokio_postgres::NoTls).await.expect("login");
    tokio::spawn(conn);
    assert_eq!(titles(&client).await, ["globex merger plan", "globex handbook"]);
}
