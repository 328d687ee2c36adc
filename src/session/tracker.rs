//! What the server still owes, message by message, in the order the messages
//! were sent, following the server's own view of the protocol:
//! - each entry ends at its terminal reply (ParseComplete for Parse,
//!   ReadyForQuery for Sync, ...), and only the replies its kind allows may
//!   arrive for it: anything else means the proxy's model of the server is wrong
//!   ([`OutOfStep`]), and the connection must be closed rather than trusted;
//! - an ErrorResponse to an extended-protocol message ends it and every entry up
//!   to the next Sync, which the server skips (and, if no Sync was sent yet,
//!   every message until one is);
//! - a COPY IN ends when the server ends it (its CommandComplete or
//!   ErrorResponse), not when the client says so. While the server copies in it
//!   ignores Sync and Flush, and any other message fails the COPY and is read as
//!   part of it. Once the client has sent COPY data, whether the server is still
//!   copying when a later message arrives depends on timing (a bad row ends the
//!   COPY at once): such a message, before the client's CopyDone or CopyFail, is
//!   [`OutOfStep::Ambiguous`]. A Sync there is the exception drivers rely on: it
//!   is ignored if the COPY succeeds, and only a COPY that then fails makes it
//!   ambiguous (whether it was read inside is unknowable).
//!
//! Entries the proxy sent itself carry what to do with their replies.

use std::collections::VecDeque;

pub use crate::protocol::Kind;
use crate::protocol::tag::server;
use crate::protocol::{PgError, Reply};

#[cfg(test)]
mod tests;

/// Who a reply is for, and what the proxy does with it.
#[derive(Debug)]
pub enum Owner {
    /// Relay to the client.
    Client,
    /// The client's Parse of a named statement, sent under a proxy name: relayed; on
    /// failure the proxy forgets the names (see `statements`).
    ClientParse {
        /// The client's statement name.
        client: Vec<u8>,
        /// The name used on the server.
        server: String,
    },
    /// A Parse the proxy adds so a client's statement exists on this connection:
    /// success is swallowed, an error is the client's (its statement failed).
    Prepare {
        /// The name used on the server.
        server: String,
    },
    /// The client's Close of its statement `client` (already forgotten): restored if the server
    /// skips the Close after an earlier error.
    ClientClose {
        /// The client's statement name.
        client: Vec<u8>,
        /// The server name and text it had.
        server: String,
        /// Query text and parameter types.
        text: bytes::Bytes,
    },
    /// A Describe the proxy adds after the client's Parse of `client`: its RowDescription or
    /// NoData is kept as the statement's result shape, then swallowed.
    Capture {
        /// The client's statement name.
        client: Vec<u8>,
    },
    /// The proxy's own housekeeping (Close before a Parse, eviction): swallowed.
    Quiet,
    /// The pipelined context injection (Bind and Execute, between Parse and Close when hidden).
    Injection {
        /// A Query or FunctionCall follows in the same implicit transaction: on failure the
        /// server skips it without replying, so the proxy must send the Sync that ends the skipping.
        before_simple: bool,
        /// It has a Sync of its own (in front of BEGIN): a failure ends the session.
        own_sync: bool,
    },
    /// A Bind of a statement that cannot exist, sent in place of a refused client message
    /// so the server fails the batch as for a real error; its ErrorResponse becomes this one.
    Refusal(PgError),
}

/// A sent message still owed a reply.
#[derive(Debug)]
pub struct Pending {
    /// Its kind.
    pub kind: Kind,
    /// Its owner.
    pub owner: Owner,
}

/// What the relay must do with one server message.
#[derive(Debug)]
pub enum Route {
    /// Part of a reply to the client, or an asynchronous message: pass it on unchanged.
    Relay,
    /// Part of a reply to the proxy's own message, not its end: drop it.
    Swallow,
    /// The end of the reply to the entry of `owner`.
    Ended {
        /// Owner of the entry that ended.
        owner: Owner,
    },
    /// No entry is waiting: only asynchronous messages (or a FATAL error) may arrive now.
    Unexpected,
}

