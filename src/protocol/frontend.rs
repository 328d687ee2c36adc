//! Client-to-server messages: the startup packet the proxy decodes, the names
//! and SQL it reads from relayed messages, and the messages it writes upstream.

use bytes::{BufMut, BytesMut};
use postgres_protocol::IsNull;
use postgres_protocol::message::frontend;

use super::read_cstr;

/// A StartupMessage: protocol version and parameters in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupPacket {
    /// Requested protocol version (major << 16 | minor).
    pub version: i32,
    /// Name/value pairs.
    pub params: Vec<(String, String)>,
}

impl StartupPacket {
    /// Decodes the body after the length and version fields.
    pub fn parse(version: i32, mut body: &[u8]) -> Option<Self> {
        let mut params = Vec::new();
        loop {
            let (name, rest) = read_cstr(body)?;
            if name.is_empty() {
                return Some(Self { version, params });
            }
            let (value, rest) = read_cstr(rest)?;
            params.push((String::from_utf8(name.to_vec()).ok()?, String::from_utf8(value.to_vec()).ok()?));
            body = rest;
        }
    }

    /// The value of `name` (exact match, as the server does for `user` and `database`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Statement and portal names a relayed message refers to, for reserved-name checks.
pub fn referenced_names(tag: u8, body: &[u8]) -> Option<Vec<&[u8]>> {
    match tag {
        b'P' => Some(vec![read_cstr(body)?.0]),
        b'B' => {
            let (portal, rest) = read_cstr(body)?;
            let (statement, _) = read_cstr(rest)?;
            Some(vec![portal, statement])
        }
        b'D' | b'C' => Some(vec![read_cstr(body.get(1..)?)?.0]),
        b'E' => Some(vec![read_cstr(body)?.0]),
        _ => Some(Vec::new()),
    }
}

/// The statement name a Bind body refers to.
pub fn bound_statement(body: &[u8]) -> Option<&[u8]> {
    Some(read_cstr(read_cstr(body)?.1)?.0)
}

/// SQL text of a Query or Parse body.
pub fn sql_text(tag: u8, body: &[u8]) -> Option<&[u8]> {
    match tag {
        b'Q' => Some(read_cstr(body)?.0),
        b'P' => Some(read_cstr(read_cstr(body)?.1)?.0),
        _ => None,
    }
}

/// A Query or Parse message (`msg`, whole) with its SQL text replaced by `sql`; `None` when
/// `msg` is neither or malformed.
pub fn with_sql_text(msg: &[u8], sql: &[u8]) -> Option<bytes::Bytes> {
    let (&tag, body) = msg.split_first()?;
    let body = body.get(4..)?;
    let (head, rest) = match tag {
        b'Q' => (&body[..0], body),
        b'P' => {
            let (name, rest) = read_cstr(body)?;
            (&body[..name.len() + 1], rest)
        }
        _ => return None,
    };
    let (_, tail) = read_cstr(rest)?;
    let len = 4 + head.len() + sql.len() + 1 + tail.len();
    let mut out = BytesMut::with_capacity(len + 1);
    out.put_u8(tag);
    out.put_u32(u32::try_from(len).ok()?);
    out.put_slice(head);
    out.put_slice(sql);
    out.put_u8(0);
    out.put_slice(tail);
    Some(out.freeze())
}

/// Parse of `name` with untyped parameters.
pub fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
    // Cannot fail: the strings are ours and contain no NUL.
    let _ = frontend::parse(name, sql, std::iter::empty(), buf);
}

/// Bind of the unnamed portal to `statement` with text parameters and text results.
pub fn bind_text(buf: &mut BytesMut, statement: &str, values: &[&str]) {
    let _ = frontend::bind(
        "",
        statement,
        std::iter::once(0i16),
        values.iter(),
        |v, out: &mut BytesMut| {
            out.put_slice(v.as_bytes());
            Ok(IsNull::No)
        },
        std::iter::once(0i16),
        buf,
    );
}

/// Execute of the unnamed portal, all rows.
pub fn execute(buf: &mut BytesMut) {
    let _ = frontend::execute("", 0, buf);
}

/// Close of a prepared statement (not an error when it does not exist).
pub fn close_statement(buf: &mut BytesMut, name: &str) {
    let _ = frontend::close(b'S', name, buf);
}

/// Close of a portal (not an error when it does not exist).
pub fn close_portal(buf: &mut BytesMut, name: &str) {
    let _ = frontend::close(b'P', name, buf);
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    frontend::sync(buf);
}

/// Simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    let _ = frontend::query(sql, buf);
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    frontend::terminate(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_startup_parameters_and_names() {
        let body = b"user\0alice\0database\0app\0\0";
        let p = StartupPacket::parse(196_608, body);
        assert_eq!(p.as_ref().and_then(|p| p.get("database")), Some("app"));
        assert_eq!(p.map(|p| p.params.len()), Some(2));
        assert!(StartupPacket::parse(196_608, b"user\0alice").is_none());
        let bind = b"portal\0stmt\0\0\0";
        assert_eq!(referenced_names(b'B', bind), Some(vec![&b"portal"[..], &b"stmt"[..]]));
        assert_eq!(referenced_names(b'C', b"Sname\0"), Some(vec![&b"name"[..]]));
        assert_eq!(sql_text(b'P', b"s1\0select 1\0\0\0"), Some(&b"select 1"[..]));
    }
}
