//! Feeds: a mode byte and a PasswordMessage body (the JWT) to token verification; odd modes
//! re-sign the token's header and payload with the configured key so the claim checks run.
//! Checks: no panic, bounded memory, no hang; a verified token names a tenant.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlsproxy::fuzzing::jwt_password(data));
