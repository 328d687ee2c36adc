//! The relay loop: client messages to the server and back, unchanged except
//! where a rule says otherwise, with every reply routed by the [`Tracker`].
//!
//! Injection rules (docs/security.md, "Injection"; see `transaction` for the code):
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

use std::collections::{BTreeMap, HashSet};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::statements::ClientStatements;
use super::tracker::Tracker;
use super::{Identity, SessionError, pump};
use crate::admin::clients::ClientHandle;
use crate::admin::metrics::TenantCounters;
use crate::config::PoolMode;
use crate::frontend::cancel::Registration;
use crate::net::ClientStream;
use crate::pool::Lease;
use crate::pool::pins::Pin;
use crate::protocol::budget::Reservation;
use crate::protocol::tag::status;
use crate::protocol::{Framer, PgError, ProxyError};
use crate::shared::Shared;

/// Where the client is in its current batch (messages up to a Sync, or one Query or
/// FunctionCall).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Batch {
    /// The next client message starts one (the last one sent ended the previous).
    Start,
    /// Its messages are being forwarded.
    Open,
    /// A refused message already failed it upstream: later ones are dropped.
    Refused,
    /// The proxy failed it itself: client messages up to Sync are dropped, and that Sync
    /// answered as the server would have.
    Skipping,
}

/// Whether a message goes on to its next step.
pub(super) enum Flow {
    /// It does.
    Go,
    /// It stops here: answered or dealt with, or the session ends.
    Stop(Option<Exit>),
}

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
    pub(super) client: ClientStream,
    pub(super) client_in: Framer,
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
    /// Where the client is in its current batch.
    pub(super) batch: Batch,
    /// A Query that may reset the session, held until the batches in flight before it are
    /// answered (see `on_client_message`).
    pub(super) held_reset: Option<bytes::Bytes>,
    /// A refused Query or FunctionCall sent inside an extended-protocol batch, waiting until
    /// the server says whether it skips it (see `resolve_held_refusal`).
    pub(super) held_refusal: Option<PgError>,
    /// The share of `limits.max_buffered_bytes` of the large message being received.
    pub(super) receiving: Option<Reservation<'a>>,
    /// Transaction mode: the client created session state, so it keeps its connection.
    pub(super) pin: Option<Pin>,
    /// Transaction mode: the client's named statements.
    pub(super) statements: ClientStatements,
    /// Prepared statements (by client name) whose SQL needs its own transaction, so that a
    /// batch starting with their Bind gets the awaited injection too.
    pub(super) isolating_statements: HashSet<Vec<u8>>,
    /// Parameter values the client has been told, to report only real changes when
    /// another server connection starts serving it.
    pub(super) client_params: BTreeMap<String, String>,
    /// The last server message relayed was a FATAL error (no need to add one on close).
    pub(super) server_said_fatal: bool,
    /// Shutdown requested: end at the next idle point.
    pub(super) draining: bool,
    /// Which side `poll_io` reads first next time (alternates, for fairness).
    pub(super) client_first: bool,
    pub(super) to_client: BytesMut,
    pub(super) to_server: BytesMut,
    /// This session in the admin registry (state, backend pid).
    pub(super) entry: ClientHandle,
    /// This tenant's counters.
    pub(super) tenant_metrics: TenantCounters,
    /// When the transaction in progress started.
    pub(super) transaction_started: Option<Instant>,
    /// Since when the client has been idle inside a transaction (see `idle_transaction_deadline`).
    idle_since: Option<tokio::time::Instant>,
}

