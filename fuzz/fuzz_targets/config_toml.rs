//! Feeds: arbitrary text as the configuration file (TOML), parsed and validated, then the
//! guard and (keys inline) the token verifier built from it.
//! Checks: no panic, bounded memory, no hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlsproxy::fuzzing::config_toml(data));
