//! The admin listener (`[admin] address`, never the client port): probes for
//! Kubernetes, Prometheus metrics, and JSON views of pools and clients.
//!
//! - `/healthz`: the process is up (200);
//! - `/readyz`: not shutting down, and the pool usable (200; 503 with the reason
//!   otherwise; see `readiness`: a probe adds no load while the pool is usable);
//! - `/metrics`: OpenMetrics text (see `metrics`);
//! - `/admin/pools`, `/admin/clients`: JSON, behind `Authorization: Bearer
//!   <[admin] token>`; they show tenants and subjects, never a client's token.

pub mod clients;
pub mod metrics;
pub mod probe;
pub mod readiness;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use tokio::net::TcpListener;

use crate::shared::Shared;
pub use readiness::Readiness;

/// Time a client gets to send its request headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the admin endpoints on `listener` until the task is aborted (the proxy ends it
/// after its sessions: probes and scrapes keep working while it drains).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            // A peer that never finishes its request headers is dropped, not kept forever.
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

async fn readiness(shared: &Shared) -> Result<(), String> {
    let (database, timeout) = {
        let upstream = &shared.live().config.upstream;
        let database = upstream.database.clone().unwrap_or_else(|| "postgres".into());
        (database, Duration::from_millis(upstream.connect_timeout_ms.saturating_add(1000)))
    };
    let shutting_down = *shared.shutdown.borrow();
    shared.readiness.check(shutting_down, &shared.pool, &database, timeout).await
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness(shared).await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {why}\n")),
        },
        "/metrics" => {
            let body = shared.metrics.encode(shared.snapshot());
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        path @ ("/admin/pools" | "/admin/clients") => {
            if let Some(refused) = authorize(shared, &req) {
                return refused;
            }
            let body = if path == "/admin/pools" {
                serde_json::to_vec_pretty(&shared.pool.snapshot())
            } else {
                serde_json::to_vec_pretty(&shared.clients.list())
            };
            match body {
                Ok(body) => {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                    resp
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `None` when the request carries the admin token; else the response refusing it.
fn authorize(shared: &Shared, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let live = shared.live();
    let Some(expected) = live.admin_token.as_deref() else {
        return Some(text(StatusCode::FORBIDDEN, "the admin views need [admin] token or token_file\n"));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes()).is_ok() {
        return None;
    }
    let mut resp = text(StatusCode::UNAUTHORIZED, "a valid bearer token is required\n");
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    Some(resp)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
