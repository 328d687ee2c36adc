//! Keeping the proxy's model of the server in step with it: every message sent is
//! recorded in the tracker, and when the two can no longer be matched the server
//! connection is closed (never lent again) and the session ends.

use super::relay::{Exit, Relay};
use super::tracker::{Kind, OutOfStep, Owner, Tracker};
use crate::protocol::ProxyError;

impl Relay<'_> {
    /// Records a message sent to the server; entries the server will never answer undo what
    /// the proxy assumed when sending them.
    pub(super) fn track(&mut self, kind: Kind, owner: Owner) -> Result<(), OutOfStep> {
        self.link.tracker.sent(kind, owner)?;
        self.forget_dropped();
        Ok(())
    }

    /// Statement bookkeeping for the entries the server read and will never answer.
    pub(super) fn forget_dropped(&mut self) {
        let dropped = self.link.tracker.take_dropped();
        if let Some(server) = self.link.server.as_mut() {
            for pending in &dropped {
                self.state.statements.failed(&pending.owner, &mut server.statements);
            }
        }
    }

    /// The server connection's replies can no longer be matched to requests: it is closed
    /// (never lent again) and the session ends.
    pub(super) fn out_of_step(&mut self, e: OutOfStep) -> Exit {
        tracing::warn!(error = %e, "protocol out of step; closing the server connection");
        self.close_server();
        let detail = e.to_string();
        Exit::Fatal(
            match e {
                OutOfStep::Ambiguous => ProxyError::AmbiguousCopy { detail },
                OutOfStep::Reply(..) => ProxyError::OutOfStep { detail },
            }
            .into(),
        )
    }

    /// Closes the server connection now (what it still owes is cancelled), whatever it carries.
    pub(super) fn close_server(&mut self) {
        self.link.cancel.set_target(None);
        self.entry.set_backend_pid(0);
        if let Some(server) = self.link.server.take() {
            if self.link.tracker.batches_in_flight() > 0 {
                // The backend would finish a long statement before noticing the closed socket.
                let key = server.cancel_key;
                tokio::spawn(async move { key.cancel().await });
            }
            drop(server);
        }
        self.link.tracker = Tracker::default();
        self.io.to_server.clear();
    }
}
