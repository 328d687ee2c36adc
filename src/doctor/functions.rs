//! Functions that undo the isolation from inside the database, where the statement guard
//! cannot see:
//! - a `SECURITY DEFINER` function runs with its owner's rights and policies, so one that
//!   reads a protected table may return every tenant's rows to any caller;
//! - a function that calls `set_config` (or runs `SET app.current_tenant`, or has it in its
//!   `SET` clause) lets a caller change its own tenant context: the guard refuses
//!   `set_config` in client SQL but not `SELECT my_set_tenant('2')`. This one is reported for
//!   SECURITY INVOKER functions too, since the guard is the reason it matters.
//!
//! Only functions some tenant role may EXECUTE are reported (functions are executable by
//! PUBLIC unless revoked, so that is most of them); revoking is one of the fixes.
//!
//! Which tables a body reads: pg_depend for SQL-standard bodies (`BEGIN ATOMIC`, PostgreSQL
//! 14+, whose dependencies the catalog records), otherwise a search of the source text for
//! each protected table's name as a whole word (see [`scan`]). Functions of extensions are
//! skipped.

use super::catalog::{Fields, audited_schema, ident_list, protected_tables, query, tenant_roles_where};
use super::scan::{mentions_word, option_value, sets_setting};
use super::{Check, DoctorError, Finding, Params, Severity};

/// Every protected table: its qualified name and its bare name (what a body would mention).
const PROTECTED_SQL: &str = concat!(
    "WITH protected AS ",
    protected_tables!(),
    " SELECT format('%I.%I', n.nspname, c.relname), c.relname FROM pg_class c \
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid IN (SELECT oid FROM protected) ORDER BY 1"
);

/// Candidate functions in audited schemas: SECURITY DEFINER ones, and those whose body or
/// SET clause mentions set_config or a protected setting (`$4`, text[]); the Rust side decides.
const FUNCTIONS_SQL: &str = concat!(
    "WITH protected AS ",
    protected_tables!(),
    " SELECT format('%I.%I(%s)', n.nspname, p.proname, oidvectortypes(p.proargtypes)), ", // 0
    "p.prokind::text, p.prosecdef, p.prosrc, coalesce(array_to_json(p.proconfig), '[]')::text, ", // 1-4
    // 5: protected tables it depends on (recorded for SQL-standard bodies only)
    "coalesce((SELECT json_agg(DISTINCT format('%I.%I', pn.nspname, pc.relname)) FROM pg_depend d \
       JOIN pg_class pc ON pc.oid = d.refobjid JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
       WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.refclassid = 'pg_class'::regclass \
       AND d.refobjid IN (SELECT oid FROM protected)), '[]')::text, ",
    // 6: tenant roles that may execute it
    tenant_roles_where!("has_function_privilege(t.oid, p.oid, 'EXECUTE')"),
    ", pg_get_userbyid(p.proowner) ", // 7
    "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p') AND ",
    audited_schema!(),
    " AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid \
        AND e.deptype = 'e') \
      AND (p.prosecdef OR p.prosrc ILIKE '%set\\_config%' OR EXISTS (SELECT 1 FROM unnest($4::text[]) s \
        WHERE p.prosrc ILIKE ('%' || s || '%') OR coalesce(array_to_string(p.proconfig, ' '), '') ILIKE ('%' || s || '%'))) \
     ORDER BY 1"
);

