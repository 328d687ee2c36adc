//! Per-tenant LISTEN/NOTIFY channels. Channels are database-wide and every tenant
//! is the proxy's one role, so the proxy gives each tenant its own namespace: the
//! channel of `LISTEN`, `UNLISTEN` and `NOTIFY` (and the constant channel of
//! `pg_notify(…)`) becomes `<16 hex digits of SHA-256(tenant)>.<channel>`, and a
//! NotificationResponse reaches the client only when its channel carries the
//! client's own prefix, which is then removed. The prefix has a fixed length, so
//! the scoped name of (tenant, channel) is unique per tenant (up to a 64-bit hash
//! collision between two tenants) and is refused, never truncated by the server,
//! when it would exceed PostgreSQL's 63 bytes. `migrations/0005_notify.sql`
//! computes the same name in SQL (`rlsproxy.channel(tenant, channel)`).
//!
//! Only the channel tokens are replaced; the rest of the text is kept byte for byte.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;

use bytes::{BufMut, BytesMut};
use pg_query::protobuf::node::Node as NodeEnum;
use pg_query::protobuf::{ScanToken, Token};

use super::calls::{self, Call};
use super::rewrite::{self, SpliceError, parsable, splice, tenant_hash_hex};
use crate::policy::syntax::{SyntaxError, syntax_error};
use crate::protocol::backend::finish_message;
use crate::protocol::read_cstr;

/// PostgreSQL's longest name (NAMEDATALEN - 1); longer identifiers are truncated.
const MAX_NAME_BYTES: usize = 63;
/// Hex digits of the tenant hash in the prefix.
const HASH_DIGITS: usize = 16;
/// The longest channel name a client may use: what the prefix leaves of 63 bytes.
pub const MAX_CHANNEL_BYTES: usize = MAX_NAME_BYTES - HASH_DIGITS - 1;

/// Why a text naming channels cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The scoped name would not fit in 63 bytes.
    #[error("the channel name \"{0}\" is too long: at most {MAX_CHANNEL_BYTES} bytes")]
    TooLong(String),
    /// pg_notify with a channel the proxy cannot scope (computed, NULL, or the name used otherwise).
    #[error("pg_notify whose channel is not a string constant")]
    Computed,
    /// LISTEN/UNLISTEN/NOTIFY inside another statement (a rule's action).
    #[error("LISTEN, UNLISTEN or NOTIFY inside another statement")]
    Nested,
    /// A non-ASCII channel name in text that is not UTF-8.
    #[error("a non-ASCII channel name in text that is not UTF-8")]
    NotUtf8,
    /// Text the parser cannot parse, with no syntax error to report.
    #[error("a statement the parser cannot parse ({0})")]
    Unparsable(String),
    /// Text with a syntax error, answered as PostgreSQL would.
    #[error("{}", .0.message)]
    Syntax(SyntaxError),
}

/// The error for `text` that the parser or scanner rejected with `e`.
fn unparsable(text: &str, e: &impl ToString) -> ChannelError {
    syntax_error(text).map_or_else(|| ChannelError::Unparsable(e.to_string()), ChannelError::Syntax)
}

/// One tenant's channel namespace.
#[derive(Debug, Clone)]
pub struct ChannelScope {
    /// `<16 hex digits>.`
    prefix: String,
}

impl ChannelScope {
    /// The namespace of `tenant` (the tenant claim, as injected into the tenant setting).
    pub fn for_tenant(tenant: &str) -> Self {
        let mut prefix = tenant_hash_hex(tenant);
        prefix.truncate(HASH_DIGITS);
        prefix.push('.');
        Self { prefix }
    }

    /// The server's name of the client's `channel`.
    pub fn scoped(&self, channel: &str) -> Result<String, ChannelError> {
        if channel.len() > MAX_CHANNEL_BYTES {
            return Err(ChannelError::TooLong(channel.into()));
        }
        Ok(format!("{}{channel}", self.prefix))
    }

