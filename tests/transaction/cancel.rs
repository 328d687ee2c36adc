//! Cancel requests in transaction mode: they reach the server connection that
//! runs the client's query at that moment, and a late one never reaches the
//! next borrower of that connection.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::common::proxy::db_error;
use crate::{ACME_TITLES, GLOBEX_TITLES, backend_pid, start, titles, wait_until_running};

#[tokio::test]
async fn cancel_reaches_the_connection_running_the_query() {
    let proxy = start(2, 10_000).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let token = a.cancel_token();
    for i in 0..3 {
        // B holds one connection in a block, so A's query may run on either.
        b.batch_execute("BEGIN").await.unwrap();
        assert_eq!(titles(&b).await, GLOBEX_TITLES);
        let marker = format!("tx-cancel-me-{i}");
        let sleeper = format!("SELECT pg_sleep(30) /* {marker} */");
        let started = Instant::now();
        let (result, ()) = tokio::join!(a.simple_query(&sleeper), async {
            wait_until_running(&marker).await;
            token.cancel_query(NoTls).await.expect("send cancel");
        });
        let err = result.expect_err("the sleep is cancelled");
        assert_eq!(db_error(&err), ("57014".into(), "canceling statement due to user request".into()), "round {i}");
        assert!(started.elapsed() < Duration::from_secs(10), "cancelled promptly");
        b.batch_execute("COMMIT").await.unwrap();
        assert_eq!(titles(&a).await, ACME_TITLES, "A's session goes on");
        assert_eq!(titles(&b).await, GLOBEX_TITLES, "B was not cancelled");
    }
}

#[tokio::test]
async fn late_cancel_never_reaches_the_next_borrower() {
    let proxy = start(1, 10_000).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let a_token = a.cancel_token();
    // A's transaction ends; the connection goes back to the pool.
    let pid = backend_pid(&a).await;
    assert_eq!(titles(&a).await, ACME_TITLES);
    for i in 0..3 {
        let marker = format!("tx-late-cancel-{i}");
        let sleeper = format!("SELECT pg_sleep(2) /* {marker} */");
        let started = Instant::now();
        let (result, ()) = tokio::join!(b.simple_query(&sleeper), async {
            wait_until_running(&marker).await;
            a_token.cancel_query(NoTls).await.expect("send A's cancel");
        });
        result.unwrap_or_else(|e| panic!("B's sleep was cancelled by A's key: {:?}", db_error(&e)));
        assert!(started.elapsed() >= Duration::from_secs(2), "B's sleep ran to its end");
        assert_eq!(backend_pid(&b).await, pid, "pool.size = 1: B used the connection A used");
    }
    assert_eq!(titles(&a).await, ACME_TITLES);
}
