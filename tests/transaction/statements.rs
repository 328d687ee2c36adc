//! Named protocol-level prepared statements in transaction mode: prepared on
//! demand on whichever connection serves the transaction, re-prepared after
//! another identity's reset, bounded per connection with eviction, and
//! behaving as PostgreSQL does when their table is dropped and recreated.

use tokio_postgres::{Client, Statement};

use crate::common::{Postgres, postgres};
use crate::{ACME_TITLES, GLOBEX_TITLES, rows, start, titles, tx_config, value};

/// (tenant_id, title) of every row a statement returned.
async fn tenant_titles(client: &Client, st: &Statement) -> Vec<(i32, String)> {
    let rows = client.query(st, &[&0i32]).await.expect("execute the prepared statement");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn own(tenant: i32, titles: &[&str]) -> Vec<(i32, String)> {
    titles.iter().map(|t| (tenant, t.to_string())).collect()
}

#[tokio::test]
async fn prepared_statement_reused_across_transactions_between_other_tenants() {
    const SQL: &str = "SELECT tenant_id, title FROM documents WHERE id > $1 ORDER BY id";
    for size in [1, 2] {
        let proxy = start(size, 10_000).await;
        let a = proxy.connect(&proxy.token("1")).await;
        let b = proxy.connect(&proxy.token("2")).await;
        let c = proxy.connect(&proxy.token("2")).await;
        let st = a.prepare(SQL).await.unwrap();
        // Another tenant prepares the very same text: the proxy names server statements by text.
        let st_b = b.prepare(SQL).await.unwrap();
        for i in 0..10 {
            assert_eq!(tenant_titles(&a, &st).await, own(1, &ACME_TITLES), "size {size}, execution {i}");
            // Others use the connection(s) in between: simple, extended, same text, explicit block.
            assert_eq!(tenant_titles(&b, &st_b).await, own(2, &GLOBEX_TITLES), "size {size}, execution {i}");
            assert_eq!(titles(&c).await, GLOBEX_TITLES);
            c.batch_execute("BEGIN").await.unwrap();
            assert_eq!(value(&c, "SELECT count(*) FROM documents").await, "2");
            c.batch_execute("COMMIT").await.unwrap();
            // And concurrently with A's executions.
            let (ra, rb, tc) = tokio::join!(tenant_titles(&a, &st), tenant_titles(&b, &st_b), titles(&c));
            assert_eq!(
                (ra, rb, tc),
                (own(1, &ACME_TITLES), own(2, &GLOBEX_TITLES), GLOBEX_TITLES.map(String::from).to_vec())
            );
        }
        // In an explicit block, several times.
        let mut a = a;
        let tx = a.transaction().await.unwrap();
        for _ in 0..3 {
            let rows = tx.query(&st, &[&0i32]).await.unwrap();
            assert_eq!(rows.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<_>>(), own(1, &ACME_TITLES));
        }
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn statements_evicted_beyond_max_prepared_statements_are_prepared_again() {
    const MAX: usize = 2;
    let mut cfg = tx_config(1);
    cfg.pool.max_prepared_statements = MAX;
    let proxy = crate::common::proxy::start(cfg).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let mut statements = Vec::new();
    for k in 0..5i32 {
        let sql = format!("SELECT {k} + $1::int, count(*), min(tenant_id) FROM documents");
        statements.push(a.prepare(&sql).await.unwrap());
    }
    for use_ in 0..20usize {
        let k = use_ % statements.len();
        let row = a.query_one(&statements[k], &[&100i32]).await.unwrap_or_else(|e| panic!("use {use_}: {e}"));
        let got: (i32, i64, i32) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(got, (k as i32 + 100, 3, 1), "use {use_} of statement {k}");
        if use_ % 7 == 6 {
            // Another identity takes the connection: reset, every statement gone.
            assert_eq!(titles(&b).await, GLOBEX_TITLES);
        }
        // Only the last MAX client statements (plus the proxy's own) exist on the connection.
        let prepared: usize = value(&a, "SELECT count(*) FROM pg_prepared_statements").await.parse().unwrap();
        assert!(prepared <= MAX + 1, "use {use_}: {prepared} statements prepared upstream");
    }
    // The simple protocol still works on that connection.
    assert_eq!(rows(&a, "SELECT 1").await, [[Some("1".to_string())]]);
}

/// What a statement prepared before the table was dropped and recreated returns afterwards:
/// the row values or the SQLSTATE.
type Outcome = Result<Vec<String>, String>;

async fn recreate(su: &Client, table: &str, column: &str, value: &str) {
    su.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (v {column}); INSERT INTO {table} VALUES ({value}); \
         GRANT SELECT ON {table} TO app_proxy"
    ))
    .await
    .unwrap();
}

async fn outcome(client: &Client, st: &Statement) -> Outcome {
    match client.query(st, &[]).await {
        Ok(rows) => Ok(rows
            .iter()
            .map(|r| match r.try_get::<_, i32>(0) {
                Ok(v) => v.to_string(),
                Err(e) => format!("undecodable: {e}"),
            })
            .collect()),
        Err(e) => Err(e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_else(|| e.to_string())),
    }
}

/// Prepares on `client`, recreates the table as `(v <column>)` holding `value`, lets `between`
/// run, then executes again.
async fn run(client: &Client, table: &str, column: &str, value: &str, between: Option<&Client>) -> (Outcome, Outcome) {
    let su = postgres().superuser_client(Postgres::APP_DB).await;
    recreate(&su, table, "int", "1").await;
    let st = client.prepare(&format!("SELECT v FROM {table}")).await.unwrap();
    let before = outcome(client, &st).await;
    recreate(&su, table, column, value).await;
    if let Some(other) = between {
        assert_eq!(titles(other).await, GLOBEX_TITLES);
    }
    (before, outcome(client, &st).await)
}

async fn direct() -> Client {
    let client = crate::common::connect(&postgres().proxy_config(Postgres::APP_DB)).await;
    client.batch_execute("SELECT set_config('app.current_tenant', '1', false)").await.unwrap();
    client
}

/// Without another client in between, the connection keeps the statement, as PostgreSQL would.
#[tokio::test]
async fn table_recreated_under_a_prepared_statement_behaves_as_direct() {
    let proxy = start(1, 10_000).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let direct = direct().await;
    for (column, value, expected) in [("int", "2", Ok(vec!["2".to_string()])), ("text", "'two'", Err("0A000".into()))] {
        let want = (Ok(vec!["1".to_string()]), expected);
        let seen = run(&direct, "tx_recreate_d1", column, value, None).await;
        assert_eq!(seen, want, "direct, recreated as {column}");
        let seen = run(&a, "tx_recreate_p1", column, value, None).await;
        assert_eq!(seen, want, "through the proxy, recreated as {column}");
    }
}

/// Another identity used the connection in between: the proxy prepares the statement again
/// after the reset, which must not silently change the result type the client was given
/// (PostgreSQL refuses with 0A000 "cached plan must not change result type").
#[tokio::test]
async fn table_recreated_under_a_prepared_statement_behaves_as_direct_across_a_reset() {
    let proxy = start(1, 10_000).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    let direct = direct().await;
    for (column, value, expected) in [("int", "2", Ok(vec!["2".to_string()])), ("text", "'two'", Err("0A000".into()))] {
        let want = (Ok(vec!["1".to_string()]), expected);
        let seen = run(&direct, "tx_recreate_d2", column, value, None).await;
        assert_eq!(seen, want, "direct, recreated as {column}");
        let seen = run(&a, "tx_recreate_p2", column, value, Some(&b)).await;
        assert_eq!(seen, want, "through the proxy, another tenant in between, recreated as {column}");
    }
}

/// Preparing the same text again after the table changed: PostgreSQL plans the new statement
/// against the new table. The proxy shares server statements by text, so it must not hand the
/// client the old statement (whose Describe then fails with 0A000).
#[tokio::test]
async fn a_new_prepare_of_the_same_text_after_the_table_changed_behaves_as_direct() {
    /// The outcome of three fresh prepares (and executions) of the same text after the change.
    async fn again(client: &Client, table: &str) -> Vec<Result<Vec<String>, String>> {
        let su = postgres().superuser_client(Postgres::APP_DB).await;
        recreate(&su, table, "int", "1").await;
        let sql = format!("SELECT v FROM {table}");
        let first = client.prepare(&sql).await.unwrap();
        assert_eq!(outcome(client, &first).await, Ok(vec!["1".to_string()]));
        recreate(&su, table, "text", "'two'").await;
        let code = |e: tokio_postgres::Error| e.as_db_error().map(|d| d.code().code().to_string()).unwrap_or_default();
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            let seen = async {
                let second = client.prepare(&sql).await.map_err(code)?;
                let rows = client.query(&second, &[]).await.map_err(code)?;
                Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
            };
            outcomes.push(seen.await);
        }
        outcomes
    }
    let want = vec![Ok(vec!["two".to_string()]); 3];
    let proxy = start(1, 10_000).await;
    let a = proxy.connect(&proxy.token("1")).await;
    assert_eq!(again(&direct().await, "tx_reprepare_d").await, want, "direct");
    assert_eq!(again(&a, "tx_reprepare_p").await, want, "through the proxy");
}
