//! Token failures at login (exact SQLSTATE and message, never the token echoed),
//! an oversized password message, and a token expiring mid-session.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rlsproxy::auth::{MintRequest, mint};
use serde_json::{Value, json};

use crate::common::proxy::{self, SECRET, TestProxy};
use crate::common::{postgres, raw};
use crate::{ACME, assert_serves, refused, run, server_error, sev_code_msg, titles};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// HS256 with the test secret over arbitrary claims.
fn hs256(claims: &Value) -> String {
    hs(Algorithm::HS256, SECRET.as_bytes(), claims)
}

fn hs(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The refusal must be FATAL `code` `message`, and must not echo the token or any part of it.
async fn assert_refused(proxy: &TestProxy, token: &str, code: &str, message: &str) {
    let (severity, got_code, got_message) = refused(proxy, token).await;
    assert_eq!((severity.as_str(), got_code.as_str(), got_message.as_str()), ("FATAL", code, message));
    assert!(!got_message.contains(token), "the message echoes the token");
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(!got_message.contains(part), "the message echoes a part of the token: {part}");
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_exact_errors() {
    let proxy = proxy::start_default().await;
    // Positive control: a good token of the same shape is accepted.
    let good = hs256(&json!({"tenant_id": 1, "sub": "u", "exp": now() + 600}));
    assert_eq!(titles(&proxy.connect(&good).await).await, ACME);

    let expired = proxy.token_with("1", None, Duration::from_secs(3600), &[("exp", &(now() - 10).to_string())]);
    assert_refused(&proxy, &expired, "28P01", "token has expired").await;

    let future = proxy.token_with("1", None, Duration::from_secs(3600), &[("nbf", &(now() + 3600).to_string())]);
    assert_refused(&proxy, &future, "28P01", "token is not valid yet").await;

    let other_secret =
        hs(Algorithm::HS256, b"another-secret-0123456789abcdef-xyz", &json!({"tenant_id": 1, "exp": now() + 600}));
    assert_refused(&proxy, &other_secret, "28P01", "token signature is invalid").await;

    let hs384 = hs(Algorithm::HS384, SECRET.as_bytes(), &json!({"tenant_id": 1, "exp": now() + 600}));
    assert_refused(&proxy, &hs384, "28P01", "algorithm HS384 is not allowed").await;

    let no_tenant = hs256(&json!({"sub": "u", "exp": now() + 600}));
    assert_refused(&proxy, &no_tenant, "28000", "token has no tenant claim tenant_id").await;

    for bad in [json!(1.5), json!(true), json!({"id": 1}), json!(""), json!([1])] {
        let token = hs256(&json!({"tenant_id": bad, "exp": now() + 600}));
        assert_refused(&proxy, &token, "28000", "tenant claim tenant_id must be a string or an integer").await;
    }

    assert_refused(&proxy, "abc", "28P01", "malformed token: expected three base64url parts separated by dots").await;

    let payload = b64url(json!({"tenant_id": 2, "exp": now() + 600}).to_string().as_bytes());
    for header in [json!({"alg": "none", "typ": "JWT"}), json!({"alg": "None"})] {
        let unsigned = format!("{}.{payload}.", b64url(header.to_string().as_bytes()));
        let alg = header["alg"].as_str().unwrap();
        assert_refused(&proxy, &unsigned, "28P01", &format!("algorithm {alg} is not allowed")).await;
    }
}

#[tokio::test]
async fn issuer_audience_and_role_are_enforced() {
    let pg = postgres();
    let mut cfg = proxy::base_config(pg);
    cfg.jwt.issuer = Some("https://issuer.test".into());
    cfg.jwt.audience = Some("rlsproxy-tests".into());
    cfg.jwt.role_claim = "role".into();
    cfg.jwt.allowed_roles = vec!["admin_role".into()];
    let proxy = proxy::start(cfg).await;
    let hour = Duration::from_secs(3600);
    // Positive control: issuer and audience come from the config.
    assert_eq!(titles(&proxy.connect(&proxy.token("1")).await).await, ACME);

    let wrong_iss = proxy.token_with("1", None, hour, &[("iss", "https://evil.test")]);
    assert_refused(&proxy, &wrong_iss, "28P01", "token issuer is not accepted").await;
    let wrong_aud = proxy.token_with("1", None, hour, &[("aud", "someone-else")]);
    assert_refused(&proxy, &wrong_aud, "28P01", "token audience is not accepted").await;
    let no_iss = hs256(&json!({"tenant_id": 1, "aud": "rlsproxy-tests", "exp": now() + 600}));
    assert_refused(&proxy, &no_iss, "28P01", "token has no iss claim").await;

    let superuser = proxy.token_with("1", Some("postgres"), hour, &[]);
    assert_refused(&proxy, &superuser, "28000", "role postgres is not allowed").await;
    let app_proxy = proxy.token_with("1", Some("app_proxy"), hour, &[]);
    assert_refused(&proxy, &app_proxy, "28000", "role app_proxy is not allowed").await;
}

/// HS/RS confusion: the RSA public key is public, so an HMAC keyed with its PEM must never verify.
#[tokio::test]
async fn hs_rs_key_confusion_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let private = dir.path().join("rsa.key");
    let public = dir.path().join("rsa.pub");
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&private));
    run(Command::new("openssl").arg("pkey").arg("-in").arg(&private).arg("-pubout").arg("-out").arg(&public));
    let public_pem = std::fs::read(&public).unwrap();
    let claims = json!({"tenant_id": 2, "sub": "attacker", "exp": now() + 600});
    let forged = hs(Algorithm::HS256, &public_pem, &claims);
    let forged_trimmed = hs(Algorithm::HS256, public_pem.trim_ascii_end(), &claims);

    // RS256 only.
    let mut cfg = proxy::base_config(postgres());
    cfg.jwt.algorithms = vec!["RS256".into()];
    cfg.jwt.secret = None;
    cfg.jwt.public_key_file = Some(public.clone());
    cfg.jwt.private_key_file = Some(private.clone());
    let rs_only = proxy::start(cfg.clone()).await;
    let genuine = rs_only.token("1");
    assert_eq!(titles(&rs_only.connect(&genuine).await).await, ACME, "a genuine RS256 token works");
    for token in [&forged, &forged_trimmed] {
        assert_refused(&rs_only, token, "28P01", "algorithm HS256 is not allowed").await;
    }

    // RS256 and HS256 both allowed: HS256 verifies with the secret, never with the public key.
    cfg.jwt.algorithms = vec!["RS256".into(), "HS256".into()];
    cfg.jwt.secret = Some(SECRET.into());
    let both = proxy::start(cfg.clone()).await;
    assert_eq!(titles(&both.connect(&both.token("1")).await).await, ACME);
    for token in [&forged, &forged_trimmed] {
        assert_refused(&both, token, "28P01", "token signature is invalid").await;
    }

    // An RS256 token signed with another RSA key.
    let other = dir.path().join("other.key");
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&other));
    let mut other_cfg = cfg.jwt.clone();
    other_cfg.algorithms = vec!["RS256".into()];
    other_cfg.private_key_file = Some(other);
    let req =
        MintRequest { tenant: "2".into(), subject: None, role: None, ttl: Duration::from_secs(600), extra: Vec::new() };
    let wrong_key = mint(&other_cfg, &req).expect("mint with the other key");
    assert_refused(&rs_only, &wrong_key, "28P01", "token signature is invalid").await;
}

