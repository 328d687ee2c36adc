//! The relay loop: client messages to the server and back, unchanged except
//! where a rule says otherwise, with every reply routed by the [`Tracker`].
//!
//! Injection rules (DESIGN.md section 2; see `transaction` for the code):
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

use std::collections::HashSet;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::statements::ClientStatements;
use super::tracker::{Kind, Owner, Route, Tracker};
use super::{Identity, SessionError, now_unix, pump};
use crate::config::PoolMode;
use crate::frontend::cancel::Registration;
use crate::net::ClientStream;
use crate::policy::{RESERVED_PREFIX, isolation, session_state};
use crate::pool::Lease;
use crate::protocol::{Frame, Framer, PgError, ProtocolError, backend, codec, error, frontend};
use crate::server::Shared;
use crate::upstream::UpstreamError;

/// How the session ended.
#[derive(Debug)]
pub(super) enum Exit {
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
    pub(super) shared: &'a Shared,
    client: ClientStream,
    client_in: Framer,
    /// The connection serving the client: for the whole session in session mode; in
    /// transaction mode from a transaction's first message until it ends (or for good once pinned).
    pub(super) server: Option<Lease>,
    pub(super) identity: Identity,
    /// Keeps the client's cancel key alive and pointed at `server`.
    pub(super) cancel: Registration,
    /// Last ReadyForQuery status relayed; authoritative only when nothing is in flight.
    pub(super) status: u8,
    /// Replies owed by the server, in order.
    pub(super) tracker: Tracker,
    /// The next client message starts a batch (the last one sent ended one).
    pub(super) batch_start: bool,
    /// A refused message already failed the current batch upstream: later ones are dropped.
    batch_failed: bool,
    /// The proxy failed the current batch itself: drop client messages up to Sync and answer
    /// that Sync, as the server would have.
    pub(super) skipping: bool,
    /// Transaction mode: the client created session state, so it keeps its connection.
    pinned: bool,
    /// Transaction mode: the client's named statements.
    statements: ClientStatements,
    /// Prepared statements (by client name) whose SQL needs its own transaction, so that a
    /// batch starting with their Bind gets the awaited injection too.
    pub(super) isolating_statements: HashSet<Vec<u8>>,
    /// The last server message relayed was a FATAL error (no need to add one on close).
    server_said_fatal: bool,
    /// Shutdown requested: end at the next idle point.
    draining: bool,
    /// Which side `poll_io` reads first next time (alternates, for fairness).
    client_first: bool,
    pub(super) to_client: BytesMut,
    pub(super) to_server: BytesMut,
}

