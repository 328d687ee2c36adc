//! Per-tenant rewrites of a client's Query or Parse text, made before anything else looks
//! at it (the guard checks what the server will run): LISTEN/NOTIFY channels (`notify`),
//! then advisory lock keys (`advisory`).

use bytes::Bytes;

use super::relay::Relay;
use crate::policy::guard::{Refusal, Rule, Violation};
use crate::protocol::{codec, frontend};

impl Relay<'_> {
    /// `msg` scoped to the client's tenant (the same `msg` when nothing needs it), or the
    /// refusal of a text that cannot be.
    pub(super) async fn scope_to_tenant(&self, msg: Bytes) -> (Bytes, Option<Refusal>) {
        match self.scope_channels(msg).await {
            (msg, None) => self.scope_lock_keys(msg).await,
            refused => refused,
        }
    }

    /// The rewrite `rewriter` makes, applied to the SQL text of `msg` when `may_match` it (a
    /// cheap test, so that ordinary SQL is never parsed nor a rewrite made for it), within the
    /// guard's bounds on parsed text (its length; long texts on a blocking thread, a few at
    /// once), which hold here with the guard off as well.
    pub(super) async fn rewrite_sql<R>(
        &self,
        msg: Bytes,
        may_match: fn(&[u8]) -> bool,
        rewriter: impl FnOnce() -> R,
    ) -> (Bytes, Option<Refusal>)
    where
        R: FnOnce(&[u8]) -> Result<Option<Vec<u8>>, Refusal> + Send + 'static,
    {
        let Some(sql) = frontend::sql_text(msg[0], codec::body(&msg)) else { return (msg, None) };
        if !may_match(sql) {
            return (msg, None);
        }
        let guard = self.shared.live().guard.clone();
        let limit = guard.max_statement_bytes();
        if sql.len() > limit {
            let refusal = Refusal::too_long(sql.len(), limit);
            return (msg, Some(refusal));
        }
        let unparsed =
            || Err(Refusal::of(&Violation::new(Rule::Unparsable, "a statement the proxy could not parse".into())));
        match guard.parse_long(msg.slice_ref(sql), rewriter()).await.unwrap_or_else(unparsed) {
            Ok(None) => (msg, None),
            Ok(Some(text)) => match frontend::with_sql_text(&msg, &text) {
                Some(rewritten) => (rewritten, None),
                None => (msg, Some(Refusal::of(&Violation::new(Rule::Unparsable, "a malformed message".into())))),
            },
            Err(refusal) => (msg, Some(refusal)),
        }
    }
}
