//! One HTTPS GET of a JWKS document: hyper 1's HTTP/1.1 client connection over tokio-rustls
//! (the TLS stack, and the aws-lc-rs provider, the proxy already uses), the body bounded, and
//! the freshness lifetime the response's cache headers allow.
//!
//! No redirects are followed and no proxy is used: the key set decides who is which tenant, so
//! it comes from exactly the configured URL, over a verified TLS connection, or not at all.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::auth::key::JwkSet;
use crate::auth::keyfiles::parse_jwks;
use crate::config::ConfigError;

/// Largest JWKS document accepted (1 MiB); real ones are a few KiB.
pub(crate) const MAX_JWKS_BYTES: usize = 1 << 20;
/// Time one fetch may take, connection and TLS included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a fetch failed; the last good key set stays in use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// TCP connection.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// TLS handshake, including certificate verification.
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    /// The HTTP exchange.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// A status other than 200 (redirects included: they are not followed).
    #[error("answered HTTP {0}")]
    Status(StatusCode),
    /// The body exceeds [`MAX_JWKS_BYTES`].
    #[error("the document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// [`FETCH_TIMEOUT`] passed.
    #[error("no answer within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    /// The body is not a usable JWKS.
    #[error("{0}")]
    Document(String),
}

/// A fetched key set and how long the server says it stays fresh.
pub(crate) struct Fetched {
    /// The keys.
    pub keys: JwkSet,
    /// From `Cache-Control: max-age` (0 for `no-cache`/`no-store`) or `Expires`; `None` when
    /// the response has neither.
    pub max_age: Option<Duration>,
}

/// Everything needed to GET one URL, prepared once.
pub(crate) struct Fetcher {
    /// Host to connect to (brackets of an IPv6 literal removed).
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path and query.
    target: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

impl Fetcher {
    /// Prepares `url` (already validated as https) with `ca_pem` as the only trusted roots, or
    /// the system's roots when `None`.
    pub(crate) fn new(url: &str, ca_pem: Option<(&Path, &[u8])>) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { key: "jwt.jwks_url", reason };
        let uri: Uri = url.parse().map_err(|e| invalid(format!("not a URL ({e})")))?;
        let authority = uri.authority().ok_or_else(|| invalid("has no host".into()))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let server_name = ServerName::try_from(host.clone()).map_err(|e| invalid(format!("host: {e}")))?;
        let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let roots = match ca_pem {
            Some((path, pem)) => private_roots(path, pem)?,
            None => system_roots()?,
        };
        let mut tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_string(),
            host,
            target,
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    /// GETs the document, within [`FETCH_TIMEOUT`].
    pub(crate) async fn fetch(&self) -> Result<Fetched, FetchError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_unbounded()).await.map_err(|_| FetchError::Timeout)?
    }

    async fn fetch_unbounded(&self) -> Result<Fetched, FetchError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(FetchError::Connect)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await.map_err(FetchError::Tls)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let request = Request::get(self.target.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::ACCEPT, "application/json, application/jwk-set+json")
            .header(header::USER_AGENT, concat!("rlsproxy/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Document(e.to_string()))?;
        let exchange = async {
            let response = sender.send_request(request).await?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status(response.status()));
            }
            let max_age = max_age(response.headers(), SystemTime::now());
            let mut body = response.into_body();
            let mut bytes = BytesMut::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    if bytes.len() + data.len() > MAX_JWKS_BYTES {
                        return Err(FetchError::TooLarge);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            let text = std::str::from_utf8(&bytes).map_err(|_| FetchError::Document("not UTF-8 text".into()))?;
            let keys = parse_jwks(text, "jwt.jwks_url").map_err(FetchError::Document)?;
            Ok(Fetched { keys, max_age })
        };
        // The connection future drives the socket (its errors reach the exchange through the
        // sender and the body); it ends with the fetch, also when a timeout cancels it.
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        exchange.await
    }
}

/// Ends a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The freshness lifetime a response allows: `Cache-Control: max-age` (0 for `no-store` or
/// `no-cache`, which mean "ask again"), else `Expires` minus `Date` (or `now`); an `Expires` that
/// is not a date means "already stale" (RFC 9111, 5.3). `None` without either header.
pub(crate) fn max_age(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or_default().split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(seconds) = directive.strip_prefix("max-age=") {
                max_age = seconds.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs).or(max_age);
            }
        }
    }
    if max_age.is_some() {
        return max_age;
    }
    let date = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(httpdate::parse_http_date);
    let expires = date(header::EXPIRES)?;
    let base = match date(header::DATE) {
        Some(Ok(date)) => date,
        _ => now,
    };
    Some(expires.ok().and_then(|e| e.duration_since(base).ok()).unwrap_or(Duration::ZERO))
}

fn private_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, ConfigError> {
    let err = |reason: String| ConfigError::File { key: "jwt.jwks_ca_file", path: path.to_path_buf(), reason };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.map_err(|e| err(e.to_string()))?).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let reason = match found.errors.first() {
            Some(e) => format!("no system CA certificates could be loaded ({e}); set jwt.jwks_ca_file"),
            None => "no system CA certificates found; set jwt.jwks_ca_file".into(),
        };
        return Err(ConfigError::Invalid { key: "jwt.jwks_url", reason });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap_or_else(|_| unreachable!("test header")));
        }
        h
    }

    #[test]
    fn cache_lifetime_from_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(max_age(&headers(&[("cache-control", "public, max-age=600")]), now), secs(600));
        assert_eq!(max_age(&headers(&[("cache-control", "Max-Age=\"60\", must-revalidate")]), now), secs(60));
        assert_eq!(max_age(&headers(&[("cache-control", "max-age=600, no-cache")]), now), secs(0));
        assert_eq!(max_age(&headers(&[("cache-control", "no-store")]), now), secs(0));
        let date = httpdate::fmt_http_date(now);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(max_age(&headers(&[("expires", &later), ("date", &date)]), now), secs(120));
        assert_eq!(max_age(&headers(&[("expires", &later)]), now), secs(120));
        // max-age wins over Expires; an Expires that is no date is already stale.
        assert_eq!(max_age(&headers(&[("expires", &later), ("cache-control", "max-age=5")]), now), secs(5));
        assert_eq!(max_age(&headers(&[("expires", "0")]), now), secs(0));
        assert_eq!(max_age(&headers(&[("content-type", "application/json")]), now), None);
    }
}
