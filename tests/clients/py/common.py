"""Shared by the Python client checks of tests/clients/run.sh.

Reads the environment run.sh sets (proxy address, one token per tenant, pool
mode), knows the rows each tenant must see (migrations/0002 seed data) and
prints one result line per check: `PASS <mode> <driver> <check>`,
`FAIL <mode> <driver> <check>: <reason>` or `SKIP <mode> <driver> <check>: <reason>`.
"""

import os
import sys
import threading
import traceback

MODE = os.environ.get("RLS_MODE", "session")
HOST = os.environ.get("PROXY_HOST", "127.0.0.1")
PORT = int(os.environ.get("PROXY_PORT", "6432"))
DB = os.environ.get("PROXY_DB", "app")
TOKENS = {1: os.environ.get("TOKEN_T1", ""), 2: os.environ.get("TOKEN_T2", "")}
USERS = {1: "alice", 2: "bob"}  # only logged by the proxy: the tenant comes from the token
WORKERS = int(os.environ.get("CLIENT_WORKERS", "4"))
TXNS = int(os.environ.get("CLIENT_TXNS", "100"))  # per worker

# Seed titles (migrations/0002_example_data.sql) each tenant must see, exactly.
TITLES = {
    1: {"acme roadmap", "acme payroll", "acme onboarding"},
    2: {"globex merger plan", "globex handbook"},
}


def conninfo(tenant, **extra):
    """libpq conninfo for psycopg 3 / psycopg2: the token is the password."""
    parts = {
        "host": HOST,
        "port": PORT,
        "dbname": DB,
        "user": USERS[tenant],
        "password": TOKENS[tenant],
        "sslmode": "disable",
        "connect_timeout": 10,
        "application_name": "rlsproxy-client-matrix",
    }
    parts.update(extra)
    return " ".join(f"{k}='{v}'" for k, v in parts.items())


class Checks:
    """Runs checks and prints their result lines; `failed` counts FAILs."""

    def __init__(self, driver):
        self.driver = driver
        self.failed = 0

    def _line(self, word, check, reason=None):
        text = f"{word} {MODE} {self.driver} {check}"
        if reason is not None:
            text += ": " + " ".join(str(reason).split())[:400]
        print(text, flush=True)

    def _fail(self, check, exc):
        self.failed += 1
        reason = f"{type(exc).__name__}: {exc}"
        self._line("FAIL", check, reason)
        if os.environ.get("CLIENT_VERBOSE"):
            traceback.print_exc(file=sys.stderr)

    def run(self, check, fn, *args):
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - every failure is a result line
            self._fail(check, exc)
        else:
            self._line("PASS", check)

    async def arun(self, check, fn, *args):
        try:
            await fn(*args)
        except Exception as exc:  # noqa: BLE001
            self._fail(check, exc)
        else:
            self._line("PASS", check)

    def skip(self, check, reason):
        self._line("SKIP", check, reason)

    def exit(self):
        sys.exit(1 if self.failed else 0)


def expect(cond, message):
    if not cond:
        raise AssertionError(message)


def expect_eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def own_rows_only(tenant, rows, what, titles=TITLES):
    """rows: (tenant_id, title) pairs: every one is the tenant's own, none of its titles is missing."""
    foreign = [r for r in rows if r[0] != tenant]
    if foreign:
        raise AssertionError(f"{what}: tenant {tenant} saw foreign rows {foreign[:3]!r}")
    missing = titles[tenant] - {r[1] for r in rows}
    if missing:
        raise AssertionError(f"{what}: tenant {tenant} misses its rows {sorted(missing)!r}")


def worker_plan():
    """(worker index, tenant) pairs: workers alternate tenants 1, 2, 1, 2, ..."""
    return [(i, 1 + i % 2) for i in range(WORKERS)]


def run_workers(work):
    """Runs work(i, tenant) in one thread per worker_plan() pair, all at once; fails
    naming the first three workers that raised."""
    errors = []

    def guarded(i, tenant):
        try:
            work(i, tenant)
        except Exception as exc:  # noqa: BLE001 - reported below, per worker
            errors.append(f"worker {i} (tenant {tenant}): {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=guarded, args=p) for p in worker_plan()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expect(not errors, "; ".join(errors[:3]))


# Rows COPYed into a temp table and back; non-ASCII to exercise client_encoding.
COPY_ROWS = [(i, f"row {i} ünïcødé") for i in range(1, 101)]
