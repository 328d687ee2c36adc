//! Who tenant sessions run as: the proxy's user, and the roles a token may select. A role
//! that bypasses row-level security (superuser, BYPASSRLS) or inherits a role that policies
//! are written `TO` makes every tenant's rows visible whatever the policies say; so does one
//! that may create roles, reach the server's files, or starts its connections with settings
//! a tenant could have left; an allowed role that owns tables can switch their policies off;
//! an allowed role the proxy's user is no member of makes every token selecting it fail.
//!
//! The facts about the proxy's user are the ones `policy::upstream_role` refuses to start
//! with ([`upstream_role::FACTS_SQL`]); here they are reported, with their fix, instead.

use super::catalog::{Fields, query, quote_ident};
use super::{Check, DoctorError, Finding, Settings, Severity};
use crate::policy::upstream_role::{self, RoleFacts};

/// Each allowed role, in the configured order: whether it exists, is a superuser, has
/// BYPASSRLS. (Role attributes are not inherited, so membership plays no part here.)
const ALLOWED_SQL: &str = "SELECT u.x, r.oid IS NOT NULL, \
    coalesce(r.rolsuper, false), coalesce(r.rolbypassrls, false), \
    (SELECT pg_get_userbyid(d.datdba) FROM pg_database d WHERE d.datname = current_database()) \
    FROM unnest($1::text[]) WITH ORDINALITY AS u(x, i) LEFT JOIN pg_roles r ON r.rolname = u.x ORDER BY u.i";

/// The roles tenant sessions run as, which the other checks judge policies and privileges for.
#[derive(Debug, Clone, Default)]
pub(super) struct TenantRoles {
    /// The proxy's user and every existing allowed role that is not an operator role
    /// (`[guard] operator_roles`: operator tokens are not confined to a tenant by design).
    pub all: Vec<String>,
    /// Those of [`Self::all`] that policies apply to (not superuser, not BYPASSRLS: those are
    /// reported here, and every policy check would only repeat it).
    pub subject: Vec<String>,
}

/// Reports the role findings and returns the tenant roles.
pub(super) async fn audit(
    conn: &tokio_postgres::Client,
    settings: &Settings,
    findings: &mut Vec<Finding>,
) -> Result<TenantRoles, DoctorError> {
    // Fixes of memberships differ from PostgreSQL 16 on (GRANT … WITH INHERIT FALSE).
    let version = query(conn, "server version", "SELECT current_setting('server_version_num')::int", &[]).await?;
    let version = version.first().map(|row| Fields::new(row, "server version").get::<i32>(0)).transpose()?;
    let pg16 = version >= Some(160_000);
    let facts = query(conn, "upstream role", upstream_role::FACTS_SQL, &[&settings.allowed_roles]).await?;
    let row = facts.first().ok_or_else(|| DoctorError::Query { what: "upstream role", source: RoleFacts::no_row() })?;
    let facts = RoleFacts::from_row(|i| row.try_get(i).map_err(crate::upstream::catalog::from_client))
        .map_err(|source| DoctorError::Query { what: "upstream role", source })?;
    findings.extend(proxy_user_findings(&facts, &settings.database, pg16));
    let mut roles = TenantRoles::default();
    roles.all.push(facts.name.clone());
    if !facts.superuser && !facts.bypassrls {
        roles.subject.push(facts.name.clone());
    }
    let rows = query(conn, "allowed roles", ALLOWED_SQL, &[&settings.allowed_roles]).await?;
    for row in &rows {
        let f = Fields::new(row, "allowed roles");
        let role = AllowedRole { name: f.text(0)?, exists: f.flag(1)?, superuser: f.flag(2)?, bypassrls: f.flag(3)? };
        let member = !facts.not_member_of.iter().any(|r| r == role.name);
        findings.extend(allowed_role_findings(&role, &facts.name, member, pg16));
        if let Some((_, tables)) = facts.allowed_owners.iter().find(|(r, _)| r == role.name) {
            let new_owner = f.opt(4)?.filter(|o| !settings.allowed_roles.iter().any(|r| r == o) && *o != facts.name);
            findings.push(owner_finding(role.name, tables, new_owner));
        }
        let operator = settings.operator_roles.iter().any(|o| o == role.name);
        if role.exists && !operator && !roles.all.iter().any(|r| r == role.name) {
            roles.all.push(role.name.to_string());
            if !role.superuser && !role.bypassrls {
                roles.subject.push(role.name.to_string());
            }
        }
    }
    Ok(roles)
}

