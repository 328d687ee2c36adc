//! SIGHUP: key rotation through a JWKS file (old and new key, then the new one only) while a
//! session sits in an open transaction; a broken configuration refused whole.

use crate::keys::{SigningKey, jwks};
use crate::process::ProxyProcess;
use crate::{REFUSED, RELOADED, RELOADS_ERROR, RELOADS_OK, tenant_rows};

fn jwt_section(jwks_file: &std::path::Path) -> String {
    format!("[jwt]\nalgorithms = [\"EdDSA\"]\njwks_file = \"{}\"\nleeway_s = 0\n", jwks_file.display())
}

#[tokio::test]
async fn sighup_rotates_the_jwks_without_touching_open_sessions() {
    let (dir, port, admin) = ProxyProcess::prepare();
    let (old, new) = (SigningKey::ed25519(dir.path(), "old"), SigningKey::ed25519(dir.path(), "new"));
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&old])).unwrap();
    let config = ProxyProcess::render(port, admin, &jwt_section(&jwks_file));
    let proxy = ProxyProcess::start(dir, port, admin, &config);

    let open = proxy.connect(&old.token("1")).await;
    open.batch_execute("BEGIN").await.unwrap();
    assert_eq!(tenant_rows(&open).await, 3);
    let refused = proxy.refusal(&new.token("1")).await;
    assert_eq!(refused, ("28P01".to_string(), "no key with kid new".to_string()));

    // Step 1: publish old and new together.
    crate::keys::replace_file(&jwks_file, &jwks(&[&old, &new]));
    proxy.sighup();
    let line = proxy.wait_for_lines(RELOADED, 1).await;
    assert!(line.contains("trigger=\"SIGHUP\""), "{line}");
    assert_eq!(proxy.metric(RELOADS_OK).await, Some(1.0));
    assert_eq!(proxy.metric(RELOADS_ERROR).await, None, "no reload failed");
    let with_new = proxy.connect(&new.token("2")).await;
    assert_eq!(tenant_rows(&with_new).await, 2, "tenant 2 through the new key");
    let with_old = proxy.connect(&old.token("1")).await;
    assert_eq!(tenant_rows(&with_old).await, 3, "the old key is still valid");
    assert_eq!(tenant_rows(&open).await, 3, "the open transaction goes on");

    // Step 2: drop the old key.
    crate::keys::replace_file(&jwks_file, &jwks(&[&new]));
    proxy.sighup();
    proxy.wait_for_lines(RELOADED, 2).await;
    assert_eq!(proxy.metric(RELOADS_OK).await, Some(2.0));
    assert_eq!(proxy.refusal(&old.token("1")).await, ("28P01".to_string(), "no key with kid old".to_string()));
    assert_eq!(tenant_rows(&proxy.connect(&new.token("1")).await).await, 3);
    // Sessions opened with the removed key keep working: their identity was verified at connect.
    assert_eq!(tenant_rows(&open).await, 3);
    open.batch_execute("COMMIT").await.expect("the open transaction commits");
    assert_eq!(tenant_rows(&with_old).await, 3);
    assert_eq!(proxy.lines_with(REFUSED), Vec::<String>::new());
}

#[tokio::test]
async fn sighup_refuses_a_broken_configuration_and_keeps_the_running_one() {
    let (dir, port, admin) = ProxyProcess::prepare();
    let key = SigningKey::ed25519(dir.path(), "k1");
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&key])).unwrap();
    let good = ProxyProcess::render(port, admin, &jwt_section(&jwks_file));
    let proxy = ProxyProcess::start(dir, port, admin, &good);
    let open = proxy.connect(&key.token("1")).await;

    // An unknown key.
    proxy.rewrite_config(&format!("{good}bogus_key = 1\n"));
    proxy.sighup();
    let line = proxy.wait_for_lines(REFUSED, 1).await;
    assert!(line.contains(" ERROR ") && line.contains("unknown field `bogus_key`"), "{line}");
    assert_eq!(proxy.metric(RELOADS_ERROR).await, Some(1.0));

    // A key file that does not exist: the error names the key and the file.
    let missing = proxy.path("missing-jwks.json");
    let broken = ProxyProcess::render(port, admin, &jwt_section(&missing));
    proxy.rewrite_config(&broken);
    proxy.sighup();
    let line = proxy.wait_for_lines(REFUSED, 2).await;
    let expected = format!("jwt.jwks_file: {}: No such file or directory", missing.display());
    assert!(line.contains(&expected), "{line}");
    assert_eq!(proxy.metric(RELOADS_ERROR).await, Some(2.0));
    assert_eq!(proxy.metric(RELOADS_OK).await, None);

    // The running configuration is untouched: the key still verifies, sessions go on.
    assert_eq!(tenant_rows(&proxy.connect(&key.token("1")).await).await, 3);
    assert_eq!(tenant_rows(&open).await, 3);
    assert_eq!(proxy.lines_with(RELOADED), Vec::<String>::new());

    // Fixed again: the next SIGHUP applies it.
    proxy.rewrite_config(&good);
    proxy.sighup();
    proxy.wait_for_lines(RELOADED, 1).await;
    assert_eq!(proxy.metric(RELOADS_OK).await, Some(1.0));
}
