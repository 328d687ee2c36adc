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
    (SELECT 1 FROM pg_roles a WHERE a.rolname = x AND pg_has_role(r.oid, a.oid, 'MEMBER'))), '') \
  FROM pg_roles r WHERE r.rolname = current_user";

/// Text-array literal for `names`, quoting every element.
fn array_literal(names: &[String]) -> String {
    let quoted: Vec<String> =
        names.iter().map(|n| format!("\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("{{{}}}", quoted.join(","))
}

/// Checks the role `conn` is logged in as; an error means the connection must not be used.
pub async fn check(conn: &mut ServerConn, allowed_roles: &[String]) -> Result<(), UpstreamError> {
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
