//! Refuses an upstream role that would defeat row-level security: a superuser or
//! BYPASSRLS role skips every policy, and a role that *inherits* an allowed role,
//! or any role a policy of this database is written `TO`, gets that role's
//! policies (`TO admin_role USING (true)`) for every tenant without any `SET ROLE`.

use crate::upstream::{ServerConn, UpstreamError};

const CHECK_SQL: &str = "SELECT r.rolsuper::text, r.rolbypassrls::text, \
  coalesce((SELECT string_agg(a.rolname, ', ' ORDER BY a.rolname) FROM pg_roles a \
    WHERE (a.rolname = ANY($1::text[]) OR a.oid IN (SELECT unnest(polroles) FROM pg_policy)) \
    AND a.oid <> r.oid AND pg_has_role(r.oid, a.oid, 'USAGE')), ''), \
  coalesce((SELECT string_agg(x, ', ' ORDER BY x) FROM unnest($1::text[]) x WHERE NOT EXISTS \
    (SELECT 1 FROM pg_roles a WHERE a.rolname = x AND pg_has_role(r.oid, a.oid, 'MEMBER'))), '') , \
  coalesce((SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid::regclass::text) FROM pg_class c \
    WHERE c.relowner = r.oid AND c.relrowsecurity AND NOT c.relforcerowsecurity), '') \
  FROM pg_roles r WHERE r.rolname = current_user";

/// Text-array literal for `names`, quoting every element.
fn array_literal(names: &[String]) -> String {
    let quoted: Vec<String> =
        names.iter().map(|n| format!("\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("{{{}}}", quoted.join(","))
}

/// Checks the role `conn` is logged in as; an error means the connection must not be used.
/// `allow_unforced` accepts tables it owns with RLS enabled but not forced (an owner bypasses
/// such policies: every tenant would see every row of them).
pub async fn check(conn: &mut ServerConn, allowed_roles: &[String], allow_unforced: bool) -> Result<(), UpstreamError> {
    let rows = conn.query_rows(CHECK_SQL, &[&array_literal(allowed_roles)]).await?;
    let row = rows.first().ok_or_else(|| UpstreamError::UnsafeRole("current_user not found in pg_roles".into()))?;
    let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    if field(0) == "true" {
        return Err(UpstreamError::UnsafeRole(
            "upstream.user is a superuser, which bypasses row-level security; use a NOSUPERUSER role".into(),
        ));
    }
    if field(1) == "true" {
        return Err(UpstreamError::UnsafeRole(
            "upstream.user has BYPASSRLS, which bypasses row-level security; ALTER ROLE ... NOBYPASSRLS".into(),
        ));
    }
    let inherited = field(2);
    if !inherited.is_empty() {
        return Err(UpstreamError::UnsafeRole(format!(
            "upstream.user inherits the privileges of {inherited}, so their policies would apply to every \
             tenant; make it NOINHERIT (ALTER ROLE ... NOINHERIT)"
        )));
    }
    let unforced = field(4);
    if !unforced.is_empty() && !allow_unforced {
        return Err(UpstreamError::UnsafeRole(format!(
            "upstream.user owns {unforced}, whose row-level security is enabled but not forced, so their \
             policies do not apply to it: ALTER TABLE … FORCE ROW LEVEL SECURITY, change the owner, or set \
             upstream.allow_unforced_owned_tables = true"
        )));
    }
    let not_member = field(3);
    if !not_member.is_empty() {
        tracing::warn!(roles = %not_member, "upstream.user is not a member of these allowed roles; tokens selecting them will fail");
    }
    Ok(())
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
