"""tenants, users, documents with row-level security per tenant

The pattern of the application-side RLS guide: tables, ENABLE + FORCE ROW LEVEL
SECURITY, one policy per command on current_setting('app.current_tenant'), and
grants to the proxy's role. Run by an admin (superuser) connection.

Revision ID: 0001_tenancy_rls
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_tenancy_rls"
down_revision = None
branch_labels = None
depends_on = None

TABLES = {"tenants": "id", "users": "tenant_id", "documents": "tenant_id"}  # table: tenant column
APP_ROLE = "app_proxy"


def upgrade():
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text),
    )
    for table, column in TABLES.items():
        same_tenant = f"{column} = current_setting('app.current_tenant')::integer"
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} FOR SELECT USING ({same_tenant})")
        op.execute(f"CREATE POLICY tenant_isolation_insert ON {table} FOR INSERT WITH CHECK ({same_tenant})")
        op.execute(f"CREATE POLICY tenant_isolation_update ON {table} FOR UPDATE "
                   f"USING ({same_tenant}) WITH CHECK ({same_tenant})")
        op.execute(f"CREATE POLICY tenant_isolation_delete ON {table} FOR DELETE USING ({same_tenant})")
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")
    op.execute(f"GRANT USAGE ON SEQUENCE users_id_seq, documents_id_seq TO {APP_ROLE}")


def downgrade():
    for table in reversed(list(TABLES)):
        op.drop_table(table)  # drops its policies too
