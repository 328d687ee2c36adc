//! Reading key files: `jwt.public_key_file` (PEM; RSA, EC or Ed25519 detected) and
//! `jwt.jwks_file` (a JWKS document), with errors that name the key, the file and the fault.

use std::path::Path;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use serde_json::Value;

use super::error::shown;
use super::key::{JwkSet, Key, Kind, alg_name, kind_for};
use super::token::{b64url_decode, parse_alg};
use crate::config::ConfigError;

const NOT_PUBLIC_PEM: &str = "not a PEM RSA/EC/Ed25519 public key";
const MIN_RSA_BITS: usize = 2048;

/// Loads `jwt.public_key_file`, detecting RSA, EC (P-256, P-384) or Ed25519.
pub(crate) fn load_public_pem(path: &Path) -> Result<Key, ConfigError> {
    let err = |reason: String| ConfigError::File { key: "jwt.public_key_file", path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let label = text.split_once("-----BEGIN ").and_then(|(_, rest)| rest.split_once("-----")).map(|(label, _)| label);
    match label {
        Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
        Some(l) if l.ends_with("PRIVATE KEY") => {
            return Err(err("is a private key; give the public key (openssl pkey -pubout)".into()));
        }
        Some("CERTIFICATE") => {
            return Err(err("is a certificate; give its public key (openssl x509 -pubkey -noout)".into()));
        }
        _ => return Err(err(NOT_PUBLIC_PEM.into())),
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
        let bits = rsa_modulus_bits(key.as_bytes()).ok_or_else(|| err(NOT_PUBLIC_PEM.into()))?;
        if bits < MIN_RSA_BITS {
            return Err(err(format!("RSA key of {bits} bits; at least {MIN_RSA_BITS} are required")));
        }
        return Ok(Key { kind: Kind::Rsa, alg: None, key });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&bytes) {
        // The uncompressed point 04 || x || y: 65 bytes on P-256, 97 on P-384.
        let kind = match key.as_bytes().len() {
            65 => Kind::P256,
            97 => Kind::P384,
            _ => {
                return Err(err("EC key on an unsupported curve; use P-256 or P-384".into()));
            }
        };
        return Ok(Key { kind, alg: None, key });
    }
    match DecodingKey::from_ed_pem(&bytes) {
        Ok(key) if key.as_bytes().len() == 32 => Ok(Key { kind: Kind::Ed25519, alg: None, key }),
        _ => Err(err(NOT_PUBLIC_PEM.into())),
    }
}

/// Loads `jwt.jwks_file` (see [`parse_jwks`]).
pub(crate) fn load_jwks(path: &Path) -> Result<JwkSet, ConfigError> {
    let err = |reason: String| ConfigError::File { key: "jwt.jwks_file", path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_jwks(&text, "jwt.jwks_file").map_err(err)
}

/// Parses a JWKS document (from `jwt.jwks_file` or `jwt.jwks_url`, named by `source` in
/// warnings). Encryption keys (`use: enc`, RSA-OAEP…) and P-521 keys are skipped with a
/// warning; any other unusable key is an error naming its index and `kid`.
pub(crate) fn parse_jwks(text: &str, source: &str) -> Result<JwkSet, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let raw_keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "not a JWKS document: no \"keys\" array".to_string())?;
    let mut keys: JwkSet = Vec::new();
    for (i, raw) in raw_keys.iter().enumerate() {
        let kid = raw.get("kid").and_then(Value::as_str).map(str::to_string);
        let label = match &kid {
            Some(kid) => format!("key {i} (kid {})", shown(kid)),
            None => format!("key {i}"),
        };
        if raw.get("use").and_then(Value::as_str) == Some("enc") {
            tracing::warn!("{source}: {label}: skipped, an encryption key");
            continue;
        }
        let key = match jwk_key(raw) {
            Ok(Some(key)) => key,
            Ok(None) => {
                tracing::warn!("{source}: {label}: skipped, not a signature algorithm or curve rlsproxy supports");
                continue;
            }
            Err(reason) => return Err(format!("{label}: {reason}")),
        };
        if kid.is_some() && keys.iter().any(|(k, _)| *k == kid) {
            return Err(format!("{label}: the kid is used twice"));
        }
        keys.push((kid, key));
    }
    if keys.is_empty() {
        return Err("holds no usable signature key".into());
    }
    Ok(keys)
}

/// One JWK as a key; `Ok(None)` for keys that are valid but not for us.
fn jwk_key(raw: &Value) -> Result<Option<Key>, String> {
    let jwk: Jwk = serde_json::from_value(raw.clone())
        .map_err(|_| "not an RSA, EC, OKP or oct key with all its parameters".to_string())?;
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => match parse_alg(&ka.to_string()) {
            Some(alg) => Some(alg),
            None => return Ok(None),
        },
    };
    let decode = |field: &str, v: &str| b64url_decode(v).ok_or(format!("{field} is not base64url"));
    let bad = |e: jsonwebtoken::errors::Error| e.to_string();
    let (kind, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let bits = modulus_bits(&decode("n", &p.n)?);
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"));
            }
            decode("e", &p.e)?;
            (Kind::Rsa, DecodingKey::from_rsa_components(&p.n, &p.e).map_err(bad)?)
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (kind, len) = match p.curve {
                EllipticCurve::P256 => (Kind::P256, 32),
                EllipticCurve::P384 => (Kind::P384, 48),
                EllipticCurve::P521 => return Ok(None),
                EllipticCurve::Ed25519 => return Err("kty EC with crv Ed25519; use kty OKP".into()),
            };
            if decode("x", &p.x)?.len() != len || decode("y", &p.y)?.len() != len {
                return Err(format!("x and y must be {len} bytes for this curve"));
            }
            (kind, DecodingKey::from_ec_components(&p.x, &p.y).map_err(bad)?)
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Ok(None);
            }
            if decode("x", &p.x)?.len() != 32 {
                return Err("x must be 32 bytes for Ed25519".into());
            }
            (Kind::Ed25519, DecodingKey::from_ed_components(&p.x).map_err(bad)?)
        }
        AlgorithmParameters::OctetKey(p) => {
            if decode("k", &p.value)?.is_empty() {
                return Err("k must not be empty".into());
            }
            (Kind::Hmac, DecodingKey::from_jwk(&jwk).map_err(bad)?)
        }
    };
    if let Some(alg) = alg.filter(|a| kind_for(*a) != kind) {
        return Err(format!("alg {} does not fit this key", alg_name(alg)));
    }
    Ok(Some(Key { kind, alg, key }))
}

/// Bit length of an RSA modulus given as an RSAPublicKey DER (PKCS#1).
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (tag, seq, _) = der_tlv(der)?;
    let (int_tag, n, _) = der_tlv(seq)?;
    (tag == 0x30 && int_tag == 0x02).then(|| modulus_bits(n))
}

/// Bit length of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    n.first().map_or(0, |first| n.len() * 8 - first.leading_zeros() as usize)
}

/// Splits one DER tag-length-value off `b`: (tag, value, rest).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
        0x82 => (usize::from(*rest.first()?) << 8 | usize::from(*rest.get(1)?), rest.get(2..)?),
        _ => return None,
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}
