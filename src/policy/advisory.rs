//! Per-tenant advisory locks. Advisory lock keys form one database-wide space and every
//! tenant is the proxy's one role, so the proxy gives each tenant its own keys: the key of
//! every call of an advisory lock function in a client's text is replaced by a hash of
//! (tenant, key), computed by the server:
//!
//! - `f(k)` → `f(H('<T>:k:' || (k)::int8::text))`
//! - `f(a, b)` → `f(H('<T>:p:' || (a)::int4::text || ',' || (b)::int4::text))`
//!
//! where `<T>` is the hex SHA-256 of the tenant (fixed length) and `H(s)` the first 8 bytes
//! of SHA-256(s) as a bigint. The tags `k` and `p` keep the two forms' keys apart, as the
//! server does. A cryptographic hash, because a tenant chooses its keys: with a weaker one
//! it could aim its own hashed key at another tenant's. Every name in the added text is
//! schema-qualified, so no search path or operator of a tenant's changes it.
//! `migrations/0006_advisory_locks.sql` computes the same key (`rlsproxy.advisory_key`).
//!
//! Only insertions are made (and the comma of the two-key form replaced): the key
//! expressions and the rest of the text are kept byte for byte.

use std::collections::BTreeSet;
use std::ops::Range;

use pg_query::protobuf::{ScanToken, Token};

use super::calls::{self, Call};
use super::rewrite::{self, is, parsable, span, splice, tenant_hash_hex};
use crate::policy::syntax::{SyntaxError, syntax_error};

/// The functions whose key is scoped (`pg_advisory_unlock_all` only touches the session's own).
const FUNCTIONS: [&str; 10] = [
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
];

/// Their OIDs (fixed in pg_proc, both forms): a fast-path FunctionCall of one has a key the
/// proxy cannot scope.
pub fn is_lock_function_oid(oid: u32) -> bool {
    matches!(oid, 2880..=2891 | 3089..=3096)
}

/// Why a text calling advisory lock functions cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockKeyError {
    /// An advisory lock function named other than in a plain call by name with its keys.
    #[error("an advisory lock function used other than in a call with its keys")]
    Unscopable,
    /// Text the parser cannot parse.
    #[error("a statement the parser cannot parse ({0})")]
    Unparsable(String),
    /// Text with a syntax error, answered as PostgreSQL would.
    #[error("{}", .0.message)]
    Syntax(SyntaxError),
}

/// The error for `text` that the parser or scanner rejected with `e`.
fn unparsable(text: &str, e: &impl ToString) -> LockKeyError {
    syntax_error(text).map_or_else(|| LockKeyError::Unparsable(e.to_string()), LockKeyError::Syntax)
}

/// `H(` of the module's doc: the first 8 bytes of SHA-256 as a bigint.
const HASH_OPEN: &str = "('x' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.substr(pg_catalog.sha256(\
                         pg_catalog.convert_to(";
const HASH_CLOSE: &str = ", 'UTF8')), 1, 8), 'hex'))::pg_catalog.bit(64)::pg_catalog.int8";
const CONCAT: &str = " OPERATOR(pg_catalog.||) ";

/// One tenant's advisory lock keys.
#[derive(Debug, Clone)]
pub struct LockScope {
    tenant_hex: String,
}

impl LockScope {
    /// The keys of `tenant` (the tenant claim, as injected into the tenant setting).
    pub fn for_tenant(tenant: &str) -> Self {
        Self { tenant_hex: tenant_hash_hex(tenant) }
    }

    /// What goes before a key expression of the `form` (`k`: one bigint, `p`: two int4).
    fn open(&self, form: char) -> String {
        format!("{HASH_OPEN}'{}:{form}:'{CONCAT}((", self.tenant_hex)
    }
}

/// The text after the key of the one-key form.
fn close_one() -> String {
    format!(")::pg_catalog.int8)::pg_catalog.text{HASH_CLOSE}")
}

/// The text that replaces the comma of the two-key form.
fn between_pair() -> String {
    format!(")::pg_catalog.int4)::pg_catalog.text{CONCAT}','{CONCAT}((")
}

/// The text after the second key of the two-key form.
fn close_pair() -> String {
    format!(")::pg_catalog.int4)::pg_catalog.text{HASH_CLOSE}")
}

/// Whether `sql` may name an advisory lock function: it spells `advisory`, a `U&` escape or
/// a backslash (an escape string), case-insensitively. Text without these needs no parse.
pub fn may_name_lock_function(sql: &[u8]) -> bool {
    let at = |i: usize, word: &[u8]| sql.get(i..i + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word));
    (0..sql.len()).any(|i| match sql[i] | 0x20 {
        b'a' => at(i, b"advisory"),
        b'u' => at(i, b"u&"),
        _ => sql[i] == b'\\',
    })
}

