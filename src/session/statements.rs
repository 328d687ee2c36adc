//! Named prepared statements under transaction pooling (docs/transaction-pooling.md,
//! "Prepared statements").
//!
//! A client's statement names are its own; on the server a statement is named
//! after a hash of its text (`rlsproxy_s_…`), so clients preparing the same query
//! share it. Each client message naming a statement is rewritten for the server
//! connection serving the current transaction, which is prepared on demand
//! (pipelined, never awaited); the connection's cache is bounded with LRU
//! eviction. A client's own Parse is always sent (as Close + Parse), so it gets a
//! plan made against the tables as they are now. The unnamed statement is re-parsed when the connection's unnamed
//! statement is someone else's.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{BufMut, Bytes, BytesMut};

use super::tracker::{Kind, Owner};
use crate::protocol::backend::finish_message;
use crate::protocol::tag::{client, server};
use crate::protocol::{PgError, ProxyError, codec, frontend, read_cstr};
use crate::upstream::StatementCache;

/// A message for the server and how to treat its reply.
#[derive(Debug)]
pub struct Out {
    /// The message.
    pub bytes: Bytes,
    /// Its reply kind (`None`: Flush, never answered).
    pub kind: Option<Kind>,
    /// Who the reply is for.
    pub owner: Owner,
}

#[derive(Debug, Clone)]
struct Statement {
    server: String,
    /// Query text and parameter types, as in the client's Parse after the name.
    text: Bytes,
    /// Result column types when the client prepared it (see [`shape`]), once known.
    shape: Option<Vec<u8>>,
    /// Prepared again with another result shape: PostgreSQL would refuse it from now on.
    stale: bool,
}

/// The result shape in a RowDescription or NoData message: column count and each column's
/// type, length and modifier. Names and table OIDs may change (a recreated table) without
/// PostgreSQL calling the plan stale; types may not.
pub fn shape(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let body = codec::body(msg);
    if msg.first() != Some(&server::ROW_DESCRIPTION) || body.len() < 2 {
        return out;
    }
    out.extend_from_slice(&body[..2]);
    let mut rest = &body[2..];
    while let Some((_, tail)) = read_cstr(rest) {
        // table oid (4), attnum (2), type oid (4), typlen (2), typmod (4), format (2)
        let Some(field) = tail.get(..18) else { break };
        out.extend_from_slice(&field[6..16]);
        rest = &tail[18..];
    }
    out
}

fn stale_error() -> PgError {
    ProxyError::StalePlan.into()
}

/// One client's statements.
#[derive(Debug, Default)]
pub struct ClientStatements {
    named: HashMap<Vec<u8>, Statement>,
    /// The client's last Parse of the unnamed statement, whole.
    unnamed: Option<Bytes>,
}

fn server_name(text: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    format!("rlsproxy_s_{:016x}", h.finish())
}

fn message(tag: u8, parts: &[&[u8]]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(tag);
    buf.put_i32(0);
    for part in parts {
        buf.put_slice(part);
    }
    finish_message(&mut buf, 0);
    buf.freeze()
}

fn client_out(bytes: Bytes, tag: u8) -> Out {
    let kind = Kind::of(tag, codec::body(&bytes));
    Out { bytes, kind, owner: Owner::Client }
}

impl ClientStatements {
    /// Rewrites one client message for the connection whose cache is `cache`; `Err` refuses it
    /// with the error the server would have given.
    /// A `pinned` client's unknown names go to the server as they are: they may be its SQL
    /// `PREPARE`d statements, which live on its (pinned) connection.
    pub fn translate(
        &mut self,
        msg: Bytes,
        cache: &mut StatementCache,
        capacity: usize,
        pinned: bool,
    ) -> Result<Vec<Out>, PgError> {
        let tag = msg[0];
        let body = codec::body(&msg);
        let malformed = || PgError::from(ProxyError::MalformedMessage { tag: tag as char });
        let mut out = Vec::new();
        match tag {
            client::PARSE => {
                let (name, text) = read_cstr(body).ok_or_else(malformed)?;
                if name.is_empty() {
                    self.unnamed = Some(msg.clone());
                    cache.unnamed = Some(msg.clone());
                    let owner = Owner::ClientParse { client: Vec::new(), server: String::new() };
                    out.push(Out { bytes: msg, kind: Some(Kind::Parse), owner });
                    return Ok(out);
                }
                self.parse_named(name, text, cache, capacity, &mut out)?;
            }
            client::BIND => {
                let (portal, rest) = read_cstr(body).ok_or_else(malformed)?;
                let (name, params) = read_cstr(rest).ok_or_else(malformed)?;
                let rebuild = |server: &str| message(client::BIND, &[portal, b"\0", server.as_bytes(), b"\0", params]);
                self.use_statement(name, &msg, rebuild, cache, capacity, pinned, &mut out)?;
            }
            client::DESCRIBE if body.first() == Some(&client::TARGET_STATEMENT) => {
                let (name, _) = read_cstr(&body[1..]).ok_or_else(malformed)?;
                let rebuild = |server: &str| message(client::DESCRIBE, &[b"S", server.as_bytes(), b"\0"]);
                self.use_statement(name, &msg, rebuild, cache, capacity, pinned, &mut out)?;
            }
            client::CLOSE if body.first() == Some(&client::TARGET_STATEMENT) => {
                let (name, _) = read_cstr(&body[1..]).ok_or_else(malformed)?;
                if name.is_empty() {
                    self.unnamed = None;
                    cache.unnamed = None;
                    out.push(client_out(msg, tag));
                } else {
                    let name = name.to_vec();
                    out.push(self.close_named(&name, msg, pinned));
                }
            }
            client::QUERY => {
                // A simple Query drops the server's unnamed statement.
                self.unnamed = None;
                cache.unnamed = None;
                out.push(client_out(msg, tag));
            }
            _ => out.push(client_out(msg, tag)),
        }
        Ok(out)
    }

