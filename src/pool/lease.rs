//! A connection lent from the pool: returned reset (`release`), as it is (`give_back`), or
//! closed (dropped).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::Inner;
use crate::upstream::{ServerConn, reset_session};

/// A connection lent to one client; dropping it closes the connection.
#[derive(Debug)]
pub struct Lease {
    pub(super) conn: Option<ServerConn>,
    pub(super) pool: Arc<Inner>,
}

impl Lease {
    /// Resets the connection's session state and returns it to the pool; closes it if that fails.
    /// Call only when the connection is idle with nothing in flight.
    pub async fn release(mut self) {
        let Some(conn) = self.conn.as_mut() else { return };
        let mut buf = BytesMut::new();
        reset_session(&mut buf);
        match Box::pin(conn.run_setup(&buf)).await {
            Ok(outcome) if outcome.error.is_none() && outcome.status == b'I' => {
                conn.forget_context();
                conn.owner = None;
                conn.statements.clear();
                self.give_back();
            }
            _ => tracing::warn!("upstream reset failed; closing the connection"),
        }
    }

    /// Returns the connection as it is, session state included (transaction pooling: the
    /// next borrower with another identity resets it). Call only when idle.
    ///
    /// Not async (and so no part of any session task's size): while a cancel for the current
    /// borrower is being sent, a task of its own waits for it before the connection goes back.
    pub fn give_back(mut self) {
        let Some(conn) = self.conn.take() else { return };
        let pool = self.pool.clone();
        // Invalidate older cancel targets once no cancel for the current borrower is in flight.
        let gate = conn.gate.clone();
        if let Ok(_held) = gate.lock.try_lock() {
            gate.generation.fetch_add(1, Ordering::SeqCst);
            pool.put_back(conn);
            return;
        }
        tokio::spawn(async move {
            let _held = gate.lock.lock().await;
            gate.generation.fetch_add(1, Ordering::SeqCst);
            pool.put_back(conn);
        });
    }
}

impl Deref for Lease {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        // Invariant: `conn` is `Some` until `release`, `give_back` or `drop` consume the lease.
        self.conn.as_ref().unwrap_or_else(|| unreachable!("lease used after release"))
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("lease used after release"))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.closed_one();
        }
    }
}
