//! The relay loop: client messages to the server and back, unchanged, with
//! the tenant context injected in front of every transaction's first message.
//!
//! Injection rules (DESIGN.md section 2):
//! - a transaction starts at the first client message after a ReadyForQuery
//!   `I` with nothing in flight; there the token's expiry is re-checked;
//! - if the connection's committed context is exactly this client's, the
//!   injection's Bind/Execute is pipelined in front of the client's message
//!   with no Sync of its own: a failed injection makes the server skip the
//!   client's statements up to their Sync, and its replies are swallowed;
//! - otherwise (or for statements that cannot share its transaction) the
//!   injection runs as its own transaction and is awaited first;
//! - batches sent while others are still in flight are not injected: the
//!   connection has carried only this client's committed context since the
//!   awaited injection, and a rolled-back injection can only fall back to it.

use std::collections::{HashSet, VecDeque};

use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::{SessionError, now_unix, pump};
use crate::auth::TenantContext;
use crate::frontend::Handshake;
use crate::frontend::cancel::Registration;
use crate::net::ClientStream;
use crate::policy::context::Injection;
use crate::policy::{RESERVED_PREFIX, isolation};
use crate::pool::Lease;
use crate::protocol::{Frame, Framer, PgError, ProtocolError, backend, codec, error, frontend};
use crate::server::Shared;
use crate::upstream::UpstreamError;

/// Replies from the server that answer the proxy's own messages, in order.
#[derive(Debug)]
enum Intercept {
    /// The pipelined injection: BindComplete, DataRow, CommandComplete, or an ErrorResponse.
    /// `before_simple`: a Query/FunctionCall follows, which the server skips on error
    /// without answering, so the proxy must send the Sync that ends the skipping.
    Injection { before_simple: bool },
    /// A Bind of a statement that cannot exist, sent in place of a refused client message
    /// so the server fails the batch exactly as for a real error; its ErrorResponse becomes `error`.
    Reject { error: PgError },
}

/// How the session ended.
#[derive(Debug)]
enum Exit {
    /// Terminate message or end of stream from the client.
    ClientGone,
    /// The server closed the connection.
    ServerGone,
    /// SIGTERM/SIGINT, at an idle point.
    Shutdown,
    /// The proxy ends the session with this error.
    Fatal(PgError),
}

/// One client's relay state.
pub struct Relay<'a> {
    shared: &'a Shared,
    client: ClientStream,
    client_in: Framer,
    server: Lease,
    context: TenantContext,
    injection: Injection,
    /// Keeps the client's cancel key alive and pointed at `server`.
    _cancel: Registration,
    /// Last ReadyForQuery status relayed; authoritative only when `in_flight` is 0.
    status: u8,
    /// Sync, Query and FunctionCall messages sent upstream and not yet answered by ReadyForQuery.
    in_flight: usize,
    /// The next client message starts a batch (the last one sent ended one).
    batch_start: bool,
    /// A refused message already failed the current batch upstream: later ones are dropped.
    batch_failed: bool,
    /// The proxy failed the current batch itself (awaited injection failed): drop client
    /// messages up to Sync and answer that Sync, as the server would have.
    skipping: bool,
    intercepts: VecDeque<Intercept>,
    /// Prepared statements (by name) whose SQL needs its own transaction, so that a batch
    /// starting with their Bind gets the awaited injection too.
    isolating_statements: HashSet<Vec<u8>>,
    /// The last server message relayed was a FATAL error (no need to add one on close).
    server_said_fatal: bool,
    /// Shutdown requested: end at the next idle point.
    draining: bool,
    /// Which side `poll_io` reads first next time (alternates, for fairness).
    client_first: bool,
    to_client: BytesMut,
    to_server: BytesMut,
}

