//! One verification key, the kind of key each algorithm needs, and a key set: the types the
//! key store (`keys`), the key files (`keyfiles`) and the fetched key sets (`remote`) share.

use jsonwebtoken::{Algorithm, DecodingKey};

/// The kind of key an algorithm needs; EC keys are split by curve because ES256 and ES384 each
/// work with one curve only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Hmac,
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// The key kind `alg` verifies with.
pub(crate) fn kind_for(alg: Algorithm) -> Kind {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Kind::Hmac,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Kind::Rsa,
        Algorithm::ES256 => Kind::P256,
        Algorithm::ES384 => Kind::P384,
        Algorithm::EdDSA => Kind::Ed25519,
    }
}

/// How to configure a key for `alg`, for the "has no key" start-up error.
pub(crate) fn key_hint(alg: Algorithm) -> &'static str {
    match kind_for(alg) {
        Kind::Hmac => "set jwt.secret or jwt.secret_file",
        Kind::Rsa => "set jwt.public_key_file or jwt.jwks_file to an RSA key",
        Kind::P256 => "set jwt.public_key_file or jwt.jwks_file to a P-256 EC key",
        Kind::P384 => "set jwt.public_key_file or jwt.jwks_file to a P-384 EC key",
        Kind::Ed25519 => "set jwt.public_key_file or jwt.jwks_file to an Ed25519 key",
    }
}

/// The header name of `alg`.
pub(crate) fn alg_name(alg: Algorithm) -> String {
    format!("{alg:?}")
}

/// One usable verification key.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    /// What the key is.
    pub kind: Kind,
    /// A JWK's `alg`: when set, the only algorithm this key verifies.
    pub alg: Option<Algorithm>,
    /// The key material.
    pub key: DecodingKey,
}

impl Key {
    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.kind == kind_for(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// A key set: each key with its `kid`, if any.
pub(crate) type JwkSet = Vec<(Option<String>, Key)>;
