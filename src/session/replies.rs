//! Server messages: each routed by the tracker to the client, or handled for the
//! proxy's own messages (injection replies swallowed, a failed injection reported,
//! refusals, statement bookkeeping), and the
//! connection state they report (status, parameters) recorded.

use bytes::Bytes;

use super::SessionError;
use super::relay::{Exit, Flow, Relay};
use super::state::Batch;
use super::tracker::{Kind, OutOfStep, Owner, Route};
use crate::protocol::tag::server;
use crate::protocol::{Frame, PgError, ProtocolError, ProxyError, Severity, backend, codec, error, frontend};
use crate::upstream::UpstreamError;

impl Relay<'_> {
    pub(super) fn process_server(&mut self) -> Result<Option<Exit>, SessionError> {
        // Rows go to the client in pieces; other messages are read whole, up to the same limit
        // as the client's.
        let limit = self.shared.live().config.limits.max_message_bytes;
        loop {
            let stream_rows = self.link.tracker.front_is_client();
            let Some(server) = self.link.server.as_deref_mut() else { return Ok(None) };
            let frame = match server.framer.next(
                |tag| {
                    stream_rows && matches!(tag, server::DATA_ROW | server::COPY_DATA | server::FUNCTION_CALL_RESPONSE)
                },
                limit,
            ) {
                Err(ProtocolError::TooLarge { tag, len, limit }) => {
                    self.close_server();
                    return Ok(Some(Exit::Fatal(ProxyError::ServerMessageTooLarge { tag, len, limit }.into())));
                }
                frame => frame?,
            };
            match frame {
                None => return Ok(None),
                Some(Frame::Piece(bytes)) => self.io.to_client.extend_from_slice(&bytes),
                Some(Frame::Message(msg)) => {
                    if let Some(exit) = self.on_server_message(msg)? {
                        return Ok(Some(exit));
                    }
                }
            }
        }
    }

    fn on_server_message(&mut self, msg: Bytes) -> Result<Option<Exit>, SessionError> {
        let tag = msg[0];
        let copy_ends = tag == server::ERROR_RESPONSE && self.link.tracker.copying_in();
        let route = self.link.tracker.on_server(tag);
        self.forget_dropped();
        if copy_ends {
            // The server ended a COPY the client had not: the client's last message may have
            // ended its batch after all (data it sends now is ignored).
            if self.link.tracker.last_ends_batch() {
                self.link.batch = Batch::Start;
            }
        }
        let owner = match route {
            Err(e) => return Ok(Some(self.out_of_step(e))),
            Ok(Route::Relay) => None,
            Ok(Route::Swallow) => return Ok(None),
            // The server ends the session (shutdown, terminated backend): its error is the client's.
            Ok(Route::Unexpected)
                if tag == server::ERROR_RESPONSE
                    && error::from_server(codec::body(&msg)).severity == Severity::Fatal =>
            {
                None
            }
            Ok(Route::Unexpected) => return Ok(Some(self.out_of_step(OutOfStep::Reply(tag, None)))),
            Ok(Route::Ended { owner }) => Some(owner),
        };
        if let Some(owner) = owner
            && let Flow::Stop(exit) = self.settle(owner, &msg)
        {
            return Ok(exit);
        }
        if let Flow::Stop(exit) = self.observe(tag, codec::body(&msg))? {
            return Ok(exit);
        }
        self.io.to_client.extend_from_slice(&msg);
        Ok(None)
    }

    /// The end of the reply to a message of `owner`: what the proxy does with it, and whether
    /// it still goes to the client.
    fn settle(&mut self, owner: Owner, msg: &Bytes) -> Flow {
        let failed = msg[0] == server::ERROR_RESPONSE;
        match owner {
            Owner::Client | Owner::ClientClose { .. } => Flow::Go,
            Owner::ClientParse { .. } | Owner::Prepare { .. } if failed => {
                if let Some(server) = self.link.server.as_mut() {
                    self.state.statements.failed(&owner, &mut server.statements);
                }
                Flow::Go
            }
            Owner::ClientParse { .. } => Flow::Go,
            Owner::Capture { client } => {
                if !failed {
                    self.state.statements.captured(&client, msg);
                }
                Flow::Stop(None)
            }
            Owner::Quiet if failed => Flow::Go,
            Owner::Prepare { .. } | Owner::Quiet | Owner::Injection { .. } if !failed => Flow::Stop(None),
            Owner::Injection { before_simple, own_sync } => {
                let error = match self.injection_failed_in_pipeline(codec::body(msg), before_simple) {
                    Ok(error) => error,
                    Err(e) => return Flow::Stop(Some(self.out_of_step(e))),
                };
                Flow::Stop(own_sync.then_some(Exit::Fatal(PgError { severity: Severity::Fatal, ..error })))
            }
            Owner::Refusal(error) => {
                self.send_error(&error);
                Flow::Stop(None)
            }
            Owner::Prepare { .. } | Owner::Quiet => Flow::Go,
        }
    }

    /// What a server message relayed to the client tells the proxy.
    fn observe(&mut self, tag: u8, body: &[u8]) -> Result<Flow, SessionError> {
        match tag {
            // Syncs sent before the COPY's data turned out to be ignored by the server.
            server::COPY_IN_RESPONSE if self.at_batch_start() && !self.link.tracker.last_ends_batch() => {
                self.link.batch = Batch::Open;
            }
            server::READY_FOR_QUERY => {
                self.link.status = backend::ready_status(body)
                    .ok_or_else(|| UpstreamError::Protocol("malformed ReadyForQuery".into()))?;
            }
            server::PARAMETER_STATUS => {
                if let Some((name, value)) = backend::parse_parameter_status(body) {
                    if let Some(reason) = crate::upstream::unsafe_setting(&name, &value) {
                        // Before anything else is read from the client: its next statement
                        // would be checked under assumptions the server no longer shares.
                        tracing::warn!(setting = name, value, "server setting breaks the guard's assumptions");
                        self.close_server();
                        return Ok(Flow::Stop(Some(Exit::Fatal(ProxyError::UnsafeServerSetting { reason }.into()))));
                    }
                    self.state.client_params.insert(name.clone(), value.clone());
                    if let Some(server) = self.link.server.as_mut() {
                        server.params.insert(name, value);
                    }
                }
            }
            server::COMMAND_COMPLETE if body.starts_with(b"DISCARD ALL\0") => self.discarded_all(),
            server::NOTIFICATION_RESPONSE => {
                super::notify::deliver_notification(&mut self.io.to_client, &self.state.identity.context.tenant, body);
                return Ok(Flow::Stop(None));
            }
            server::COPY_BOTH_RESPONSE => return Ok(Flow::Stop(Some(Exit::Fatal(ProxyError::CopyBoth.into())))),
            server::ERROR_RESPONSE => self.server_failed(body),
            _ => {}
        }
        Ok(Flow::Go)
    }

    /// An ErrorResponse for the client: what it says about the server connection.
    fn server_failed(&mut self, body: &[u8]) {
        let e = error::from_server(body);
        self.server_said_fatal = e.severity == Severity::Fatal;
        let Some(server) = self.link.server.as_mut() else { return };
        match e.code.as_str() {
            // "cached plan must not change result type": a shared statement is
            // stale; prepare every statement afresh (each Parse preceded by a Close).
            "0A000" => server.statements.clear(),
            // Among others, strict mode's "currval of sequence ... is not yet
            // defined": a DISCARD SEQUENCES the proxy did not see emptied what
            // recorded the admission. Take the context afresh next time (forced).
            "55000" => server.forget_context(),
            _ => {}
        }
    }

    /// The client's `DISCARD ALL` ran: its temp tables, LISTENs, SQL prepared statements,
    /// settings and advisory locks are gone, so a pinned client's connection may be lent again.
    /// (Nothing the client sent after it was forwarded yet: `awaits_reset` held it back.)
    fn discarded_all(&mut self) {
        if self.state.pin.take().is_some() {
            tracing::debug!("DISCARD ALL: the client's session state is gone; its connection is pooled again");
        }
        self.state.isolating_statements.clear();
    }

    /// Reports a failed pipelined injection; returns the error the client got.
    fn injection_failed_in_pipeline(&mut self, body: &[u8], before_simple: bool) -> Result<PgError, OutOfStep> {
        if let Some(server) = self.link.server.as_mut() {
            server.forget_context();
        }
        let error = injection_failed(error::from_server(body));
        self.shared.metrics.injection_failures.inc();
        tracing::warn!(code = error.code, message = error.message, "context injection failed");
        self.send_error(&error);
        if before_simple {
            frontend::sync(&mut self.io.to_server);
            // Right after an error, with no Sync sent yet: the server discards up to this one.
            self.track(Kind::Sync, Owner::Client)?;
        }
        Ok(error)
    }
}

/// The error a client gets when its context could not be set, from the server's.
pub(super) fn injection_failed(e: PgError) -> PgError {
    let fatal = e.severity == Severity::Fatal;
    ProxyError::InjectionFailed { code: e.code, message: e.message, hint: e.hint, fatal }.into()
}
