//! Strict mode (docs/security.md, "Strict mode"): the signed context value that
//! `migrations/0003_strict_mode.sql` verifies inside PostgreSQL.
//!
//! Format, version 1 (four fields separated by `.`, none of which contains `.`):
//!
//! ```text
//! v1.<kid>.<base64url(payload)>.<base64url(HMAC-SHA256(key, "v1.<kid>.<base64url(payload)>"))>
//! payload = {"tenant":"1","role":null,"exp":1795678255}
//! ```
//!
//! base64url is RFC 4648 section 5 without padding; `exp` is in unix seconds and the
//! database accepts the value while its transaction's `now()` is before it. The HMAC
//! covers the exact text before the last `.`, so the payload needs no canonical JSON.
//! The key id must match [`is_valid_kid`] (the SQL side refuses anything else), and
//! the key must be one of `rlsproxy_private.keys` under that id.

use aws_lc_rs::hmac;
use serde_json::Value;

/// Version prefix of the format.
pub const VERSION: &str = "v1";

/// Default name of the setting the proxy puts the signed value in (read by
/// `rlsproxy.verified_context()`).
pub const DEFAULT_SETTING: &str = "rlsproxy.signed_context";

/// Shortest key `rlsproxy_private.keys` accepts (its `keys_secret_length` check), in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Longest key id `rlsproxy_private.keys` accepts (its `keys_kid_format` check).
pub const MAX_KID_LEN: usize = 64;

