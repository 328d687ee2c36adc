//! Transaction blocks through the proxy: the status the client sees in each
//! ReadyForQuery, failed blocks, isolation levels chosen by the first
//! statement, statements that refuse transaction blocks, and session state
//! (session mode: it belongs to the client) lasting across transactions.

use tokio_postgres::IsolationLevel;

use super::{ACME_TITLES, GLOBEX_TITLES, Msgs, RawSession, titles};
use crate::common::proxy::{self, db_error};
use crate::common::queries::{rows, value};

#[tokio::test]
async fn begin_query_commit_reports_each_status() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("1"), &[]).await;
    let begin = s.query("BEGIN").await;
    assert_eq!((begin.tags.as_slice(), begin.status), (&["BEGIN".to_owned()][..], 'T'));
    let xid = s.query("SELECT txid_current()").await;
    assert_eq!(xid.status, 'T');
    let rows = s.query("SELECT title FROM documents ORDER BY id").await;
    assert_eq!(rows.column(), ACME_TITLES);
    assert_eq!(rows.status, 'T');
    // Still the same transaction.
    let again = s.query("SELECT txid_current()").await;
    assert_eq!(again.column(), xid.column());
    let commit = s.query("COMMIT").await;
    assert_eq!((commit.tags.as_slice(), commit.status), (&["COMMIT".to_owned()][..], 'I'));
    let next = s.query("SELECT txid_current()").await;
    assert_ne!(next.column(), xid.column(), "a new transaction");
}

#[tokio::test]
async fn failed_transaction_then_rollback_then_a_working_query() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("2"), &[]).await;
    assert_eq!(s.query("BEGIN").await.status, 'T');
    let failed = s.query("SELECT 1 / 0").await;
    assert_eq!(failed.error(), ("22012", "division by zero"));
    assert_eq!(failed.status, 'E');
    let ignored = s.query("SELECT title FROM documents").await;
    assert_eq!(
        ignored.error(),
        ("25P02", "current transaction is aborted, commands ignored until end of transaction block")
    );
    assert_eq!(ignored.status, 'E');
    let rollback = s.query("ROLLBACK").await;
    assert_eq!((rollback.tags.as_slice(), rollback.status), (&["ROLLBACK".to_owned()][..], 'I'));
    let rows = s.query("SELECT title FROM documents ORDER BY id").await;
    assert_eq!(rows.column(), GLOBEX_TITLES);
    assert_eq!(rows.status, 'I');
}

