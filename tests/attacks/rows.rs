//! Attempts on tenant 2's rows directly, which row-level security must stop whatever the
//! guard says: reads, writes, upserts, side channels (error messages, statistics, COPY),
//! objects layered over the table, its policies, and the strict-mode keys.

use crate::Attempt;
use crate::Expect::{Allowed, Server};

/// The attempts of this file.
pub const ATTEMPTS: &[Attempt] = &[
    Attempt::alone("read tenant 2's rows by tenant", &["SELECT title, body FROM {docs} WHERE tenant_id = 2"], Allowed),
    Attempt::alone("read tenant 2's rows by id", &["SELECT title, body FROM {docs} WHERE id IN (4, 5)"], Allowed),
    Attempt::alone(
        "read the other tables",
        &["SELECT t.name, u.name FROM tenants t FULL JOIN users u ON u.tenant_id = t.id"],
        Allowed,
    ),
    Attempt::alone("UPDATE tenant 2's rows", &["UPDATE {docs} SET title = 'pwned' WHERE tenant_id = 2"], Allowed),
    Attempt::alone("DELETE tenant 2's rows", &["DELETE FROM {docs} WHERE id IN (4, 5) RETURNING title"], Allowed),
    Attempt::alone(
        "INSERT a row for tenant 2",
        &["INSERT INTO {docs} (id, tenant_id, title) VALUES (90, 2, 'planted')"],
        Server,
    ),
    Attempt::alone("move an own row to tenant 2", &["UPDATE {docs} SET tenant_id = 2 WHERE id = 1"], Server),
    Attempt::alone(
        "upsert over tenant 2's row",
        &["INSERT INTO {docs} (id, tenant_id, title) VALUES (4, 1, 'mine now') \
           ON CONFLICT (id) DO UPDATE SET tenant_id = 1, title = 'mine now' RETURNING title, body"],
        Server,
    ),
    Attempt::alone(
        "MERGE into tenant 2's rows",
        &["MERGE INTO {docs} d USING (VALUES (4), (5)) AS s(id) ON d.id = s.id \
           WHEN MATCHED THEN UPDATE SET title = 'merged' WHEN NOT MATCHED THEN DO NOTHING"],
        Allowed,
    ),
    Attempt::alone(
        "data-modifying CTE",
        &["WITH gone AS (DELETE FROM {docs} WHERE tenant_id = 2 RETURNING title) SELECT * FROM gone"],
        Allowed,
    ),
    Attempt::alone("TRUNCATE the table", &["TRUNCATE {docs}"], Server),
    Attempt::alone(
        "disable or unforce row-level security",
        &["ALTER TABLE {docs} DISABLE ROW LEVEL SECURITY", "ALTER TABLE {docs} NO FORCE ROW LEVEL SECURITY"],
        Server,
    ),
    Attempt::alone("DROP POLICY", &["DROP POLICY tenant_isolation ON {docs}"], Server),
    Attempt::alone(
        "CREATE POLICY letting everything through",
        &["CREATE POLICY attack_all ON {docs} USING (true)"],
        Server,
    ),
    Attempt::block("row_security off", &["SET LOCAL row_security = off", "SELECT title, body FROM {docs}"], Server),
    Attempt::alone(
        "error message of a cast in WHERE",
        &["SELECT title FROM {docs} WHERE (title || ' ' || coalesce(body, ''))::integer > 0"],
        Server,
    ),
    Attempt::alone(
        "error message of a cast on tenant 2's rows only",
        &["SELECT 1 FROM {docs} WHERE CASE WHEN tenant_id = 2 THEN title::integer ELSE 1 END = 1"],
        Allowed,
    ),
    Attempt::alone(
        "pg_stats of the table",
        &["SELECT attname, most_common_vals::text, histogram_bounds::text FROM pg_stats \
           WHERE tablename IN ('{docs}', 'users', 'tenants')"],
        Allowed,
    ),
    Attempt::alone("COPY the table TO STDOUT", &["COPY {docs} TO STDOUT"], Allowed),
    Attempt::alone("COPY FROM STDIN into the table", &["COPY {docs} (id, tenant_id, title) FROM STDIN"], Server),
    Attempt::block(
        "temp view over the table",
        &["CREATE TEMP VIEW attack_v AS SELECT title, body FROM {docs}", "SELECT * FROM attack_v"],
        Allowed,
    ),
    Attempt::block(
        "temp table inheriting from the table",
        &["CREATE TEMP TABLE attack_child () INHERITS ({docs})"],
        Server,
    ),
    Attempt::alone(
        "WITH HOLD cursor fetched in a later transaction",
        &["DECLARE attack_h CURSOR WITH HOLD FOR SELECT title, body FROM {docs}", "FETCH ALL FROM attack_h"],
        Allowed,
    ),
    Attempt::alone(
        "SQL PREPARE, EXECUTE in a later transaction",
        &["PREPARE attack_q AS SELECT title, body FROM {docs}", "EXECUTE attack_q"],
        Allowed,
    ),
    Attempt::alone("DEALLOCATE ALL, then the probe", &["DEALLOCATE ALL"], Allowed),
    Attempt::alone("DEALLOCATE ALL and a read in one Query", &["DEALLOCATE ALL; SELECT title FROM {docs}"], Server),
    Attempt::alone("read the strict keys", &["SELECT kid, encode(secret, 'hex') FROM rlsproxy_private.keys"], Server),
    Attempt::alone("call enable_strict_policies", &["SELECT rlsproxy.enable_strict_policies('{docs}')"], Server),
    Attempt::alone(
        "read other sessions' prepared statements and cursors",
        &["SELECT name, statement FROM pg_prepared_statements", "SELECT name, statement FROM pg_cursors"],
        Allowed,
    ),
];