impl<'a> Relay<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        client: ClientStream,
        server: Option<Lease>,
        identity: Identity,
        cancel: Registration,
    ) -> Self {
        Self {
            shared,
            client,
            client_in: Framer::default(),
            server,
            identity,
            cancel,
            status: b'I',
            tracker: Tracker::default(),
            batch_start: true,
            batch_failed: false,
            skipping: false,
            pinned: false,
            statements: ClientStatements::default(),
            isolating_statements: HashSet::new(),
            server_said_fatal: false,
            draining: false,
            client_first: false,
            to_client: BytesMut::with_capacity(16 * 1024),
            to_server: BytesMut::with_capacity(16 * 1024),
        }
    }

    pub(super) fn is_pinned(&self) -> bool {
        self.pinned
    }

    fn transaction_mode(&self) -> bool {
        self.shared.config.pool.mode == PoolMode::Transaction
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
            self.give_back_if_done().await;
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
        if let Some(server) = self.server.as_deref_mut()
            && let Poll::Ready(Err(e)) = pump::poll_drain(&mut server.stream, &mut self.to_server, cx)
        {
            return Poll::Ready(Event::ServerError(e));
        }
        if let Poll::Ready(Err(e)) = pump::poll_drain(&mut self.client, &mut self.to_client, cx) {
            return Poll::Ready(Event::ClientError(e));
        }
        let read_client = !paused && self.to_server.len() < pump::HIGH_WATER;
        let read_server = self.to_client.len() < pump::HIGH_WATER;
        self.client_first = !self.client_first;
        for client_turn in [self.client_first, !self.client_first] {
            let polled = match (client_turn, self.server.as_deref_mut()) {
                (true, _) if read_client => {
                    pump::poll_read_into(&mut self.client, self.client_in.buffer(), cx).map(|r| match r {
                        Ok(0) => Event::ClientEof,
                        Ok(_) => Event::ClientData,
                        Err(e) => Event::ClientError(e),
                    })
                }
                (false, Some(server)) if read_server => {
                    pump::poll_read_into(&mut server.stream, server.framer.buffer(), cx).map(|r| match r {
                        Ok(0) => Event::ServerEof,
                        Ok(_) => Event::ServerData,
                        Err(e) => Event::ServerError(e),
                    })
                }
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
        self.tracker.awaits_injection_before_simple()
    }

    pub(super) fn is_idle(&self) -> bool {
        self.tracker.is_empty() && self.status == b'I' && !self.skipping
    }

    pub(super) async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.to_server.is_empty()
            && let Some(server) = self.server.as_mut()
        {
            server.write_all(&self.to_server).await?;
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
                Frame::Piece(bytes) if self.server.is_some() => self.to_server.extend_from_slice(&bytes),
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
        let body = codec::body(&msg);
        if tag == b'X' {
            return Ok(Some(Exit::ClientGone));
        }
        if self.skipping {
            if tag == b'S' {
                self.skipping = false;
                self.batch_start = true;
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
        let sql = frontend::sql_text(tag, body);
        let refusal = (reserved_name || sql.is_some_and(mentions_reserved_prefix)).then(|| {
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
        if self.server.is_none() {
            // Only a refused Query (answered here, nothing in flight) or stray COPY data.
            if let Some(error) = refusal.filter(|_| simple) {
                error.encode(&mut self.to_client);
                backend::ready_for_query(&mut self.to_client, self.status);
                self.batch_start = true;
            }
            return Ok(None);
        }
        if self.transaction_mode() && !self.pinned && sql.is_some_and(session_state::creates_session_state) {
            tracing::debug!("session state created: the client keeps its server connection");
            self.pinned = true;
        }
        match refusal {
            Some(error) => self.refuse(simple, error),
            None if self.batch_failed && tag != b'S' => {}
            None => {
                if sql.is_some_and(resets_session)
                    && let Some(server) = self.server.as_mut()
                {
                    // DISCARD/DEALLOCATE/RESET may drop the injection statement, every statement
                    // prepared on this connection and the settings: re-prepare and re-inject.
                    server.context = None;
                    server.injection_prepared = false;
                    server.statements.clear();
                }
                if let Some(exit) = self.forward(msg, simple)? {
                    return Ok(Some(exit));
                }
            }
        }
        if matches!(tag, b'S' | b'Q' | b'F') {
            // A Sync the server ignores (sent during COPY IN) ends nothing.
            self.batch_start = self.tracker.last_ends_batch();
        }
        Ok(None)
    }

    /// Sends a client message, translating statement names in transaction mode.
    fn forward(&mut self, msg: Bytes, simple: bool) -> Result<Option<Exit>, SessionError> {
        let Some(server) = self.server.as_mut() else { return Ok(None) };
        if !self.shared.config.pool.mode.eq(&PoolMode::Transaction) {
            if let Some(kind) = Kind::of(msg[0], codec::body(&msg)) {
                self.tracker.sent(kind, Owner::Client);
            }
            self.to_server.extend_from_slice(&msg);
            return Ok(None);
        }
        let capacity = self.shared.config.pool.max_prepared_statements;
        match self.statements.translate(msg, &mut server.statements, capacity) {
            Ok(outs) => {
                for out in outs {
                    if let Some(kind) = out.kind {
                        self.tracker.sent(kind, out.owner);
                    }
                    self.to_server.extend_from_slice(&out.bytes);
                }
                Ok(None)
            }
            Err(e) if e.severity == "FATAL" => Ok(Some(Exit::Fatal(e))),
            Err(e) => {
                self.refuse(simple, e);
                Ok(None)
            }
        }
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
        self.identity.context.is_expired_at(now_unix(), self.shared.verifier.leeway_s()).then(|| {
            tracing::info!("token expired during the session");
            Exit::Fatal(
                PgError::fatal("28000", "rlsproxy: the token has expired; no further transaction can start")
                    .with_hint("Reconnect with a fresh token."),
            )
        })
    }

    /// Fails the current batch upstream in place of the refused message.
    fn refuse(&mut self, simple: bool, error: PgError) {
        if self.batch_failed {
            return;
        }
        self.batch_failed = true;
        frontend::bind_text(&mut self.to_server, "rlsproxy_refused", &[]);
        self.tracker.sent(Kind::Bind, Owner::Refusal(error));
        if simple {
            frontend::sync(&mut self.to_server);
            self.tracker.sent(Kind::Sync, Owner::Client);
        }
    }

    fn process_server(&mut self) -> Result<Option<Exit>, SessionError> {
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
            Some(Owner::AsParseComplete) if tag == b'3' => {
                self.to_client.extend_from_slice(&[b'1', 0, 0, 0, 4]);
                return Ok(None);
            }
            Some(Owner::AsParseComplete) => {}
            Some(Owner::Quiet) if tag != b'E' => return Ok(None),
            Some(Owner::Quiet) => {}
            Some(Owner::Injection { before_simple }) => {
                if tag == b'E' {
                    self.injection_failed_in_pipeline(body, before_simple);
                }
                return Ok(None);
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
                if let (Some((name, value)), Some(server)) =
                    (backend::parse_parameter_status(body), self.server.as_mut())
                {
                    server.params.insert(name, value);
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

    fn injection_failed_in_pipeline(&mut self, body: &[u8], before_simple: bool) {
        if let Some(server) = self.server.as_mut() {
            server.context = None;
            server.injection_prepared = false;
        }
        let error = injection_failed(error::from_server(body));
        tracing::warn!(code = error.code, message = error.message, "context injection failed");
        error.encode(&mut self.to_client);
        if before_simple {
            frontend::sync(&mut self.to_server);
            self.tracker.sent(Kind::Sync, Owner::Client);
        }
    }

    async fn finish(mut self, exit: Result<Exit, SessionError>) -> Result<(), SessionError> {
        tracing::debug!(?exit, in_flight = self.tracker.batches_in_flight(), status = %(self.status as char), "relay finished");
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
        self.cancel.set_target(None);
        let Some(server) = self.server.take() else { return result };
        let clean = server_usable && self.is_idle() && server.framer.is_empty() && self.to_server.is_empty();
        if clean && self.transaction_mode() && !self.pinned {
            // Its state belongs to this identity, which is what the next borrower is checked against.
            server.give_back().await;
        } else if clean {
            server.release().await;
        } else {
            if self.tracker.batches_in_flight() > 0 {
                // The backend would finish a long statement before noticing the closed socket.
                let key = server.cancel_key;
                tokio::spawn(async move { key.cancel().await });
            }
            drop(server);
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
fn resets_session(sql: &[u8]) -> bool {
    let lower = sql.to_ascii_lowercase();
    [&b"discard"[..], b"deallocate", b"reset"].iter().any(|w| lower.windows(w.len()).any(|x| x == *w))
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

fn client_protocol_error(e: &ProtocolError) -> PgError {
    match e {
        ProtocolError::TooLarge { .. } => PgError::fatal("54000", format!("rlsproxy: {e}"))
            .with_hint("Raise limits.max_message_bytes if such messages are expected."),
        _ => PgError::fatal("08P01", format!("rlsproxy: {e}")),
    }
}
