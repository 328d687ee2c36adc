//! rustls configurations: the certificate offered to clients, and the
//! verification of the upstream server per libpq's `sslmode`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::{ConfigError, SslMode};

/// ALPN protocol name PostgreSQL 17 uses for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

fn file_err(key: &'static str, path: &Path, reason: impl ToString) -> ConfigError {
    ConfigError::File { key, path: path.to_path_buf(), reason: reason.to_string() }
}

fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(key, path, e))?;
    if certs.is_empty() {
        return Err(file_err(key, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// Server-side TLS for clients, advertising the `postgresql` ALPN.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let certs = load_certs("listen.tls_cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_err("listen.tls_key_file", key_file, e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_err("listen.tls_cert_file", cert_file, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| file_err("listen.tls_key_file", key_file, e))?;
    cfg.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(cfg))
}

/// Client-side TLS towards the upstream server; `None` for `sslmode = disable`.
pub fn upstream_config(mode: SslMode, root: Option<&Path>) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let verifier: Arc<dyn ServerCertVerifier> = match root {
        None => Arc::new(Relaxed { chain: None, provider: provider() }),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs("upstream.sslrootcert", path)? {
                roots.add(cert).map_err(|e| file_err("upstream.sslrootcert", path, e))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| file_err("upstream.sslrootcert", path, e))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(Relaxed { chain: Some(webpki), provider: provider() })
            }
        }
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid { key: "upstream.sslmode", reason: e.to_string() })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// The name to verify the upstream certificate against.
pub fn server_name(host: &str) -> Result<ServerName<'static>, ConfigError> {
    ServerName::try_from(host.to_string())
        .map_err(|e| ConfigError::Invalid { key: "upstream.host", reason: e.to_string() })
}

/// libpq's `prefer`/`require` without a root certificate (`chain: None`: encryption without
/// authentication) and `verify-ca` (`chain: Some`: the chain must lead to a trusted root, the
/// host name is not checked). `verify-full` uses rustls' own verifier instead.
#[derive(Debug)]
struct Relaxed {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
