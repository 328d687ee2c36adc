//! Live reload, against the real test cluster: SIGHUP to the real binary rotates keys without
//! dropping open sessions, refuses a broken configuration whole, applies pool sizes, guard
//! lists and the log level, keeps restart-only keys; the file watch does the same without a
//! signal; `jwt.jwks_url` is fetched over HTTPS, cached, refreshed on an unknown `kid` at most
//! once per `jwks_min_refresh_s`, and kept when a refresh fails.
//!
//! - `sighup`: key rotation, refused configurations;
//! - `settings`: pool, guard, log level, restart-only keys;
//! - `watch`: the file watch;
//! - `jwks_url`: the remote key set (an in-test HTTPS server);
//! - `keys`, `process`, `jwks_server`: the tools.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

#[path = "reload/jwks_server.rs"]
mod jwks_server;
#[path = "reload/jwks_url.rs"]
mod jwks_url;
#[path = "reload/keys.rs"]
mod keys;
#[path = "reload/process.rs"]
mod process;
#[path = "reload/settings.rs"]
mod settings;
#[path = "reload/sighup.rs"]
mod sighup;
#[path = "reload/tls.rs"]
mod tls;
#[path = "reload/watch.rs"]
mod watch;

/// The line every successful reload logs.
pub const RELOADED: &str = "configuration reloaded";
/// The line every refused reload logs.
pub const REFUSED: &str = "configuration reload refused";
/// `rlsproxy_config_reloads_total` of successful reloads.
pub const RELOADS_OK: &str = "rlsproxy_config_reloads_total{result=\"ok\"}";
/// `rlsproxy_config_reloads_total` of refused reloads.
pub const RELOADS_ERROR: &str = "rlsproxy_config_reloads_total{result=\"error\"}";

/// Tenant 1's rows in `documents`, as the seed data has them.
pub async fn tenant_rows(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM documents", &[]).await.expect("query").get(0)
}
