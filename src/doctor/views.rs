//! Views and materialized views over protected tables. A view runs with its owner's rights
//! unless it has `security_invoker = true` (PostgreSQL 15+): the policies applied are the
//! owner's, and an owner that owns the tables (without FORCE), is a superuser or has
//! BYPASSRLS sees every tenant's rows, which the view then shows to every caller. A
//! materialized view stores what its owner saw at the last REFRESH and cannot have row-level
//! security at all.
//!
//! Only views some tenant role may SELECT are reported: the doctor judges the paths between
//! tenants, and revoking a view from them is one of the fixes.
//!
//! "Over" is transitive: a view over a view over an RLS table counts. The dependencies come
//! from pg_depend (each view's `_RETURN` rule records the relations it reads), not from text.

use super::catalog::{Fields, audited_schema, ident_list, protected_tables, query, tenant_roles_where};
use super::scan::{option_value, parse_bool};
use super::{Check, DoctorError, Finding, Params, Severity};

/// One row per view or materialized view (in an audited schema) that reads a protected table.
const VIEWS_SQL: &str = concat!(
    // reads(view, rel): every relation a view reads, directly or through other views.
    "WITH RECURSIVE reads (view, rel) AS ( \
       SELECT r.ev_class, d.refobjid FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass \
         AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass \
       WHERE r.rulename = '_RETURN' AND d.refobjid <> r.ev_class \
       UNION \
       SELECT reads.view, d.refobjid FROM reads JOIN pg_rewrite r ON r.ev_class = reads.rel AND r.rulename = '_RETURN' \
         JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
         AND d.refclassid = 'pg_class'::regclass \
       WHERE d.refobjid <> r.ev_class), ",
    "protected AS ",
    protected_tables!(),
    " SELECT c.relkind::text, format('%I.%I', n.nspname, c.relname), ", // 0 kind, 1 name
    "coalesce(array_to_json(c.reloptions), '[]')::text, pg_get_userbyid(c.relowner), ", // 2 reloptions, 3 owner
    // 4: the protected tables it reads
    "(SELECT json_agg(DISTINCT format('%I.%I', pn.nspname, pc.relname)) FROM reads \
       JOIN pg_class pc ON pc.oid = reads.rel JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
       WHERE reads.view = c.oid AND reads.rel IN (SELECT oid FROM protected))::text, ",
    // 5: tenant roles that may SELECT it
    tenant_roles_where!("has_table_privilege(t.oid, c.oid, 'SELECT')"),
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND ",
    audited_schema!(),
    " AND EXISTS (SELECT 1 FROM reads WHERE reads.view = c.oid AND reads.rel IN (SELECT oid FROM protected)) \
     ORDER BY 2"
);

/// Reports views without `security_invoker` and materialized views over protected tables.
pub(super) async fn audit(
    conn: &tokio_postgres::Client,
    params: &Params,
    findings: &mut Vec<Finding>,
) -> Result<(), DoctorError> {
    let rows = query(conn, "views", VIEWS_SQL, &params.all()).await?;
    for row in &rows {
        let f = Fields::new(row, "views");
        let (materialized, name, owner) = (f.text(0)? == "m", f.text(1)?, f.text(3)?);
        let options: Vec<String> = f.json(2)?;
        let tables = f.json::<Vec<String>>(4)?.join(", ");
        let readers: Vec<String> = f.json(5)?;
        if readers.is_empty() {
            continue; // No tenant role may read it: not a path between tenants.
        }
        if materialized {
            let message = format!(
                "holds the rows of {tables} as its owner {owner} saw them at the last REFRESH, and row-level \
                 security cannot be enabled on it: every reader ({}) sees them",
                readers.join(", ")
            );
            let fix = format!("REVOKE SELECT ON {name} FROM PUBLIC, {};", ident_list(&readers));
            let object = format!("materialized view {name}");
            findings.push(Finding::new(Check::MaterializedViewOverRls, Severity::Error, object, message, fix));
        } else if option_value(&options, "security_invoker").and_then(parse_bool) != Some(true) {
            let message = format!(
                "reads {tables} with the rights and policies of its owner {owner}, not the caller's: if {owner} owns \
                 them, is a superuser or has BYPASSRLS, every tenant sees every row"
            );
            let fix = format!("ALTER VIEW {name} SET (security_invoker = true);");
            findings.push(Finding::new(
                Check::ViewNotSecurityInvoker,
                Severity::Error,
                format!("view {name}"),
                message,
                fix,
            ));
        }
    }
    Ok(())
}
