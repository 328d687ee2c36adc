//! The relay's state, in four groups, each named for what it describes and documented with
//! the steps that change it: the sockets and buffers ([`Io`]), the server connection and
//! the exchange on it ([`Link`]), the client's own session ([`ClientState`]), and messages
//! held back ([`Held`]). The flags of the loop itself stay on `Relay`.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::Identity;
use super::statements::ClientStatements;
use super::tracker::Tracker;
use crate::frontend::cancel::Registration;
use crate::net::ClientStream;
use crate::pool::Lease;
use crate::pool::pins::Pin;
use crate::protocol::budget::Reservation;
use crate::protocol::tag::status;
use crate::protocol::{Framer, PgError};

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

/// The client socket and the bytes on their way: read and written by the I/O loop (`relay`);
/// `client`, `vet`, `replies`, `transaction` and `step` queue messages on it.
pub(super) struct Io<'a> {
    pub(super) client: ClientStream,
    /// Bytes read from the client, not yet a whole message.
    pub(super) client_in: Framer,
    pub(super) to_client: BytesMut,
    pub(super) to_server: BytesMut,
    /// Which side `poll_io` reads first next time (alternates, for fairness).
    pub(super) client_first: bool,
    /// The share of `limits.max_buffered_bytes` of the large message being received.
    pub(super) receiving: Option<Reservation<'a>>,
}

impl Io<'_> {
    pub(super) fn new(client: ClientStream) -> Self {
        Self {
            client,
            client_in: Framer::default(),
            to_client: BytesMut::new(),
            to_server: BytesMut::new(),
            client_first: false,
            receiving: None,
        }
    }
}

/// The server connection serving the client and where the exchange on it stands: lent and
/// returned by `transaction` (and closed by `step` when out of step, released by `relay` at
/// the end); `step` records what is sent, `replies` what comes back, and `client` where the
/// client's batch is.
pub(super) struct Link {
    /// For the whole session in session mode; in transaction mode from a transaction's first
    /// message until it ends (or for good once pinned).
    pub(super) server: Option<Lease>,
    /// Keeps the client's cancel key alive and pointed at `server`.
    pub(super) cancel: Registration,
    /// Last ReadyForQuery status relayed; authoritative only when nothing is in flight.
    pub(super) status: u8,
    /// Replies owed by the server, in order.
    pub(super) tracker: Tracker,
    /// Where the client is in its current batch.
    pub(super) batch: Batch,
    /// When the transaction in progress started.
    pub(super) transaction_started: Option<Instant>,
}

impl Link {
    pub(super) fn new(server: Option<Lease>, cancel: Registration) -> Self {
        Self {
            server,
            cancel,
            status: status::IDLE,
            tracker: Tracker::default(),
            batch: Batch::Start,
            transaction_started: None,
        }
    }
}

/// What the client's session has, whichever server connection serves it: `vet` records what
/// a message will create, `replies` what the server confirmed, `client` and `transaction`
/// what a new connection must be given.
pub(super) struct ClientState {
    pub(super) identity: Identity,
    /// Parameter values the client has been told, to report only real changes when
    /// another server connection starts serving it.
    pub(super) client_params: BTreeMap<String, String>,
    /// Transaction mode: the client's named statements.
    pub(super) statements: ClientStatements,
    /// Prepared statements (by client name) whose SQL needs its own transaction, so that a
    /// batch starting with their Bind gets the awaited injection too.
    pub(super) isolating_statements: HashSet<Vec<u8>>,
    /// Transaction mode: the client created session state, so it keeps its connection.
    pub(super) pin: Option<Pin>,
}

impl ClientState {
    pub(super) fn new(identity: Identity, client_params: BTreeMap<String, String>) -> Self {
        Self {
            identity,
            client_params,
            statements: ClientStatements::default(),
            isolating_statements: HashSet::new(),
            pin: None,
        }
    }
}

/// Client messages `client` holds back until the replies in flight before them are in.
#[derive(Default)]
pub(super) struct Held {
    /// A Query that may reset the session, held until the batches in flight before it are
    /// answered (see `client::on_client_message`).
    pub(super) reset: Option<Bytes>,
    /// A refused Query or FunctionCall sent inside an extended-protocol batch, waiting until
    /// the server says whether it skips it (see `client::resolve_held_refusal`).
    pub(super) refusal: Option<PgError>,
}