/// `sql` with the key of every advisory lock call scoped to `scope`; `None` when it calls none.
pub fn scope_lock_keys(sql: &[u8], scope: &LockScope) -> Result<Option<Vec<u8>>, LockKeyError> {
    let text = parsable(sql);
    let tokens = rewrite::tokens(&text).map_err(|e| unparsable(&text, &e))?;
    if !tokens.iter().any(|t| may_name(&text, t)) {
        return Ok(None);
    }
    let parsed = pg_query::parse(&text, 0).map_err(|e| unparsable(&text, &e))?;
    let found = calls::find(&parsed.protobuf, is_lock_function, &[]);
    let calls: Vec<LockCall> = found.calls.iter().filter_map(LockCall::of).collect();
    // The name anywhere else (an operator's or aggregate's function, a regproc literal…).
    if found.names > calls.len() {
        return Err(LockKeyError::Unscopable);
    }
    let mut edits = Vec::new();
    // The parser may put one call under several parents (`SET (a, b) = ROW(…)`): once each.
    let mut scoped = BTreeSet::new();
    for call in calls.iter().filter(|c| scoped.insert(c.location)) {
        let keys = call_keys(&tokens, call.location).filter(|k| k.args.len() == call.args);
        match keys.ok_or(LockKeyError::Unscopable)? {
            CallKeys { args, .. } if args.len() == 1 => {
                edits.push((args[0].start..args[0].start, scope.open('k')));
                edits.push((args[0].end..args[0].end, close_one()));
            }
            CallKeys { args, commas } => {
                edits.push((args[0].start..args[0].start, scope.open('p')));
                edits.push((commas[0].clone(), between_pair()));
                edits.push((args[1].end..args[1].end, close_pair()));
            }
        }
    }
    if edits.is_empty() {
        return Ok(None);
    }
    // Only insertions and commas: the client's bytes, whatever their encoding, stay as they are.
    splice(sql, edits, false).map(Some).map_err(|e| LockKeyError::Unparsable(e.to_string()))
}

/// Whether `token` may name an advisory lock function (a much cheaper test than the parse):
/// one of their names as an identifier, a `U&` identifier or string, or a string constant
/// that mentions `advisory` or is an escape string with a backslash.
fn may_name(text: &str, token: &ScanToken) -> bool {
    let raw = text.get(token.start as usize..token.end as usize).unwrap_or_default();
    match Token::try_from(token.token) {
        Ok(Token::Uident | Token::Usconst) => true,
        Ok(Token::Ident) => is_lock_function(raw.trim_matches('"')),
        Ok(Token::Sconst) => raw.contains('\\') || raw.to_ascii_lowercase().contains("advisory"),
        _ => false,
    }
}

fn is_lock_function(name: &str) -> bool {
    FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// The key arguments of the call whose name starts at `location`, and the commas between them.
struct CallKeys {
    args: Vec<Range<usize>>,
    commas: Vec<Range<usize>>,
}

/// The arguments of the call at `location`: from its `(`, split at commas outside nested
/// parentheses and brackets, up to its `)`. `None` when the tokens are not such a call.
fn call_keys(tokens: &[ScanToken], location: usize) -> Option<CallKeys> {
    let name = tokens.iter().position(|t| usize::try_from(t.start).ok() == Some(location))?;
    let open = name + tokens.get(name..)?.iter().position(|t| is(t, &[Token::Ascii40]))?;
    let (mut args, mut commas) = (Vec::new(), Vec::new());
    let (mut depth, mut arg): (usize, Option<Range<usize>>) = (0, None);
    for token in tokens.get(open + 1..)? {
        let at = span(token)?;
        if depth == 0 && is(token, &[Token::Ascii44, Token::Ascii41]) {
            args.push(arg.take()?);
            if is(token, &[Token::Ascii41]) {
                return Some(CallKeys { args, commas });
            }
            commas.push(at);
            continue;
        }
        if is(token, &[Token::Ascii40, Token::Ascii91]) {
            depth += 1;
        } else if is(token, &[Token::Ascii41, Token::Ascii93]) {
            depth = depth.checked_sub(1)?;
        }
        arg = Some(arg.map_or(at.clone(), |a| a.start..at.end));
    }
    None
}

/// A call the proxy can scope: by its plain or pg_catalog-qualified name, with one or two
/// positional arguments and nothing else (no aggregate or window clauses).
#[derive(Debug)]
struct LockCall {
    location: usize,
    args: usize,
}

impl LockCall {
    fn of(call: &Call) -> Option<Self> {
        let qualified_right = match call.names.as_slice() {
            [_] => true,
            [schema, _] => schema.eq_ignore_ascii_case("pg_catalog"),
            _ => false,
        };
        let plain = qualified_right && !call.named_args && !call.decorated && matches!(call.args, 1 | 2);
        plain.then_some(Self { location: call.location?, args: call.args })
    }
}

#[cfg(test)]
mod tests;
