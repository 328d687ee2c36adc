//! Session state a transaction leaves on its server connection never reaches a
//! client of another identity (docs/transaction-pooling.md, "Identity and reset"), with `pool.size = 1` so
//! that tenant B's transactions must use the backend tenant A used.
//!
//! Each kind is tried twice:
//! - created with plain SQL, which the lexical detection sees: A is pinned to
//!   its connection (B waits for the pool and gets 53300), and when A leaves
//!   the connection is reset (`DISCARD ALL`) before B gets it;
//! - created in a way the detection misses (a DO block, a comment between
//!   keywords, `set_config (` with a space): A is not pinned, the connection
//!   goes back to the pool carrying A's state, and B, another identity, gets
//!   it only after `DISCARD ALL`.

use std::time::{Duration, Instant};

use crate::{GLOBEX_TITLES, backend_pid, fails, rows, start, titles, value, wait_for_pool};

/// What tenant B sees of session settings: (search_path, `x.y` with NULL as '').
async fn settings_seen(client: &tokio_postgres::Client) -> (String, String) {
    let row = rows(client, "SELECT current_setting('search_path'), coalesce(current_setting('x.y', true), '')").await;
    (row[0][0].clone().unwrap(), row[0][1].clone().unwrap())
}

/// search_path is the pinned `upstream.search_path` (default `public`).
const DEFAULT_SETTINGS: (&str, &str) = ("public", "");

/// The first column of a simple query's rows.
async fn column(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    rows(client, sql).await.into_iter().map(|r| r[0].clone().unwrap_or_default()).collect()
}

/// A (tenant 1) runs `create`, is pinned, still sees `own` through `own_use` on the same
/// backend; B (tenant 2) gets 53300 meanwhile, then the same backend after A leaves, where
/// `probe` fails with `code` in every transaction, autocommit or explicit.
async fn pinned_state_never_reaches_b(create: &str, own_use: &str, own: &[&str], probe: &str, code: &str) {
    let proxy = start(1, 300).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let pid = backend_pid(&a).await;
    a.batch_execute(create).await.unwrap_or_else(|e| panic!("{create}: {e}"));
    for _ in 0..2 {
        assert_eq!(column(&a, own_use).await, own, "A keeps its own state");
        assert_eq!(backend_pid(&a).await, pid, "A is pinned to its connection");
    }

    let started = Instant::now();
    let (waited_code, message) = fails(&b, probe).await;
    assert_eq!(waited_code, "53300", "B must wait for the pinned connection, not get it: {message}");
    assert!(started.elapsed() >= Duration::from_millis(250), "B waited the acquire timeout");
    assert_eq!(column(&a, own_use).await, own, "A still has its state after B's attempt");

    drop(a);
    wait_for_pool(&proxy, (1, 1)).await;
    assert_eq!(fails(&b, probe).await.0, code, "{probe} after A left");
    assert_eq!(backend_pid(&b).await, pid, "pool.size = 1: B got the backend A used");
    assert_eq!(fails(&b, probe).await.0, code, "{probe}, B's next transaction");
    b.batch_execute("BEGIN").await.unwrap();
    assert_eq!(fails(&b, probe).await.0, code, "{probe} in an explicit block");
    b.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(titles(&b).await, GLOBEX_TITLES);
}

/// A (tenant 1) creates state with `create`, which the detection misses; B (tenant 2) runs
/// `probe` right after, on the same backend, while A is still connected: it fails with `code`.
async fn hidden_state_never_reaches_b(create: &str, probe: &str, code: &str) {
    let proxy = start(1, 5000).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let pid = backend_pid(&a).await;
    a.batch_execute(create).await.unwrap_or_else(|e| panic!("{create}: {e}"));
    assert_eq!(fails(&b, probe).await.0, code, "{probe}: B's first transaction on A's backend");
    assert_eq!(backend_pid(&b).await, pid, "A was not pinned: B got the backend A used");
    assert_eq!(fails(&b, probe).await.0, code, "{probe}: B's next transaction");
    assert_eq!(titles(&b).await, GLOBEX_TITLES);
}

#[tokio::test]
async fn temp_table_pinned_then_reset() {
    pinned_state_never_reaches_b(
        "CREATE TEMP TABLE tx_temp_p (secret text); INSERT INTO tx_temp_p VALUES ('acme secret')",
        "SELECT secret FROM tx_temp_p",
        &["acme secret"],
        "SELECT secret FROM tx_temp_p",
        "42P01",
    )
    .await;
}

