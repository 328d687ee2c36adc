//! The proxy relays results unchanged: every query returns through the proxy
//! exactly what it returns straight from PostgreSQL to the proxy's role with
//! the same tenant set, in text format (simple protocol) and in binary format
//! (extended protocol, compared byte for byte).

use std::error::Error;

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::{ACME_TITLES, RawSession, direct};
use crate::common::{postgres, proxy};

/// Queries covering the common types, NULLs, arrays, many rows and a large value.
const QUERIES: &[&str] = &[
    "SELECT id, tenant_id, title, body FROM documents ORDER BY id",
    "SELECT 42::int2 AS i2, 2147483647::int4 AS i4, (-9223372036854775807 - 1)::int8 AS i8, \
     12345678901234567890.0123456789::numeric AS num, 'NaN'::numeric AS nan, \
     -0.5::numeric(10, 4) AS scaled, 1.5::float4 AS f4, 0.1::float8 AS f8, \
     'Infinity'::float8 AS inf",
    "SELECT 'héllo wörld ☃'::text AS t, 'x'::varchar(3) AS v, 'ab'::char(4) AS c, \
     ''::text AS empty, NULL::text AS null_text, E'tab\\there\\nnewline' AS escapes",
    "SELECT '\\x00ff10'::bytea AS b, decode('deadbeef', 'hex') AS b2, ''::bytea AS b_empty",
    "SELECT '2024-02-29 12:34:56.789+01'::timestamptz AS tz, \
     '2024-02-29 12:34:56.789'::timestamp AS ts, '2024-02-29'::date AS d, \
     '12:34:56.5'::time AS t, interval '1 year 2 days 03:04:05.5' AS iv, \
     '-infinity'::timestamptz AS minus_inf",
    "SELECT '{\"a\": [1, 2.50, {\"b\": null}], \"c\": \"ü\"}'::json AS j, \
     '{\"b\": 2, \"a\": [true, null]}'::jsonb AS jb",
    "SELECT ARRAY[1, NULL, 3]::int4[] AS ia, ARRAY['x', 'y z', NULL, '\"q\"']::text[] AS ta, \
     '{{1,2},{3,4}}'::int8[] AS matrix, '{}'::int4[] AS empty_array, \
     ARRAY[true, false] AS ba, ARRAY[1.5, NULL]::numeric[] AS na",
    "SELECT true AS t, false AS f, NULL::boolean AS nb, NULL::int4 AS ni, NULL::bytea AS nby, \
     NULL::int4[] AS narr",
    "SELECT '11111111-2222-3333-4444-555555555555'::uuid AS u, '192.168.0.1/24'::inet AS ip, \
     int4range(1, 10) AS r, 'documents'::regclass::oid::int8 > 0 AS has_oid, \
     'fat & rat'::tsquery AS q, '(1,2)'::point AS p",
    "SELECT g AS n, g * 1.5 AS x, repeat('r', g % 50) AS s, \
     CASE WHEN g % 7 = 0 THEN NULL ELSE g END AS sometimes_null \
     FROM generate_series(1, 2000) AS g",
    "SELECT repeat('0123456789abcdef', 65536) AS one_mebibyte",
];

/// A value's exact bytes on the wire, whatever its type (NULL: `None` via `Option`).
#[derive(Debug, PartialEq)]
struct WireBytes(Vec<u8>);

