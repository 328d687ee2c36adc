//! Sessions ending and waiting: cancel requests (right and wrong keys), a
//! client that vanishes mid-transaction, and a full pool.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use super::{
    ACME_TITLES, GLOBEX_TITLES, RawSession, Session, pool_after_release, titles, wait_for, wait_until_running,
};
use crate::common::proxy::{self, base_config, db_error};
use crate::common::{postgres, raw};

#[tokio::test]
async fn cancel_request_stops_the_running_query_and_the_session_continues() {
    let proxy = proxy::start_default().await;
    let client = proxy.connect(&proxy.token("1")).await;
    let sleeper = "SELECT pg_sleep(30) /* relay-cancel-me */";
    let started = Instant::now();
    let (result, ()) = tokio::join!(client.simple_query(sleeper), async {
        wait_until_running("relay-cancel-me").await;
        client.cancel_token().cancel_query(NoTls).await.expect("send cancel");
    });
    let err = result.expect_err("the sleep is cancelled");
    assert_eq!(db_error(&err), ("57014".into(), "canceling statement due to user request".into()));
    assert!(started.elapsed() < Duration::from_secs(10), "cancelled promptly");
    assert_eq!(titles(&client).await, ACME_TITLES);
}

async fn send_cancel(proxy: &proxy::TestProxy, pid: i32, secret: i32) {
    let mut c = raw::connect(proxy.addr).await;
    let mut body = raw::CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
    body.extend(pid.to_be_bytes());
    body.extend(secret.to_be_bytes());
    c.send_untagged(&body).await;
    // The proxy handles the request, then closes the connection without a reply.
    let end = c.try_read_message(Duration::from_secs(5)).await;
    assert!(matches!(end, Ok(None)), "cancel connection closed, got {end:?}");
}

#[tokio::test]
async fn cancel_request_with_a_wrong_key_cancels_nothing() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("2"), &[]).await;
    let (pid, secret) = s.key;
    s.conn.send_query("SELECT pg_sleep(2) /* relay-wrong-key */").await;
    wait_until_running("relay-wrong-key").await;
    send_cancel(&proxy, pid, secret.wrapping_add(1)).await;
    send_cancel(&proxy, pid.wrapping_add(1), secret).await;
    send_cancel(&proxy, 0x5eed_1234, 0x0bad_cafe).await;
    let reply = s.reply().await;
    assert!(reply.errors.is_empty(), "not cancelled: {:?}", reply.errors);
    assert_eq!(reply.texts(), [[""]]);
    assert_eq!(reply.tags, ["SELECT 1"]);
    // The right key does cancel (the wrong ones failed for being wrong).
    s.conn.send_query("SELECT pg_sleep(30) /* relay-right-key */").await;
    wait_until_running("relay-right-key").await;
    send_cancel(&proxy, pid, secret).await;
    let reply = s.reply().await;
    assert_eq!(reply.error(), ("57014", "canceling statement due to user request"));
    assert_eq!(s.query("SELECT title FROM documents ORDER BY id").await.column(), GLOBEX_TITLES);
}