impl<'a> Relay<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        client: ClientStream,
        server: Option<Lease>,
        identity: Identity,
        cancel: Registration,
        client_params: BTreeMap<String, String>,
        entry: ClientHandle,
    ) -> Self {
        Self {
            tenant_metrics: shared.metrics.tenant(&identity.context.tenant),
            entry,
            transaction_started: None,
            idle_since: None,
            client_params,
            shared,
            client,
            client_in: Framer::default(),
            server,
            identity,
            cancel,
            status: status::IDLE,
            tracker: Tracker::default(),
            batch: Batch::Start,
            held_reset: None,
            held_refusal: None,
            receiving: None,
            pin: None,
            statements: ClientStatements::default(),
            isolating_statements: HashSet::new(),
            server_said_fatal: false,
            draining: false,
            client_first: false,
            to_client: BytesMut::new(),
            to_server: BytesMut::new(),
        }
    }

    pub(super) fn is_pinned(&self) -> bool {
        self.pin.is_some()
    }

    pub(super) fn transaction_mode(&self) -> bool {
        self.shared.pool_mode == PoolMode::Transaction
    }

    /// Relays until either side leaves, then returns or closes the server connection.
    pub async fn run(mut self: Box<Self>) -> Result<(), SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        let exit = self.relay(&mut shutdown).await;
        // Boxed: only the end of a session needs its state, not every idle session.
        Box::pin(self.finish(exit)).await
    }

    async fn relay(&mut self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Result<Exit, SessionError> {
        if *shutdown.borrow() {
            self.draining = true;
        }
        loop {
            if let Some(exit) = self.process_client().await? {
                return Ok(exit);
            }
            self.end_transaction_if_done();
            self.give_back_if_done();
            self.release_drained_buffers();
            if self.draining && self.is_idle() {
                self.flush().await?;
                return Ok(Exit::Shutdown);
            }
            let draining = self.draining;
            let idle_deadline = self.idle_transaction_deadline();
            let event = tokio::select! {
                event = std::future::poll_fn(|cx| self.poll_io(cx)) => event,
                _ = shutdown.changed(), if !draining => Event::Shutdown,
                _ = sleep_until_some(idle_deadline) => Event::IdleTransactionTimeout,
            };
            match event {
                Event::ClientData | Event::ServerDrained => {}
                Event::IdleTransactionTimeout => {
                    tracing::info!("idle in transaction too long; ending the session");
                    return Ok(Exit::Fatal(ProxyError::IdleInTransaction.into()));
                }
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

    /// Read buffers go back to the allocator once drained, write buffers once drained after a
    /// large burst: an idle session holds almost nothing.
    fn release_drained_buffers(&mut self) {
        self.client_in.release_if_empty();
        if let Some(server) = self.server.as_deref_mut() {
            server.framer.release_if_empty();
        }
        for buf in [&mut self.to_client, &mut self.to_server] {
            if buf.is_empty() && buf.capacity() > 16 * 1024 {
                *buf = BytesMut::new();
            }
        }
    }

    /// Writes what is pending to both sides and reads whichever side has data, alternating
    /// which side is read first so that neither can starve the other.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let paused = self.paused_for_injection();
        if let Some(server) = self.server.as_deref_mut()
            && !self.to_server.is_empty()
        {
            match pump::poll_drain(&mut server.stream, &mut self.to_server, &self.shared.metrics.server_bytes.sent, cx)
            {
                Poll::Ready(Err(e)) => return Poll::Ready(Event::ServerError(e)),
                // Everything reached the server: the connection may be free to give back now.
                Poll::Ready(Ok(())) => return Poll::Ready(Event::ServerDrained),
                Poll::Pending => {}
            }
        }
        if let Poll::Ready(Err(e)) =
            pump::poll_drain(&mut self.client, &mut self.to_client, &self.shared.metrics.client_bytes.sent, cx)
        {
            return Poll::Ready(Event::ClientError(e));
        }
        // A client is not read while its own replies pile up either: answers the proxy writes
        // itself (refusals) must not grow without bound for a client that never reads.
        let read_client = !paused && self.to_server.len() < pump::HIGH_WATER && self.to_client.len() < pump::HIGH_WATER;
        let read_server = self.to_client.len() < pump::HIGH_WATER;
        self.client_first = !self.client_first;
        for client_turn in [self.client_first, !self.client_first] {
            let polled = match (client_turn, self.server.as_deref_mut()) {
                (true, _) if read_client => {
                    pump::poll_read_into(&mut self.client, &mut self.client_in, cx).map(|r| match r {
                        Ok(0) => Event::ClientEof,
                        Ok(n) => {
                            self.shared.metrics.client_bytes.received.inc_by(n as u64);
                            Event::ClientData
                        }
                        Err(e) => Event::ClientError(e),
                    })
                }
                (false, Some(server)) if read_server => {
                    pump::poll_read_into(&mut server.stream, &mut server.framer, cx).map(|r| match r {
                        Ok(0) => Event::ServerEof,
                        Ok(n) => {
                            self.shared.metrics.server_bytes.received.inc_by(n as u64);
                            Event::ServerData
                        }
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

    /// When a client that holds a server connection inside a transaction, with nothing in
    /// flight, will have been idle for `pool.idle_transaction_timeout_s`: counted from when it
    /// became idle, so that part of a message (or a trickle of bytes) does not postpone it.
    fn idle_transaction_deadline(&mut self) -> Option<tokio::time::Instant> {
        let timeout = self.shared.live().config.pool.idle_transaction_timeout_s;
        let waiting_for_client = timeout > 0
            && self.server.is_some()
            && self.tracker.is_empty()
            && matches!(self.status, status::IN_BLOCK | status::FAILED)
            && self.to_server.is_empty();
        if !waiting_for_client {
            self.idle_since = None;
            return None;
        }
        let since = *self.idle_since.get_or_insert_with(tokio::time::Instant::now);
        Some(since + std::time::Duration::from_secs(timeout))
    }

    /// Client messages wait while the pipelined injection in front of a Query is unanswered
    /// (if it fails, the proxy's Sync must reach the server right after that Query), while
    /// a batch that may have reset the context is (see `awaits_reset`), and while a held
    /// Query or refusal waits for the server's answers before it.
    pub(super) fn paused_for_injection(&self) -> bool {
        self.tracker.awaits_injection_before_simple()
            || self.awaits_reset()
            || self.held_reset.is_some() && self.tracker.batches_in_flight() > 0
            || self.held_refusal.is_some() && !self.tracker.skipping_known()
    }

    /// The next batch would start behind one after which the connection's context is unknown
    /// (`DISCARD`, `RESET ALL` or `DEALLOCATE` sent, an injection failed): an injection
    /// pipelined now would run before that reset, and none would be sent at all behind a
    /// batch in flight. So the batch waits for the server's answers; then, at a transaction
    /// start, it gets the awaited injection. Not while the server copies in: it waits for data.
    fn awaits_reset(&self) -> bool {
        self.batch == Batch::Start
            && !self.tracker.copying_in()
            && self.tracker.batches_in_flight() > 0
            && self.server.as_ref().is_some_and(|s| s.context.is_none())
    }

    /// Whether the next client message starts a batch.
    pub(super) fn at_batch_start(&self) -> bool {
        self.batch == Batch::Start
    }

    /// After a message that may end a batch: the next one starts a batch if `ended`; a batch
    /// that was to start is open otherwise.
    pub(super) fn batch_ended(&mut self, ended: bool) {
        if ended {
            self.batch = Batch::Start;
        } else if self.batch == Batch::Start {
            self.batch = Batch::Open;
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.tracker.is_empty()
            && self.status == status::IDLE
            && self.batch != Batch::Skipping
            && self.held_reset.is_none()
            && self.held_refusal.is_none()
    }

    pub(super) async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.to_server.is_empty()
            && let Some(server) = self.server.as_mut()
        {
            server.write_all(&self.to_server).await?;
            self.shared.metrics.server_bytes.sent.inc_by(self.to_server.len() as u64);
            self.to_server.clear();
        }
        if !self.to_client.is_empty() {
            self.client.write_all(&self.to_client).await.map_err(SessionError::Client)?;
            self.client.flush().await.map_err(SessionError::Client)?;
            self.shared.metrics.client_bytes.sent.inc_by(self.to_client.len() as u64);
            self.to_client.clear();
        }
        Ok(())
    }

    /// Queues an error of the proxy's own for the client, and counts it.
    pub(super) fn send_error(&mut self, error: &PgError) {
        self.shared.metrics.client_error(&error.code);
        error.encode(&mut self.to_client);
    }

    async fn finish(mut self: Box<Self>, exit: Result<Exit, SessionError>) -> Result<(), SessionError> {
        tracing::debug!(?exit, in_flight = self.tracker.batches_in_flight(), status = %(self.status as char), "relay finished");
        let server_usable = !matches!(exit, Ok(Exit::ServerGone) | Err(SessionError::Upstream(_)));
        if !server_usable {
            self.shared.metrics.upstream_error("lost");
        }
        let (farewell, result) = match exit {
            Ok(Exit::ClientGone) => (None, Ok(())),
            Ok(Exit::Shutdown) => (Some(ProxyError::ShuttingDown.into()), Ok(())),
            Ok(Exit::ServerGone) => {
                (Some(ProxyError::UpstreamClosed.into()).filter(|_| !self.server_said_fatal), Ok(()))
            }
            Ok(Exit::Fatal(e)) => (Some(e.clone()), Err(SessionError::Ended(e))),
            Err(e @ SessionError::Upstream(_)) => {
                (Some(ProxyError::UpstreamLost { reason: e.to_string() }.into()), Err(e))
            }
            Err(e) => (None, Err(e)),
        };
        if let Some(e) = farewell {
            let _ = self.flush().await;
            self.send_error(&e);
            let _ = self.client.write_all(&self.to_client).await;
            let _ = self.client.shutdown().await;
        }
        self.cancel.set_target(None);
        let Some(server) = self.server.take() else { return result };
        let clean = server_usable
            && self.is_idle()
            && server.framer.is_empty()
            && self.to_server.is_empty()
            && !self.client_in.is_streaming();
        if clean && self.transaction_mode() && !self.is_pinned() {
            // Its state belongs to this identity, which is what the next borrower is checked against.
            server.give_back();
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
    ServerDrained,
    ServerData,
    ClientEof,
    ServerEof,
    ClientError(std::io::Error),
    ServerError(std::io::Error),
    Shutdown,
    IdleTransactionTimeout,
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