    /// The client's name of the server's `channel`; `None` when it is not this tenant's.
    pub fn unscoped<'a>(&self, channel: &'a [u8]) -> Option<&'a [u8]> {
        channel.strip_prefix(self.prefix.as_bytes())
    }

    /// Appends the NotificationResponse whose body (pid, channel, payload) is `body` to
    /// `out`, with the channel as the client knows it. `false`, appending nothing, when the
    /// channel is not this tenant's (or the body is malformed): such a notification is
    /// never delivered.
    pub fn append_for_client(&self, body: &[u8], out: &mut BytesMut) -> bool {
        let Some((pid, rest)) = body.split_at_checked(4) else { return false };
        let Some((channel, payload)) = read_cstr(rest) else { return false };
        let Some(channel) = self.unscoped(channel) else { return false };
        let start = out.len();
        out.put_u8(b'A');
        out.put_i32(0);
        out.put_slice(pid);
        out.put_slice(channel);
        out.put_u8(0);
        out.put_slice(payload);
        finish_message(out, start);
        true
    }
}

/// Whether `sql` may name a channel: it spells LISTEN, NOTIFY (also in pg_notify) or a
/// `U&` escaped identifier, case-insensitively, or has a backslash (an escape string
/// such as `E'pg_notif\x79'` spells the name otherwise). Keywords cannot be escaped, so
/// text without these needs no parse.
pub fn may_name_channel(sql: &[u8]) -> bool {
    let at = |i: usize, word: &[u8]| sql.get(i..i + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word));
    (0..sql.len()).any(|i| match sql[i] {
        b'\\' => true,
        c => match c | 0x20 {
            b'l' => at(i, b"listen"),
            b'n' => at(i, b"notify"),
            b'u' => at(i, b"u&"),
            _ => false,
        },
    })
}

/// pg_notify's OID (fixed in pg_proc): a fast-path FunctionCall of it has a computed channel.
pub const PG_NOTIFY_OID: u32 = 3036;

/// `sql` with every channel scoped to `scope`; `None` when it names none. With
/// `allow_computed` (an exempt operator), a pg_notify whose channel is not a constant is
/// left as it is instead of refused.
pub fn scope_channels(sql: &[u8], scope: &ChannelScope, allow_computed: bool) -> Result<Option<Vec<u8>>, ChannelError> {
    let text = parsable(sql);
    let tokens = rewrite::tokens(&text).map_err(|e| unparsable(&text, &e))?;
    if !tokens.iter().any(|t| names_channel(&text, t)) {
        return Ok(None);
    }
    let parsed = pg_query::parse(&text, 0).map_err(|e| unparsable(&text, &e))?;
    let mut edits = Vec::new();
    let mut top_level = 0;
    for raw in &parsed.protobuf.stmts {
        let channel = match raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
            Some(NodeEnum::ListenStmt(s)) => &s.conditionname,
            Some(NodeEnum::NotifyStmt(s)) => &s.conditionname,
            // `UNLISTEN *` (an empty name) only affects this session's own channels.
            Some(NodeEnum::UnlistenStmt(s)) if s.conditionname.is_empty() => {
                top_level += 1;
                continue;
            }
            Some(NodeEnum::UnlistenStmt(s)) => &s.conditionname,
            _ => continue,
        };
        top_level += 1;
        let start = usize::try_from(raw.stmt_location).unwrap_or(0);
        // The keyword, then the channel up to the payload's comma or the statement's end.
        let keyword = tokens
            .iter()
            .position(|t| t.start as usize >= start)
            .filter(|&k| [Token::Listen, Token::Unlisten, Token::Notify].iter().any(|w| *w as i32 == tokens[k].token))
            .ok_or(ChannelError::Nested)?;
        let range = token_run(&tokens, keyword + 1).ok_or(ChannelError::Nested)?;
        edits.push((range, quote_ident(&scope.scoped(channel)?)));
    }
    let found = calls::find(&parsed.protobuf, is_pg_notify, &["ListenStmt", "UnlistenStmt", "NotifyStmt"]);
    if found.kinds > top_level {
        return Err(ChannelError::Nested);
    }
    let pg_notify_calls: Vec<NotifyCall> = found.calls.iter().filter_map(NotifyCall::of).collect();
    // The parser may put one call under several parents (`SET (a, b) = (SELECT …)`): once each.
    let mut scoped = BTreeSet::new();
    for call in &pg_notify_calls {
        let Some(location) = call.constant_channel_at else {
            if allow_computed {
                continue;
            }
            return Err(ChannelError::Computed);
        };
        if !scoped.insert(location) {
            continue;
        }
        let first = tokens
            .iter()
            .position(|t| {
                t.start as usize == location && [Token::Sconst, Token::Usconst].iter().any(|k| *k as i32 == t.token)
            })
            .ok_or(ChannelError::Computed)?;
        let range = token_run(&tokens, first).ok_or(ChannelError::Computed)?;
        edits.push((range, quote_literal(&scope.scoped(&call.channel)?)));
    }
    // The name anywhere else (an operator's or aggregate's function, a regproc literal…).
    if found.names > pg_notify_calls.len() && !allow_computed {
        return Err(ChannelError::Computed);
    }
    if edits.is_empty() {
        return Ok(None);
    }
    splice(sql, edits, !matches!(text, Cow::Borrowed(_))).map(Some).map_err(|e| match e {
        SpliceError::NotAscii => ChannelError::NotUtf8,
        SpliceError::Overlap => ChannelError::Unparsable("overlapping channel names".into()),
    })
}

