//! The recipes of `docs/identity-providers.md`, as written there: each TOML block is loaded,
//! with its key source pointed at keys made here, and the token shown under it (signed with
//! those keys) must give the tenant and role the recipe says; tokens one claim away must not.

use serde_json::Value;

use super::*;
use crate::config::Config;

const DOC: &str = include_str!("../../../docs/identity-providers.md");

/// The first fenced block of `lang` after `<!-- recipe: name -->`.
fn block(name: &str, lang: &str) -> &'static str {
    let after = DOC.split_once(&format!("<!-- recipe: {name} -->")).expect("recipe marker").1;
    let start = after.split_once(&format!("```{lang}\n")).expect("block").1;
    start.split_once("```").expect("block end").0
}

/// The recipe's `[jwt]` section, its `jwks_url` or `secret_file` replaced by `key_line`.
fn recipe(name: &str, key_line: &str) -> Verifier {
    let toml: String = block(name, "toml")
        .lines()
        .map(|l| if l.starts_with("jwks_url =") || l.starts_with("secret_file =") { key_line } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_toml(&format!("[upstream]\ndatabase = \"app\"\n\n{toml}\n")).unwrap();
    Verifier::from_config(&config.jwt).unwrap()
}

/// The recipe's example token payload.
fn payload(name: &str) -> Value {
    serde_json::from_str(block(name, "json")).unwrap()
}

/// A JWKS file of one key pair `name` of `kind` under `kid`; returns the line that names it
/// and the signing key.
fn jwks(dir: &Dir, kind: Gen, kid: &str) -> (String, EncodingKey) {
    let (private, _) = dir.keypair("idp", kind);
    let path = dir.write("jwks.json", json!({ "keys": [dir.jwk("idp", kind, Some(kid), None)] }).to_string());
    (format!("jwks_file = {:?}", path.display().to_string()), pem_key(&private, kind))
}

fn tenant_and_role(context: TenantContext) -> (String, Option<String>) {
    (context.tenant, context.role)
}

#[test]
fn auth0_namespaced_claims_rs256() {
    let dir = Dir::new();
    let (line, key) = jwks(&dir, Gen::Rsa(2048), "auth0-key-1");
    let v = recipe("auth0", &line);
    let claims = payload("auth0");
    let token = sign(Algorithm::RS256, &key, Some("auth0-key-1"), &claims);
    assert_eq!(tenant_and_role(ok(&v, &token)), ("42".into(), Some("admin_role".into())));

    // A token Auth0 issued for another API.
    let mut other = claims.clone();
    other["aud"] = json!(["https://billing.example.com", "https://example.eu.auth0.com/userinfo"]);
    let token = sign(Algorithm::RS256, &key, Some("auth0-key-1"), &other);
    assert_eq!(fail(&v, &token), AuthError::WrongAudience);
    // The same claim without its namespace is not the tenant claim.
    let mut bare = claims;
    bare.as_object_mut().unwrap().remove("https://example.com/tenant_id");
    bare["tenant_id"] = json!("42");
    let token = sign(Algorithm::RS256, &key, Some("auth0-key-1"), &bare);
    assert!(matches!(fail(&v, &token), AuthError::TenantClaimMissing(_)));
}

#[test]
fn keycloak_realm_roles_and_audience_mapper() {
    let dir = Dir::new();
    let (line, key) = jwks(&dir, Gen::Rsa(2048), "kc-rs256");
    let v = recipe("keycloak", &line);
    let claims = payload("keycloak");
    let token = sign(Algorithm::RS256, &key, Some("kc-rs256"), &claims);
    assert_eq!(tenant_and_role(ok(&v, &token)), ("7".into(), Some("admin_role".into())));

    // Without an allowed realm role, the session has no role.
    let mut plain = claims.clone();
    plain["realm_access"]["roles"] = json!(["offline_access", "uma_authorization"]);
    let token = sign(Algorithm::RS256, &key, Some("kc-rs256"), &plain);
    assert_eq!(tenant_and_role(ok(&v, &token)), ("7".into(), None));
    // Without the Audience mapper, aud is only `account`.
    let mut unmapped = claims;
    unmapped["aud"] = json!("account");
    let token = sign(Algorithm::RS256, &key, Some("kc-rs256"), &unmapped);
    assert_eq!(fail(&v, &token), AuthError::WrongAudience);
}

#[test]
fn supabase_app_metadata_uuid_hs256() {
    let dir = Dir::new();
    let secret = dir.write("supabase.secret", SECRET);
    let v = recipe("supabase", &format!("secret_file = {:?}", secret.display().to_string()));
    let claims = payload("supabase");
    assert_eq!(
        tenant_and_role(ok(&v, &hs(&claims))),
        ("3f0c2a9e-1b7d-4e5f-8a6b-9c0d1e2f3a4b".into(), Some("authenticated".into()))
    );

    // The tenant only in user_metadata, which users edit themselves: refused.
    let mut self_made = claims.clone();
    self_made["app_metadata"].as_object_mut().unwrap().remove("tenant_id");
    assert!(matches!(fail(&v, &hs(&self_made)), AuthError::TenantClaimMissing(_)));
    // An upper-case UUID is not the canonical spelling.
    let mut upper = claims;
    upper["app_metadata"]["tenant_id"] = json!("3F0C2A9E-1B7D-4E5F-8A6B-9C0D1E2F3A4B");
    assert!(matches!(fail(&v, &hs(&upper)), AuthError::TenantFormat(..)));
}

#[test]
fn generic_oidc_es256_text_tenant() {
    let dir = Dir::new();
    let (line, key) = jwks(&dir, Gen::Ec("P-256"), "oidc-es256");
    let v = recipe("oidc", &line);
    let claims = payload("oidc");
    let token = sign(Algorithm::ES256, &key, Some("oidc-es256"), &claims);
    assert_eq!(tenant_and_role(ok(&v, &token)), ("acme-eu".into(), None));

    let mut shouting = claims;
    shouting["org"]["id"] = json!("ACME-EU");
    let token = sign(Algorithm::ES256, &key, Some("oidc-es256"), &shouting);
    assert!(matches!(fail(&v, &token), AuthError::TenantFormat(..)));
}
