//! Feeds: a SQL text, a NUL, and edits of its digits that make a second text.
//! Checks (differential, the guard's verdict cache): for two texts with the same cache key
//! the uncached verdicts are equal, and every cached verdict equals the uncached one. A
//! failure lets one text take another's verdict: a security bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlsproxy::fuzzing::guard_cache(data));
