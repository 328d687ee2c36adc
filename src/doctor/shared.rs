//! What every tenant shares because every tenant is the same role:
//! - a schema where a tenant role may CREATE: a table one tenant creates there is readable
//!   by all (no policy on it), and a function or operator placed on the search path can
//!   out-match a built-in one for the argument types of another tenant's query;
//! - other sessions: PostgreSQL lets a role read the query text of its own other sessions
//!   (`pg_stat_activity`) and cancel or terminate them, and `pg_locks` shows every session's
//!   locks (the advisory lock keys other tenants hold). `migrations/0004_session_isolation.sql`
//!   revokes these from PUBLIC; the doctor checks that a tenant role has none of them.

use super::catalog::{Fields, audited_schema, ident_list, query, quote_ident, tenant_roles_where};
use super::roles::TenantRoles;
use super::{Check, DoctorError, Finding, Params, Severity};

/// Audited schemas (`$1`) where a tenant role (`$2`) may CREATE: name, owner, the tenant roles,
/// the database owner.
const SCHEMAS_SQL: &str = concat!(
    "SELECT quote_ident(n.nspname), pg_get_userbyid(n.nspowner), ",
    tenant_roles_where!("$2", "has_schema_privilege(t.oid, n.oid, 'CREATE')"),
    ", (SELECT pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = current_database()) \
     FROM pg_namespace n WHERE ",
    audited_schema!(),
    " ORDER BY 1"
);

/// What `0004_session_isolation.sql` revokes: each object, its kind and the privilege, with the
/// tenant roles (`$1`) that still have it.
const SESSIONS_SQL: &str = concat!(
    "SELECT o.kind, o.name, o.privilege, ",
    tenant_roles_where!(
        "$1",
        "CASE o.kind WHEN 'FUNCTION' THEN has_function_privilege(t.oid, o.name, o.privilege) \
         ELSE has_table_privilege(t.oid, o.name, o.privilege) END"
    ),
    " FROM (VALUES ('FUNCTION', 'pg_catalog.pg_cancel_backend(integer)', 'EXECUTE'), \
       ('FUNCTION', 'pg_catalog.pg_terminate_backend(integer, bigint)', 'EXECUTE'), \
       ('FUNCTION', 'pg_catalog.pg_stat_get_activity(integer)', 'EXECUTE'), \
       ('FUNCTION', 'pg_catalog.pg_stat_get_backend_activity(integer)', 'EXECUTE'), \
       ('FUNCTION', 'pg_catalog.pg_lock_status()', 'EXECUTE'), \
       ('TABLE', 'pg_catalog.pg_stat_activity', 'SELECT'), \
       ('TABLE', 'pg_catalog.pg_locks', 'SELECT')) AS o(kind, name, privilege) \
     WHERE CASE o.kind WHEN 'FUNCTION' THEN to_regprocedure(o.name) IS NOT NULL \
       ELSE to_regclass(o.name) IS NOT NULL END ORDER BY 2"
);

/// Reports schemas tenants may create in and session functions they may still use, for the
/// tenant roles policies apply to (a superuser or BYPASSRLS role is reported as such already).
pub(super) async fn audit(
    conn: &tokio_postgres::Client,
    params: &Params,
    roles: &TenantRoles,
    findings: &mut Vec<Finding>,
) -> Result<(), DoctorError> {
    let roles = &roles.subject;
    for row in &query(conn, "schemas", SCHEMAS_SQL, &[&params.schemas, roles]).await? {
        let f = Fields::new(row, "schemas");
        let (schema, owner, creators) = (f.text(0)?, f.text(1)?, f.json::<Vec<String>>(2)?);
        if creators.is_empty() {
            continue;
        }
        findings.push(schema_finding(schema, owner, &creators, f.opt(3)?));
    }
    for row in &query(conn, "session functions", SESSIONS_SQL, &[roles]).await? {
        let f = Fields::new(row, "session functions");
        let (kind, name, privilege, users) = (f.text(0)?, f.text(1)?, f.text(2)?, f.json::<Vec<String>>(3)?);
        if users.is_empty() {
            continue;
        }
        let what = match name {
            "pg_catalog.pg_locks" | "pg_catalog.pg_lock_status()" => "shows other sessions' locks",
            _ if kind == "TABLE" => "reads other sessions' query text",
            _ => "reaches other sessions",
        };
        let message = format!(
            "{} may use it, and every tenant's session is the same role: it {what} (other tenants' SQL, \
             the advisory locks they hold, or cancelling their queries); migrations/0004_session_isolation.sql \
             revokes it",
            users.join(", ")
        );
        let fix = format!("REVOKE {privilege} ON {kind} {name} FROM PUBLIC, {};", ident_list(&users));
        let object = format!("{} {name}", if kind == "TABLE" { "view" } else { "function" });
        findings.push(Finding::new(Check::OtherSessionsVisible, Severity::Error, object, message, fix));
    }
    Ok(())
}

/// `schema` (quoted), owned by `owner`, where the tenant roles `creators` may CREATE.
fn schema_finding(schema: &str, owner: &str, creators: &[String], database_owner: Option<&str>) -> Finding {
    let message = format!(
        "{} may create objects here, and every tenant is the same role: a table one tenant creates is readable by \
         all, and a function or operator on the search path can replace a built-in one in another tenant's query",
        creators.join(", ")
    );
    let mut fix = String::new();
    if creators.iter().any(|c| c == owner) {
        // An owner always has CREATE: the schema needs another owner first.
        let new_owner = database_owner
            .filter(|d| !creators.iter().any(|c| c == d))
            .map_or_else(|| "<a role no token runs as>".into(), quote_ident);
        fix += &format!("ALTER SCHEMA {schema} OWNER TO {new_owner}; ");
    }
    fix += &format!("REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC, {};", ident_list(creators));
    Finding::new(Check::SchemaCreatePrivilege, Severity::Error, format!("schema {schema}"), message, fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_schema_changes_owner_first() {
        let creators = ["app_proxy".to_string()];
        let f = schema_finding("scratch", "postgres", &creators, Some("postgres"));
        assert_eq!(f.fix, "REVOKE CREATE ON SCHEMA scratch FROM PUBLIC, app_proxy;");
        let f = schema_finding("\"Own\"", "app_proxy", &creators, Some("postgres"));
        assert_eq!(
            f.fix,
            "ALTER SCHEMA \"Own\" OWNER TO postgres; REVOKE CREATE ON SCHEMA \"Own\" FROM PUBLIC, app_proxy;"
        );
        let f = schema_finding("public", "app_proxy", &creators, Some("app_proxy"));
        assert!(f.fix.starts_with("ALTER SCHEMA public OWNER TO <a role no token runs as>; "), "{}", f.fix);
    }
}
