//! Server messages: each routed by the tracker to the client, or handled for the
//! proxy's own messages (injection replies swallowed, a failed injection reported,
//! refusals, statement bookkeeping), and the
//! connection state they report (status, parameters) recorded.

use bytes::Bytes;

use super::SessionError;
use super::relay::{Exit, Relay};
use super::tracker::{Kind, Owner, Route};
use crate::protocol::{Frame, PgError, backend, codec, error, frontend};
use crate::upstream::UpstreamError;

impl Relay<'_> {
    pub(super) fn process_server(&mut self) -> Result<Option<Exit>, SessionError> {
        loop {
            let stream_rows = self.tracker.front_is_client();
            let Some(server) = self.server.as_deref_mut() else { return Ok(None) };
            let frame = server.framer.next(|tag| stream_rows && matches!(tag, b'D' | b'd' | b'V'), 1 << 30)?;
            match frame {
                None => return Ok(None),
                Some(Frame::Piece(bytes)) => self.to_client.extend_from_slice(&bytes),
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
        let body = codec::body(&msg);
        let owner = match self.tracker.on_server(tag) {
            Route::Relay => None,
            Route::Swallow => return Ok(None),
            Route::Unexpected if tag == b'E' => None,
            Route::Unexpected => {
                let e = format!("unexpected message '{}' with no reply owed", tag as char);
                return Err(UpstreamError::Protocol(e).into());
            }
            Route::Ended { owner, skipped } => {
                if let Some(server) = self.server.as_mut() {
                    for pending in &skipped {
                        self.statements.failed(&pending.owner, &mut server.statements);
                    }
                }
                Some(owner)
            }
        };
        match owner {
            None | Some(Owner::Client) => {}
            Some(owner @ Owner::ClientParse { .. }) => {
                if tag == b'E'
                    && let Some(server) = self.server.as_mut()
                {
                    self.statements.failed(&owner, &mut server.statements);
                }
            }
            Some(owner @ Owner::Prepare { .. }) => {
                if tag != b'E' {
                    return Ok(None);
                }
                if let Some(server) = self.server.as_mut() {
                    self.statements.failed(&owner, &mut server.statements);
                }
            }
            Some(Owner::ClientClose { .. }) => {}
            Some(Owner::Capture { client }) => {
                if tag != b'E' {
                    self.statements.captured(&client, &msg);
                }
                return Ok(None);
            }
            Some(Owner::Quiet) if tag != b'E' => return Ok(None),
            Some(Owner::Quiet) => {}
            Some(Owner::Injection { before_simple, own_sync }) => {
                if tag != b'E' {
                    return Ok(None);
                }
                let error = self.injection_failed_in_pipeline(body, before_simple);
                return Ok(own_sync.then_some(Exit::Fatal(PgError { severity: "FATAL", ..error })));
            }
            Some(Owner::Refusal(error)) => {
                error.encode(&mut self.to_client);
                return Ok(None);
            }
        }
        match tag {
            b'G' => {
                // Syncs sent before the COPY's data turned out to be ignored by the server.
                self.batch_start = self.batch_start && self.tracker.last_ends_batch();
            }
            b'Z' => {
                self.status = backend::ready_status(body)
                    .ok_or_else(|| UpstreamError::Protocol("malformed ReadyForQuery".into()))?;
            }
            b'S' => {
                if let Some((name, value)) = backend::parse_parameter_status(body) {
                    self.client_params.insert(name.clone(), value.clone());
                    if let Some(server) = self.server.as_mut() {
                        server.params.insert(name, value);
                    }
                }
            }
            b'A' => {
                super::notify::deliver_notification(&mut self.to_client, &self.identity.context.tenant, body);
                return Ok(None);
            }
            b'W' => {
                return Ok(Some(Exit::Fatal(PgError::fatal(
                    "0A000",
                    "rlsproxy does not relay COPY BOTH (replication) streams",
                ))));
            }
            b'E' => {
                let e = error::from_server(body);
                self.server_said_fatal = e.severity == "FATAL";
                if e.code == "0A000"
                    && let Some(server) = self.server.as_mut()
                {
                    // "cached plan must not change result type": a shared statement is stale;
                    // prepare every statement afresh (each Parse is preceded by a Close).
                    server.statements.clear();
                }
            }
            _ => {}
        }
        self.to_client.extend_from_slice(&msg);
        Ok(None)
    }

    fn injection_failed_in_pipeline(&mut self, body: &[u8], before_simple: bool) -> PgError {
        if let Some(server) = self.server.as_mut() {
            server.context = None;
            server.injection_prepared = false;
        }
        let error = injection_failed(error::from_server(body));
        self.shared.metrics.injection_failures.inc();
        tracing::warn!(code = error.code, message = error.message, "context injection failed");
        error.encode(&mut self.to_client);
        if before_simple {
            frontend::sync(&mut self.to_server);
            self.tracker.sent(Kind::Sync, Owner::Client);
        }
        error
    }
}

/// The error a client gets when its context could not be set.
pub(super) fn injection_failed(e: PgError) -> PgError {
    PgError {
        severity: e.severity,
        code: e.code,
        message: format!(
            "rlsproxy: could not set the tenant context, so no statement of this transaction ran: {}",
            e.message
        ),
        hint: e.hint,
    }
}
