//! Session start: a server connection, the client's settings, the first
//! injection (awaited, so the first transaction already runs in this client's
//! context), then AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::{Relay, SessionError};
use crate::frontend::Handshake;
use crate::policy::context::Injection;
use crate::pool::{Lease, PoolError};
use crate::protocol::{PgError, backend, frontend};
use crate::server::Shared;
use crate::upstream::UpstreamError;

pub(super) async fn start(mut hs: Handshake, shared: &Shared) -> Result<Relay<'_>, SessionError> {
    let injection = shared.context.injection(&hs.context);
    let database = shared.config.upstream.database.clone().unwrap_or_else(|| hs.startup.database.clone());
    let span = tracing::Span::current();
    span.record("tenant", hs.context.tenant.as_str());
    if let Some(sub) = &hs.context.subject {
        span.record("sub", sub.as_str());
    }
    // A pooled connection may have died while idle: one retry with a fresh one.
    let mut attempt = 0;
    let server = loop {
        attempt += 1;
        let result = match shared.pool.acquire(&database).await {
            Ok(lease) => prepare(lease, &hs, &injection).await,
            Err(e) => Err(pool_error(e)),
        };
        match result {
            Ok(lease) => break lease,
            Err(Failure::Retry(e)) if attempt < 2 => tracing::debug!(error = %e, "retrying with a new connection"),
            Err(Failure::Retry(e)) => return Err(end(&mut hs, upstream_unavailable(&e)).await),
            Err(Failure::Refuse(e)) => return Err(end(&mut hs, e).await),
        }
    };
    span.record("backend_pid", server.pid());
    let cancel = shared.cancels.register();
    cancel.set_target(Some(server.cancel_key));
    let mut out = BytesMut::new();
    backend::authentication(&mut out, 0);
    for (name, value) in &server.params {
        backend::parameter_status(&mut out, name, value);
    }
    backend::backend_key_data(&mut out, cancel.pid, cancel.secret);
    backend::ready_for_query(&mut out, b'I');
    hs.stream.write_all(&out).await.map_err(SessionError::Client)?;
    tracing::info!(database, "session started");
    Ok(Relay::new(shared, hs, server, injection, cancel))
}

enum Failure {
    Retry(UpstreamError),
    Refuse(PgError),
}

fn pool_error(e: PoolError) -> Failure {
    match e {
        PoolError::Timeout(_) => Failure::Refuse(
            PgError::fatal("53300", format!("rlsproxy: {e}"))
                .with_hint("Every upstream connection is in use; retry later or raise pool.size."),
        ),
        PoolError::Connect(e) => Failure::Refuse(upstream_unavailable(&e)),
    }
}

fn upstream_unavailable(e: &UpstreamError) -> PgError {
    PgError::fatal("08006", format!("rlsproxy: the upstream server is unavailable: {e}"))
}

/// Applies the startup settings and the first injection in one round trip.
async fn prepare(mut lease: Lease, hs: &Handshake, injection: &Injection) -> Result<Lease, Failure> {
    let mut batch = BytesMut::new();
    batch.extend_from_slice(&injection.prepare);
    batch.extend_from_slice(&injection.bind_execute);
    if !hs.startup.settings.is_empty() {
        let calls: Vec<String> = (0..hs.startup.settings.len())
            .map(|i| format!("set_config(${}, ${}, false)", 2 * i + 1, 2 * i + 2))
            .collect();
        let values: Vec<&str> = hs.startup.settings.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]).collect();
        frontend::parse(&mut batch, "", &format!("SELECT {}", calls.join(", ")));
        frontend::bind_text(&mut batch, "", &values);
        frontend::execute(&mut batch);
    }
    frontend::sync(&mut batch);
    let outcome = lease.run_batch(&batch).await.map_err(Failure::Retry)?;
    if let Some(e) = outcome.error {
        return Err(Failure::Refuse(PgError::fatal(
            &e.code,
            format!("rlsproxy: cannot start the session: {}", e.message),
        )));
    }
    lease.injection_prepared = true;
    lease.context = Some(injection.bind_execute.clone());
    Ok(lease)
}

async fn end(hs: &mut Handshake, e: PgError) -> SessionError {
    let mut buf = BytesMut::new();
    e.encode(&mut buf);
    let _ = hs.stream.write_all(&buf).await;
    SessionError::Ended(e)
}
