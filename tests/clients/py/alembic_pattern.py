"""The application-side RLS pattern that rlsproxy replaces, and its replacement.

On a fresh database alembic_app (same cluster as app, reached through the same proxy,
whose upstream.database is unset):
  alembic_upgrade      as the superuser, directly: `alembic upgrade head` of
                       rls_app/migrations (tables, ENABLE + FORCE RLS, a policy per
                       command on current_setting('app.current_tenant'), grants)
  seed                 as the superuser: two tenants' users and documents via the ORM
  direct_listener      the replaced pattern: app_proxy directly, with a SQLAlchemy
                       `begin` listener setting app.current_tenant from a contextvar
  proxy_no_listener    the same app code (rls_app.queries), NO listener, through the
                       proxy with each tenant's token: only its rows; writes its own
                       rows, and a row for the other tenant is refused
  direct_fails_closed  the same app code, NO listener, directly as app_proxy: an
                       error and no rows, never every tenant's rows
"""

import os
from contextvars import ContextVar
from pathlib import Path

from alembic import command
from alembic.config import Config
from common import HOST, PORT, TOKENS, USERS, Checks, expect, expect_eq, own_rows_only
from rls_app.models import Document, Tenant, User
from rls_app.queries import add_document, document_rows, tenant_names, user_names
from sqlalchemy import URL, create_engine, delete, event, pool, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session

DB = "alembic_app"
PG_HOST = os.environ.get("PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PG_PORT", "5432"))
TITLES = {1: {"acme alembic plan", "acme alembic budget"}, 2: {"globex alembic plan"}}
USER_NAMES = {1: ["alice"], 2: ["bob", "beatrice"]}

current_tenant_id: ContextVar[int | None] = ContextVar("current_tenant_id", default=None)


def url(user, password, host, port, database=DB):
    return URL.create("postgresql+psycopg", username=user, password=password, host=host, port=port, database=database)


def admin_engine(database=DB, **kw):
    return create_engine(url(os.environ.get("PG_SUPERUSER", "postgres"), os.environ["PG_SUPERUSER_PASSWORD"],
                             PG_HOST, PG_PORT, database), poolclass=pool.NullPool, **kw)


def direct_engine():
    return create_engine(url("app_proxy", os.environ["PG_APP_PROXY_PASSWORD"], PG_HOST, PG_PORT),
                         poolclass=pool.NullPool)


def proxy_engine(tenant):
    return create_engine(url(USERS[tenant], TOKENS[tenant], HOST, PORT), connect_args={"sslmode": "disable"})


def alembic_upgrade():
    server = admin_engine("postgres", isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {DB}"))
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "rls_app" / "migrations"))
    with admin_engine().begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        policies = conn.scalar(text("SELECT count(*) FROM pg_policies WHERE schemaname = 'public'"))
        forced = conn.scalar(text("SELECT count(*) FROM pg_class WHERE relname IN ('tenants', 'users', 'documents')"
                                  " AND relrowsecurity AND relforcerowsecurity"))
        version = conn.scalar(text("SELECT version_num FROM alembic_version"))
    expect_eq((policies, forced, version), (12, 3, "0001_tenancy_rls"), "(policies, forced tables, revision)")


def seed():
    with Session(admin_engine()) as s:  # the superuser bypasses RLS
        s.add_all([Tenant(id=1, name="acme"), Tenant(id=2, name="globex")])
        s.flush()
        s.add_all([User(tenant_id=t, name=n) for t, names in USER_NAMES.items() for n in names])
        s.add_all([Document(tenant_id=t, title=title) for t, titles in TITLES.items() for title in sorted(titles)])
        s.commit()


def check_view(session, tenant):
    rows = document_rows(session)
    own_rows_only(tenant, rows, "documents", TITLES)
    expect_eq({r[1] for r in rows}, TITLES[tenant], f"tenant {tenant} titles")
    expect_eq(user_names(session), USER_NAMES[tenant], f"tenant {tenant} users")
    expect_eq(len(tenant_names(session)), 1, f"tenant {tenant} tenants rows")


def direct_listener():
    engine = direct_engine()

    @event.listens_for(engine, "begin")
    def set_tenant(conn):  # the listener the application had to carry
        tenant = current_tenant_id.get()
        if tenant is not None:
            conn.exec_driver_sql("SELECT set_config('app.current_tenant', %s, true)", (str(tenant),))

    for tenant in (1, 2):
        token = current_tenant_id.set(tenant)
        try:
            with Session(engine) as s:
                check_view(s, tenant)
        finally:
            current_tenant_id.reset(token)


def proxy_no_listener():
    for tenant in (1, 2):
        engine = proxy_engine(tenant)
        try:
            with Session(engine) as s:
                check_view(s, tenant)
            title = f"written by tenant {tenant}"
            with Session(engine) as s:
                add_document(s, tenant, title)
                s.commit()
            with Session(engine) as s:
                expect((tenant, title) in document_rows(s), "own committed row not visible")
                s.execute(delete(Document).where(Document.title == title))
                s.commit()
            with Session(engine) as s:
                try:
                    add_document(s, 3 - tenant, "forged")
                except ProgrammingError as exc:
                    expect("row-level security" in str(exc), f"unexpected error: {exc}")
                else:
                    raise AssertionError(f"tenant {tenant} inserted a row for tenant {3 - tenant}")
        finally:
            engine.dispose()


def direct_fails_closed():
    with Session(direct_engine()) as s:
        try:
            rows = document_rows(s)
        except DBAPIError as exc:
            expect("app.current_tenant" in str(exc), f"unexpected error: {exc}")
        else:
            raise AssertionError(f"no tenant context, yet {len(rows)} rows and no error")


def main():
    checks = Checks("sqlalchemy-alembic")
    checks.run("alembic_upgrade", alembic_upgrade)
    checks.run("seed", seed)
    checks.run("direct_listener", direct_listener)
    checks.run("proxy_no_listener", proxy_no_listener)
    checks.run("direct_fails_closed", direct_fails_closed)
    checks.exit()


if __name__ == "__main__":
    main()
