//! PostgreSQL v3 wire protocol: framing of a byte stream into messages, the few
//! messages the proxy writes itself, and the few fields it reads.
//!
//! The proxy parses only what it must (startup, auth, ReadyForQuery status,
//! statement names, SQL text) and relays everything else as the bytes it
//! arrived in: `codec` never re-encodes a relayed message.

pub mod backend;
pub mod budget;
pub mod codec;
pub mod error;
pub mod frontend;
pub mod kind;
pub mod proxy_error;
pub mod tag;

pub use codec::{Frame, Framer, ProtocolError};
pub use error::{PgError, Severity};
pub use kind::{Kind, Reply};
pub use proxy_error::ProxyError;

/// Protocol 3.0 as sent in StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// SSLRequest code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// CancelRequest code.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Largest startup packet accepted (the server's own limit).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Reads a NUL-terminated string at the start of `buf`; returns it and the rest.
pub fn read_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}