/// A key id the SQL side accepts: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Decodes a key written as hex (as `openssl rand -hex 32` prints it; surrounding
/// whitespace ignored). `None` when it is not hex or shorter than [`MIN_KEY_LEN`] bytes.
pub fn key_from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if !text.len().is_multiple_of(2) || text.len() / 2 < MIN_KEY_LEN {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let digit = |c: u8| char::from(c).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// Signs a context for `tenant` (and `role`, `None` for no role) valid until `exp`
/// (unix seconds) with `key` under the id `kid`.
///
/// Computes the HMAC key schedule on every call; [`Signer`] keeps it.
pub fn sign(kid: &str, key: &[u8], tenant: &str, role: Option<&str>, exp: u64) -> String {
    Signer::new(kid, key).sign(tenant, role, exp)
}

/// A key id and its HMAC key, ready to sign many values.
pub struct Signer {
    kid: String,
    key: hmac::Key,
}

impl Signer {
    /// A signer for `key` under the id `kid` (check it with [`is_valid_kid`]: with any
    /// other id the database verifies nothing, so every strict policy matches no row).
    pub fn new(kid: &str, key: &[u8]) -> Self {
        Self { kid: kid.to_owned(), key: hmac::Key::new(hmac::HMAC_SHA256, key) }
    }

    /// The key id this signer signs with.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// See [`sign`].
    pub fn sign(&self, tenant: &str, role: Option<&str>, exp: u64) -> String {
        let payload = payload_json(tenant, role, exp);
        let mut value = format!("{VERSION}.{}.{}", self.kid, base64url(payload.as_bytes()));
        let tag = hmac::sign(&self.key, value.as_bytes());
        value.push('.');
        value.push_str(&base64url(tag.as_ref()));
        value
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// `{"tenant":<string>,"role":<string or null>,"exp":<number>}`, strings escaped by serde_json.
fn payload_json(tenant: &str, role: Option<&str>, exp: u64) -> String {
    let tenant = Value::from(tenant);
    let role = role.map_or(Value::Null, Value::from);
    format!("{{\"tenant\":{tenant},\"role\":{role},\"exp\":{exp}}}")
}

/// RFC 4648 section 5 base64url, no padding.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // n input bytes carry n + 1 characters' worth of bits.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(group >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes 0x00..=0x1f.
    fn test_key() -> Vec<u8> {
        (0u8..32).collect()
    }

    // Known answers computed with the openssl CLI, independently of this code:
    //   b64u() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
    //   KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    //   PL=$(printf '%s' '{"tenant":"1","role":null,"exp":1795678255}' | b64u)
    //   printf '%s' "v1.k1.$PL" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -binary | b64u
    #[test]
    fn known_answer_without_role() {
        assert_eq!(
            sign("k1", &test_key(), "1", None, 1_795_678_255),
            "v1.k1.eyJ0ZW5hbnQiOiIxIiwicm9sZSI6bnVsbCwiZXhwIjoxNzk1Njc4MjU1fQ\
             .apz3tO1SnQ1DXMbboKkoVM0-qvoXh2KcdjLLvs33ltM"
        );
    }

    #[test]
    fn known_answer_with_role() {
        // PL from '{"tenant":"acme-42","role":"admin_role","exp":4102444800}', kid key-2024_b.
        assert_eq!(
            sign("key-2024_b", &test_key(), "acme-42", Some("admin_role"), 4_102_444_800),
            "v1.key-2024_b.eyJ0ZW5hbnQiOiJhY21lLTQyIiwicm9sZSI6ImFkbWluX3JvbGUiLCJleHAiOjQxMDI0NDQ4MDB9\
             .5auI41Me1DMVcHcrQnpOtKheC3_4zgp57MN7E9ZATFw"
        );
    }

    #[test]
    fn signer_matches_sign_and_hides_the_key() {
        let signer = Signer::new("k1", &test_key());
        assert_eq!(signer.sign("7", Some("r"), 5), sign("k1", &test_key(), "7", Some("r"), 5));
        assert_eq!(signer.kid(), "k1");
        assert_eq!(format!("{signer:?}"), "Signer { kid: \"k1\", .. }");
    }

    #[test]
    fn shape_is_four_dot_separated_base64url_fields() {
        let value = sign("k1", &test_key(), "t\"\\\u{e9}.\n", Some("r.o"), u64::MAX);
        let fields: Vec<&str> = value.split('.').collect();
        assert_eq!(fields.len(), 4, "{value}");
        assert_eq!(fields[0], "v1");
        assert_eq!(fields[1], "k1");
        assert_eq!(fields[3].len(), 43, "a SHA-256 MAC is 43 base64url characters");
        let url_safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        assert!(url_safe(fields[2]) && url_safe(fields[3]), "{value}");
    }

    #[test]
    fn payload_is_json_with_escaped_strings() {
        let json = payload_json("a\"b\\c\u{e9}\n", None, 0);
        assert_eq!(json, r#"{"tenant":"a\"b\\cé\n","role":null,"exp":0}"#);
        let parsed: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["tenant"], "a\"b\\c\u{e9}\n");
        assert_eq!(payload_json("1", Some("admin"), 42), r#"{"tenant":"1","role":"admin","exp":42}"#);
        assert_eq!(payload_json("1", None, u64::MAX), format!(r#"{{"tenant":"1","role":null,"exp":{}}}"#, u64::MAX));
    }

    #[test]
    fn base64url_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), expected, "{input:?}");
        }
        // The two characters where base64url differs from base64 (`+/`).
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0xff, 0xff, 0xff]), "____");
    }

    #[test]
    fn kid_rules_match_the_sql_check() {
        for kid in ["k1", "key-2024_b", "A", &"x".repeat(64)] {
            assert!(is_valid_kid(kid), "{kid}");
        }
        for kid in ["", "k.1", "k 1", "k/1", "k+1", "ké", &"x".repeat(65)] {
            assert!(!is_valid_kid(kid), "{kid}");
        }
    }

    #[test]
    fn hex_keys() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
        assert_eq!(key_from_hex(&format!("  {hex}\n")), Some(test_key()));
        assert_eq!(key_from_hex(&hex[..62]), None, "31 bytes is too short");
        assert_eq!(key_from_hex(&hex[..63]), None, "odd length");
        assert_eq!(key_from_hex(&hex.replace('0', "g")), None, "not hex");
        assert_eq!(key_from_hex(&format!("{hex}+0")), None, "not hex");
    }
}
