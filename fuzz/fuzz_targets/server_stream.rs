//! Feeds: chunks of bytes the proxy sends its server and bytes the server sends back,
//! interleaved (`[direction][u16 length][bytes]`), through the framer and the reply tracker
//! as the relay routes them (errors mid-pipeline, COPY, asynchronous messages), and every
//! reader of backend message fields (ErrorResponse, ParameterStatus, ReadyForQuery,
//! RowDescription, NotificationResponse, BackendKeyData).
//! Checks: no panic, bounded memory, no hang; the tracker's invariants between messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rlsproxy::fuzzing::server_stream(data));
