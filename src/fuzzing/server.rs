//! The server's byte stream as the reply tracker sees it, interleaved with the requests it
//! answers: any backend message sequence after any set of frontend messages, errors
//! mid-pipeline and COPY included, with every reader of backend message fields the relay uses.

use std::sync::OnceLock;

use bytes::BytesMut;

use crate::policy::notify::ChannelScope;
use crate::protocol::tag::server;
use crate::protocol::{Frame, Framer, Kind, backend, codec, error};
use crate::session::statements;
use crate::session::tracker::{Owner, Route, Tracker};

/// Feeds `data`, a sequence of chunks `[direction][length: u16 BE][bytes]`: an even
/// direction byte is bytes the proxy sends the server (recorded in the tracker, owned by the
/// client or, per the direction's next bits, by the proxy), an odd one bytes the server sends.
/// Panics only on a broken invariant of the tracker.
pub fn server_stream(data: &[u8]) {
    static CHANNELS: OnceLock<ChannelScope> = OnceLock::new();
    let channels = CHANNELS.get_or_init(|| ChannelScope::for_tenant("fuzz"));
    let limit = super::config().limits.max_message_bytes.min(1 << 20);
    let (mut requests, mut replies) = (Framer::default(), Framer::default());
    let mut tracker = Tracker::default();
    let mut input = data;
    while let [direction, hi, lo, rest @ ..] = input {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (chunk, rest) = rest.split_at(len);
        input = rest;
        if direction & 1 == 0 {
            requests.buffer().extend_from_slice(chunk);
            if !send(&mut requests, &mut tracker, *direction >> 1, limit) {
                return;
            }
        } else {
            replies.buffer().extend_from_slice(chunk);
            if !receive(&mut replies, &mut tracker, channels, limit) {
                return;
            }
        }
        check(&tracker);
    }
}

/// Records every whole request in `framer`; `false` once the tracker refuses one.
fn send(framer: &mut Framer, tracker: &mut Tracker, owner: u8, limit: usize) -> bool {
    loop {
        let msg = match framer.next(|_| false, limit) {
            Ok(Some(Frame::Message(msg))) => msg,
            Ok(Some(Frame::Piece(_))) => continue,
            Ok(None) => return true,
            Err(_) => return false,
        };
        let Some(kind) = Kind::of(msg[0], codec::body(&msg)) else { continue };
        let owner = match owner % 4 {
            0 | 1 => Owner::Client,
            2 => Owner::Quiet,
            _ => Owner::Injection { before_simple: false, own_sync: false },
        };
        if tracker.sent(kind, owner).is_err() {
            return false;
        }
        let _ = tracker.take_dropped();
    }
}

/// Routes every whole reply in `framer` as the relay does; `false` where the relay would
/// close the server connection.
fn receive(framer: &mut Framer, tracker: &mut Tracker, channels: &ChannelScope, limit: usize) -> bool {
    loop {
        let stream_rows = tracker.front_is_client();
        let streamable =
            |tag| stream_rows && matches!(tag, server::DATA_ROW | server::COPY_DATA | server::FUNCTION_CALL_RESPONSE);
        let msg = match framer.next(streamable, limit) {
            Ok(Some(Frame::Message(msg))) => msg,
            Ok(Some(Frame::Piece(_))) => continue,
            Ok(None) => return true,
            Err(_) => return false,
        };
        let (tag, body) = (msg[0], codec::body(&msg));
        read_fields(tag, body, &msg, channels);
        match tracker.on_server(tag) {
            Err(_) => return false,
            Ok(Route::Unexpected) if tag != server::ERROR_RESPONSE => return false,
            Ok(_) => {}
        }
        let _ = tracker.take_dropped();
        let _ = (tracker.last_ends_batch(), tracker.skipping_known(), tracker.awaits_injection_before_simple());
        if tag == server::COPY_BOTH_RESPONSE {
            return false;
        }
    }
}

/// Every field the relay reads from a server message.
fn read_fields(tag: u8, body: &[u8], msg: &[u8], channels: &ChannelScope) {
    match tag {
        server::ERROR_RESPONSE | server::NOTICE_RESPONSE => {
            let e = error::from_server(body);
            let mut out = BytesMut::new();
            e.encode(&mut out);
        }
        server::READY_FOR_QUERY => {
            let _ = backend::ready_status(body);
        }
        server::PARAMETER_STATUS => {
            if let Some((name, value)) = backend::parse_parameter_status(body) {
                let _ = crate::upstream::unsafe_setting(&name, &value);
            }
        }
        server::ROW_DESCRIPTION | b'n' => {
            let _ = statements::shape(msg);
        }
        server::NOTIFICATION_RESPONSE => {
            let mut out = BytesMut::new();
            let _ = channels.append_for_client(body, &mut out);
        }
        b'K' => {
            let _ = backend::parse_backend_key_data(body);
        }
        _ => {}
    }
}

/// Invariants of the tracker between messages.
fn check(tracker: &Tracker) {
    if tracker.is_empty() {
        assert_eq!(tracker.batches_in_flight(), 0, "nothing owed, yet batches in flight");
        assert!(!tracker.copying_in() && !tracker.is_discarding());
    }
    if tracker.is_discarding() {
        assert!(tracker.skipping_known());
    }
}
