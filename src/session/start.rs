//! Session start: the client's identity, a server connection prepared for it
//! (opened with its startup settings; the first injection awaited, so the first transaction already runs
//! in this client's context), then AuthenticationOk, ParameterStatus,
//! BackendKeyData, ReadyForQuery. In transaction pooling the connection goes back
//! to the pool right after; its ParameterStatus values are those every
//! connection prepared for this identity will have.

use aws_lc_rs::digest;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::{Identity, Relay, SessionError};
use crate::auth::TenantContext;
use crate::config::PoolMode;
use crate::frontend::Handshake;
use crate::frontend::cancel::CancelTarget;
use crate::pool::{Lease, PoolError};
use crate::protocol::tag::status;
use crate::protocol::{PgError, ProxyError, backend};
use crate::shared::Shared;
use crate::upstream::UpstreamError;

pub(super) async fn start(mut hs: Handshake, shared: &Shared) -> Result<Box<Relay<'_>>, SessionError> {
    let identity = identity(&hs, shared);
    let upstream = &shared.live().config.upstream;
    if upstream.database.is_none() && !upstream.allowed_databases.contains(&identity.database) {
        tracing::info!(database = identity.database, "database not in upstream.allowed_databases");
        return Err(end(&mut hs, shared, ProxyError::DatabaseNotAllowed { name: identity.database }.into()).await);
    }
    let span = tracing::Span::current();
    span.record("tenant", identity.context.tenant.as_str());
    if let Some(sub) = &identity.context.subject {
        span.record("sub", sub.as_str());
    }
    // A pooled connection may have died while idle: one retry with a fresh one.
    let mut attempt = 0;
    let server = loop {
        attempt += 1;
        let result = match acquire(shared, &identity).await {
            Ok(lease) => adopt(lease, &identity).await,
            Err(e) => Err(Failure::Refuse(pool_error(&e, true))),
        };
        match result {
            Ok(lease) => break lease,
            Err(Failure::Retry(e)) if attempt < 2 => tracing::debug!(error = %e, "retrying with a new connection"),
            Err(Failure::Retry(e)) => return Err(end(&mut hs, shared, upstream_unavailable(&e)).await),
            Err(Failure::Refuse(e)) => return Err(end(&mut hs, shared, e).await),
        }
    };
    span.record("backend_pid", server.pid());
    let client = shared.clients.register(
        hs.peer,
        &identity.context.tenant,
        identity.context.subject.as_deref(),
        &identity.database,
    );
    // Session pooling: the client is given its server connection's real pid, as
    // `pg_backend_pid()` and notifications show it; transaction pooling: a proxy-issued one.
    let real_pid = (shared.pool_mode == PoolMode::Session).then(|| server.pid());
    let cancel = shared.cancels.register(real_pid);
    let client_params = server.params.clone();
    let mut out = BytesMut::new();
    backend::authentication(&mut out, 0);
    for (name, value) in &server.params {
        backend::parameter_status(&mut out, name, value);
    }
    backend::backend_key_data(&mut out, cancel.pid, cancel.secret);
    backend::ready_for_query(&mut out, status::IDLE);
    let server = match shared.pool_mode {
        PoolMode::Session => {
            cancel.set_target(Some(CancelTarget::of(&server)));
            client.set_backend_pid(server.pid());
            Some(server)
        }
        PoolMode::Transaction => {
            server.give_back();
            None
        }
    };
    hs.stream.write_all(&out).await.map_err(SessionError::Client)?;
    tracing::info!(database = identity.database, "session started");
    // Boxed: the relay then lives once, on the heap, instead of inline (and copied) in every
    // state of the session task's future.
    Ok(Box::new(Relay::new(shared, hs.stream, server, identity, cancel, client_params, client)))
}

fn identity(hs: &Handshake, shared: &Shared) -> Identity {
    let ctx = &hs.context;
    Identity {
        injection: shared.context.injection(ctx),
        context: ctx.clone(),
        key: identity_key(ctx, &hs.startup.settings),
        startup: hs.startup.settings.clone(),
        database: shared.live().config.upstream.database.clone().unwrap_or_else(|| hs.startup.database.clone()),
    }
}

