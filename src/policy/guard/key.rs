//! The guard's cache key: the statement text with every digit run of a numeric
//! literal collapsed to `0`, so that `… WHERE id = 17` and `… WHERE id = 4242`
//! share one verdict and a simple-protocol client that inlines its values is
//! parsed once per statement shape, not once per call. A run that a letter or `_`
//! continues (`0x1F`, `1e5`, `1_000`) is kept: there the digits decide the token.
//!
//! Sound because no rule looks at a numeric constant's value (only node kinds,
//! names and string constants), and conservative: the lexer below knows quoted
//! strings, quoted identifiers and comments, and a text with a backslash or a
//! `$` (escape strings, dollar quotes, parameters) is its own key unchanged.

use std::borrow::Cow;

/// The key under which the verdict for `sql` is cached.
pub(super) fn cache_key(sql: &[u8]) -> Cow<'_, [u8]> {
    if !sql.iter().any(u8::is_ascii_digit) || sql.iter().any(|&b| b == b'\\' || b == b'$') {
        return Cow::Borrowed(sql);
    }
    let mut key = Vec::with_capacity(sql.len());
    let mut i = 0;
    while i < sql.len() {
        let b = sql[i];
        let end = match b {
            b'\'' | b'"' => quoted_end(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-') => line_comment_end(sql, i),
            b'/' if sql.get(i + 1) == Some(&b'*') => block_comment_end(sql, i),
            b'0'..=b'9' if i == 0 || !is_identifier_byte(sql[i - 1]) => {
                let run = sql[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                // A run that letters or `_` continue is kept: its digits decide how it is read
                // (`0x1F`, `0o5` and `0b1` are numbers, `1x1F` and `90o5` syntax errors).
                if sql.get(i + run).is_some_and(|&b| is_identifier_byte(b)) {
                    key.extend_from_slice(&sql[i..i + run]);
                } else {
                    key.push(b'0');
                }
                i += run;
                continue;
            }
            _ => i + 1,
        };
        key.extend_from_slice(&sql[i..end]);
        i = end;
    }
    Cow::Owned(key)
}

/// A digit after one of these continues an identifier (or a parameter), not a number.
fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// End (exclusive) of the string or quoted identifier opening at `start`; a doubled quote
/// stays inside. Unterminated: the rest of the text.
fn quoted_end(sql: &[u8], start: usize) -> usize {
    let quote = sql[start];
    let mut i = start + 1;
    while i < sql.len() {
        if sql[i] == quote {
            if sql.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    sql.len()
}

fn line_comment_end(sql: &[u8], start: usize) -> usize {
    sql[start..].iter().position(|&b| b == b'\n' || b == b'\r').map_or(sql.len(), |p| start + p)
}

/// PostgreSQL's block comments nest.
fn block_comment_end(sql: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < sql.len() {
        match (sql[i], sql[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    sql.len()
}

#[cfg(test)]
mod tests {
    use super::cache_key;

    fn key(sql: &str) -> String {
        String::from_utf8(cache_key(sql.as_bytes()).into_owned()).expect("utf-8")
    }

    #[test]
    fn numeric_literals_collapse() {
        assert_eq!(key("SELECT abalance FROM a WHERE aid = 123456;"), "SELECT abalance FROM a WHERE aid = 0;");
        assert_eq!(key("select 1.25e+10, .5, 0x1F, 1_000"), "select 0.25e+0, .0, 0x1F, 1_000");
        assert_eq!(key("select 17"), key("select 4242"));
    }

    /// A digit run that a letter continues is not collapsed: `0o5` is a number, `90o5` a
    /// syntax error, and the second must not take the first's verdict (found by fuzzing).
    #[test]
    fn prefixed_and_continued_digit_runs_stay() {
        for (valid, invalid) in
            [("select 0o5", "select 90o5"), ("select 0x1F", "select 1x1F"), ("select 0b1", "select 2b1")]
        {
            assert_ne!(key(valid), key(invalid));
        }
    }

    #[test]
    fn digits_in_names_strings_and_comments_stay() {
        assert_eq!(key("select 'app.t 1', \"col 2\" -- 3\n, 4"), "select 'app.t 1', \"col 2\" -- 3\n, 0");
        assert_eq!(key("select /* 1 /* 2 */ 3 */ 4"), "select /* 1 /* 2 */ 3 */ 0");
        assert_eq!(key("select 'it''s 1', 2"), "select 'it''s 1', 0");
        assert_eq!(key("select x1, é2, _3, t1.c2 from t1"), "select x1, é2, _3, t1.c2 from t1");
        assert_eq!(key("select 'unterminated 1"), "select 'unterminated 1");
    }

    #[test]
    fn escapes_dollars_and_digitless_texts_are_their_own_key() {
        for sql in ["select E'\\' 1' , 2", "select $$ 1 $$, 2", "select $1", "select a from b"] {
            assert_eq!(key(sql), sql);
        }
    }
}
