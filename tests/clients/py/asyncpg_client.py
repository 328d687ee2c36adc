"""asyncpg through rlsproxy (extended protocol with named statements, binary formats).

Checks: simple query (conn.execute without arguments: simple protocol), a
parameterized query, conn.prepare() reused 10 times, BEGIN/COMMIT and ROLLBACK
(conn.transaction()), COPY in (copy_records_to_table: binary COPY into a temp
table dropped at commit), COPY out (copy_from_query), executemany failing at its
second row (pipelined with large parameters), tenant isolation with two
tokens, and concurrent workers of both tenants (asyncio tasks sharing one
asyncpg.Pool per tenant; asyncpg caches a named prepared statement per query
text, so statements are reused across transactions and connections are reset on
release).
"""

import asyncio
import io

import asyncpg
from common import (COPY_ROWS, DB, HOST, MODE, PORT, TITLES, TOKENS, TXNS, USERS, WORKERS, Checks, expect, expect_eq,
                    own_rows_only, worker_plan)

DOCS = "SELECT tenant_id, title FROM documents"


def connect(tenant):
    return asyncpg.connect(host=HOST, port=PORT, user=USERS[tenant], password=TOKENS[tenant], database=DB,
                           ssl=False, timeout=10)


def pairs(records):
    return [tuple(r) for r in records]


async def simple_query(conn):
    # No arguments: one simple-protocol Query; the status tells how many rows were visible.
    expect_eq(await conn.execute("SELECT tenant_id FROM documents"), "SELECT 3", "command status")
    expect_eq(await conn.fetchval("SELECT current_setting('app.current_tenant')"), "1", "app.current_tenant")


async def parameterized(conn):
    sql = "SELECT title FROM documents WHERE title LIKE $1 ORDER BY id"
    expect_eq({r[0] for r in await conn.fetch(sql, "acme%")}, TITLES[1], "own titles")
    expect_eq(await conn.fetch(sql, "globex%"), [], "other tenant's titles")


async def prepared(conn):
    stmt = await conn.prepare(DOCS + " WHERE id = $1")
    rows = []
    for doc_id in range(1, 11):
        rows += pairs(await stmt.fetch(doc_id))
    own_rows_only(1, rows, "prepared statement")
    expect_eq({r[1] for r in rows}, TITLES[1], "titles by id 1..10")


async def commit(conn, other2):
    title = f"asyncpg commit {MODE}"
    count = "SELECT count(*) FROM documents WHERE title = $1"
    async with conn.transaction():
        await conn.execute("INSERT INTO documents (tenant_id, title) VALUES (1, $1)", title)
    try:
        other1 = await connect(1)  # another session of tenant 1 sees the committed row
        try:
            expect_eq(await other1.fetchval(count, title), 1, "committed row seen by tenant 1's other session")
        finally:
            await other1.close()
        expect_eq(await other2.fetchval(count, title), 0, "committed row seen by tenant 2")
    finally:
        await conn.execute("DELETE FROM documents WHERE title = $1", title)


async def rollback(conn):
    title = f"asyncpg rollback {MODE}"
    count = "SELECT count(*) FROM documents WHERE title = $1"
    tx = conn.transaction()
    await tx.start()
    await conn.execute("INSERT INTO documents (tenant_id, title) VALUES (1, $1)", title)
    expect_eq(await conn.fetchval(count, title), 1, "row inside the transaction")
    await tx.rollback()
    expect_eq(await conn.fetchval(count, title), 0, "row after ROLLBACK")


async def copy_in(conn):
    async with conn.transaction():
        await conn.execute("CREATE TEMP TABLE copy_t (id integer, title text) ON COMMIT DROP")
        status = await conn.copy_records_to_table("copy_t", records=COPY_ROWS, columns=["id", "title"])
        expect_eq(status, "COPY 100", "COPY status")
        expect_eq(pairs(await conn.fetch("SELECT id, title FROM copy_t ORDER BY id")), COPY_ROWS, "copied rows")


