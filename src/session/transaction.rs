//! A transaction's first message: the server connection for it (lent from the
//! pool in transaction mode), reset if it carries another identity's session
//! state, and the tenant context injected (pipelined or awaited; see `relay`).
//! Also the other end: giving the connection back when the transaction is over.

use bytes::BytesMut;

use super::relay::Relay;
use super::replies::injection_failed;
use super::start::pool_error;
use super::tracker::{Kind, Owner};
use super::{Identity, SessionError};
use crate::config::PoolMode;
use crate::frontend::cancel::CancelTarget;
use crate::policy::isolation;
use crate::protocol::{PgError, backend, frontend};
use crate::upstream::{ServerConn, UpstreamError};

/// The awaited preparation of `conn` for `identity`, and how many ReadyForQuery it gets:
/// `DISCARD ALL` when the connection carries another identity's state, the client's startup
/// settings when the connection is not already this identity's, the injection (prepared
/// first when needed), one Sync.
pub(super) fn adoption_batch(conn: &ServerConn, identity: &Identity) -> (BytesMut, usize) {
    let mut batch = BytesMut::new();
    let mut readies = 1;
    let foreign = conn.owner.as_ref() != Some(&identity.key);
    if foreign && conn.owner.is_some() {
        frontend::query(&mut batch, "DISCARD ALL");
        readies += 1;
    }
    if foreign && !identity.settings.is_empty() {
        let calls: Vec<String> = (0..identity.settings.len())
            .map(|i| format!("set_config(${}, ${}, false)", 2 * i + 1, 2 * i + 2))
            .collect();
        let values: Vec<&str> = identity.settings.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]).collect();
        frontend::parse(&mut batch, "", &format!("SELECT {}", calls.join(", ")));
        frontend::bind_text(&mut batch, "", &values);
        frontend::execute(&mut batch);
    }
    if readies > 1 || !conn.injection_prepared {
        batch.extend_from_slice(&identity.injection.prepare);
    }
    batch.extend_from_slice(&identity.injection.bind_execute);
    frontend::sync(&mut batch);
    (batch, readies)
}

/// Records a successful adoption batch.
pub(super) fn adopted(conn: &mut ServerConn, identity: &Identity) {
    if conn.owner.as_ref() != Some(&identity.key) && conn.owner.is_some() {
        conn.statements.clear();
    }
    conn.owner = Some(identity.key.clone());
    conn.injection_prepared = true;
    conn.context = Some(identity.injection.bind_execute.clone());
}

impl Relay<'_> {
    /// Prepares the server side for a batch starting with this message; false when the proxy
    /// has answered the message itself (an error) and it must not be sent.
    pub(super) async fn begin_transaction(&mut self, tag: u8, body: &[u8]) -> Result<bool, SessionError> {
        if self.tracker.batches_in_flight() > 0 || self.status != b'I' {
            // Inside a block or behind a pipelined batch: the context is this client's already.
            return Ok(true);
        }
        let isolating_sql = frontend::sql_text(tag, body).is_some_and(isolation::needs_own_transaction)
            || tag == b'B' && frontend::bound_statement(body).is_some_and(|s| self.isolating_statements.contains(s));
        for attempt in 1..=2 {
            let fresh = self.server.is_none();
            if fresh {
                match self.shared.pool.acquire(&self.identity.database, &self.identity.key).await {
                    Ok(lease) => {
                        self.cancel.set_target(Some(CancelTarget::of(&lease)));
                        tracing::Span::current().record("backend_pid", lease.pid());
                        self.server = Some(lease);
                    }
                    Err(e) => {
                        self.fail_locally(tag, pool_error(&e, "ERROR"));
                        return Ok(false);
                    }
                }
            }
            let Some(server) = self.server.as_mut() else { return Ok(false) };
            let ready = server.owner.as_ref() == Some(&self.identity.key)
                && server.context.as_ref() == Some(&self.identity.injection.bind_execute);
            if ready && !isolating_sql {
                self.to_server.extend_from_slice(&self.identity.injection.bind_execute);
                let before_simple = matches!(tag, b'Q' | b'F');
                self.tracker.sent(Kind::Bind, Owner::Injection { before_simple });
                self.tracker.sent(Kind::Execute, Owner::Injection { before_simple });
                return Ok(true);
            }
            match self.awaited_injection().await {
                Ok(None) => return Ok(true),
                Ok(Some(error)) => {
                    self.fail_locally(tag, error);
                    return Ok(false);
                }
                // A connection that died while idle in the pool: try once more with another.
                Err(SessionError::Upstream(e)) if fresh && attempt == 1 && is_io(&e) => {
                    tracing::debug!(error = %e, "lent connection was dead; retrying");
                    self.cancel.set_target(None);
                    self.server = None;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Runs the adoption batch and waits for it; `Some(error)` when it failed.
    async fn awaited_injection(&mut self) -> Result<Option<PgError>, SessionError> {
        self.flush().await?;
        let Some(server) = self.server.as_mut() else { return Ok(None) };
        let (batch, readies) = adoption_batch(server, &self.identity);
        let outcome = server.run_batches(&batch, readies).await?;
        self.to_client.extend_from_slice(&outcome.passthrough);
        self.status = outcome.status;
        let Some(e) = outcome.error else {
            adopted(server, &self.identity);
            return Ok(None);
        };
        server.context = None;
        server.injection_prepared = false;
        if readies > 1 {
            // The reset may not have happened: this connection may still hold another
            // identity's state, so nobody gets it again.
            self.cancel.set_target(None);
            self.server = None;
        }
        let error = injection_failed(e);
        tracing::warn!(code = error.code, message = error.message, "context injection failed");
        Ok(Some(error))
    }

    /// Answers the batch starting with `tag` with `error`, as the server would.
    fn fail_locally(&mut self, tag: u8, error: PgError) {
        error.encode(&mut self.to_client);
        if matches!(tag, b'Q' | b'F' | b'S') {
            backend::ready_for_query(&mut self.to_client, self.status);
            self.batch_start = true;
        } else {
            self.skipping = true;
        }
    }

    /// Transaction mode: returns the connection once the transaction is over and nothing is
    /// in flight or half-sent, unless the client is pinned to it.
    pub(super) async fn give_back_if_done(&mut self) {
        if self.shared.config.pool.mode != PoolMode::Transaction || self.is_pinned() {
            return;
        }
        let done = self.is_idle()
            && self.batch_start
            && self.to_server.is_empty()
            && self.server.as_ref().is_some_and(|s| s.framer.is_empty());
        if !done {
            return;
        }
        self.cancel.set_target(None);
        if let Some(lease) = self.server.take() {
            lease.give_back().await;
        }
    }
}

fn is_io(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Io(_))
}
