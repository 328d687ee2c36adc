//! The compact JWS shape: three base64url parts, a JSON header, a JSON payload.
//!
//! Parsed here rather than by jsonwebtoken so that an `alg` jsonwebtoken does not know (`none`,
//! `HS1`) gets a precise "not allowed" error, and so that `kid` is known before a key is chosen.

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::AuthError;

/// A token split into its parts, with the header decoded.
pub(crate) struct Parts<'a> {
    /// `alg` from the header, as written.
    pub alg: String,
    /// `kid` from the header.
    pub kid: Option<String>,
    /// `base64(header) "." base64(payload)`: the signed bytes.
    pub message: &'a str,
    /// The base64url payload.
    pub payload: &'a str,
    /// The base64url signature.
    pub signature: &'a str,
}

/// Splits a token and decodes its header; the signature is not checked here.
pub(crate) fn split(token: &str) -> Result<Parts<'_>, AuthError> {
    let mut it = token.split('.');
    let (header, payload, signature) = match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => (h, p, s),
        _ => {
            return Err(AuthError::Malformed("expected three base64url parts separated by dots"));
        }
    };
    let message = &token[..header.len() + 1 + payload.len()];
    let header: Value = b64url_decode(header)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(AuthError::Malformed("header is not base64url-encoded JSON"))?;
    let Value::Object(header) = header else {
        return Err(AuthError::Malformed("header is not a JSON object"));
    };
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(AuthError::Malformed("header has no alg string")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed("header kid is not a string")),
    };
    // RFC 7515 4.1.11: extensions listed in `crit` must be understood; this verifier knows none.
    if header.contains_key("crit") {
        return Err(AuthError::Malformed("header has crit extensions"));
    }
    Ok(Parts { alg, kid, message, payload, signature })
}

/// Decodes the payload into a JSON object.
pub(crate) fn payload(parts: &Parts<'_>) -> Result<serde_json::Map<String, Value>, AuthError> {
    let value: Value = b64url_decode(parts.payload)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(AuthError::Malformed("payload is not base64url-encoded JSON"))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(AuthError::Malformed("payload is not a JSON object")),
    }
}

/// Parses an algorithm name as written in `jwt.algorithms` and in headers (case-sensitive).
pub(crate) fn parse_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Every algorithm name [`parse_alg`] accepts, for error messages.
pub(crate) const ALG_NAMES: &str = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Decodes unpadded base64url (RFC 7515 section 2); `None` on any other character or length.
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
