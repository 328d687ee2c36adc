//! Pool behaviour in transaction mode: warm connections, a bounded FIFO queue
//! of waiting clients, lifetime and idle limits, a client killed in the middle
//! of a transaction, and a backend that died while idle in the pool.

use std::time::{Duration, Instant};

use crate::common::proxy;
use crate::common::queries::backend_exits;
use crate::{
    ACME_TITLES, GLOBEX_TITLES, Session, backend_pid, current_tenant, fails, rows, superuser, titles, tx_config, value,
    wait_for, wait_for_pool,
};

#[tokio::test]
async fn min_idle_connections_are_opened_without_any_client() {
    let mut cfg = tx_config(4);
    assert!(cfg.upstream.database.is_some(), "min_idle needs upstream.database");
    cfg.pool.min_idle = 2;
    let proxy = proxy::start(cfg).await;
    let stats = wait_for("2 warm idle connections", Duration::from_secs(5), || {
        let stats = proxy.pool.stats();
        (stats.1 >= 2).then_some(stats)
    })
    .await;
    assert!(stats.0 <= 4, "{stats:?}");
    // A client uses one; the pool tops the idle ones up again.
    let client = proxy.connect(&proxy.token("1")).await;
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(titles(&client).await, ACME_TITLES);
    wait_for("idle connections topped up", Duration::from_secs(5), || (proxy.pool.stats() == (3, 2)).then_some(()))
        .await;
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn waiting_clients_are_bounded_by_max_waiting_clients() {
    let mut cfg = tx_config(1);
    cfg.pool.max_waiting_clients = 1;
    cfg.pool.acquire_timeout_ms = 10_000;
    let proxy = proxy::start(cfg).await;
    let holder = proxy.connect(&proxy.token("1")).await;
    let second = proxy.connect(&proxy.token("2")).await;
    let third = proxy.connect(&proxy.token("1")).await;
    holder.batch_execute("BEGIN").await.unwrap();
    assert_eq!(titles(&holder).await, ACME_TITLES);

    let waiting = tokio::spawn(async move {
        let tenant = value(&second, "SELECT current_setting('app.current_tenant')").await;
        (tenant, second)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second client waits for the open transaction");

    let started = Instant::now();
    let (code, message) = fails(&third, "SELECT 1").await;
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not after the timeout");
    assert_eq!(code, "53300");
    assert!(message.contains("max_waiting_clients"), "{message}");
    assert!(!waiting.is_finished());

    holder.batch_execute("COMMIT").await.unwrap();
    let (tenant, second) = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert_eq!(tenant, "2");
    assert_eq!(titles(&second).await, GLOBEX_TITLES);
    assert_eq!(titles(&third).await, ACME_TITLES, "the refused client's session goes on");
}

#[tokio::test]
async fn acquire_timeout_gives_53300_naming_the_wait() {
    let proxy = crate::start(1, 400).await;
    let holder = proxy.connect(&proxy.token("1")).await;
    let other = proxy.connect(&proxy.token("2")).await;
    holder.batch_execute("BEGIN").await.unwrap();
    assert_eq!(titles(&holder).await, ACME_TITLES);
    let started = Instant::now();
    let (code, message) = fails(&other, "SELECT 1").await;
    let waited = started.elapsed();
    assert_eq!(code, "53300");
    assert!(message.contains("400 ms"), "{message}");
    assert!(waited >= Duration::from_millis(350) && waited < Duration::from_secs(3), "{waited:?}");
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(titles(&other).await, GLOBEX_TITLES);
}

#[tokio::test]
async fn a_client_idle_in_a_transaction_is_cut_off_and_frees_its_connection() {
    let mut cfg = tx_config(1);
    cfg.pool.idle_transaction_timeout_s = 1;
    cfg.pool.acquire_timeout_ms = 10_000;
    let proxy = proxy::start(cfg).await;
    let (holder, connection) =
        proxy.client_config(&proxy.token("1")).connect(tokio_postgres::NoTls).await.expect("connect");
    // The proxy's FATAL arrives while the client is idle: the connection task reports it.
    let connection = tokio::spawn(connection);
    let other = proxy.connect(&proxy.token("2")).await;
    // Idle outside a transaction is no reason to cut anyone off.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(titles(&holder).await, ACME_TITLES);
    // A long statement inside a transaction is not idleness either.
    holder.batch_execute("BEGIN; SELECT pg_sleep(1.3)").await.unwrap();
    holder.batch_execute("INSERT INTO documents (tenant_id, title) VALUES (1, 'never committed')").await.unwrap();
    // Now it sits in its transaction: the other tenant waits, then gets the connection.
    let started = Instant::now();
    assert_eq!(titles(&other).await, GLOBEX_TITLES);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(4), "{waited:?}");
    let ended = connection.await.expect("join").expect_err("the proxy ended the session");
    assert_eq!(
        proxy::db_error(&ended),
        (
            "25P03".to_string(),
            "terminating connection due to idle-in-transaction timeout (rlsproxy pool.idle_transaction_timeout_s)"
                .to_string()
        )
    );
    assert!(holder.batch_execute("COMMIT").await.is_err(), "nothing to commit on a closed session");
    let leftover = value(&superuser().await, "SELECT count(*) FROM documents WHERE title = 'never committed'").await;
    assert_eq!(leftover, "0", "the transaction was rolled back");
}

#[tokio::test]
async fn one_tenant_cannot_pin_more_than_its_share_of_connections() {
    let mut cfg = tx_config(4);
    cfg.pool.max_pinned_per_tenant = 1;
    let proxy = proxy::start(cfg).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("1")).await;
    let c = proxy.connect(&proxy.token("2")).await;
    a.batch_execute("SET work_mem = '8MB'").await.unwrap();
    let (code, message) = fails(&b, "SET work_mem = '9MB'").await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "53300",
            "rlsproxy: this tenant already has 1 sessions holding a server connection for their session state \
             (pool.max_pinned_per_tenant)"
        )
    );
    // The refused SET did not happen, and B still works, unpinned.
    assert_eq!(value(&b, "SHOW work_mem").await, "4MB");
    assert_eq!(titles(&b).await, ACME_TITLES);
    // Another tenant has its own share.
    c.batch_execute("SET work_mem = '10MB'").await.unwrap();
    assert_eq!(value(&c, "SHOW work_mem").await, "10MB");
    // A's place comes back when it leaves (its session ends asynchronously: retry a little).
    drop(a);
    let mut pinned = false;
    for _ in 0..50 {
        if b.batch_execute("SET work_mem = '9MB'").await.is_ok() {
            pinned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pinned, "B may pin once A is gone");
    assert_eq!(value(&b, "SHOW work_mem").await, "9MB");
}

