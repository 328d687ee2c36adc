//! `mint` then `verify` with the real clock, for every algorithm family.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::auth::token::split;
use crate::auth::{MintError, MintRequest, mint};

fn req(tenant: &str) -> MintRequest {
    MintRequest { tenant: tenant.into(), subject: None, role: None, ttl: Duration::from_secs(600), extra: Vec::new() }
}

/// Mints with `cfg`, verifies with the same `cfg`, and returns the header alg and the context.
fn round_trip(cfg: &JwtConfig, req: &MintRequest) -> (String, TenantContext) {
    let token = mint(cfg, req).unwrap();
    let ctx = Verifier::from_config(cfg).unwrap().verify(&token).unwrap();
    (split(&token).ok().unwrap().alg, ctx)
}

#[test]
fn every_algorithm_round_trips() {
    let dir = Dir::new();
    let mut cases: Vec<(&str, JwtConfig)> = ["HS256", "HS384", "HS512"]
        .into_iter()
        .map(|alg| (alg, JwtConfig { secret: Some(SECRET.into()), ..cfg(&[alg]) }))
        .collect();
    for (name, kind, algs) in [
        ("rsa", Gen::Rsa(2048), &["RS256", "PS256", "RS512", "PS384"][..]),
        ("p256", Gen::Ec("P-256"), &["ES256"][..]),
        ("p384", Gen::Ec("P-384"), &["ES384"][..]),
        ("ed", Gen::Ed25519, &["EdDSA"][..]),
    ] {
        let (private, public) = dir.keypair(name, kind);
        for alg in algs {
            let keys = JwtConfig {
                private_key_file: Some(private.clone()),
                public_key_file: Some(public.clone()),
                ..cfg(&[alg])
            };
            cases.push((alg, keys));
        }
    }
    for (alg, cfg) in cases {
        let (header_alg, ctx) = round_trip(&cfg, &req("acme"));
        assert_eq!((header_alg.as_str(), ctx.tenant.as_str()), (alg, "acme"));
        assert_eq!(ctx.claims["exp"].as_u64().unwrap() - ctx.claims["iat"].as_u64().unwrap(), 600);
    }
}

#[test]
fn claims_follow_the_configured_paths() {
    let cfg = JwtConfig {
        secret: Some(SECRET.into()),
        tenant_claim: "app_metadata.tenant".into(),
        role_claim: "app_metadata.role".into(),
        allowed_roles: vec!["app_user".into()],
        issuer: Some("https://auth.example".into()),
        audience: Some("rlsproxy".into()),
        ..cfg(&["HS256"])
    };
    let extra = [
        ("plan", "\"pro\""),
        ("level", "3"),
        ("tags", "[1,2]"),
        ("note", "not json"),
        ("app_metadata", "{\"org\":\"o1\"}"),
    ];
    let request = MintRequest {
        subject: Some("user-1".into()),
        role: Some("app_user".into()),
        extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..req("42")
    };
    let (_, ctx) = round_trip(&cfg, &request);
    let iat = ctx.claims["iat"].as_u64().unwrap();
    let expected = json!({
        "sub": "user-1", "iat": iat, "exp": iat + 600, "iss": "https://auth.example", "aud": "rlsproxy",
        "plan": "pro", "level": 3, "tags": [1, 2], "note": "not json",
        "app_metadata": {"org": "o1", "tenant": 42, "role": "app_user"},
    });
    assert_eq!(ctx.claims, expected);
    assert_eq!(
        (ctx.tenant.as_str(), ctx.role.as_deref(), ctx.subject.as_deref()),
        ("42", Some("app_user"), Some("user-1"))
    );
    assert_eq!(ctx.expires_at, Some(iat + 600));
}

#[test]
fn only_canonical_digits_become_integers() {
    let cfg = hs_cfg();
    for (tenant, value) in [
        ("0", json!(0)),
        ("12", json!(12)),
        ("007", json!("007")),
        ("-3", json!("-3")),
        ("99999999999999999999", json!("99999999999999999999")),
    ] {
        let (_, ctx) = round_trip(&cfg, &req(tenant));
        assert_eq!((ctx.claims["tenant_id"].clone(), ctx.tenant.as_str()), (value, tenant));
    }
}

