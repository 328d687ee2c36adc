//! The statement guard on arbitrary SQL text, in each client encoding a client may choose,
//! and the soundness of its verdict cache.

use std::sync::OnceLock;

use crate::policy::SqlText;
use crate::policy::advisory::{self, LockScope};
use crate::policy::guard::{self, Guard, Refusal};
use crate::policy::notify::{self, ChannelScope};

fn shared_guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| Guard::from_config(super::config()))
}

/// A verdict as a whole: the rule and the whole error the client would get.
fn outcome(verdict: &Result<(), Refusal>) -> Option<String> {
    verdict.as_ref().err().map(|r| format!("{}: {:?}", r.rule.name(), r.error))
}

/// A verdict as two texts sharing a cache key must share it: passed, or refused under which
/// rule and SQLSTATE. (A syntax error's message quotes the text, so two texts differ there;
/// such verdicts are never cached.)
fn verdict(verdict: &Result<(), Refusal>) -> Option<(&'static str, String)> {
    verdict.as_ref().err().map(|r| (r.rule.name(), r.error.code.clone()))
}

/// Client encodings the guard accepts, by how their bytes from 0x80 up are read: UTF-8
/// (the text must be valid), LATIN1 (each byte is U+0080..U+00FF, converted exactly below),
/// and the other single-byte and EUC encodings (bytes from 0x80 up only ever form non-ASCII
/// characters; the exact characters need conversion tables this module does not carry).
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Utf8,
    Latin1,
    HighBytes,
}

/// Feeds `data` (first byte: the client encoding; the rest: SQL text in it) to the guard,
/// the way the relay does for a Query and a Parse, and to the per-tenant rewrites. Checks
/// that a LATIN1 client's text gets the verdict (rule) the same text gets once converted to
/// UTF-8, which is what the server parses.
pub fn guard_sql(data: &[u8]) {
    let Some((&selector, sql)) = data.split_first() else { return };
    let encoding = match selector % 3 {
        0 => Encoding::Utf8,
        1 => Encoding::Latin1,
        _ => Encoding::HighBytes,
    };
    if matches!(encoding, Encoding::Utf8) && std::str::from_utf8(sql).is_err() {
        // The server refuses such text from a UTF-8 client before parsing it.
        return;
    }
    let g = shared_guard();
    let as_query = g.check_sql(sql, None, true);
    let as_parse = g.check_sql(sql, None, false);
    // A simple Query that starts a transaction may end with a reset; nothing else differs.
    if as_query.is_err() {
        assert!(as_parse.is_err(), "a Parse passes what the same Query is refused for");
    }
    if let Encoding::Latin1 = encoding {
        let converted: String = sql.iter().map(|&b| char::from(b)).collect();
        let server = g.check_sql(converted.as_bytes(), None, false);
        let rule = |v: &Result<(), Refusal>| v.as_ref().err().map(|r| r.rule);
        // Converted, the text may grow past the length limit: only a parsed verdict counts.
        if converted.len() <= g.max_statement_bytes() {
            assert_eq!(rule(&as_parse), rule(&server), "LATIN1 text and its UTF-8 conversion get different verdicts");
        }
    }
    if sql.len() <= g.max_statement_bytes() {
        if notify::may_name_channel(sql) {
            let _ = notify::scope_channels(sql, &ChannelScope::for_tenant("fuzz"), false);
        }
        if advisory::may_name_lock_function(sql) {
            let _ = advisory::scope_lock_keys(sql, &LockScope::for_tenant("fuzz"));
        }
    }
    let text = SqlText::new(sql);
    let _ = (text.resets_session(), text.creates_session_state(), text.deallocated_statement(sql));
}

/// Feeds `data` as a text `a`, a NUL, and bytes that edit the digits of `a` into a text `b`
/// (each byte: keep the next digit, change it, drop it, or add one before it). When `a` and
/// `b` share the cache key: their uncached verdicts are equal, and the cached verdict of each
/// equals its uncached one (`a` first fills the cache for `b`). A failure is a text whose
/// verdict is taken from another text it does not share it with: a security bug.
pub fn guard_cache(data: &[u8]) {
    let (a, edits) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let b = edit_digits(a, edits);
    let cfg = super::config();
    let g = Guard::from_config(cfg);
    let uncached_a = g.check_sql_uncached(a, None, false);
    let cached_a = [g.check_sql(a, None, false), g.check_sql(a, None, false)];
    for cached in &cached_a {
        assert_eq!(outcome(cached), outcome(&uncached_a), "cached verdict differs from uncached for {a:?}");
    }
    if guard::cache_key(a) != guard::cache_key(&b) {
        return;
    }
    let uncached_b = g.check_sql_uncached(&b, None, false);
    let cached_b = g.check_sql(&b, None, false);
    assert_eq!(
        verdict(&uncached_a),
        verdict(&uncached_b),
        "same cache key, different verdicts:\n a = {:?}\n b = {:?}",
        String::from_utf8_lossy(a),
        String::from_utf8_lossy(&b)
    );
    assert_eq!(outcome(&cached_b), outcome(&uncached_b), "cached verdict of b differs from its own");
}

/// `a` with its ASCII digits edited by `edits`, one byte per digit while they last.
fn edit_digits(a: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() + edits.len());
    let mut edits = edits.iter();
    for &byte in a {
        if !byte.is_ascii_digit() {
            out.push(byte);
            continue;
        }
        match edits.next().map(|e| (e % 4, b'0' + (e / 4) % 10)) {
            None | Some((0, _)) => out.push(byte),
            Some((1, digit)) => out.push(digit),
            Some((2, _)) => {}
            Some((_, digit)) => out.extend_from_slice(&[digit, byte]),
        }
    }
    out
}
