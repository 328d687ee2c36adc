//! Refuses an upstream role that would defeat row-level security: a superuser or
//! BYPASSRLS role skips every policy, and a role that *inherits* an allowed role,
//! or any role a policy of this database is written `TO`, gets that role's
//! policies (`TO admin_role USING (true)`) for every tenant without any `SET ROLE`.
//!
//! The catalog facts are read by [`facts`] and judged by [`RoleFacts::verdict`], so that
//! `rlsproxy doctor` reports the same facts as findings where the proxy refuses to start.

use crate::upstream::{ServerConn, UpstreamError, array_literal};

/// One row about `current_user`; lists are JSON arrays of names, so that no separator can be
/// confused with a character of a (quoted) name.
const FACTS_SQL: &str = "SELECT r.rolname, r.rolsuper::text, r.rolbypassrls::text, \
  coalesce((SELECT json_agg(a.rolname ORDER BY a.rolname) FROM pg_roles a \
    WHERE (a.rolname = ANY($1::text[]) OR a.oid IN (SELECT unnest(polroles) FROM pg_policy)) \
    AND a.oid <> r.oid AND pg_has_role(r.oid, a.oid, 'USAGE')), '[]')::text, \
  coalesce((SELECT json_agg(x ORDER BY x) FROM unnest($1::text[]) x WHERE NOT EXISTS \
    (SELECT 1 FROM pg_roles a WHERE a.rolname = x AND pg_has_role(r.oid, a.oid, 'MEMBER'))), '[]')::text, \
  coalesce((SELECT json_agg(c.oid::regclass::text ORDER BY c.oid::regclass::text) FROM pg_class c \
    WHERE c.relowner = r.oid AND c.relrowsecurity AND NOT c.relforcerowsecurity), '[]')::text \
  FROM pg_roles r WHERE r.rolname = current_user";

/// What the catalog says about the role a connection is logged in as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleFacts {
    /// `current_user`.
    pub name: String,
    /// Superusers bypass every policy.
    pub superuser: bool,
    /// BYPASSRLS roles bypass every policy.
    pub bypassrls: bool,
    /// Allowed roles and roles named by policies whose privileges it has without `SET ROLE`:
    /// their policies apply to every tenant.
    pub inherited: Vec<String>,
    /// Allowed roles it cannot `SET ROLE` to (not a member, or no such role).
    pub not_member_of: Vec<String>,
    /// Tables it owns whose row-level security is enabled but not forced: their policies do
    /// not apply to it.
    pub unforced_owned: Vec<String>,
}

/// Reads the [`RoleFacts`] of the role `conn` is logged in as; `allowed_roles` are the roles
/// tokens may select.
pub async fn facts(conn: &mut ServerConn, allowed_roles: &[String]) -> Result<RoleFacts, UpstreamError> {
    let rows = conn.query_rows(FACTS_SQL, &[&array_literal(allowed_roles)]).await?;
    let row = rows.first().ok_or_else(|| UpstreamError::UnsafeRole("current_user not found in pg_roles".into()))?;
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let list = |i: usize| {
        serde_json::from_str::<Vec<String>>(&field(i))
            .map_err(|e| UpstreamError::Protocol(format!("unexpected answer about the upstream role: {e}")))
    };
    Ok(RoleFacts {
        name: field(0),
        superuser: field(1) == "true",
        bypassrls: field(2) == "true",
        inherited: list(3)?,
        not_member_of: list(4)?,
        unforced_owned: list(5)?,
    })
}

impl RoleFacts {
    /// Whether the proxy may use this role: an error names the first reason it may not.
    /// `allow_unforced` accepts tables it owns with RLS enabled but not forced.
    pub fn verdict(&self, allow_unforced: bool) -> Result<(), UpstreamError> {
        if self.superuser {
            return Err(UpstreamError::UnsafeRole(
                "upstream.user is a superuser, which bypasses row-level security; use a NOSUPERUSER role".into(),
            ));
        }
        if self.bypassrls {
            return Err(UpstreamError::UnsafeRole(
                "upstream.user has BYPASSRLS, which bypasses row-level security; ALTER ROLE ... NOBYPASSRLS".into(),
            ));
        }
        if !self.inherited.is_empty() {
            return Err(UpstreamError::UnsafeRole(format!(
                "upstream.user inherits the privileges of {}, so their policies would apply to every \
                 tenant; make it NOINHERIT (ALTER ROLE ... NOINHERIT)",
                self.inherited.join(", ")
            )));
        }
        if !self.unforced_owned.is_empty() && !allow_unforced {
            return Err(UpstreamError::UnsafeRole(format!(
                "upstream.user owns {}, whose row-level security is enabled but not forced, so their \
                 policies do not apply to it: ALTER TABLE … FORCE ROW LEVEL SECURITY, change the owner, or set \
                 upstream.allow_unforced_owned_tables = true",
                self.unforced_owned.join(", ")
            )));
        }
        Ok(())
    }
}

/// Checks the role `conn` is logged in as; an error means the connection must not be used.
/// `allow_unforced` accepts tables it owns with RLS enabled but not forced (an owner bypasses
/// such policies: every tenant would see every row of them).
pub async fn check(conn: &mut ServerConn, allowed_roles: &[String], allow_unforced: bool) -> Result<(), UpstreamError> {
    let facts = facts(conn, allowed_roles).await?;
    facts.verdict(allow_unforced)?;
    if !facts.not_member_of.is_empty() {
        let roles = facts.not_member_of.join(", ");
        let why = "upstream.user is not a member of these allowed roles; tokens selecting them will fail";
        tracing::warn!(roles = %roles, "{why}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RoleFacts;

    #[test]
    fn verdict_names_the_first_reason() {
        let safe = RoleFacts { name: "app_proxy".into(), not_member_of: vec!["x".into()], ..RoleFacts::default() };
        assert!(safe.verdict(false).is_ok(), "not being a member is only a warning");
        let owner = RoleFacts { unforced_owned: vec!["a".into(), "b".into()], ..safe.clone() };
        assert!(owner.verdict(true).is_ok());
        let err = owner.verdict(false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("upstream.user owns a, b, whose"), "{err}");
        let both = RoleFacts { superuser: true, inherited: vec!["admin_role".into()], ..owner };
        let err = both.verdict(false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("is a superuser"), "{err}");
    }
}
