//! `[reload] watch_interval_s`: a rewritten JWKS file (as Kubernetes rewrites a mounted Secret)
//! is picked up without any signal; an unchanged one causes no reload.

use std::time::Duration;

use crate::keys::{SigningKey, jwks, replace_file};
use crate::process::ProxyProcess;
use crate::{RELOADED, RELOADS_OK, tenant_rows};

#[tokio::test]
async fn the_file_watch_picks_up_a_rewritten_jwks_without_sighup() {
    let (dir, port, admin) = ProxyProcess::prepare();
    let (old, new) = (SigningKey::ed25519(dir.path(), "old"), SigningKey::ed25519(dir.path(), "new"));
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&old])).unwrap();
    let rest = format!(
        "[jwt]\nalgorithms = [\"EdDSA\"]\njwks_file = \"{}\"\n\n[reload]\nwatch_interval_s = 1\n",
        jwks_file.display()
    );
    let proxy = ProxyProcess::start(dir, port, admin, &ProxyProcess::render(port, admin, &rest));
    let open = proxy.connect(&old.token("1")).await;

    // Nothing changed: no reload however long the watch runs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(proxy.lines_with(RELOADED), Vec::<String>::new());

    replace_file(&jwks_file, &jwks(&[&new]));
    let line = proxy.wait_for_lines(RELOADED, 1).await;
    assert!(line.contains("trigger=\"file watch\""), "{line}");
    assert_eq!(proxy.metric(RELOADS_OK).await, Some(1.0));
    assert_eq!(tenant_rows(&proxy.connect(&new.token("2")).await).await, 2);
    assert_eq!(proxy.refusal(&old.token("1")).await, ("28P01".to_string(), "no key with kid old".to_string()));
    assert_eq!(tenant_rows(&open).await, 3, "the open session goes on");

    // One change, one reload.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(proxy.lines_with(RELOADED).len(), 1);
}
