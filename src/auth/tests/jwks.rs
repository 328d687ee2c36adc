//! JWKS files: loading errors, and key choice by `kid`.

use serde_json::json;

use super::*;
use crate::auth::SQLSTATE_INVALID_PASSWORD as BAD;

/// Writes a JWKS of `keys` and returns a verifier allowing `algs` with it.
fn jwks_verifier(dir: &Dir, keys: Vec<Value>, algs: &[&str]) -> Verifier {
    let path = dir.write("jwks.json", json!({ "keys": keys }).to_string());
    Verifier::from_config(&JwtConfig { jwks_file: Some(path), ..cfg(algs) }).unwrap()
}

#[test]
fn jwks_with_one_key_needs_no_kid() {
    let dir = Dir::new();
    let (private, _) = dir.keypair("ed", Gen::Ed25519);
    let v = jwks_verifier(&dir, vec![dir.jwk("ed", Gen::Ed25519, None, None)], &["EdDSA"]);
    let key = pem_key(&private, Gen::Ed25519);
    assert_eq!(ok(&v, &sign(Algorithm::EdDSA, &key, None, &good())).tenant, "acme");
    // A kid the set does not have is still refused.
    let unknown = sign(Algorithm::EdDSA, &key, Some("k9"), &good());
    assert_fails(&v, &unknown, AuthError::UnknownKid("k9".into()), "no key with kid k9", BAD);
}

