//! What an operator or a client hands the proxy as text: the PasswordMessage that carries
//! the JWT, and the configuration file.

use std::sync::OnceLock;

use aws_lc_rs::hmac;

use crate::auth::Verifier;
use crate::config::Config;
use crate::policy::guard::Guard;
use crate::protocol::read_cstr;

/// The moment tokens are verified at: fixed, so that a crash reproduces.
const NOW: u64 = 1_750_000_000;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        // The configuration is ours and valid; a failure is a bug in this module.
        #[allow(clippy::expect_used)]
        Verifier::from_config(&super::config().jwt).expect("fuzzing verifier")
    })
}

/// Feeds `data` (first byte: mode; the rest: a PasswordMessage body) to token verification
/// as the handshake does. Mode odd: the token's header and payload are signed again with the
/// configured key first, so that every claim check after the signature is reached too.
pub fn jwt_password(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else { return };
    let Some(token) = read_cstr(body).and_then(|(t, _)| std::str::from_utf8(t).ok()).filter(|t| !t.is_empty()) else {
        return;
    };
    let token = match (mode & 1, token.rsplit_once('.')) {
        (1, Some((signed, _))) => format!("{signed}.{}", sign(signed.as_bytes())),
        _ => token.to_owned(),
    };
    if let Ok(context) = verifier().verify_at(&token, NOW) {
        assert!(!context.tenant.is_empty(), "a verified token without a tenant");
    }
}

/// The HS256 signature of `message` under the fuzzing key, base64url without padding.
fn sign(message: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let secret = super::config().jwt.secret.clone().unwrap_or_default();
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), message);
    let mut out = String::new();
    for chunk in tag.as_ref().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Feeds `data` as a configuration file's text: parsed and validated, and when valid, the
/// parts built from it that read no file and no network (the guard; the token verifier when
/// its keys are inline).
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = Config::from_toml(text) else { return };
    let _ = Guard::from_config(&cfg);
    let jwt = &cfg.jwt;
    let reads_files =
        [&jwt.secret_file, &jwt.public_key_file, &jwt.jwks_file, &jwt.jwks_ca_file, &jwt.private_key_file]
            .iter()
            .any(|f| f.is_some());
    if !reads_files && jwt.jwks_url.is_none() {
        let _ = Verifier::from_config(jwt);
    }
}