/// The proxy's user bypasses RLS, may create roles or reach the server's files, starts its
/// connections with settings, or inherits roles whose policies then apply to every tenant.
fn proxy_user_findings(facts: &upstream_role::RoleFacts, database: &str, pg16: bool) -> Vec<Finding> {
    let (name, me) = (&facts.name, quote_ident(&facts.name));
    let object = format!("role {name}");
    let mut findings = Vec::new();
    if facts.superuser {
        let message = format!("{name} is a superuser: superusers bypass every policy, so every tenant sees every row");
        let fix = format!("ALTER ROLE {me} NOSUPERUSER;");
        findings.push(Finding::new(Check::ProxyUserSuperuser, Severity::Error, &object, message, fix));
    }
    if facts.bypassrls {
        let message = format!("{name} has BYPASSRLS: it bypasses every policy, so every tenant sees every row");
        let fix = format!("ALTER ROLE {me} NOBYPASSRLS;");
        findings.push(Finding::new(Check::ProxyUserBypassRls, Severity::Error, &object, message, fix));
    }
    // A superuser has every power below: the findings would only repeat the above.
    if facts.createrole && !facts.superuser {
        let message = format!(
            "{name} has CREATEROLE: a tenant running SQL as it could create roles and grant memberships (before \
             PostgreSQL 16 of any role, pg_execute_server_program included)"
        );
        let fix = format!("ALTER ROLE {me} NOCREATEROLE;");
        findings.push(Finding::new(Check::ProxyUserCreateRole, Severity::Error, &object, message, fix));
    }
    for (role, via, fix) in &facts.server_files {
        let through = if role == via { String::new() } else { format!(" (through {via})") };
        let message = format!(
            "{name} is a member of {role}{through}: a tenant running SQL as it could read or write the server's \
             files or run programs on it (COPY … FROM/TO a file or PROGRAM)"
        );
        findings.push(Finding::new(Check::ProxyUserServerFiles, Severity::Error, format!("role {role}"), message, fix));
    }
    for setting in &facts.settings {
        let (object, whose) = if setting.scope == "role" {
            (object.clone(), format!("{name}'s own"))
        } else {
            (format!("database {}", database), "the database's".to_string())
        };
        let message = format!(
            "every new connection starts with {whose} setting ({}): every tenant shares {name}, so such a setting \
             is one tenant's way to reach the others' sessions (the proxy refuses to start with it)",
            setting.made_by
        );
        findings.push(Finding::new(Check::ProxyUserSettings, Severity::Error, object, message, &setting.fix));
    }
    // A superuser "has the privileges of" every role: the list would only repeat the above.
    for role in facts.inherited.iter().filter(|_| !facts.superuser) {
        let message = format!(
            "{name} inherits the privileges of {role} (an allowed role, or one policies name): policies written TO \
             {role} apply to every tenant without SET ROLE"
        );
        let fix = if pg16 {
            format!("GRANT {} TO {me} WITH INHERIT FALSE;", quote_ident(role))
        } else {
            format!("ALTER ROLE {me} NOINHERIT;")
        };
        findings.push(Finding::new(Check::ProxyUserInherits, Severity::Error, format!("role {role}"), message, fix));
    }
    findings
}

/// A role of `[jwt] allowed_roles` as the catalog knows it.
struct AllowedRole<'a> {
    name: &'a str,
    exists: bool,
    superuser: bool,
    bypassrls: bool,
}