#[test]
fn jwks_with_several_keys_selects_by_kid() {
    let dir = Dir::new();
    let (rsa, _) = dir.keypair("rsa", Gen::Rsa(2048));
    let (ec, _) = dir.keypair("ec", Gen::Ec("P-256"));
    let (ec384, _) = dir.keypair("ec384", Gen::Ec("P-384"));
    let keys = vec![
        dir.jwk("rsa", Gen::Rsa(2048), Some("r1"), Some("RS256")),
        dir.jwk("rsa", Gen::Rsa(2048), Some("r2"), None),
        dir.jwk("ec", Gen::Ec("P-256"), Some("e1"), None),
        dir.jwk("ec384", Gen::Ec("P-384"), Some("e2"), None),
        json!({"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "enc1", "n": "AQAB", "e": "AQAB"}),
    ];
    let v = jwks_verifier(&dir, keys, &["RS256", "PS256", "ES256", "ES384"]);
    let (rsa, ec, ec384) = (pem_key(&rsa, Gen::Rsa(0)), pem_key(&ec, Gen::Ec("")), pem_key(&ec384, Gen::Ec("")));
    ok(&v, &sign(Algorithm::RS256, &rsa, Some("r1"), &good()));
    ok(&v, &sign(Algorithm::ES256, &ec, Some("e1"), &good()));
    ok(&v, &sign(Algorithm::ES384, &ec384, Some("e2"), &good()));

    let no_kid = sign(Algorithm::ES256, &ec, None, &good());
    let message = "token has no kid but the key set has several keys";
    assert_fails(&v, &no_kid, AuthError::MissingKid, message, BAD);
    let unknown = sign(Algorithm::ES256, &ec, Some("e3"), &good());
    assert_fails(&v, &unknown, AuthError::UnknownKid("e3".into()), "no key with kid e3", BAD);
    // The skipped encryption key is not a verification key.
    let enc = sign(Algorithm::RS256, &rsa, Some("enc1"), &good());
    assert_fails(&v, &enc, AuthError::UnknownKid("enc1".into()), "no key with kid enc1", BAD);
    // The kid of a key of another type, or a JWK whose alg is another algorithm.
    let mismatch = |kid: &str, alg: &str| AuthError::KeyMismatch { kid: kid.into(), alg: alg.into() };
    let cross = sign(Algorithm::ES256, &ec, Some("r1"), &good());
    assert_fails(&v, &cross, mismatch("r1", "ES256"), "key r1 cannot verify algorithm ES256", BAD);
    let curve = sign(Algorithm::ES384, &ec384, Some("e1"), &good());
    assert_fails(&v, &curve, mismatch("e1", "ES384"), "key e1 cannot verify algorithm ES384", BAD);
    let pss = sign(Algorithm::PS256, &rsa, Some("r1"), &good());
    assert_fails(&v, &pss, mismatch("r1", "PS256"), "key r1 cannot verify algorithm PS256", BAD);
    ok(&v, &sign(Algorithm::PS256, &rsa, Some("r2"), &good()));
    // Right kid, wrong signer.
    let (other, _) = dir.keypair("other", Gen::Ec("P-256"));
    let forged = sign(Algorithm::ES256, &pem_key(&other, Gen::Ec("")), Some("e1"), &good());
    assert_fails(&v, &forged, AuthError::BadSignature, "token signature is invalid", BAD);
}

#[test]
fn jwks_file_errors() {
    let dir = Dir::new();
    dir.keypair("ec", Gen::Ec("P-256"));
    let ec = dir.jwk("ec", Gen::Ec("P-256"), Some("e1"), None);
    let cases = [
        ("{", "not a JWKS document: EOF while parsing an object at line 1 column 1"),
        (r#"{"kid": "x"}"#, "not a JWKS document: no \"keys\" array"),
        (r#"{"keys": []}"#, "holds no usable signature key"),
        (
            r#"{"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB"}]}"#,
            "key 0 (kid r): not an RSA, EC, OKP or oct key with all its parameters",
        ),
        (
            r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#,
            "key 0: RSA key of 17 bits; at least 2048 are required",
        ),
        (r#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}"#, "key 0: x must be 32 bytes for Ed25519"),
    ];
    for (text, reason) in cases {
        let path = dir.write("jwks.json", text);
        let cfg = JwtConfig { jwks_file: Some(path.clone()), ..cfg(&["ES256"]) };
        assert_eq!(config_error(&cfg), format!("jwt.jwks_file: {}: {reason}", path.display()), "{text}");
    }
    let mut typed = ec.clone();
    typed["alg"] = "RS256".into();
    let twice = json!({"keys": [ec.clone(), ec.clone()]}).to_string();
    let typed = json!({"keys": [typed]}).to_string();
    for (text, reason) in
        [(twice, "key 1 (kid e1): the kid is used twice"), (typed, "key 0 (kid e1): alg RS256 does not fit this key")]
    {
        let path = dir.write("jwks.json", &text);
        let cfg = JwtConfig { jwks_file: Some(path.clone()), ..cfg(&["ES256"]) };
        assert_eq!(config_error(&cfg), format!("jwt.jwks_file: {}: {reason}", path.display()));
    }
}

#[test]
fn static_key_serves_tokens_without_kid_next_to_a_jwks() {
    let dir = Dir::new();
    let (ec, _) = dir.keypair("ec", Gen::Ec("P-256"));
    let (ed, _) = dir.keypair("ed", Gen::Ed25519);
    let keys = vec![dir.jwk("ec", Gen::Ec("P-256"), Some("e1"), None), dir.jwk("ed", Gen::Ed25519, Some("d1"), None)];
    let path = dir.write("jwks.json", json!({ "keys": keys }).to_string());
    let cfg = JwtConfig { secret: Some(SECRET.into()), jwks_file: Some(path), ..cfg(&["HS256", "ES256", "EdDSA"]) };
    let v = Verifier::from_config(&cfg).unwrap();
    ok(&v, &hs(&good()));
    ok(&v, &sign(Algorithm::EdDSA, &pem_key(&ed, Gen::Ed25519), Some("d1"), &good()));
    let no_kid = sign(Algorithm::ES256, &pem_key(&ec, Gen::Ec("")), None, &good());
    assert_fails(&v, &no_kid, AuthError::MissingKid, "token has no kid but the key set has several keys", BAD);
}
