//! The admin listener against the test cluster: exact metric values after a
//! scripted workload, the admin views behind their bearer token (never showing
//! a client's token), readiness following the upstream and the shutdown, and
//! `rlsproxy healthcheck`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::proxy::{self, TestProxy};
use rlsproxy::config::PoolMode;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

use common::http::{get, sample};

async fn admin_proxy(mode: PoolMode, tenant_label_limit: usize, token: Option<&str>) -> TestProxy {
    let mut config = proxy::base_config(common::postgres());
    config.admin.address = Some("127.0.0.1:0".parse().expect("addr"));
    config.admin.tenant_label_limit = tenant_label_limit;
    config.admin.token = token.map(str::to_string);
    config.pool.mode = mode;
    proxy::start(config).await
}

/// The token with the first character of its signature changed.
fn forge_signature(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').expect("three parts");
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    format!("{signed}.{first}{}", &signature[1..])
}

#[tokio::test]
async fn metrics_count_a_scripted_workload_exactly() {
    let p = admin_proxy(PoolMode::Transaction, 1, None).await;
    let admin = p.admin.expect("admin listener");
    let one = p.connect(&p.token("1")).await;
    let two = p.connect(&p.token("2")).await;
    for _ in 0..3 {
        one.simple_query("SELECT count(*) FROM documents").await.expect("tenant 1 query");
    }
    for _ in 0..2 {
        two.simple_query("SELECT count(*) FROM documents").await.expect("tenant 2 query");
    }
    let refused = one.simple_query("SET app.current_tenant = '2'").await.expect_err("guard refuses");
    assert_eq!(proxy::db_error(&refused).0, "42501");
    let forged = forge_signature(&p.token("1"));
    assert!(p.try_connect(&forged).await.is_err(), "bad signature");
    let expired = p.token_with("1", None, Duration::ZERO, &[]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(p.try_connect(&expired).await.is_err(), "expired");
    let (status, text) = get(admin, "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    let expect = [
        // The label limit is 1: tenant 1 came first, tenant 2 is counted as "other".
        ("rlsproxy_transactions_total{tenant=\"1\"}", 3.0),
        ("rlsproxy_transactions_total{tenant=\"other\"}", 2.0),
        // The refused SET is a query, but starts no transaction.
        ("rlsproxy_queries_total{tenant=\"1\"}", 4.0),
        ("rlsproxy_queries_total{tenant=\"other\"}", 2.0),
        ("rlsproxy_guard_rejections_total{rule=\"set_protected\"}", 1.0),
        ("rlsproxy_auth_failures_total{reason=\"signature\"}", 1.0),
        ("rlsproxy_auth_failures_total{reason=\"expired\"}", 1.0),
        ("rlsproxy_injection_failures_total", 0.0),
        ("rlsproxy_transaction_duration_seconds_count", 5.0),
        // Two session starts and five transactions borrowed a connection.
        ("rlsproxy_pool_wait_seconds_count", 7.0),
        ("rlsproxy_client_connections{state=\"idle\"}", 2.0),
        ("rlsproxy_client_connections{state=\"active\"}", 0.0),
        ("rlsproxy_server_connections{state=\"active\",mode=\"transaction\"}", 0.0),
        ("rlsproxy_pool_max_connections", 4.0),
        ("rlsproxy_pool_waiting_clients", 0.0),
        // The errors the proxy itself sent: the refused SET, the two refused tokens.
        ("rlsproxy_client_errors_total{sqlstate=\"42501\"}", 1.0),
        ("rlsproxy_client_errors_total{sqlstate=\"28P01\"}", 2.0),
        ("rlsproxy_build_info{version=\"0.1.0\"}", 1.0),
    ];
    for (name, value) in expect {
        assert_eq!(sample(&text, name), Some(value), "{name} in:\n{text}");
    }
    assert!(!text.contains("tenant=\"2\""), "tenant 2 has no label of its own:\n{text}");
    let idle = sample(&text, "rlsproxy_server_connections{state=\"idle\",mode=\"transaction\"}").expect("idle servers");
    assert!((1.0..=4.0).contains(&idle), "{text}");
    for side in ["client", "server"] {
        for dir in ["received", "sent"] {
            let name = format!("rlsproxy_bytes_{dir}_total{{side=\"{side}\"}}");
            assert!(sample(&text, &name).is_some_and(|v| v > 100.0), "{name} in:\n{text}");
        }
    }
    // A cancel that reaches a running statement, and one with a key this proxy never issued.
    let sleeping = {
        let one = p.connect(&p.token("1")).await;
        let cancel = one.cancel_token();
        let sleep = tokio::spawn(async move { one.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel_query(tokio_postgres::NoTls).await.expect("cancel");
        sleep.await.expect("task")
    };
    assert_eq!(proxy::db_error(&sleeping.expect_err("cancelled")).0, "57014");
    let mut stray = common::raw::connect(p.addr).await;
    stray
        .send_untagged(&[&common::raw::CANCEL_REQUEST_CODE.to_be_bytes()[..], &[0, 0, 0, 7, 0, 0, 0, 9]].concat())
        .await;
    drop(stray);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (_, text) = get(admin, "/metrics", None).await;
    for (name, value) in [
        ("rlsproxy_cancel_requests_total{outcome=\"forwarded\"}", 1.0),
        ("rlsproxy_cancel_requests_total{outcome=\"unknown_key\"}", 1.0),
    ] {
        assert_eq!(sample(&text, name), Some(value), "{name} in:\n{text}");
    }
    for name in ["rlsproxy_process_resident_memory_bytes", "rlsproxy_process_open_fds"] {
        assert!(sample(&text, name).is_some_and(|v| v > 0.0), "{name} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    p.handle.shutdown();
}

#[tokio::test]
async fn admin_views_need_the_token_and_never_show_a_client_token() {
    let p = admin_proxy(PoolMode::Session, 100, Some(ADMIN_TOKEN)).await;
    let admin = p.admin.expect("admin listener");
    let token = p.token("7");
    let client = p.connect(&token).await;
    client.simple_query("SELECT 1").await.expect("query");

    assert_eq!(get(admin, "/admin/clients", None).await.0, 401);
    assert_eq!(get(admin, "/admin/clients", Some("wrong")).await.0, 401);
    let (status, body) = get(admin, "/admin/clients", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let clients: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let rows = clients.as_array().expect("a list");
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["tenant"], "7");
    assert_eq!(rows[0]["subject"], "user-of-7");
    assert_eq!(rows[0]["database"], "app");
    assert_eq!(rows[0]["state"], "idle");
    let pid = rows[0]["backend_pid"].as_i64().expect("session mode: a backend pid");
    let row = client.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid");
    assert_eq!(i64::from(row.get::<_, i32>(0)), pid);
    assert!(!body.contains(&token) && !body.contains(&token[..20]), "no token in {body}");

    let (status, body) = get(admin, "/admin/pools", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let pools: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (pools["mode"].as_str(), pools["size"].as_u64(), pools["open"].as_u64()),
        (Some("session"), Some(4), Some(1))
    );
    assert_eq!(get(admin, "/admin/nothing", Some(ADMIN_TOKEN)).await.0, 404);
    p.handle.shutdown();

    let untokened = admin_proxy(PoolMode::Session, 100, None).await;
    let (status, body) = get(untokened.admin.expect("admin"), "/admin/clients", Some(ADMIN_TOKEN)).await;
    assert_eq!((status, body.as_str()), (403, "the admin views need [admin] token or token_file\n"));
    untokened.handle.shutdown();
}

#[tokio::test]
async fn readiness_follows_the_upstream_and_the_shutdown() {
    let p = admin_proxy(PoolMode::Session, 100, None).await;
    let admin = p.admin.expect("admin listener");
    assert_eq!(get(admin, "/healthz", None).await, (200, "ok\n".to_string()));
    assert_eq!(get(admin, "/readyz", None).await, (200, "ready\n".to_string()));
    // A session in a transaction keeps the proxy draining after the shutdown starts.
    let client = p.connect(&p.token("1")).await;
    client.simple_query("BEGIN").await.expect("begin");
    p.handle.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(admin, "/readyz", None).await, (503, "not ready: shutting down\n".to_string()));
    assert_eq!(get(admin, "/healthz", None).await.0, 200, "alive while draining");
    client.simple_query("COMMIT").await.expect("the open transaction finishes");

    // An upstream that refuses connections: alive, not ready.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut config = proxy::base_config(common::postgres());
    config.upstream.port = closed;
    config.admin.address = Some("127.0.0.1:0".parse().expect("addr"));
    let down = proxy::start(config).await;
    let admin = down.admin.expect("admin listener");
    assert_eq!(get(admin, "/healthz", None).await.0, 200);
    let (status, body) = get(admin, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: upstream: "), "{body}");
    down.handle.shutdown();
}

/// Readiness adds no load while the pool is usable, and follows a database that stops
/// accepting the proxy's role (here: its own role, made NOLOGIN and its sessions ended, so
/// that the other tests' connections are untouched): alive throughout; not ready once the
/// pool has no connection and opening one failed; ready again within `PROBE_EVERY` of the
/// database accepting it, with no client to try.
#[tokio::test]
async fn readiness_adds_no_load_and_follows_a_database_that_refuses_the_proxy() {
    let su = common::postgres().superuser_client("app").await;
    su.batch_execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rdy_proxy') THEN \
           CREATE ROLE rdy_proxy LOGIN NOINHERIT PASSWORD 'rdy-proxy-pw' IN ROLE admin_role; END IF; END $$; \
         GRANT SELECT ON documents TO rdy_proxy",
    )
    .await
    .expect("role");
    let mut config = proxy::base_config(common::postgres());
    config.admin.address = Some("127.0.0.1:0".parse().expect("addr"));
    config.upstream.user = "rdy_proxy".into();
    config.upstream.password = Some("rdy-proxy-pw".into());
    config.pool.mode = PoolMode::Transaction;
    config.pool.size = 1;
    let p = proxy::start(config).await;
    let admin = p.admin.expect("admin listener");
    let client = p.connect(&p.token("1")).await;
    client.simple_query("SELECT 1").await.expect("a first transaction");
    let opened = p.pool.health().0.opened;
    for _ in 0..20 {
        assert_eq!(get(admin, "/readyz", None).await, (200, "ready\n".to_string()));
    }
    assert_eq!(p.pool.health().0.opened, opened, "a probe opened a server connection");

    su.batch_execute(
        "ALTER ROLE rdy_proxy NOLOGIN; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rdy_proxy'",
    )
    .await
    .expect("refuse the proxy");
    let failed = client.simple_query("SELECT 1").await.expect_err("no server connection can be had");
    assert_eq!(proxy::db_error(&failed).0, "08006", "{failed:?}");
    assert_eq!(get(admin, "/healthz", None).await, (200, "ok\n".to_string()));
    let (status, body) = get(admin, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: upstream: "), "{body}");

    su.batch_execute("ALTER ROLE rdy_proxy LOGIN").await.expect("accept the proxy again");
    let deadline = tokio::time::Instant::now() + rlsproxy::admin::readiness::PROBE_EVERY + Duration::from_secs(3);
    loop {
        let (status, body) = get(admin, "/readyz", None).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still not ready: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    p.handle.shutdown();
}

#[tokio::test]
async fn healthcheck_command_exits_by_the_probe_status() {
    let p = admin_proxy(PoolMode::Session, 100, None).await;
    let admin = p.admin.expect("admin listener");
    let bin = env!("CARGO_BIN_EXE_rlsproxy");
    let run = |url: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin).args(["healthcheck", "--url", &url]).output()
        })
    };
    let ok = run(format!("http://{admin}/readyz")).await.expect("join").expect("run");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let missing = run(format!("http://{admin}/nothing")).await.expect("join").expect("run");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("answered 404"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let down = run(format!("http://{closed}/healthz")).await.expect("join").expect("run");
    assert_eq!(down.status.code(), Some(1));
    p.handle.shutdown();
}

#[tokio::test]
async fn a_request_whose_headers_never_end_is_dropped() {
    let p = admin_proxy(PoolMode::Session, 100, None).await;
    let mut tcp = tokio::net::TcpStream::connect(p.admin.expect("admin listener")).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET /metrics HTTP/1.1\r\nHost: slow\r\n").await.expect("send");
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut buf))
        .await
        .expect("the admin listener closes the connection, not the test's timeout");
    let waited = started.elapsed();
    assert!(read.is_err() || !String::from_utf8_lossy(&buf).contains("# EOF"), "no metrics for half a request");
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(15), "{waited:?}");
    p.handle.shutdown();
}