/// An allowed role the proxy's user (`me`) cannot switch to (not a `member`), or that bypasses RLS.
fn allowed_role_findings(role: &AllowedRole<'_>, me: &str, member: bool, pg16: bool) -> Vec<Finding> {
    let (name, quoted, object) = (role.name, quote_ident(role.name), format!("role {}", role.name));
    let mut findings = Vec::new();
    if !member {
        let inherit = if pg16 { " WITH INHERIT FALSE" } else { "" };
        let grant = format!("GRANT {quoted} TO {}{inherit};", quote_ident(me));
        let (message, fix) = if role.exists {
            (format!("{me} is not a member of {name}: tokens that select it (jwt.allowed_roles) cannot connect"), grant)
        } else {
            let message =
                format!("tokens may select {name} (jwt.allowed_roles), which does not exist: they cannot connect");
            (message, format!("CREATE ROLE {quoted} NOLOGIN; {grant}"))
        };
        findings.push(Finding::new(Check::AllowedRoleNotMember, Severity::Warning, &object, message, fix));
    }
    if role.superuser || role.bypassrls {
        let what = if role.superuser { "is a superuser" } else { "has BYPASSRLS" };
        let message =
            format!("tokens may select {name} (jwt.allowed_roles), which {what}: their sessions bypass every policy");
        let attributes = [(role.superuser, " NOSUPERUSER"), (role.bypassrls, " NOBYPASSRLS")];
        let attributes: String = attributes.iter().filter(|(on, _)| *on).map(|(_, a)| *a).collect();
        let fix = format!("ALTER ROLE {quoted}{attributes};");
        findings.push(Finding::new(Check::AllowedRoleBypassRls, Severity::Error, &object, message, fix));
    }
    findings
}

/// An allowed role (operator roles too) that owns `tables`: a session in it, or any tenant
/// that reaches `SET ROLE` to it, could switch their row-level security off. The proxy refuses
/// to start with it; tenant tables it owns are reported once more as `tenant_role_owns_table`.
fn owner_finding(name: &str, tables: &[String], new_owner: Option<&str>) -> Finding {
    let message = format!(
        "tokens may select {name} (jwt.allowed_roles), which owns {}: a session in it, or any tenant through SET \
         ROLE, could switch their row-level security off (the proxy refuses to start with it)",
        tables.join(", ")
    );
    let new_owner = new_owner.map_or_else(|| "<a role no token runs as>".into(), quote_ident);
    let fix: Vec<String> = tables.iter().map(|t| format!("ALTER TABLE {t} OWNER TO {new_owner};")).collect();
    Finding::new(Check::AllowedRoleOwnsTables, Severity::Error, format!("role {name}"), message, fix.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_role_fixes() {
        let missing = AllowedRole { name: "Reader", exists: false, superuser: false, bypassrls: false };
        let found = allowed_role_findings(&missing, "app_proxy", false, true);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].fix, "CREATE ROLE \"Reader\" NOLOGIN; GRANT \"Reader\" TO app_proxy WITH INHERIT FALSE;");
        let both = AllowedRole { name: "ops", exists: true, superuser: true, bypassrls: true };
        let found = allowed_role_findings(&both, "app_proxy", true, false);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].fix, "ALTER ROLE ops NOSUPERUSER NOBYPASSRLS;");
    }

    #[test]
    fn inherited_roles_are_fixed_per_grant_from_16_on() {
        let facts = upstream_role::RoleFacts {
            name: "app_proxy".into(),
            inherited: vec!["admin_role".into()],
            ..Default::default()
        };
        assert_eq!(proxy_user_findings(&facts, "app", false)[0].fix, "ALTER ROLE app_proxy NOINHERIT;");
        assert_eq!(
            proxy_user_findings(&facts, "app", true)[0].fix,
            "GRANT admin_role TO app_proxy WITH INHERIT FALSE;"
        );
        let superuser = upstream_role::RoleFacts { superuser: true, bypassrls: true, ..facts };
        let checks: Vec<Check> = proxy_user_findings(&superuser, "app", true).iter().map(|f| f.check).collect();
        assert_eq!(checks, [Check::ProxyUserSuperuser, Check::ProxyUserBypassRls]);
    }
}
