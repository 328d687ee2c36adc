//! PEM keys, HS/RS confusion, and start-up errors.

use super::*;
use crate::auth::SQLSTATE_INVALID_PASSWORD as BAD;
use crate::config::ConfigError;

#[test]
fn hs_rs_confusion_is_refused() {
    let dir = Dir::new();
    let (private, public) = dir.keypair("rsa", Gen::Rsa(2048));
    let public_pem = std::fs::read(&public).unwrap();
    // An HS256 token whose HMAC key is the RSA public key, which an attacker knows.
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(&public_pem), None, &good());
    let legit = sign(Algorithm::RS256, &pem_key(&private, Gen::Rsa(0)), None, &good());

    let rs_only =
        Verifier::from_config(&JwtConfig { public_key_file: Some(public.clone()), ..cfg(&["RS256"]) }).unwrap();
    assert_fails(
        &rs_only,
        &forged,
        AuthError::AlgorithmNotAllowed("HS256".into()),
        "algorithm HS256 is not allowed",
        BAD,
    );
    ok(&rs_only, &legit);

    let both = JwtConfig { secret: Some(SECRET.into()), public_key_file: Some(public), ..cfg(&["HS256", "RS256"]) };
    let both = Verifier::from_config(&both).unwrap();
    assert_fails(&both, &forged, AuthError::BadSignature, "token signature is invalid", BAD);
    ok(&both, &legit);
    ok(&both, &hs(&good()));
}

#[test]
fn every_rsa_algorithm_and_pkcs1_public_keys() {
    let dir = Dir::new();
    let (private, public) = dir.keypair("rsa", Gen::Rsa(2048));
    let key = pem_key(&private, Gen::Rsa(0));
    let algs = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
    let v = Verifier::from_config(&JwtConfig { public_key_file: Some(public), ..cfg(&algs) }).unwrap();
    // The same key as a PKCS#1 "RSA PUBLIC KEY".
    dir.openssl(&["rsa", "-in", "rsa.key", "-RSAPublicKey_out", "-out", "rsa1.pub"]);
    let pkcs1 =
        Verifier::from_config(&JwtConfig { public_key_file: Some(dir.path("rsa1.pub")), ..cfg(&algs) }).unwrap();
    for name in algs {
        let token = sign(name.parse().unwrap(), &key, None, &good());
        assert_eq!(ok(&v, &token).tenant, "acme", "{name}");
        assert_eq!(ok(&pkcs1, &token).tenant, "acme", "{name}");
    }
}

#[test]
fn public_key_file_errors_name_the_key_and_file() {
    let dir = Dir::new();
    let (private, _) = dir.keypair("ec", Gen::Ec("P-256"));
    let (_, p521) = dir.keypair("p521", Gen::Ec("P-521"));
    let (_, small) = dir.keypair("small", Gen::Rsa(1024));
    let garbage = dir.write("garbage.pem", "hello");
    dir.openssl(&["req", "-x509", "-key", "ec.key", "-subj", "/CN=x", "-days", "1", "-out", "cert.pem"]);
    let cert = dir.path("cert.pem");
    let missing = dir.path("missing.pem");
    let cases = [
        (&garbage, "not a PEM RSA/EC/Ed25519 public key"),
        (&private, "is a private key; give the public key (openssl pkey -pubout)"),
        (&cert, "is a certificate; give its public key (openssl x509 -pubkey -noout)"),
        (&p521, "EC key on an unsupported curve; use P-256 or P-384"),
        (&small, "RSA key of 1024 bits; at least 2048 are required"),
        (&missing, "No such file or directory (os error 2)"),
    ];
    for (path, reason) in cases {
        let cfg = JwtConfig { public_key_file: Some(path.clone()), ..cfg(&["ES256"]) };
        assert_eq!(config_error(&cfg), format!("jwt.public_key_file: {}: {reason}", path.display()));
    }
}

#[test]
fn algorithms_without_keys_and_unknown_names_stop_the_start() {
    let dir = Dir::new();
    let (_, p256) = dir.keypair("ec", Gen::Ec("P-256"));
    let both = JwtConfig { public_key_file: Some(p256), ..cfg(&["ES256", "ES384"]) };
    assert_eq!(
        config_error(&both),
        "jwt.algorithms: ES384 has no key; set jwt.public_key_file or jwt.jwks_file to a P-384 EC key"
    );
    assert_eq!(
        config_error(&cfg(&["RS256"])),
        "jwt.algorithms: RS256 has no key; set jwt.public_key_file or jwt.jwks_file to an RSA key"
    );
    assert_eq!(config_error(&cfg(&["HS256"])), "jwt.algorithms: HS256 has no key; set jwt.secret or jwt.secret_file");
    let none = JwtConfig { secret: Some(SECRET.into()), ..cfg(&["HS256", "none"]) };
    assert_eq!(
        config_error(&none),
        "jwt.algorithms: unknown algorithm \"none\"; use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
    );
    assert_eq!(config_error(&cfg(&[])), "jwt.algorithms: list at least one algorithm");
    assert_eq!(
        config_error(&JwtConfig { secret: Some(String::new()), ..cfg(&["HS256"]) }),
        "jwt.secret: must not be empty"
    );
    let file = dir.write("secret", format!("{SECRET}\n"));
    let both = JwtConfig { secret: Some(SECRET.into()), secret_file: Some(file.clone()), ..cfg(&["HS256"]) };
    assert!(matches!(Verifier::from_config(&both), Err(ConfigError::Invalid { key: "jwt.secret_file", .. })));
    // The secret file's trailing newline is not part of the secret.
    let v = Verifier::from_config(&JwtConfig { secret_file: Some(file), ..cfg(&["HS256"]) }).unwrap();
    ok(&v, &hs(&good()));
}
