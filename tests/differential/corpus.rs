//! The cases. Every case leaves its connection idle (`I`) and changes no shared data:
//! writes are rolled back or go to temp tables.

use super::recorder::Until;
use super::{Case, Oids, Step};
use crate::common::wire::Msgs;

pub fn case(name: &'static str, steps: Vec<Step>) -> Case {
    Case { name, steps, session_only: None }
}

/// `msgs` in one write, then read up to `readies` ReadyForQuery.
pub fn step(msgs: Msgs, readies: usize) -> Step {
    Step { msgs, until: Until::Readies(readies) }
}

/// `msgs` in one write, then read up to the first message tagged `tag`.
pub fn step_until(msgs: Msgs, tag: u8) -> Step {
    Step { msgs, until: Until::Tag(tag) }
}

/// One simple Query.
pub fn q(sql: &str) -> Step {
    step(Msgs::new().query(sql), 1)
}

/// One extended-protocol batch of the unnamed statement with text parameters.
pub fn x(sql: &str, values: &[&str]) -> Step {
    step(Msgs::new().run(sql, values), 1)
}

pub fn be32(v: i32) -> [u8; 4] {
    v.to_be_bytes()
}

const COPY_ROWS: &[u8] = b"1\tone\n2\ttwo\n3\t\\N\n";

// A temp table's OID is new in every session: its rows are read through expressions so that
// the RowDescription names no table (the table OID would differ between any two sessions).
const TEMP_ROWS_1: &str = "SELECT a + 0 AS a, b || '' AS b FROM diff_copy ORDER BY a";
const TEMP_ROWS_2: &str = "SELECT a + 0 AS a, b || '' AS b FROM diff_copy2 ORDER BY a";
const TEMP_ROWS_4: &str = "SELECT a + 0 AS a, b || '' AS b FROM diff_copy4 ORDER BY a";

/// The corpus.
pub fn cases(oids: &Oids) -> Vec<Case> {
    let mut cases = simple();
    cases.extend(transactions());
    cases.extend(extended());
    cases.extend(pipelines());
    cases.extend(copy());
    cases.extend(other(oids));
    cases.extend(super::edges::cases(oids));
    cases
}

fn simple() -> Vec<Case> {
    vec![
        case("simple/select", vec![q("SELECT 1 AS one, 'two'::text AS two, NULL::int4 AS three, 1.5::float8 AS f")]),
        case(
            "simple/multi-statement",
            vec![q("SELECT 1 AS a; SELECT 'x' AS b UNION ALL SELECT 'y'; VALUES (1, 2), (3, 4); SHOW DateStyle")],
        ),
        case("simple/empty-queries", vec![step(Msgs::new().query("").query(";").query("-- only a comment"), 3)]),
        case(
            "simple/error-mid-multi-statement",
            vec![q("SELECT 1 AS before; SELECT 1/0; SELECT 3 AS never"), q("SELECT 'after' AS after")],
        ),
        case(
            "simple/errors-with-position",
            vec![
                q("SELEC 1"),
                q("SELECT * FROM no_such_table"),
                q("SELECT id FROM documents WHERE id = 'abc'"),
                q("SELECT nosuchcol FROM documents"),
            ],
        ),
        case(
            "simple/commit-inside-multi-statement",
            vec![q("BEGIN; SELECT 1 AS a; COMMIT; SELECT 1/0; SELECT 2 AS b"), q("SELECT 'ok' AS ok")],
        ),
        case("simple/sync-and-flush-alone", vec![step(Msgs::new().sync(), 1), step(Msgs::new().flush().sync(), 1)]),
        case(
            "notice/drop-if-exists-and-do-blocks",
            vec![
                q("DROP TABLE IF EXISTS no_such_table_for_diff"),
                q("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$"),
                q("DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'some detail', HINT = 'some hint', \
                   ERRCODE = 'P0001'; END $$"),
                x("DROP TABLE IF EXISTS no_such_table_for_diff", &[]),
            ],
        ),
        case(
            "rls/documents-read",
            vec![
                q("SELECT id, tenant_id, title, body FROM documents ORDER BY id; SELECT id, name FROM tenants; \
                   SELECT count(*) FROM users"),
                step(
                    Msgs::new()
                        .parse("", "SELECT id, tenant_id, title FROM documents WHERE tenant_id = $1 ORDER BY id", &[23])
                        .bind("", "", &[1], &[Some(&be32(1))], &[1])
                        .describe(b'P', "")
                        .execute("", 0)
                        .sync(),
                    1,
                ),
            ],
        ),
        case(
            "settings/startup-values",
            vec![q("SELECT '2024-02-29 12:34:56+00'::timestamptz AS ts, '2024-02-29'::date AS d; SHOW TimeZone; \
                    SHOW DateStyle; SHOW application_name")],
        ),
        case(
            "settings/session-set",
            vec![
                q("SET search_path = pg_catalog, public"),
                q("SHOW search_path"),
                q("SET application_name = 'changed'"),
                q("SHOW application_name"),
            ],
        ),
        case(
            "settings/reset-startup-setting",
            vec![
                q("SET DateStyle = 'SQL, MDY'"),
                q("RESET DateStyle"),
                q("SHOW DateStyle"),
                q("RESET application_name"),
                q("SHOW application_name"),
            ],
        ),
    ]
}

