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

/// Whether the upstream connection serving `client` uses TLS. pg_stat_ssl reads other
/// sessions' state, which migration 0004 keeps from the proxy's role: ask as the superuser.
async fn ssl_in_use(client: &tokio_postgres::Client) -> bool {
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let su = postgres().superuser_client("app").await;
    su.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid]).await.unwrap().get(0)
}

#[tokio::test]
async fn upstream_verify_full_uses_tls() {
    for host in ["localhost", "127.0.0.1"] {
        let proxy = upstream_proxy(host, SslMode::VerifyFull, postgres().ca_cert_path()).await;
        let client = proxy.connect(&proxy.token("1")).await;
        assert!(ssl_in_use(&client).await, "upstream connection to {host} is not TLS");
        assert_eq!(titles(&client).await, ACME);
    }
    // Control: with sslmode disable the same query says false (so the assertion above can fail).
    let plain = proxy::start_default().await;
    let client = plain.connect(&plain.token("1")).await;
    assert!(!ssl_in_use(&client).await);
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

/// A TLS client for the raw tests, trusting the test CA and offering `alpn`.
fn raw_tls_connector(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(postgres().ca_cert_path()).expect("ca") {
        roots.add(cert.expect("cert")).expect("add root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Reads one message (tag, body) from any stream.
async fn read_msg<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let tag = s.read_u8().await.expect("tag");
    let len = s.read_i32().await.expect("len") as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.expect("body");
    (tag, body)
}

/// PostgreSQL 17's direct TLS (`sslnegotiation=direct`): a ClientHello instead of SSLRequest,
/// with the `postgresql` ALPN; the session then works as usual. Without that ALPN it is refused.
#[tokio::test]
async fn direct_tls_with_the_postgresql_alpn() {
    use tokio::io::AsyncWriteExt;
    let proxy = tls_proxy(RequireTls::Always).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");

    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.expect("connect");
    let mut tls = raw_tls_connector(&[b"postgresql"]).connect(name.clone(), tcp).await.expect("direct TLS handshake");
    let mut startup = Vec::new();
    for part in ["user", "alice", "database", "app"] {
        startup.extend_from_slice(part.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut packet = ((startup.len() + 8) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&raw::PROTOCOL_3_0.to_be_bytes());
    packet.extend_from_slice(&startup);
    tls.write_all(&packet).await.expect("startup");
    assert_eq!(read_msg(&mut tls).await, (b'R', 3i32.to_be_bytes().to_vec()), "cleartext password request");
    let token = proxy.token("1");
    let password = crate::Msgs::new().msg(b'p', &raw::cstr(&token));
    tls.write_all(password.bytes()).await.expect("password");
    assert_eq!(read_msg(&mut tls).await, (b'R', 0i32.to_be_bytes().to_vec()), "AuthenticationOk");
    loop {
        let (tag, body) = read_msg(&mut tls).await;
        if tag == b'Z' {
            assert_eq!(body, b"I");
            break;
        }
    }

    // Without ALPN, a direct TLS client is not a PostgreSQL client: no session.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.expect("connect");
    let refused = match raw_tls_connector(&[]).connect(name, tcp).await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(&packet).await;
            let mut byte = [0u8; 1];
            matches!(tokio::io::AsyncReadExt::read(&mut tls, &mut byte).await, Ok(0) | Err(_))
        }
    };
    assert!(refused, "direct TLS without ALPN must not reach authentication");
}
