//! Feeds: every byte a client sends, from the first (SSLRequest, GSSENCRequest, CancelRequest
//! or StartupMessage, the PasswordMessage, then any frontend messages), through the startup
//! filter, the framer, the readers of Query/Parse/Bind/Execute/Describe/Close/FunctionCall/
//! CopyData fields, the per-tenant rewrites, the guard, the statement translation and the
//! reply tracker's record of what was sent.
//! Checks: no panic, bounded memory, no hang; a password read is a non-empty token.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlsproxy::fuzzing::client_stream(data));
