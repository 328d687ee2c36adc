//! The extended query protocol: unnamed and named statements, binary
//! parameters, portals with a row limit, errors inside batches, pipelining
//! (several Syncs in flight), and Describe + Flush without Sync.

use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::join_all;
use tokio_postgres::types::Type;

use super::{ACME_TITLES, GLOBEX_TITLES, Msgs, RawSession, titles};
use crate::common::proxy::{self, db_error};

#[tokio::test]
async fn unnamed_and_named_statements_with_binary_parameters() {
    let proxy = proxy::start_default().await;
    let client = proxy.connect(&proxy.token("1")).await;

    // query_typed: the unnamed statement, parameter types given by the client.
    let ids = vec![1i32, 2, 4];
    let rows = client
        .query_typed("SELECT title FROM documents WHERE id = ANY($1) ORDER BY id", &[(&ids, Type::INT4_ARRAY)])
        .await
        .unwrap();
    let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, ["acme roadmap", "acme payroll"], "id 4 is globex's");

    // A named statement, executed once per id, across separate transactions.
    let by_id = client.prepare("SELECT title FROM documents WHERE id = $1").await.unwrap();
    assert_eq!(by_id.params(), [Type::INT4]);
    let mut seen = Vec::new();
    for id in 1..=5i32 {
        let row = client.query_opt(&by_id, &[&id]).await.unwrap();
        seen.push(row.map(|r| r.get::<_, String>(0)));
    }
    let acme = |i: usize| Some(ACME_TITLES[i].to_owned());
    assert_eq!(seen, [acme(0), acme(1), acme(2), None, None]);

    // Binary parameters of many types come back through the server unchanged.
    let big = i64::MAX - 1;
    let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    let bytes = vec![0u8, 1, 255];
    let array = vec![Some(3i32), None, Some(-7)];
    let none: Option<i32> = None;
    let row = client
        .query_one(
            "SELECT $1::int8 + 1, $2::text || '!', $3::bytea || '\\x00'::bytea, NOT $4::bool, \
             $5::int4 IS NULL, $6::int4[], $7::float8 * 2, $8::timestamptz + interval '1 second'",
            &[&big, &"ünï", &bytes, &false, &none, &array, &0.25f64, &at],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), i64::MAX);
    assert_eq!(row.get::<_, String>(1), "ünï!");
    assert_eq!(row.get::<_, Vec<u8>>(2), [0, 1, 255, 0]);
    assert!(row.get::<_, bool>(3));
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, Vec<Option<i32>>>(5), array);
    assert_eq!(row.get::<_, f64>(6), 0.5);
    assert_eq!(row.get::<_, std::time::SystemTime>(7), at + Duration::from_secs(1));
}

#[tokio::test]
async fn portal_with_a_row_limit_is_resumed_after_portal_suspended() {
    let proxy = proxy::start_default().await;
    let mut client = proxy.connect(&proxy.token("1")).await;
    let tx = client.transaction().await.unwrap();
    let portal = tx.bind("SELECT title FROM documents ORDER BY id", &[]).await.unwrap();
    let mut fetched = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 1).await.unwrap();
        assert!(rows.len() <= 1, "max_rows 1 returned {} rows", rows.len());
        if rows.is_empty() {
            break;
        }
        fetched.push(rows[0].get::<_, String>(0));
    }
    assert_eq!(fetched, ACME_TITLES);
    tx.commit().await.unwrap();
    assert_eq!(titles(&client).await, ACME_TITLES);
}

#[tokio::test]
async fn errors_in_extended_batches_are_followed_by_working_queries() {
    let proxy = proxy::start_default().await;
    let client = proxy.connect(&proxy.token("2")).await;

    // Error at Parse.
    let err = client.query("SELECT * FROM no_such_table", &[]).await.unwrap_err();
    assert_eq!(db_error(&err), ("42P01".into(), "relation \"no_such_table\" does not exist".into()));
    assert_eq!(titles(&client).await, GLOBEX_TITLES);

    // Error at Execute.
    let by_id = client.prepare("SELECT 100 / $1::int4 AS q").await.unwrap();
    let err = client.query_one(&by_id, &[&0i32]).await.unwrap_err();
    assert_eq!(db_error(&err), ("22012".into(), "division by zero".into()));
    // The named statement survives its failed execution.
    let q: i32 = client.query_one(&by_id, &[&4i32]).await.unwrap().get(0);
    assert_eq!(q, 25);
    assert_eq!(titles(&client).await, GLOBEX_TITLES);
}

