//! Refuses an upstream role that would defeat row-level security, or let one tenant reach
//! beyond the database or into the others' sessions. Every tenant runs as this one role, and
//! a tenant with arbitrary SQL (strict mode without the guard) has everything the role has:
//! - a superuser or BYPASSRLS role skips every policy; a role that *inherits* an allowed
//!   role, or any role a policy of this database is written `TO`, gets that role's policies
//!   (`TO admin_role USING (true)`) for every tenant without any `SET ROLE`;
//! - CREATEROLE creates roles and grants memberships (before PostgreSQL 16 of any
//!   non-superuser role, `pg_execute_server_program` included);
//! - members of `pg_read_server_files`, `pg_write_server_files`, `pg_execute_server_program`
//!   (directly or through other roles, with or without INHERIT: `SET ROLE` reaches them) read
//!   and write the server's files and run programs;
//! - settings of the role (`ALTER ROLE … [IN DATABASE …] SET`, any setting) are what every
//!   new connection starts with: one tenant's `ALTER ROLE CURRENT_USER SET` would reach every
//!   other. Settings of the database for every role (`ALTER DATABASE … SET`, `ALTER ROLE ALL
//!   SET`) are refused only when they change name resolution, the role or how SQL text is
//!   read, or set a custom (dotted) setting such as the tenant, claims or strict-mode ones:
//!   operators legitimately set a database's time zone. The proxy also pins the first kind
//!   as startup parameters (`upstream::connect`), which take precedence: this check says so
//!   instead of relying on that silently;
//! - an allowed role (`jwt.allowed_roles`) that is a superuser, has BYPASSRLS or owns tables
//!   gives every session that selects it (or any tenant, through `SET ROLE`) every row, or
//!   the power to switch the table's policies off.
//!
//! The catalog facts are read by [`facts`] (the doctor reads [`FACTS_SQL`]'s row through its
//! own client, [`RoleFacts::from_row`]) and judged by [`RoleFacts::verdict`], so that
//! `rlsproxy doctor` reports the same facts as findings where the proxy refuses to start.

use crate::upstream::{ServerConn, UpstreamError, array_literal};

/// Settings of the database, for every role, that the check refuses (lower case); custom
/// (dotted) settings are refused too.
macro_rules! refused_database_settings {
    () => {
        "('search_path', 'role', 'session_authorization', 'standard_conforming_strings', 'backslash_quote', \
          'client_encoding')"
    };
}

