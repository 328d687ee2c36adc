//! JWT verification: the password a client sends is a JWT, and what it proves becomes the
//! [`TenantContext`] injected at every transaction start. Anything doubtful is refused, with a
//! message that tells the client why without ever echoing the token.
//!
//! Layout:
//! - `mod.rs`: [`Verifier`] (built once from [`JwtConfig`]) and [`TenantContext`];
//! - `error.rs`: [`AuthError`], one variant per failure, with its SQLSTATE;
//! - `token.rs`: splitting the compact form and reading the header (`alg`, `kid`);
//! - `keys.rs`: the configured keys, and choosing one per token by algorithm and `kid`;
//! - `keyfiles.rs`: reading PEM public keys and JWKS documents;
//! - `remote/`: `jwt.jwks_url`, fetched over HTTPS, cached, refreshed (`fetch.rs`: one GET);
//! - `claims.rs`: `exp`/`nbf`/`iss`/`aud` and the tenant and role claims;
//! - `mint.rs`: [`mint`], signing development tokens for `rlsproxy token`.
//!
//! Order of checks in [`Verifier::verify`]: length, shape and header, algorithm allow-list, key
//! choice, signature, then claims. Nothing in the payload is looked at before the signature
//! holds.

mod claims;
mod error;
mod key;
mod keyfiles;
mod keys;
mod mint;
mod path;
mod remote;
mod tenant_format;
mod token;

#[cfg(test)]
mod tests;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;

pub use error::{AuthError, SQLSTATE_INVALID_AUTHORIZATION, SQLSTATE_INVALID_PASSWORD};
pub use mint::{MintError, MintRequest, mint};

use crate::config::{ConfigError, JwtConfig};
use error::shown;

/// Longest token accepted (16 KiB). Real tokens are well under 4 KiB; the limit bounds the work an
/// unauthenticated peer can cause, and is checked before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What a verified token says about the client: who it acts for.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantContext {
    /// The tenant claim; an integer claim is rendered in decimal.
    pub tenant: String,
    /// The role claim when `jwt.role_claim` is set and the token has it (always in
    /// `jwt.allowed_roles`).
    pub role: Option<String>,
    /// The whole claims object as received (for `request.jwt.claims`-style injection).
    pub claims: serde_json::Value,
    /// `exp`, unix seconds; the session re-checks it at each transaction start.
    pub expires_at: Option<u64>,
    /// `sub`, when it is a string.
    pub subject: Option<String>,
}

impl TenantContext {
    /// True when `exp` (plus leeway) is in the past at `now` (unix seconds), i.e. when
    /// `now >= exp + leeway_s`, the rule [`Verifier::verify`] applies. A token without `exp`
    /// never expires.
    pub fn is_expired_at(&self, now: u64, leeway_s: u64) -> bool {
        self.expires_at.is_some_and(|exp| claims::expired(exp, now, leeway_s))
    }
}

/// Verifies tokens against one `[jwt]` configuration; built at start and at each reload (all key
/// files are read then) and shared by every connection. Connections that are already open keep
/// the identity a verifier gave them; only new ones meet a reloaded verifier.
#[derive(Debug, Clone)]
pub struct Verifier {
    algorithms: Vec<Algorithm>,
    keys: keys::KeyStore,
    rules: claims::Rules,
}

impl Verifier {
    /// Loads every key file and checks that every algorithm of `jwt.algorithms` has a key, so
    /// that a configuration mistake stops the proxy at start, with the key at fault named.
    /// With `jwt.jwks_url` nothing is fetched here: see [`Verifier::ready`].
    pub fn from_config(cfg: &JwtConfig) -> Result<Self, ConfigError> {
        Self::build(cfg, None)
    }

    /// As [`Verifier::from_config`]; a `jwks_url` configured exactly as in `previous` keeps
    /// `previous`'s cached key set (a reload does not fetch it again).
    pub fn build(cfg: &JwtConfig, previous: Option<&Verifier>) -> Result<Self, ConfigError> {
        let algorithms = parse_algorithms(&cfg.algorithms)?;
        let keys = keys::KeyStore::load(cfg, previous.map(|v| &v.keys))?;
        let verifier = Self { algorithms, keys, rules: claims::Rules::new(cfg)? };
        if verifier.keys.remote().is_none() {
            verifier.check_algorithms()?;
        }
        Ok(verifier)
    }

    /// Makes the verifier usable: with `jwt.jwks_url`, the first fetch (unless the set was
    /// kept from the previous configuration) and the algorithm check against its keys. Without
    /// it, nothing to do.
    pub async fn ready(&self) -> Result<(), ConfigError> {
        if let Some(remote) = self.keys.remote() {
            remote.prime().await?;
            self.check_algorithms()?;
        }
        Ok(())
    }

    fn check_algorithms(&self) -> Result<(), ConfigError> {
        match self.algorithms.iter().find(|a| !self.keys.has_key_for(**a)) {
            Some(alg) => Err(ConfigError::Invalid {
                key: "jwt.algorithms",
                reason: format!("{} has no key; {}", key::alg_name(*alg), key::key_hint(*alg)),
            }),
            None => Ok(()),
        }
    }

    /// Verifies `token` now; with `jwt.jwks_url`, a `kid` the cached set lacks first triggers a
    /// (rate-limited) refresh of the set, and the token is verified again against it.
    pub async fn verify_or_refresh(&self, token: &str) -> Result<TenantContext, AuthError> {
        let first = self.verify(token);
        match (&first, self.keys.remote()) {
            (Err(AuthError::UnknownKid(_)), Some(remote)) if remote.refresh_for_unknown_kid().await => {
                self.verify(token)
            }
            _ => first,
        }
    }

    /// Verifies `token` now.
    pub fn verify(&self, token: &str) -> Result<TenantContext, AuthError> {
        self.verify_at(token, now_unix())
    }

    /// Verifies `token` as if the clock read `now` (unix seconds).
    pub(crate) fn verify_at(&self, token: &str, now: u64) -> Result<TenantContext, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong { max: MAX_TOKEN_LEN });
        }
        let parts = token::split(token)?;
        let alg = token::parse_alg(&parts.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| AuthError::AlgorithmNotAllowed(shown(&parts.alg)))?;
        let jwks = self.keys.jwks();
        let key = self.keys.select(&jwks, alg, parts.kid.as_deref())?;
        match jsonwebtoken::crypto::verify(parts.signature, parts.message.as_bytes(), key, alg) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(AuthError::BadSignature),
        }
        self.rules.check(token::payload(&parts)?, now)
    }

    /// Clock skew allowed for `exp`/`nbf` (`jwt.leeway_s`); the session uses it with
    /// [`TenantContext::is_expired_at`].
    pub fn leeway_s(&self) -> u64 {
        self.rules.leeway_s
    }
}

/// Parses `jwt.algorithms`, naming the first unknown entry.
pub(crate) fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::Invalid { key: "jwt.algorithms", reason: "list at least one algorithm".into() });
    }
    names
        .iter()
        .map(|name| {
            token::parse_alg(name).ok_or_else(|| ConfigError::Invalid {
                key: "jwt.algorithms",
                reason: format!("unknown algorithm {name:?}; use {}", token::ALG_NAMES),
            })
        })
        .collect()
}

/// Seconds since the epoch (0 if the clock reads before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
