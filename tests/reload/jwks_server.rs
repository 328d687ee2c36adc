//! An HTTPS server for `jwt.jwks_url` tests: tokio + tokio-rustls with the test cluster's
//! certificate (CN localhost, IP 127.0.0.1, signed by its CA). It serves one JWKS document with
//! `Cache-Control: max-age=…`, or fails with 500, and counts the requests it answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common;

/// What the server answers.
struct Answer {
    body: String,
    max_age: u64,
    fail: bool,
}

/// A running server; it stops with the test's runtime.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
}

impl JwksServer {
    /// Serves `body` with `max-age`.
    pub async fn start(body: String, max_age: u64) -> Self {
        let pg = common::postgres();
        let certs = CertificateDer::pem_file_iter(pg.server_cert_path())
            .expect("certificate file")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(pg.server_key_path()).expect("key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Self {
            addr: listener.local_addr().expect("addr"),
            answer: Arc::new(Mutex::new(Answer { body, max_age, fail: false })),
            requests: Arc::default(),
        };
        let this = server.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, this) = (acceptor.clone(), this.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        this.answer(tls).await;
                    }
                });
            }
        });
        server
    }

    async fn answer(&self, mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let response = {
            let answer = self.answer.lock().expect("answer");
            if answer.fail {
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: public, max-age={}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                    answer.max_age,
                    answer.body.len(),
                    answer.body
                )
            }
        };
        self.requests.fetch_add(1, Ordering::SeqCst);
        let _ = tls.write_all(response.as_bytes()).await;
        let _ = tls.shutdown().await;
    }

    /// `https://127.0.0.1:port/jwks.json`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/jwks.json", self.addr.port())
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Serves `body` with `max_age` from now on.
    pub fn publish(&self, body: String, max_age: u64) {
        let mut answer = self.answer.lock().expect("answer");
        (answer.body, answer.max_age, answer.fail) = (body, max_age, false);
    }

    /// Answers 500 from now on.
    pub fn fail(&self) {
        self.answer.lock().expect("answer").fail = true;
    }
}