/// One row about `current_user`, every column text but the first (`name`), as it is read
/// from the relay's raw connection and from the doctor's client alike; lists are JSON arrays
/// of names, so that no separator can be confused with a character of a (quoted) name. `$1`:
/// the allowed roles.
pub const FACTS_SQL: &str = concat!(
    "SELECT r.rolname, r.rolsuper::text, r.rolbypassrls::text, ", // 0-2
    // 3: allowed roles and roles policies name whose privileges it has
    "coalesce((SELECT json_agg(a.rolname ORDER BY a.rolname) FROM pg_roles a \
      WHERE (a.rolname = ANY($1::text[]) OR a.oid IN (SELECT unnest(polroles) FROM pg_policy)) \
      AND a.oid <> r.oid AND pg_has_role(r.oid, a.oid, 'USAGE')), '[]')::text, ",
    // 4: allowed roles it is no member of
    "coalesce((SELECT json_agg(x ORDER BY x) FROM unnest($1::text[]) x WHERE NOT EXISTS \
      (SELECT 1 FROM pg_roles a WHERE a.rolname = x AND pg_has_role(r.oid, a.oid, 'MEMBER'))), '[]')::text, ",
    // 5: tables it owns with RLS enabled but not forced
    "coalesce((SELECT json_agg(c.oid::regclass::text ORDER BY c.oid::regclass::text) FROM pg_class c \
      WHERE c.relowner = r.oid AND c.relrowsecurity AND NOT c.relforcerowsecurity), '[]')::text, ",
    "r.rolcreaterole::text, ", // 6
    // 7: [server-file role, the direct membership that leads to it, its fix]
    "coalesce((SELECT json_agg(x ORDER BY x) FROM (SELECT DISTINCT jsonb_build_array(s.rolname, g.rolname, \
        format('REVOKE %I FROM %I;', g.rolname, r.rolname)) AS x \
      FROM pg_roles s, pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
      WHERE s.rolname IN ('pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program') \
      AND m.member = r.oid AND pg_has_role(g.oid, s.oid, 'MEMBER')) d), '[]')::text, ",
    // 8: [role|database, the statement that made the setting, its fix] of every refused setting
    "coalesce((SELECT json_agg(json_build_array(CASE WHEN s.setrole = r.oid THEN 'role' ELSE 'database' END, \
        format('%s SET %s', w.scope, c), format('%s RESET %s;', w.scope, split_part(c, '=', 1))) \
        ORDER BY s.setrole DESC, s.setdatabase, c) \
      FROM pg_db_role_setting s CROSS JOIN LATERAL unnest(s.setconfig) c \
      CROSS JOIN LATERAL (SELECT CASE WHEN s.setrole = 0 AND s.setdatabase = 0 THEN 'ALTER ROLE ALL' \
        WHEN s.setrole = 0 THEN format('ALTER DATABASE %I', current_database()) \
        WHEN s.setdatabase = 0 THEN format('ALTER ROLE %I', r.rolname) \
        ELSE format('ALTER ROLE %I IN DATABASE %I', r.rolname, current_database()) END AS scope) w \
      WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) \
      AND (s.setrole = r.oid OR s.setrole = 0 AND (split_part(c, '=', 1) LIKE '%.%' \
        OR lower(split_part(c, '=', 1)) IN ",
    refused_database_settings!(),
    "))), '[]')::text, ",
    // 9: [allowed role, what lets it bypass RLS]
    "coalesce((SELECT json_agg(json_build_array(a.rolname, CASE WHEN a.rolsuper THEN 'is a superuser' \
        ELSE 'has BYPASSRLS' END) ORDER BY a.rolname) FROM pg_roles a \
      WHERE a.rolname = ANY($1::text[]) AND (a.rolsuper OR a.rolbypassrls)), '[]')::text, ",
    // 10: [allowed role, [tables it owns]]
    "coalesce((SELECT json_agg(json_build_array(a.rolname, o.tables) ORDER BY a.rolname) FROM pg_roles a \
      CROSS JOIN LATERAL (SELECT json_agg(c.oid::regclass::text ORDER BY c.oid::regclass::text) AS tables \
        FROM pg_class c WHERE c.relowner = a.oid AND c.relkind IN ('r', 'p')) o \
      WHERE a.rolname = ANY($1::text[]) AND o.tables IS NOT NULL), '[]')::text ",
    "FROM pg_roles r WHERE r.rolname = current_user"
);

/// A setting every new connection of the role would start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSetting {
    /// `role` (of the role, in any or this database) or `database` (for every role).
    pub scope: String,
    /// The statement that made it: `ALTER ROLE app_proxy SET search_path=scratch, public`.
    pub made_by: String,
    /// The statement that removes it.
    pub fix: String,
}

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
    /// CREATEROLE: it may create roles and grant memberships.
    pub createrole: bool,
    /// (server-file role, the role granted to it that leads there, the REVOKE that fixes it).
    pub server_files: Vec<(String, String, String)>,
    /// Settings new connections would start with (see the module's documentation).
    pub settings: Vec<RoleSetting>,
    /// Allowed roles that bypass row-level security, and why.
    pub allowed_bypassing: Vec<(String, String)>,
    /// Allowed roles that own tables, and the tables.
    pub allowed_owners: Vec<(String, Vec<String>)>,
}

/// Reads the [`RoleFacts`] of the role `conn` is logged in as; `allowed_roles` are the roles
/// tokens may select.
pub async fn facts(conn: &mut ServerConn, allowed_roles: &[String]) -> Result<RoleFacts, UpstreamError> {
    let rows = conn.query_rows(FACTS_SQL, &[&array_literal(allowed_roles)]).await?;
    let row = rows.first().ok_or_else(RoleFacts::no_row)?;
    RoleFacts::from_row(|i| Ok(row.get(i).cloned().flatten()))
}