#[tokio::test]
async fn temp_table_created_in_a_do_block_is_reset() {
    hidden_state_never_reaches_b(
        "DO $$ BEGIN CREATE TEMP TABLE tx_temp_h (secret text); INSERT INTO tx_temp_h VALUES ('acme secret'); END $$",
        "SELECT secret FROM tx_temp_h",
        "42P01",
    )
    .await;
}

#[tokio::test]
async fn with_hold_cursor_pinned_then_reset() {
    pinned_state_never_reaches_b(
        "DECLARE tx_hold_p SCROLL CURSOR WITH HOLD FOR SELECT title FROM documents ORDER BY id",
        "FETCH FIRST FROM tx_hold_p",
        &["acme roadmap"],
        "FETCH ALL FROM tx_hold_p",
        "34000",
    )
    .await;
}

#[tokio::test]
async fn with_hold_cursor_spelled_past_the_detection_is_reset() {
    // The cursor holds A's rows, materialised at commit in A's context: B must not fetch them.
    hidden_state_never_reaches_b(
        "DECLARE tx_hold_h CURSOR WITH/**/HOLD FOR SELECT title FROM documents ORDER BY id",
        "FETCH ALL FROM tx_hold_h",
        "34000",
    )
    .await;
}

#[tokio::test]
async fn sql_prepare_pinned_then_reset() {
    pinned_state_never_reaches_b(
        "PREPARE tx_prep_p AS SELECT title FROM documents ORDER BY id",
        "EXECUTE tx_prep_p",
        &["acme roadmap", "acme payroll", "acme onboarding"],
        "EXECUTE tx_prep_p",
        "26000",
    )
    .await;
}

#[tokio::test]
async fn sql_prepare_in_a_do_block_is_reset() {
    hidden_state_never_reaches_b(
        "DO $$ BEGIN EXECUTE 'PREPARE tx_prep_h AS SELECT title FROM documents ORDER BY id'; END $$",
        "EXECUTE tx_prep_h",
        "26000",
    )
    .await;
}

#[tokio::test]
async fn session_settings_pinned_then_reset() {
    let proxy = start(1, 300).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let pid = backend_pid(&a).await;
    a.batch_execute("SET search_path = tx_nowhere, public; SELECT set_config('x.y', 'secret', false)").await.unwrap();
    for _ in 0..2 {
        assert_eq!(settings_seen(&a).await, ("tx_nowhere, public".into(), "secret".into()), "A keeps its settings");
        assert_eq!(backend_pid(&a).await, pid, "A is pinned");
    }
    assert_eq!(fails(&b, "SHOW search_path").await.0, "53300", "B waits for the pinned connection");

    drop(a);
    wait_for_pool(&proxy, (1, 1)).await;
    let (search_path, xy) = settings_seen(&b).await;
    assert_eq!((search_path.as_str(), xy.as_str()), DEFAULT_SETTINGS, "B sees none of A's settings");
    assert_eq!(backend_pid(&b).await, pid, "pool.size = 1: B got the backend A used");
    b.batch_execute("BEGIN").await.unwrap();
    let (search_path, xy) = settings_seen(&b).await;
    assert_eq!((search_path.as_str(), xy.as_str()), DEFAULT_SETTINGS, "in an explicit block too");
    b.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&b, "SHOW search_path").await, DEFAULT_SETTINGS.0);
}

#[tokio::test]
async fn session_settings_made_past_the_detection_are_reset() {
    let proxy = start(1, 5000).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let pid = backend_pid(&a).await;
    // Dynamic SQL built from pieces inside a DO block: nothing pins A.
    a.batch_execute(
        "DO $$ BEGIN EXECUTE 'SET search' || '_path = tx_hidden, public'; \
         EXECUTE 'SELECT set' || '_config(''x.y'', ''secret'', false)'; END $$",
    )
    .await
    .unwrap();
    let (search_path, xy) = settings_seen(&b).await;
    assert_eq!((search_path.as_str(), xy.as_str()), DEFAULT_SETTINGS, "B's first transaction on A's backend");
    assert_eq!(backend_pid(&b).await, pid, "A was not pinned: B got the backend A used");
    let (search_path, xy) = settings_seen(&b).await;
    assert_eq!((search_path.as_str(), xy.as_str()), DEFAULT_SETTINGS, "B's next transaction");
}
