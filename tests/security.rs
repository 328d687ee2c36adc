//! Security integration tests: the proxy in front of the throwaway cluster,
//! attacked the ways docs/security.md lists (tokens, startup packets, TLS,
//! upstream roles, context injection, reserved names, malformed and oversized
//! messages, cancel keys). Every test asserts the exact SQLSTATE and message a
//! client sees, and leaves no data behind (temp tables only).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

#[path = "security/advisory.rs"]
mod advisory;
#[path = "security/desync.rs"]
mod desync;
#[path = "security/edges.rs"]
mod edges;
#[path = "security/failed_pipeline.rs"]
mod failed_pipeline;
#[path = "security/injection.rs"]
mod injection;
#[path = "security/model.rs"]
mod model;
#[path = "security/notify.rs"]
mod notify;
#[path = "security/protocol.rs"]
mod protocol;
#[path = "security/redteam.rs"]
mod redteam;
#[path = "security/redteam_admission.rs"]
mod redteam_admission;
#[path = "security/redteam_mask.rs"]
mod redteam_mask;
#[path = "security/redteam_seqmove.rs"]
mod redteam_seqmove;
#[path = "security/resets.rs"]
mod resets;
#[path = "security/shared_state.rs"]
mod shared_state;
#[path = "security/startup.rs"]
mod startup;
#[path = "security/strict_suite.rs"]
mod strict_suite;
#[path = "security/tenants.rs"]
mod tenants;
#[path = "security/tls.rs"]
mod tls;
#[path = "security/tokens.rs"]
mod tokens;
#[path = "security/upstream.rs"]
mod upstream;

use std::collections::HashMap;
use std::time::Duration;

use common::proxy::TestProxy;
pub use common::queries::{ACME_TITLES as ACME, GLOBEX_TITLES as GLOBEX, current_tenant, titles};
use common::raw::{self, RawClient};
pub use common::reply::{data_rows, first_column, tags, the_error};
pub use common::wire::Msgs;

/// Severity, SQLSTATE and message of a server (or proxy) error; panics on a client-side error.
pub fn server_error(e: &tokio_postgres::Error) -> (String, String, String) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("expected an ErrorResponse, got: {e}"));
    (db.severity().to_string(), db.code().code().to_string(), db.message().to_string())
}

/// Connecting with `token` must fail with an ErrorResponse: (severity, SQLSTATE, message).
pub async fn refused(proxy: &TestProxy, token: &str) -> (String, String, String) {
    match proxy.try_connect(token).await {
        Ok(client) => {
            let seen = client.simple_query("SELECT title FROM documents").await;
            panic!("connection accepted; it sees: {seen:?}")
        }
        Err(e) => server_error(&e),
    }
}

/// A raw client through the startup and authentication with `token`: the client
/// and every message up to and including the first ReadyForQuery.
pub async fn raw_login(proxy: &TestProxy, token: &str, extra: &[(&str, &str)]) -> (RawClient, Vec<(u8, Vec<u8>)>) {
    raw::login(proxy.addr, token, extra).await
}

/// Sends a simple Query and returns every reply up to ReadyForQuery.
pub async fn raw_query(c: &mut RawClient, sql: &str) -> Vec<(u8, Vec<u8>)> {
    c.send_query(sql).await;
    c.read_until_ready().await
}

/// (severity, SQLSTATE, message) of ErrorResponse fields.
pub fn sev_code_msg(fields: &HashMap<char, String>) -> (&str, &str, &str) {
    (fields[&'S'].as_str(), fields[&'C'].as_str(), fields[&'M'].as_str())
}

/// The peer closes the connection (EOF or reset) without sending anything more.
pub async fn assert_closed(c: &mut RawClient) {
    match c.try_read_message(Duration::from_secs(5)).await {
        Ok(None) => {}
        Ok(Some((tag, body))) => panic!("expected the connection to close, got '{}' {:?}", tag as char, body),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "connection still open: {e}"),
    }
}

/// The proxy still serves a fresh client of tenant 1 normally.
pub async fn assert_serves(proxy: &TestProxy) {
    let client = proxy.connect(&proxy.token("1")).await;
    assert_eq!(titles(&client).await, ACME);
}

/// psql through a conninfo, off the runtime's threads: (success, stdout, stderr).
pub async fn psql(conninfo: String, sql: &'static str) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = common::postgres().psql().arg(conninfo).args(["-At", "-c", sql]).output().expect("run psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("psql task")
}

/// Runs a shell command, panicking with its stderr on failure.
pub fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("spawn command");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}
