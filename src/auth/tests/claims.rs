//! Time, issuer, audience, tenant and role checks (HS256, pinned clock).

use serde_json::json;

use super::*;
use crate::auth::{SQLSTATE_INVALID_AUTHORIZATION as AUTHZ, SQLSTATE_INVALID_PASSWORD as BAD};

fn verifier(cfg: JwtConfig) -> Verifier {
    Verifier::from_config(&cfg).unwrap()
}

#[test]
fn expiry_and_not_before_with_leeway() {
    let strict = verifier(hs_cfg());
    let lenient = verifier(JwtConfig { leeway_s: 30, ..hs_cfg() });
    let expired = hs(&with(json!({"exp": NOW - 10})));
    assert_fails(&strict, &expired, AuthError::Expired, "token has expired", BAD);
    assert_eq!(ok(&lenient, &expired).expires_at, Some(NOW - 10));
    let at_exp = hs(&with(json!({"exp": NOW})));
    assert_fails(&strict, &at_exp, AuthError::Expired, "token has expired", BAD);
    assert_eq!(ok(&strict, &hs(&with(json!({"exp": NOW + 1})))).expires_at, Some(NOW + 1));
    assert_fails(&lenient, &hs(&with(json!({"exp": NOW - 30}))), AuthError::Expired, "token has expired", BAD);
    // Fractional NumericDate is accepted (truncated).
    assert_eq!(ok(&strict, &hs(&with(json!({"exp": (NOW + 5) as f64 + 0.5})))).expires_at, Some(NOW + 5));

    let early = hs(&with(json!({"nbf": NOW + 10})));
    assert_fails(&strict, &early, AuthError::NotYetValid, "token is not valid yet", BAD);
    ok(&lenient, &early);
    ok(&strict, &hs(&with(json!({"nbf": NOW}))));
    let nbf_type = AuthError::ClaimType { claim: "nbf", expected: "a non-negative number" };
    assert_fails(&strict, &hs(&with(json!({"nbf": "soon"}))), nbf_type, "claim nbf must be a non-negative number", BAD);
}

#[test]
fn exp_is_required_unless_configured_otherwise() {
    let no_exp = hs(&with(json!({"exp": null})));
    let v = verifier(hs_cfg());
    assert_fails(&v, &no_exp, AuthError::MissingClaim("exp"), "token has no exp claim", BAD);
    let relaxed = verifier(JwtConfig { require_exp: false, ..hs_cfg() });
    assert_eq!(ok(&relaxed, &no_exp).expires_at, None);
    let exp_type = AuthError::ClaimType { claim: "exp", expected: "a non-negative number" };
    for bad in [json!("tomorrow"), json!(-5), json!(true), json!([1])] {
        let token = hs(&with(json!({"exp": bad})));
        assert_fails(&v, &token, exp_type.clone(), "claim exp must be a non-negative number", BAD);
    }
}

#[test]
fn issuer() {
    let v = verifier(JwtConfig { issuer: Some("https://auth.example".into()), ..hs_cfg() });
    ok(&v, &hs(&with(json!({"iss": "https://auth.example"}))));
    assert_fails(&v, &hs(&good()), AuthError::MissingClaim("iss"), "token has no iss claim", BAD);
    let wrong = hs(&with(json!({"iss": "https://evil.example"})));
    assert_fails(&v, &wrong, AuthError::WrongIssuer, "token issuer is not accepted", BAD);
    let typed = hs(&with(json!({"iss": ["https://auth.example"]})));
    let expected = AuthError::ClaimType { claim: "iss", expected: "a string" };
    assert_fails(&v, &typed, expected, "claim iss must be a string", BAD);
    // Without jwt.issuer, iss is not looked at.
    ok(&verifier(hs_cfg()), &wrong);
}

