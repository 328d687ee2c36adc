//! The session's side of per-tenant advisory lock keys (`policy::advisory`).

use bytes::Bytes;

use super::relay::Relay;
use crate::policy::advisory::{self, LockKeyError, LockScope};
use crate::policy::guard::{Refusal, Rule, Violation};
use crate::protocol::tag::client;
use crate::protocol::{ProxyError, codec};

impl Relay<'_> {
    /// `msg` with its advisory lock keys scoped to the client's tenant, or the refusal of a
    /// text (or fast-path call) whose keys cannot be. Exempt operators keep the
    /// database-wide keys (one migration lock for everyone).
    pub(super) async fn scope_lock_keys(&self, msg: Bytes) -> (Bytes, Option<Refusal>) {
        if self.shared.live().guard.exempts(self.state.identity.context.role.as_deref(), Rule::AdvisoryLock) {
            return (msg, None);
        }
        if msg[0] == client::FUNCTION_CALL {
            let oid = codec::body(&msg).get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let refusal = advisory::is_lock_function_oid(oid).then(|| lock_refusal(&LockKeyError::Unscopable));
            return (msg, refusal);
        }
        self.rewrite_sql(msg, advisory::may_name_lock_function, || {
            let scope = LockScope::for_tenant(&self.state.identity.context.tenant);
            move |sql: &[u8]| advisory::scope_lock_keys(sql, &scope).map_err(|e| lock_refusal(&e))
        })
        .await
    }
}

fn lock_refusal(e: &LockKeyError) -> Refusal {
    match e {
        LockKeyError::Unparsable(_) => return Refusal::of(&Violation::new(Rule::Unparsable, e.to_string())),
        LockKeyError::Syntax(syntax) => return Refusal::of(&Violation::syntax(syntax.clone())),
        LockKeyError::Unscopable => {}
    }
    Refusal { rule: Rule::AdvisoryLock, error: ProxyError::RefusedLock { what: e.to_string() }.into() }
}