    /// The client's Parse of its statement `name`: a Parse under the server name of `text`,
    /// and a Describe that captures its result shape.
    fn parse_named(
        &mut self,
        name: &[u8],
        text: &[u8],
        cache: &mut StatementCache,
        capacity: usize,
        out: &mut Vec<Out>,
    ) -> Result<(), PgError> {
        if self.named.contains_key(name) {
            let name = String::from_utf8_lossy(name).into_owned();
            return Err(ProxyError::StatementExists { name }.into());
        }
        let stmt =
            Statement { server: server_name(text), text: Bytes::copy_from_slice(text), shape: None, stale: false };
        self.named.insert(name.to_vec(), stmt.clone());
        // Always a real Parse, even when the connection has this text already: the
        // client gets a plan made now, as PostgreSQL would give it (the tables may
        // have changed since the cached one was made).
        let owner = Owner::ClientParse { client: name.to_vec(), server: stmt.server.clone() };
        prepare(&stmt, cache, capacity, owner, out);
        let describe = message(client::DESCRIBE, &[b"S", stmt.server.as_bytes(), b"\0"]);
        out.push(Out { bytes: describe, kind: Some(Kind::Describe), owner: Owner::Capture { client: name.to_vec() } });
        Ok(())
    }

    /// The client's Close of its statement `name` (message `msg`): the server's copy stays for
    /// other clients, and the client gets its CloseComplete from a Close of nothing.
    fn close_named(&mut self, name: &[u8], msg: Bytes, pinned: bool) -> Out {
        let mut close = BytesMut::new();
        frontend::close_statement(&mut close, "rlsproxy_none");
        match self.named.remove(name) {
            Some(s) => {
                let owner = Owner::ClientClose { client: name.to_vec(), server: s.server, text: s.text };
                Out { bytes: close.freeze(), kind: Some(Kind::Close), owner }
            }
            None if pinned => client_out(msg, client::CLOSE),
            None => client_out(close.freeze(), client::CLOSE),
        }
    }

    /// Forgets the client's statement `name`; whether it had one. (The server's copy stays
    /// in the connection's cache, for other clients with the same text.)
    pub fn forget(&mut self, name: &[u8]) -> bool {
        self.named.remove(name).is_some()
    }

    /// The client ran `DEALLOCATE ALL` or `DISCARD ALL`: its statement names are gone too.
    pub fn forget_all(&mut self) {
        self.named.clear();
        self.unnamed = None;
    }

    /// A Bind or Describe of statement `name`: the unnamed statement made current, or the named
    /// one prepared on this connection and the message `rebuild` with its server name.
    #[allow(clippy::too_many_arguments)] // one call per message kind; a struct would only rename them
    fn use_statement(
        &self,
        name: &[u8],
        msg: &Bytes,
        rebuild: impl FnOnce(&str) -> Bytes,
        cache: &mut StatementCache,
        capacity: usize,
        pinned: bool,
        out: &mut Vec<Out>,
    ) -> Result<(), PgError> {
        let tag = msg[0];
        if name.is_empty() {
            self.ensure_unnamed(cache, out);
            out.push(client_out(msg.clone(), tag));
            return Ok(());
        }
        let Some(stmt) = self.named.get(name) else {
            if pinned {
                out.push(client_out(msg.clone(), tag));
                return Ok(());
            }
            let name = String::from_utf8_lossy(name);
            return Err(ProxyError::StatementMissing { name: name.into() }.into());
        };
        if stmt.stale {
            return Err(stale_error());
        }
        if !cache.has(&stmt.server, &stmt.text) {
            prepare(stmt, cache, capacity, Owner::Prepare { server: stmt.server.clone() }, out);
        }
        out.push(client_out(rebuild(&stmt.server), tag));
        Ok(())
    }

