"""psycopg2 through rlsproxy (simple protocol only: parameters are bound client-side).

Checks: simple query, parameterized query, one SQL-level PREPARE run by EXECUTE in
10 separate transactions (psycopg2 has no protocol-level prepared statements; in
transaction pooling, SQL PREPARE pins the client to its server connection, so the
statement stays where the client expects it), BEGIN/COMMIT and ROLLBACK, COPY
in/out with copy_expert (temp table dropped at commit), connection.reset() (DISCARD ALL), tenant isolation with two
tokens, and concurrent workers of both tenants (threads, autocommit off: psycopg2
sends BEGIN itself).
"""

import io

import psycopg2
import psycopg2.errors
from common import COPY_ROWS, MODE, TITLES, TXNS, Checks, conninfo, expect_eq, own_rows_only, run_workers

DOCS = "SELECT tenant_id, title FROM documents"


def connect(tenant, autocommit=True):
    conn = psycopg2.connect(conninfo(tenant))
    conn.autocommit = autocommit
    return conn


def query(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else None


def simple_query(conn):
    row = query(conn, "SELECT current_setting('app.current_tenant'), count(*) FROM documents")[0]
    expect_eq(row, ("1", 3), "(app.current_tenant, visible documents)")


def parameterized(conn):
    sql = "SELECT title FROM documents WHERE title LIKE %s ORDER BY id"
    expect_eq({r[0] for r in query(conn, sql, ("acme%",))}, TITLES[1], "own titles")
    expect_eq(query(conn, sql, ("globex%",)), [], "other tenant's titles")


def prepared():
    # Connections of its own: the PREPARE pins `conn` in transaction pooling, the
    # other checks' connection stays unpinned. Between `conn`'s transactions another
    # session of tenant 1 opens or ends one: were `conn` not pinned, its next
    # transaction would run on another server connection, one without the statement.
    conn, other = connect(1), connect(1, autocommit=False)
    try:
        query(conn, "PREPARE docs_titled (text) AS " + DOCS + " WHERE title LIKE $1")
        for n in range(1, 11):
            query(conn, "BEGIN")
            rows = query(conn, "EXECUTE docs_titled (%s)", ("%",))
            query(conn, "COMMIT")
            own_rows_only(1, rows, f"EXECUTE in transaction {n}")
            expect_eq({r[1] for r in rows}, TITLES[1], f"titles of EXECUTE in transaction {n}")
            if n % 2:
                query(other, "SELECT 1")  # psycopg2 sends BEGIN first
            else:
                other.rollback()
        query(conn, "DEALLOCATE docs_titled")
    finally:
        other.close()
        conn.close()


def commit(conn, other2):
    title = f"psycopg2 commit {MODE}"
    count = "SELECT count(*) FROM documents WHERE title = %s"
    query(conn, "BEGIN")
    query(conn, "INSERT INTO documents (tenant_id, title) VALUES (1, %s)", (title,))
    query(conn, "COMMIT")
    try:
        other1 = connect(1)  # another session of tenant 1 sees the committed row
        try:
            expect_eq(query(other1, count, (title,))[0][0], 1, "committed row seen by tenant 1's other session")
        finally:
            other1.close()
        expect_eq(query(other2, count, (title,))[0][0], 0, "committed row seen by tenant 2")
    finally:
        query(conn, "DELETE FROM documents WHERE title = %s", (title,))


def rollback(conn):
    title = f"psycopg2 rollback {MODE}"
    count = "SELECT count(*) FROM documents WHERE title = %s"
    query(conn, "BEGIN")
    query(conn, "INSERT INTO documents (tenant_id, title) VALUES (1, %s)", (title,))
    expect_eq(query(conn, count, (title,))[0][0], 1, "row inside the transaction")
    query(conn, "ROLLBACK")
    expect_eq(query(conn, count, (title,))[0][0], 0, "row after ROLLBACK")


def copy_in(conn):
    data = "".join(f"{i}\t{title}\n" for i, title in COPY_ROWS)
    query(conn, "BEGIN")
    try:
        query(conn, "CREATE TEMP TABLE copy_t (id integer, title text) ON COMMIT DROP")
        with conn.cursor() as cur:
            cur.copy_expert("COPY copy_t (id, title) FROM STDIN", io.StringIO(data))
        expect_eq(query(conn, "SELECT id, title FROM copy_t ORDER BY id"), COPY_ROWS, "copied rows")
    finally:
        query(conn, "COMMIT")


def copy_out(conn):
    buf = io.StringIO()
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY ({DOCS} ORDER BY id) TO STDOUT", buf)
    rows = [(int(t), title) for t, title in (line.split("\t") for line in buf.getvalue().splitlines())]
    own_rows_only(1, rows, "COPY TO")
    expect_eq(len(rows), 3, "rows copied out")


def reset():
    # connection.reset() sends DISCARD ALL: the session state goes, the tenant's context stays.
    conn = connect(1)
    try:
        query(conn, "SET statement_timeout = '5s'")  # session state: pins in transaction pooling
        query(conn, "PREPARE reset_probe AS SELECT 1")
        conn.reset()
        expect_eq(query(conn, "SHOW statement_timeout"), [("0",)], "statement_timeout after reset()")
        expect_eq(query(conn, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'reset_probe'"), [(0,)],
                  "SQL prepared statement after reset()")
        row = query(conn, "SELECT current_setting('app.current_tenant'), count(*) FROM documents")[0]
        expect_eq(row, ("1", 3), "(app.current_tenant, visible documents) after reset()")
    finally:
        conn.close()


def isolation(conns):
    for tenant, conn in conns.items():
        rows = query(conn, DOCS)
        own_rows_only(tenant, rows, "documents")
        expect_eq({r[1] for r in rows}, TITLES[tenant], f"tenant {tenant} titles")
        expect_eq(query(conn, "SELECT id FROM tenants"), [(tenant,)], f"tenant {tenant} tenants rows")
    try:
        query(conns[1], "INSERT INTO documents (tenant_id, title) VALUES (2, 'forged by tenant 1')")
    except psycopg2.errors.InsufficientPrivilege:
        pass
    else:
        raise AssertionError("tenant 1 inserted a row for tenant 2")


def concurrent():
    def work(i, tenant):
        conn = connect(tenant, autocommit=False)
        try:
            for n in range(TXNS):
                if n % 2:
                    query(conn, "INSERT INTO documents (tenant_id, title) VALUES (%s, %s)", (tenant, f"w{i}"))
                rows = query(conn, DOCS)
                if n % 2:
                    conn.rollback()
                else:
                    conn.commit()
                own_rows_only(tenant, rows, f"worker {i} txn {n}")
        finally:
            conn.close()

    run_workers(work)


def main():
    checks = Checks("psycopg2")
    conns = {}
    checks.run("connect", lambda: conns.update({t: connect(t) for t in (1, 2)}))
    if len(conns) < 2:
        checks.exit()
    c1 = conns[1]
    checks.run("simple_query", simple_query, c1)
    checks.run("parameterized", parameterized, c1)
    checks.run("prepared", prepared)
    checks.run("commit", commit, c1, conns[2])
    checks.run("rollback", rollback, c1)
    checks.run("copy_in", copy_in, c1)
    checks.run("copy_out", copy_out, c1)
    checks.run("reset", reset)
    checks.run("isolation", isolation, conns)
    checks.run("concurrent", concurrent)
    for conn in conns.values():
        conn.close()
    checks.exit()


if __name__ == "__main__":
    main()
