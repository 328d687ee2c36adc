//! Vetting a client message before anything of it reaches the server: its type, the
//! per-tenant scoping of its SQL, reserved statement names, the guard, and the session
//! state that would pin the client to its connection.

use bytes::Bytes;

use super::relay::{Exit, Relay};
use crate::policy::guard::{Refusal, Rule};
use crate::policy::{RESERVED_PREFIX, SqlText};
use crate::protocol::tag::{client, status};
use crate::protocol::{PgError, ProtocolError, ProxyError, backend, codec, frontend};

/// A client message that passed or was refused.
pub(super) struct Vetted {
    /// As the server will get it (scoped to the tenant).
    pub msg: Bytes,
    /// Its SQL, if it has any.
    pub text: Option<SqlText>,
    /// Why it must not run, if so.
    pub refusal: Option<PgError>,
}

/// Whether a frontend may send message type `tag` after the startup.
pub(crate) fn is_frontend_message(tag: u8) -> bool {
    matches!(
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
    )
}

impl Relay<'_> {
    /// A Query that resets the session, arriving while earlier batches are unanswered: whether
    /// it starts a transaction (and so may end with a reset) is known once they are (a
    /// driver's unawaited Close and Sync), so it waits.
    pub(super) fn must_hold_reset(&self, msg: &Bytes) -> bool {
        let tag = msg[0];
        tag == client::QUERY
            && self.at_batch_start()
            && self.link.tracker.batches_in_flight() > 0
            && !self.link.tracker.copying_in()
            && frontend::sql_text(tag, codec::body(msg)).is_some_and(|t| SqlText::new(t).resets_session())
    }

    /// Scopes `msg` to the tenant, then checks its names and SQL. `Ok(None)`: answered here
    /// (a client statement's DEALLOCATE in transaction mode).
    pub(super) async fn vet(&mut self, msg: Bytes) -> Result<Option<Vetted>, Exit> {
        let tag = msg[0];
        // Scoped to the tenant first: the guard and the rest see what the server will run.
        let (msg, scope_refusal) = self.scope_to_tenant(msg).await;
        let body = codec::body(&msg);
        let Some(names) = frontend::referenced_names(tag, body) else {
            return Err(Exit::Fatal(client_protocol_error(&ProtocolError::Malformed(tag as char))));
        };
        let sql = frontend::sql_text(tag, body);
        let refusal = match names.iter().any(|n| n.starts_with(RESERVED_PREFIX)) {
            true => Some(Refusal { rule: Rule::ReservedName, error: ProxyError::ReservedName.into() }),
            false => self.guard_refusal(&msg, sql).await,
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
        Ok(Some(Vetted { msg, text, refusal }))
    }

    /// The guard's verdict on the SQL of `msg`, or on the function a FunctionCall calls. Names
    /// in SQL (EXECUTE, DEALLOCATE, PREPARE share the protocol's), however spelled, are the
    /// guard's too: it parses them even when its other rules are off.
    async fn guard_refusal(&self, msg: &Bytes, sql: Option<&[u8]>) -> Option<Refusal> {
        let tag = msg[0];
        let guard = self.shared.live().guard.clone();
        let role = self.state.identity.context.role.as_deref();
        match sql {
            Some(sql) => {
                let starts_transaction = tag == client::QUERY
                    && self.at_batch_start()
                    && self.link.tracker.batches_in_flight() == 0
                    && self.link.status == status::IDLE;
                guard.check_message_sql(msg.slice_ref(sql), role, starts_transaction).await.err()
            }
            None if tag == client::FUNCTION_CALL => {
                let body = codec::body(msg);
                let oid = body.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                guard.check_function_call(oid, role).err()
            }
            None => None,
        }
    }

    /// Transaction pooling: SQL `DEALLOCATE name` of one of the client's protocol-level
    /// statements, which live on the server under proxy names. Answered here, as PostgreSQL
    /// would answer it, when it is a whole Query and nothing is in flight: the client's name
    /// is forgotten (drivers such as pgx, PDO and ActiveRecord deallocate what their
    /// statement caches evict). In a failed block it goes to the server, which refuses it.
    fn deallocated_locally(&mut self, tag: u8, sql: Option<(&[u8], &SqlText)>) -> bool {
        let Some((sql, text)) = sql.filter(|_| tag == client::QUERY && self.transaction_mode()) else { return false };
        if !self.at_batch_start() || !self.link.tracker.is_empty() || self.link.status == status::FAILED {
            return false;
        }
        let Some(name) = text.deallocated_statement(sql) else { return false };
        if !self.state.statements.forget(name.as_bytes()) {
            return false;
        }
        self.state.isolating_statements.remove(name.as_bytes());
        backend::command_complete(&mut self.io.to_client, "DEALLOCATE");
        backend::ready_for_query(&mut self.io.to_client, self.link.status);
        true
    }

    /// Transaction mode: SQL that creates session state keeps the client on its connection
    /// (pins it), within `pool.max_pinned_per_tenant`; past it, the refusal.
    pub(super) fn pin_for_session_state(&mut self, text: Option<&SqlText>) -> Option<PgError> {
        if !self.transaction_mode() || self.is_pinned() || !text.is_some_and(SqlText::creates_session_state) {
            return None;
        }
        let cap = self.shared.live().config.pool.max_pinned_per_tenant;
        self.state.pin = self.shared.pins.try_pin(&self.state.identity.context.tenant, cap);
        if self.state.pin.is_some() {
            tracing::debug!("session state created: the client keeps its server connection");
            return None;
        }
        Some(ProxyError::PinLimit { cap }.into())
    }
}

/// The error for bytes from the client that are not the protocol.
pub(super) fn client_protocol_error(e: &ProtocolError) -> PgError {
    match e {
        ProtocolError::TooLarge { .. } => ProxyError::ClientMessageTooLarge { detail: e.to_string() }.into(),
        _ => ProxyError::ClientProtocol { detail: e.to_string() }.into(),
    }
}