#[test]
fn extra_claims_override_registered_ones() {
    let cfg = hs_cfg();
    let expired = MintRequest { extra: vec![("exp".into(), "1".into())], ..req("acme") };
    let token = mint(&cfg, &expired).unwrap();
    assert_eq!(Verifier::from_config(&cfg).unwrap().verify(&token), Err(AuthError::Expired));
}

#[test]
fn first_algorithm_with_a_key_signs() {
    let cfg = JwtConfig { secret: Some(SECRET.into()), ..cfg(&["RS256", "HS384"]) };
    let token = mint(&cfg, &req("acme")).unwrap();
    assert_eq!(split(&token).ok().unwrap().alg, "HS384");
}

#[test]
fn minted_tokens_carry_the_kid_of_their_jwks_key() {
    let dir = Dir::new();
    let (_, _) = dir.keypair("a", Gen::Ec("P-256"));
    let (b, _) = dir.keypair("b", Gen::Ec("P-256"));
    let keys = json!({"keys": [dir.jwk("a", Gen::Ec("P-256"), Some("ka"), None), dir.jwk("b", Gen::Ec("P-256"), Some("kb"), None)]});
    let jwks = dir.write("jwks.json", keys.to_string());
    let cfg = JwtConfig { private_key_file: Some(b), jwks_file: Some(jwks), ..cfg(&["ES256"]) };
    let token = mint(&cfg, &req("acme")).unwrap();
    assert_eq!(split(&token).ok().unwrap().kid.as_deref(), Some("kb"));
    assert_eq!(Verifier::from_config(&cfg).unwrap().verify(&token).unwrap().tenant, "acme");
}

#[test]
fn mint_errors() {
    let dir = Dir::new();
    let (rsa, _) = dir.keypair("rsa", Gen::Rsa(2048));
    let message = |cfg: &JwtConfig, req: &MintRequest| mint(cfg, req).unwrap_err().to_string();
    assert_eq!(
        message(&cfg(&["RS256"]), &req("acme")),
        "no signing key for jwt.algorithms: set jwt.secret or jwt.secret_file (HS*), or jwt.private_key_file (RS*, PS*, ES*, EdDSA)"
    );
    assert!(matches!(mint(&cfg(&["RS256"]), &req("acme")), Err(MintError::NoSigningKey)));
    let ec_with_rsa = JwtConfig { private_key_file: Some(rsa.clone()), ..cfg(&["ES256", "EdDSA"]) };
    assert_eq!(
        message(&ec_with_rsa, &req("acme")),
        format!("jwt.private_key_file: {}: not a PEM private key usable with ES256, EdDSA", rsa.display())
    );
    let missing = dir.path("missing.key");
    let missing_cfg = JwtConfig { private_key_file: Some(missing.clone()), ..cfg(&["RS256"]) };
    assert_eq!(
        message(&missing_cfg, &req("acme")),
        format!("jwt.private_key_file: {}: No such file or directory (os error 2)", missing.display())
    );
    assert_eq!(
        message(&hs_cfg(), &MintRequest { role: Some("r".into()), ..req("acme") }),
        "claim role: jwt.role_claim is not set"
    );
    assert_eq!(message(&hs_cfg(), &req("")), "claim tenant_id: the tenant is empty");
    let nested = JwtConfig { tenant_claim: "app.meta.tenant".into(), ..hs_cfg() };
    let conflict = MintRequest { extra: vec![("app".into(), "{\"meta\": 5}".into())], ..req("acme") };
    assert_eq!(message(&nested, &conflict), "claim app.meta: is not an object");
    let conflict = MintRequest { extra: vec![("app".into(), "x".into())], ..req("acme") };
    assert_eq!(message(&nested, &conflict), "claim app: is not an object");
    let unknown = JwtConfig { secret: Some(SECRET.into()), ..cfg(&["HS257"]) };
    assert!(message(&unknown, &req("acme")).starts_with("jwt.algorithms: unknown algorithm \"HS257\""));
}
