//! TLS towards clients (verify-full through the proxy, plaintext refused before
//! the password when TLS is required) and towards the server (verify-full by
//! name and by IP, and a certificate from an unknown CA refused).

use std::process::Command;

use rlsproxy::config::{RequireTls, SslMode};

use crate::common::proxy::{self, TestProxy};
use crate::common::{postgres, raw};
use crate::{ACME, psql, refused, run, sev_code_msg, titles};

async fn tls_proxy(require: RequireTls) -> TestProxy {
    let pg = postgres();
    let mut cfg = proxy::base_config(pg);
    cfg.listen.tls_cert_file = Some(pg.server_cert_path());
    cfg.listen.tls_key_file = Some(pg.server_key_path());
    cfg.listen.require_tls = require;
    proxy::start(cfg).await
}

fn tls_conninfo(proxy: &TestProxy, token: &str, host: &str) -> String {
    format!(
        "host={host} port={} user=alice dbname=app password={token} sslmode=verify-full sslrootcert={}",
        proxy.addr.port(),
        postgres().ca_cert_path().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_verify_full_through_the_proxy() {
    let proxy = tls_proxy(RequireTls::Always).await;
    let token = proxy.token("1");
    for host in ["localhost", "127.0.0.1"] {
        let (ok, out, err) = psql(tls_conninfo(&proxy, &token, host), "SELECT 1").await;
        assert!(ok, "psql over TLS to {host} failed: {err}");
        assert_eq!(out.trim(), "1");
    }
    let (ok, out, err) =
        psql(tls_conninfo(&proxy, &token, "localhost"), "SELECT title FROM documents ORDER BY id").await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ACME);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_refused_before_the_password_when_tls_is_required() {
    let proxy = tls_proxy(RequireTls::Always).await;
    let token = proxy.token("1");

    // The raw view: the first answer to the StartupMessage is the error, not a password request.
    let mut c = raw::connect(proxy.addr).await;
    c.send_startup(&[("user", "alice"), ("database", "app")]).await;
    let (tag, body) = c.read_message().await;
    assert_eq!(tag as char, 'E', "expected an ErrorResponse before AuthenticationCleartextPassword");
    let f = raw::error_fields(&body);
    assert_eq!(sev_code_msg(&f), ("FATAL", "28000", "rlsproxy requires TLS for connections from 127.0.0.1"));
    crate::assert_closed(&mut c).await;

    // A driver with sslmode=disable.
    let mut cfg = proxy.client_config(&token);
    cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = cfg.connect(tokio_postgres::NoTls).await.err().expect("plaintext accepted");
    assert_eq!(
        crate::server_error(&err),
        ("FATAL".into(), "28000".into(), "rlsproxy requires TLS for connections from 127.0.0.1".into())
    );
    let (ok, _, err) = psql(proxy.conninfo(&token), "SELECT 1").await;
    assert!(!ok);
    assert!(err.contains("rlsproxy requires TLS for connections from 127.0.0.1"), "{err}");
}

async fn upstream_proxy(host: &str, mode: SslMode, root: std::path::PathBuf) -> TestProxy {
    let mut cfg = proxy::base_config(postgres());
    cfg.upstream.host = host.into();
    cfg.upstream.sslmode = mode;
    cfg.upstream.sslrootcert = Some(root);
    proxy::start(cfg).await
}

const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test]
async fn upstream_verify_full_uses_tls() {
    for host in ["localhost", "127.0.0.1"] {
        let proxy = upstream_proxy(host, SslMode::VerifyFull, postgres().ca_cert_path()).await;
        let client = proxy.connect(&proxy.token("1")).await;
        let ssl: bool = client.query_one(SSL_IN_USE, &[]).await.unwrap().get(0);
        assert!(ssl, "upstream connection to {host} is not TLS");
        assert_eq!(titles(&client).await, ACME);
    }
    // Control: with sslmode disable the same query says false (so the assertion above can fail).
    let plain = proxy::start_default().await;
    let client = plain.connect(&plain.token("1")).await;
    let ssl: bool = client.query_one(SSL_IN_USE, &[]).await.unwrap().get(0);
    assert!(!ssl);
}

#[tokio::test]
async fn upstream_certificate_from_another_ca_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let (key, cert) = (dir.path().join("other-ca.key"), dir.path().join("other-ca.crt"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=rlsproxy other test CA", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let proxy = upstream_proxy("localhost", mode, cert.clone()).await;
        let (severity, code, message) = refused(&proxy, &proxy.token("1")).await;
        assert_eq!(
            (severity.as_str(), code.as_str(), message.as_str()),
            ("FATAL", "08006", "rlsproxy: the upstream server is unavailable: invalid peer certificate: UnknownIssuer"),
            "{mode:?}"
        );
    }
}