#[test]
fn audience() {
    let v = verifier(JwtConfig { audience: Some("rlsproxy".into()), ..hs_cfg() });
    ok(&v, &hs(&with(json!({"aud": "rlsproxy"}))));
    ok(&v, &hs(&with(json!({"aud": ["other", "rlsproxy"]}))));
    assert_fails(&v, &hs(&good()), AuthError::MissingClaim("aud"), "token has no aud claim", BAD);
    for wrong in [json!("other"), json!(["a", "b"]), json!([])] {
        let token = hs(&with(json!({"aud": wrong})));
        assert_fails(&v, &token, AuthError::WrongAudience, "token audience is not accepted", BAD);
    }
    let expected = AuthError::ClaimType { claim: "aud", expected: "a string or an array of strings" };
    for typed in [json!(5), json!(["rlsproxy", 5]), json!({"rlsproxy": true})] {
        let token = hs(&with(json!({"aud": typed})));
        assert_fails(&v, &token, expected.clone(), "claim aud must be a string or an array of strings", BAD);
    }
    // Without jwt.audience, aud is not looked at.
    ok(&verifier(hs_cfg()), &hs(&with(json!({"aud": "other"}))));
}

#[test]
fn tenant_claim_values() {
    let v = verifier(hs_cfg());
    for (value, tenant) in [
        (json!("acme"), "acme"),
        (json!(42), "42"),
        (json!(-7), "-7"),
        (json!(u64::MAX), "18446744073709551615"),
        (json!(i64::MIN), "-9223372036854775808"),
    ] {
        assert_eq!(ok(&v, &hs(&with(json!({"tenant_id": value})))).tenant, tenant);
    }
    let missing = hs(&with(json!({"tenant_id": null})));
    let expected = AuthError::TenantClaimMissing("tenant_id".into());
    assert_fails(&v, &missing, expected, "token has no tenant claim tenant_id", AUTHZ);
    let mut null = good();
    null["tenant_id"] = Value::Null;
    let wrong = [json!(1.5), json!(true), json!({"id": 1}), json!(["acme"]), json!(""), json!("a\u{0}b")];
    for token in wrong.into_iter().map(|t| hs(&with(json!({"tenant_id": t})))).chain([hs(&null)]) {
        let expected = AuthError::TenantClaimType("tenant_id".into());
        assert_fails(&v, &token, expected, "tenant claim tenant_id must be a string or an integer", AUTHZ);
    }
}

#[test]
fn nested_tenant_claim() {
    let v = verifier(JwtConfig { tenant_claim: "app_metadata.tenant".into(), ..hs_cfg() });
    let token = hs(&with(json!({"tenant_id": null, "app_metadata": {"tenant": 12, "plan": "pro"}})));
    assert_eq!(ok(&v, &token).tenant, "12");
    let expected = AuthError::TenantClaimMissing("app_metadata.tenant".into());
    for claims in [good(), with(json!({"app_metadata": {}})), with(json!({"app_metadata": "t1"}))] {
        assert_fails(&v, &hs(&claims), expected.clone(), "token has no tenant claim app_metadata.tenant", AUTHZ);
    }
    // A top-level claim whose name contains the dot is not the nested path.
    assert_fails(
        &v,
        &hs(&with(json!({"app_metadata.tenant": "t1"}))),
        expected,
        "token has no tenant claim app_metadata.tenant",
        AUTHZ,
    );
}