/// Reports SECURITY DEFINER functions reading protected tables and functions changing settings.
pub(super) async fn audit(
    conn: &tokio_postgres::Client,
    params: &Params,
    findings: &mut Vec<Finding>,
) -> Result<(), DoctorError> {
    let rows = query(conn, "protected tables", PROTECTED_SQL, &params.all()[..2]).await?;
    let mut protected = Vec::with_capacity(rows.len());
    for row in &rows {
        let f = Fields::new(row, "protected tables");
        protected.push((f.text(0)?.to_string(), f.text(1)?.to_string()));
    }
    let [schemas, column, roles] = params.all();
    let settings = params.protected_settings();
    let rows = query(conn, "functions", FUNCTIONS_SQL, &[schemas, column, roles, &settings]).await?;
    for row in &rows {
        let f = Fields::new(row, "functions");
        let (name, kind, definer, body) = (f.text(0)?, f.text(1)?, f.flag(2)?, f.opt(3)?.unwrap_or_default());
        let config: Vec<String> = f.json(4)?;
        let callers: Vec<String> = f.json(6)?;
        let owner = f.text(7)?;
        let what = if kind == "p" { "PROCEDURE" } else { "FUNCTION" };
        let object = format!("{} {name}", what.to_lowercase());
        if callers.is_empty() {
            continue; // No tenant role may call it: not a path between tenants.
        }
        if definer {
            let reads = reads_protected(body, f.json(5)?, &protected);
            if !reads.is_empty() {
                let message = format!(
                    "SECURITY DEFINER: reads {} with the rights and policies of its owner {owner}, not the caller's, \
                     so it may return any tenant's rows to its callers ({})",
                    reads.join(", "),
                    callers.join(", ")
                );
                let fix = format!("ALTER {what} {name} SECURITY INVOKER;");
                findings.push(Finding::new(
                    Check::SecurityDefinerReadsRlsTable,
                    Severity::Error,
                    &object,
                    message,
                    fix,
                ));
            }
        }
        if changes_settings(body, &config, &settings) {
            let definer = if definer { "SECURITY DEFINER; " } else { "" };
            let message = format!(
                "{definer}calls set_config or sets {}: the guard refuses that in client SQL but cannot see inside a \
                 function, so a caller ({}) may change its own tenant context",
                params.tenant_setting,
                callers.join(", ")
            );
            let fix = format!("REVOKE EXECUTE ON {what} {name} FROM PUBLIC, {};", ident_list(&callers));
            findings.push(Finding::new(Check::FunctionCallsSetConfig, Severity::Error, &object, message, fix));
        }
    }
    Ok(())
}

/// The protected tables a body reads: those pg_depend recorded (`depends`), and those whose
/// bare name (`protected` holds qualified and bare names) the body mentions as a word.
fn reads_protected(body: &str, mut depends: Vec<String>, protected: &[(String, String)]) -> Vec<String> {
    for (qualified, bare) in protected {
        if !depends.contains(qualified) && mentions_word(body, bare) {
            depends.push(qualified.clone());
        }
    }
    depends.sort();
    depends
}

/// Whether a function with `body` and SET clause `config` can change a setting: it calls
/// `set_config`, runs `SET` of one of `settings`, or sets one in its SET clause.
fn changes_settings(body: &str, config: &[String], settings: &[String]) -> bool {
    mentions_word(&body.replace(ADMISSION_MARKER, ""), "set_config")
        || settings.iter().any(|s| sets_setting(body, s) || option_value(config, s).is_some())
}

/// Strict mode's admission marker (migrations/0003_strict_mode.sql): it only says which check
/// applies, so setting it changes no context. Any other set_config in the same body still counts.
const ADMISSION_MARKER: &str = "set_config('rlsproxy.admitted'";

impl Params {
    /// The settings a function must not change: the tenant and (when set) claims settings.
    fn protected_settings(&self) -> Vec<String> {
        [&self.tenant_setting, &self.claims_setting].into_iter().filter(|s| !s.is_empty()).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{changes_settings, reads_protected};

    #[test]
    fn protected_tables_read_by_dependency_or_by_name() {
        let protected =
            [("public.clean".to_string(), "clean".to_string()), ("s.\"Docs\"".to_string(), "Docs".to_string())];
        let found = reads_protected("SELECT count(*) FROM s.\"Docs\" JOIN clean_up c", vec![], &protected);
        assert_eq!(found, ["s.\"Docs\""]);
        let found = reads_protected("", vec!["public.clean".into()], &protected);
        assert_eq!(found, ["public.clean"]);
        assert!(reads_protected("SELECT 1", vec![], &protected).is_empty());
    }

    #[test]
    fn set_config_set_statements_and_set_clauses() {
        let settings = ["app.current_tenant".to_string()];
        assert!(changes_settings("BEGIN PERFORM set_config('app.current_tenant', t, false); END", &[], &settings));
        assert!(changes_settings("BEGIN SET LOCAL app.current_tenant = '2'; END", &[], &settings));
        assert!(changes_settings("SELECT 1", &["app.current_tenant=2".into()], &settings));
        assert!(!changes_settings("PERFORM set_config('rlsproxy.admitted', pid, false);", &[], &settings));
        assert!(changes_settings(
            "PERFORM set_config('rlsproxy.admitted', pid, false), set_config('role', r, false);",
            &[],
            &settings
        ));
        assert!(!changes_settings(
            "SELECT current_setting('app.current_tenant')",
            &["search_path=pg_catalog".into()],
            &settings
        ));
    }
}