#[tokio::test]
async fn waiters_get_the_connection_in_arrival_order() {
    const WAITERS: usize = 6;
    let proxy = crate::start(1, 20_000).await;
    let holder = proxy.connect(&proxy.token("1")).await;
    let mut waiters = Vec::new();
    for i in 0..WAITERS {
        let tenant = if i % 2 == 0 { "1" } else { "2" };
        waiters.push((proxy.connect(&proxy.token(tenant)).await, tenant));
    }
    holder.batch_execute("BEGIN").await.unwrap();
    assert_eq!(titles(&holder).await, ACME_TITLES);
    let mut tasks = Vec::new();
    for (i, (client, tenant)) in waiters.into_iter().enumerate() {
        // One simple query each: one acquisition each, timestamped on the server.
        tasks.push(tokio::spawn(async move {
            let row =
                rows(&client, "SELECT extract(epoch FROM clock_timestamp()), current_setting('app.current_tenant')")
                    .await;
            let at: f64 = row[0][0].as_deref().unwrap().parse().unwrap();
            assert_eq!(row[0][1].as_deref(), Some(tenant), "waiter {i}");
            at
        }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    holder.batch_execute("COMMIT").await.unwrap();
    let mut served = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        served.push((task.await.unwrap(), i));
    }
    served.sort_by(|x, y| x.0.total_cmp(&y.0));
    let order: Vec<usize> = served.iter().map(|(_, i)| *i).collect();
    assert_eq!(order, (0..WAITERS).collect::<Vec<_>>(), "served in arrival order");
}

#[tokio::test]
async fn connections_past_max_lifetime_are_replaced() {
    let mut cfg = tx_config(1);
    cfg.pool.max_lifetime_s = 1;
    let proxy = proxy::start(cfg).await;
    let client = proxy.connect(&proxy.token("1")).await;
    let first = backend_pid(&client).await;
    assert_eq!(backend_pid(&client).await, first, "reused within its lifetime");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = backend_pid(&client).await;
    assert_ne!(second, first, "a connection older than max_lifetime_s is not lent again");
    assert_eq!(current_tenant(&client).await, "1");
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout() {
    let mut cfg = tx_config(2);
    cfg.pool.idle_timeout_s = 1;
    let proxy = proxy::start(cfg).await;
    let client = proxy.connect(&proxy.token("1")).await;
    let pid = backend_pid(&client).await;
    wait_for_pool(&proxy, (1, 1)).await;
    // No client activity: the pool's maintenance closes it.
    wait_for_pool(&proxy, (0, 0)).await;
    let su = superuser().await;
    let gone = backend_exits(&su, pid).await;
    assert!(gone, "backend {pid} still exists");
    assert_eq!(titles(&client).await, ACME_TITLES, "the session opens a new one when needed");
}

/// A client that vanishes inside a transaction holding a row lock: its connection is closed,
/// never lent dirty, and the next client (here one that was already waiting) gets a fresh one.
#[tokio::test]
async fn client_killed_mid_transaction_never_passes_a_dirty_connection_on() {
    let proxy = crate::start(1, 20_000).await;
    let victim = Session::open(&proxy, &proxy.token("1")).await;
    let next = proxy.connect(&proxy.token("1")).await;
    let waiter = proxy.connect(&proxy.token("2")).await;
    let victim_pid = backend_pid(&victim.client).await;
    victim.client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(victim.client.execute("UPDATE users SET name = name WHERE id = 1", &[]).await.unwrap(), 1);
    assert_eq!(proxy.pool.stats(), (1, 0), "the victim holds the only connection");
    let waiting = tokio::spawn(async move { (backend_pid(&waiter).await, current_tenant(&waiter).await) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the waiter waits for the open transaction");

    victim.task.abort();
    assert!(victim.task.await.unwrap_err().is_cancelled());
    drop(victim.client);
    let (waiter_pid, tenant) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_ne!(waiter_pid, victim_pid, "the dirty connection was closed, not handed to the waiter");
    assert_eq!(tenant, "2");

    let su = superuser().await;
    let gone = backend_exits(&su, victim_pid).await;
    assert!(gone, "the victim's backend exited");
    // The lock is free: a leaked lock would show as 55P03 after 2 s.
    next.batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'").await.unwrap();
    assert_eq!(next.execute("UPDATE users SET name = name WHERE id = 1", &[]).await.unwrap(), 1);
    next.batch_execute("ROLLBACK").await.unwrap();
    assert_ne!(backend_pid(&next).await, victim_pid);
    wait_for_pool(&proxy, (1, 1)).await;
}

/// A backend terminated while its connection sits idle in the pool (pg_terminate_backend,
/// idle_session_timeout, a failover) leaves a FATAL ErrorResponse and a closed socket: the next
/// transaction, whoever's, must get another connection, not end the client's session.
#[tokio::test]
async fn connection_terminated_while_idle_in_the_pool_is_replaced() {
    let proxy = crate::start(1, 10_000).await;
    let su = superuser().await;
    let mut wrong = Vec::new();
    // The next borrower is the same identity (pipelined injection), then another (awaited).
    for (last, next) in [("1", "1"), ("1", "2")] {
        let last_user = proxy.connect(&proxy.token(last)).await;
        let next_user = proxy.connect(&proxy.token(next)).await;
        let pid = backend_pid(&last_user).await;
        wait_for_pool(&proxy, (1, 1)).await;
        let killed: bool = su.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
        assert!(killed);
        let mut gone = false;
        for _ in 0..100 {
            let n: i64 =
                su.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().get(0);
            gone = n == 0;
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "backend {pid} still exists");
        let first = crate::try_rows(&next_user, "SELECT current_setting('app.current_tenant')").await;
        let second = crate::try_rows(&next_user, "SELECT current_setting('app.current_tenant')").await;
        let own = Ok(vec![vec![Some(next.to_string())]]);
        if first != own || second != own {
            wrong.push(format!("tenant {next} after tenant {last}: {first:?}, then {second:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
