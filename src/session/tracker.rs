//! What the server still owes, message by message, in the order the messages
//! were sent. Each entry ends at its terminal reply (ParseComplete for Parse,
//! ReadyForQuery for Sync, ...); an ErrorResponse to an extended-protocol
//! message ends it and every entry up to the next Sync, which the server skips.
//! Entries the proxy sent itself carry what to do with their replies.

use std::collections::VecDeque;

use crate::protocol::PgError;

/// The kind of a sent message, which decides its terminal reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ParseComplete.
    Parse,
    /// BindComplete.
    Bind,
    /// CloseComplete.
    Close,
    /// RowDescription or NoData (after ParameterDescription for a statement).
    Describe,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// ReadyForQuery.
    Sync,
    /// ReadyForQuery (errors inside do not end it).
    Query,
    /// ReadyForQuery, after FunctionCallResponse or an error.
    FunctionCall,
    /// CopyDone/CopyFail sent by the client: no reply; marks where a COPY IN ends,
    /// because the server ignores Syncs sent before it while copying in.
    CopyEnd,
}

impl Kind {
    /// The kind of a client message that gets replies; `None` for Flush and COPY data.
    pub fn of(tag: u8, body: &[u8]) -> Option<Self> {
        match tag {
            b'P' => Some(Kind::Parse),
            b'B' => Some(Kind::Bind),
            b'C' => Some(Kind::Close),
            b'D' if !body.is_empty() => Some(Kind::Describe),
            b'E' => Some(Kind::Execute),
            b'S' => Some(Kind::Sync),
            b'Q' => Some(Kind::Query),
            b'F' => Some(Kind::FunctionCall),
            b'c' | b'f' => Some(Kind::CopyEnd),
            _ => None,
        }
    }

    /// Ends with ReadyForQuery: the units a client counts as "in flight".
    pub fn ends_batch(self) -> bool {
        matches!(self, Kind::Sync | Kind::Query | Kind::FunctionCall)
    }

    fn is_terminal(self, tag: u8) -> bool {
        match self {
            Kind::Parse => tag == b'1',
            Kind::Bind => tag == b'2',
            Kind::Close => tag == b'3',
            Kind::Describe => matches!(tag, b'T' | b'n'),
            Kind::Execute => matches!(tag, b'C' | b'I' | b's'),
            Kind::Sync | Kind::Query | Kind::FunctionCall => tag == b'Z',
            Kind::CopyEnd => false,
        }
    }
}

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
    /// The pipelined context injection (Bind and Execute).
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
    /// The end of the reply to the entry of `owner`; `skipped` are the entries the server
    /// will never answer (an error skips to the next Sync).
    Ended {
        /// Owner of the entry that ended.
        owner: Owner,
        /// Entries skipped after an error.
        skipped: Vec<Pending>,
    },
    /// No entry is waiting: only asynchronous messages may arrive now.
    Unexpected,
}

/// The queue of replies owed.
#[derive(Debug, Default)]
pub struct Tracker {
    queue: VecDeque<Pending>,
    /// The server is in COPY IN and no CopyDone/CopyFail has been sent yet: Syncs sent
    /// meanwhile are ignored by the server and must not be expected.
    copying_in: bool,
}

impl Tracker {
    /// Records a sent message; false when the server will ignore it (a Sync while it copies in).
    pub fn sent(&mut self, kind: Kind, owner: Owner) -> bool {
        match kind {
            Kind::Sync if self.copying_in => false,
            Kind::CopyEnd if self.copying_in => {
                self.copying_in = false;
                true
            }
            _ => {
                self.queue.push_back(Pending { kind, owner });
                true
            }
        }
    }

    /// The last message recorded ends a batch: the server will be between batches once
    /// everything owed has arrived.
    pub fn last_ends_batch(&self) -> bool {
        self.queue.iter().rev().find(|p| p.kind != Kind::CopyEnd).is_none_or(|p| p.kind.ends_batch())
    }

    /// Batches sent and not yet answered with ReadyForQuery.
    pub fn batches_in_flight(&self) -> usize {
        self.queue.iter().filter(|p| p.kind.ends_batch()).count()
    }

    /// Nothing owed.
    pub fn is_empty(&self) -> bool {
        self.queue.iter().all(|p| p.kind == Kind::CopyEnd)
    }

    /// The next reply is for the client (so large rows may be streamed to it in pieces).
    pub fn front_is_client(&self) -> bool {
        self.queue.iter().find(|p| p.kind != Kind::CopyEnd).is_some_and(|p| matches!(p.owner, Owner::Client))
    }

    /// A pipelined injection in front of a Query or FunctionCall is still unanswered.
    pub fn awaits_injection_before_simple(&self) -> bool {
        self.queue.iter().any(|p| matches!(p.owner, Owner::Injection { before_simple: true, .. }))
    }