/// A 1 MiB password message is refused from its length alone; the proxy stays up.
#[tokio::test]
async fn oversized_password_message_is_refused() {
    let proxy = proxy::start_default().await;
    let mut c = raw::connect(proxy.addr).await;
    c.send_startup(&[("user", "alice"), ("database", "app")]).await;
    assert_eq!(c.read_message().await.0, b'R');
    let body_len = 1 << 20;
    let msg = crate::Msgs::new().msg(b'p', &raw::cstr(&"a".repeat(body_len - 1)));
    // The proxy may close before reading it all: the write can fail, the error must still arrive.
    let _ = c.try_send_raw(msg.bytes()).await;
    let (tag, body) = c.read_message().await;
    assert_eq!(tag, b'E');
    let fields = raw::error_fields(&body);
    assert_eq!(
        sev_code_msg(&fields),
        ("FATAL", "28P01", "password message of 1048580 bytes refused: a token is at most 16384 bytes")
    );
    crate::assert_closed(&mut c).await;
    assert_serves(&proxy).await;
}

/// A token that expires while the session is open ends it at the next transaction.
#[tokio::test]
async fn token_expiring_mid_session_ends_it() {
    let proxy = proxy::start_default().await;
    let token = proxy.token_with("1", None, Duration::from_secs(2), &[]);
    let exp = now() + 2;
    let client = proxy.connect(&token).await;
    assert_eq!(titles(&client).await, ACME);
    tokio::time::sleep(Duration::from_secs(exp + 1 - now()) + Duration::from_millis(200)).await;
    let err = client.query("SELECT title FROM documents", &[]).await.expect_err("expired token still works");
    assert_eq!(
        server_error(&err),
        ("FATAL".into(), "28000".into(), "rlsproxy: the token has expired; no further transaction can start".into())
    );
    let after = client.simple_query("SELECT 1").await;
    assert!(after.is_err(), "the connection is still open: {after:?}");
    assert!(client.is_closed());
}