/// The server's replies and the proxy's model of them no longer agree, or cannot be known
/// to: the connection must be closed, never lent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutOfStep {
    /// A reply that cannot answer the message it would be for.
    #[error("the server sent '{tag}' where it owes a reply to {owed:?}", tag = *.0 as char, owed = .1)]
    Reply(u8, Option<Kind>),
    /// A client message after COPY data and before the end of that data, while the server
    /// may or may not still be copying.
    #[error(
        "the client sent other messages after COPY data without ending the COPY (CopyDone or CopyFail) \
         first; which of them the server reads in COPY mode is unknowable"
    )]
    Ambiguous,
}

/// A COPY IN the server is in, for the front entry, whose data the client has not ended.
#[derive(Debug, Clone, Copy)]
struct CopyIn {
    /// The client has sent CopyData since.
    data_sent: bool,
}

/// The queue of replies owed.
#[derive(Debug, Default)]
pub struct Tracker {
    queue: VecDeque<Pending>,
    copy_in: Option<CopyIn>,
    /// An extended-protocol message failed and no Sync has been sent since: the server
    /// discards everything up to the next Sync.
    discarding: bool,
    /// Entries the server read and will never answer, for the relay's bookkeeping.
    dropped: Vec<Pending>,
    /// A Sync was sent after data of the COPY the server is in: ignored if the COPY ends
    /// with CommandComplete, ambiguous if it ends with an error.
    sync_in_copy_data: bool,
}

impl Tracker {
    /// Records a sent message. Messages the server reads and never answers (ignored, or read
    /// as part of a COPY) are recorded only where they mark a COPY's data.
    pub fn sent(&mut self, kind: Kind, owner: Owner) -> Result<(), OutOfStep> {
        if self.discarding {
            if kind != Kind::Sync {
                self.dropped.push(Pending { kind, owner });
                return Ok(());
            }
            self.discarding = false;
        } else if let Some(copy) = self.copy_in.as_mut() {
            match kind {
                Kind::CopyData => copy.data_sent = true,
                Kind::CopyEnd => self.copy_in = None,
                Kind::Sync if !copy.data_sent => {}
                Kind::Sync => self.sync_in_copy_data = true,
                _ if copy.data_sent => return Err(OutOfStep::Ambiguous),
                // Before any data: the server fails the COPY on this message, read as part of it.
                _ => {
                    self.copy_in = None;
                    self.dropped.push(Pending { kind, owner });
                }
            }
            return Ok(());
        } else if kind.is_marker() && self.queue.iter().all(|p| p.kind.is_marker()) {
            // Nothing owed could start a COPY: the server ignores COPY messages now.
            return Ok(());
        } else if kind == Kind::CopyData && self.queue.back().is_some_and(|p| p.kind == Kind::CopyData) {
            return Ok(());
        }
        self.queue.push_back(Pending { kind, owner });
        Ok(())
    }

