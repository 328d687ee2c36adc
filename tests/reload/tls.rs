//! A renewed client-facing certificate (as cert-manager rewrites a Secret) is served to new
//! connections after SIGHUP, without a restart.

use std::path::Path;
use std::process::Command;

use crate::RELOADED;
use crate::keys::replace_file;
use crate::process::ProxyProcess;

/// A self-signed certificate and key for `cn`: (certificate PEM, key PEM).
fn self_signed(dir: &Path, cn: &str) -> (String, String) {
    let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={cn}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (std::fs::read_to_string(cert).expect("cert"), std::fs::read_to_string(key).expect("key"))
}

/// The subject of the certificate the proxy on `port` presents (PostgreSQL's SSLRequest first).
fn served_subject(port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -starttls postgres </dev/null 2>/dev/null \
         | openssl x509 -noout -subject"
    );
    let out = Command::new("sh").args(["-c", &script]).output().expect("run openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn sighup_serves_a_renewed_certificate_to_new_connections() {
    let (dir, port, admin) = ProxyProcess::prepare();
    let (cert_file, key_file) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let (first_cert, first_key) = self_signed(dir.path(), "first.test");
    let (second_cert, second_key) = self_signed(dir.path(), "second.test");
    std::fs::write(&cert_file, &first_cert).unwrap();
    std::fs::write(&key_file, &first_key).unwrap();
    let config = ProxyProcess::render(port, admin, "[jwt]\nsecret = \"a-secret-for-the-tls-reload-test-0123\"\n")
        .replace(
            "[listen]\n",
            &format!(
                "[listen]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                cert_file.display(),
                key_file.display()
            ),
        );
    let proxy = ProxyProcess::start(dir, port, admin, &config);
    assert_eq!(served_subject(port), "subject=CN = first.test");

    replace_file(&key_file, &second_key);
    replace_file(&cert_file, &second_cert);
    proxy.sighup();
    proxy.wait_for_lines(RELOADED, 1).await;
    assert_eq!(served_subject(port), "subject=CN = second.test");
}
