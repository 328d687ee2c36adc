//! Strict mode binds the role as well as the tenant: the signed value names the role the
//! proxy set for the client, and a policy that grants more to a role (`TO admin_role USING
//! (true)`) must also require that signed role, or a tenant that reaches `SET ROLE admin_role`
//! some other way (the proxy's role is a member of it, to be able to switch) gains its rows
//! without any token naming it. The convention, as `rlsproxy.enable_strict_policies` writes
//! it: the policy's expression calls `rlsproxy.role()`, e.g.
//! `(SELECT rlsproxy.role()) = current_user`.

use super::catalog::quote_ident;
use super::policies::Policy;
use super::{Check, Finding, Severity};

/// What a fixed policy adds to each of its expressions.
const BINDING: &str = "(SELECT rlsproxy.role()) = current_user";

/// The permissive policies of `table` written TO specific roles (other than the proxy's own
/// user `proxy`, whose rights every tenant has anyway) whose expressions never call
/// `rlsproxy.role()`.
pub(super) fn findings(table: &str, policies: &[Policy], proxy: &str, findings: &mut Vec<Finding>) {
    for p in policies {
        let specific = !p.to.is_empty() && !p.to.iter().any(|r| r == "public") && p.to.iter().any(|r| r != proxy);
        if !p.permissive || !specific || [&p.using, &p.check].into_iter().flatten().any(|e| calls_role(e)) {
            continue;
        }
        let message = format!(
            "strict mode: permissive policy written TO {} never checks the signed role (rlsproxy.role()): a session \
             that reaches SET ROLE without a token naming that role gets what the policy grants",
            p.to.join(", ")
        );
        let bound = |e: &str| format!("({e}) AND {BINDING}");
        let clauses = match (&p.using, &p.check) {
            (Some(u), Some(c)) => format!("USING ({}) WITH CHECK ({})", bound(u), bound(c)),
            (Some(u), None) => format!("USING ({})", bound(u)),
            (None, Some(c)) => format!("WITH CHECK ({})", bound(c)),
            (None, None) => continue,
        };
        let fix = format!("ALTER POLICY {} ON {table} {clauses};", quote_ident(&p.name));
        let object = format!("policy {} on {table}", p.name);
        findings.push(Finding::new(Check::PolicyRoleNotSigned, Severity::Error, object, message, fix));
    }
}

/// Whether a deparsed expression calls `rlsproxy.role()`.
fn calls_role(expr: &str) -> bool {
    expr.to_lowercase().replace(' ', "").contains("rlsproxy.role()")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(to: &str, using: &str) -> Policy {
        Policy {
            name: "admin_all".into(),
            cmd: '*',
            permissive: true,
            using: Some(using.into()),
            to: vec![to.into()],
            ..Policy::default()
        }
    }

    #[test]
    fn role_policies_must_call_the_signed_role() {
        let mut found = Vec::new();
        findings("public.t", &[policy("admin_role", "true")], "app_proxy", &mut found);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].fix,
            "ALTER POLICY admin_all ON public.t USING ((true) AND (SELECT rlsproxy.role()) = current_user);"
        );
        let bound = policy("admin_role", "(( SELECT rlsproxy.role() AS role) = CURRENT_USER)");
        let mut found = Vec::new();
        findings("public.t", &[bound, policy("public", "true"), policy("app_proxy", "true")], "app_proxy", &mut found);
        assert!(found.is_empty(), "{found:?}");
    }
}