    /// Advances over one server message and says whose it is.
    pub fn on_server(&mut self, tag: u8) -> Route {
        if matches!(tag, b'N' | b'S' | b'A') {
            return Route::Relay;
        }
        while self.queue.front().is_some_and(|p| p.kind == Kind::CopyEnd) {
            self.queue.pop_front();
        }
        let Some(front) = self.queue.front() else { return Route::Unexpected };
        let kind = front.kind;
        if tag == b'Z' && !kind.ends_batch() {
            // A ReadyForQuery the proxy did not expect here: its model of the server is wrong,
            // and going on could hand a reply to the wrong owner.
            return Route::Unexpected;
        }
        if tag == b'G' {
            self.copy_in_started();
        }
        let error_ends = tag == b'E' && !matches!(kind, Kind::Sync | Kind::Query | Kind::FunctionCall);
        if !error_ends && !kind.is_terminal(tag) {
            let owner_is_client = matches!(self.queue.front().map(|p| &p.owner), Some(Owner::Client));
            return if owner_is_client { Route::Relay } else { Route::Swallow };
        }
        let Some(Pending { owner, .. }) = self.queue.pop_front() else { return Route::Unexpected };
        let mut skipped = Vec::new();
        if error_ends {
            while self.queue.front().is_some_and(|p| p.kind != Kind::Sync) {
                skipped.extend(self.queue.pop_front());
            }
        }
        Route::Ended { owner, skipped }
    }

    /// CopyInResponse: Syncs the client sent after the COPY's statement and before its
    /// CopyDone/CopyFail reach a server that ignores them.
    fn copy_in_started(&mut self) {
        let end = self.queue.iter().skip(1).position(|p| p.kind == Kind::CopyEnd).map(|i| i + 1);
        let mut index = 1;
        let mut removed_up_to = end.unwrap_or(self.queue.len());
        while index < removed_up_to {
            if self.queue[index].kind == Kind::Sync {
                self.queue.remove(index);
                removed_up_to -= 1;
            } else {
                index += 1;
            }
        }
        match end {
            // The CopyEnd marker itself, now at `removed_up_to`.
            Some(_) => {
                self.queue.remove(removed_up_to);
            }
            None => self.copying_in = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(t: &mut Tracker, kinds: &[Kind]) {
        for &k in kinds {
            t.sent(k, Owner::Client);
        }
    }

    fn ended(route: Route) -> bool {
        matches!(route, Route::Ended { .. })
    }

    #[test]
    fn an_error_skips_to_the_next_sync() {
        let mut t = Tracker::default();
        client(&mut t, &[Kind::Parse, Kind::Bind, Kind::Execute, Kind::Sync, Kind::Query]);
        assert_eq!(t.batches_in_flight(), 2);
        assert!(ended(t.on_server(b'1')));
        match t.on_server(b'E') {
            Route::Ended { owner: Owner::Client, skipped } => assert_eq!(skipped.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(ended(t.on_server(b'Z')));
        assert!(matches!(t.on_server(b'T'), Route::Relay));
        assert!(matches!(t.on_server(b'E'), Route::Relay), "an error inside a Query does not end it");
        assert!(ended(t.on_server(b'Z')));
        assert!(t.is_empty());
        assert!(matches!(t.on_server(b'D'), Route::Unexpected));
    }

    #[test]
    fn syncs_sent_during_copy_in_are_not_expected() {
        // tokio-postgres: Bind, Execute, Sync, CopyData..., CopyDone, Sync.
        let mut t = Tracker::default();
        client(&mut t, &[Kind::Bind, Kind::Execute, Kind::Sync, Kind::CopyEnd, Kind::Sync]);
        assert!(ended(t.on_server(b'2')));
        assert!(matches!(t.on_server(b'G'), Route::Relay));
        assert_eq!(t.batches_in_flight(), 1);
        assert!(ended(t.on_server(b'C')));
        assert!(ended(t.on_server(b'Z')));
        assert!(t.is_empty());
        // The same when the CopyInResponse arrives before the client has finished copying.
        client(&mut t, &[Kind::Bind, Kind::Execute, Kind::Sync]);
        t.on_server(b'2');
        t.on_server(b'G');
        client(&mut t, &[Kind::Sync, Kind::CopyEnd, Kind::Sync]);
        assert_eq!(t.batches_in_flight(), 1);
        assert!(ended(t.on_server(b'C')));
        assert!(ended(t.on_server(b'Z')));
        assert!(t.is_empty());
    }

    #[test]
    fn proxy_entries_are_routed_to_their_owner() {
        let mut t = Tracker::default();
        t.sent(Kind::Bind, Owner::Injection { before_simple: false, own_sync: false });
        t.sent(Kind::Execute, Owner::Injection { before_simple: false, own_sync: false });
        client(&mut t, &[Kind::Parse]);
        t.sent(Kind::Bind, Owner::Refusal(PgError::error("42501", "no")));
        client(&mut t, &[Kind::Sync]);
        assert!(matches!(t.on_server(b'2'), Route::Ended { owner: Owner::Injection { .. }, .. }));
        assert!(matches!(t.on_server(b'D'), Route::Swallow));
        assert!(matches!(t.on_server(b'C'), Route::Ended { owner: Owner::Injection { .. }, .. }));
        assert!(matches!(t.on_server(b'1'), Route::Ended { owner: Owner::Client, .. }));
        assert!(matches!(t.on_server(b'E'), Route::Ended { owner: Owner::Refusal(_), .. }));
        assert!(ended(t.on_server(b'Z')));
    }
}