impl RoleFacts {
    /// The facts from the row of [`FACTS_SQL`], `field(i)` being column `i`'s text; a column
    /// that cannot be read is an error, never a default that could read as "not a superuser".
    pub fn from_row(field: impl Fn(usize) -> Result<Option<String>, UpstreamError>) -> Result<Self, UpstreamError> {
        let text = |i: usize| field(i).map(Option::unwrap_or_default);
        fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, UpstreamError> {
            serde_json::from_str(text)
                .map_err(|e| UpstreamError::Protocol(format!("unexpected answer about the upstream role: {e}")))
        }
        let settings: Vec<(String, String, String)> = json(&text(8)?)?;
        Ok(RoleFacts {
            name: text(0)?,
            superuser: text(1)? == "true",
            bypassrls: text(2)? == "true",
            inherited: json(&text(3)?)?,
            not_member_of: json(&text(4)?)?,
            unforced_owned: json(&text(5)?)?,
            createrole: text(6)? == "true",
            server_files: json(&text(7)?)?,
            settings: settings.into_iter().map(|(scope, made_by, fix)| RoleSetting { scope, made_by, fix }).collect(),
            allowed_bypassing: json(&text(9)?)?,
            allowed_owners: json(&text(10)?)?,
        })
    }

    /// [`FACTS_SQL`] found no row: the role is not in `pg_roles`.
    pub fn no_row() -> UpstreamError {
        UpstreamError::UnsafeRole("current_user not found in pg_roles".into())
    }
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
        if self.createrole {
            return Err(UpstreamError::UnsafeRole(format!(
                "upstream.user {name} has CREATEROLE: a session running SQL as it could create roles and grant \
                 memberships (before PostgreSQL 16 of any role, pg_execute_server_program included); \
                 ALTER ROLE {name} NOCREATEROLE",
                name = self.name
            )));
        }
        if let Some((role, via, fix)) = self.server_files.first() {
            let through = if role == via { String::new() } else { format!(" (through {via})") };
            return Err(UpstreamError::UnsafeRole(format!(
                "upstream.user {} is a member of {role}{through}: a session running SQL as it could read or write \
                 the server's files or run programs on it; {}",
                self.name,
                fix.trim_end_matches(';')
            )));
        }
        if !self.settings.is_empty() {
            let made: Vec<&str> = self.settings.iter().map(|s| s.made_by.as_str()).collect();
            let fixes: Vec<&str> = self.settings.iter().map(|s| s.fix.trim_end_matches(';')).collect();
            return Err(UpstreamError::UnsafeRole(format!(
                "upstream.user {} starts every connection with settings ({}): every tenant shares this role, so \
                 such settings are one tenant's way to reach the others' sessions; remove them ({})",
                self.name,
                made.join("; "),
                fixes.join("; ")
            )));
        }
        if !self.inherited.is_empty() {
            return Err(UpstreamError::UnsafeRole(format!(
                "upstream.user inherits the privileges of {}, so their policies would apply to every \
                 tenant; make it NOINHERIT (ALTER ROLE ... NOINHERIT)",
                self.inherited.join(", ")
            )));
        }
        if let Some((role, why)) = self.allowed_bypassing.first() {
            return Err(UpstreamError::UnsafeRole(format!(
                "jwt.allowed_roles has {role}, which {why}: sessions that select it bypass row-level security; \
                 ALTER ROLE {role} NOSUPERUSER NOBYPASSRLS, or remove it from jwt.allowed_roles"
            )));
        }
        if let Some((role, tables)) = self.allowed_owners.first() {
            return Err(UpstreamError::UnsafeRole(format!(
                "jwt.allowed_roles has {role}, which owns {}: a session that selects it, or any tenant through \
                 SET ROLE, could switch their row-level security off (ALTER TABLE … NO FORCE, DROP POLICY); \
                 give them to a role no token selects (ALTER TABLE … OWNER TO …), or remove {role} from \
                 jwt.allowed_roles",
                tables.join(", ")
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
        let both = RoleFacts { superuser: true, inherited: vec!["admin_role".into()], ..owner.clone() };
        let err = both.verdict(false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("is a superuser"), "{err}");
        let via = ("pg_read_server_files".into(), "files".into(), "REVOKE files FROM app_proxy;".into());
        let files = RoleFacts { server_files: vec![via], ..owner };
        let err = files.verdict(true).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("member of pg_read_server_files (through files): ") && err.ends_with("FROM app_proxy"));
    }
}
