//! The policies of tenant tables, judged per tenant role and command the way PostgreSQL
//! combines them: a command is allowed by the permissive policies that apply (OR-ed), then
//! narrowed by the restrictive ones (AND-ed). So a permissive policy whose expression never
//! reads the tenant setting lets every tenant's rows through, unless a restrictive policy
//! that does read it applies too; and a command no permissive policy allows fails closed
//! (no rows, or an INSERT refused), which is reported as a warning when the role may run it.
//!
//! "Reads the tenant setting" is a heuristic over the deparsed expression (see
//! [`scan::Markers`]), extended one level through the functions the policy calls (the catalog
//! records those in pg_depend): `auth.tenant()` counts when its body reads the setting.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::{Fields, audited_table, query, quote_ident, quote_literal, tenant_roles_where};
use super::roles::TenantRoles;
use super::scan::Markers;
use super::tables::TenantTable;
use super::{Check, DoctorError, Finding, Params, Severity};

/// One row per policy of an audited table.
const POLICIES_SQL: &str = concat!(
    "SELECT format('%I.%I', n.nspname, c.relname), p.polname, p.polcmd::text, p.polpermissive, ", // 0-3
    "pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid), ", // 4 USING, 5 WITH CHECK
    // 6: tenant roles it applies to: PUBLIC, or a role whose privileges they have
    tenant_roles_where!(
        "(0 = ANY (p.polroles) OR EXISTS (SELECT 1 FROM unnest(p.polroles) pr \
          WHERE pr <> 0 AND pg_has_role(t.oid, pr, 'USAGE')))"
    ),
    // 7: [name, body] of every function its expressions call
    ", coalesce((SELECT json_agg(json_build_array(f.proname, f.prosrc)) FROM pg_depend d \
       JOIN pg_proc f ON f.oid = d.refobjid WHERE d.classid = 'pg_policy'::regclass AND d.objid = p.oid \
       AND d.refclassid = 'pg_proc'::regclass), '[]')::text, ",
    // 8: the roles it is written TO
    "array_to_json(ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END \
       FROM unnest(p.polroles) r))::text ",
    "FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ",
    audited_table!(),
    " ORDER BY 1, 2"
);

/// A command a policy may allow; the index is its place in [`super::tables::TenantTable::privileges`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Command {
    Select,
    Insert,
    Update,
    Delete,
}

const COMMANDS: [Command; 4] = [Command::Select, Command::Insert, Command::Update, Command::Delete];

impl Command {
    fn sql(self) -> &'static str {
        ["SELECT", "INSERT", "UPDATE", "DELETE"][self as usize]
    }

    /// `pg_policy.polcmd` of a policy for this command alone.
    fn polcmd(self) -> char {
        ['r', 'a', 'w', 'd'][self as usize]
    }
}

/// A policy as the checks see it.
#[derive(Debug, Clone, Default)]
pub(super) struct Policy {
    pub name: String,
    /// `r`, `a`, `w`, `d` or `*` (ALL).
    pub cmd: char,
    pub permissive: bool,
    /// USING: which existing rows it lets through (NULL: none, for a permissive policy).
    pub using: Option<String>,
    /// WITH CHECK: which new rows it accepts (NULL: USING stands in, as in PostgreSQL).
    pub check: Option<String>,
    pub using_reads: bool,
    pub check_reads: bool,
    /// Tenant roles it applies to.
    pub roles: Vec<String>,
    /// Roles it is written TO (`public` for PUBLIC).
    pub to: Vec<String>,
}

impl Policy {
    fn covers(&self, cmd: Command) -> bool {
        self.cmd == '*' || self.cmd == cmd.polcmd()
    }

    /// Whether it lets anything through for `cmd` (permissive policies without the
    /// expression PostgreSQL evaluates for it are skipped).
    fn grants(&self, cmd: Command) -> bool {
        match cmd {
            Command::Insert => self.check.is_some() || self.using.is_some(),
            _ => self.using.is_some(),
        }
    }

    /// Whether every expression PostgreSQL evaluates for `cmd` reads the tenant.
    fn confines(&self, cmd: Command) -> bool {
        let using = self.using.is_some() && self.using_reads;
        let check = if self.check.is_some() { self.check_reads } else { using };
        match cmd {
            Command::Select | Command::Delete => using,
            Command::Insert => check,
            Command::Update => using && check,
        }
    }
}

