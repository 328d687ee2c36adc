//! Ed25519 signing keys made with the `openssl` CLI, their JWKs, JWKS documents and tokens.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// One signing key and the `kid` it is published under.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    /// The public key as a JWK.
    pub jwk: Value,
}

impl SigningKey {
    /// A fresh Ed25519 key pair, its files in `dir`.
    pub fn ed25519(dir: &Path, kid: &str) -> Self {
        let private = dir.join(format!("{kid}.key"));
        let out = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&private)
            .output()
            .expect("run openssl genpkey");
        assert!(out.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
        let der = Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&private)
            .output()
            .expect("run openssl pkey");
        assert!(der.status.success() && der.stdout.len() == 44, "openssl pkey: {der:?}");
        // SubjectPublicKeyInfo of Ed25519: a 12-byte header, then the 32-byte key.
        let x = b64url(&der.stdout[12..]);
        let pem = std::fs::read(&private).expect("read the private key");
        Self {
            kid: kid.to_string(),
            encoding: EncodingKey::from_ed_pem(&pem).expect("Ed25519 PEM"),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}),
        }
    }

    /// A token for `tenant`, valid for an hour, with this key's `kid` (or `kid` instead).
    pub fn token_as(&self, tenant: &str, kid: &str) -> String {
        let now = rlsproxy::auth::now_unix();
        let claims = json!({"tenant_id": tenant, "sub": format!("user-of-{tenant}"), "exp": now + 3600});
        let header = Header { kid: Some(kid.to_string()), ..Header::new(Algorithm::EdDSA) };
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("sign")
    }

    /// A token for `tenant` under this key's own `kid`.
    pub fn token(&self, tenant: &str) -> String {
        self.token_as(tenant, &self.kid)
    }
}

/// A JWKS document publishing `keys`.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// Replaces `path` atomically (write beside it, then rename), as Kubernetes' volume updates do.
pub fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it into place");
    // Modification times have a coarse resolution on some file systems; content is what counts.
    std::thread::sleep(Duration::from_millis(10));
}

/// Unpadded base64url.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