    /// Entries the server read and will never answer (skipped after an error, read as part
    /// of a COPY) since the last call.
    pub fn take_dropped(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.dropped)
    }

    /// The last message recorded ends a batch: the server will be between batches once
    /// everything owed has arrived.
    pub fn last_ends_batch(&self) -> bool {
        !self.discarding
            && self.copy_in.is_none()
            && self.queue.iter().rev().find(|p| !p.kind.is_marker()).is_none_or(|p| p.kind.ends_batch())
    }

    /// The server copies in for the front entry and the client has not ended its data.
    pub fn copying_in(&self) -> bool {
        self.copy_in.is_some()
    }

    /// Batches sent and not yet answered with ReadyForQuery.
    pub fn batches_in_flight(&self) -> usize {
        self.queue.iter().filter(|p| p.kind.ends_batch()).count()
    }

    /// Nothing owed, and the server waits for an ordinary message (not COPY data, not a Sync).
    pub fn is_empty(&self) -> bool {
        !self.discarding && self.copy_in.is_none() && self.queue.iter().all(|p| p.kind.is_marker())
    }

    /// The next reply is for the client (so large rows may be streamed to it in pieces).
    pub fn front_is_client(&self) -> bool {
        self.queue.iter().find(|p| !p.kind.is_marker()).is_some_and(|p| matches!(p.owner, Owner::Client))
    }

    /// The server skips messages until the next Sync (an extended-protocol message failed).
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Whether the server will skip the next message is known: it skips already, or every
    /// extended-protocol message sent has been answered.
    pub fn skipping_known(&self) -> bool {
        self.discarding || !self.queue.iter().any(|p| p.kind.error_ends() && !p.kind.is_marker())
    }

    /// A pipelined injection in front of a Query or FunctionCall is still unanswered.
    pub fn awaits_injection_before_simple(&self) -> bool {
        self.queue.iter().any(|p| matches!(p.owner, Owner::Injection { before_simple: true, .. }))
    }

    /// Advances over one server message and says whose it is.
    pub fn on_server(&mut self, tag: u8) -> Result<Route, OutOfStep> {
        if matches!(tag, server::NOTICE_RESPONSE | server::PARAMETER_STATUS | server::NOTIFICATION_RESPONSE) {
            return Ok(Route::Relay);
        }
        // After a CopyInResponse the next reply ends the COPY: an error, or its CommandComplete.
        if std::mem::take(&mut self.sync_in_copy_data) && tag == server::ERROR_RESPONSE {
            return Err(OutOfStep::Ambiguous);
        }
        while self.queue.front().is_some_and(|p| p.kind.is_marker()) {
            self.queue.pop_front();
        }
        let Some(kind) = self.queue.front().map(|p| p.kind) else { return Ok(Route::Unexpected) };
        if tag == server::ERROR_RESPONSE {
            // Whatever the server was doing for this entry, a COPY included, has ended.
            self.copy_in = None;
            if kind.error_ends() {
                return Ok(self.error_ends_front());
            }
            return Ok(self.part());
        }
        if self.copy_in.is_some() {
            // A COPY IN the client has not ended: the server waits for data, it does not answer.
            return Err(OutOfStep::Reply(tag, Some(kind)));
        }
        match kind.reply(tag) {
            Reply::Invalid => Err(OutOfStep::Reply(tag, Some(kind))),
            Reply::Part if tag == server::COPY_IN_RESPONSE => {
                self.copy_in_started()?;
                Ok(self.part())
            }
            Reply::Part => Ok(self.part()),
            Reply::End => {
                let Some(Pending { owner, .. }) = self.queue.pop_front() else { return Ok(Route::Unexpected) };
                Ok(Route::Ended { owner })
            }
        }
    }

    fn part(&self) -> Route {
        match self.queue.front().map(|p| &p.owner) {
            Some(Owner::Client) => Route::Relay,
            _ => Route::Swallow,
        }
    }

    /// An ErrorResponse to an extended-protocol message: the server skips to the next Sync.
    fn error_ends_front(&mut self) -> Route {
        let Some(Pending { owner, .. }) = self.queue.pop_front() else { return Route::Unexpected };
        while let Some(next) = self.queue.pop_front() {
            if next.kind == Kind::Sync {
                self.queue.push_front(next);
                return Route::Ended { owner };
            }
            self.dropped.push(next);
        }
        self.discarding = true;
        Route::Ended { owner }
    }

    /// CopyInResponse for the front entry: the messages already sent after it reach a server
    /// that copies in. Syncs before any data are ignored; another message before any data
    /// fails the COPY and is read as part of it; the client's CopyDone/CopyFail ends what the
    /// COPY reads; a Sync after data waits for the COPY's end; anything else after data is
    /// ambiguous.
    fn copy_in_started(&mut self) -> Result<(), OutOfStep> {
        let mut copy = CopyIn { data_sent: false };
        // Index 0 is the COPY's own entry; what follows was sent after it.
        while let Some(kind) = self.queue.get(1).map(|p| p.kind) {
            match kind {
                Kind::CopyData => copy.data_sent = true,
                Kind::CopyEnd => {
                    self.queue.remove(1);
                    return Ok(());
                }
                Kind::Sync if !copy.data_sent => {}
                Kind::Sync => self.sync_in_copy_data = true,
                _ if copy.data_sent => return Err(OutOfStep::Ambiguous),
                _ => {
                    self.dropped.extend(self.queue.remove(1));
                    return Ok(());
                }
            }
            self.queue.remove(1);
        }
        self.copy_in = Some(copy);
        Ok(())
    }
}
