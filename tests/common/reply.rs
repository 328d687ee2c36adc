//! Backend messages, decoded into what tests assert on. Protocol tests that check exact
//! sequences keep the messages as `(tag, body)` and use the functions here; the others take
//! a [`Reply`], one exchange up to ReadyForQuery.

use std::collections::HashMap;

use super::raw::error_fields;

/// A backend message: its tag and body.
pub type Message = (u8, Vec<u8>);

/// The messages of one reply, decoded.
#[derive(Debug, Default)]
pub struct Reply {
    /// Every message, in order.
    pub messages: Vec<Message>,
    /// DataRow values as text (NULL is `None`), in order.
    pub rows: Vec<Vec<Option<String>>>,
    /// CommandComplete tags.
    pub tags: Vec<String>,
    /// ErrorResponse fields.
    pub errors: Vec<HashMap<char, String>>,
    /// NoticeResponse fields.
    pub notices: Vec<HashMap<char, String>>,
    /// ParameterStatus name/value pairs.
    pub params: Vec<(String, String)>,
    /// BackendKeyData (pid, secret).
    pub backend_key: Option<(i32, i32)>,
    /// Tags of every message, in order, space-separated (e.g. `"1 2 D C Z"`).
    pub sequence: String,
    /// ReadyForQuery status: `I`, `T` or `E`.
    pub status: char,
}

impl Reply {
    /// The SQLSTATE and message of the only error.
    pub fn error(&self) -> (&str, &str) {
        assert_eq!(self.errors.len(), 1, "expected one error in {self:?}");
        (&self.errors[0][&'C'], &self.errors[0][&'M'])
    }

    /// The rows, each value required non-NULL.
    pub fn texts(&self) -> Vec<Vec<String>> {
        self.rows.iter().map(|r| r.iter().map(|v| v.clone().expect("non-NULL")).collect()).collect()
    }

    /// The first column of every row, each value required non-NULL.
    pub fn column(&self) -> Vec<String> {
        self.texts().into_iter().map(|mut r| r.remove(0)).collect()
    }
}

impl From<Vec<Message>> for Reply {
    fn from(messages: Vec<Message>) -> Reply {
        let mut reply = Reply::default();
        let mut tags = Vec::new();
        for (tag, body) in &messages {
            tags.push((*tag as char).to_string());
            match tag {
                b'D' => reply.rows.push(data_row(body)),
                b'C' => reply.tags.push(cstr_at(body, 0).0),
                b'E' => reply.errors.push(error_fields(body)),
                b'N' => reply.notices.push(error_fields(body)),
                b'S' => reply.params.push(parameter_status(body)),
                b'K' => reply.backend_key = Some((i32_at(body, 0), i32_at(body, 4))),
                b'Z' => reply.status = body[0] as char,
                _ => {}
            }
        }
        reply.sequence = tags.join(" ");
        reply.messages = messages;
        reply
    }
}

/// The message tags as characters, for readable assertions (e.g. `"TDCZ"`).
pub fn tags(msgs: &[Message]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

/// The values of a DataRow body as text (lossy UTF-8; NULL is `None`).
pub fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let count = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let mut at = 2;
    (0..count)
        .map(|_| {
            let len = usize::try_from(i32_at(body, at)).ok();
            at += 4;
            len.map(|len| {
                let value = String::from_utf8_lossy(&body[at..at + len]).into_owned();
                at += len;
                value
            })
        })
        .collect()
}

/// The values of every DataRow among `msgs`.
pub fn data_rows(msgs: &[Message]) -> Vec<Vec<Option<String>>> {
    msgs.iter().filter(|(t, _)| *t == b'D').map(|(_, body)| data_row(body)).collect()
}

/// The first column of every DataRow among `msgs` (NULL as the empty string).
pub fn first_column(msgs: &[Message]) -> Vec<String> {
    data_rows(msgs).into_iter().map(|r| r[0].clone().unwrap_or_default()).collect()
}

/// The fields of the only ErrorResponse among `msgs`.
pub fn the_error(msgs: &[Message]) -> HashMap<char, String> {
    let errors: Vec<_> = msgs.iter().filter(|(t, _)| *t == b'E').collect();
    assert_eq!(errors.len(), 1, "expected one ErrorResponse in {}", tags(msgs));
    error_fields(&errors[0].1)
}

/// Name and value of a ParameterStatus body.
pub fn parameter_status(body: &[u8]) -> (String, String) {
    let (name, at) = cstr_at(body, 0);
    (name, cstr_at(body, at).0)
}

/// The C string starting at `start` (lossy UTF-8) and the offset after its NUL.
pub fn cstr_at(body: &[u8], start: usize) -> (String, usize) {
    let len = body[start..].iter().position(|&b| b == 0).unwrap_or(body.len() - start);
    (String::from_utf8_lossy(&body[start..start + len]).into_owned(), start + len + 1)
}

fn i32_at(body: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"))
}
