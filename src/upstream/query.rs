//! Statements the proxy runs for itself on a server connection (role checks,
//! resets, the isolated injection): send a batch, read to ReadyForQuery.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

use super::connect::read_message;
use super::{ServerConn, UpstreamError};
use crate::protocol::{Frame, Framer, Kind, PgError, Reply, backend, codec, error, frontend};

/// A result row in text format.
pub type Row = Vec<Option<String>>;

/// Appends the Queries that reset a server session before another identity uses it, and
/// returns how many (each is answered up to a ReadyForQuery): `DISCARD ALL` (which cannot
/// share a Query with another statement), then a fresh seed for `random()`, whose state
/// belongs to the backend and which nothing else resets: a client's `setseed` would make
/// the next tenant's random numbers known to it.
pub fn reset_session(buf: &mut BytesMut) -> usize {
    use rand::Rng;
    // 53 random bits, in [-1, 1) as setseed takes them.
    let seed = (rand::rng().random::<u64>() >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
    frontend::query(buf, "DISCARD ALL");
    frontend::query(buf, &format!("SELECT pg_catalog.setseed({seed:.17})"));
    2
}

/// What a batch produced.
#[derive(Debug)]
pub struct BatchOutcome {
    /// DataRows, text format.
    pub rows: Vec<Row>,
    /// Transaction status from the final ReadyForQuery.
    pub status: u8,
    /// The first error, if any (the server skipped the rest of its segment up to a Sync).
    pub error: Option<PgError>,
    /// How many ReadyForQuery had arrived before that error: which segment failed.
    pub error_segment: usize,
    /// That ErrorResponse as the server sent it, every field included.
    pub error_raw: Option<bytes::Bytes>,
    /// The last RowDescription or NoData, whole.
    pub description: Option<bytes::Bytes>,
    /// NoticeResponse and NotificationResponse messages, raw. ParameterStatus only updates
    /// `ServerConn::params`: the session tells its client what changed.
    pub passthrough: BytesMut,
}

impl ServerConn {
    /// Sends `batch` (ending in Sync, or a simple Query) and reads up to its ReadyForQuery.
    pub async fn run_batch(&mut self, batch: &[u8]) -> Result<BatchOutcome, UpstreamError> {
        self.run_batches(batch).await
    }

    /// [`Self::run_batches`] within `upstream.connect_timeout_ms`: the awaited set-up of a
    /// connection (reset, injection) before a client uses it. A connection that does not
    /// answer in time is out of the caller's hands: it must be closed, never lent.
    pub async fn run_setup(&mut self, batch: &[u8]) -> Result<BatchOutcome, UpstreamError> {
        let limit = self.setup_timeout;
        tokio::time::timeout(limit, self.run_batches(batch)).await.map_err(|_| UpstreamError::SetupTimeout)?
    }

    /// Sends `batch` (messages each ending in a Query or Sync) and reads every reply it is owed,
    /// each checked against the message it answers: a reply that cannot be one of this
    /// batch's (left over from someone else's messages, or out of order) is an error, and the
    /// connection must not be used again.
    pub async fn run_batches(&mut self, batch: &[u8]) -> Result<BatchOutcome, UpstreamError> {
        let mut owed = kinds(batch)?;
        if !self.framer.is_empty() {
            return Err(UpstreamError::Protocol("unread server messages before the proxy's own batch".into()));
        }
        self.write_all(batch).await?;
        let mut seen = 0;
        let mut out = BatchOutcome {
            rows: Vec::new(),
            status: b'I',
            error: None,
            error_segment: 0,
            error_raw: None,
            description: None,
            passthrough: BytesMut::new(),
        };
        while let Some(&kind) = owed.front() {
            let (tag, msg) = read_message(self).await?;
            let body = codec::body(&msg);
            match tag {
                b'A' | b'N' => out.passthrough.extend_from_slice(&msg),
                b'S' => {
                    if let Some((k, v)) = backend::parse_parameter_status(body) {
                        if let Some(reason) = super::unsafe_setting(&k, &v) {
                            return Err(UpstreamError::UnsafeSetting(reason));
                        }
                        self.params.insert(k, v);
                    }
                }
                b'E' => {
                    let e = error::from_server(body);
                    if e.severity == crate::protocol::Severity::Fatal {
                        return Err(UpstreamError::Server { code: e.code, message: e.message });
                    }
                    if out.error.is_none() {
                        out.error = Some(e);
                        out.error_segment = seen;
                        out.error_raw = Some(msg.clone());
                    }
                    if kind.error_ends() {
                        while owed.front().is_some_and(|k| *k != Kind::Sync) {
                            owed.pop_front();
                        }
                    }
                }
                _ => match kind.reply(tag) {
                    Reply::Invalid => {
                        let e = format!("the server sent '{}' where the proxy's {kind:?} is owed a reply", tag as char);
                        return Err(UpstreamError::Protocol(e));
                    }
                    reply => {
                        match tag {
                            b'Z' => {
                                out.status = backend::ready_status(body)
                                    .ok_or_else(|| UpstreamError::Protocol("malformed ReadyForQuery".into()))?;
                                seen += 1;
                            }
                            b'T' | b'n' => out.description = Some(msg.clone()),
                            b'D' => out.rows.push(parse_data_row(body)?),
                            _ => {}
                        }
                        if reply == Reply::End {
                            owed.pop_front();
                        }
                    }
                },
            }
        }
        Ok(out)
    }

    /// Runs one statement with text parameters and returns its rows, or the server's error.
    pub async fn query_rows(&mut self, sql: &str, params: &[&str]) -> Result<Vec<Row>, UpstreamError> {
        let mut buf = BytesMut::new();
        frontend::parse(&mut buf, "", sql);
        frontend::bind_text(&mut buf, "", params);
        frontend::execute(&mut buf);
        // Leave no unnamed statement behind: a client's Bind of "" must not find ours.
        frontend::close_statement(&mut buf, "");
        frontend::sync(&mut buf);
        let outcome = self.run_batch(&buf).await?;
        match outcome.error {
            Some(e) => Err(UpstreamError::Server { code: e.code, message: e.message }),
            None => Ok(outcome.rows),
        }
    }
}

/// The kinds of the messages of `batch`, in order: what its replies must answer.
fn kinds(batch: &[u8]) -> Result<VecDeque<Kind>, UpstreamError> {
    let mut framer = Framer::default();
    framer.buffer().extend_from_slice(batch);
    let mut kinds = VecDeque::new();
    while let Some(frame) = framer.next(|_| false, batch.len())? {
        let Frame::Message(msg) = frame else { break };
        kinds.extend(Kind::of(msg[0], codec::body(&msg)));
    }
    if !framer.is_empty() || kinds.back().is_none_or(|k| !k.ends_batch()) {
        return Err(UpstreamError::Protocol("the proxy's batch does not end with a Query or Sync".into()));
    }
    Ok(kinds)
}

/// A text-array literal (`{"a","b"}`) for `names`, every element quoted: the way to pass a
/// list as one text parameter of [`ServerConn::query_rows`] (`$1::text[]`).
pub fn array_literal(names: &[String]) -> String {
    let quoted: Vec<String> =
        names.iter().map(|n| format!("\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("{{{}}}", quoted.join(","))
}

fn parse_data_row(mut body: &[u8]) -> Result<Row, UpstreamError> {
    let bad = || UpstreamError::Protocol("malformed DataRow".into());
    if body.len() < 2 {
        return Err(bad());
    }
    let n = body.get_i16();
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if body.len() < 4 {
            return Err(bad());
        }
        let len = body.get_i32();
        if len < 0 {
            row.push(None);
            continue;
        }
        let value = body.get(..len as usize).ok_or_else(bad)?;
        row.push(Some(String::from_utf8_lossy(value).into_owned()));
        body.advance(len as usize);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::array_literal;

    #[test]
    fn quotes_every_element() {
        assert_eq!(array_literal(&["a".into(), "b\"c".into(), "d\\e".into()]), r#"{"a","b\"c","d\\e"}"#);
        assert_eq!(array_literal(&[]), "{}");
    }
}