/// SHA-256 of every value the injection derives from the token (tenant, role, the whole
/// claims JSON, the expiry the strict signed value is made with) plus the subject and the
/// startup settings, each length-prefixed: two clients share a connection's session state
/// without a reset only when all of these are equal.
fn identity_key(ctx: &TenantContext, startup: &[(String, String)]) -> Bytes {
    let claims = ctx.claims.to_string();
    let exp = ctx.expires_at.map(|e| e.to_string());
    let fields =
        [Some(ctx.tenant.as_str()), ctx.role.as_deref(), ctx.subject.as_deref(), Some(&claims), exp.as_deref()];
    let mut ctx_hash = digest::Context::new(&digest::SHA256);
    let mut field = |value: Option<&str>| match value {
        // NULL and '' differ: a marker byte, then the length.
        None => ctx_hash.update(&[0]),
        Some(v) => {
            ctx_hash.update(&[1]);
            ctx_hash.update(&(v.len() as u64).to_be_bytes());
            ctx_hash.update(v.as_bytes());
        }
    };
    fields.into_iter().for_each(&mut field);
    for (name, value) in startup {
        field(Some(name));
        field(Some(value));
    }
    Bytes::copy_from_slice(ctx_hash.finish().as_ref())
}

enum Failure {
    Retry(UpstreamError),
    Refuse(PgError),
}

/// A server connection lent for `identity` (its database and startup settings); counts the
/// waits and failures of `pool.acquire` in the metrics.
pub(super) async fn acquire(shared: &Shared, identity: &Identity) -> Result<Lease, PoolError> {
    let started = std::time::Instant::now();
    let result = shared.pool.acquire(&identity.database, &identity.key, &identity.startup).await;
    shared.metrics.pool_wait.observe(started.elapsed().as_secs_f64());
    if let Err(PoolError::Connect(_)) = &result {
        shared.metrics.upstream_error("connect");
    }
    result
}

/// The error a client gets when no connection can be lent; `fatal` at session start.
pub(super) fn pool_error(e: &PoolError, fatal: bool) -> PgError {
    match e {
        PoolError::Timeout(_) | PoolError::QueueFull(_) => ProxyError::PoolBusy { reason: e.to_string(), fatal },
        // The server refused a client's startup setting: its own error. Authentication
        // errors are the proxy's role's, not the client's: "unavailable".
        PoolError::Connect(UpstreamError::Server { code, message }) if !code.starts_with("28") => {
            ProxyError::SessionRefused { code: code.clone(), message: message.clone(), fatal }
        }
        PoolError::Connect(e) => ProxyError::UpstreamUnavailable { reason: e.to_string(), fatal },
    }
    .into()
}

fn upstream_unavailable(e: &UpstreamError) -> PgError {
    ProxyError::UpstreamUnavailable { reason: e.to_string(), fatal: true }.into()
}

/// Resets the connection if needed and injects the first context, in one round trip.
async fn adopt(mut lease: Lease, identity: &Identity) -> Result<Lease, Failure> {
    let (mut batch, _) = super::adoption::adoption_batch(&mut lease, identity);
    crate::protocol::frontend::sync(&mut batch);
    let outcome = lease.run_setup(&batch).await.map_err(Failure::Retry)?;
    if let Some(e) = outcome.error {
        return Err(Failure::Refuse(
            ProxyError::SessionRefused { code: e.code, message: e.message, fatal: true }.into(),
        ));
    }
    super::adoption::adopted(&mut lease, identity);
    Ok(lease)
}

async fn end(hs: &mut Handshake, shared: &Shared, e: PgError) -> SessionError {
    shared.metrics.client_error(&e.code);
    let mut buf = BytesMut::new();
    e.encode(&mut buf);
    let _ = hs.stream.write_all(&buf).await;
    SessionError::Ended(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(claims: serde_json::Value) -> TenantContext {
        TenantContext { tenant: "1".into(), role: None, claims, expires_at: Some(100), subject: Some("a".into()) }
    }

    #[test]
    fn the_identity_key_covers_every_injected_value() {
        let base = ctx(serde_json::json!({"tenant_id": 1, "team": "red"}));
        let key = identity_key(&base, &[]);
        assert_eq!(key.len(), 32);
        assert_eq!(key, identity_key(&base.clone(), &[]), "deterministic");
        let variants = [
            ctx(serde_json::json!({"tenant_id": 1, "team": "blue"})),
            TenantContext { role: Some("r".into()), ..base.clone() },
            TenantContext { role: Some(String::new()), ..base.clone() },
            TenantContext { subject: None, ..base.clone() },
            TenantContext { expires_at: None, ..base.clone() },
            TenantContext { tenant: "2".into(), ..base.clone() },
        ];
        for other in &variants {
            assert_ne!(identity_key(other, &[]), key, "{other:?}");
        }
        let settings = [("application_name".to_string(), "x".to_string())];
        assert_ne!(identity_key(&base, &settings), key);
        // Length prefixes: moving a byte from one field to the next changes the key.
        let split = [("ab".to_string(), "c".to_string())];
        let moved = [("a".to_string(), "bc".to_string())];
        assert_ne!(identity_key(&base, &split), identity_key(&base, &moved));
    }
}
