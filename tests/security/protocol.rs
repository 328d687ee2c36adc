//! Byte-level attacks after login: reserved statement names, unknown message
//! types, oversized messages, and what the cancel key reveals.

use std::time::Duration;

use crate::common::proxy::{self, TestProxy};
use crate::common::raw::{self, RawClient, cstr};
use crate::{
    ACME, GLOBEX, Msgs, assert_closed, assert_serves, first_column, raw_login, raw_query, sev_code_msg, tags,
    the_error, titles,
};

const RESERVED: &str = "statement and portal names starting with \"rlsproxy_\" are reserved by rlsproxy";

/// Sends `messages` then Sync: the batch must answer exactly ErrorResponse 42501 (reserved
/// names) and ReadyForQuery 'I', and the session must go on in tenant 1.
async fn assert_reserved(c: &mut RawClient, messages: Msgs) {
    c.send_msgs(&messages.clone().sync()).await;
    let msgs = c.read_until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "for {:?}", messages.tags());
    assert_eq!(sev_code_msg(&the_error(&msgs)), ("ERROR", "42501", RESERVED));
    assert_eq!(msgs[1].1, b"I");
    let rows = raw_query(c, "SELECT title FROM documents ORDER BY id").await;
    assert_eq!(first_column(&rows), ACME);
    assert_eq!(first_column(&raw_query(c, "SELECT current_setting('app.current_tenant')").await), ["1"]);
}

#[tokio::test]
async fn reserved_statement_names_are_refused() {
    let proxy = proxy::start_default().await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    assert_reserved(&mut c, Msgs::new().parse("rlsproxy_ctx", "SELECT 1", &[])).await;
    assert_reserved(&mut c, Msgs::new().parse("rlsproxy_mine", "SELECT 1", &[])).await;
    assert_reserved(&mut c, Msgs::new().close(b'S', "rlsproxy_ctx")).await;
    assert_reserved(&mut c, Msgs::new().describe(b'S', "rlsproxy_ctx")).await;
    // Executing the injection statement with another tenant's values.
    let switch = Msgs::new()
        .bind_text("", "rlsproxy_ctx", &["app.current_tenant", "2"])
        .execute("", 0)
        .unsynced("SELECT title FROM documents ORDER BY id", &[]);
    assert_reserved(&mut c, switch).await;
    assert_reserved(&mut c, Msgs::new().bind_text("rlsproxy_portal", "", &[])).await;

    // Control: the same messages with an ordinary name work.
    let control = Msgs::new().parse("mine", "SELECT title FROM documents ORDER BY id", &[]);
    c.send_msgs(&control.bind_text("", "mine", &[]).execute("", 0).sync()).await;
    assert_eq!(first_column(&c.read_until_ready().await), ACME);
}

/// SQL-level EXECUTE reaches protocol-level prepared statements (one namespace on the server):
/// running the injection statement with another tenant's values must be refused.
#[tokio::test]
async fn sql_execute_of_the_injection_statement_is_refused() {
    let proxy = proxy::start_default().await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let msgs =
        raw_query(&mut c, "EXECUTE rlsproxy_ctx('app.current_tenant', '2'); SELECT title FROM documents ORDER BY id")
            .await;
    let rows = first_column(&msgs);
    assert!(!rows.iter().any(|t| GLOBEX.contains(&t.as_str())), "tenant 1 read tenant 2's rows: {rows:?}");
    assert_eq!(the_error(&msgs)[&'C'], "42501", "{}", tags(&msgs));
}

async fn login_and_send(proxy: &TestProxy, msgs: Msgs) -> RawClient {
    let (mut c, _) = raw_login(proxy, &proxy.token("1"), &[]).await;
    c.send_msgs(&msgs).await;
    c
}

#[tokio::test]
async fn unknown_message_type_is_fatal_and_isolated() {
    let proxy = proxy::start_default().await;
    let bystander = proxy.connect(&proxy.token("2")).await;
    let mut c = login_and_send(&proxy, Msgs::new().msg(b'z', &[])).await;
    let (tag, body) = c.read_message().await;
    assert_eq!(tag, b'E');
    assert_eq!(sev_code_msg(&raw::error_fields(&body)), ("FATAL", "08P01", "invalid frontend message type 122"));
    assert_closed(&mut c).await;

    // A startup-phase message after startup (a second StartupMessage-like 'p' password) is
    // not a frontend message of the session either.
    let mut c = login_and_send(&proxy, Msgs::new().msg(b'p', &cstr("again"))).await;
    let (tag, body) = c.read_message().await;
    assert_eq!(tag, b'E');
    assert_eq!(sev_code_msg(&raw::error_fields(&body)).1, "08P01");
    assert_closed(&mut c).await;

    assert_eq!(titles(&bystander).await, GLOBEX);
    assert_serves(&proxy).await;
}