#[test]
fn role_claim() {
    let roles = vec!["app_user".to_string(), "app_admin".to_string()];
    let v = verifier(JwtConfig { role_claim: "role".into(), allowed_roles: roles.clone(), ..hs_cfg() });
    assert_eq!(ok(&v, &hs(&good())).role, None);
    assert_eq!(ok(&v, &hs(&with(json!({"role": "app_admin"})))).role.as_deref(), Some("app_admin"));
    let root = hs(&with(json!({"role": "postgres"})));
    assert_fails(&v, &root, AuthError::RoleNotAllowed("postgres".into()), "role postgres is not allowed", AUTHZ);
    let mut null = good();
    null["role"] = Value::Null;
    let typed = [json!(1), json!(["app_user", 2]), json!({"r": "app_user"})].map(|r| hs(&with(json!({"role": r}))));
    let message = "role claim role must be a string or an array of strings";
    for token in typed.into_iter().chain([hs(&null)]) {
        assert_fails(&v, &token, AuthError::RoleClaimType("role".into()), message, AUTHZ);
    }
    // An array (Keycloak's realm roles): its first allowed role; none allowed, no role.
    let keycloak =
        verifier(JwtConfig { role_claim: "realm_access.roles".into(), allowed_roles: roles.clone(), ..hs_cfg() });
    let realm = |r: Value| hs(&with(json!({"realm_access": {"roles": r}})));
    let chosen = ok(&keycloak, &realm(json!(["offline_access", "app_user", "app_admin"])));
    assert_eq!(chosen.role.as_deref(), Some("app_user"));
    assert_eq!(ok(&keycloak, &realm(json!(["offline_access", "uma_authorization"]))).role, None);
    assert_eq!(ok(&keycloak, &realm(json!([]))).role, None);
    // A namespaced claim (Auth0) in quotes, tenant and role.
    let auth0 = JwtConfig {
        tenant_claim: "\"https://example.com/tenant_id\"".into(),
        role_claim: "\"https://example.com/role\"".into(),
        allowed_roles: roles.clone(),
        ..hs_cfg()
    };
    let mut namespaced = good();
    namespaced["https://example.com/tenant_id"] = json!("4f1c2a9e-0d5b-4e61-9b2f-7c3e8a1d6b05");
    namespaced["https://example.com/role"] = json!("app_admin");
    let ctx = ok(&verifier(auth0.clone()), &hs(&namespaced));
    assert_eq!((ctx.tenant.as_str(), ctx.role.as_deref()), ("4f1c2a9e-0d5b-4e61-9b2f-7c3e8a1d6b05", Some("app_admin")));
    let unterminated = JwtConfig { tenant_claim: "\"https://example.com/tenant_id".into(), ..auth0 };
    let Err(e) = Verifier::from_config(&unterminated) else { panic!("an unterminated quote was accepted") };
    assert_eq!(e.to_string(), "jwt.tenant_claim: unterminated quote in \"\\\"https://example.com/tenant_id\"");
    let nested = verifier(JwtConfig { role_claim: "app.role".into(), allowed_roles: roles, ..hs_cfg() });
    assert_eq!(ok(&nested, &hs(&with(json!({"app": {"role": "app_user"}})))).role.as_deref(), Some("app_user"));
    // Without jwt.role_claim, a role claim is ignored.
    assert_eq!(ok(&verifier(hs_cfg()), &root).role, None);
}

#[test]
fn is_expired_at_uses_exp_plus_leeway() {
    let ctx = |exp| TenantContext { tenant: "t".into(), role: None, claims: json!({}), expires_at: exp, subject: None };
    let c = ctx(Some(100));
    assert!(!c.is_expired_at(99, 0));
    assert!(c.is_expired_at(100, 0));
    assert!(!c.is_expired_at(104, 5));
    assert!(c.is_expired_at(105, 5));
    assert!(!ctx(Some(u64::MAX)).is_expired_at(u64::MAX - 1, 10));
    assert!(!ctx(None).is_expired_at(u64::MAX, 0));
}

/// `jwt.tenant_format`: a second spelling of a tenant id that a policy's cast would read as
/// the same tenant is refused at login.
#[test]
fn tenant_format_refuses_other_spellings() {
    let v = verifier(JwtConfig { tenant_format: "integer".into(), ..hs_cfg() });
    assert_eq!(ok(&v, &hs(&with(json!({"tenant_id": 2})))).tenant, "2");
    assert_eq!(ok(&v, &hs(&with(json!({"tenant_id": "2"})))).tenant, "2");
    let message = "tenant claim tenant_id is not in the format jwt.tenant_format = integer";
    for spelling in [" 2", "02", "+2", "2 "] {
        let token = hs(&with(json!({"tenant_id": spelling})));
        let error = AuthError::TenantFormat("tenant_id".into(), "integer".into());
        assert_fails(&v, &token, error, message, AUTHZ);
    }
    let uuid = verifier(JwtConfig { tenant_format: "uuid".into(), ..hs_cfg() });
    let lower = "4f1c2a9e-0d5b-4e61-9b2f-7c3e8a1d6b05";
    assert_eq!(ok(&uuid, &hs(&with(json!({"tenant_id": lower})))).tenant, lower);
    let upper = hs(&with(json!({"tenant_id": lower.to_uppercase()})));
    let error = AuthError::TenantFormat("tenant_id".into(), "uuid".into());
    assert_fails(&uuid, &upper, error, "tenant claim tenant_id is not in the format jwt.tenant_format = uuid", AUTHZ);
    let Err(e) = Verifier::from_config(&JwtConfig { tenant_format: "[".into(), ..hs_cfg() }) else {
        panic!("a pattern that does not compile was accepted")
    };
    assert!(e.to_string().starts_with("jwt.tenant_format: "), "{e}");
}
