//! `pg_terminate_backend` of a pooled server connection (an operator, or PostgreSQL's own
//! `idle_session_timeout`): only the client on it, if any, sees an error; others are
//! untouched; the connection is replaced.

use std::time::Duration;

use rlsproxy::config::PoolMode;

use super::restart::SERVER;
use crate::common::postgres;
use crate::common::proxy::{self, db_error};

async fn pid(client: &tokio_postgres::Client) -> i32 {
    client.query_one("SELECT pg_backend_pid()", &[]).await.expect("pid").get(0)
}

async fn count(client: &tokio_postgres::Client) -> Result<i64, (String, String)> {
    client.query_one("SELECT count(*) FROM documents", &[]).await.map(|r| r.get(0)).map_err(|e| db_error(&e))
}

#[tokio::test]
async fn a_terminated_idle_connection_is_replaced_before_anyone_borrows_it() {
    let _server = SERVER.read().await;
    let admin = postgres().superuser_client("app").await;
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.size = 1;
    let proxy = proxy::start(cfg).await;
    let client = proxy.connect(&proxy.token("1")).await;
    let before = pid(&client).await;
    // Between transactions the connection is idle in the pool.
    admin.execute("SELECT pg_terminate_backend($1)", &[&before]).await.expect("terminate");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&client).await, Ok(3), "the next transaction of the client that used it");
    let after = pid(&client).await;
    assert_ne!(after, before);
}

#[tokio::test]
async fn a_terminated_lent_connection_fails_only_its_client() {
    let _server = SERVER.read().await;
    let admin = postgres().superuser_client("app").await;
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.size = 2;
    let proxy = proxy::start(cfg).await;
    let (victim, victim_conn) =
        proxy.client_config(&proxy.token("1")).connect(tokio_postgres::NoTls).await.expect("victim");
    // The server's FATAL reaches the client as it happens: its connection ends with it.
    let victim_conn = tokio::spawn(victim_conn);
    let bystander = proxy.connect(&proxy.token("2")).await;
    victim.batch_execute("BEGIN").await.expect("begin");
    let lent = pid(&victim).await;
    bystander.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(count(&bystander).await, Ok(2));

    admin.execute("SELECT pg_terminate_backend($1)", &[&lent]).await.expect("terminate");
    let ended = tokio::time::timeout(Duration::from_secs(5), victim_conn).await.expect("ends").expect("task");
    let err = ended.expect_err("its server connection is gone");
    assert_eq!(db_error(&err), ("57P01".into(), "terminating connection due to administrator command".into()));
    assert!(victim.query_one("SELECT 1", &[]).await.is_err(), "the victim's session is over");
    // The bystander's transaction goes on, and a new client gets the freed slot.
    assert_eq!(count(&bystander).await, Ok(2));
    bystander.batch_execute("COMMIT").await.expect("commit");
    let next = proxy.connect(&proxy.token("1")).await;
    assert_eq!(count(&next).await, Ok(3));
}

/// The injection itself is cut off: strict mode's admission waits for the key table (an
/// operator holds it locked) when its server connection is terminated. Nothing of the
/// client's had run on it, so the proxy starts the transaction again on a fresh connection:
/// the client sees its own rows and no error; a bystander is untouched.
#[tokio::test]
async fn a_connection_terminated_during_the_injection_is_replaced_for_its_client() {
    let _server = SERVER.read().await;
    const KEY_HEX: &str = "6661756c747320696e206120747261697420696e6a656374696f6e2074657374";
    let mut cfg = proxy::strict_without_guard(postgres(), "flt_k", KEY_HEX).await;
    cfg.guard.enabled = true;
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.size = 2;
    let proxy = proxy::start(cfg).await;
    let bystander = proxy.connect(&proxy.token("2")).await;
    bystander.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(count(&bystander).await, Ok(2));
    let victim = proxy.connect(&proxy.token("1")).await;
    // The one free connection takes another tenant's context, so the victim's next
    // transaction admits its value afresh on it.
    let other = proxy.connect(&proxy.token("3")).await;
    assert_eq!(count(&other).await, Ok(0));
    // An operator holds the key table: that admission's verification waits for it.
    let operator = postgres().superuser_client("app").await;
    operator.batch_execute("BEGIN; LOCK TABLE rlsproxy_private.keys IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    let query = tokio::spawn(async move {
        let n = count(&victim).await;
        (n, pid(&victim).await)
    });
    let admin = postgres().superuser_client("app").await;
    let find = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%rlsproxy.admit%'";
    let started = std::time::Instant::now();
    let terminated: i32 = loop {
        if let Some(row) = admin.query_opt(find, &[]).await.expect("activity") {
            break row.get(0);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no injection waits for the key table");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    admin.execute("SELECT pg_terminate_backend($1)", &[&terminated]).await.expect("terminate");
    operator.batch_execute("ROLLBACK").await.expect("unlock");

    let (rows, now_on) = tokio::time::timeout(Duration::from_secs(10), query).await.expect("answered").expect("task");
    assert_eq!(rows, Ok(3), "the victim's own rows, on a fresh connection");
    assert_ne!(now_on, terminated);
    // The bystander's transaction goes on.
    assert_eq!(count(&bystander).await, Ok(2));
    bystander.batch_execute("COMMIT").await.expect("commit");
}
