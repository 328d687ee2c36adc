//! The session's side of per-tenant channels (`policy::notify`): the channels of a
//! client's Query or Parse are scoped (see `scoping`), and a notification reaches the
//! client only on one of its tenant's channels, under the name the client used.

use bytes::{Bytes, BytesMut};

use super::relay::Relay;
use crate::policy::guard::{Refusal, Rule, Violation};
use crate::policy::notify::{self, ChannelError, ChannelScope, MAX_CHANNEL_BYTES};
use crate::protocol::tag::{client, server};
use crate::protocol::{ProxyError, codec};

impl Relay<'_> {
    /// `msg` with its channels scoped to the client's tenant (the same `msg` when it names
    /// none), or the refusal of a text whose channels cannot be scoped.
    pub(super) async fn scope_channels(&self, msg: Bytes) -> (Bytes, Option<Refusal>) {
        let exempt =
            || self.shared.live().guard.exempts(self.state.identity.context.role.as_deref(), Rule::NotifyChannel);
        if msg[0] == client::FUNCTION_CALL {
            let pg_notify = codec::body(&msg).get(..4) == Some(&notify::PG_NOTIFY_OID.to_be_bytes()[..]);
            let refusal = (pg_notify && !exempt()).then(|| channel_refusal(&ChannelError::Computed));
            return (msg, refusal);
        }
        self.rewrite_sql(msg, notify::may_name_channel, || {
            let (scope, exempt) = (ChannelScope::for_tenant(&self.state.identity.context.tenant), exempt());
            move |sql: &[u8]| {
                notify::scope_channels(sql, &scope, exempt).map_err(|e| match e {
                    ChannelError::Unparsable(_) => Refusal::of(&Violation::new(Rule::Unparsable, e.to_string())),
                    ChannelError::Syntax(e) => Refusal::of(&Violation::syntax(e)),
                    ChannelError::TooLong(_) => Refusal {
                        rule: Rule::NotifyChannel,
                        error: ProxyError::ChannelTooLong { detail: e.to_string(), bytes: MAX_CHANNEL_BYTES }.into(),
                    },
                    _ => channel_refusal(&e),
                })
            }
        })
        .await
    }
}

fn channel_refusal(e: &ChannelError) -> Refusal {
    Refusal { rule: Rule::NotifyChannel, error: ProxyError::RefusedChannel { what: e.to_string() }.into() }
}

/// Appends a NotificationResponse (`body`) to `to_client` if its channel is `tenant`'s.
pub(super) fn deliver_notification(to_client: &mut BytesMut, tenant: &str, body: &[u8]) {
    if !ChannelScope::for_tenant(tenant).append_for_client(body, to_client) {
        tracing::debug!("a notification on a channel of another tenant was dropped");
    }
}

/// Appends notices and notifications that arrived during an awaited batch (whole messages,
/// back to back) to `to_client`, notifications only if `tenant`'s.
pub(super) fn deliver_async_messages(to_client: &mut BytesMut, tenant: &str, mut raw: &[u8]) {
    while raw.len() >= 5 {
        let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
        let Some(msg) = raw.get(..1 + len).filter(|_| len >= 4) else { return };
        match msg[0] {
            server::NOTIFICATION_RESPONSE => deliver_notification(to_client, tenant, &msg[5..]),
            _ => to_client.extend_from_slice(msg),
        }
        raw = &raw[1 + len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        [&[tag][..], &(body.len() as u32 + 4).to_be_bytes(), body].concat()
    }

    #[test]
    fn messages_of_an_awaited_batch_keep_notices_and_only_the_tenants_notifications() {
        let notification =
            |channel: &str| message(b'A', &[&7u32.to_be_bytes()[..], channel.as_bytes(), b"\0p\0"].concat());
        let notice = message(b'N', b"SNOTICE\0\0");
        let raw = [
            notice.clone(),
            notification("6b86b273ff34fce1.mine"),
            notification("d4735e3a265e16ee.theirs"),
            notification("raw"),
        ]
        .concat();
        let mut out = BytesMut::new();
        deliver_async_messages(&mut out, "1", &raw);
        assert_eq!(&out[..], [notice, notification("mine")].concat());
        // A truncated message ends the walk instead of being relayed in part.
        let mut out = BytesMut::new();
        deliver_async_messages(&mut out, "1", &raw[..raw.len() - 2]);
        assert_eq!(out.len(), message(b'N', b"SNOTICE\0\0").len() + notification("mine").len());
    }
}
