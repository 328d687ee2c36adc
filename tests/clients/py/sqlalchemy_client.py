"""SQLAlchemy 2 ORM (psycopg 3 dialect, QueuePool) through rlsproxy, on database app.

Checks: simple query (text() without parameters), parameterized ORM query, an
ORM query reused 10 times on an engine whose psycopg connections prepare every
statement (prepare_threshold=0), read-only requests that each run one query 6
times (prepared by psycopg's defaults, then rolled back at Session close),
Session commit and rollback, tenant isolation with one engine per token (no
tenant listener anywhere: rls_app.queries has no tenant filter), and concurrent
Sessions of both tenants in threads. COPY is not an SQLAlchemy API (psycopg 3's
cursor.copy is checked by psycopg3_client.py).
"""

from common import DB, HOST, MODE, PORT, TITLES, TOKENS, TXNS, USERS, WORKERS, Checks, expect, expect_eq, \
    own_rows_only, run_workers
from rls_app.models import Document
from rls_app.queries import add_document, document_rows, tenant_names
from sqlalchemy import URL, create_engine, delete, func, select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session


def engine_for(tenant, **connect_args):
    url = URL.create("postgresql+psycopg", username=USERS[tenant], password=TOKENS[tenant], host=HOST, port=PORT,
                     database=DB)
    return create_engine(url, pool_size=WORKERS, connect_args={"sslmode": "disable", **connect_args})


def count_titled(session, title):
    return session.scalar(select(func.count()).select_from(Document).where(Document.title == title))


def simple_query(engine):
    with Session(engine) as s:
        row = s.execute(text("SELECT current_setting('app.current_tenant'), count(*) FROM documents")).one()
    expect_eq(tuple(row), ("1", 3), "(app.current_tenant, visible documents)")


def parameterized(engine):
    with Session(engine) as s:
        own = set(s.scalars(select(Document.title).where(Document.title.like("acme%"))))
        other = list(s.scalars(select(Document.title).where(Document.title.like("globex%"))))
    expect_eq(own, TITLES[1], "own titles")
    expect_eq(other, [], "other tenant's titles")


def prepared():
    engine = engine_for(1, prepare_threshold=0)  # psycopg prepares every statement on first use
    try:
        with Session(engine) as s:
            rows = []
            for doc_id in range(1, 11):
                rows += [(d.tenant_id, d.title) for d in s.scalars(select(Document).where(Document.id == doc_id))]
    finally:
        engine.dispose()
    own_rows_only(1, rows, "prepared statement")
    expect_eq({r[1] for r in rows}, TITLES[1], "titles by id 1..10")


def requests():
    # Read-only "requests" on one pooled connection with psycopg's defaults: a query run
    # 6 times gets prepared (threshold 5); Session.close() rolls back, and psycopg then
    # sends DEALLOCATE ALL. The next request must not notice.
    engine = engine_for(1)
    try:
        for request in range(3):
            with Session(engine) as s:
                for doc_id in range(1, 7):
                    rows = [(d.tenant_id, d.title) for d in s.scalars(select(Document).where(Document.id == doc_id))]
                    expect(all(r[0] == 1 for r in rows), f"request {request}: foreign rows {rows!r}")
    finally:
        engine.dispose()


def commit(engines):
    title = f"sqlalchemy commit {MODE}"
    with Session(engines[1]) as s:
        add_document(s, 1, title)
        s.commit()
    try:
        with Session(engines[1]) as s:
            expect_eq(count_titled(s, title), 1, "committed row in a new session")
        with Session(engines[2]) as s:
            expect_eq(count_titled(s, title), 0, "committed row seen by tenant 2")
    finally:
        with Session(engines[1]) as s:
            s.execute(delete(Document).where(Document.title == title))
            s.commit()


def rollback(engine):
    title = f"sqlalchemy rollback {MODE}"
    with Session(engine) as s:
        add_document(s, 1, title)
        expect_eq(count_titled(s, title), 1, "row inside the transaction")
        s.rollback()
        expect_eq(count_titled(s, title), 0, "row after rollback")


def isolation(engines):
    for tenant, engine in engines.items():
        with Session(engine) as s:
            rows = document_rows(s)
            own_rows_only(tenant, rows, "documents")
            expect_eq({r[1] for r in rows}, TITLES[tenant], f"tenant {tenant} titles")
            expect_eq(len(tenant_names(s)), 1, f"tenant {tenant} tenants rows")
    with Session(engines[1]) as s:
        try:
            add_document(s, 2, "forged by tenant 1")
        except ProgrammingError as exc:
            expect("row-level security" in str(exc), f"unexpected error: {exc}")
        else:
            raise AssertionError("tenant 1 inserted a row for tenant 2")


def concurrent(engines):
    def work(i, tenant):
        for n in range(TXNS):
            with Session(engines[tenant]) as s:
                if n % 2:
                    add_document(s, tenant, f"w{i}")
                rows = document_rows(s)
                if n % 2:
                    s.rollback()
                else:
                    s.commit()
            own_rows_only(tenant, rows, f"worker {i} txn {n}")

    run_workers(work)


def main():
    checks = Checks("sqlalchemy")
    engines = {t: engine_for(t) for t in (1, 2)}
    checks.run("simple_query", simple_query, engines[1])
    checks.run("parameterized", parameterized, engines[1])
    checks.run("prepared", prepared)
    checks.run("requests", requests)
    checks.run("commit", commit, engines)
    checks.run("rollback", rollback, engines[1])
    checks.skip("copy_in", "SQLAlchemy has no COPY API (psycopg 3's cursor.copy is checked by psycopg3)")
    checks.skip("copy_out", "SQLAlchemy has no COPY API (psycopg 3's cursor.copy is checked by psycopg3)")
    checks.run("isolation", isolation, engines)
    checks.run("concurrent", concurrent, engines)
    for engine in engines.values():
        engine.dispose()
    checks.exit()


if __name__ == "__main__":
    main()