#[tokio::test]
async fn isolation_level_set_by_the_first_statement() {
    let proxy = proxy::start_default().await;
    // First statement of the session.
    let client = proxy.connect(&proxy.token("1")).await;
    client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE").await.unwrap();
    assert_eq!(value(&client, "SHOW transaction_isolation").await, "serializable");
    assert_eq!(titles(&client).await, ACME_TITLES);
    client.batch_execute("COMMIT").await.unwrap();

    // Later in the session; START TRANSACTION with several characteristics.
    client.batch_execute("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.unwrap();
    assert_eq!(value(&client, "SHOW transaction_isolation").await, "repeatable read");
    assert_eq!(titles(&client).await, ACME_TITLES);
    let err = client.execute("UPDATE documents SET title = title", &[]).await.unwrap_err();
    assert_eq!(db_error(&err), ("25006".into(), "cannot execute UPDATE in a read-only transaction".into()));
    client.batch_execute("ROLLBACK").await.unwrap();

    // SET TRANSACTION right after BEGIN, and tokio-postgres' transaction builder.
    client.batch_execute("BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await.unwrap();
    assert_eq!(value(&client, "SHOW transaction_isolation").await, "serializable");
    client.batch_execute("COMMIT").await.unwrap();
    let mut client = client;
    let tx = client.build_transaction().isolation_level(IsolationLevel::Serializable).start().await.unwrap();
    assert_eq!(value(&tx, "SHOW transaction_isolation").await, "serializable");
    assert_eq!(titles(&tx).await, ACME_TITLES);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn vacuum_outside_a_transaction_block_works() {
    let proxy = proxy::start_default().await;
    let client = proxy.connect(&proxy.token("2")).await;
    client
        .batch_execute("CREATE TEMP TABLE relay_vacuum AS SELECT g AS n FROM generate_series(1, 100) g")
        .await
        .unwrap();
    client.batch_execute("DELETE FROM relay_vacuum WHERE n > 10").await.unwrap();
    // Simple protocol, first statement of its transaction.
    client.batch_execute("VACUUM relay_vacuum").await.unwrap();
    // Extended protocol.
    client.execute("VACUUM (ANALYZE) relay_vacuum", &[]).await.unwrap();
    assert_eq!(value(&client, "SELECT count(*) FROM relay_vacuum").await, "10");
    assert_eq!(titles(&client).await, GLOBEX_TITLES);
    // Inside a block the server refuses it, as it would without the proxy.
    client.batch_execute("BEGIN").await.unwrap();
    let err = client.batch_execute("VACUUM relay_vacuum").await.unwrap_err();
    assert_eq!(db_error(&err), ("25001".into(), "VACUUM cannot run inside a transaction block".into()));
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(titles(&client).await, GLOBEX_TITLES);
}

#[tokio::test]
async fn session_settings_and_temp_tables_persist_across_transactions() {
    let proxy = proxy::start_default().await;
    let mut client = proxy.connect(&proxy.token("1")).await;
    client.batch_execute("SET work_mem = '12MB'; CREATE TEMP TABLE relay_session (v text)").await.unwrap();
    client.batch_execute("BEGIN; INSERT INTO relay_session VALUES ('kept'); COMMIT").await.unwrap();
    let tx = client.transaction().await.unwrap();
    assert_eq!(value(&tx, "SHOW work_mem").await, "12MB");
    tx.commit().await.unwrap();
    assert_eq!(value(&client, "SHOW work_mem").await, "12MB");
    assert_eq!(rows(&client, "SELECT v FROM relay_session").await, [[Some("kept".to_owned())]]);
    // A SET LOCAL ends with its transaction; the session value stays.
    client.batch_execute("BEGIN; SET LOCAL work_mem = '20MB'").await.unwrap();
    assert_eq!(value(&client, "SHOW work_mem").await, "20MB");
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&client, "SHOW work_mem").await, "12MB");
    assert_eq!(titles(&client).await, ACME_TITLES);
}

/// A multi-statement Query is one implicit transaction: statements after a
/// failure do not run, earlier ones are rolled back with it; an empty Query
/// and a lone Sync are answered as the server answers them.
#[tokio::test]
async fn implicit_transactions_of_multi_statement_and_empty_messages() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("1"), &[]).await;
    let reply = s
        .query(
            "CREATE TEMP TABLE relay_implicit (n int); INSERT INTO relay_implicit VALUES (1); \
             SELECT 1 / 0; INSERT INTO relay_implicit VALUES (2)",
        )
        .await;
    assert_eq!(reply.tags, ["CREATE TABLE", "INSERT 0 1"]);
    assert_eq!(reply.error(), ("22012", "division by zero"));
    assert_eq!(reply.status, 'I');
    let reply = s.query("SELECT count(*) FROM relay_implicit").await;
    assert_eq!(reply.error(), ("42P01", "relation \"relay_implicit\" does not exist"));

    let empty = s.query("").await;
    assert_eq!(empty.sequence, "I Z", "EmptyQueryResponse, ReadyForQuery");
    s.conn.send_msgs(&Msgs::new().sync()).await;
    assert_eq!(s.reply().await.sequence, "Z");
    let reply = s.query("SELECT title FROM documents ORDER BY id; SELECT 'two'").await;
    assert_eq!(reply.sequence, "T D D D C T D C Z");
    assert_eq!(reply.column(), [&ACME_TITLES[..], &["two"]].concat());
}
