//! One client's session after authentication: takes a server connection,
//! applies the client's startup settings and the first tenant context, greets
//! the client, then relays messages (see [`relay`]) until either side leaves.

mod pump;
mod relay;
mod start;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::frontend::Handshake;
use crate::protocol::PgError;
use crate::server::Shared;

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

/// Seconds since the epoch, for token expiry.
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs a session to its end.
pub async fn run(handshake: Handshake, shared: &Shared) -> Result<(), SessionError> {
    let relay = start::start(handshake, shared).await?;
    relay.run().await
}
