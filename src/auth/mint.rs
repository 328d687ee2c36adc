//! Development tokens for `rlsproxy token`: signed with the configured keys and shaped by the
//! configured claim paths, so that the proxy's own [`super::Verifier`] accepts them.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use super::key::{Kind, alg_name, kind_for};
use super::keyfiles::load_jwks;
use super::path::ClaimPath;
use super::{now_unix, parse_algorithms, token};
use crate::config::{ConfigError, JwtConfig, read_secret};

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// Tenant, set at `jwt.tenant_claim`; all digits (no leading zero) becomes a JSON integer.
    pub tenant: String,
    /// `sub`, when given.
    pub subject: Option<String>,
    /// Role, set at `jwt.role_claim` (which must then be configured).
    pub role: Option<String>,
    /// Lifetime: `exp = now + ttl` (whole seconds).
    pub ttl: Duration,
    /// `--claim k=v` pairs, top-level claims; `v` is parsed as JSON when it parses, else taken
    /// as a string. They override `iat`/`exp`/`sub`/`iss`/`aud` (to mint an expired token, say),
    /// but not the tenant or role.
    pub extra: Vec<(String, String)>,
}

/// Why no token could be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// A key or setting is unusable (the message names it).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// None of `jwt.algorithms` has a signing key.
    #[error(
        "no signing key for jwt.algorithms: set jwt.secret or jwt.secret_file (HS*), \
         or jwt.private_key_file (RS*, PS*, ES*, EdDSA)"
    )]
    NoSigningKey,
    /// A claim cannot be set as asked.
    #[error("claim {path}: {reason}")]
    Claim {
        /// Dotted claim path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The crypto library refused to sign.
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Signs a token for `req` with the first algorithm of `jwt.algorithms` that has a key: HS* with
/// the secret, the others with `jwt.private_key_file`. When `jwt.jwks_file` is set, the header
/// gets the `kid` of the JWKS key that verifies the signature.
pub fn mint(cfg: &JwtConfig, req: &MintRequest) -> Result<String, MintError> {
    let algorithms = parse_algorithms(&cfg.algorithms)?;
    let claims = build_claims(cfg, req, now_unix())?;
    let secret_key = if cfg.secret_file.is_some() { "jwt.secret_file" } else { "jwt.secret" };
    let secret = read_secret(secret_key, &cfg.secret, &cfg.secret_file)?.filter(|s| !s.is_empty());
    let private = match &cfg.private_key_file {
        None => None,
        Some(path) => Some(std::fs::read(path).map_err(|e| private_key_error(path, e.to_string()))?),
    };
    let mut refused = Vec::new();
    for alg in algorithms {
        let key = match (kind_for(alg), &secret, &private) {
            (Kind::Hmac, Some(secret), _) => Ok(EncodingKey::from_secret(secret.as_bytes())),
            (Kind::Hmac, None, _) | (_, _, None) => continue,
            (Kind::Rsa, _, Some(pem)) => EncodingKey::from_rsa_pem(pem),
            (Kind::P256 | Kind::P384, _, Some(pem)) => EncodingKey::from_ec_pem(pem),
            (Kind::Ed25519, _, Some(pem)) => EncodingKey::from_ed_pem(pem),
        };
        // A key of another type (or curve) fails here or when signing: try the next algorithm.
        match key.and_then(|key| jsonwebtoken::encode(&Header::new(alg), &claims, &key).map(|t| (key, t))) {
            Ok((key, token)) => return with_kid(cfg, alg, &key, &claims, token),
            Err(_) => refused.push(alg_name(alg)),
        }
    }
    match (&cfg.private_key_file, refused.is_empty()) {
        (Some(path), false) => {
            Err(private_key_error(path, format!("not a PEM private key usable with {}", refused.join(", "))).into())
        }
        _ => Err(MintError::NoSigningKey),
    }
}

fn private_key_error(path: &std::path::Path, reason: String) -> ConfigError {
    ConfigError::File { key: "jwt.private_key_file", path: PathBuf::from(path), reason }
}

/// Re-signs with the `kid` of the JWKS key that verifies `token`, when there is one.
fn with_kid(
    cfg: &JwtConfig,
    alg: Algorithm,
    key: &EncodingKey,
    claims: &Value,
    token: String,
) -> Result<String, MintError> {
    let Some(path) = &cfg.jwks_file else {
        return Ok(token);
    };
    let parts = token::split(&token).map_err(|e| MintError::Sign(e.to_string()))?;
    let kid = load_jwks(path)?.into_iter().find_map(|(kid, k)| {
        let ok = k.accepts(alg)
            && jsonwebtoken::crypto::verify(parts.signature, parts.message.as_bytes(), &k.key, alg).unwrap_or(false);
        if ok { kid } else { None }
    });
    let Some(kid) = kid else { return Ok(token) };
    let header = Header { kid: Some(kid), ..Header::new(alg) };
    jsonwebtoken::encode(&header, claims, key).map_err(|e| MintError::Sign(e.to_string()))
}

/// The claims object: registered claims, then the extras, then tenant and role at their paths.
fn build_claims(cfg: &JwtConfig, req: &MintRequest, now: u64) -> Result<Value, MintError> {
    let mut map = Map::new();
    if let Some(sub) = &req.subject {
        map.insert("sub".into(), Value::String(sub.clone()));
    }
    map.insert("iat".into(), now.into());
    map.insert("exp".into(), now.saturating_add(req.ttl.as_secs()).into());
    if let Some(iss) = &cfg.issuer {
        map.insert("iss".into(), Value::String(iss.clone()));
    }
    if let Some(aud) = &cfg.audience {
        map.insert("aud".into(), Value::String(aud.clone()));
    }
    for (name, raw) in &req.extra {
        if name.is_empty() {
            return Err(MintError::Claim { path: String::new(), reason: "the claim name is empty".into() });
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        map.insert(name.clone(), value);
    }
    let mut claims = Value::Object(map);
    if req.tenant.is_empty() {
        return Err(MintError::Claim { path: cfg.tenant_claim.clone(), reason: "the tenant is empty".into() });
    }
    set_path(&mut claims, &cfg.tenant_claim, tenant_value(&req.tenant))?;
    if let Some(role) = &req.role {
        if cfg.role_claim.is_empty() {
            return Err(MintError::Claim { path: "role".into(), reason: "jwt.role_claim is not set".into() });
        }
        set_path(&mut claims, &cfg.role_claim, Value::String(role.clone()))?;
    }
    Ok(claims)
}

/// Digits without a leading zero become an integer (so the verifier renders the same string).
fn tenant_value(tenant: &str) -> Value {
    let canonical = tenant.bytes().all(|b| b.is_ascii_digit()) && (tenant == "0" || !tenant.starts_with('0'));
    match tenant.parse::<u64>() {
        Ok(n) if canonical => Value::from(n),
        _ => Value::String(tenant.to_string()),
    }
}

/// Sets `value` at claim path `path` (see `auth::path`), creating the objects on the way.
fn set_path(root: &mut Value, path: &str, value: Value) -> Result<(), MintError> {
    let parsed = ClaimPath::parse(path).map_err(|reason| MintError::Claim { path: path.to_string(), reason })?;
    parsed.set(root, value).map_err(|upto| MintError::Claim { path: upto, reason: "is not an object".into() })
}
