//! Verification keys: loaded from `jwt.secret`/`secret_file`, `jwt.public_key_file` and
//! `jwt.jwks_file` when the configuration is (at start and at each reload), or fetched from
//! `jwt.jwks_url` (see `remote`), then chosen per token by algorithm family and `kid`.
//!
//! Each key knows exactly which algorithms it may verify (its kind, and a JWK's `alg` when set),
//! so an HMAC token is only ever checked against the HMAC secret: the classic HS/RS confusion
//! (an HS256 token "signed" with the RSA public key) finds no HMAC key, or the wrong one.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};

use super::AuthError;
use super::error::shown;
use super::key::{JwkSet, Key, Kind, alg_name, kind_for};
use super::keyfiles::{load_jwks, load_public_pem};
use super::remote::{RemoteJwks, RemoteSpec};
use crate::config::{ConfigError, JwtConfig, read_secret};

/// Where the JWKS keys come from.
#[derive(Clone, Debug)]
pub(crate) enum Jwks {
    /// `jwt.jwks_file` (empty without one), read when the configuration was.
    Static(Arc<JwkSet>),
    /// `jwt.jwks_url`, refreshed while the proxy runs.
    Remote(Arc<RemoteJwks>),
}

impl Default for Jwks {
    fn default() -> Self {
        Jwks::Static(Arc::default())
    }
}

/// Every configured key.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyStore {
    secret: Option<Key>,
    public: Option<Key>,
    jwks: Jwks,
}

impl KeyStore {
    /// Loads every configured key; errors name the key and the file. A `jwks_url` whose spec
    /// equals `previous`'s keeps that cached set (no fetch); a new one is fetched by
    /// [`KeyStore::remote`]'s `prime`.
    pub(crate) fn load(cfg: &JwtConfig, previous: Option<&KeyStore>) -> Result<Self, ConfigError> {
        let secret_key = if cfg.secret_file.is_some() { "jwt.secret_file" } else { "jwt.secret" };
        let secret = match read_secret(secret_key, &cfg.secret, &cfg.secret_file)? {
            None => None,
            Some(s) if s.is_empty() => {
                return Err(ConfigError::Invalid { key: secret_key, reason: "must not be empty".into() });
            }
            Some(s) => {
                if s.len() < 32 {
                    tracing::warn!("{secret_key}: shorter than 32 bytes; HS256 wants at least 32 random bytes");
                }
                Some(Key { kind: Kind::Hmac, alg: None, key: DecodingKey::from_secret(s.as_bytes()) })
            }
        };
        let public = cfg.public_key_file.as_deref().map(load_public_pem).transpose()?;
        let jwks = match RemoteSpec::from_config(cfg)? {
            Some(spec) => match previous.and_then(KeyStore::remote).filter(|r| *r.spec() == spec) {
                Some(same) => Jwks::Remote(same.clone()),
                None => Jwks::Remote(RemoteJwks::new(spec)?),
            },
            None => Jwks::Static(Arc::new(cfg.jwks_file.as_deref().map(load_jwks).transpose()?.unwrap_or_default())),
        };
        Ok(Self { secret, public, jwks })
    }

    /// The `jwks_url` key set, when configured.
    pub(crate) fn remote(&self) -> Option<&Arc<RemoteJwks>> {
        match &self.jwks {
            Jwks::Remote(remote) => Some(remote),
            Jwks::Static(_) => None,
        }
    }

    /// The JWKS keys as of now; pass them to [`KeyStore::select`].
    pub(crate) fn jwks(&self) -> Arc<JwkSet> {
        match &self.jwks {
            Jwks::Static(keys) => keys.clone(),
            Jwks::Remote(remote) => remote.keys(),
        }
    }

    /// Whether some key can verify `alg`.
    pub(crate) fn has_key_for(&self, alg: Algorithm) -> bool {
        let fixed = [&self.secret, &self.public].into_iter().flatten();
        let jwks = self.jwks();
        fixed.chain(jwks.iter().map(|(_, k)| k)).any(|k| k.accepts(alg))
    }

    /// Picks the key for a token. With a JWKS, a `kid` must name one of its keys; without a `kid`,
    /// the secret (HS*) or the PEM public key is used when it fits, else the JWKS's only key.
    /// `jwks` is [`KeyStore::jwks`]'s snapshot, taken once per token.
    pub(crate) fn select<'a>(
        &'a self,
        jwks: &'a JwkSet,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<&'a DecodingKey, AuthError> {
        if let (Some(kid), false) = (kid, jwks.is_empty()) {
            let (_, key) = jwks
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .ok_or_else(|| AuthError::UnknownKid(shown(kid)))?;
            if !key.accepts(alg) {
                return Err(AuthError::KeyMismatch { kid: shown(kid), alg: alg_name(alg) });
            }
            return Ok(&key.key);
        }
        let fixed = if kind_for(alg) == Kind::Hmac { &self.secret } else { &self.public };
        if let Some(key) = fixed.as_ref().filter(|k| k.accepts(alg)) {
            return Ok(&key.key);
        }
        match jwks.as_slice() {
            [(_, key)] if key.accepts(alg) => Ok(&key.key),
            [] | [_] => Err(AuthError::NoKey(alg_name(alg))),
            _ => Err(AuthError::MissingKid),
        }
    }
}
