//! A client session under attack, and everything it received. Simple Query and Parse/Bind/
//! Execute messages go through the raw client, which sees every reply (rows of every
//! statement, COPY data, notices, notifications, errors); the extended protocol goes through
//! tokio-postgres, a real driver (named statements, Describe, binary results).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{AsyncMessage, Client};

use crate::common::proxy::TestProxy;
use crate::common::raw::{self, RawClient};
use crate::common::reply::data_row;
use crate::common::wire::Msgs;

/// The longest wait for any reply.
const WAIT: Duration = Duration::from_secs(15);

/// Reads up to ReadyForQuery; answers a CopyInResponse with CopyFail.
async fn read_reply(c: &mut RawClient, reply: &mut Transcript) {
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
                let fail = Msgs::new().copy_fail("the attack suite sends no data");
                if c.try_send_raw(fail.bytes()).await.is_err() {
                    reply.closed = true;
                    return;
                }
            }
            _ => {}
        }
    }
}

/// How an attempt's SQL is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One Query message per step.
    Simple,
    /// tokio-postgres `query` (Parse/Describe/Sync, then Bind/Execute/Sync), `copy_out` for COPY TO.
    Extended,
    /// Raw Parse (unnamed) + Bind + Execute + Sync per step.
    Parse,
}

impl Protocol {
    /// Every protocol an SQL attempt runs over.
    pub const ALL: [Protocol; 3] = [Protocol::Simple, Protocol::Extended, Protocol::Parse];

    /// For the report.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Parse => "parse",
        }
    }
}

/// An ErrorResponse.
#[derive(Debug, Clone)]
pub struct ServerError {
    /// SQLSTATE.
    pub code: String,
    /// Primary message.
    pub message: String,
}

/// What a session received over one or more steps, from the raw client or the driver.
#[derive(Debug, Default)]
pub struct Transcript {
    /// Data rows, as text (binary values decoded lossily).
    pub rows: Vec<Vec<Option<String>>>,
    /// Every text received: cells, COPY data, notices, notifications, error fields.
    pub texts: Vec<String>,
    /// ErrorResponses, in order.
    pub errors: Vec<ServerError>,
    /// The connection ended (or stopped answering).
    pub closed: bool,
}

impl Transcript {
    pub fn row(&mut self, cells: Vec<Option<String>>) {
        self.texts.extend(cells.iter().flatten().cloned());
        self.rows.push(cells);
    }

    pub fn error(&mut self, code: &str, message: &str, all: String) {
        self.errors.push(ServerError { code: code.into(), message: message.into() });
        self.texts.push(all);
    }

    /// The first column of every row.
    pub fn first_column(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.first().cloned().flatten().unwrap_or_default()).collect()
    }
}

/// Any value, as its raw bytes (text and xml are UTF-8 in binary format too).
struct AnyValue(Vec<u8>);

impl<'a> FromSql<'a> for AnyValue {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(AnyValue(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

enum Link {
    Raw(RawClient),
    Driver(Client, Arc<Mutex<Vec<String>>>),
}

/// One client session.
pub struct Session {
    link: Link,
    closed: bool,
}

impl Session {
    /// A tenant session through `proxy` with `token`, of the kind `protocol` needs.
    pub async fn open(proxy: &TestProxy, token: &str, protocol: Protocol) -> Session {
        let link = match protocol {
            Protocol::Extended => driver(proxy, token).await,
            _ => Link::Raw(raw_login(proxy, token).await),
        };
        Session { link, closed: false }
    }

    /// A session over a raw client that is logged in already.
    pub fn from_raw(c: RawClient) -> Session {
        Session { link: Link::Raw(c), closed: false }
    }

    /// The protocol the probe uses on this session.
    pub fn probe_protocol(&self) -> Protocol {
        match self.link {
            Link::Raw(_) => Protocol::Simple,
            Link::Driver(..) => Protocol::Extended,
        }
    }

    /// Sends one step and collects what comes back into `reply`.
    pub async fn run(&mut self, protocol: Protocol, sql: &str, reply: &mut Transcript) {
        let messages = match protocol {
            Protocol::Simple => Msgs::new().query(sql),
            Protocol::Parse => Msgs::new().run(sql, &[]),
            Protocol::Extended => {
                let Link::Driver(client, notes) = &self.link else { panic!("extended protocol needs a driver") };
                run_driver(client, sql, reply).await;
                reply.texts.append(&mut notes.lock().unwrap());
                self.closed |= reply.closed;
                return;
            }
        };
        self.exchange(&messages, reply).await;
    }

    /// Raw sessions: sends these messages, then reads up to ReadyForQuery.
    pub async fn exchange(&mut self, messages: &Msgs, reply: &mut Transcript) {
        let Link::Raw(c) = &mut self.link else { panic!("raw messages need a raw session") };
        if self.closed || c.try_send_raw(messages.bytes()).await.is_err() {
            self.closed = true;
            reply.closed = true;
            return;
        }
        read_reply(c, reply).await;
        self.closed |= reply.closed;
    }

    /// Ends the session politely.
    pub async fn close(self) {
        if let Link::Raw(mut c) = self.link
            && !self.closed
        {
            let _ = c.try_send_raw(Msgs::new().terminate().bytes()).await;
        }
    }
}

/// Logs in with the raw client (user alice, database app, plus `extra`); panics on refusal.
pub async fn raw_login(proxy: &TestProxy, token: &str) -> RawClient {
    let (c, msgs) = raw::login(proxy.addr, token, &[]).await;
    assert!(msgs.iter().all(|(t, _)| *t != b'E'), "login refused: {msgs:?}");
    c
}

/// A tokio-postgres session whose notices and notifications are kept.
async fn driver(proxy: &TestProxy, token: &str) -> Link {
    let (client, mut conn) =
        proxy.client_config(token).connect(tokio_postgres::NoTls).await.expect("tenant session connects");
    let notes = Arc::new(Mutex::new(Vec::new()));
    let sink = notes.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            let text = match msg {
                AsyncMessage::Notice(n) => format!("{} {} {}", n.code().code(), n.message(), n.detail().unwrap_or("")),
                AsyncMessage::Notification(n) => format!("{} {}", n.channel(), n.payload()),
                _ => continue,
            };
            sink.lock().unwrap().push(text);
        }
    });
    Link::Driver(client, notes)
}

async fn run_driver(client: &Client, sql: &str, reply: &mut Transcript) {
    let upper = sql.trim_start().to_ascii_uppercase();
    let copy_out = upper.starts_with("COPY") && upper.contains("TO STDOUT");
    let outcome = tokio::time::timeout(WAIT, async {
        if copy_out {
            let mut stream = std::pin::pin!(client.copy_out(sql).await?);
            while let Some(chunk) = stream.next().await {
                reply.texts.push(String::from_utf8_lossy(&chunk?).into_owned());
            }
        } else {
            for row in client.query(sql, &[]).await? {
                let cells = (0..row.len())
                    .map(|i| row.get::<_, Option<AnyValue>>(i).map(|v| String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                reply.row(cells);
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => match e.as_db_error() {
            Some(db) => {
                let all = format!("{} {} {}", db.message(), db.detail().unwrap_or(""), db.hint().unwrap_or(""));
                reply.error(db.code().code(), db.message(), all);
                reply.closed |= client.is_closed();
            }
            None => {
                reply.texts.push(e.to_string());
                reply.closed = true;
            }
        },
        Err(_) => {
            reply.texts.push("no reply before the timeout".into());
            reply.closed = true;
        }
    }
}
