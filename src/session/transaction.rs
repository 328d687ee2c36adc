//! A transaction's first message: the server connection for it (lent from the
//! pool in transaction mode), reset if it carries another identity's session
//! state, and the tenant context injected (pipelined or awaited; see `relay`).
//! Also the other end: giving the connection back when the transaction is over.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::adoption::{adopted, adoption_batch};
use super::relay::Relay;
use super::replies::injection_failed;
use super::start::{acquire, pool_error};
use super::state::Batch;
use super::tracker::{Kind, OutOfStep, Owner};
use super::{Identity, SessionError};
use crate::admin::clients::ClientState;
use crate::config::PoolMode;
use crate::frontend::cancel::CancelTarget;
use crate::policy::SqlText;
use crate::protocol::tag::{client, status};
use crate::protocol::{PgError, backend, frontend};
use crate::upstream::{ServerConn, UpstreamError};

impl Relay<'_> {
    /// Prepares the server side for a batch starting with this message; false when the proxy
    /// has answered the message itself (an error) and it must not be sent.
    pub(super) async fn begin_transaction(
        &mut self,
        tag: u8,
        body: &[u8],
        text: Option<&SqlText>,
    ) -> Result<bool, SessionError> {
        if self.link.tracker.batches_in_flight() > 0 || self.link.status != status::IDLE {
            // Inside a block or behind a pipelined batch: the context is this client's already.
            return Ok(true);
        }
        self.tenant_metrics.transactions.inc();
        self.link.transaction_started.get_or_insert_with(Instant::now);
        let isolating_sql = text.is_some_and(SqlText::needs_own_transaction)
            || tag == client::BIND
                && frontend::bound_statement(body).is_some_and(|s| self.state.isolating_statements.contains(s));
        for attempt in 1..=2 {
            let fresh = self.link.server.is_none();
            if fresh && !self.lend(tag).await {
                return Ok(false);
            }
            self.entry.set_state(ClientState::Active);
            let Some(server) = self.link.server.as_mut() else { return Ok(false) };
            let ready = holds_context(server, &self.state.identity);
            let verify = self.state.statements.to_verify(tag, body, &mut server.statements);
            if ready && !isolating_sql && verify.is_none() {
                // Nothing is in flight here: the tracker cannot be out of step.
                self.pipeline_injection(tag, text.is_some_and(SqlText::opens_block))
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                return Ok(true);
            }
            // Boxed: the awaited path is rare, and its state would weigh on every idle session.
            match Box::pin(self.awaited_injection(verify)).await {
                Ok(None) => return Ok(true),
                Ok(Some(error)) => {
                    self.fail_locally(tag, &error);
                    return Ok(false);
                }
                // A connection that died (or hangs) while idle in the pool: try once more with
                // another; this one is closed.
                Err(SessionError::Upstream(e)) if fresh && attempt == 1 && is_dead(&e) => {
                    tracing::debug!(error = %e, "lent connection was dead; retrying");
                    self.link.cancel.set_target(None);
                    self.link.server = None;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Lends the client a server connection; false when none could be had (the client has
    /// its error).
    async fn lend(&mut self, tag: u8) -> bool {
        self.entry.set_state(ClientState::Waiting);
        match acquire(self.shared, &self.state.identity).await {
            Ok(lease) => {
                self.entry.set_backend_pid(lease.pid());
                self.link.cancel.set_target(Some(CancelTarget::of(&lease)));
                tracing::Span::current().record("backend_pid", lease.pid());
                self.link.server = Some(lease);
                true
            }
            Err(e) => {
                self.fail_locally(tag, &encoded(&pool_error(&e, false)));
                false
            }
        }
    }

    /// Sends the injection in front of the client's message without waiting. Normally it
    /// shares the client's implicit transaction, so that a failure makes the server skip the
    /// client's statements.
    ///
    /// Before `BEGIN`/`START TRANSACTION` it cannot: its snapshot would forbid a later
    /// `SET TRANSACTION ISOLATION LEVEL` in the block. There it runs in transactions of its
    /// own, still pipelined: every setting emptied and committed (plain SQL), then the context
    /// set. If that last step fails (say a client's hidden `DEALLOCATE` dropped the statement),
    /// the block that follows runs with an empty context (policies fail closed) and the
    /// session ends.
    fn pipeline_injection(&mut self, tag: u8, own_sync: bool) -> Result<(), OutOfStep> {
        let owner = || Owner::Injection {
            before_simple: matches!(tag, client::QUERY | client::FUNCTION_CALL) && !own_sync,
            own_sync,
        };
        if own_sync {
            self.io.to_server.extend_from_slice(&self.state.identity.injection.clear);
            self.track(Kind::Query, Owner::Quiet)?;
        }
        self.io.to_server.extend_from_slice(&self.state.identity.injection.bind_execute);
        for &kind in self.state.identity.injection.kinds {
            self.track(kind, owner())?;
        }
        if own_sync {
            frontend::sync(&mut self.io.to_server);
            self.track(Kind::Sync, Owner::Quiet)?;
        }
        Ok(())
    }

    /// Tells the client the parameter values of the connection now serving it that differ
    /// from what it was last told; values a reset passed through on the way are not reported.
    pub(super) fn report_parameter_changes(&mut self) {
        let Some(server) = self.link.server.as_ref() else { return };
        for (name, value) in &server.params {
            if self.state.client_params.get(name) != Some(value) {
                backend::parameter_status(&mut self.io.to_client, name, value);
                self.state.client_params.insert(name.clone(), value.clone());
            }
        }
    }

    /// Runs the adoption batch and waits for it; `Some(error)` (an ErrorResponse, encoded)
    /// when it failed. With `verify`, the batch also prepares that client statement again and
    /// checks its result shape.
    async fn awaited_injection(&mut self, verify: Option<Vec<u8>>) -> Result<Option<Bytes>, SessionError> {
        self.flush().await?;
        let capacity = self.shared.live().config.pool.max_prepared_statements;
        let Some(server) = self.link.server.as_mut() else { return Ok(None) };
        let foreign = server.owner.as_ref() != Some(&self.state.identity.key);
        let (mut batch, adoption_readies) = adoption_batch(server, &self.state.identity);
        frontend::sync(&mut batch);
        if let Some(client) = &verify {
            // A segment of its own: its failure is the client statement's, not the injection's.
            self.state.statements.verify_batch(client, &mut server.statements, capacity, &mut batch);
            frontend::sync(&mut batch);
        }
        let outcome = server.run_setup(&batch).await?;
        if !foreign {
            // Notices and notifications of this identity's own session.
            super::notify::deliver_async_messages(
                &mut self.io.to_client,
                &self.state.identity.context.tenant,
                &outcome.passthrough,
            );
        }
        self.link.status = outcome.status;
        let adoption_failed = outcome.error.is_some() && outcome.error_segment < adoption_readies;
        if adoption_failed {
            server.forget_context();
        } else {
            adopted(server, &self.state.identity);
        }
        self.report_parameter_changes();
        if let (Some(client), false) = (verify, adoption_failed) {
            return Ok(match outcome.error_raw {
                // The statement no longer prepares (e.g. its table is gone): the server's error.
                Some(raw) => {
                    if let Some(server) = self.link.server.as_mut() {
                        server.statements.clear();
                    }
                    Some(raw)
                }
                None => {
                    self.state.statements.verify(&client, outcome.description.as_deref()).err().map(|e| encoded(&e))
                }
            });
        }
        let Some(e) = outcome.error else { return Ok(None) };
        if adoption_readies > 1 {
            // The reset may not have happened: this connection may still hold another
            // identity's state, so nobody gets it again.
            self.link.cancel.set_target(None);
            self.link.server = None;
        }
        let error = injection_failed(e);
        self.shared.metrics.injection_failures.inc();
        tracing::warn!(code = error.code, message = error.message, "context injection failed");
        Ok(Some(encoded(&error)))
    }

    /// Answers the batch starting with `tag` with `error` (an encoded ErrorResponse), as the
    /// server would.
    fn fail_locally(&mut self, tag: u8, error: &[u8]) {
        self.io.to_client.extend_from_slice(error);
        if matches!(tag, client::QUERY | client::FUNCTION_CALL | client::SYNC) {
            backend::ready_for_query(&mut self.io.to_client, self.link.status);
            self.link.batch = Batch::Start;
        } else {
            self.link.batch = Batch::Skipping;
        }
    }

    /// Transaction mode: returns the connection once the transaction is over and nothing is
    /// in flight or half-sent, unless the client is pinned to it.
    pub(super) fn give_back_if_done(&mut self) {
        if self.shared.pool_mode != PoolMode::Transaction || self.is_pinned() {
            return;
        }
        let done = self.is_idle()
            && self.at_batch_start()
            && self.io.to_server.is_empty()
            && self.link.server.as_ref().is_some_and(|s| s.framer.is_empty());
        if !done {
            return;
        }
        if self.io.client_in.is_streaming() {
            // A client message is half forwarded: the next borrower's bytes would complete it.
            tracing::info!("transaction over with a client message half sent; closing the server connection");
            self.close_server();
            return;
        }
        self.link.cancel.set_target(None);
        self.entry.set_backend_pid(0);
        if let Some(lease) = self.link.server.take() {
            lease.give_back();
        }
    }

    /// Records the end of a transaction (metrics, client state) once the session is idle.
    pub(super) fn end_transaction_if_done(&mut self) {
        if !(self.is_idle() && self.at_batch_start()) {
            return;
        }
        if let Some(started) = self.link.transaction_started.take() {
            self.shared.metrics.transaction_duration.observe(started.elapsed().as_secs_f64());
            self.entry.set_state(ClientState::Idle);
        }
    }
}

fn encoded(error: &PgError) -> Bytes {
    let mut buf = BytesMut::new();
    error.encode(&mut buf);
    buf.freeze()
}

/// The connection is gone (closed, or the server ended it with a FATAL error) or does not
/// answer its set-up.
fn is_dead(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Io(_) | UpstreamError::Server { .. } | UpstreamError::SetupTimeout)
}

/// Whether `server` holds `identity`'s context, committed, and (strict mode) admitted recently
/// enough: then the injection may be pipelined.
fn holds_context(server: &ServerConn, identity: &Identity) -> bool {
    server.owner.as_ref() == Some(&identity.key)
        && server.context.as_ref() == Some(&identity.injection.bind_execute)
        && identity
            .injection
            .refresh
            .is_none_or(|refresh| server.adopted_at.is_some_and(|adopted| adopted.elapsed() < refresh))
}
