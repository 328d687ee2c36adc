//! Named prepared statements under transaction pooling (DESIGN.md section 3).
//!
//! A client's statement names are its own; on the server a statement is named
//! after a hash of its text (`rlsproxy_s_…`), so clients preparing the same query
//! share it. Each client message naming a statement is rewritten for the server
//! connection serving the current transaction, which is prepared on demand
//! (pipelined, never awaited); the connection's cache is bounded with LRU
//! eviction. The unnamed statement is re-parsed when the connection's unnamed
//! statement is someone else's.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{BufMut, Bytes, BytesMut};

use super::tracker::{Kind, Owner};
use crate::protocol::backend::finish_message;
use crate::protocol::{PgError, codec, frontend, read_cstr};
use crate::upstream::StatementCache;

/// A message for the server and how to treat its reply.
#[derive(Debug)]
pub struct Out {
    /// The message.
    pub bytes: Bytes,
    /// Its reply kind (`None`: no reply, e.g. Flush or COPY data).
    pub kind: Option<Kind>,
    /// Who the reply is for.
    pub owner: Owner,
}

#[derive(Debug, Clone)]
struct Statement {
    server: String,
    /// Query text and parameter types, as in the client's Parse after the name.
    text: Bytes,
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
    pub fn translate(&mut self, msg: Bytes, cache: &mut StatementCache, capacity: usize) -> Result<Vec<Out>, PgError> {
        let tag = msg[0];
        let body = codec::body(&msg);
        let malformed = || PgError::fatal("08P01", format!("rlsproxy: malformed '{}' message", tag as char));
        let mut out = Vec::new();
        match tag {
            b'P' => {
                let (name, text) = read_cstr(body).ok_or_else(malformed)?;
                if name.is_empty() {
                    self.unnamed = Some(msg.clone());
                    cache.unnamed = Some(msg.clone());
                    out.push(client_out(msg, tag));
                    return Ok(out);
                }
                if self.named.contains_key(name) {
                    return Err(PgError::error(
                        "42P05",
                        format!("prepared statement \"{}\" already exists", String::from_utf8_lossy(name)),
                    ));
                }
                let stmt = Statement { server: server_name(text), text: Bytes::copy_from_slice(text) };
                self.named.insert(name.to_vec(), stmt.clone());
                if cache.has(&stmt.server, &stmt.text) {
                    let mut close = BytesMut::new();
                    frontend::close_portal(&mut close, "rlsproxy_none");
                    out.push(Out { bytes: close.freeze(), kind: Some(Kind::Close), owner: Owner::AsParseComplete });
                } else {
                    let owner = Owner::ClientParse { client: name.to_vec(), server: stmt.server.clone() };
                    prepare(&stmt, cache, capacity, owner, &mut out);
                }
            }
            b'B' => {
                let (portal, rest) = read_cstr(body).ok_or_else(malformed)?;
                let (name, params) = read_cstr(rest).ok_or_else(malformed)?;
                let rebuild = |server: &str| message(b'B', &[portal, b"\0", server.as_bytes(), b"\0", params]);
                self.use_statement(name, &msg, rebuild, cache, capacity, &mut out)?;
            }
            b'D' if body.first() == Some(&b'S') => {
                let (name, _) = read_cstr(&body[1..]).ok_or_else(malformed)?;
                let rebuild = |server: &str| message(b'D', &[b"S", server.as_bytes(), b"\0"]);
                self.use_statement(name, &msg, rebuild, cache, capacity, &mut out)?;
            }
            b'C' if body.first() == Some(&b'S') => {
                let (name, _) = read_cstr(&body[1..]).ok_or_else(malformed)?;
                if name.is_empty() {
                    self.unnamed = None;
                    cache.unnamed = None;
                    out.push(client_out(msg, tag));
                } else {
                    // The server copy stays for other clients; the client gets its CloseComplete.
                    self.named.remove(name);
                    let mut close = BytesMut::new();
                    frontend::close_statement(&mut close, "rlsproxy_none");
                    out.push(client_out(close.freeze(), tag));
                }
            }
            _ => out.push(client_out(msg, tag)),
        }
        Ok(out)
    }

