//! Server-to-client messages: the few the proxy writes itself, and the fields
//! it reads from upstream messages it relays.

use bytes::{BufMut, BytesMut};

use super::read_cstr;

/// Back-fills the length of the message that starts at `start` (its tag byte).
pub fn finish_message(buf: &mut BytesMut, start: usize) {
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    let start = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0);
    start
}

/// AuthenticationOk (0) or AuthenticationCleartextPassword (3).
pub fn authentication(buf: &mut BytesMut, code: i32) {
    let start = begin(buf, b'R');
    buf.put_i32(code);
    finish_message(buf, start);
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let start = begin(buf, b'S');
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(value.as_bytes());
    buf.put_u8(0);
    finish_message(buf, start);
}

/// BackendKeyData with the proxy-issued key.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    let start = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(secret);
    finish_message(buf, start);
}

/// CommandComplete with `tag` (e.g. `DEALLOCATE`).
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let start = begin(buf, b'C');
    buf.put_slice(tag.as_bytes());
    buf.put_u8(0);
    finish_message(buf, start);
}

/// ReadyForQuery with status `I`, `T` or `E`.
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let start = begin(buf, b'Z');
    buf.put_u8(status);
    finish_message(buf, start);
}

/// NegotiateProtocolVersion: the newest protocol version supported, as a whole number
/// (`major << 16 | minor`, as PostgreSQL sends it and libpq 18 reads it), and the options
/// not recognised.
pub fn negotiate_protocol_version(buf: &mut BytesMut, version: i32, unsupported: &[String]) {
    let start = begin(buf, b'v');
    buf.put_i32(version);
    buf.put_i32(unsupported.len() as i32);
    for option in unsupported {
        buf.put_slice(option.as_bytes());
        buf.put_u8(0);
    }
    finish_message(buf, start);
}

/// The status byte of a ReadyForQuery body.
pub fn ready_status(body: &[u8]) -> Option<u8> {
    body.first().copied().filter(|s| matches!(s, b'I' | b'T' | b'E'))
}

/// Name and value of a ParameterStatus body.
pub fn parse_parameter_status(body: &[u8]) -> Option<(String, String)> {
    let (name, rest) = read_cstr(body)?;
    let (value, _) = read_cstr(rest)?;
    Some((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned()))
}

/// Process id and secret of a BackendKeyData body (protocol 3.0: 4-byte secret).
pub fn parse_backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    let pid = i32::from_be_bytes(body.get(0..4)?.try_into().ok()?);
    let secret = i32::from_be_bytes(body.get(4..8)?.try_into().ok()?);
    Some((pid, secret))
}
