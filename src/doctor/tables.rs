//! Tenant tables (those with the tenant column): row-level security must be enabled (else
//! policies do nothing), forced (else the owner bypasses them), the table must not belong to
//! a role tenants run as (an owner bypasses unforced policies and, through the proxy, can
//! `ALTER TABLE … NO FORCE ROW LEVEL SECURITY` or `DROP POLICY`: the guard does not refuse
//! DDL), and an index should lead with the tenant column (every policy filters on it).
//! Partitions are tables of their own here (queried directly, only their own policies
//! apply), unless no tenant role has any privilege on them.

use std::collections::BTreeMap;

use super::catalog::{Fields, audited_table, query, quote_ident, tenant_roles_where};
use super::roles::TenantRoles;
use super::{Check, DoctorError, Finding, Params, Severity};

/// One row per audited tenant table.
const TABLES_SQL: &str = concat!(
    "SELECT format('%I.%I', n.nspname, c.relname), ", // 0 name, schema-qualified and quoted
    "c.relkind::text, c.relrowsecurity, c.relforcerowsecurity, ", // 1-3
    // 4: a valid index whose first key column is the tenant column (partial ones count too)
    "EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $2 \
             WHERE i.indrelid = c.oid AND i.indisvalid AND i.indkey[0] = a.attnum), ",
    "pg_get_userbyid(c.relowner), ", // 5 owner
    // 6: tenant roles with the owner's rights (the owner itself, or inheriting it)
    tenant_roles_where!("pg_has_role(t.oid, c.relowner, 'USAGE')"),
    ", (SELECT pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = current_database()), ", // 7
    // 8: the tenant column's type, for the policies' fixes
    "(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $2), ",
    // 9: {role: [SELECT, INSERT, UPDATE, DELETE]} table privileges of every tenant role
    "coalesce((SELECT json_object_agg(t.rolname, json_build_array(has_table_privilege(t.oid, c.oid, 'SELECT'), \
       has_table_privilege(t.oid, c.oid, 'INSERT'), has_table_privilege(t.oid, c.oid, 'UPDATE'), \
       has_table_privilege(t.oid, c.oid, 'DELETE'))) FROM pg_roles t WHERE t.rolname = ANY ($3::text[])), \
       '{}')::text, ",
    "c.relispartition ", // 10
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ",
    audited_table!(),
    " ORDER BY 1"
);

/// What the policy checks need to know about an audited table.
#[derive(Debug, Clone)]
pub(super) struct TenantTable {
    /// Schema-qualified, quoted where needed.
    pub name: String,
    /// SQL type of the tenant column (`integer`, `text`, `uuid`…).
    pub column_type: String,
    /// Row-level security is enabled.
    pub rls: bool,
    /// Per tenant role: may it SELECT, INSERT, UPDATE, DELETE (table privileges)?
    pub privileges: BTreeMap<String, [bool; 4]>,
}

