//! Adoption: what a server connection runs, awaited, before it serves an identity whose
//! context it does not hold (at session start, and when a transaction finds it so).

use std::time::Instant;

use bytes::BytesMut;

use super::Identity;
use crate::upstream::{ServerConn, reset_session};

/// The awaited preparation of `conn` for `identity`, and how many segments (each ended by a
/// ReadyForQuery) it has, to tell whether an error was the reset's and injection's: the
/// reset (`DISCARD ALL`, a new seed) when the connection carries another identity's state
/// (its statement cache is emptied with it; the client's startup settings are the connection's own startup
/// parameters), the injection (prepared first when needed). The caller ends it with Sync.
pub(super) fn adoption_batch(conn: &mut ServerConn, identity: &Identity) -> (BytesMut, usize) {
    let mut batch = BytesMut::new();
    let mut readies = 1;
    let foreign = conn.owner.as_ref() != Some(&identity.key);
    if foreign && conn.owner.is_some() {
        readies += reset_session(&mut batch);
        conn.statements.clear();
    }
    if readies > 1 || !conn.injection_prepared {
        batch.extend_from_slice(&identity.injection.prepare);
    }
    batch.extend_from_slice(&identity.injection.adopt);
    (batch, readies)
}

/// Records a successful adoption batch.
pub(super) fn adopted(conn: &mut ServerConn, identity: &Identity) {
    conn.owner = Some(identity.key.clone());
    conn.injection_prepared = true;
    conn.context = Some(identity.injection.bind_execute.clone());
    conn.adopted_at = Some(Instant::now());
}