    /// A Bind or Describe of statement `name`: the unnamed statement made current, or the named
    /// one prepared on this connection and the message `rebuild` with its server name.
    fn use_statement(
        &self,
        name: &[u8],
        msg: &Bytes,
        rebuild: impl FnOnce(&str) -> Bytes,
        cache: &mut StatementCache,
        capacity: usize,
        out: &mut Vec<Out>,
    ) -> Result<(), PgError> {
        let tag = msg[0];
        if name.is_empty() {
            self.ensure_unnamed(cache, out);
            out.push(client_out(msg.clone(), tag));
            return Ok(());
        }
        let stmt = self.named.get(name).ok_or_else(|| {
            PgError::error("26000", format!("prepared statement \"{}\" does not exist", String::from_utf8_lossy(name)))
        })?;
        if !cache.has(&stmt.server, &stmt.text) {
            prepare(stmt, cache, capacity, Owner::Prepare { server: stmt.server.clone() }, out);
        }
        out.push(client_out(rebuild(&stmt.server), tag));
        Ok(())
    }

    fn ensure_unnamed(&self, cache: &mut StatementCache, out: &mut Vec<Out>) {
        if let Some(parse) = &self.unnamed
            && cache.unnamed.as_ref() != Some(parse)
        {
            cache.unnamed = Some(parse.clone());
            out.push(Out {
                bytes: parse.clone(),
                kind: Some(Kind::Parse),
                owner: Owner::Prepare { server: String::new() },
            });
        }
    }

    /// A Parse the proxy sent failed or was skipped: the statement does not exist there.
    pub fn failed(&mut self, owner: &Owner, cache: &mut StatementCache) {
        match owner {
            Owner::ClientParse { client, server } => {
                if self.named.get(client).is_some_and(|s| &s.server == server) {
                    self.named.remove(client);
                }
                cache.remove(server);
            }
            Owner::Prepare { server } if server.is_empty() => cache.unnamed = None,
            Owner::Prepare { server } => cache.remove(server),
            _ => {}
        }
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
    let parse = message(b'P', &[stmt.server.as_bytes(), b"\0", &stmt.text]);
    out.push(Out { bytes: parse, kind: Some(Kind::Parse), owner });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, sql: &str) -> Bytes {
        message(b'P', &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0", &[0, 0]])
    }

    fn bind(name: &str) -> Bytes {
        message(b'B', &[b"\0", name.as_bytes(), b"\0", &[0, 0, 0, 0, 0, 0]])
    }

    fn owners(out: &[Out]) -> Vec<String> {
        out.iter().map(|o| format!("{}:{:?}", o.bytes[0] as char, o.owner)).collect()
    }

    #[test]
    fn prepares_on_demand_under_shared_names() {
        let (mut a, mut b) = (ClientStatements::default(), ClientStatements::default());
        let mut conn = StatementCache::default();
        let out = a.translate(parse("s1", "select 1"), &mut conn, 10).expect("parse");
        assert_eq!(out.len(), 2, "{:?}", owners(&out));
        assert!(matches!(out[1].owner, Owner::ClientParse { .. }));
        // Another client with the same text on the same connection: no second Parse.
        let out = b.translate(parse("x", "select 1"), &mut conn, 10).expect("parse");
        assert!(matches!(out[..], [Out { owner: Owner::AsParseComplete, .. }]));
        // On another connection, a Bind prepares it first, and names the server statement.
        let mut other = StatementCache::default();
        let out = a.translate(bind("s1"), &mut other, 10).expect("bind");
        assert!(matches!(out[1].owner, Owner::Prepare { .. }));
        let bound = frontend::bound_statement(codec::body(&out[2].bytes)).map(<[u8]>::to_vec);
        assert_eq!(bound, Some(server_name(&parse("s1", "select 1")[8..]).into_bytes()));
        // Unknown and duplicate names get the server's errors.
        assert_eq!(a.translate(bind("nope"), &mut conn, 10).err().map(|e| e.code), Some("26000".into()));
        assert_eq!(a.translate(parse("s1", "select 2"), &mut conn, 10).err().map(|e| e.code), Some("42P05".into()));
    }

    #[test]
    fn a_failed_parse_forgets_the_name() {
        let mut a = ClientStatements::default();
        let mut conn = StatementCache::default();
        let out = a.translate(parse("s1", "selec 1"), &mut conn, 10).expect("parse");
        let owner = out.into_iter().last().map(|o| o.owner).expect("owner");
        a.failed(&owner, &mut conn);
        assert!(conn.is_empty());
        assert_eq!(a.translate(bind("s1"), &mut conn, 10).err().map(|e| e.code), Some("26000".into()));
    }
}
