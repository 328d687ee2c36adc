//! Who tenant sessions run as: the proxy's user, and the roles a token may select. A role
//! that bypasses row-level security (superuser, BYPASSRLS) or inherits a role that policies
//! are written `TO` makes every tenant's rows visible whatever the policies say; an allowed
//! role the proxy's user is no member of makes every token selecting it fail.
//!
//! The facts about the proxy's user are the ones `policy::upstream_role` refuses to start
//! with ([`upstream_role::facts`]); here they are reported, with their fix, instead.

use super::catalog::{Fields, query, quote_ident};
use super::{Check, DoctorError, Finding, Settings, Severity};
use crate::policy::upstream_role;
use crate::upstream::{ServerConn, array_literal};

/// Each allowed role, in the configured order: whether it exists, is a superuser, has
/// BYPASSRLS. (Role attributes are not inherited, so membership plays no part here.)
const ALLOWED_SQL: &str = "SELECT u.x, (r.oid IS NOT NULL)::text, \
    coalesce(r.rolsuper, false)::text, coalesce(r.rolbypassrls, false)::text \
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
    conn: &mut ServerConn,
    settings: &Settings,
    findings: &mut Vec<Finding>,
) -> Result<TenantRoles, DoctorError> {
    // Fixes of memberships differ from PostgreSQL 16 on (GRANT … WITH INHERIT FALSE).
    let server_major = conn.params.get("server_version").and_then(|v| major_version(v)).unwrap_or(0);
    let facts = upstream_role::facts(conn, &settings.allowed_roles)
        .await
        .map_err(|source| DoctorError::Query { what: "upstream role", source })?;
    let me = quote_ident(&facts.name);
    let object = format!("role {}", facts.name);
    if facts.superuser {
        let message =
            format!("{} is a superuser: superusers bypass every policy, so every tenant sees every row", facts.name);
        findings.push(Finding::new(
            Check::ProxyUserSuperuser,
            Severity::Error,
            &object,
            message,
            format!("ALTER ROLE {me} NOSUPERUSER;"),
        ));
    }
    if facts.bypassrls {
        let message = format!("{} has BYPASSRLS: it bypasses every policy, so every tenant sees every row", facts.name);
        findings.push(Finding::new(
            Check::ProxyUserBypassRls,
            Severity::Error,
            &object,
            message,
            format!("ALTER ROLE {me} NOBYPASSRLS;"),
        ));
    }
    // A superuser "has the privileges of" every role: the list would only repeat the above.
    for role in facts.inherited.iter().filter(|_| !facts.superuser) {
        let message = format!(
            "{} inherits the privileges of {role} (an allowed role, or one policies name): policies written TO \
             {role} apply to every tenant without SET ROLE",
            facts.name
        );
        let fix = if server_major >= 16 {
            format!("GRANT {} TO {me} WITH INHERIT FALSE;", quote_ident(role))
        } else {
            format!("ALTER ROLE {me} NOINHERIT;")
        };
        findings.push(Finding::new(Check::ProxyUserInherits, Severity::Error, format!("role {role}"), message, fix));
    }
    let mut roles = TenantRoles::default();
    roles.all.push(facts.name.clone());
    if !facts.superuser && !facts.bypassrls {
        roles.subject.push(facts.name.clone());
    }

    let rows = query(conn, "allowed roles", ALLOWED_SQL, &[&array_literal(&settings.allowed_roles)]).await?;
    for row in &rows {
        let f = Fields::new(row, "allowed roles");
        let (name, exists, superuser, bypassrls) = (f.text(0)?, f.flag(1)?, f.flag(2)?, f.flag(3)?);
        let role = quote_ident(name);
        if facts.not_member_of.iter().any(|r| r == name) {
            let grant = if server_major >= 16 {
                format!("GRANT {role} TO {me} WITH INHERIT FALSE;")
            } else {
                format!("GRANT {role} TO {me};")
            };
            let (message, fix) = if exists {
                (
                    format!(
                        "{} is not a member of {name}: tokens that select it (jwt.allowed_roles) cannot connect",
                        facts.name
                    ),
                    grant,
                )
            } else {
                (
                    format!("tokens may select {name} (jwt.allowed_roles), which does not exist: they cannot connect"),
                    format!("CREATE ROLE {role} NOLOGIN; {grant}"),
                )
            };
            findings.push(Finding::new(
                Check::AllowedRoleNotMember,
                Severity::Warning,
                format!("role {name}"),
                message,
                fix,
            ));
        }
        if superuser || bypassrls {
            let what = if superuser { "is a superuser" } else { "has BYPASSRLS" };
            let attributes = [(superuser, " NOSUPERUSER"), (bypassrls, " NOBYPASSRLS")];
            let fix: String = attributes.iter().filter(|(on, _)| *on).map(|(_, a)| *a).collect();
            let message = format!(
                "tokens may select {name} (jwt.allowed_roles), which {what}: their sessions bypass every policy"
            );
            findings.push(Finding::new(
                Check::AllowedRoleBypassRls,
                Severity::Error,
                format!("role {name}"),
                message,
                format!("ALTER ROLE {role}{fix};"),
            ));
        }
        let tenant =
            exists && !settings.operator_roles.iter().any(|o| o == name) && !roles.all.iter().any(|r| r == name);
        if tenant {
            roles.all.push(name.to_string());
            if !superuser && !bypassrls {
                roles.subject.push(name.to_string());
            }
        }
    }
    Ok(roles)
}

/// The major version in a `server_version` ParameterStatus ("15.8 (Debian 15.8-1.pgdg120+1)").
fn major_version(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::major_version;

    #[test]
    fn major_versions() {
        assert_eq!(major_version("15.8 (Debian 15.8-1.pgdg120+1)"), Some(15));
        assert_eq!(major_version("16beta1"), Some(16));
        assert_eq!(major_version("9.6.24"), Some(9));
        assert_eq!(major_version("devel"), None);
    }
}