impl<'a> Relay<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        hs: Handshake,
        server: Lease,
        injection: Injection,
        cancel: Registration,
    ) -> Self {
        Self {
            shared,
            client: hs.stream,
            client_in: Framer::default(),
            server,
            context: hs.context,
            injection,
            _cancel: cancel,
            status: b'I',
            in_flight: 0,
            batch_start: true,
            batch_failed: false,
            skipping: false,
            intercepts: VecDeque::new(),
            isolating_statements: HashSet::new(),
            server_said_fatal: false,
            draining: false,
            client_first: false,
            to_client: BytesMut::with_capacity(16 * 1024),
            to_server: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Relays until either side leaves, then returns or closes the server connection.
    pub async fn run(mut self) -> Result<(), SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        let exit = self.relay(&mut shutdown).await;
        self.finish(exit).await
    }

    async fn relay(&mut self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Result<Exit, SessionError> {
        if *shutdown.borrow() {
            self.draining = true;
        }
        loop {
            if let Some(exit) = self.process_client().await? {
                return Ok(exit);
            }
            if self.draining && self.is_idle() {
                self.flush().await?;
                return Ok(Exit::Shutdown);
            }
            let draining = self.draining;
            let event = tokio::select! {
                event = std::future::poll_fn(|cx| self.poll_io(cx)) => event,
                _ = shutdown.changed(), if !draining => Event::Shutdown,
            };
            match event {
                Event::ClientData => {}
                Event::ServerData => {
                    if let Some(exit) = self.process_server()? {
                        return Ok(exit);
                    }
                }
                Event::ClientEof => return Ok(Exit::ClientGone),
                Event::ServerEof => return Ok(Exit::ServerGone),
                Event::ClientError(e) => return Err(SessionError::Client(e)),
                Event::ServerError(e) => return Err(SessionError::Upstream(e.into())),
                Event::Shutdown => self.draining = true,
            }
        }
    }

    /// Writes what is pending to both sides and reads whichever side has data, alternating
    /// which side is read first so that neither can starve the other.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let paused = self.paused_for_injection();
        let server = &mut *self.server;
        if let Poll::Ready(Err(e)) = pump::poll_drain(&mut server.stream, &mut self.to_server, cx) {
            return Poll::Ready(Event::ServerError(e));
        }
        if let Poll::Ready(Err(e)) = pump::poll_drain(&mut self.client, &mut self.to_client, cx) {
            return Poll::Ready(Event::ClientError(e));
        }
        let read_client = !paused && self.to_server.len() < pump::HIGH_WATER;
        let read_server = self.to_client.len() < pump::HIGH_WATER;
        self.client_first = !self.client_first;
        for client_turn in [self.client_first, !self.client_first] {
            let polled = match client_turn {
                true if read_client => pump::poll_read_into(&mut self.client, self.client_in.buffer(), cx)
                    .map(|r| match r {
                        Ok(0) => Event::ClientEof,
                        Ok(_) => Event::ClientData,
                        Err(e) => Event::ClientError(e),
                    }),
                false if read_server => pump::poll_read_into(&mut server.stream, server.framer.buffer(), cx)
                    .map(|r| match r {
                        Ok(0) => Event::ServerEof,
                        Ok(_) => Event::ServerData,
                        Err(e) => Event::ServerError(e),
                    }),
                _ => Poll::Pending,
            };
            if polled.is_ready() {
                return polled;
            }
        }
        Poll::Pending
    }

    /// While the pipelined injection in front of a Query is unanswered, further client
    /// messages wait: if it fails, the proxy's Sync must reach the server right after that Query.
    fn paused_for_injection(&self) -> bool {
        self.intercepts.iter().any(|i| matches!(i, Intercept::Injection { before_simple: true }))
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.status == b'I' && self.intercepts.is_empty() && !self.skipping
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.to_server.is_empty() {
            self.server.write_all(&self.to_server).await?;
            self.to_server.clear();
        }
        if !self.to_client.is_empty() {
            self.client.write_all(&self.to_client).await.map_err(SessionError::Client)?;
            self.client.flush().await.map_err(SessionError::Client)?;
            self.to_client.clear();
        }
        Ok(())
    }

    async fn process_client(&mut self) -> Result<Option<Exit>, SessionError> {
        let limit = self.shared.config.limits.max_message_bytes;
        while !self.paused_for_injection() {
            let frame = match self.client_in.next(|tag| tag == b'd', limit) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Ok(Some(Exit::Fatal(client_protocol_error(&e)))),
            };
            match frame {
                Frame::Piece(bytes) => self.to_server.extend_from_slice(&bytes),
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
        let body = codec::body(&msg);
        if tag == b'X' {
            return Ok(Some(Exit::ClientGone));
        }
        if self.skipping {
            if tag == b'S' {
                self.skipping = false;
                backend::ready_for_query(&mut self.to_client, self.status);
            }
            return Ok(None);
        }
        if !matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'H' | b'F' | b'd' | b'c' | b'f') {
            return Ok(Some(Exit::Fatal(PgError::fatal("08P01", format!("invalid frontend message type {}", tag)))));
        }
        let Some(names) = frontend::referenced_names(tag, body) else {
            return Ok(Some(Exit::Fatal(client_protocol_error(&ProtocolError::Malformed(tag as char)))));
        };
        let reserved_name = names.iter().any(|n| n.starts_with(RESERVED_PREFIX));
        // SQL-level EXECUTE/DEALLOCATE/PREPARE share the names of protocol-level statements.
        let reserved_in_sql = frontend::sql_text(tag, body).is_some_and(mentions_reserved_prefix);
        let refusal = (reserved_name || reserved_in_sql).then(|| {
            PgError::error("42501", "statement and portal names starting with \"rlsproxy_\" are reserved by rlsproxy")
        });
        let simple = matches!(tag, b'Q' | b'F');
        self.track_statement(tag, body);
        if self.batch_start && !matches!(tag, b'd' | b'c' | b'f') {
            self.batch_start = false;
            self.batch_failed = false;
            if let Some(exit) = self.check_expiry() {
                return Ok(Some(exit));
            }
            // A refused Query runs nothing, so it needs no context.
            let runs_something = !(simple && refusal.is_some());
            if runs_something && !self.begin_transaction(tag, body).await? {
                return Ok(None);
            }
        }
        match refusal {
            Some(error) => self.refuse(simple, error),
            None if self.batch_failed && tag != b'S' => {}
            None => {
                if resets_session(tag, body) {
                    // DISCARD/DEALLOCATE drop the injection statement and reset the settings.
                    self.server.context = None;
                }
                self.to_server.extend_from_slice(&msg);
            }
        }
        if matches!(tag, b'S' | b'Q' | b'F') {
            self.in_flight += 1;
            self.batch_start = true;
        }
        Ok(None)
    }

    /// Remembers which prepared statements need the awaited injection (see `isolating_statements`).
    fn track_statement(&mut self, tag: u8, body: &[u8]) {
        let closes_statement = tag == b'C' && body.first() == Some(&b'S');
        if tag != b'P' && !closes_statement {
            return;
        }
        let Some(&name) = frontend::referenced_names(tag, body).as_deref().and_then(<[_]>::first) else { return };
        let isolating = tag == b'P' && frontend::sql_text(tag, body).is_some_and(isolation::needs_own_transaction);
        if isolating {
            self.isolating_statements.insert(name.to_vec());
        } else if !self.isolating_statements.is_empty() {
            self.isolating_statements.remove(name);
        }
    }

    fn check_expiry(&self) -> Option<Exit> {
        self.context.is_expired_at(now_unix(), self.shared.verifier.leeway_s()).then(|| {
            tracing::info!("token expired during the session");
            Exit::Fatal(
                PgError::fatal("28000", "rlsproxy: the token has expired; no further transaction can start")
                    .with_hint("Reconnect with a fresh token."),
            )
        })
    }

    /// Injects the context if a transaction starts here; false when the client's message
    /// has been answered by the proxy (a failed awaited injection) and must not be sent.
    async fn begin_transaction(&mut self, tag: u8, body: &[u8]) -> Result<bool, SessionError> {
        if self.in_flight > 0 || self.status != b'I' {
            return Ok(true);
        }
        let ours = self.server.context.as_ref() == Some(&self.injection.bind_execute);
        let isolate = !ours
            || frontend::sql_text(tag, body).is_some_and(isolation::needs_own_transaction)
            || tag == b'B' && frontend::bound_statement(body).is_some_and(|s| self.isolating_statements.contains(s));
        if !isolate {
            self.to_server.extend_from_slice(&self.injection.bind_execute);
            self.intercepts.push_back(Intercept::Injection { before_simple: matches!(tag, b'Q' | b'F') });
            return Ok(true);
        }
        self.flush().await?;
        let mut batch = BytesMut::new();
        if !self.server.injection_prepared {
            batch.extend_from_slice(&self.injection.prepare);
        }
        batch.extend_from_slice(&self.injection.bind_execute);
        frontend::sync(&mut batch);
        let outcome = self.server.run_batch(&batch).await?;
        self.to_client.extend_from_slice(&outcome.passthrough);
        self.status = outcome.status;
        let Some(e) = outcome.error else {
            self.server.injection_prepared = true;
            self.server.context = Some(self.injection.bind_execute.clone());
            return Ok(true);
        };
        self.server.injection_prepared = false;
        self.server.context = None;
        injection_failed(e).encode(&mut self.to_client);
        if matches!(tag, b'Q' | b'F' | b'S') {
            backend::ready_for_query(&mut self.to_client, self.status);
            self.batch_start = true;
        } else {
            self.skipping = true;
        }
        Ok(false)
    }

    /// Fails the current batch upstream in place of the refused message.
    fn refuse(&mut self, simple: bool, error: PgError) {
        if self.batch_failed {
            return;
        }
        self.batch_failed = true;
        frontend::bind_text(&mut self.to_server, "rlsproxy_refused", &[]);
        self.intercepts.push_back(Intercept::Reject { error });
        if simple {
            frontend::sync(&mut self.to_server);
        }
    }

    fn process_server(&mut self) -> Result<Option<Exit>, SessionError> {
        loop {
            let swallowing = !self.intercepts.is_empty();
            let server = &mut *self.server;
            let frame = server.framer.next(|tag| !swallowing && matches!(tag, b'D' | b'd' | b'V'), 1 << 30)?;
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
        if !matches!(tag, b'N' | b'S' | b'A')
            && let Some(front) = self.intercepts.front()
        {
            match (front, tag) {
                (Intercept::Injection { .. }, b'2' | b'D') => return Ok(None),
                (Intercept::Injection { .. }, b'C') => {
                    self.intercepts.pop_front();
                    return Ok(None);
                }
                (&Intercept::Injection { before_simple }, b'E') => {
                    self.intercepts.pop_front();
                    self.server.context = None;
                    self.server.injection_prepared = false;
                    injection_failed(error::from_server(body)).encode(&mut self.to_client);
                    if before_simple {
                        frontend::sync(&mut self.to_server);
                    }
                    return Ok(None);
                }
                (Intercept::Reject { .. }, b'E') => {
                    if let Some(Intercept::Reject { error }) = self.intercepts.pop_front() {
                        error.encode(&mut self.to_client);
                    }
                    return Ok(None);
                }
                // The batch had failed before the refused message: the client has its error.
                (Intercept::Reject { .. }, b'Z') => {
                    self.intercepts.pop_front();
                }
                _ => {
                    return Err(UpstreamError::Protocol(format!(
                        "unexpected message '{}' in reply to the proxy's own message",
                        tag as char
                    ))
                    .into());
                }
            }
        }
        match tag {
            b'Z' => {
                self.status = backend::ready_status(body)
                    .ok_or_else(|| UpstreamError::Protocol("malformed ReadyForQuery".into()))?;
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            b'S' => {
                if let Some((name, value)) = backend::parse_parameter_status(body) {
                    self.server.params.insert(name, value);
                }
            }
            b'W' => {
                return Ok(Some(Exit::Fatal(PgError::fatal(
                    "0A000",
                    "rlsproxy does not relay COPY BOTH (replication) streams",
                ))));
            }
            b'E' => self.server_said_fatal = error::from_server(body).severity == "FATAL",
            _ => {}
        }
        self.to_client.extend_from_slice(&msg);
        Ok(None)
    }

    async fn finish(mut self, exit: Result<Exit, SessionError>) -> Result<(), SessionError> {
        tracing::debug!(?exit, in_flight = self.in_flight, status = %(self.status as char), "relay finished");
        let server_usable = !matches!(exit, Ok(Exit::ServerGone) | Err(SessionError::Upstream(_)));
        let (farewell, result) = match exit {
            Ok(Exit::ClientGone) => (None, Ok(())),
            Ok(Exit::Shutdown) => {
                (Some(PgError::fatal("57P01", "terminating connection because rlsproxy is shutting down")), Ok(()))
            }
            Ok(Exit::ServerGone) => {
                let e = PgError::fatal("08006", "rlsproxy: the upstream server closed the connection");
                (Some(e).filter(|_| !self.server_said_fatal), Ok(()))
            }
            Ok(Exit::Fatal(e)) => (Some(e.clone()), Err(SessionError::Ended(e))),
            Err(e @ SessionError::Upstream(_)) => {
                let msg = PgError::fatal("08006", format!("rlsproxy: lost the upstream connection: {e}"));
                (Some(msg), Err(e))
            }
            Err(e) => (None, Err(e)),
        };
        if let Some(e) = farewell {
            let _ = self.flush().await;
            e.encode(&mut self.to_client);
            let _ = self.client.write_all(&self.to_client).await;
            let _ = self.client.shutdown().await;
        }
        if server_usable && self.is_idle() && self.server.framer.is_empty() {
            self.server.release().await;
        } else {
            if self.in_flight > 0 {
                // The backend would finish a long statement before noticing the closed socket.
                let key = self.server.cancel_key;
                tokio::spawn(async move { key.cancel().await });
            }
            drop(self.server);
        }
        result
    }
}

/// What woke the relay.
enum Event {
    ClientData,
    ServerData,
    ClientEof,
    ServerEof,
    ClientError(std::io::Error),
    ServerError(std::io::Error),
    Shutdown,
}

/// Whether SQL text names anything with the reserved prefix, in any letter case.
fn mentions_reserved_prefix(sql: &[u8]) -> bool {
    sql.windows(RESERVED_PREFIX.len()).any(|w| w.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// A client statement that drops prepared statements or settings, i.e. the injection's.
fn resets_session(tag: u8, body: &[u8]) -> bool {
    let Some(text) = frontend::sql_text(tag, body) else { return false };
    let lower = text.to_ascii_lowercase();
    [&b"discard"[..], b"deallocate", b"reset"].iter().any(|w| lower.windows(w.len()).any(|x| x == *w))
}

fn injection_failed(e: PgError) -> PgError {
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

fn client_protocol_error(e: &ProtocolError) -> PgError {
    match e {
        ProtocolError::TooLarge { .. } => PgError::fatal("54000", format!("rlsproxy: {e}"))
            .with_hint("Raise limits.max_message_bytes if such messages are expected."),
        _ => PgError::fatal("08P01", format!("rlsproxy: {e}")),
    }
}
