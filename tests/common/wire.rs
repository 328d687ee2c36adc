//! Frontend messages, built into one buffer so that a test sends a whole pipeline in one
//! write and reads as the sequence it specifies:
//!
//! ```ignore
//! let batch = Msgs::new().parse("", "SELECT $1::int4", &[]).bind_text("", "", &["7"]).execute("", 0).sync();
//! c.send_msgs(&batch).await;
//! ```
//!
//! Malformed or partial input stays explicit: [`Msgs::msg`] frames any tag and body,
//! [`Msgs::raw`] appends bytes unframed, and [`Msgs::bytes`] can be cut anywhere.

use super::raw::cstr;

/// A sequence of frontend messages, as the bytes on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Msgs(pub Vec<u8>);

fn push_i16(buf: &mut Vec<u8>, v: usize) {
    buf.extend_from_slice(&i16::try_from(v).expect("fits in i16").to_be_bytes());
}

fn push_values(buf: &mut Vec<u8>, values: &[Option<&[u8]>]) {
    push_i16(buf, values.len());
    for value in values {
        match value {
            Some(v) => {
                buf.extend_from_slice(&i32::try_from(v.len()).expect("fits in i32").to_be_bytes());
                buf.extend_from_slice(v);
            }
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
}

fn push_formats(buf: &mut Vec<u8>, formats: &[i16]) {
    push_i16(buf, formats.len());
    for f in formats {
        buf.extend_from_slice(&f.to_be_bytes());
    }
}

/// Text values as Bind or FunctionCall values (none of them NULL).
pub fn texts<'a>(values: &'a [&'a str]) -> Vec<Option<&'a [u8]>> {
    values.iter().map(|v| Some(v.as_bytes())).collect()
}

impl Msgs {
    /// No messages yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The tags of the messages, for failure reports (e.g. `"PBES"`).
    pub fn tags(&self) -> String {
        let mut tags = String::new();
        let mut rest = self.bytes();
        while let [tag, a, b, c, d, ..] = *rest {
            tags.push(tag as char);
            let len = usize::try_from(i32::from_be_bytes([a, b, c, d])).unwrap_or(0);
            rest = rest.get(1 + len..).unwrap_or_default();
        }
        tags
    }

    /// Any tagged message: `tag`, the length (4 + body), `body`. Also for bodies a
    /// well-behaved client never sends (unknown tags, truncated fields).
    pub fn msg(mut self, tag: u8, body: &[u8]) -> Self {
        self.0.push(tag);
        self.0.extend_from_slice(&i32::try_from(body.len() + 4).expect("fits in i32").to_be_bytes());
        self.0.extend_from_slice(body);
        self
    }

    /// The messages of `more` after these.
    pub fn then(mut self, more: &Msgs) -> Self {
        self.0.extend_from_slice(more.bytes());
        self
    }

    /// These bytes, unframed: half a message, a lying length, garbage.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Query (`Q`).
    pub fn query(self, sql: &str) -> Self {
        self.msg(b'Q', &cstr(sql))
    }

    /// Parse (`P`) with parameter type OIDs (0: unspecified).
    pub fn parse(self, name: &str, sql: &str, types: &[u32]) -> Self {
        let mut body = cstr(name);
        body.extend(cstr(sql));
        push_i16(&mut body, types.len());
        for t in types {
            body.extend_from_slice(&t.to_be_bytes());
        }
        self.msg(b'P', &body)
    }

    /// Bind (`B`): parameter format codes, values (None: NULL), result format codes.
    pub fn bind(self, portal: &str, stmt: &str, formats: &[i16], values: &[Option<&[u8]>], results: &[i16]) -> Self {
        let mut body = cstr(portal);
        body.extend(cstr(stmt));
        push_formats(&mut body, formats);
        push_values(&mut body, values);
        push_formats(&mut body, results);
        self.msg(b'B', &body)
    }

    /// Bind with text parameters and text results.
    pub fn bind_text(self, portal: &str, stmt: &str, values: &[&str]) -> Self {
        self.bind(portal, stmt, &[], &texts(values), &[])
    }

    /// Describe (`D`) of a statement (`S`) or portal (`P`).
    pub fn describe(self, kind: u8, name: &str) -> Self {
        let mut body = vec![kind];
        body.extend(cstr(name));
        self.msg(b'D', &body)
    }

    /// Execute (`E`); `max_rows` 0 means all.
    pub fn execute(self, portal: &str, max_rows: i32) -> Self {
        let mut body = cstr(portal);
        body.extend_from_slice(&max_rows.to_be_bytes());
        self.msg(b'E', &body)
    }

    /// Close (`C`) of a statement (`S`) or portal (`P`).
    pub fn close(self, kind: u8, name: &str) -> Self {
        let mut body = vec![kind];
        body.extend(cstr(name));
        self.msg(b'C', &body)
    }

    /// Sync (`S`).
    pub fn sync(self) -> Self {
        self.msg(b'S', &[])
    }

    /// Flush (`H`).
    pub fn flush(self) -> Self {
        self.msg(b'H', &[])
    }

    /// CopyData (`d`).
    pub fn copy_data(self, data: &[u8]) -> Self {
        self.msg(b'd', data)
    }

    /// CopyDone (`c`).
    pub fn copy_done(self) -> Self {
        self.msg(b'c', &[])
    }

    /// CopyFail (`f`).
    pub fn copy_fail(self, reason: &str) -> Self {
        self.msg(b'f', &cstr(reason))
    }

    /// FunctionCall (`F`) of the function with `oid`.
    pub fn function_call(self, oid: u32, formats: &[i16], args: &[Option<&[u8]>], result_format: i16) -> Self {
        let mut body = oid.to_be_bytes().to_vec();
        push_formats(&mut body, formats);
        push_values(&mut body, args);
        body.extend_from_slice(&result_format.to_be_bytes());
        self.msg(b'F', &body)
    }

    /// FunctionCall with text arguments (one format code, text) and a text result.
    pub fn function_call_text(self, oid: u32, args: &[&str]) -> Self {
        self.function_call(oid, &[0], &texts(args), 0)
    }

    /// Terminate (`X`).
    pub fn terminate(self) -> Self {
        self.msg(b'X', &[])
    }

    /// Parse + Bind (text) + Execute of the unnamed statement and portal, no Sync.
    pub fn unsynced(self, sql: &str, values: &[&str]) -> Self {
        self.parse("", sql, &[]).bind_text("", "", values).execute("", 0)
    }

    /// [`Self::unsynced`], then Sync: one extended-protocol batch.
    pub fn run(self, sql: &str, values: &[&str]) -> Self {
        self.unsynced(sql, values).sync()
    }
}