/// Reports the table findings and returns the audited tables.
pub(super) async fn audit(
    conn: &tokio_postgres::Client,
    params: &Params,
    roles: &TenantRoles,
    findings: &mut Vec<Finding>,
) -> Result<Vec<TenantTable>, DoctorError> {
    let rows = query(conn, "tenant tables", TABLES_SQL, &params.all()).await?;
    let column = quote_ident(&params.tenant_column);
    let mut tables = Vec::with_capacity(rows.len());
    for row in &rows {
        let f = Fields::new(row, "tenant tables");
        let name = f.text(0)?;
        let (partitioned, rls, forced, indexed) = (f.text(1)? == "p", f.flag(2)?, f.flag(3)?, f.flag(4)?);
        let owner = f.text(5)?;
        // Tenant roles with the owner's rights; superusers and BYPASSRLS roles are reported as such.
        let owning: Vec<String> = f.json::<Vec<String>>(6)?.into_iter().filter(|r| roles.subject.contains(r)).collect();
        let privileges: BTreeMap<String, [bool; 4]> = f.json(9)?;
        // A partition no tenant role may touch is reached only through its parent, whose
        // policies then apply: not a path of its own (granted ones are, and are audited).
        if f.flag(10)? && !privileges.values().flatten().any(|p| *p) {
            continue;
        }
        let object = format!("table {name}");
        if !rls {
            let message = format!(
                "has the tenant column {} but row-level security is not enabled: its policies do nothing and every \
                 tenant sees every row",
                params.tenant_column
            );
            let fix = format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;");
            findings.push(Finding::new(Check::RlsDisabled, Severity::Error, &object, message, fix));
        }
        if !owning.is_empty() {
            let database_owner = f.text(7).ok().filter(|d| !roles.all.iter().any(|r| r == d));
            findings.push(owner_finding(name, owner, &owning, rls && !forced, database_owner));
        } else if rls && !forced {
            let message = format!(
                "row-level security is not forced: its owner {owner} bypasses the policies (a job or migration \
                 running as {owner} sees every tenant's rows)"
            );
            let fix = format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;");
            findings.push(Finding::new(Check::RlsNotForced, Severity::Warning, &object, message, fix));
        }
        if !indexed {
            let message = format!(
                "no index starts with {}: every query filtered by the tenant policies reads all tenants' rows",
                params.tenant_column
            );
            // CONCURRENTLY does not build on a partitioned table (it builds on each partition).
            let how = if partitioned { "" } else { " CONCURRENTLY" };
            let fix = format!("CREATE INDEX{how} ON {name} ({column});");
            findings.push(Finding::new(Check::TenantIndexMissing, Severity::Warning, &object, message, fix));
        }
        tables.push(TenantTable { name: name.to_string(), column_type: f.text(8)?.to_string(), rls, privileges });
    }
    Ok(tables)
}

/// The finding for `table`, owned by `owner`, whose rights the tenant roles `owning` have.
/// The fix forces RLS (when `unforced`), then gives the table to `database_owner` (when it is
/// no tenant role), or revokes the inherited owner role.
fn owner_finding(table: &str, owner: &str, owning: &[String], unforced: bool, database_owner: Option<&str>) -> Finding {
    let force = if unforced { format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY; ") } else { String::new() };
    let heirs: Vec<&str> = owning.iter().map(String::as_str).filter(|r| *r != owner).collect();
    let (who, fix) = if heirs.len() < owning.len() {
        let new_owner = database_owner.map_or_else(|| "<a role no token runs as>".into(), quote_ident);
        (
            format!("owned by {owner}, a role tenants run as"),
            format!("{force}ALTER TABLE {table} OWNER TO {new_owner};"),
        )
    } else {
        let revokes: Vec<String> =
            heirs.iter().map(|r| format!("REVOKE {} FROM {};", quote_ident(owner), quote_ident(r))).collect();
        (
            format!("owned by {owner}, whose rights {} inherit", heirs.join(", ")),
            format!("{force}{}", revokes.join(" ")),
        )
    };
    let message = format!(
        "{who}: policies do not apply to an owner unless forced, and through the proxy any tenant may ALTER the \
         table (NO FORCE, DISABLE ROW LEVEL SECURITY) or DROP its policies"
    );
    Finding::new(Check::TenantRoleOwnsTable, Severity::Error, format!("table {table}"), message, fix)
}

#[cfg(test)]
mod tests {
    use super::owner_finding;

    #[test]
    fn owner_fixes() {
        let direct = owner_finding("public.t", "app_proxy", &["app_proxy".into()], true, Some("postgres"));
        assert_eq!(
            direct.fix,
            "ALTER TABLE public.t FORCE ROW LEVEL SECURITY; ALTER TABLE public.t OWNER TO postgres;"
        );
        assert!(direct.message.starts_with("owned by app_proxy, a role tenants run as: "));
        let placeholder = owner_finding("public.t", "app_proxy", &["app_proxy".into()], false, None);
        assert_eq!(placeholder.fix, "ALTER TABLE public.t OWNER TO <a role no token runs as>;");
        let inherited = owner_finding("public.t", "Owner", &["app_proxy".into()], false, Some("postgres"));
        assert_eq!(inherited.fix, "REVOKE \"Owner\" FROM app_proxy;");
        assert!(inherited.message.starts_with("owned by Owner, whose rights app_proxy inherit: "));
    }
}