/// What is wrong with one table's policies.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Commands no permissive policy allows, with the tenant roles that may run them.
    pub missing: BTreeMap<Command, BTreeSet<String>>,
    /// Permissive policies that let rows of every tenant through: commands and roles.
    pub leaks: BTreeMap<String, (BTreeSet<Command>, BTreeSet<String>)>,
}

/// Judges `policies` (of one table) for every role of `roles` and every command.
pub(super) fn evaluate(policies: &[Policy], roles: &[String], privileges: &BTreeMap<String, [bool; 4]>) -> Verdict {
    let mut verdict = Verdict::default();
    for role in roles {
        for cmd in COMMANDS {
            let applicable: Vec<&Policy> =
                policies.iter().filter(|p| p.covers(cmd) && p.roles.contains(role)).collect();
            let permissive: Vec<&Policy> =
                applicable.iter().copied().filter(|p| p.permissive && p.grants(cmd)).collect();
            if permissive.is_empty() {
                if privileges.get(role).is_some_and(|p| p[cmd as usize]) {
                    verdict.missing.entry(cmd).or_default().insert(role.clone());
                }
                continue;
            }
            if applicable.iter().any(|p| !p.permissive && p.confines(cmd)) {
                continue;
            }
            for p in permissive.iter().filter(|p| !p.confines(cmd)) {
                let (cmds, leak_roles) = verdict.leaks.entry(p.name.clone()).or_default();
                cmds.insert(cmd);
                leak_roles.insert(role.clone());
            }
        }
    }
    verdict
}

/// Reports the policy findings of the audited `tables`; returns their policies, by table.
pub(super) async fn audit(
    conn: &tokio_postgres::Client,
    params: &Params,
    roles: &TenantRoles,
    tables: &[TenantTable],
    findings: &mut Vec<Finding>,
) -> Result<BTreeMap<String, Vec<Policy>>, DoctorError> {
    let by_table = load(conn, params, roles).await?;
    for table in tables {
        let policies = by_table.get(&table.name).map(Vec::as_slice).unwrap_or_default();
        let verdict = evaluate(policies, &roles.subject, &table.privileges);
        let tenant = tenant_expr(params, &table.column_type);
        for (cmd, who) in &verdict.missing {
            findings.push(missing_finding(table, policies, *cmd, who, &tenant));
        }
        for (name, (cmds, who)) in &verdict.leaks {
            if let Some(policy) = policies.iter().find(|p| &p.name == name) {
                findings.push(leak_finding(params, table, policy, cmds, who, &tenant));
            }
        }
    }
    Ok(by_table)
}

/// The policies of the audited tables, by table; `roles` narrows each to the tenant roles
/// policies apply to.
async fn load(
    conn: &tokio_postgres::Client,
    params: &Params,
    roles: &TenantRoles,
) -> Result<BTreeMap<String, Vec<Policy>>, DoctorError> {
    let rows = query(conn, "policies", POLICIES_SQL, &params.all()).await?;
    let mut by_table: BTreeMap<String, Vec<Policy>> = BTreeMap::new();
    for row in &rows {
        let f = Fields::new(row, "policies");
        let calls: Vec<(String, String)> = f.json(7)?;
        let reads = |expr: Option<&str>| expr.is_some_and(|e| reads_tenant(e, &calls, &params.markers));
        let policy = Policy {
            name: f.text(1)?.to_string(),
            cmd: f.text(2)?.chars().next().unwrap_or('*'),
            permissive: f.flag(3)?,
            using: f.opt(4)?.map(str::to_string),
            check: f.opt(5)?.map(str::to_string),
            using_reads: reads(f.opt(4)?),
            check_reads: reads(f.opt(5)?),
            roles: f.json::<Vec<String>>(6)?.into_iter().filter(|r| roles.subject.contains(r)).collect(),
            to: f.json(8)?,
        };
        by_table.entry(f.text(0)?.to_string()).or_default().push(policy);
    }
    Ok(by_table)
}