/// Whether `token` may name a channel or pg_notify (a much cheaper test than the parse, for
/// texts such as `SELECT … FROM listeners`): a LISTEN, UNLISTEN or NOTIFY keyword, a `U&`
/// identifier or string, the identifier pg_notify, or a string constant that mentions
/// notify or has escapes.
fn names_channel(text: &str, token: &ScanToken) -> bool {
    let raw = text.get(token.start as usize..token.end as usize).unwrap_or_default();
    match Token::try_from(token.token) {
        Ok(Token::Listen | Token::Unlisten | Token::Notify | Token::Uident | Token::Usconst) => true,
        Ok(Token::Ident) => raw.trim_matches('"').eq_ignore_ascii_case("pg_notify"),
        Ok(Token::Sconst) => raw.contains('\\') || raw.to_ascii_lowercase().contains("notify"),
        _ => false,
    }
}

/// The byte range of the tokens from `first` up to (not including) the next `,`, `)`, `;`
/// or the end: one channel identifier or string constant, with a `UESCAPE` clause if any.
fn token_run(tokens: &[ScanToken], first: usize) -> Option<Range<usize>> {
    let ends = |t: &ScanToken| [Token::Ascii44, Token::Ascii41, Token::Ascii59].iter().any(|e| *e as i32 == t.token);
    let run: Vec<&ScanToken> = tokens.get(first..)?.iter().take_while(|t| !ends(t)).collect();
    let (start, end) = (run.first()?.start, run.last()?.end);
    Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An escape string constant: read the same whatever `standard_conforming_strings` says.
fn quote_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn is_pg_notify(name: &str) -> bool {
    name.eq_ignore_ascii_case("pg_notify")
}

/// A pg_notify call found in the tree.
#[derive(Debug)]
struct NotifyCall {
    /// Where its channel's string constant starts, when the channel is one.
    constant_channel_at: Option<usize>,
    channel: String,
}

impl NotifyCall {
    /// `call` when it is pg_notify's: by its plain or pg_catalog-qualified name, or any
    /// longer one (which then cannot be scoped).
    fn of(call: &Call) -> Option<Self> {
        if let [schema, _] = call.names.as_slice()
            && !schema.eq_ignore_ascii_case("pg_catalog")
        {
            return None;
        }
        let plain = call.names.len() <= 2;
        Some(match (&call.first_string, call.first_constant_at, plain) {
            (Some(channel), Some(at), true) => NotifyCall { constant_channel_at: Some(at), channel: channel.clone() },
            _ => NotifyCall { constant_channel_at: None, channel: String::new() },
        })
    }
}

#[cfg(test)]
mod tests;