    /// Makes the connection's unnamed statement the client's: its last Parse again, or none
    /// at all (the server then says it does not exist, as it would have).
    fn ensure_unnamed(&self, cache: &mut StatementCache, out: &mut Vec<Out>) {
        if cache.unnamed == self.unnamed {
            return;
        }
        cache.unnamed = self.unnamed.clone();
        match &self.unnamed {
            Some(parse) => {
                let owner = Owner::Prepare { server: String::new() };
                out.push(Out { bytes: parse.clone(), kind: Some(Kind::Parse), owner });
            }
            None => {
                let mut close = BytesMut::new();
                frontend::close_statement(&mut close, "");
                out.push(Out { bytes: close.freeze(), kind: Some(Kind::Close), owner: Owner::Quiet });
            }
        }
    }

    /// A message the proxy sent for a statement failed or was skipped by the server: undo
    /// what the proxy assumed when sending it.
    pub fn failed(&mut self, owner: &Owner, cache: &mut StatementCache) {
        match owner {
            Owner::ClientParse { client, .. } if client.is_empty() => self.forget_unnamed(cache),
            Owner::Prepare { server } if server.is_empty() => self.forget_unnamed(cache),
            Owner::ClientParse { client, server } => {
                if self.named.get(client).is_some_and(|s| &s.server == server) {
                    self.named.remove(client);
                }
                cache.remove(server);
            }
            Owner::Prepare { server } => cache.remove(server),
            Owner::ClientClose { client, server, text } => {
                let restored = Statement { server: server.clone(), text: text.clone(), shape: None, stale: false };
                self.named.entry(client.clone()).or_insert(restored);
            }
            _ => {}
        }
    }

    /// The result shape of the client's statement `client`, as the server described it.
    pub fn captured(&mut self, client: &[u8], described: &[u8]) {
        if let Some(stmt) = self.named.get_mut(client) {
            stmt.shape = Some(shape(described));
        }
    }

    /// At a transaction's first message: the statement a Bind or Describe names, when this
    /// connection lacks it and its result shape is known, so that the awaited preparation of
    /// the connection can prepare it again and check the shape before the client's message.
    pub fn to_verify(&self, tag: u8, body: &[u8], cache: &mut StatementCache) -> Option<Vec<u8>> {
        let name = match tag {
            client::BIND => frontend::bound_statement(body)?,
            client::DESCRIBE if body.first() == Some(&client::TARGET_STATEMENT) => read_cstr(&body[1..])?.0,
            _ => return None,
        };
        let stmt = self.named.get(name)?;
        (stmt.shape.is_some() && !stmt.stale && !cache.has(&stmt.server, &stmt.text)).then(|| name.to_vec())
    }

    /// Appends Close, Parse and Describe of `client`'s statement to `batch` (see `to_verify`).
    pub fn verify_batch(&self, client: &[u8], cache: &mut StatementCache, capacity: usize, batch: &mut BytesMut) {
        let Some(stmt) = self.named.get(client) else { return };
        let mut out = Vec::new();
        prepare(stmt, cache, capacity, Owner::Quiet, &mut out);
        for o in out {
            batch.extend_from_slice(&o.bytes);
        }
        batch.extend_from_slice(&message(client::DESCRIBE, &[b"S", stmt.server.as_bytes(), b"\0"]));
    }

    /// Checks the description of the statement prepared again against the one the client got;
    /// a different result shape makes the statement stale, as in PostgreSQL.
    pub fn verify(&mut self, client: &[u8], described: Option<&[u8]>) -> Result<(), PgError> {
        let Some(stmt) = self.named.get_mut(client) else { return Ok(()) };
        if described.map(shape) == stmt.shape {
            return Ok(());
        }
        stmt.stale = true;
        Err(stale_error())
    }

    fn forget_unnamed(&mut self, cache: &mut StatementCache) {
        self.unnamed = None;
        cache.unnamed = None;
    }
}

/// Close (so a stale copy never makes the Parse fail), evictions, then the Parse.
fn prepare(stmt: &Statement, cache: &mut StatementCache, capacity: usize, owner: Owner, out: &mut Vec<Out>) {
    let mut quiet = BytesMut::new();
    for victim in cache.insert(stmt.server.clone(), stmt.text.clone(), capacity) {
        frontend::close_statement(&mut quiet, &victim);
        out.push(Out { bytes: quiet.split().freeze(), kind: Some(Kind::Close), owner: Owner::Quiet });
    }
    frontend::close_statement(&mut quiet, &stmt.server);
    out.push(Out { bytes: quiet.split().freeze(), kind: Some(Kind::Close), owner: Owner::Quiet });
    let parse = message(client::PARSE, &[stmt.server.as_bytes(), b"\0", &stmt.text]);
    out.push(Out { bytes: parse, kind: Some(Kind::Parse), owner });
}

#[cfg(test)]
mod tests;
