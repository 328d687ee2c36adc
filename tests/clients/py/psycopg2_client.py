"""psycopg2 through rlsproxy (simple protocol only: parameters are bound client-side).

Checks: simple query, parameterized query, SQL-level PREPARE/EXECUTE reused 10
times (not in transaction mode: psycopg2 has no protocol-level prepared statements;
SQL PREPARE is session state that transaction pooling does not keep), BEGIN/COMMIT
and ROLLBACK, COPY in/out with copy_expert (temp table dropped at commit), tenant
isolation with two tokens, and concurrent workers of both tenants (threads,
autocommit off: psycopg2 sends BEGIN itself).
"""

import io
import threading

import psycopg2
import psycopg2.errors
from common import COPY_ROWS, MODE, TITLES, TXNS, Checks, conninfo, expect, expect_eq, own_rows_only, worker_plan

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


def prepared(conn):
    query(conn, "PREPARE doc_by_id (integer) AS " + DOCS + " WHERE id = $1")
    try:
        rows = []
        for doc_id in range(1, 11):
            rows += query(conn, "EXECUTE doc_by_id (%s)", (doc_id,))
    finally:
        query(conn, "DEALLOCATE doc_by_id")
    own_rows_only(1, rows, "prepared statement")
    expect_eq({r[1] for r in rows}, TITLES[1], "titles by id 1..10")


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
    errors = []

    def work(i, tenant):
        try:
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
        except Exception as exc:  # noqa: BLE001
            errors.append(f"worker {i} (tenant {tenant}): {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=p) for p in worker_plan()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expect(not errors, "; ".join(errors[:3]))


def main():
    checks = Checks("psycopg2")
    conns = {}
    checks.run("connect", lambda: conns.update({t: connect(t) for t in (1, 2)}))
    if len(conns) < 2:
        checks.exit()
    c1 = conns[1]
    checks.run("simple_query", simple_query, c1)
    checks.run("parameterized", parameterized, c1)
    if MODE != "transaction":
        checks.run("prepared", prepared, c1)
    else:
        checks.skip("prepared", "psycopg2 has no protocol-level prepare; SQL PREPARE is session state, "
                    "not carried across transactions in transaction pooling")
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
