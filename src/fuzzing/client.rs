//! The client's byte stream from its first byte: startup-phase packets (SSLRequest,
//! GSSENCRequest, CancelRequest, StartupMessage), the PasswordMessage, then frontend messages
//! through the framer and every reader of their fields.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::frontend::{handshake, startup};
use crate::policy::SqlText;
use crate::policy::advisory::{self, LockScope};
use crate::policy::guard::Guard;
use crate::policy::notify::{self, ChannelScope};
use crate::protocol::frontend::{self, StartupPacket};
use crate::protocol::{self, Frame, Framer, Kind, codec};
use crate::session::statements::ClientStatements;
use crate::session::tracker::{Owner, Tracker};
use crate::session::vet::is_frontend_message;
use crate::upstream::StatementCache;

struct State {
    guard: Guard,
    limit: usize,
    channels: ChannelScope,
    locks: LockScope,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let cfg = super::config();
        State {
            guard: Guard::from_config(cfg),
            limit: cfg.limits.max_message_bytes,
            channels: ChannelScope::for_tenant("fuzz"),
            locks: LockScope::for_tenant("fuzz"),
        }
    })
}

/// Feeds `data` as everything a client sends. Panics only on a broken invariant (the
/// property checked besides "no panic, bounded memory, no hang").
pub fn client_stream(data: &[u8]) {
    let mut input = data;
    let packet = loop {
        let Some(Ok((code, body))) = super::now(handshake::read_startup_packet(&mut input)) else { return };
        match code {
            // Answered `N` (no TLS in the fuzzed configuration): the client goes on in clear.
            protocol::SSL_REQUEST | protocol::GSSENC_REQUEST => {}
            protocol::CANCEL_REQUEST => {
                let _ = handshake::cancel_key(&body);
                return;
            }
            version if version >> 16 == 3 => match StartupPacket::parse(version, &body) {
                Some(packet) => break packet,
                None => return,
            },
            _ => return,
        }
    };
    if startup::filter(&packet).is_err() {
        return;
    }
    match super::now(handshake::read_password(&mut input)) {
        Some(Ok(Ok(token))) => assert!(!token.is_empty() && !token.contains('\0')),
        _ => return,
    }
    messages(input);
}

/// Frontend messages after authentication, as the relay reads and vets them.
fn messages(input: &[u8]) {
    let st = state();
    let mut framer = Framer::default();
    framer.buffer().extend_from_slice(input);
    let mut tracker = Tracker::default();
    let mut statements = ClientStatements::default();
    let mut cache = StatementCache::default();
    loop {
        let msg = match framer.next(|tag| tag == protocol::tag::client::COPY_DATA, st.limit) {
            Ok(Some(Frame::Message(msg))) => msg,
            // A streamed CopyData's bytes are relayed, never read.
            Ok(Some(Frame::Piece(_))) => continue,
            Ok(None) | Err(_) => return,
        };
        let tag = msg[0];
        if tag == protocol::tag::client::TERMINATE {
            return;
        }
        if !is_frontend_message(tag) {
            return;
        }
        let Some(msg) = vet(st, msg) else { return };
        let body = codec::body(&msg);
        let kind = Kind::of(tag, body);
        let Ok(out) = statements.translate(msg.clone(), &mut cache, 8, false) else { continue };
        for out in out {
            assert!(out.bytes.len() >= 5, "a translated message has a header");
            if let Some(kind) = out.kind
                && tracker.sent(kind, Owner::Client).is_err()
            {
                return;
            }
        }
        let _ = tracker.take_dropped();
        let _ = kind;
    }
}

/// What `session::vet` and the scoping read of one message; `None` ends the session.
fn vet(st: &State, msg: Bytes) -> Option<Bytes> {
    let tag = msg[0];
    let mut msg = msg;
    if let Some(sql) = frontend::sql_text(tag, codec::body(&msg)).map(<[u8]>::to_vec)
        && sql.len() <= st.guard.max_statement_bytes()
    {
        if notify::may_name_channel(&sql)
            && let Ok(Some(text)) = notify::scope_channels(&sql, &st.channels, false)
        {
            msg = frontend::with_sql_text(&msg, &text)?;
        }
        let sql = frontend::sql_text(tag, codec::body(&msg))?.to_vec();
        if advisory::may_name_lock_function(&sql)
            && let Ok(Some(text)) = advisory::scope_lock_keys(&sql, &st.locks)
        {
            msg = frontend::with_sql_text(&msg, &text)?;
        }
    }
    let body = codec::body(&msg);
    let names = frontend::referenced_names(tag, body)?;
    let _ = names.iter().any(|n| n.starts_with(crate::policy::RESERVED_PREFIX));
    if tag == protocol::tag::client::BIND {
        let _ = frontend::bound_statement(body);
    }
    if let Some(sql) = frontend::sql_text(tag, body) {
        let text = SqlText::new(sql);
        let _ = (text.resets_session(), text.drops_all_statements(), text.creates_session_state());
        let _ = (text.needs_own_transaction(), text.opens_block(), text.deallocated_statement(sql));
        let _ = st.guard.check_sql(sql, None, tag == protocol::tag::client::QUERY);
    }
    Some(msg)
}