async fn limited_proxy() -> TestProxy {
    let mut cfg = proxy::base_config(crate::common::postgres());
    cfg.limits.max_message_bytes = 4096;
    proxy::start(cfg).await
}

/// A 10 KB Query: 10_000 characters of SQL + NUL, length field 10_005, 10_006 bytes in all.
fn big_query() -> Msgs {
    let sql = format!("SELECT '{}'", "x".repeat(10_000 - 9));
    assert_eq!(sql.len(), 10_000);
    let msg = Msgs::new().query(&sql);
    assert_eq!(msg.bytes()[1..5], 10_005i32.to_be_bytes());
    msg
}

async fn assert_too_large(c: &mut RawClient) {
    let (tag, body) = c.read_message().await;
    assert_eq!(tag as char, 'E', "the oversized query was answered with '{}': it ran", tag as char);
    assert_eq!(
        sev_code_msg(&raw::error_fields(&body)),
        ("FATAL", "54000", "rlsproxy: message 'Q' of 10006 bytes exceeds the limit of 4096 bytes")
    );
    assert_closed(c).await;
}

/// Sent in one write, as a driver does.
#[tokio::test]
async fn oversized_query_is_fatal() {
    let proxy = limited_proxy().await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    c.send_msgs(&big_query()).await;
    assert_too_large(&mut c).await;
    assert_serves(&proxy).await;
}

/// Sent in two pieces, so the proxy sees the header before the body.
#[tokio::test]
async fn oversized_query_in_pieces_is_fatal() {
    let proxy = limited_proxy().await;
    let (mut c, _) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let msg = big_query();
    c.send_raw(&msg.bytes()[..100]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = c.try_send_raw(&msg.bytes()[100..]).await;
    assert_too_large(&mut c).await;
    assert_serves(&proxy).await;
}

/// In transaction pooling the BackendKeyData the client gets is the proxy's, naming no
/// upstream backend (each transaction may run on another one); session pooling gives the
/// real pid (tests/relay).
#[tokio::test]
async fn backend_key_data_in_transaction_mode_is_not_an_upstream_pid() {
    let mut cfg = proxy::base_config(crate::common::postgres());
    cfg.pool.mode = rlsproxy::config::PoolMode::Transaction;
    let proxy = proxy::start(cfg).await;
    let (mut c, msgs) = raw_login(&proxy, &proxy.token("1"), &[]).await;
    let keys: Vec<_> = msgs.iter().filter(|(t, _)| *t == b'K').collect();
    assert_eq!(keys.len(), 1, "{}", tags(&msgs));
    let key = &keys[0].1;
    assert_eq!(key.len(), 8, "a 4-byte key in protocol 3.0");
    let pid = i32::from_be_bytes(key[..4].try_into().unwrap());
    let backend = first_column(&raw_query(&mut c, "SELECT pg_backend_pid()").await);
    let backend: i32 = backend[0].parse().unwrap();
    assert_ne!(pid, backend, "the client learned the upstream backend pid");
    // pg_stat_activity is the statement guard's business for clients: ask as the superuser.
    let su = crate::common::postgres().superuser_client("app").await;
    let others: i64 =
        su.query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap().get(0);
    assert_eq!(others, 0, "the proxy's pid names some upstream backend");
}

/// A peer that connects and sends nothing is dropped after `limits.handshake_timeout_ms`.
#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let mut cfg = proxy::base_config(crate::common::postgres());
    cfg.limits.handshake_timeout_ms = 300;
    let proxy = proxy::start(cfg).await;
    let mut c = raw::connect(proxy.addr).await;
    let started = std::time::Instant::now();
    let end = c.try_read_message(Duration::from_secs(5)).await;
    assert!(matches!(end, Ok(None) | Err(_)), "expected the connection to close, got {end:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(4), "{waited:?}");
}

/// Over `listen.max_clients` a client is refused the way PostgreSQL refuses one (53300).
#[tokio::test]
async fn clients_over_the_limit_get_53300() {
    let mut cfg = proxy::base_config(crate::common::postgres());
    cfg.listen.max_clients = 1;
    let proxy = proxy::start(cfg).await;
    let first = proxy.connect(&proxy.token("1")).await;
    let err = proxy.try_connect(&proxy.token("1")).await.err().map(|e| proxy::db_error(&e));
    assert_eq!(err, Some(("53300".into(), "sorry, too many clients already (rlsproxy listen.max_clients)".into())));
    drop(first);
}
