//! `jwt.jwks_url` against an in-test HTTPS server: the first fetch at start (or no start), the
//! cache lifetime from `Cache-Control: max-age`, the background refresh, one refresh per burst
//! of unknown `kid`s then the rate limit, the last good set kept when a refresh fails, and
//! plain `http://` refused by check-config.

use std::time::{Duration, Instant};

use crate::common::{self, proxy};
use crate::jwks_server::JwksServer;
use crate::keys::{SigningKey, jwks};
use crate::tenant_rows;
use rlsproxy::config::Config;

/// The test configuration with `[jwt]` reading `url` (trusting the cluster's CA).
fn config(url: &str) -> Config {
    let mut config = proxy::base_config(common::postgres());
    config.jwt.algorithms = vec!["EdDSA".into()];
    config.jwt.secret = None;
    config.jwt.jwks_url = Some(url.to_string());
    config.jwt.jwks_ca_file = Some(common::postgres().ca_cert_path());
    config.jwt.jwks_min_refresh_s = 1;
    config.jwt.jwks_max_age_s = 60;
    config
}

/// Waits until the server answered `n` requests, at most `limit`.
async fn wait_for_requests(server: &JwksServer, n: usize, limit: Duration) {
    let start = Instant::now();
    while server.requests() < n {
        assert!(start.elapsed() < limit, "{} requests, {n} expected", server.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn refused(kid: &str) -> (String, String) {
    ("28P01".to_string(), format!("no key with kid {kid}"))
}

async fn refusal(p: &proxy::TestProxy, token: String) -> (String, String) {
    match p.try_connect(&token).await {
        Ok(_) => panic!("the token was accepted"),
        Err(e) => proxy::db_error(&e),
    }
}

#[tokio::test]
async fn jwks_url_is_cached_refreshed_on_unknown_kids_once_and_kept_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (SigningKey::ed25519(dir.path(), "a"), SigningKey::ed25519(dir.path(), "b"));
    let server = JwksServer::start(jwks(&[&a]), 2).await;
    let started = Instant::now();
    let p = proxy::start(config(&server.url())).await;
    assert_eq!(server.requests(), 1, "fetched once at start");

    // Cached: connections within the max-age fetch nothing.
    for tenant in ["1", "2", "1"] {
        p.connect(&a.token(tenant)).await;
    }
    assert_eq!(server.requests(), 1);

    // Refreshed in the background at 90 % of max-age=2; the next answer says max-age=3600,
    // clamped to jwks_max_age_s = 60: no further background fetch during this test.
    server.publish(jwks(&[&a]), 3600);
    wait_for_requests(&server, 2, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(1700), "refreshed too early: {:?}", started.elapsed());

    // A kid published since: its first token triggers a refresh and is accepted.
    server.publish(jwks(&[&a, &b]), 3600);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let with_b = p.connect(&b.token("2")).await;
    assert_eq!(tenant_rows(&with_b).await, 2);
    assert_eq!(server.requests(), 3);

    // A burst of tokens with an unknown kid, once the rate limit allows a fetch: one fetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let burst: Vec<_> = (0..8).map(|_| refusal(&p, a.token_as("1", "zz"))).collect();
    for outcome in futures_util::future::join_all(burst).await {
        assert_eq!(outcome, refused("zz"));
    }
    assert_eq!(server.requests(), 4, "one fetch for the whole burst");
    // Within jwks_min_refresh_s of it: rate-limited, no fetch at all.
    assert_eq!(refusal(&p, a.token_as("1", "zz")).await, refused("zz"));
    assert_eq!(server.requests(), 4);

    // A failing server: the refresh is tried, fails, and the last good set stays.
    server.fail();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(refusal(&p, a.token_as("1", "yy")).await, refused("yy"));
    assert_eq!(server.requests(), 5);
    assert_eq!(tenant_rows(&p.connect(&a.token("1")).await).await, 3);
    assert_eq!(tenant_rows(&p.connect(&b.token("1")).await).await, 3);
    assert_eq!(server.requests(), 5);
    p.handle.shutdown();
}

#[tokio::test]
async fn the_proxy_does_not_start_without_its_first_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::ed25519(dir.path(), "a");
    let server = JwksServer::start(jwks(&[&key]), 60).await;
    server.fail();
    let error = match rlsproxy::Proxy::bind(config(&server.url())).await {
        Ok(_) => panic!("started without a key set"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        error,
        format!("jwt.jwks_url: {}: the first fetch failed: answered HTTP 500 Internal Server Error", server.url())
    );
    // Not trusting the server's CA is a failed first fetch too.
    let mut untrusted = config(&server.url());
    untrusted.jwt.jwks_ca_file = None;
    server.publish(jwks(&[&key]), 60);
    let error = rlsproxy::Proxy::bind(untrusted).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("the first fetch failed: TLS: invalid peer certificate"), "{error}");
}

#[test]
fn check_config_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[jwt]\nalgorithms = [\"RS256\"]\njwks_url = \"http://auth.example.com/jwks.json\"\n",
        common::postgres().upstream_toml("disable")
    );
    let (code, stderr) = crate::process::check_config(dir.path(), &config);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "rlsproxy: jwt.jwks_url: plain http:// is refused: the key set decides who is which tenant; use https://"
    );
}
