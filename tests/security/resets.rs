//! Driver resets sent in front of the next command in the same write (Npgsql prepends
//! `DISCARD ALL`; asyncpg's reset ends with `RESET ALL`): the reset runs, what it dropped
//! is dropped for the proxy too (statements, a pinned client's connection), and the next
//! statement runs with its tenant's context, in both pool modes.

use rlsproxy::config::{Config, PoolMode};

use crate::common::raw;
use crate::common::{postgres, proxy};
use crate::{ACME, GLOBEX, Msgs, data_rows, raw_login, raw_query, tags, the_error};

const DOCS: &str = "SELECT title, tenant_id, current_setting('app.current_tenant') FROM documents ORDER BY id";

fn config(mode: PoolMode) -> Config {
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = mode;
    cfg.pool.size = 1;
    cfg
}

/// Every row is one of `titles`, of tenant `tenant`, seen under context `tenant`.
fn assert_own_rows(msgs: &[(u8, Vec<u8>)], titles: &[&str], tenant: &str) {
    let rows = data_rows(msgs);
    let seen: Vec<_> = rows.iter().map(|r| r[0].clone().unwrap_or_default()).collect();
    assert_eq!(seen, titles, "{}", tags(msgs));
    for row in &rows {
        assert_eq!((row[1].as_deref(), row[2].as_deref()), (Some(tenant), Some(tenant)), "{rows:?}");
    }
}

async fn discard_all_in_front_of_the_next_query(mode: PoolMode) {
    let proxy = proxy::start(config(mode)).await;
    let (mut a, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    // Session state: a setting (which pins the client in transaction pooling) and a
    // protocol-level statement.
    assert_eq!(tags(&raw_query(&mut a, "SET statement_timeout = '5s'").await), "CZ");
    a.send_msgs(&Msgs::new().parse("s1", "SELECT 1", &[]).sync()).await;
    assert_eq!(tags(&a.read_until_ready().await), "1Z");

    a.send_msgs(&Msgs::new().query("DISCARD ALL").query(DOCS)).await;
    let discard = a.read_until_ready().await;
    assert_eq!(tags(&discard), "CZ", "DISCARD ALL runs");
    assert_eq!(discard[0].1, raw::cstr("DISCARD ALL"));
    let docs = a.read_until_ready().await;
    assert_own_rows(&docs, &ACME, "1");

    let shown = raw_query(&mut a, "SHOW statement_timeout").await;
    assert_eq!(data_rows(&shown), [[Some("0".to_string())]], "the setting was reset");
    a.send_msgs(&Msgs::new().bind_text("", "s1", &[]).sync()).await;
    let bound = a.read_until_ready().await;
    let e = the_error(&bound);
    assert_eq!((e[&'C'].as_str(), e[&'M'].as_str()), ("26000", "prepared statement \"s1\" does not exist"));

    if mode == PoolMode::Transaction {
        // No longer pinned: with one server connection, another tenant gets it.
        let (mut b, _) = raw_login(&proxy, &proxy.token("2"), &[]).await;
        assert_own_rows(&raw_query(&mut b, DOCS).await, &GLOBEX, "2");
        assert_own_rows(&raw_query(&mut a, DOCS).await, &ACME, "1");
    }
}

#[tokio::test]
async fn npgsql_discard_all_in_front_of_the_next_query_session_mode() {
    discard_all_in_front_of_the_next_query(PoolMode::Session).await;
}

#[tokio::test]
async fn npgsql_discard_all_in_front_of_the_next_query_transaction_mode() {
    discard_all_in_front_of_the_next_query(PoolMode::Transaction).await;
}

/// asyncpg's reset, then a query in the same write: the query runs with the context again.
async fn reset_all_in_front_of_the_next_query(mode: PoolMode) {
    let proxy = proxy::start(config(mode)).await;
    let (mut a, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    for sql in ["DISCARD PLANS", "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;"] {
        a.send_msgs(&Msgs::new().query(sql).query(DOCS)).await;
        let reset = a.read_until_ready().await;
        assert!(!reset.iter().any(|(t, _)| *t == b'E'), "{sql}: {}", tags(&reset));
        assert_own_rows(&a.read_until_ready().await, &ACME, "1");
    }
}

#[tokio::test]
async fn pipelined_resets_keep_the_context_session_mode() {
    reset_all_in_front_of_the_next_query(PoolMode::Session).await;
}

#[tokio::test]
async fn pipelined_resets_keep_the_context_transaction_mode() {
    reset_all_in_front_of_the_next_query(PoolMode::Transaction).await;
}