/// Session pooling gives the client its server connection's real pid (as
/// `pg_backend_pid()` shows it); the proxy's secret still picks out that client alone.
#[tokio::test]
async fn session_mode_key_has_the_real_backend_pid_and_cancels_that_client_only() {
    let proxy = proxy::start_default().await;
    let mut a = RawSession::open(&proxy, &proxy.token("1"), &[]).await;
    let mut b = RawSession::open(&proxy, &proxy.token("2"), &[]).await;
    for s in [&mut a, &mut b] {
        let pid = s.query("SELECT pg_backend_pid()").await.column();
        assert_eq!(pid, [s.key.0.to_string()], "BackendKeyData pid is the server's");
    }
    a.conn.send_query("SELECT pg_sleep(10) /* relay-real-pid-a */").await;
    b.conn.send_query("SELECT pg_sleep(2) /* relay-real-pid-b */").await;
    wait_until_running("relay-real-pid-a").await;
    wait_until_running("relay-real-pid-b").await;
    // B's pid with A's secret, and A's pid with B's secret, match no key.
    send_cancel(&proxy, b.key.0, a.key.1).await;
    send_cancel(&proxy, a.key.0, b.key.1).await;
    let started = Instant::now();
    send_cancel(&proxy, a.key.0, a.key.1).await;
    assert_eq!(a.reply().await.error(), ("57014", "canceling statement due to user request"));
    assert!(started.elapsed() < Duration::from_secs(5), "cancelled promptly");
    let reply = b.reply().await;
    assert!(reply.errors.is_empty(), "B not cancelled: {:?}", reply.errors);
    assert_eq!(reply.tags, ["SELECT 1"]);
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

/// A client that disappears inside a transaction must not leave its
/// transaction (and its row locks) open upstream, nor its connection in the pool.
#[tokio::test]
async fn client_killed_mid_transaction_rolls_back_upstream() {
    let proxy = proxy::start_default().await;
    let token = proxy.token("1");

    // Control: a session that ends idle hands its reset connection to the next.
    let first = Session::open(&proxy, &token).await;
    let reused_pid = backend_pid(&first.client).await;
    first.close().await;
    assert_eq!(pool_after_release(&proxy, (1, 0)).await, (1, 1));

    // The victim holds a row lock, then its socket closes without a Terminate.
    let victim = Session::open(&proxy, &token).await;
    let victim_pid = backend_pid(&victim.client).await;
    assert_eq!(victim_pid, reused_pid, "the idle connection was reused");
    victim.client.batch_execute("BEGIN").await.unwrap();
    let locked = victim.client.execute("UPDATE users SET name = name WHERE id = 1", &[]).await.unwrap();
    assert_eq!(locked, 1);
    victim.task.abort();
    assert!(victim.task.await.unwrap_err().is_cancelled());
    drop(victim.client);

    // Its server connection is closed, not reset into the pool.
    assert_eq!(pool_after_release(&proxy, (1, 0)).await, (0, 0));
    let su = postgres().superuser_client("app").await;
    let mut gone = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone && Instant::now() < deadline {
        let n: i64 =
            su.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&victim_pid]).await.unwrap().get(0);
        gone = n == 0;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the victim's backend exited");

    // The lock is free: a lock leak would show as 55P03 after 2 s, not a hang.
    let next = proxy.connect(&token).await;
    assert_ne!(backend_pid(&next).await, victim_pid, "a fresh connection");
    next.batch_execute("SET lock_timeout = '2s'").await.unwrap();
    let updated = next.execute("UPDATE users SET name = name WHERE id = 1", &[]).await.unwrap();
    assert_eq!(updated, 1);
    assert_eq!(proxy.pool.stats(), (1, 0));
}

#[tokio::test]
async fn full_pool_refuses_with_53300_then_serves_after_a_release() {
    let mut config = base_config(postgres());
    config.pool.size = 1;
    config.pool.acquire_timeout_ms = 500;
    let proxy = proxy::start(config).await;

    let holder = Session::open(&proxy, &proxy.token("1")).await;
    assert_eq!(titles(&holder.client).await, ACME_TITLES);
    let started = Instant::now();
    let err = proxy.try_connect(&proxy.token("2")).await.expect_err("no connection for a second client");
    let waited = started.elapsed();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53300");
    assert_eq!(db.severity(), "FATAL");
    assert!(db.message().contains("pool"), "message mentions the pool: {}", db.message());
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
        "waited the acquire timeout, not forever: {waited:?}"
    );

    holder.close().await;
    wait_for("the connection to return to the pool", Duration::from_secs(5), || {
        (proxy.pool.stats() == (1, 1)).then_some(())
    })
    .await;
    let later = proxy.connect(&proxy.token("2")).await;
    assert_eq!(titles(&later).await, GLOBEX_TITLES);
}