fn transactions() -> Vec<Case> {
    vec![
        case(
            "tx/control-outside-a-block",
            vec![
                q("COMMIT"),
                q("ROLLBACK"),
                q("SET LOCAL application_name = 'local'"),
                q("LOCK TABLE documents"),
                q("SAVEPOINT s"),
            ],
        ),
        case(
            "tx/explicit-with-error",
            vec![
                q("BEGIN"),
                q("SELECT title FROM documents ORDER BY id"),
                q("SELECT 1/0"),
                q("SELECT 2"),
                q("ROLLBACK"),
                q("SELECT count(*) FROM documents"),
            ],
        ),
        case(
            "tx/savepoints",
            vec![
                q("BEGIN"),
                q("SAVEPOINT a"),
                q("SELECT 1/0"),
                q("ROLLBACK TO SAVEPOINT a"),
                q("SELECT 2 AS two"),
                q("RELEASE a"),
                q("COMMIT"),
            ],
        ),
        case(
            "tx/set-local-and-show",
            vec![
                q("BEGIN"),
                q("SET LOCAL application_name = 'inner'"),
                q("SHOW application_name"),
                q("SET LOCAL statement_timeout = '5s'; SHOW statement_timeout"),
                q("SHOW app.current_tenant"),
                q("COMMIT"),
                q("SHOW application_name"),
            ],
        ),
        case(
            "tx/set-transaction-after-begin",
            vec![
                q("BEGIN"),
                q("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
                q("SHOW transaction_isolation"),
                q("COMMIT"),
            ],
        ),
        case(
            "tx/set-transaction-after-begin-extended",
            vec![
                step(
                    Msgs::new()
                        .parse("", "BEGIN", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .parse("", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .parse("", "SHOW transaction_isolation", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .sync(),
                    1,
                ),
                q("COMMIT"),
            ],
        ),
        case(
            "tx/begin-isolation-level",
            vec![
                q("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"),
                q("SHOW transaction_isolation; SHOW transaction_read_only"),
                q("SELECT count(*) FROM documents"),
                q("COMMIT"),
            ],
        ),
        case(
            "rls/writes-rolled-back",
            vec![
                q("BEGIN"),
                q("INSERT INTO documents (tenant_id, title) VALUES (1, 'diff doc') RETURNING tenant_id, title, body"),
                q("UPDATE documents SET body = 'changed' WHERE title = 'acme roadmap'"),
                q("SELECT title, body FROM documents WHERE body = 'changed'"),
                q("INSERT INTO documents (tenant_id, title) VALUES (2, 'foreign')"),
                q("ROLLBACK"),
            ],
        ),
    ]
}

fn extended() -> Vec<Case> {
    vec![
        case(
            "extended/unnamed-text",
            vec![step(
                Msgs::new()
                    .parse("", "SELECT $1::int4 + 1 AS n, $2::text AS t, $3::text IS NULL AS isnull", &[23, 25, 25])
                    .bind("", "", &[], &[Some(b"41"), Some("héllo".as_bytes()), None], &[])
                    .describe(b'P', "")
                    .execute("", 0)
                    .sync(),
                1,
            )],
        ),
        case(
            "extended/binary-params-and-results",
            vec![
                step(
                    Msgs::new()
                        .parse(
                            "",
                            "SELECT $1::int4 * 2 AS i4, $2::int8 + 1 AS i8, $3::text AS t, $4::bytea AS b",
                            &[23, 20, 25, 17],
                        )
                        .bind(
                            "",
                            "",
                            &[1],
                            &[Some(&be32(21)), Some(&41i64.to_be_bytes()), Some(b"bin"), Some(&[0, 1, 255])],
                            &[1],
                        )
                        .execute("", 0)
                        .sync(),
                    1,
                ),
                // Per-parameter and per-column formats.
                step(
                    Msgs::new()
                        .parse("", "SELECT $1::int4 AS a, $2::int4 AS b", &[0, 0])
                        .bind("", "", &[0, 1], &[Some(b"7"), Some(&be32(8))], &[1, 0])
                        .execute("", 0)
                        .sync(),
                    1,
                ),
            ],
        ),
        case(
            "extended/binary-numeric-timestamp-array",
            vec![
                step(
                    Msgs::new()
                        .parse(
                            "",
                            "SELECT 12345.678::numeric AS n, 'NaN'::numeric AS nan, -0.00012::numeric AS small, \
                             '2024-02-29 12:34:56.789+01'::timestamptz AS tz, \
                             '2024-02-29 12:34:56.789'::timestamp AS ts, '2024-02-29'::date AS d, \
                             interval '1 year 2 days 03:04:05.5' AS iv, ARRAY[1, NULL, 3]::int4[] AS ia, \
                             '{{1,2},{3,4}}'::int8[] AS m, ARRAY['a', NULL, 'b c']::text[] AS ta, \
                             '{\"a\": [1, 2]}'::jsonb AS jb, '11111111-2222-3333-4444-555555555555'::uuid AS u",
                            &[],
                        )
                        .bind("", "", &[], &[], &[1])
                        .describe(b'P', "")
                        .execute("", 0)
                        .sync(),
                    1,
                ),
                q("SELECT '2024-02-29 12:34:56.789+01'::timestamptz AS tz, ARRAY[1.5, NULL]::numeric[] AS na, \
                   interval '1 year 2 days 03:04:05.5' AS iv"),
            ],
        ),
        case(
            "extended/bad-params",
            vec![
                step(
                    Msgs::new()
                        .parse("", "SELECT $1::int4", &[23])
                        .bind("", "", &[1], &[Some(&[0, 1])], &[])
                        .execute("", 0)
                        .sync(),
                    1,
                ),
                x("SELECT $1::int4", &["abc"]),
                x("SELECT $1::int4", &[]),
            ],
        ),
        case(
            "extended/named-statement-reuse",
            vec![
                step(Msgs::new().parse("s1", "SELECT $1::int4 * 2 AS doubled", &[23]).sync(), 1),
                step(Msgs::new().bind_text("", "s1", &["1"]).execute("", 0).sync(), 1),
                step(Msgs::new().bind_text("", "s1", &["2"]).execute("", 0).sync(), 1),
                step(
                    Msgs::new()
                        .bind_text("", "s1", &["3"])
                        .execute("", 0)
                        .sync()
                        .bind_text("", "s1", &["4"])
                        .execute("", 0)
                        .sync(),
                    2,
                ),
                step(Msgs::new().close(b'S', "s1").sync(), 1),
                step(Msgs::new().bind_text("", "s1", &["5"]).execute("", 0).sync(), 1),
                step(Msgs::new().parse("s1", "SELECT $1::text || '!' AS again", &[25]).sync(), 1),
                step(Msgs::new().bind_text("", "s1", &["re-prepared"]).execute("", 0).sync(), 1),
            ],
        ),
        case(
            "extended/describe-statement-and-portal",
            vec![
                step(
                    Msgs::new()
                        .parse("s2", "SELECT id, title FROM documents WHERE tenant_id = $1 ORDER BY id", &[0])
                        .describe(b'S', "s2")
                        .bind_text("p2", "s2", &["1"])
                        .describe(b'P', "p2")
                        .execute("p2", 0)
                        .sync(),
                    1,
                ),
                step(
                    Msgs::new()
                        .parse("s3", "DELETE FROM documents WHERE false", &[])
                        .describe(b'S', "s3")
                        .bind_text("", "s3", &[])
                        .describe(b'P', "")
                        .execute("", 0)
                        .sync(),
                    1,
                ),
                step(Msgs::new().describe(b'S', "s2").sync(), 1),
            ],
        ),
        case(
            "extended/flush-without-sync",
            vec![
                step_until(
                    Msgs::new().parse("s4", "SELECT $1::text AS echo", &[25]).describe(b'S', "s4").flush(),
                    b'T',
                ),
                step(Msgs::new().bind_text("", "s4", &["flushed"]).execute("", 0).sync(), 1),
                step_until(Msgs::new().flush().parse("", "SELECT 7 AS seven", &[]).flush(), b'1'),
                step_until(Msgs::new().bind_text("", "", &[]).execute("", 0).flush(), b'C'),
                step(Msgs::new().sync(), 1),
            ],
        ),
        case(
            "extended/portal-row-limit",
            vec![step(
                Msgs::new()
                    .parse("", "SELECT g FROM generate_series(1, 5) g", &[])
                    .bind_text("", "", &[])
                    .execute("", 2)
                    .execute("", 2)
                    .execute("", 2)
                    .sync(),
                1,
            )],
        ),
        case(
            "extended/portal-row-limit-across-syncs",
            vec![
                q("BEGIN"),
                step(
                    Msgs::new()
                        .parse("", "SELECT g, repeat('x', g) FROM generate_series(1, 7) g", &[])
                        .bind_text("cur", "", &[])
                        .execute("cur", 3)
                        .sync(),
                    1,
                ),
                step(Msgs::new().execute("cur", 3).sync(), 1),
                step(Msgs::new().execute("cur", 0).sync(), 1),
                step(Msgs::new().close(b'P', "cur").sync(), 1),
                step(Msgs::new().execute("cur", 1).sync(), 1),
                q("ROLLBACK"),
            ],
        ),
        case(
            "statements/unnamed-across-syncs",
            vec![
                step(Msgs::new().parse("", "SELECT 42 AS answer", &[]).sync(), 1),
                step(Msgs::new().bind_text("", "", &[]).execute("", 0).sync(), 1),
                step(Msgs::new().describe(b'S', "").sync(), 1),
                // A simple Query drops the unnamed statement.
                q("SELECT 1 AS one"),
                step(Msgs::new().bind_text("", "", &[]).execute("", 0).sync(), 1),
            ],
        ),
        case(
            "statements/duplicate-name",
            vec![
                step(Msgs::new().parse("d1", "SELECT 1 AS first", &[]).sync(), 1),
                step(Msgs::new().parse("d1", "SELECT 2 AS second", &[]).sync(), 1),
                step(Msgs::new().bind_text("", "d1", &[]).execute("", 0).sync(), 1),
            ],
        ),
        case(
            "statements/missing-objects",
            vec![step(
                Msgs::new()
                    .close(b'S', "nope")
                    .close(b'P', "nope")
                    .sync()
                    .describe(b'S', "nope")
                    .sync()
                    .describe(b'P', "nope")
                    .sync()
                    .execute("nope", 0)
                    .sync()
                    .bind_text("", "nope", &[])
                    .sync(),
                5,
            )],
        ),
        // SQL DEALLOCATE of a protocol-level statement (what pgx, PDO and ActiveRecord send
        // when their statement caches evict): in transaction pooling the proxy answers it.
        case(
            "statements/deallocate-protocol-statement",
            vec![
                step(Msgs::new().parse("dp1", "SELECT $1::int4 + 1 AS n", &[23]).sync(), 1),
                step(Msgs::new().bind_text("", "dp1", &["1"]).execute("", 0).sync(), 1),
                q("DEALLOCATE dp1"),
                step(Msgs::new().bind_text("", "dp1", &["1"]).execute("", 0).sync(), 1),
                q("BEGIN"),
                step(Msgs::new().parse("Dp2", "SELECT 2 AS n", &[]).sync(), 1),
                q("DEALLOCATE PREPARE \"Dp2\""),
                q("SELECT 3 AS n"),
                step(Msgs::new().bind_text("", "Dp2", &[]).execute("", 0).sync(), 1),
                q("COMMIT"),
                step(Msgs::new().parse("dp3", "SELECT 4 AS n", &[]).sync(), 1),
                q("BEGIN"),
                q("SELECT 1/0"),
                q("DEALLOCATE dp3"),
                q("ROLLBACK"),
                step(Msgs::new().bind_text("", "dp3", &[]).execute("", 0).sync(), 1),
                q("DEALLOCATE dp3"),
                q("DEALLOCATE dp3"),
            ],
        ),
        Case {
            // docs/transaction-pooling.md, "Known differences": protocol-level statements live under proxy
            // names on the server, so SQL EXECUTE cannot see them (as in PgBouncer).
            session_only: Some("SQL cannot name protocol-level statements in transaction pooling"),
            ..case(
                "statements/protocol-statement-from-sql",
                vec![
                    step(Msgs::new().parse("ps", "SELECT $1::int4 + 10 AS n", &[23]).sync(), 1),
                    q("EXECUTE ps(5)"),
                    q("DEALLOCATE ps"),
                    step(Msgs::new().bind_text("", "ps", &["1"]).execute("", 0).sync(), 1),
                ],
            )
        },
        case(
            "statements/sql-prepare-from-protocol",
            vec![
                q("PREPARE sp(int4) AS SELECT $1 * 3 AS tripled"),
                step(Msgs::new().bind_text("", "sp", &["7"]).describe(b'P', "").execute("", 0).sync(), 1),
                step(Msgs::new().describe(b'S', "sp").sync(), 1),
                q("DEALLOCATE sp"),
            ],
        ),
    ]
}

fn pipelines() -> Vec<Case> {
    vec![
        case(
            "pipeline/bad-bind-then-good-batch",
            vec![step(
                Msgs::new()
                    .parse("", "SELECT $1::int4 AS n", &[23])
                    .bind_text("", "", &["1", "2"])
                    .execute("", 0)
                    .sync()
                    .run("SELECT 'good' AS g", &[]),
                2,
            )],
        ),
        case(
            "pipeline/syntax-error-in-second-of-three",
            vec![step(Msgs::new().run("SELECT 1 AS first", &[]).run("SELEC 2", &[]).run("SELECT 3 AS third", &[]), 3)],
        ),
        case(
            "pipeline/error-at-execute",
            vec![step(
                Msgs::new()
                    .parse("s5", "SELECT 10 / $1::int4 AS q", &[23])
                    .bind_text("", "s5", &["0"])
                    .execute("", 0)
                    .bind_text("", "s5", &["5"])
                    .execute("", 0)
                    .sync()
                    .bind_text("", "s5", &["2"])
                    .execute("", 0)
                    .sync(),
                2,
            )],
        ),
        case(
            "pipeline/named-statements-several-syncs",
            vec![step(
                Msgs::new()
                    .parse("a", "SELECT $1::int4 + 1 AS plus", &[23])
                    .sync()
                    .bind_text("", "a", &["1"])
                    .execute("", 0)
                    .sync()
                    .parse("b", "SELECT $1::text AS t", &[25])
                    .bind_text("", "b", &["x"])
                    .execute("", 0)
                    .sync()
                    .bind_text("", "a", &["41"])
                    .execute("", 0)
                    .close(b'S', "b")
                    .sync()
                    .bind_text("", "b", &["gone"])
                    .execute("", 0)
                    .sync(),
                5,
            )],
        ),
        case(
            "pipeline/parse-skipped-after-error",
            vec![
                step(
                    Msgs::new()
                        .parse("", "SELECT 1/0", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .parse("skipped", "SELECT 1", &[])
                        .sync(),
                    1,
                ),
                step(Msgs::new().bind_text("", "skipped", &[]).execute("", 0).sync(), 1),
            ],
        ),
        case(
            "pipeline/extended-then-query-without-sync",
            vec![step(
                Msgs::new()
                    .parse("", "SELECT 1 AS ext", &[])
                    .bind_text("", "", &[])
                    .execute("", 0)
                    .query("SELECT 2 AS q"),
                1,
            )],
        ),
        case(
            "pipeline/in-explicit-transaction",
            vec![step(
                Msgs::new()
                    .run("BEGIN", &[])
                    .run("SELECT count(*) FROM documents", &[])
                    .run("SELECT 1/0", &[])
                    .run("SELECT 'skipped in failed block'", &[])
                    .run("ROLLBACK", &[])
                    .run("SELECT 'after' AS after", &[]),
                6,
            )],
        ),
    ]
}

fn copy() -> Vec<Case> {
    vec![
        case(
            "copy/out-simple",
            vec![
                q("COPY (SELECT g, 'row ' || g, g % 3 = 0 FROM generate_series(1, 1000) g) TO STDOUT"),
                q("COPY (SELECT id, title FROM documents ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"),
                q("COPY (SELECT g::int8, g::text FROM generate_series(1, 50) g) TO STDOUT WITH (FORMAT binary)"),
            ],
        ),
        case(
            "copy/in-simple-temp-table",
            vec![
                q("CREATE TEMP TABLE diff_copy (a int4, b text)"),
                step_until(Msgs::new().query("COPY diff_copy FROM STDIN"), b'G'),
                step(Msgs::new().copy_data(COPY_ROWS).copy_data(b"4\tfour\n").copy_done(), 1),
                q(TEMP_ROWS_1),
                step_until(Msgs::new().query("COPY diff_copy FROM STDIN"), b'G'),
                step(Msgs::new().copy_data(b"5\tfive\nx\tbad\n").copy_done(), 1),
                step_until(Msgs::new().query("COPY diff_copy (a) FROM STDIN"), b'G'),
                step(Msgs::new().copy_data(b"6\n").copy_fail("the client gave up"), 1),
                q("SELECT count(*) FROM diff_copy"),
            ],
        ),
        case(
            "copy/in-pipelined-in-transaction",
            vec![
                q("BEGIN; CREATE TEMP TABLE diff_copy2 (a int4, b text) ON COMMIT DROP"),
                step(
                    Msgs::new().query("COPY diff_copy2 FROM STDIN").copy_data(COPY_ROWS).copy_done().query(TEMP_ROWS_2),
                    2,
                ),
                q("COMMIT"),
            ],
        ),
        case(
            "copy/extended-out",
            vec![
                x("COPY (SELECT g FROM generate_series(1, 10) g) TO STDOUT", &[]),
                x("COPY (SELECT title FROM documents ORDER BY id) TO STDOUT WITH (FORMAT csv)", &[]),
            ],
        ),
        case(
            "copy/extended-in",
            vec![
                q("BEGIN"),
                q("CREATE TEMP TABLE diff_copy3 (a int4) ON COMMIT DROP"),
                // libpq/tokio-postgres style: the first Sync reaches the server in COPY IN, which ignores it.
                step(
                    Msgs::new()
                        .parse("", "COPY diff_copy3 FROM STDIN", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .sync()
                        .copy_data(b"1\n2\n")
                        .copy_done()
                        .sync(),
                    1,
                ),
                step_until(
                    Msgs::new()
                        .parse("", "COPY diff_copy3 FROM STDIN", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .sync(),
                    b'G',
                ),
                step(Msgs::new().copy_data(b"30\n").copy_done().sync(), 1),
                q("SELECT sum(a) FROM diff_copy3"),
                step(
                    Msgs::new()
                        .parse("", "COPY diff_copy3 FROM STDIN", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .sync()
                        .copy_data(b"4\n")
                        .copy_fail("extended copy abandoned")
                        .sync(),
                    1,
                ),
                q("ROLLBACK"),
            ],
        ),
        case(
            "copy/extended-in-temp-table-pinned",
            vec![
                q("CREATE TEMP TABLE diff_copy4 (a int4, b text)"),
                step_until(
                    Msgs::new()
                        .parse("", "COPY diff_copy4 FROM STDIN", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .flush(),
                    b'G',
                ),
                step(Msgs::new().copy_data(COPY_ROWS).copy_done().sync(), 1),
                x(TEMP_ROWS_4, &[]),
            ],
        ),
    ]
}

fn other(oids: &Oids) -> Vec<Case> {
    let one_mib = "m".repeat(1 << 20);
    vec![
        case(
            "function-call/fast-path",
            vec![
                step(Msgs::new().function_call(oids.upper, &[0], &[Some(b"hello")], 0), 1),
                step(Msgs::new().function_call(oids.upper, &[1], &[Some(b"binary")], 1), 1),
                step(Msgs::new().function_call(oids.upper, &[], &[None], 0), 1),
                step(Msgs::new().function_call(oids.int4div, &[1], &[Some(&be32(7)), Some(&be32(0))], 1), 1),
                step(Msgs::new().function_call(oids.int4div, &[1], &[Some(&be32(7)), Some(&be32(2))], 1), 1),
                step(Msgs::new().function_call(0, &[], &[], 0), 1),
                q("BEGIN"),
                step(Msgs::new().function_call(oids.length, &[0], &[Some("héllo".as_bytes())], 1), 1),
                q("COMMIT"),
            ],
        ),
        case(
            "large/one-mebibyte-values",
            vec![
                q("SELECT repeat('x', 1048576) AS big, 1 AS after"),
                step(
                    Msgs::new()
                        .parse("", "SELECT repeat('y', 1048576)::bytea AS big", &[])
                        .bind("", "", &[], &[], &[1])
                        .execute("", 0)
                        .sync(),
                    1,
                ),
                x("SELECT length($1::text) AS len, md5($1::text) AS sum", &[&one_mib]),
            ],
        ),
        case(
            "large/hundred-thousand-rows",
            vec![
                q("SELECT g, md5(g::text) FROM generate_series(1, 100000) g"),
                step(
                    Msgs::new()
                        .parse("", "SELECT g, g::numeric / 7 FROM generate_series(1, 100000) g", &[])
                        .bind("", "", &[], &[], &[1])
                        .execute("", 0)
                        .sync(),
                    1,
                ),
            ],
        ),
        case(
            "non-transactional/vacuum",
            vec![
                q("VACUUM documents"),
                q("/* leading comment */ vacuum (analyze) documents"),
                q("SELECT 1; VACUUM documents"),
                x("VACUUM documents", &[]),
                step(Msgs::new().parse("v", "VACUUM documents", &[]).sync(), 1),
                step(Msgs::new().bind_text("", "v", &[]).execute("", 0).sync(), 1),
            ],
        ),
        case(
            "notify/to-self",
            vec![
                q("LISTEN diff_channel"),
                q("NOTIFY diff_channel, 'payload'"),
                q("SELECT pg_notify('diff_channel', 'second') AS sent"),
                q("UNLISTEN *"),
            ],
        ),
        case(
            "errors/plpgsql-context",
            vec![
                q("DO $$ DECLARE n int; BEGIN n := 1 / 0; END $$"),
                q("SELECT jsonb_path_query('{}', '$.a +')"),
                x("SELECT 'x'::int4", &[]),
            ],
        ),
    ]
}

/// Syntax errors, run with the guard on: it answers them itself, as PostgreSQL would.
pub fn syntax_errors() -> Vec<Case> {
    let after = || q("SELECT 'after' AS after");
    let parse_fails = |sql: &str| {
        Msgs::new().parse("s1", "SELECT 1 AS ok", &[]).parse("", sql, &[]).bind_text("", "", &[]).execute("", 0).sync()
    };
    vec![
        case("syntax/select-from-where", vec![q("SELECT FROM WHERE"), after()]),
        case("syntax/misspelled-keyword", vec![q("SELEC 1"), after()]),
        case("syntax/unterminated-quote", vec![q("SELECT 'abc"), after()]),
        case("syntax/end-of-input", vec![q("SELECT 1 +"), after()]),
        case("syntax/after-multibyte-text", vec![q("SELECT 'é€' AS e, FROM documents"), after()]),
        case("syntax/second-statement", vec![q("SELECT 1 AS a; SELECT 2 AS b FROM WHERE; SELECT 3"), after()]),
        case("syntax/in-transaction-block", vec![q("BEGIN"), q("SELEC 1"), q("SELECT 1"), q("ROLLBACK"), after()]),
        case("syntax/parse", vec![step(parse_fails("SELECT FROM WHERE"), 1), after()]),
        case("syntax/parse-unterminated-quote", vec![step(parse_fails("SELECT $1 || 'x"), 1), after()]),
    ]
}
