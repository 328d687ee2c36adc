//! COPY, the sub-protocol: data from the client (CopyData, CopyDone, CopyFail)
//! and to the client, the server's errors, and a session that stays usable.

use std::pin::pin;

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use tokio_postgres::Client;

use super::{Msgs, RawSession, Session, pool_after_release, titles};
use crate::common::proxy::{self, db_error};
use crate::common::queries;

const TABLE: &str = "CREATE TEMP TABLE relay_copy (id int, name text, tags text[])";

async fn copy_in(client: &Client, chunks: &[&str]) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in("COPY relay_copy FROM STDIN").await?;
    let mut sink = pin!(sink);
    for chunk in chunks {
        sink.send(Bytes::copy_from_slice(chunk.as_bytes())).await?;
    }
    sink.as_mut().finish().await
}

#[tokio::test]
async fn copy_from_stdin_into_a_temp_table_then_read_back() {
    let proxy = proxy::start_default().await;
    let client = proxy.connect(&proxy.token("1")).await;
    client.batch_execute(TABLE).await.unwrap();

    let copied = copy_in(&client, &["1\tone\t{a,b}\n2\t\\N\t{}\n", "3\tthree\t{\"c d\"}\n"]).await;
    assert_eq!(copied.unwrap(), 3);
    let rows = queries::rows(&client, "SELECT id, name, tags FROM relay_copy ORDER BY id").await;
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(rows, [[s("1"), s("one"), s("{a,b}")], [s("2"), None, s("{}")], [s("3"), s("three"), s("{\"c d\"}")]]);

    // COPY TO STDOUT gives back what came in.
    let out: Vec<Bytes> = client
        .copy_out("COPY (SELECT * FROM relay_copy ORDER BY id) TO STDOUT")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(String::from_utf8(out.concat()).unwrap(), "1\tone\t{a,b}\n2\t\\N\t{}\n3\tthree\t{\"c d\"}\n");

    // Many CopyData messages, larger than any buffer.
    let chunk: String = (0..1000).map(|i| format!("{i}\trow {i}\t{{}}\n")).collect();
    let chunks = vec![chunk.as_str(); 20];
    assert_eq!(copy_in(&client, &chunks).await.unwrap(), 20_000);
    assert_eq!(
        queries::rows(&client, "SELECT count(*), count(DISTINCT id) FROM relay_copy").await,
        [[s("20003"), s("1000")]]
    );
    // The session is in a normal state and still the tenant's.
    assert_eq!(titles(&client).await, super::ACME_TITLES);
}

#[tokio::test]
async fn copy_from_stdin_with_a_malformed_row_fails_and_the_session_continues() {
    let proxy = proxy::start_default().await;
    let client = proxy.connect(&proxy.token("2")).await;
    client.batch_execute(TABLE).await.unwrap();

    let err = copy_in(&client, &["1\tgood\t{}\n", "x\tbad\t{}\n", "3\tlater\t{}\n"]).await.unwrap_err();
    assert_eq!(db_error(&err), ("22P02".into(), "invalid input syntax for type integer: \"x\"".into()));
    let row_count = "SELECT count(*) FROM relay_copy";
    let zero = vec![vec![Some("0".to_owned())]];
    assert_eq!(queries::rows(&client, row_count).await, zero, "nothing copied");
    assert_eq!(copy_in(&client, &["7\tseven\t{}\n"]).await.unwrap(), 1);
    assert_eq!(titles(&client).await, super::GLOBEX_TITLES);
}

/// COPY in the simple protocol, message by message.
#[tokio::test]
async fn raw_copy_malformed_data_and_copy_fail_leave_the_session_usable() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("1"), &[]).await;
    assert_eq!(s.query(TABLE).await.tags, ["CREATE TABLE"]);

    // Malformed data: the server's error, then ReadyForQuery idle.
    s.conn.send_query("COPY relay_copy FROM STDIN").await;
    assert_eq!(s.conn.read_message().await.0, b'G', "CopyInResponse");
    s.conn.send_msgs(&Msgs::new().copy_data(b"1\tok\t{}\n").copy_data(b"2\t3\tnot an array\n").copy_done()).await;
    let reply = s.reply().await;
    assert_eq!(reply.error().0, "22P02");
    assert_eq!(reply.error().1, "malformed array literal: \"not an array\"");
    assert_eq!(reply.status, 'I');

    // CopyFail: the server aborts the COPY with the client's message.
    s.conn.send_query("COPY relay_copy FROM STDIN").await;
    assert_eq!(s.conn.read_message().await.0, b'G', "CopyInResponse");
    s.conn.send_msgs(&Msgs::new().copy_data(b"1\tok\t{}\n").copy_fail("client gave up")).await;
    let reply = s.reply().await;
    assert_eq!(reply.error(), ("57014", "COPY from stdin failed: client gave up"));
    assert_eq!(reply.status, 'I');

    // Nothing was copied; a good COPY and a query work.
    s.conn.send_query("COPY relay_copy FROM STDIN").await;
    assert_eq!(s.conn.read_message().await.0, b'G', "CopyInResponse");
    s.conn.send_msgs(&Msgs::new().copy_data(b"5\tfive\t{x}\n").copy_done()).await;
    assert_eq!(s.reply().await.tags, ["COPY 1"]);
    let reply = s.query("SELECT id, name FROM relay_copy; SELECT title FROM documents ORDER BY id").await;
    assert_eq!(reply.texts(), [vec!["5", "five"], vec!["acme roadmap"], vec!["acme payroll"], vec!["acme onboarding"]]);
}

/// (Raw: tokio-postgres' copy_in cannot recover from an error at Execute, even
/// straight to PostgreSQL; it sends CopyFail + Sync after the batch already ended.)
#[tokio::test]
async fn copy_from_stdin_into_a_table_with_rls_is_the_servers_refusal() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("1"), &[]).await;
    let reply = s.query("COPY documents (tenant_id, title) FROM STDIN").await;
    assert_eq!(reply.sequence, "E Z", "refused before CopyInResponse");
    assert_eq!(reply.error(), ("0A000", "COPY FROM not supported with row-level security"));
    assert_eq!(reply.status, 'I');
    let reply = s.query("SELECT title FROM documents ORDER BY id").await;
    assert_eq!(reply.column(), super::ACME_TITLES);
}

/// A session that used COPY FROM STDIN (extended protocol, as tokio-postgres
/// sends it: Bind, Execute, Sync, CopyData…, CopyDone, Sync, and the server
/// ignores the first Sync) ends idle, so its connection goes back to the pool.
#[tokio::test]
async fn session_that_copied_in_returns_its_connection_to_the_pool() {
    let proxy = proxy::start_default().await;
    let session = Session::open(&proxy, &proxy.token("1")).await;
    session.client.batch_execute(TABLE).await.unwrap();
    assert_eq!(copy_in(&session.client, &["1\tone\t{}\n"]).await.unwrap(), 1);
    assert_eq!(titles(&session.client).await, super::ACME_TITLES);
    assert_eq!(proxy.pool.stats(), (1, 0));
    session.close().await;
    assert_eq!(pool_after_release(&proxy, (1, 0)).await, (1, 1), "the connection is reset and kept idle, not closed");
}
