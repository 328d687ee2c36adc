//! The relay loop: client messages to the server and back, unchanged except
//! where a rule says otherwise, with every reply routed by the [`Tracker`](super::tracker::Tracker).
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

use std::collections::BTreeMap;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::state::{Batch, ClientState, Held, Io, Link};
use super::{Identity, SessionError, pump};
use crate::admin::clients::ClientHandle;
use crate::admin::metrics::TenantCounters;
use crate::config::PoolMode;
use crate::frontend::cancel::Registration;
use crate::net::ClientStream;
use crate::pool::Lease;
use crate::protocol::tag::status;
use crate::protocol::{PgError, ProxyError};
use crate::shared::Shared;

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

/// One client's relay state (the groups and who writes them: `state`).
pub struct Relay<'a> {
    pub(super) shared: &'a Shared,
    pub(super) io: Io<'a>,
    pub(super) link: Link,
    pub(super) state: ClientState,
    pub(super) held: Held,
    /// The last server message relayed was a FATAL error (no need to add one on close).
    pub(super) server_said_fatal: bool,
    /// Shutdown requested: end at the next idle point.
    draining: bool,
    /// This session in the admin registry (state, backend pid).
    pub(super) entry: ClientHandle,
    /// This tenant's counters.
    pub(super) tenant_metrics: TenantCounters,
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
            shared,
            io: Io::new(client),
            link: Link::new(server, cancel),
            state: ClientState::new(identity, client_params),
            held: Held::default(),
            server_said_fatal: false,
            draining: false,
            entry,
            idle_since: None,
        }
    }

    pub(super) fn is_pinned(&self) -> bool {
        self.state.pin.is_some()
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
        self.io.client_in.release_if_empty();
        if let Some(server) = self.link.server.as_deref_mut() {
            server.framer.release_if_empty();
        }
        for buf in [&mut self.io.to_client, &mut self.io.to_server] {
            if buf.is_empty() && buf.capacity() > 16 * 1024 {
                *buf = BytesMut::new();
            }
        }
    }

    /// Writes what is pending to both sides and reads whichever side has data, alternating
    /// which side is read first so that neither can starve the other.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let paused = self.paused_for_injection();
        if let Some(server) = self.link.server.as_deref_mut()
            && !self.io.to_server.is_empty()
        {
            match pump::poll_drain(
                &mut server.stream,
                &mut self.io.to_server,
                &self.shared.metrics.server_bytes.sent,
                cx,
            ) {
                Poll::Ready(Err(e)) => return Poll::Ready(Event::ServerError(e)),
                // Everything reached the server: the connection may be free to give back now.
                Poll::Ready(Ok(())) => return Poll::Ready(Event::ServerDrained),
                Poll::Pending => {}
            }
        }
        if let Poll::Ready(Err(e)) =
            pump::poll_drain(&mut self.io.client, &mut self.io.to_client, &self.shared.metrics.client_bytes.sent, cx)
        {
            return Poll::Ready(Event::ClientError(e));
        }
        // A client is not read while its own replies pile up either: answers the proxy writes
        // itself (refusals) must not grow without bound for a client that never reads.
        let read_client =
            !paused && self.io.to_server.len() < pump::HIGH_WATER && self.io.to_client.len() < pump::HIGH_WATER;
        let read_server = self.io.to_client.len() < pump::HIGH_WATER;
        self.io.client_first = !self.io.client_first;
        for client_turn in [self.io.client_first, !self.io.client_first] {
            let polled = match (client_turn, self.link.server.as_deref_mut()) {
                (true, _) if read_client => {
                    pump::poll_read_into(&mut self.io.client, &mut self.io.client_in, cx).map(|r| match r {
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
            && self.link.server.is_some()
            && self.link.tracker.is_empty()
            && matches!(self.link.status, status::IN_BLOCK | status::FAILED)
            && self.io.to_server.is_empty();
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
        self.link.tracker.awaits_injection_before_simple()
            || self.awaits_reset()
            || self.held.reset.is_some() && self.link.tracker.batches_in_flight() > 0
            || self.held.refusal.is_some() && !self.link.tracker.skipping_known()
    }

    /// The next batch would start behind one after which the connection's context is unknown
    /// (`DISCARD`, `RESET ALL` or `DEALLOCATE` sent, an injection failed): an injection
    /// pipelined now would run before that reset, and none would be sent at all behind a
    /// batch in flight. So the batch waits for the server's answers; then, at a transaction
    /// start, it gets the awaited injection. Not while the server copies in: it waits for data.
    fn awaits_reset(&self) -> bool {
        self.link.batch == Batch::Start
            && !self.link.tracker.copying_in()
            && self.link.tracker.batches_in_flight() > 0
            && self.link.server.as_ref().is_some_and(|s| s.context.is_none())
    }

    /// Whether the next client message starts a batch.
    pub(super) fn at_batch_start(&self) -> bool {
        self.link.batch == Batch::Start
    }

    /// After a message that may end a batch: the next one starts a batch if `ended`; a batch
    /// that was to start is open otherwise.
    pub(super) fn batch_ended(&mut self, ended: bool) {
        if ended {
            self.link.batch = Batch::Start;
        } else if self.link.batch == Batch::Start {
            self.link.batch = Batch::Open;
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.link.tracker.is_empty()
            && self.link.status == status::IDLE
            && self.link.batch != Batch::Skipping
            && self.held.reset.is_none()
            && self.held.refusal.is_none()
    }

    pub(super) async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.io.to_server.is_empty()
            && let Some(server) = self.link.server.as_mut()
        {
            server.write_all(&self.io.to_server).await?;
            self.shared.metrics.server_bytes.sent.inc_by(self.io.to_server.len() as u64);
            self.io.to_server.clear();
        }
        if !self.io.to_client.is_empty() {
            self.io.client.write_all(&self.io.to_client).await.map_err(SessionError::Client)?;
            self.io.client.flush().await.map_err(SessionError::Client)?;
            self.shared.metrics.client_bytes.sent.inc_by(self.io.to_client.len() as u64);
            self.io.to_client.clear();
        }
        Ok(())
    }

    /// Queues an error of the proxy's own for the client, and counts it.
    pub(super) fn send_error(&mut self, error: &PgError) {
        self.shared.metrics.client_error(&error.code);
        error.encode(&mut self.io.to_client);
    }

    async fn finish(mut self: Box<Self>, exit: Result<Exit, SessionError>) -> Result<(), SessionError> {
        tracing::debug!(?exit, in_flight = self.link.tracker.batches_in_flight(), status = %(self.link.status as char), "relay finished");
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
            let _ = self.io.client.write_all(&self.io.to_client).await;
            let _ = self.io.client.shutdown().await;
        }
        self.link.cancel.set_target(None);
        let Some(server) = self.link.server.take() else { return result };
        let clean = server_usable
            && self.is_idle()
            && server.framer.is_empty()
            && self.io.to_server.is_empty()
            && !self.io.client_in.is_streaming();
        if clean && self.transaction_mode() && !self.is_pinned() {
            // Its state belongs to this identity, which is what the next borrower is checked against.
            server.give_back();
        } else if clean {
            server.release().await;
        } else {
            if self.link.tracker.batches_in_flight() > 0 {
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
