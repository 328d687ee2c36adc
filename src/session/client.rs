//! Client messages: vetted (`vet`), the transaction start handled (token expiry, a
//! connection lent, the context injected), then forwarded (with statement names translated
//! in transaction mode) and recorded in the tracker, or refused as the server would refuse
//! them.

use bytes::Bytes;

use super::SessionError;
use super::relay::{Exit, Flow, Relay};
use super::state::Batch;
use super::statements::Out;
use super::tracker::{Kind, OutOfStep, Owner};
use super::vet::{Vetted, client_protocol_error, is_frontend_message};
use crate::auth::now_unix;
use crate::policy::SqlText;
use crate::protocol::budget::BufferBudget;
use crate::protocol::tag::client;
use crate::protocol::{Frame, PgError, ProxyError, Severity, backend, codec, frontend};

impl Relay<'_> {
    pub(super) async fn process_client(&mut self) -> Result<Option<Exit>, SessionError> {
        let (limit, budget) = {
            let live = self.shared.live();
            (live.config.limits.max_message_bytes, live.config.limits.max_buffered_bytes)
        };
        while !self.paused_for_injection() {
            if self.held.refusal.is_some() {
                if let Err(e) = self.resolve_held_refusal() {
                    return Ok(Some(self.out_of_step(e)));
                }
                continue;
            }
            if let Some(msg) = self.held.reset.take() {
                if let Some(exit) = self.on_client_message(msg).await? {
                    return Ok(Some(exit));
                }
                continue;
            }
            let continuing = self.io.client_in.is_streaming();
            let frame = match self.io.client_in.next(|tag| tag == client::COPY_DATA, limit) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(self.reserve_for_pending(budget)),
                Err(e) => return Ok(Some(Exit::Fatal(client_protocol_error(&e)))),
            };
            if matches!(frame, Frame::Message(_)) {
                self.io.receiving = None;
            }
            match frame {
                Frame::Piece(bytes) if self.link.server.is_some() => {
                    if bytes.first() == Some(&client::COPY_DATA) && !continuing {
                        // The first piece of a CopyData streamed to the server.
                        if let Err(e) = self.track(Kind::CopyData, Owner::Client) {
                            return Ok(Some(self.out_of_step(e)));
                        }
                    }
                    self.io.to_server.extend_from_slice(&bytes);
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

    /// Reserves the share of `limits.max_buffered_bytes` of a large message whose bytes are
    /// still arriving; ends the session when the budget has no room for it.
    fn reserve_for_pending(&mut self, limit: usize) -> Option<Exit> {
        let len = self.io.client_in.pending_len().filter(|len| BufferBudget::counts(*len))?;
        if self.io.receiving.is_some() {
            return None;
        }
        match self.shared.buffers.try_reserve(len, limit) {
            Some(reservation) => {
                self.io.receiving = Some(reservation);
                None
            }
            None => {
                tracing::warn!(len, limit, "no room in limits.max_buffered_bytes for a client message");
                Some(Exit::Fatal(ProxyError::BufferBudget { len, limit }.into()))
            }
        }
    }

    async fn on_client_message(&mut self, msg: Bytes) -> Result<Option<Exit>, SessionError> {
        let tag = msg[0];
        if tag == client::TERMINATE {
            return Ok(Some(Exit::ClientGone));
        }
        if self.link.batch == Batch::Skipping {
            if tag == client::SYNC {
                self.link.batch = Batch::Start;
                backend::ready_for_query(&mut self.io.to_client, self.link.status);
            }
            return Ok(None);
        }
        if !is_frontend_message(tag) {
            return Ok(Some(Exit::Fatal(ProxyError::InvalidMessageType { tag }.into())));
        }
        if self.must_hold_reset(&msg) {
            self.held.reset = Some(msg);
            return Ok(None);
        }
        let Vetted { msg, text, refusal } = match self.vet(msg).await {
            Ok(Some(vetted)) => vetted,
            Ok(None) => return Ok(None),
            Err(exit) => return Ok(Some(exit)),
        };
        if matches!(tag, client::QUERY | client::EXECUTE) {
            self.tenant_metrics.queries.inc();
        }
        let simple = matches!(tag, client::QUERY | client::FUNCTION_CALL);
        self.track_statement(tag, codec::body(&msg), text.as_ref());
        let starts_batch = self.at_batch_start();
        if starts_batch && !matches!(tag, client::COPY_DATA | client::COPY_DONE | client::COPY_FAIL) {
            // A refused Query runs nothing, so it needs no context.
            let runs_something = !(simple && refusal.is_some());
            if let Flow::Stop(exit) = self.start_batch(&msg, text.as_ref(), runs_something).await? {
                return Ok(exit);
            }
        }
        if self.link.server.is_none() {
            // Only a refused Query (answered here, nothing in flight) or stray COPY data.
            if let Some(error) = refusal.filter(|_| simple) {
                self.send_error(&error);
                backend::ready_for_query(&mut self.io.to_client, self.link.status);
                self.link.batch = Batch::Start;
            }
            return Ok(None);
        }
        let refusal = refusal.or_else(|| self.pin_for_session_state(text.as_ref()));
        self.pass_or_refuse(msg, simple, starts_batch, text, refusal)
    }

    /// The first message of a batch: the token must still be valid, then the transaction
    /// starts (a connection lent, the context injected) if the message runs something.
    async fn start_batch(
        &mut self,
        msg: &Bytes,
        text: Option<&SqlText>,
        runs_something: bool,
    ) -> Result<Flow, SessionError> {
        self.link.batch = Batch::Open;
        if let Some(exit) = self.check_expiry() {
            return Ok(Flow::Stop(Some(exit)));
        }
        if runs_something && !self.begin_transaction(msg[0], codec::body(msg), text).await? {
            return Ok(Flow::Stop(None));
        }
        Ok(Flow::Go)
    }

    /// Forwards a message that passed, or fails its batch as the server would for `refusal`.
    fn pass_or_refuse(
        &mut self,
        msg: Bytes,
        simple: bool,
        starts_batch: bool,
        text: Option<SqlText>,
        refusal: Option<PgError>,
    ) -> Result<Option<Exit>, SessionError> {
        let tag = msg[0];
        match refusal {
            Some(error) if simple && !starts_batch && !self.link.tracker.copying_in() => {
                self.held.refusal = Some(error);
                return Ok(None);
            }
            Some(error) => {
                if let Err(e) = self.refuse(simple, error) {
                    return Ok(Some(self.out_of_step(e)));
                }
            }
            None if self.link.batch == Batch::Refused && tag != client::SYNC => {}
            None => {
                if let Some(text) = text.as_ref().filter(|t| t.resets_session())
                    && let Some(server) = self.link.server.as_mut()
                {
                    // DISCARD/DEALLOCATE/RESET may drop the injection statement, every statement
                    // prepared on this connection and the settings: re-prepare and re-inject.
                    server.forget_context();
                    server.statements.clear();
                    if text.drops_all_statements() {
                        self.state.statements.forget_all();
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
            self.batch_ended(self.link.tracker.last_ends_batch());
        }
        Ok(None)
    }

    /// Sends a client message, translating statement names in transaction mode.
    fn forward(&mut self, msg: Bytes, simple: bool) -> Result<Option<Exit>, SessionError> {
        let transaction_mode = self.transaction_mode();
        let Some(server) = self.link.server.as_mut() else { return Ok(None) };
        let outs = if transaction_mode {
            let capacity = self.shared.live().config.pool.max_prepared_statements;
            match self.state.statements.translate(msg, &mut server.statements, capacity, self.state.pin.is_some()) {
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
            self.io.to_server.extend_from_slice(&out.bytes);
        }
        Ok(None)
    }

    /// Remembers which prepared statements need the awaited injection (see `isolating_statements`).
    fn track_statement(&mut self, tag: u8, body: &[u8], text: Option<&SqlText>) {
        let closes_statement = tag == client::CLOSE && body.first() == Some(&client::TARGET_STATEMENT);
        if tag != client::PARSE && !closes_statement {
            return;
        }
        let Some(&name) = frontend::referenced_names(tag, body).as_deref().and_then(<[_]>::first) else { return };
        let isolating = tag == client::PARSE && text.is_some_and(SqlText::needs_own_transaction);
        if isolating {
            self.state.isolating_statements.insert(name.to_vec());
        } else if !self.state.isolating_statements.is_empty() {
            self.state.isolating_statements.remove(name);
        }
    }

    fn check_expiry(&self) -> Option<Exit> {
        self.state.identity.context.is_expired_at(now_unix(), self.shared.live().verifier.leeway_s()).then(|| {
            tracing::info!("token expired during the session");
            Exit::Fatal(ProxyError::TokenExpired.into())
        })
    }

    /// A refused Query or FunctionCall inside an extended-protocol batch: PostgreSQL skips it
    /// without a word when an earlier message of the batch failed, and answers it (error,
    /// ReadyForQuery) otherwise. Called once the server's answers say which.
    fn resolve_held_refusal(&mut self) -> Result<(), OutOfStep> {
        let Some(error) = self.held.refusal.take() else { return Ok(()) };
        if !self.link.tracker.is_discarding() {
            self.refuse(true, error)?;
        }
        self.batch_ended(self.link.tracker.last_ends_batch());
        Ok(())
    }

    /// Fails the current batch upstream in place of the refused message.
    fn refuse(&mut self, simple: bool, error: PgError) -> Result<(), OutOfStep> {
        if self.link.batch == Batch::Refused {
            return Ok(());
        }
        self.link.batch = Batch::Refused;
        self.track(Kind::Bind, Owner::Refusal(error))?;
        frontend::bind_text(&mut self.io.to_server, "rlsproxy_refused", &[]);
        if simple {
            self.track(Kind::Sync, Owner::Client)?;
            frontend::sync(&mut self.io.to_server);
        }
        Ok(())
    }
}