/// `cmd` of `table` is allowed by no permissive policy for the roles `who`.
fn missing_finding(
    table: &TenantTable,
    policies: &[Policy],
    cmd: Command,
    who: &BTreeSet<String>,
    tenant: &str,
) -> Finding {
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    let name = unique_name(&names, &format!("tenant_isolation_{}", cmd.sql().to_lowercase()));
    let effect = if cmd == Command::Insert { "every INSERT is refused" } else { "it never finds a row" };
    let effect =
        if table.rls { format!("{effect} (fails closed)") } else { format!("once row-level security is on, {effect}") };
    let message = format!("no permissive policy allows {} for {}, which may run it: {effect}", cmd.sql(), join(who));
    let (policy, clauses) = (quote_ident(&name), clauses(cmd.polcmd(), tenant));
    let fix = format!("CREATE POLICY {policy} ON {} FOR {} {clauses};", table.name, cmd.sql());
    Finding::new(Check::PolicyMissing, Severity::Warning, format!("table {}", table.name), message, fix)
}

/// `policy` of `table` lets the roles `who` run `cmds` on every tenant's rows.
fn leak_finding(
    params: &Params,
    table: &TenantTable,
    policy: &Policy,
    cmds: &BTreeSet<Command>,
    who: &BTreeSet<String>,
    tenant: &str,
) -> Finding {
    let reads = if params.strict {
        "rlsproxy.tenant_id(), rlsproxy.tenant_uuid() or rlsproxy.tenant() (strict mode: the unsigned setting does \
         not count)"
            .to_string()
    } else {
        format!("{} (nor the strict-mode functions)", params.tenant_setting)
    };
    let cmds: Vec<&str> = cmds.iter().map(|c| c.sql()).collect();
    let to = if policy.to.iter().any(|r| r == "public") {
        String::new()
    } else {
        format!(" (written TO {})", policy.to.join(", "))
    };
    let message = format!(
        "permissive policy{to} lets {} {} the rows of every tenant: its expressions never read {reads}",
        join(who),
        cmds.join(", ")
    );
    let fix = format!("ALTER POLICY {} ON {} {};", quote_ident(&policy.name), table.name, clauses(policy.cmd, tenant));
    Finding::new(
        Check::PolicyWithoutTenant,
        Severity::Error,
        format!("policy {} on {}", policy.name, table.name),
        message,
        fix,
    )
}

/// Whether `expr` reads the tenant: a marker in the text, or a call of a function whose body
/// has one (`calls` holds the name and body of each function the policy calls).
fn reads_tenant(expr: &str, calls: &[(String, String)], markers: &Markers) -> bool {
    let lower = expr.to_lowercase();
    markers.found_in(expr)
        || calls
            .iter()
            .any(|(name, body)| markers.found_in(body) && lower.contains(&format!("{}(", name.to_lowercase())))
}

/// The expression a fixed policy compares the tenant column with.
fn tenant_expr(params: &Params, column_type: &str) -> String {
    let column = quote_ident(&params.tenant_column);
    if params.strict {
        let function = match column_type {
            "smallint" | "integer" | "bigint" => "rlsproxy.tenant_id()",
            "uuid" => "rlsproxy.tenant_uuid()",
            _ => "rlsproxy.tenant()",
        };
        format!("{column} = (SELECT {function})")
    } else {
        format!("{column} = current_setting({})::{column_type}", quote_literal(&params.tenant_setting))
    }
}

/// The clauses a policy for `polcmd` takes: SELECT and DELETE only USING, INSERT only WITH
/// CHECK, UPDATE and ALL both.
fn clauses(polcmd: char, expr: &str) -> String {
    match polcmd {
        'r' | 'd' => format!("USING ({expr})"),
        'a' => format!("WITH CHECK ({expr})"),
        _ => format!("USING ({expr}) WITH CHECK ({expr})"),
    }
}

/// `base`, or `base_2`, `base_3`… if a policy of the table already has that name.
fn unique_name(taken: &[&str], base: &str) -> String {
    (1..)
        .map(|i| if i == 1 { base.to_string() } else { format!("{base}_{i}") })
        .find(|n| !taken.contains(&n.as_str()))
        .unwrap_or_default()
}

fn join(names: &BTreeSet<String>) -> String {
    names.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
