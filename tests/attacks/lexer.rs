//! Attempts on the difference between the text the guard parses and the text the server
//! parses. The guard reads a statement as UTF-8 with `standard_conforming_strings = on`; the
//! server first converts it from the session's `client_encoding`, and honours the session's
//! `standard_conforming_strings`. Where the two disagree on where a string literal ends, a
//! call the server runs can look like the inside of a string to the guard.

use crate::Attempt;
use crate::Expect::{self, Guard};

/// Any refusal by the guard (of the setting, or of the statement) closes these paths.
pub const ANY_RULES: &[&str] = &[
    "set_protected",
    "reset_all",
    "discard",
    "set_config",
    "alter_settings",
    "do",
    "create_function",
    "sql_function",
    "unparsable",
];
const ANY_RULE: Expect = Guard(ANY_RULES);

/// The attempts of this file.
pub const ATTEMPTS: &[Attempt] = &[
    // "Á" is C3 81 in UTF-8. In SJIS, C3 is a one-byte katakana and 81 5C one two-byte
    // character: the backslash that escapes the quote for the guard is part of a character
    // for the server, so the server's string ends where the guard's goes on.
    Attempt::block(
        "SJIS client_encoding: set_config inside what the guard reads as a string",
        &[
            "SET client_encoding = 'SJIS'",
            "SELECT E'Á\\', set_config($$app.current_tenant$$, $$2$$, false), title FROM {docs} --'",
        ],
        ANY_RULE,
    ),
    // "丁" is E4 B8 81 in UTF-8; in GBK, E4 B8 is one character and 81 5C another.
    Attempt::block(
        "GBK client_encoding: set_config inside what the guard reads as a string",
        &[
            "SET client_encoding = 'GBK'",
            "SELECT E'丁\\', set_config($$app.current_tenant$$, $$2$$, false), title FROM {docs} --'",
        ],
        ANY_RULE,
    ),
    Attempt::block(
        "SJIS client_encoding: SET ROLE inside what the guard reads as a string",
        &["SET client_encoding = 'SJIS'", "SELECT E'Á\\'; SET ROLE admin_role; SELECT title FROM {docs} --'"],
        ANY_RULE,
    ),
    // With standard_conforming_strings off the server lets a backslash escape a quote in a
    // plain string literal; the guard never does.
    Attempt::block(
        "standard_conforming_strings off: set_config inside what the guard reads as a string",
        &[
            "SET standard_conforming_strings = off",
            "SELECT 'x\\' AS a, ' AS b, set_config($$app.current_tenant$$, $$2$$, false), title FROM {docs} --'",
        ],
        ANY_RULE,
    ),
    Attempt::block(
        "backslash_quote on: an E'' string hiding SET (the setting itself is protected)",
        &["SET LOCAL backslash_quote = on", "SELECT E'a\\'; SET app.current_tenant = 2; SELECT title FROM {docs}; --'"],
        Expect::Guard(&["set_protected"]),
    ),
];
