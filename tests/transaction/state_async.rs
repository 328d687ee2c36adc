//! LISTEN and session advisory locks never cross identities (`pool.size = 1`),
//! the same-identity control, and the tenant context of every transaction.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::common::proxy::TestProxy;
use crate::{
    ACME_TITLES, GLOBEX_TITLES, Session, backend_pid, current_tenant, fails, start, superuser, titles, value,
    wait_for_pool,
};

/// Sends a notification straight to the server, as a superuser, on tenant 1's `channel`
/// (the proxy scopes a client's channels to its tenant).
async fn notify(su: &Client, channel: &str, payload: &str) {
    su.execute("SELECT pg_notify(rlsproxy.channel('1', $1), $2)", &[&channel, &payload]).await.unwrap();
}

/// Sends a notification straight to the server on the raw name `channel`, which a `LISTEN`
/// inside a `DO` block (not rewritten) listens to.
async fn notify_raw(su: &Client, channel: &str, payload: &str) {
    su.batch_execute(&format!("NOTIFY {channel}, '{payload}'")).await.unwrap();
}

/// Session advisory locks on the server's bigint `key` held by backend `pid`, seen by a
/// superuser (tenants may not read pg_locks).
async fn advisory_locks(su: &Client, key: i64, pid: i32) -> i64 {
    su.query_one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
         AND (classid::bigint << 32 | objid::bigint) = $1 AND pid = $2",
        &[&key, &pid],
    )
    .await
    .unwrap()
    .get(0)
}

/// The server's key of `tenant`'s `key` (the proxy scopes a client's keys to its tenant).
async fn tenant_key(su: &Client, tenant: &str, key: i64) -> i64 {
    su.query_one("SELECT rlsproxy.advisory_key($1, $2)", &[&tenant, &key]).await.unwrap().get(0)
}

#[tokio::test]
async fn listen_pins_the_listener_and_another_tenant_never_gets_its_notifications() {
    let proxy = start(1, 300).await;
    let su = superuser().await;
    let mut a = Session::open(&proxy, &proxy.token("1")).await;
    let mut b = Session::open(&proxy, &proxy.token("2")).await;
    let pid = backend_pid(&a.client).await;
    a.client.batch_execute("LISTEN tx_chan_p").await.unwrap();
    notify(&su, "tx_chan_p", "acme 1").await;
    assert_eq!(a.next_notification().await, "tx_chan_p: acme 1");
    assert_eq!(backend_pid(&a.client).await, pid, "A is pinned to its listening backend");
    notify(&su, "tx_chan_p", "acme 2").await;
    assert_eq!(a.next_notification().await, "tx_chan_p: acme 2", "A, pinned, still gets them while idle");

    assert_eq!(fails(&b.client, "SELECT 1").await.0, "53300", "B waits for the pinned connection");
    assert_eq!(b.notifications(), Vec::<String>::new());

    a.close().await;
    wait_for_pool(&proxy, (1, 1)).await;
    notify(&su, "tx_chan_p", "after acme left").await;
    assert_eq!(backend_pid(&b.client).await, pid, "pool.size = 1: B got the backend A used");
    assert_eq!(value(&b.client, "SELECT count(*) FROM pg_listening_channels()").await, "0");
    notify(&su, "tx_chan_p", "acme 3").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(titles(&b.client).await, GLOBEX_TITLES);
    assert_eq!(b.notifications(), Vec::<String>::new(), "B received notifications of A's channel");
}

