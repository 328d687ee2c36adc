//! Length, shape, header and signature checks (HS256, pinned clock).

use serde_json::json;

use super::*;
use crate::auth::error::shown;
use crate::auth::{MAX_TOKEN_LEN, SQLSTATE_INVALID_PASSWORD as BAD};

fn verifier(cfg: JwtConfig) -> Verifier {
    Verifier::from_config(&cfg).unwrap()
}

#[test]
fn valid_token_gives_the_whole_context() {
    let v = verifier(hs_cfg());
    let claims = with(json!({"extra": {"a": [1, 2]}}));
    let ctx = ok(&v, &hs(&claims));
    let expected = TenantContext {
        tenant: "acme".into(),
        role: None,
        claims: claims.clone(),
        expires_at: Some(NOW + 3600),
        subject: Some("user-1".into()),
    };
    assert_eq!(ctx, expected);
    assert_eq!(v.leeway_s(), 0);
    // The real clock: NOW is in the past, so the same token has expired.
    assert_eq!(v.verify(&hs(&claims)), Err(AuthError::Expired));
    // A non-string sub is kept in claims but is not a subject.
    assert_eq!(ok(&v, &hs(&with(json!({"sub": 7})))).subject, None);
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    let v = verifier(hs_cfg());
    let huge = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_fails(&v, &huge, AuthError::TooLong { max: 16384 }, "token is longer than 16384 bytes", BAD);
    // Exactly at the limit it is parsed (and found malformed).
    let at_limit = "a".repeat(MAX_TOKEN_LEN);
    assert!(matches!(fail(&v, &at_limit), AuthError::Malformed(_)));
}

#[test]
fn malformed_tokens() {
    let v = verifier(hs_cfg());
    let shape = "malformed token: expected three base64url parts separated by dots";
    let payload = b64url(br#"{"tenant_id":"acme"}"#);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), shape),
        ("abc".into(), shape),
        ("a.b".into(), shape),
        ("a.b.c.d".into(), shape),
        (format!(".{payload}.sig"), shape),
        ("!!!.e30.sig".into(), "malformed token: header is not base64url-encoded JSON"),
        (format!("{}.e30.sig", b64url(b"{not json")), "malformed token: header is not base64url-encoded JSON"),
        (format!("{}.e30.sig", b64url(b"[1]")), "malformed token: header is not a JSON object"),
        (format!("{}.e30.sig", b64url(br#"{"typ":"JWT"}"#)), "malformed token: header has no alg string"),
        (format!("{}.e30.sig", b64url(br#"{"alg":256}"#)), "malformed token: header has no alg string"),
        (format!("{}.e30.sig", b64url(br#"{"alg":"HS256","kid":1}"#)), "malformed token: header kid is not a string"),
        (
            format!("{}.e30.sig", b64url(br#"{"alg":"HS256","crit":["b64"],"b64":false}"#)),
            "malformed token: header has crit extensions",
        ),
    ];
    for (token, message) in cases {
        let err = fail(&v, &token);
        assert_eq!((err.to_string().as_str(), err.sqlstate()), (message, BAD), "token {token:?}");
    }
    // Correctly signed, but the payload is not an object / not JSON.
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let array = sign(Algorithm::HS256, &key, None, &json!([1, 2]));
    assert_fails(
        &v,
        &array,
        AuthError::Malformed("payload is not a JSON object"),
        "malformed token: payload is not a JSON object",
        BAD,
    );
}

#[test]
fn alg_none_and_unknown_or_unlisted_algorithms_are_refused() {
    let v = verifier(hs_cfg());
    let payload = b64url(good().to_string().as_bytes());
    let none = format!("eyJhbGciOiJub25lIn0.{payload}.");
    assert_fails(&v, &none, AuthError::AlgorithmNotAllowed("none".into()), "algorithm none is not allowed", BAD);
    let hs1 = format!("{}.{payload}.x", b64url(br#"{"alg":"HS1"}"#));
    assert_fails(&v, &hs1, AuthError::AlgorithmNotAllowed("HS1".into()), "algorithm HS1 is not allowed", BAD);
    let hs384 = sign(Algorithm::HS384, &EncodingKey::from_secret(SECRET.as_bytes()), None, &good());
    assert_fails(&v, &hs384, AuthError::AlgorithmNotAllowed("HS384".into()), "algorithm HS384 is not allowed", BAD);
    // A hostile alg is shortened and escaped, never echoed raw.
    let long = format!("{}.{payload}.x", b64url(format!(r#"{{"alg":"{}\n"}}"#, "A".repeat(100)).as_bytes()));
    let err = fail(&v, &long);
    assert_eq!(err.to_string(), format!("algorithm {}... is not allowed", "A".repeat(64)));
    assert_eq!(shown("a\nb\u{1b}c"), "a\\nb\\u{1b}c");
    assert_eq!(shown(""), "\"\"");
}

#[test]
fn bad_signatures() {
    let v = verifier(hs_cfg());
    let other = sign(Algorithm::HS256, &EncodingKey::from_secret(b"another secret, also 32 bytes lo"), None, &good());
    assert_fails(&v, &other, AuthError::BadSignature, "token signature is invalid", BAD);
    // Payload swapped for another tenant's, signature kept.
    let token = hs(&good());
    let (head, rest) = token.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged = format!("{head}.{}.{sig}", b64url(with(json!({"tenant_id": "other"})).to_string().as_bytes()));
    assert_fails(&v, &forged, AuthError::BadSignature, "token signature is invalid", BAD);
    let unsigned = format!("{head}.{}.", rest.split_once('.').unwrap().0);
    assert_fails(&v, &unsigned, AuthError::BadSignature, "token signature is invalid", BAD);
    let not_b64 = format!("{head}.{}.!!", rest.split_once('.').unwrap().0);
    assert_fails(&v, &not_b64, AuthError::BadSignature, "token signature is invalid", BAD);
}
