//! Protocol messages the attempts send by hand, and reading a reply up to ReadyForQuery.

use std::time::Duration;

use crate::common::raw::{self, RawClient};
use crate::session::Reply;

/// The longest wait for any reply.
pub const WAIT: Duration = Duration::from_secs(15);

/// Reads up to ReadyForQuery; answers a CopyInResponse with CopyFail.
pub async fn read_reply(c: &mut RawClient, reply: &mut Reply) {
    loop {
        let (tag, body) = match c.try_read_message(WAIT).await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(_) => {
                reply.closed = true;
                return;
            }
        };
        match tag {
            b'Z' => return,
            b'D' => reply.row(data_row(&body)),
            b'd' | b'A' | b'V' => reply.texts.push(String::from_utf8_lossy(&body).into_owned()),
            b'N' => reply.texts.push(raw::error_fields(&body).into_values().collect::<Vec<_>>().join(" | ")),
            b'E' => {
                let f = raw::error_fields(&body);
                let all = f.values().cloned().collect::<Vec<_>>().join(" | ");
                reply.error(&f[&'C'], &f[&'M'], all);
                if f.get(&'S').is_some_and(|s| s == "FATAL") {
                    reply.closed = true;
                }
            }
            b'G' => {
                let mut fail = vec![b'f'];
                let msg = raw::cstr("the attack suite sends no data");
                fail.extend(i32::try_from(msg.len() + 4).unwrap().to_be_bytes());
                fail.extend(msg);
                if c.try_send_raw(&fail).await.is_err() {
                    reply.closed = true;
                    return;
                }
            }
            _ => {}
        }
    }
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let mut at = 2;
    (0..n)
        .map(|_| {
            let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
            at += 4;
            let len = usize::try_from(len).ok()?;
            let value = String::from_utf8_lossy(&body[at..at + len]).into_owned();
            at += len;
            Some(value)
        })
        .collect()
}

/// Parse: statement `name`, `sql`, no parameter types.
pub fn parse_body(name: &str, sql: &str) -> Vec<u8> {
    let mut b = raw::cstr(name);
    b.extend(raw::cstr(sql));
    b.extend(0i16.to_be_bytes());
    b
}

/// Bind of the unnamed portal to `statement` with text `params`, text results.
pub fn bind_body(statement: &str, params: &[&str]) -> Vec<u8> {
    let mut b = raw::cstr("");
    b.extend(raw::cstr(statement));
    b.extend(0i16.to_be_bytes());
    b.extend(i16::try_from(params.len()).unwrap().to_be_bytes());
    for p in params {
        b.extend(i32::try_from(p.len()).unwrap().to_be_bytes());
        b.extend(p.as_bytes());
    }
    b.extend(0i16.to_be_bytes());
    b
}

/// Execute of the unnamed portal, all rows.
pub fn execute() -> (u8, Vec<u8>) {
    let mut b = raw::cstr("");
    b.extend(0i32.to_be_bytes());
    (b'E', b)
}

/// Sync.
pub fn sync() -> (u8, Vec<u8>) {
    (b'S', Vec::new())
}

/// A fast-path FunctionCall of `oid` with text arguments and a text result.
pub fn function_call(oid: u32, args: &[&str]) -> (u8, Vec<u8>) {
    let mut b = oid.to_be_bytes().to_vec();
    b.extend(1i16.to_be_bytes());
    b.extend(0i16.to_be_bytes());
    b.extend(i16::try_from(args.len()).unwrap().to_be_bytes());
    for a in args {
        b.extend(i32::try_from(a.len()).unwrap().to_be_bytes());
        b.extend(a.as_bytes());
    }
    b.extend(0i16.to_be_bytes());
    (b'F', b)
}