impl<'a> FromSql<'a> for WireBytes {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(WireBytes(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column names and types, and every row's values in binary format.
type BinaryResult = (Vec<(String, Type)>, Vec<Vec<Option<WireBytes>>>);

async fn binary(client: &Client, sql: &str) -> BinaryResult {
    let rows = client.query(sql, &[]).await.expect(sql);
    let stmt = client.prepare(sql).await.expect(sql);
    let columns = stmt.columns().iter().map(|c| (c.name().to_owned(), c.type_().clone())).collect();
    let values = rows.iter().map(|r| (0..r.len()).map(|i| r.get(i)).collect()).collect();
    (columns, values)
}

async fn text(client: &Client, sql: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for message in client.simple_query(sql).await.expect(sql) {
        match message {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                rows.push((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect());
            }
            _ => {}
        }
    }
    (columns, rows)
}

#[tokio::test]
async fn a_latin1_client_sends_accented_text_and_the_guard_still_reads_it() {
    let proxy = proxy::start_default().await;
    let mut s = RawSession::open(&proxy, &proxy.token("1"), &[("client_encoding", "LATIN1")]).await;
    s.conn.send(b'Q', b"SELECT 'caf\xe9' AS w, title FROM documents WHERE title = 'acme roadmap'\0").await;
    let messages = s.conn.read_until_ready().await;
    let row = messages.iter().find(|(tag, _)| *tag == b'D').map(|(_, body)| body.clone()).expect("a row");
    let mut expected = 2u16.to_be_bytes().to_vec();
    expected.extend(4i32.to_be_bytes());
    expected.extend(b"caf\xe9");
    expected.extend(12i32.to_be_bytes());
    expected.extend(b"acme roadmap");
    assert_eq!(row, expected, "the LATIN1 bytes come back as sent");
    // A LATIN1 character in front does not hide a call from the guard.
    s.conn.send(b'Q', b"SELECT '\xe9', set_config('app.current_tenant', '2', false)\0").await;
    let reply = s.reply().await;
    assert_eq!(reply.error(), ("42501", "rlsproxy refused the statement: set_config (rule set_config)"));
    s.conn.send(b'Q', b"SELECT \"\xe9\" FROM (SELECT 1 AS \"\xe9\") t\0").await;
    assert_eq!(s.reply().await.texts(), [["1"]], "a LATIN1 identifier");
}

#[tokio::test]
async fn results_equal_direct_in_text_and_binary_format() {
    let proxy = proxy::start_default().await;
    let proxied = proxy.connect(&proxy.token("1")).await;
    let reference = direct("1").await;
    for sql in QUERIES {
        let (via_proxy, straight) = (text(&proxied, sql).await, text(&reference, sql).await);
        assert!(!straight.1.is_empty(), "{sql}: returns rows");
        assert_eq!(via_proxy, straight, "text format: {sql}");

        let (via_proxy, straight) = (binary(&proxied, sql).await, binary(&reference, sql).await);
        assert!(!straight.1.is_empty(), "{sql}: returns rows");
        assert_eq!(via_proxy, straight, "binary format: {sql}");
    }
    // The comparison is meaningful: the first query is the tenant's documents.
    let first = text(&proxied, QUERIES[0]).await.1;
    let titles: Vec<_> = first.iter().map(|r| r[2].as_deref().unwrap()).collect();
    assert_eq!(titles, ACME_TITLES);
    // ...and a different tenant directly gives a different answer.
    let other = text(&direct("2").await, QUERIES[0]).await.1;
    assert_ne!(other, first);
}

/// A statement text far larger than one read buffer, in both protocols (and than the
/// guard's default `max_statement_bytes`, raised here).
#[tokio::test]
async fn large_statement_text_is_relayed_whole() {
    let mut cfg = proxy::base_config(postgres());
    cfg.guard.max_statement_bytes = 8 << 20;
    let proxy = proxy::start(cfg).await;
    let client = proxy.connect(&proxy.token("2")).await;
    let literal = "x".repeat(3 << 20);
    let sql = format!("SELECT length('{literal}') AS n, md5('{literal}') AS h");
    let expected = text(&direct("2").await, &sql).await;
    assert_eq!(expected.1[0][0].as_deref(), Some("3145728"));
    assert_eq!(text(&client, &sql).await, expected);
    let row = client.query_one(sql.as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3 << 20);
    assert_eq!(Some(row.get::<_, String>(1)), expected.1[0][1]);
}

/// Typed values decoded from binary results through the proxy.
#[tokio::test]
async fn binary_values_decode_to_the_expected_values() {
    let proxy = proxy::start_default().await;
    let client = proxy.connect(&proxy.token("2")).await;
    let row = client
        .query_one(
            "SELECT (-9223372036854775807 - 1)::int8, 'héllo ☃'::text, '\\x00ff10'::bytea, \
             true, NULL::int4, ARRAY[1, 2, 3]::int4[], 0.1::float8, \
             '1970-01-01 00:00:10+00'::timestamptz",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), i64::MIN);
    assert_eq!(row.get::<_, String>(1), "héllo ☃");
    assert_eq!(row.get::<_, Vec<u8>>(2), [0x00, 0xff, 0x10]);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, Option<i32>>(4), None);
    assert_eq!(row.get::<_, Vec<i32>>(5), [1, 2, 3]);
    assert_eq!(row.get::<_, f64>(6), 0.1);
    assert_eq!(row.get::<_, std::time::SystemTime>(7), std::time::UNIX_EPOCH + std::time::Duration::from_secs(10));
}
