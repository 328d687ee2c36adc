//! Feeds: arbitrary SQL text (first byte: the client encoding, UTF-8, LATIN1 or another
//! single-byte/EUC encoding) to the statement guard as a Query and as a Parse, the
//! LISTEN/NOTIFY and advisory-lock rewrites, and the relay's lexical checks.
//! Checks: no panic, bounded memory, no hang; a Parse is refused whenever the same Query is;
//! LATIN1 text gets the rule its UTF-8 conversion (what the server parses) gets.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlsproxy::fuzzing::guard_sql(data));
