//! Client messages: checked (message type, reserved names, token expiry), the
//! transaction start handled, then forwarded (with statement names translated in
//! transaction mode) and recorded in the tracker.

use bytes::Bytes;

use super::SessionError;
use super::relay::{Exit, Relay};
use super::statements::Out;
use super::tracker::{Kind, OutOfStep, Owner};
use crate::auth::now_unix;
use crate::policy::guard::{Refusal, Rule};
use crate::policy::{RESERVED_PREFIX, SqlText};
use crate::protocol::tag::{client, status};
use crate::protocol::{Frame, PgError, ProtocolError, ProxyError, Severity, backend, codec, frontend};

impl Relay<'_> {
    pub(super) async fn process_client(&mut self) -> Result<Option<Exit>, SessionError> {
        let limit = self.shared.live().config.limits.max_message_bytes;
        while !self.paused_for_injection() {
            if self.held_refusal.is_some() {
                if let Err(e) = self.resolve_held_refusal() {
                    return Ok(Some(self.out_of_step(e)));
                }
                continue;
            }
            if let Some(msg) = self.held_reset.take() {
                if let Some(exit) = self.on_client_message(msg).await? {
                    return Ok(Some(exit));
                }
                continue;
            }
            let continuing = self.client_in.is_streaming();
            let frame = match self.client_in.next(|tag| tag == client::COPY_DATA, limit) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Ok(Some(Exit::Fatal(client_protocol_error(&e)))),
            };
            match frame {
                Frame::Piece(bytes) if self.server.is_some() => {
                    if bytes.first() == Some(&client::COPY_DATA) && !continuing {
                        // The first piece of a CopyData streamed to the server.
                        if let Err(e) = self.track(Kind::CopyData, Owner::Client) {
                            return Ok(Some(self.out_of_step(e)));
                        }
                    }
                    self.to_server.extend_from_slice(&bytes);
                }
                Frame::Piece(_) => {}
                Frame::Message(msg) => {
                    if let Some(exit) = self.on_client_message(msg).await? {
                        return Ok(Some(exit));
                    }
                }
            }
        }
        Ok(None)
    }

    async fn on_client_message(&mut self, msg: Bytes) -> Result<Option<Exit>, SessionError> {
        let tag = msg[0];
        if tag == client::TERMINATE {
            return Ok(Some(Exit::ClientGone));
        }
        if self.skipping {
            if tag == client::SYNC {
                self.skipping = false;
                self.batch_start = true;
                backend::ready_for_query(&mut self.to_client, self.status);
            }
            return Ok(None);
        }
        if !matches!(
            tag,
            client::QUERY
                | client::PARSE
                | client::BIND
                | client::EXECUTE
                | client::DESCRIBE
                | client::CLOSE
                | client::SYNC
                | client::FLUSH
                | client::FUNCTION_CALL
                | client::COPY_DATA
                | client::COPY_DONE
                | client::COPY_FAIL
        ) {
            return Ok(Some(Exit::Fatal(ProxyError::InvalidMessageType { tag }.into())));
        }
        if tag == client::QUERY
            && self.batch_start
            && self.tracker.batches_in_flight() > 0
            && !self.tracker.copying_in()
        {
            let resets = frontend::sql_text(tag, codec::body(&msg)).is_some_and(|t| SqlText::new(t).resets_session());
            if resets {
                // Whether it starts a transaction (and so may end with a reset) is known once
                // the batches in flight are answered (a driver's unawaited Close and Sync).
                self.held_reset = Some(msg);
                return Ok(None);
            }
        }
        // Scoped to the tenant first: the guard and the rest see what the server will run.
        let (msg, scope_refusal) = self.scope_to_tenant(msg).await;
        let body = codec::body(&msg);
        let Some(names) = frontend::referenced_names(tag, body) else {
            return Ok(Some(Exit::Fatal(client_protocol_error(&ProtocolError::Malformed(tag as char)))));
        };
        let reserved_name = names.iter().any(|n| n.starts_with(RESERVED_PREFIX));
        let sql = frontend::sql_text(tag, body);
        let refusal = match (reserved_name, sql) {
            (true, _) => Some(Refusal { rule: Rule::ReservedName, error: ProxyError::ReservedName.into() }),
            // Names in SQL (EXECUTE, DEALLOCATE, PREPARE share the protocol's), however spelled,
            // are the guard's: it parses them even when its other rules are off.
            (false, Some(sql)) => {
                let starts_transaction = tag == client::QUERY
                    && self.batch_start
                    && self.tracker.batches_in_flight() == 0
                    && self.status == status::IDLE;
                let guard = self.shared.live().guard.clone();
                let role = self.identity.context.role.as_deref();
                guard.check_message_sql(msg.slice_ref(sql), role, starts_transaction).await.err()
            }
            (false, None) if tag == client::FUNCTION_CALL => {
                let oid = body.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                self.shared.live().guard.check_function_call(oid, self.identity.context.role.as_deref()).err()
            }
            (false, None) => None,
        };
        let refusal = scope_refusal.or(refusal);
        let text = sql.map(SqlText::new);
        if refusal.is_none() && self.deallocated_locally(tag, sql.zip(text.as_ref())) {
            return Ok(None);
        }
        let refusal = refusal.map(|r| {
            self.shared.metrics.guard_rejection(r.rule.name());
            tracing::info!(message = r.error.message, "statement refused");
            r.error
        });
        if matches!(tag, client::QUERY | client::EXECUTE) {
            self.tenant_metrics.queries.inc();
        }
        let simple = matches!(tag, client::QUERY | client::FUNCTION_CALL);
        self.track_statement(tag, body, text.as_ref());
        let starts_batch = self.batch_start;
        if self.batch_start && !matches!(tag, client::COPY_DATA | client::COPY_DONE | client::COPY_FAIL) {
            self.batch_start = false;
            self.batch_failed = false;
            if let Some(exit) = self.check_expiry() {
                return Ok(Some(exit));
            }
            // A refused Query runs nothing, so it needs no context.
            let runs_something = !(simple && refusal.is_some());
            if runs_something && !self.begin_transaction(tag, body, text.as_ref()).await? {
                return Ok(None);
            }
        }
        if self.server.is_none() {
            // Only a refused Query (answered here, nothing in flight) or stray COPY data.
            if let Some(error) = refusal.filter(|_| simple) {
                error.encode(&mut self.to_client);
                backend::ready_for_query(&mut self.to_client, self.status);
                self.batch_start = true;
            }
            return Ok(None);
        }
        let mut refusal = refusal;
        if self.transaction_mode()
            && !self.is_pinned()
            && refusal.is_none()
            && text.as_ref().is_some_and(SqlText::creates_session_state)
        {
            let cap = self.shared.live().config.pool.max_pinned_per_tenant;
            self.pin = self.shared.pins.try_pin(&self.identity.context.tenant, cap);
            if self.pin.is_some() {
                tracing::debug!("session state created: the client keeps its server connection");
            } else {
                refusal = Some(ProxyError::PinLimit { cap }.into());
            }
        }
        match refusal {
            Some(error) if simple && !starts_batch && !self.tracker.copying_in() => {
                self.held_refusal = Some(error);
                return Ok(None);
            }
            Some(error) => {
                if let Err(e) = self.refuse(simple, error) {
                    return Ok(Some(self.out_of_step(e)));
                }
            }
            None if self.batch_failed && tag != client::SYNC => {}
            None => {
                if let Some(text) = text.as_ref().filter(|t| t.resets_session())
                    && let Some(server) = self.server.as_mut()
                {
                    // DISCARD/DEALLOCATE/RESET may drop the injection statement, every statement
                    // prepared on this connection and the settings: re-prepare and re-inject.
                    server.forget_context();
                    server.statements.clear();
                    if text.drops_all_statements() {
                        self.statements.forget_all();
                    }
                }
                if let Some(exit) = self.forward(msg, simple)? {
                    return Ok(Some(exit));
                }
            }
        }
        if matches!(tag, client::SYNC | client::QUERY | client::FUNCTION_CALL | client::COPY_DONE | client::COPY_FAIL) {
            // A Sync the server ignores (sent during COPY IN) ends nothing; the end of COPY
            // data may end a batch whose Sync came before the data.
            self.batch_start = self.tracker.last_ends_batch();
        }
        Ok(None)
    }

    /// Sends a client message, translating statement names in transaction mode.
    fn forward(&mut self, msg: Bytes, simple: bool) -> Result<Option<Exit>, SessionError> {
        let transaction_mode = self.transaction_mode();
        let Some(server) = self.server.as_mut() else { return Ok(None) };
        let outs = if transaction_mode {
            let capacity = self.shared.live().config.pool.max_prepared_statements;
            match self.statements.translate(msg, &mut server.statements, capacity, self.pin.is_some()) {
                Ok(outs) => outs,
                Err(e) if e.severity == Severity::Fatal => return Ok(Some(Exit::Fatal(e))),
                Err(e) => return Ok(self.refuse(simple, e).err().map(|e| self.out_of_step(e))),
            }
        } else {
            let kind = Kind::of(msg[0], codec::body(&msg));
            vec![Out { bytes: msg, kind, owner: Owner::Client }]
        };
        for out in outs {
            if let Some(kind) = out.kind
                && let Err(e) = self.track(kind, out.owner)
            {
                // Nothing of this message reaches the server.
                return Ok(Some(self.out_of_step(e)));
            }
            self.to_server.extend_from_slice(&out.bytes);
        }
        Ok(None)
    }

    /// Remembers which prepared statements need the awaited injection (see `isolating_statements`).
    /// Transaction pooling: SQL `DEALLOCATE name` of one of the client's protocol-level
    /// statements, which live on the server under proxy names. Answered here, as PostgreSQL
    /// would answer it, when it is a whole Query and nothing is in flight: the client's name
    /// is forgotten (drivers such as pgx, PDO and ActiveRecord deallocate what their
    /// statement caches evict). In a failed block it goes to the server, which refuses it.
    fn deallocated_locally(&mut self, tag: u8, sql: Option<(&[u8], &SqlText)>) -> bool {
        let Some((sql, text)) = sql.filter(|_| tag == client::QUERY && self.transaction_mode()) else { return false };
        if !self.batch_start || !self.tracker.is_empty() || self.status == status::FAILED {
            return false;
        }
        let Some(name) = text.deallocated_statement(sql) else { return false };
        if !self.statements.forget(name.as_bytes()) {
            return false;
        }
        self.isolating_statements.remove(name.as_bytes());
        backend::command_complete(&mut self.to_client, "DEALLOCATE");
        backend::ready_for_query(&mut self.to_client, self.status);
        true
    }

    fn track_statement(&mut self, tag: u8, body: &[u8], text: Option<&SqlText>) {
        let closes_statement = tag == client::CLOSE && body.first() == Some(&client::TARGET_STATEMENT);
        if tag != client::PARSE && !closes_statement {
            return;
        }
        let Some(&name) = frontend::referenced_names(tag, body).as_deref().and_then(<[_]>::first) else { return };
        let isolating = tag == client::PARSE && text.is_some_and(SqlText::needs_own_transaction);
        if isolating {
            self.isolating_statements.insert(name.to_vec());
        } else if !self.isolating_statements.is_empty() {
            self.isolating_statements.remove(name);
        }
    }

    fn check_expiry(&self) -> Option<Exit> {
        self.identity.context.is_expired_at(now_unix(), self.shared.live().verifier.leeway_s()).then(|| {
            tracing::info!("token expired during the session");
            Exit::Fatal(ProxyError::TokenExpired.into())
        })
    }

    /// A refused Query or FunctionCall inside an extended-protocol batch: PostgreSQL skips it
    /// without a word when an earlier message of the batch failed, and answers it (error,
    /// ReadyForQuery) otherwise. Called once the server's answers say which.
    fn resolve_held_refusal(&mut self) -> Result<(), OutOfStep> {
        let Some(error) = self.held_refusal.take() else { return Ok(()) };
        if !self.tracker.is_discarding() {
            self.refuse(true, error)?;
        }
        self.batch_start = self.tracker.last_ends_batch();
        Ok(())
    }

    /// Fails the current batch upstream in place of the refused message.
    fn refuse(&mut self, simple: bool, error: PgError) -> Result<(), OutOfStep> {
        if self.batch_failed {
            return Ok(());
        }
        self.batch_failed = true;
        self.track(Kind::Bind, Owner::Refusal(error))?;
        frontend::bind_text(&mut self.to_server, "rlsproxy_refused", &[]);
        if simple {
            self.track(Kind::Sync, Owner::Client)?;
            frontend::sync(&mut self.to_server);
        }
        Ok(())
    }
}

fn client_protocol_error(e: &ProtocolError) -> PgError {
    match e {
        ProtocolError::TooLarge { .. } => ProxyError::ClientMessageTooLarge { detail: e.to_string() }.into(),
        _ => ProxyError::ClientProtocol { detail: e.to_string() }.into(),
    }
}