/// Raw batches: the server skips the rest of a failed batch up to its Sync,
/// answering nothing for the skipped messages, and the next batch runs.
#[tokio::test]
async fn raw_error_at_bind_skips_to_sync_and_the_next_batch_runs() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("2"), &[]).await;
    let batches = Msgs::new().run("SELECT $1::int4 + 1", &["abc"]).run("SELECT title FROM documents ORDER BY id", &[]);
    s.conn.send_msgs(&batches).await;

    let failed = s.reply().await;
    assert_eq!(failed.sequence, "1 E Z", "ParseComplete, error at Bind, ReadyForQuery");
    assert_eq!(failed.error(), ("22P02", "invalid input syntax for type integer: \"abc\""));
    assert_eq!(failed.status, 'I');
    let good = s.reply().await;
    assert_eq!(good.sequence, "1 2 D D C Z");
    assert_eq!(good.column(), GLOBEX_TITLES);
}

/// tokio-postgres pipelines concurrent requests on one connection: every
/// request is written before the first answer is read.
#[tokio::test]
async fn pipelined_queries_on_one_client_each_get_their_own_result() {
    let proxy = proxy::start_default().await;
    let client = proxy.connect(&proxy.token("2")).await;
    let by_id = client.prepare("SELECT title FROM documents WHERE id = $1").await.unwrap();

    let lookups = (1..=5i32).map(|id| {
        let (client, by_id) = (&client, &by_id);
        async move { client.query(by_id, &[&id]).await }
    });
    let results: Vec<Vec<String>> =
        join_all(lookups).await.into_iter().map(|r| r.unwrap().iter().map(|row| row.get(0)).collect()).collect();
    let none: Vec<String> = Vec::new();
    assert_eq!(
        results,
        [none.clone(), none.clone(), none, vec![GLOBEX_TITLES[0].to_owned()], vec![GLOBEX_TITLES[1].to_owned()]]
    );

    // A failing request in the middle of a pipeline fails alone.
    let (count, failed, sum) = tokio::join!(
        client.query_one("SELECT count(*) FROM documents", &[]),
        client.query_one("SELECT 1 / 0", &[]),
        client.query_one("SELECT $1::int8 + $2::int8", &[&40i64, &2i64]),
    );
    assert_eq!(count.unwrap().get::<_, i64>(0), 2);
    assert_eq!(db_error(&failed.unwrap_err()), ("22012".into(), "division by zero".into()));
    assert_eq!(sum.unwrap().get::<_, i64>(0), 42);
}

/// Two complete batches and two simple queries in one write: four
/// ReadyForQuery, each answer filtered by the tenant.
#[tokio::test]
async fn raw_batches_sent_in_one_write_are_all_answered_and_filtered() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("2"), &[]).await;
    let write = Msgs::new()
        .run("SELECT title FROM documents ORDER BY id", &[])
        .run("SELECT count(*), min(tenant_id) FROM documents WHERE id <> $1", &["4"])
        .query("SELECT name FROM users ORDER BY id")
        .query("SELECT id FROM tenants");
    s.conn.send_msgs(&write).await;

    let first = s.reply().await;
    assert_eq!(first.sequence, "1 2 D D C Z");
    assert_eq!(first.column(), GLOBEX_TITLES);
    let second = s.reply().await;
    assert_eq!(second.sequence, "1 2 D C Z");
    assert_eq!(second.texts(), [["1", "2"]]);
    let third = s.reply().await;
    assert_eq!(third.column(), ["bob", "beatrice"]);
    let fourth = s.reply().await;
    assert_eq!(fourth.column(), ["2"]);
    assert_eq!(fourth.status, 'I');
}

/// Drivers Describe a statement and Flush, then wait for the description
/// before they Bind: the proxy must forward the Flush and relay the answer.
#[tokio::test]
async fn raw_describe_and_flush_without_sync_is_answered() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("1"), &[]).await;
    let describe =
        Msgs::new().parse("by_id", "SELECT title FROM documents WHERE id = $1", &[]).describe(b'S', "by_id").flush();
    s.conn.send_msgs(&describe).await;
    assert_eq!(s.conn.read_message().await.0, b'1', "ParseComplete");
    let (tag, body) = s.conn.read_message().await;
    assert_eq!(tag, b't', "ParameterDescription");
    assert_eq!(body, [&1i16.to_be_bytes()[..], &23u32.to_be_bytes()].concat(), "one int4");
    assert_eq!(s.conn.read_message().await.0, b'T', "RowDescription");

    s.conn.send_msgs(&Msgs::new().bind_text("", "by_id", &["2"]).execute("", 0).sync()).await;
    let reply = s.reply().await;
    assert_eq!(reply.sequence, "2 D C Z");
    assert_eq!(reply.column(), ["acme payroll"]);

    s.conn.send_msgs(&Msgs::new().bind_text("", "by_id", &["4"]).execute("", 0).sync()).await;
    let reply = s.reply().await;
    assert_eq!(reply.sequence, "2 C Z", "globex's document is invisible");
    assert_eq!(reply.tags, ["SELECT 0"]);
}
