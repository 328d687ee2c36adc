//! Logins (SCRAM straight to PostgreSQL, token through the proxy) and a reader that
//! turns every backend message into a record.

use std::collections::BTreeMap;
use std::time::Duration;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use crate::common::raw::{self, RawClient};
use crate::common::reply::parameter_status;

/// How long one backend message may take before the case fails (100k rows, 1 MiB values).
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A backend message as recorded: its tag and body.
pub type Record = (u8, Vec<u8>);

/// Tag of the pseudo-record written when the peer closed the connection.
pub const EOF_TAG: u8 = b'!';

/// When a step's reading stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this many ReadyForQuery.
    Readies(usize),
    /// After the first message with this tag (e.g. CopyInResponse before sending the data).
    Tag(u8),
    /// Read nothing: the next step continues the same write (e.g. a message split in two).
    Nothing,
}

/// Reads into `out` until `until` is met; `Err` on timeout or EOF (recorded as [`EOF_TAG`]).
pub async fn read_until(conn: &mut RawClient, until: Until, out: &mut Vec<Record>) -> Result<(), String> {
    if matches!(until, Until::Nothing) {
        return Ok(());
    }
    let mut readies = 0;
    loop {
        match conn.try_read_message(READ_TIMEOUT).await {
            Ok(Some((tag, body))) => {
                out.push((tag, body));
                let done = match until {
                    Until::Readies(n) => {
                        if tag == b'Z' {
                            readies += 1;
                        }
                        readies >= n
                    }
                    Until::Tag(t) => tag == t,
                    Until::Nothing => true,
                };
                if done {
                    return Ok(());
                }
            }
            Ok(None) => {
                out.push((EOF_TAG, Vec::new()));
                return Err("the connection was closed".into());
            }
            Err(e) => return Err(format!("read failed after {} messages: {e}", out.len())),
        }
    }
}

/// A logged-in raw connection and the ParameterStatus values it got at startup.
pub struct Login {
    /// The connection, after the startup's ReadyForQuery.
    pub conn: RawClient,
    /// ParameterStatus values of the startup.
    pub params: BTreeMap<String, String>,
}

async fn finish_startup(mut conn: RawClient) -> Login {
    let mut messages = Vec::new();
    read_until(&mut conn, Until::Readies(1), &mut messages).await.expect("startup");
    let mut params = BTreeMap::new();
    for (tag, body) in &messages {
        assert_ne!(*tag, b'E', "startup failed: {:?}", raw::error_fields(body));
        if *tag == b'S' {
            let (name, value) = parameter_status(body);
            params.insert(name, value);
        }
    }
    Login { conn, params }
}

fn expect_auth(msg: &Record, code: i32) -> Vec<u8> {
    let (tag, body) = msg;
    assert_eq!(*tag, b'R', "expected an authentication request, got {:?}", raw::error_fields(body));
    assert_eq!(body[..4], code.to_be_bytes(), "authentication request code");
    body[4..].to_vec()
}

/// Logs into PostgreSQL itself as `user` with SCRAM-SHA-256 (no channel binding).
pub async fn login_scram(addr: std::net::SocketAddr, user: &str, password: &str, params: &[(&str, &str)]) -> Login {
    let mut conn = raw::connect(addr).await;
    let mut startup = vec![("user", user), ("database", "app")];
    startup.extend_from_slice(params);
    conn.send_startup(&startup).await;
    let mechanisms = expect_auth(&conn.read_message().await, 10);
    assert!(
        mechanisms.windows(b"SCRAM-SHA-256\0".len()).any(|w| w == b"SCRAM-SHA-256\0"),
        "server offers SCRAM-SHA-256"
    );
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut initial = raw::cstr("SCRAM-SHA-256");
    initial.extend_from_slice(&i32::try_from(scram.message().len()).expect("short").to_be_bytes());
    initial.extend_from_slice(scram.message());
    conn.send(b'p', &initial).await;
    let server_first = expect_auth(&conn.read_message().await, 11);
    scram.update(&server_first).expect("SCRAM server-first message");
    conn.send(b'p', scram.message()).await;
    let server_final = expect_auth(&conn.read_message().await, 12);
    scram.finish(&server_final).expect("SCRAM server signature");
    expect_auth(&conn.read_message().await, 0);
    finish_startup(conn).await
}

/// Logs into the proxy with `token` as the (cleartext) password.
pub async fn login_token(addr: std::net::SocketAddr, token: &str, params: &[(&str, &str)]) -> Login {
    let mut conn = raw::connect(addr).await;
    let mut startup = vec![("user", "alice"), ("database", "app")];
    startup.extend_from_slice(params);
    conn.send_startup(&startup).await;
    expect_auth(&conn.read_message().await, 3);
    conn.send_password(token).await;
    expect_auth(&conn.read_message().await, 0);
    finish_startup(conn).await
}

/// A readable one-line rendering of a record, for failure reports.
pub fn describe(record: &Record) -> String {
    let (tag, body) = record;
    let text = match tag {
        b'E' | b'N' => {
            let mut fields: Vec<(char, String)> = raw::error_fields(body).into_iter().collect();
            fields.sort();
            fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" | ")
        }
        _ => {
            let lossy = String::from_utf8_lossy(body).replace('\0', "\\0");
            if lossy.len() > 160 {
                let cut = (0..=160).rev().find(|&i| lossy.is_char_boundary(i)).unwrap_or(0);
                format!("{}… ({} bytes)", &lossy[..cut], body.len())
            } else {
                lossy
            }
        }
    };
    format!("'{}' {text}", *tag as char)
}
