"""per-tenant row-level security policies on tenants, users, documents

The policies of migrations/0001_example_schema.sql as an Alembic revision, for
teams whose schema is managed with Alembic: ENABLE + FORCE ROW LEVEL SECURITY
and one policy per command comparing the tenant column with the tenant the
proxy sets (`app.current_tenant`), plus the admin role's bypass policy.

The tables themselves are the application's (its models / earlier revisions);
so are the GRANTs to the proxy's role. Copy this file into your versions
directory, set `down_revision` to your current head, and adjust TABLES.

Idempotent: every policy is dropped (IF EXISTS) before it is created, so the
revision also applies cleanly over policies created by the SQL migration.

STRICT = True (the default) writes the strict-mode form: the tenant comes from
`rlsproxy.tenant_id()`, which verifies the proxy's signed context (install
migrations/0003_strict_mode.sql first), and the admin role's policy also needs
a context signed for that role (`rlsproxy.role()`), so that SQL reaching
`SET ROLE admin_role` by some other way gains nothing: what
`rlsproxy.enable_strict_policies` creates. The calls are wrapped in scalar
subqueries so that PostgreSQL evaluates them once per statement, not per row.
STRICT = False trusts `app.current_tenant` and the role alone (the proxy's
default mode, for deployments without a strict key: the statement guard is
then all that stands between a client and other tenants' rows).

downgrade() drops the policies and turns row-level security off again, i.e.
every row becomes visible to any role with privileges on the tables: the exact
state before upgrade().

Revision ID: 0001_rls_policies
Revises:
"""

from alembic import op

revision = "0001_rls_policies"
down_revision = None
branch_labels = None
depends_on = None

# table: its tenant column
TABLES = {"tenants": "id", "users": "tenant_id", "documents": "tenant_id"}
# Role that sees every tenant (after SET ROLE) through a FOR ALL policy; None for no such policy.
ADMIN_ROLE = "admin_role"
# True: rlsproxy.tenant_id() and rlsproxy.role() (strict mode). False: trust app.current_tenant.
STRICT = True

# name: (command, USING, WITH CHECK)
POLICIES = {
    "tenant_isolation": ("SELECT", True, False),
    "tenant_isolation_insert": ("INSERT", False, True),
    "tenant_isolation_update": ("UPDATE", True, True),
    "tenant_isolation_delete": ("DELETE", True, False),
}
ADMIN_POLICY = "admin_bypass"


def _tenant_expr():
    if STRICT:
        return "(SELECT rlsproxy.tenant_id())"
    # Without missing_ok: a session without a tenant context gets an error, never every row.
    return "current_setting('app.current_tenant')::integer"


def _admin_expr():
    if STRICT:
        # The signed role must be the role the session runs as (the one the proxy set).
        return "(SELECT rlsproxy.role()) = current_user::text"
    return "true"


def _q(identifier):
    """A double-quoted SQL identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def _drop_policies(table):
    for name in [*POLICIES, ADMIN_POLICY]:
        op.execute(f"DROP POLICY IF EXISTS {_q(name)} ON {_q(table)}")


def upgrade():
    for table, column in TABLES.items():
        same_tenant = f"{_q(column)} = {_tenant_expr()}"
        # FORCE: the table's owner is filtered too (superusers and BYPASSRLS roles never are).
        op.execute(f"ALTER TABLE {_q(table)} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {_q(table)} FORCE ROW LEVEL SECURITY")
        _drop_policies(table)
        for name, (command, using, check) in POLICIES.items():
            sql = f"CREATE POLICY {_q(name)} ON {_q(table)} FOR {command}"
            if using:
                sql += f" USING ({same_tenant})"
            if check:
                sql += f" WITH CHECK ({same_tenant})"
            op.execute(sql)
        if ADMIN_ROLE:
            admin = _admin_expr()
            op.execute(
                f"CREATE POLICY {_q(ADMIN_POLICY)} ON {_q(table)} FOR ALL TO {_q(ADMIN_ROLE)}"
                f" USING ({admin}) WITH CHECK ({admin})"
            )


def downgrade():
    for table in reversed(list(TABLES)):
        _drop_policies(table)
        op.execute(f"ALTER TABLE {_q(table)} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {_q(table)} DISABLE ROW LEVEL SECURITY")