#[tokio::test]
async fn listen_in_a_do_block_never_delivers_to_another_tenant() {
    let proxy = start(1, 5000).await;
    let su = superuser().await;
    let a = Session::open(&proxy, &proxy.token("1")).await;
    let mut b = Session::open(&proxy, &proxy.token("2")).await;
    let pid = backend_pid(&a.client).await;
    // Not detected, so A is not pinned: its connection goes back to the pool listening.
    a.client.batch_execute("DO $$ BEGIN LISTEN tx_chan_h; END $$").await.unwrap();
    // The backend sends the notification as soon as it is idle, i.e. while in the pool.
    notify_raw(&su, "tx_chan_h", "acme secret").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The notification arrived while the connection was idle in the pool: a connection with
    // unread input is closed rather than lent, so B gets a fresh backend.
    assert_ne!(backend_pid(&b.client).await, pid, "a pooled connection with unread input was lent");
    notify_raw(&su, "tx_chan_h", "acme secret 2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(value(&b.client, "SELECT count(*) FROM pg_listening_channels()").await, "0");
    assert_eq!(b.notifications(), Vec::<String>::new(), "B received notifications of A's LISTEN");
}

#[tokio::test]
async fn session_advisory_lock_pins_its_holder_until_it_leaves() {
    const KEY: i64 = 7_301_001;
    let proxy = start(1, 300).await;
    let su = superuser().await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let pid = backend_pid(&a).await;
    let (key_a, key_b) = (tenant_key(&su, "1", KEY).await, tenant_key(&su, "2", KEY).await);
    a.batch_execute(&format!("SELECT pg_advisory_lock({KEY})")).await.unwrap();
    assert_eq!(advisory_locks(&su, key_a, pid).await, 1, "A holds the lock");
    assert_eq!(backend_pid(&a).await, pid, "A is pinned to the backend holding its lock");

    let started = Instant::now();
    let (code, message) = fails(&b, &format!("SELECT pg_try_advisory_lock({KEY})")).await;
    assert_eq!(code, "53300", "B must wait, not get A's connection: {message}");
    assert!(started.elapsed() >= Duration::from_millis(250), "B waited the acquire timeout");
    assert_eq!(advisory_locks(&su, key_a, pid).await, 1, "A still holds the lock");

    drop(a);
    wait_for_pool(&proxy, (1, 1)).await;
    assert_eq!(advisory_locks(&su, key_a, pid).await, 0, "released when A left");
    let held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1";
    let held: i64 = su.query_one(held, &[&pid]).await.unwrap().get(0);
    assert_eq!(held, 0, "B's backend holds nothing of A's");
    assert_eq!(backend_pid(&b).await, pid, "pool.size = 1: B got the backend A used");
    assert_eq!(value(&b, &format!("SELECT pg_try_advisory_lock({KEY})")).await, "t");
    assert_eq!(advisory_locks(&su, key_b, pid).await, 1, "now B's lock");
    assert_eq!(value(&b, &format!("SELECT pg_advisory_unlock({KEY})")).await, "t");
}

#[tokio::test]
async fn session_advisory_lock_taken_past_the_detection_is_released_before_another_tenant() {
    const KEY: i64 = 7_301_002;
    let proxy = start(1, 5000).await;
    let su = superuser().await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let pid = backend_pid(&a).await;
    a.batch_execute(&format!("DO $$ BEGIN EXECUTE 'SELECT pg_advisory_' || 'lock({KEY})'; END $$")).await.unwrap();
    assert_eq!(advisory_locks(&su, KEY, pid).await, 1, "A holds the lock");
    // Had B inherited A's session, it could release A's lock (through a DO block, where
    // keys are not scoped).
    let unlock = format!("DO $$ BEGIN IF pg_advisory_unlock({KEY}) THEN RAISE 'released'; END IF; END $$");
    b.batch_execute(&unlock).await.unwrap();
    assert_eq!(backend_pid(&b).await, pid, "A was not pinned: B got the backend A used");
    assert_eq!(advisory_locks(&su, KEY, pid).await, 0, "the reset released A's lock");
    let taken: bool = su.query_one("SELECT pg_try_advisory_lock($1)", &[&KEY]).await.unwrap().get(0);
    assert!(taken, "the lock is free for others");
    su.query_one("SELECT pg_advisory_unlock($1)", &[&KEY]).await.unwrap();
}

/// docs/transaction-pooling.md ("Identity and reset") and `pool.rs`: a connection changes *identity* (tenant, role,
/// subject, startup settings) only through a reset. Between clients of the same identity
/// nothing is reset, so state the detection misses may be shared between them (they are the
/// same principal); detected state is not, because its creator keeps the connection.
#[tokio::test]
async fn same_identity_shares_undetected_state_but_never_a_pinned_connection() {
    let proxy = start(1, 300).await;
    let token = proxy.token("1");
    let a = proxy.connect(&token).await;
    let a2 = proxy.connect(&token).await;
    let pid = backend_pid(&a).await;
    a.batch_execute(
        "DO $$ BEGIN CREATE TEMP TABLE tx_same_h (s text); INSERT INTO tx_same_h VALUES ('shared'); END $$",
    )
    .await
    .unwrap();
    assert_eq!(value(&a2, "SELECT s FROM tx_same_h").await, "shared", "same identity: no reset in between");
    assert_eq!(backend_pid(&a2).await, pid);

    a.batch_execute("CREATE TEMP TABLE tx_same_p (s text); INSERT INTO tx_same_p VALUES ('pinned')").await.unwrap();
    assert_eq!(fails(&a2, "SELECT s FROM tx_same_p").await.0, "53300", "A is pinned, even against its own identity");
    assert_eq!(value(&a, "SELECT s FROM tx_same_p").await, "pinned");
    drop(a);
    wait_for_pool(&proxy, (1, 1)).await;
    assert_eq!(fails(&a2, "SELECT s FROM tx_same_p").await.0, "42P01", "reset when the pinned client left");

    // Same tenant, other startup settings: another identity, never the same session state.
    a2.batch_execute("DO $$ BEGIN CREATE TEMP TABLE tx_same_h2 (s text); END $$").await.unwrap();
    let mut other = proxy.client_config(&token);
    other.application_name("tx-other-identity");
    let a3 = crate::common::connect(&other).await;
    assert_eq!(fails(&a3, "SELECT s FROM tx_same_h2").await.0, "42P01");
    // Startup settings are the server connection's own startup parameters: other settings
    // need another connection (pool.size = 1: the idle one was closed to make room).
    assert_ne!(backend_pid(&a3).await, pid);
    assert_eq!(titles(&a3).await, ACME_TITLES);
}

async fn block(client: &Client, tenant: &str, own: &[&str]) {
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(current_tenant(client).await, tenant);
    assert_eq!(titles(client).await, own);
    assert_eq!(crate::value(client, "SELECT current_setting('app.current_tenant')").await, tenant);
    client.batch_execute("COMMIT").await.unwrap();
}

async fn clients(proxy: &TestProxy) -> Vec<(Client, &'static str, &'static [&'static str])> {
    let mut other = proxy.client_config(&proxy.token("1"));
    other.application_name("tx-tenant-1-bis");
    vec![
        (proxy.connect(&proxy.token("1")).await, "1", &ACME_TITLES[..]),
        (proxy.connect(&proxy.token("2")).await, "2", &GLOBEX_TITLES[..]),
        (crate::common::connect(&other).await, "1", &ACME_TITLES[..]),
    ]
}

#[tokio::test]
async fn every_transaction_runs_in_its_own_clients_tenant() {
    let proxy = start(1, 10_000).await;
    let clients = clients(&proxy).await;
    for round in 0..8 {
        for (client, tenant, own) in &clients {
            assert_eq!(value(client, "SELECT current_setting('app.current_tenant')").await, *tenant, "round {round}");
            assert_eq!(current_tenant(client).await, *tenant, "round {round}");
            block(client, tenant, own).await;
        }
        // Concurrently: the single connection changes hands in whatever order they come.
        let blocks = clients.iter().map(|(c, t, own)| block(c, t, own));
        futures_util::future::join_all(blocks).await;
        let seen = futures_util::future::join_all(clients.iter().map(|(c, _, _)| current_tenant(c))).await;
        assert_eq!(seen, ["1", "2", "1"], "round {round}");
    }
}
