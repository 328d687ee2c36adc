//! The one place where proxy errors become PostgreSQL ErrorResponses.

use bytes::{BufMut, BytesMut};

use super::backend::finish_message;

/// How bad an error is for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session continues.
    Error,
    /// The connection ends.
    Fatal,
}

impl Severity {
    /// As the wire says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error as the client will see it: severity, SQLSTATE, message, optional hint and
/// cursor position. The proxy's own are made from [`super::ProxyError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// Whether the session continues.
    pub severity: Severity,
    /// Five-character SQLSTATE.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// 1-based character position in the statement text (`P`), for syntax errors.
    pub position: Option<u32>,
}

impl PgError {
    /// A session-ending error with the SQLSTATE and message of something else's (a token's).
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self { severity: Severity::Fatal, code: code.into(), message: message.into(), hint: None, position: None }
    }

    /// Appends the ErrorResponse to `buf`, fields in PostgreSQL's order.
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        buf.put_u8(b'E');
        buf.put_i32(0);
        for (field, value) in
            [(b'S', self.severity.as_str()), (b'V', self.severity.as_str()), (b'C', &self.code), (b'M', &self.message)]
        {
            put_field(buf, field, value);
        }
        if let Some(hint) = &self.hint {
            put_field(buf, b'H', hint);
        }
        if let Some(position) = self.position {
            put_field(buf, b'P', &position.to_string());
        }
        buf.put_u8(0);
        finish_message(buf, start);
    }
}

fn put_field(buf: &mut BytesMut, field: u8, value: &str) {
    buf.put_u8(field);
    buf.put_slice(value.replace('\0', "").as_bytes());
    buf.put_u8(0);
}

/// Reads the fields of an ErrorResponse or NoticeResponse body.
pub fn parse_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, tail)) = super::read_cstr(tail) else { break };
        out.push((field, String::from_utf8_lossy(value).into_owned()));
        rest = tail;
    }
    out
}

/// Rebuilds a server ErrorResponse body as a [`PgError`] (severity kept as ERROR or FATAL).
pub fn from_server(body: &[u8]) -> PgError {
    let fields = parse_fields(body);
    let get = |f: u8| fields.iter().find(|(k, _)| *k == f).map(|(_, v)| v.clone());
    let severity = match get(b'V').or_else(|| get(b'S')).as_deref() {
        Some("FATAL") | Some("PANIC") => Severity::Fatal,
        _ => Severity::Error,
    };
    PgError {
        severity,
        code: get(b'C').unwrap_or_else(|| "XX000".into()),
        message: get(b'M').unwrap_or_default(),
        hint: get(b'H'),
        position: get(b'P').and_then(|p| p.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_wire_format() {
        let e = PgError {
            severity: Severity::Error,
            code: "42601".into(),
            message: "syntax error".into(),
            hint: Some("get a new token".into()),
            position: Some(7),
        };
        let mut buf = BytesMut::new();
        e.encode(&mut buf);
        assert_eq!(buf[0], b'E');
        assert_eq!(i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize, buf.len() - 1);
        assert_eq!(from_server(&buf[5..]), e);
    }
}