async def copy_out(conn):
    buf = io.BytesIO()
    await conn.copy_from_query(DOCS + " ORDER BY id", output=buf)
    lines = buf.getvalue().decode().splitlines()
    rows = [(int(t), title) for t, title in (line.split("\t") for line in lines)]
    own_rows_only(1, rows, "COPY TO")
    expect_eq(len(rows), 3, "rows copied out")


async def executemany_error(conn):
    # asyncpg pipelines Bind/Execute with flow control; on the server's error it stops
    # writing and sends Sync. Row 2 repeats row 1's key, so nothing is inserted.
    base = 7_300_000 + 1000 * ["direct", "session", "transaction"].index(MODE)
    body = "x" * 32768
    rows = [(base if i < 2 else base + i, body) for i in range(128)]
    sql = "INSERT INTO documents (id, tenant_id, title, body) VALUES ($1, 1, 'executemany', $2)"
    try:
        await conn.executemany(sql, rows)
    except asyncpg.UniqueViolationError as e:
        expect_eq(e.constraint_name, "documents_pkey", "violated constraint")
    else:
        raise AssertionError("executemany succeeded with a duplicate key")
    count = "SELECT count(*) FROM documents WHERE title = 'executemany'"
    expect_eq(await conn.fetchval(count), 0, "rows left by the failed executemany")
    expect_eq(await conn.fetchval("SELECT current_setting('app.current_tenant')"), "1", "app.current_tenant after")


async def isolation(conns):
    for tenant, conn in conns.items():
        rows = pairs(await conn.fetch(DOCS))
        own_rows_only(tenant, rows, "documents")
        expect_eq({r[1] for r in rows}, TITLES[tenant], f"tenant {tenant} titles")
        expect_eq(pairs(await conn.fetch("SELECT id FROM tenants")), [(tenant,)], f"tenant {tenant} tenants rows")
    try:
        await conns[1].execute("INSERT INTO documents (tenant_id, title) VALUES (2, 'forged by tenant 1')")
    except asyncpg.InsufficientPrivilegeError:
        pass
    else:
        raise AssertionError("tenant 1 inserted a row for tenant 2")


async def concurrent():
    # One asyncpg pool per tenant, half as many connections as workers: each
    # transaction acquires a connection, and release resets it (RESET ALL, CLOSE ALL, ...).
    pools = {t: await asyncpg.create_pool(host=HOST, port=PORT, user=USERS[t], password=TOKENS[t], database=DB,
                                          ssl=False, min_size=1, max_size=max(1, WORKERS // 2)) for t in (1, 2)}

    async def work(i, tenant):
        for n in range(TXNS):
            async with pools[tenant].acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                if n % 2:
                    await conn.execute("INSERT INTO documents (tenant_id, title) VALUES ($1, $2)", tenant, f"w{i}")
                rows = pairs(await conn.fetch(DOCS))
                await (tx.rollback() if n % 2 else tx.commit())
            own_rows_only(tenant, rows, f"worker {i} txn {n}")

    try:
        results = await asyncio.gather(*(work(i, t) for i, t in worker_plan()), return_exceptions=True)
    finally:
        for p in pools.values():
            await p.close()
    errors = [f"worker {i}: {type(r).__name__}: {r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    expect(not errors, "; ".join(errors[:3]))


async def main():
    checks = Checks("asyncpg")
    conns = {}

    async def connect_both():
        for t in (1, 2):
            conns[t] = await connect(t)

    await checks.arun("connect", connect_both)
    if len(conns) < 2:
        checks.exit()
    c1 = conns[1]
    await checks.arun("simple_query", simple_query, c1)
    await checks.arun("parameterized", parameterized, c1)
    await checks.arun("prepared", prepared, c1)
    await checks.arun("commit", commit, c1, conns[2])
    await checks.arun("rollback", rollback, c1)
    await checks.arun("copy_in", copy_in, c1)
    await checks.arun("copy_out", copy_out, c1)
    await checks.arun("executemany_error", executemany_error, c1)
    await checks.arun("isolation", isolation, conns)
    await checks.arun("concurrent", concurrent)
    for conn in conns.values():
        await conn.close()
    checks.exit()


if __name__ == "__main__":
    asyncio.run(main())
