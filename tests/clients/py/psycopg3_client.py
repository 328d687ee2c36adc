"""psycopg 3 through rlsproxy.

Checks: simple query (no parameters: simple protocol), parameterized query,
a server-side prepared statement reused 10 times (prepare=True), a transaction
after rolling back a connection that holds prepared statements (psycopg then
sends DEALLOCATE ALL), BEGIN/COMMIT and ROLLBACK, COPY in (cursor.copy into a
temp table dropped at commit) and COPY out (RLS applies to COPY (SELECT ...) TO
STDOUT), tenant isolation with two tokens, and concurrent workers of both tenants
(threads, default autocommit off: psycopg sends BEGIN itself, and prepares
statements after 5 uses, then reuses them in later transactions).
"""

import psycopg
from common import COPY_ROWS, MODE, TITLES, TXNS, Checks, conninfo, expect_eq, own_rows_only, run_workers

DOCS = "SELECT tenant_id, title FROM documents"


def connect(tenant, **kw):
    return psycopg.connect(conninfo(tenant), autocommit=True, **kw)


def simple_query(conn):
    row = conn.execute("SELECT current_setting('app.current_tenant'), count(*) FROM documents").fetchone()
    expect_eq(row, ("1", 3), "(app.current_tenant, visible documents)")


def parameterized(conn):
    sql = "SELECT title FROM documents WHERE title LIKE %s ORDER BY id"
    expect_eq({r[0] for r in conn.execute(sql, ("acme%",))}, TITLES[1], "own titles")
    expect_eq(conn.execute(sql, ("globex%",)).fetchall(), [], "other tenant's titles")


def prepared():
    with connect(1) as conn:
        rows = []
        for doc_id in range(1, 11):
            rows += conn.execute(DOCS + " WHERE id = %s", (doc_id,), prepare=True).fetchall()
    own_rows_only(1, rows, "prepared statement")
    expect_eq({r[1] for r in rows}, TITLES[1], "titles by id 1..10")


def prepared_rollback():
    # psycopg 3 forgets its prepared statements at every rollback (and after DROP,
    # ALTER, DISCARD ALL) and sends DEALLOCATE ALL right after the ROLLBACK.
    with psycopg.connect(conninfo(1), prepare_threshold=0) as conn:  # autocommit off
        conn.execute("SELECT count(*) FROM documents").fetchone()
        conn.rollback()
        expect_eq(conn.execute("SELECT count(*) FROM documents").fetchone()[0], 3, "visible documents after rollback")


def commit(conn, other2):
    title = f"psycopg3 commit {MODE}"
    with conn.transaction():  # BEGIN ... COMMIT
        conn.execute("INSERT INTO documents (tenant_id, title) VALUES (1, %s)", (title,))
    try:
        count = "SELECT count(*) FROM documents WHERE title = %s"
        with connect(1) as other1:  # another session of tenant 1 sees the committed row
            expect_eq(other1.execute(count, (title,)).fetchone()[0], 1, "committed row seen by tenant 1's other session")
            expect_eq(other2.execute(count, (title,)).fetchone()[0], 0, "committed row seen by tenant 2")
    finally:
        conn.execute("DELETE FROM documents WHERE title = %s", (title,))


def rollback(conn):
    title = f"psycopg3 rollback {MODE}"
    count = "SELECT count(*) FROM documents WHERE title = %s"
    conn.execute("BEGIN")
    conn.execute("INSERT INTO documents (tenant_id, title) VALUES (1, %s)", (title,))
    expect_eq(conn.execute(count, (title,)).fetchone()[0], 1, "row inside the transaction")
    conn.execute("ROLLBACK")
    expect_eq(conn.execute(count, (title,)).fetchone()[0], 0, "row after ROLLBACK")


def copy_in(conn):
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE copy_t (id integer, title text) ON COMMIT DROP")
        with cur.copy("COPY copy_t (id, title) FROM STDIN") as copy:
            for row in COPY_ROWS:
                copy.write_row(row)
        expect_eq(cur.execute("SELECT id, title FROM copy_t ORDER BY id").fetchall(), COPY_ROWS, "copied rows")


def copy_out(conn):
    with conn.cursor() as cur:
        with cur.copy(f"COPY ({DOCS} ORDER BY id) TO STDOUT") as copy:
            rows = [(int(t), title) for t, title in copy.rows()]
    own_rows_only(1, rows, "COPY TO")
    expect_eq(len(rows), 3, "rows copied out")


def isolation(conns):
    for tenant, conn in conns.items():
        rows = conn.execute(DOCS).fetchall()
        own_rows_only(tenant, rows, "documents")
        expect_eq({r[1] for r in rows}, TITLES[tenant], f"tenant {tenant} titles")
        expect_eq(conn.execute("SELECT id FROM tenants").fetchall(), [(tenant,)], f"tenant {tenant} tenants rows")
    try:
        conns[1].execute("INSERT INTO documents (tenant_id, title) VALUES (2, 'forged by tenant 1')")
    except psycopg.errors.InsufficientPrivilege:
        pass
    else:
        raise AssertionError("tenant 1 inserted a row for tenant 2")


def concurrent():
    def work(i, tenant):
        # Commits only: a rollback would make psycopg forget its prepared statements,
        # and these should get prepared (after 5 uses) and be reused across transactions.
        with psycopg.connect(conninfo(tenant)) as conn:  # autocommit off
            for n in range(TXNS):
                new_id = None
                if n % 2:
                    sql = "INSERT INTO documents (tenant_id, title) VALUES (%s, %s) RETURNING id"
                    new_id = conn.execute(sql, (tenant, f"w{i}")).fetchone()[0]
                rows = conn.execute(DOCS).fetchall()
                if new_id is not None:
                    conn.execute("DELETE FROM documents WHERE id = %s", (new_id,))
                conn.commit()
                own_rows_only(tenant, rows, f"worker {i} txn {n}")

    run_workers(work)


def main():
    checks = Checks("psycopg3")
    conns = {}
    checks.run("connect", lambda: conns.update({t: connect(t) for t in (1, 2)}))
    if len(conns) < 2:
        checks.exit()
    c1 = conns[1]
    checks.run("simple_query", simple_query, c1)
    checks.run("parameterized", parameterized, c1)
    checks.run("prepared", prepared)
    checks.run("prepared_rollback", prepared_rollback)
    checks.run("commit", commit, c1, conns[2])
    checks.run("rollback", rollback, c1)
    checks.run("copy_in", copy_in, c1)
    checks.run("copy_out", copy_out, c1)
    checks.run("isolation", isolation, conns)
    checks.run("concurrent", concurrent)
    for conn in conns.values():
        conn.close()
    checks.exit()


if __name__ == "__main__":
    main()
