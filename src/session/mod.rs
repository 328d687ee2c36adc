//! One client's session after authentication: the startup (a first server
//! connection, the client's settings, the first injection, the greeting), then
//! the relay loop until either side leaves.
//!
//! - `start`: the greeting and the client's identity;
//! - `relay`: the loop, the I/O pump's events and the end of the session; `state`: its
//!   state, in groups with the steps that write them;
//! - `client`: client messages: transaction starts, forwarding, refusals;
//! - `vet`: a client message checked before it goes anywhere (type, scoping, names, guard, pinning);
//! - `scoping`: a client's SQL rewritten for its tenant, before the guard sees it:
//!   `notify` (LISTEN/NOTIFY channels; notifications mapped back), `advisory` (lock keys);
//! - `replies`: server messages, routed to the client or to the proxy's own needs;
//! - `transaction`: what happens at a transaction's first message: a server
//!   connection lent (transaction pooling), reset when it carried another
//!   identity's state, the context injected;
//! - `tracker`: which replies the server still owes, and to whom;
//! - `step`: recording what is sent, and closing a connection that is out of step;
//! - `statements`: named prepared statements under transaction pooling;
//! - `pump`: non-blocking reads and writes on both sockets.

mod adoption;
mod advisory;
mod client;
mod notify;
mod pump;
mod relay;
mod replies;
mod scoping;
mod start;
mod state;
pub(crate) mod statements;
mod step;
pub(crate) mod tracker;
mod transaction;
pub(crate) mod vet;

use bytes::Bytes;

use crate::auth::TenantContext;
use crate::frontend::Handshake;
use crate::policy::context::Injection;
use crate::protocol::PgError;
use crate::shared::Shared;

pub use relay::Relay;

/// Why a session ended; only for the log line, the client has been told already.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Client socket failure.
    #[error("client I/O: {0}")]
    Client(std::io::Error),
    /// Server socket failure or protocol violation.
    #[error("upstream: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// Client framing violation.
    #[error("client protocol: {0}")]
    Protocol(#[from] crate::protocol::ProtocolError),
    /// The session was ended with this error sent to the client.
    #[error("{}", .0.message)]
    Ended(PgError),
}

/// Who the client is, for the whole session.
#[derive(Debug)]
pub(crate) struct Identity {
    /// What the token says.
    pub context: TenantContext,
    /// The messages that set its context.
    pub injection: Injection,
    /// SHA-256 of every injected value, the subject and the startup settings (`start::identity_key`):
    /// a server connection carrying another key's session state is reset before this client uses it.
    pub key: Bytes,
    /// Startup settings, sent as startup parameters of every server connection that serves
    /// the client (so `RESET` returns to them and `pg_settings.source` says `client`, as
    /// with PostgreSQL itself): part of the pool key.
    pub startup: Vec<(String, String)>,
    /// Upstream database.
    pub database: String,
}

/// Runs a session to its end.
pub async fn run(handshake: Handshake, shared: &Shared) -> Result<(), SessionError> {
    // Boxed: start-up's state (authentication, the first upstream connection) would otherwise
    // be part of the session task for its whole life.
    let relay = Box::pin(start::start(handshake, shared)).await?;
    relay.run().await
}
