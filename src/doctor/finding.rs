//! What the doctor reports: one [`Finding`] per problem, each naming its check (a stable id
//! that CI pipelines may match on), the object at fault and the SQL that fixes it.

use std::fmt;

/// The groups findings are shown in, in this order: who connects, then what they reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// The proxy's own upstream role.
    UpstreamRole,
    /// Roles a token may select (`[jwt] allowed_roles`).
    TokenRoles,
    /// What every tenant shares through the one role: schemas it may create in, other sessions.
    Shared,
    /// Tenant tables: RLS switched on and forced, owner, index.
    Tables,
    /// The policies of tenant tables.
    Policies,
    /// Views and materialized views over RLS tables.
    Views,
    /// Functions that read RLS tables with another role's rights, or change settings.
    Functions,
}

impl Group {
    /// Heading of the group in the text report.
    pub fn title(self) -> &'static str {
        match self {
            Group::UpstreamRole => "Upstream role",
            Group::TokenRoles => "Token roles",
            Group::Shared => "Shared between tenants",
            Group::Tables => "Tables",
            Group::Policies => "Policies",
            Group::Views => "Views",
            Group::Functions => "Functions",
        }
    }
}

/// Every check the doctor runs. The ids ([`Check::id`]) are part of the JSON output's
/// stable shape: renaming one breaks pipelines that match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// The proxy's user is a superuser.
    ProxyUserSuperuser,
    /// The proxy's user has BYPASSRLS.
    ProxyUserBypassRls,
    /// The proxy's user has CREATEROLE.
    ProxyUserCreateRole,
    /// The proxy's user is a member of a role that reads or writes the server's files.
    ProxyUserServerFiles,
    /// Settings every new connection of the proxy's user starts with.
    ProxyUserSettings,
    /// The proxy's user inherits an allowed role or a role policies name.
    ProxyUserInherits,
    /// An allowed role the proxy's user cannot `SET ROLE` to.
    AllowedRoleNotMember,
    /// An allowed role that is a superuser or has BYPASSRLS.
    AllowedRoleBypassRls,
    /// An allowed role that owns tables.
    AllowedRoleOwnsTables,
    /// A schema where a tenant role may create objects, which every tenant then shares.
    SchemaCreatePrivilege,
    /// A tenant role may read other sessions' query text or cancel them.
    OtherSessionsVisible,
    /// A tenant table without row-level security.
    RlsDisabled,
    /// A tenant table whose row-level security is not forced (its owner bypasses it).
    RlsNotForced,
    /// A tenant table owned by a role tenants run as.
    TenantRoleOwnsTable,
    /// A tenant table without an index led by the tenant column.
    TenantIndexMissing,
    /// A command of a tenant table no permissive policy allows.
    PolicyMissing,
    /// A permissive policy that never reads the tenant setting.
    PolicyWithoutTenant,
    /// Strict mode: a permissive policy for specific roles that does not check the signed role.
    PolicyRoleNotSigned,
    /// A view over RLS tables that runs with its owner's rights.
    ViewNotSecurityInvoker,
    /// A materialized view over RLS tables: rows computed with its owner's rights.
    MaterializedViewOverRls,
    /// A SECURITY DEFINER function that reads RLS tables.
    SecurityDefinerReadsRlsTable,
    /// A function that calls set_config or sets the tenant setting.
    FunctionCallsSetConfig,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 22] = [
        Check::ProxyUserSuperuser,
        Check::ProxyUserBypassRls,
        Check::ProxyUserCreateRole,
        Check::ProxyUserServerFiles,
        Check::ProxyUserSettings,
        Check::ProxyUserInherits,
        Check::AllowedRoleNotMember,
        Check::AllowedRoleBypassRls,
        Check::AllowedRoleOwnsTables,
        Check::SchemaCreatePrivilege,
        Check::OtherSessionsVisible,
        Check::RlsDisabled,
        Check::RlsNotForced,
        Check::TenantRoleOwnsTable,
        Check::TenantIndexMissing,
        Check::PolicyMissing,
        Check::PolicyWithoutTenant,
        Check::PolicyRoleNotSigned,
        Check::ViewNotSecurityInvoker,
        Check::MaterializedViewOverRls,
        Check::SecurityDefinerReadsRlsTable,
        Check::FunctionCallsSetConfig,
    ];

    /// The stable id, as in the JSON output and docs/doctor.md.
    pub fn id(self) -> &'static str {
        match self {
            Check::ProxyUserSuperuser => "proxy_user_superuser",
            Check::ProxyUserBypassRls => "proxy_user_bypassrls",
            Check::ProxyUserCreateRole => "proxy_user_createrole",
            Check::ProxyUserServerFiles => "proxy_user_server_files",
            Check::ProxyUserSettings => "proxy_user_settings",
            Check::ProxyUserInherits => "proxy_user_inherits",
            Check::AllowedRoleNotMember => "allowed_role_not_member",
            Check::AllowedRoleBypassRls => "allowed_role_bypassrls",
            Check::AllowedRoleOwnsTables => "allowed_role_owns_tables",
            Check::SchemaCreatePrivilege => "schema_create_privilege",
            Check::OtherSessionsVisible => "other_sessions_visible",
            Check::RlsDisabled => "rls_disabled",
            Check::RlsNotForced => "rls_not_forced",
            Check::TenantRoleOwnsTable => "tenant_role_owns_table",
            Check::TenantIndexMissing => "tenant_index_missing",
            Check::PolicyMissing => "policy_missing",
            Check::PolicyWithoutTenant => "policy_without_tenant",
            Check::PolicyRoleNotSigned => "policy_role_not_signed",
            Check::ViewNotSecurityInvoker => "view_not_security_invoker",
            Check::MaterializedViewOverRls => "materialized_view_over_rls",
            Check::SecurityDefinerReadsRlsTable => "security_definer_reads_rls_table",
            Check::FunctionCallsSetConfig => "function_calls_set_config",
        }
    }

    /// The group it is reported under.
    pub fn group(self) -> Group {
        match self {
            Check::ProxyUserSuperuser
            | Check::ProxyUserBypassRls
            | Check::ProxyUserCreateRole
            | Check::ProxyUserServerFiles
            | Check::ProxyUserSettings
            | Check::ProxyUserInherits => Group::UpstreamRole,
            Check::AllowedRoleNotMember | Check::AllowedRoleBypassRls | Check::AllowedRoleOwnsTables => {
                Group::TokenRoles
            }
            Check::SchemaCreatePrivilege | Check::OtherSessionsVisible => Group::Shared,
            Check::RlsDisabled | Check::RlsNotForced | Check::TenantRoleOwnsTable | Check::TenantIndexMissing => {
                Group::Tables
            }
            Check::PolicyMissing | Check::PolicyWithoutTenant | Check::PolicyRoleNotSigned => Group::Policies,
            Check::ViewNotSecurityInvoker | Check::MaterializedViewOverRls => Group::Views,
            Check::SecurityDefinerReadsRlsTable | Check::FunctionCallsSetConfig => Group::Functions,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// How bad a finding is. Both make `rlsproxy doctor` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// A tenant can (or could, one GRANT away) read or change another tenant's rows, or switch
    /// the isolation off.
    Error,
    /// Isolation holds, but something fails closed, is slow, or holds only by luck.
    Warning,
}

impl Severity {
    /// `error` or `warning`, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// Which check found it.
    pub check: Check,
    /// How bad it is.
    pub severity: Severity,
    /// The object at fault, typed as PostgreSQL names it: `table public.documents`,
    /// `policy p on public.documents`, `view public.v`, `function public.f(integer)`, `role r`.
    pub object: String,
    /// What is wrong and why it matters, in one sentence or two.
    pub message: String,
    /// SQL that fixes it, on one line.
    pub fix: String,
}

impl Finding {
    /// A finding with the given parts.
    pub fn new(
        check: Check,
        severity: Severity,
        object: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self { check, severity, object: object.into(), message: message.into(), fix: fix.into() }
    }

    /// Report order: by group, then object, then check.
    pub fn sort_key(&self) -> (Group, &str, Check, &str) {
        (self.check.group(), &self.object, self.check, &self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_snake_case() {
        let mut ids: Vec<&str> = Check::ALL.iter().map(|c| c.id()).collect();
        assert!(ids.iter().all(|id| id.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Check::ALL.len());
    }

    #[test]
    fn all_is_in_group_order() {
        assert!(Check::ALL.windows(2).all(|w| w[0].group() <= w[1].group() && w[0] < w[1]));
    }
}
