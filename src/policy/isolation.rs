//! Statements that must not share a transaction with the injection.
//!
//! The injection normally travels in the same implicit transaction as the
//! client's first statement, which makes a failed injection skip that statement.
//! Some statements refuse that: those that cannot run in a transaction block or
//! pipeline (VACUUM, CREATE DATABASE, ... CONCURRENTLY, ALTER SYSTEM) and those
//! that set transaction characteristics, which must come before any query has
//! taken a snapshot (BEGIN ISOLATION LEVEL ..., SET TRANSACTION ...). For them
//! the injection runs first as its own transaction and is awaited. Over-matching
//! costs one round trip; under-matching would break the client's statement, never
//! the isolation between tenants.

/// True when `text` (lower case) needs the injection committed in a transaction of its own first.
pub fn needs_own_transaction(text: &str) -> bool {
    let first = first_word(text);
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    match first {
        // CALL and DO may COMMIT inside; the others refuse any transaction block or pipeline.
        "vacuum" | "reindex" | "cluster" | "call" | "do" | "discard" => true,
        "create" | "drop" | "alter" => has(&["database", "tablespace", "concurrently", "subscription", "system"]),
        "commit" | "rollback" | "end" | "abort" => has(&["prepared"]),
        "begin" | "start" => has(&["isolation", "read", "deferrable"]),
        "set" => has(&["transaction", "session characteristics"]),
        _ => false,
    }
}

/// True when `text` (lower case) starts an explicit transaction block (`BEGIN`, `START TRANSACTION`).
pub fn opens_block(text: &str) -> bool {
    matches!(first_word(text), "begin" | "start")
}

/// The first keyword, skipping whitespace, comments and opening parentheses.
pub(super) fn first_word(text: &str) -> &str {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(' || c == ';');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    fn n(sql: &[u8]) -> bool {
        crate::policy::SqlText::new(sql).needs_own_transaction()
    }

    #[test]
    fn recognises_statements_that_need_their_own_transaction() {
        assert!(n(b"VACUUM ANALYZE t"));
        assert!(n(b"  /* c */ -- x\n vacuum"));
        assert!(n(b"CREATE INDEX CONCURRENTLY i ON t (a)"));
        assert!(n(b"create database x"));
        assert!(n(b"BEGIN ISOLATION LEVEL SERIALIZABLE"));
        assert!(n(b"start transaction read only"));
        assert!(n(b"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"));
        assert!(n(b"COMMIT PREPARED 'x'"));
        assert!(n(b"CALL p()"));
        assert!(n(b"DISCARD ALL"));
        assert!(n(b"DO $$ BEGIN COMMIT; END $$"));
        assert!(!n(b"BEGIN"));
        assert!(!n(b"select * from documents"));
        assert!(!n(b"create table t (a int)"));
        assert!(!n(b"SET application_name = 'x'"));
    }
}
