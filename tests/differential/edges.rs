//! Edge cases: transaction-state corners, COPY sub-protocol corners, split and odd
//! messages, and named/unnamed statements in the situations that statement renaming
//! (transaction pooling) has to model exactly.

use super::corpus::{be32, case, q, step, step_until, x};
use super::recorder::Until;
use super::{Case, Oids, Step};
use crate::common::wire::Msgs;

/// The first `at` bytes of `msgs`, written alone, then the rest (read up to `readies`).
fn split(msgs: Msgs, at: usize, readies: usize) -> [Step; 2] {
    let (head, tail) = msgs.0.split_at(at);
    [
        Step { msgs: Msgs(head.to_vec()), until: Until::Nothing },
        Step { msgs: Msgs(tail.to_vec()), until: Until::Readies(readies) },
    ]
}

/// Bind (text) and Execute of the named statement, then Sync.
fn bx(stmt: &str, values: &[&str]) -> Msgs {
    Msgs::new().bind_text("", stmt, values).execute("", 0).sync()
}

/// The edge-case corpus.
pub fn cases(oids: &Oids) -> Vec<Case> {
    let mut cases = transactions_and_copy();
    cases.extend(protocol(oids));
    cases.extend(statements());
    cases
}

fn transactions_and_copy() -> Vec<Case> {
    let big_line = format!("1\t{}\n", "c".repeat(1 << 20));
    let mut many = Msgs::new().query("COPY diff_copy7 FROM STDIN").copy_data(big_line.as_bytes());
    for i in 2..500 {
        many = many.copy_data(format!("{i}\tsmall {i}\n").as_bytes());
    }
    vec![
        case(
            "tx/nested-begin-and-commit-of-failed-block",
            vec![q("BEGIN"), q("BEGIN"), q("SELECT 1/0"), q("COMMIT"), q("SELECT 'after' AS after")],
        ),
        case(
            "tx/statement-timeout",
            vec![q("BEGIN"), q("SET LOCAL statement_timeout = '100ms'"), q("SELECT pg_sleep(2)"), q("ROLLBACK")],
        ),
        case(
            "tx/cursors",
            vec![
                q("BEGIN"),
                q("DECLARE c CURSOR FOR SELECT g FROM generate_series(1, 10) g"),
                q("FETCH 3 FROM c"),
                q("MOVE 2 IN c"),
                q("FETCH ALL FROM c"),
                q("CLOSE c"),
                q("COMMIT"),
            ],
        ),
        case(
            "tx/unknown-statement-inside-block",
            vec![q("BEGIN"), step(bx("nope", &[]), 1), q("SELECT 1"), q("ROLLBACK")],
        ),
        case(
            "extended/insert-returning-row-limit",
            vec![
                q("BEGIN"),
                step(
                    Msgs::new()
                        .parse(
                            "",
                            "INSERT INTO documents (tenant_id, title) SELECT 1, 'bulk ' || g \
                             FROM generate_series(1, 5) g RETURNING tenant_id, title",
                            &[],
                        )
                        .bind_text("", "", &[])
                        .execute("", 2)
                        .execute("", 2)
                        .execute("", 0)
                        .sync(),
                    1,
                ),
                q("ROLLBACK"),
            ],
        ),
        case(
            "copy/out-error-midway",
            vec![
                q("COPY (SELECT 10 / (5 - g) FROM generate_series(1, 10) g) TO STDOUT"),
                x("COPY (SELECT 10 / (5 - g) FROM generate_series(1, 10) g) TO STDOUT", &[]),
            ],
        ),
        case(
            "copy/out-hundred-thousand-rows",
            vec![q("COPY (SELECT g, md5(g::text) FROM generate_series(1, 100000) g) TO STDOUT")],
        ),
        case(
            "copy/in-within-multi-statement",
            vec![
                q("BEGIN"),
                q("CREATE TEMP TABLE diff_copy5 (a int4) ON COMMIT DROP"),
                step(
                    Msgs::new()
                        .query("SELECT 1 AS before; COPY diff_copy5 FROM STDIN; SELECT sum(a) AS after FROM diff_copy5")
                        .copy_data(b"1\n2\n")
                        .copy_done(),
                    1,
                ),
                q("COMMIT"),
            ],
        ),
        case(
            "copy/in-with-sync-and-flush-inside",
            vec![
                q("BEGIN"),
                q("CREATE TEMP TABLE diff_copy6 (a int4) ON COMMIT DROP"),
                step(
                    Msgs::new()
                        .query("COPY diff_copy6 FROM STDIN")
                        .copy_data(b"1\n")
                        .flush()
                        .sync()
                        .copy_data(b"2\n")
                        .copy_done(),
                    1,
                ),
                q("SELECT sum(a) FROM diff_copy6"),
                step_until(Msgs::new().query("COPY diff_copy6 FROM STDIN"), b'G'),
                step(Msgs::new().copy_data(b"3\n").sync().copy_done(), 1),
                q("SELECT sum(a) FROM diff_copy6"),
                q("COMMIT"),
            ],
        ),
        case(
            "copy/in-large-and-many-pieces",
            vec![
                q("BEGIN"),
                q("CREATE TEMP TABLE diff_copy7 (a int4, b text) ON COMMIT DROP"),
                step(many.copy_done(), 1),
                q("SELECT count(*), sum(length(b)) FROM diff_copy7"),
                q("COMMIT"),
            ],
        ),
    ]
}

fn protocol(oids: &Oids) -> Vec<Case> {
    let mut split_steps = Vec::new();
    split_steps.extend(split(Msgs::new().query("SELECT 'split header' AS s"), 3, 1));
    split_steps.extend(split(Msgs::new().run("SELECT $1::text AS split_body", &["value"]), 20, 1));
    split_steps.extend(split(Msgs::new().query("SELECT 'one' AS a").query("SELECT 'two' AS b"), 30, 2));
    let mut copy_steps = vec![q("BEGIN"), q("CREATE TEMP TABLE diff_copy8 (a int4, b text) ON COMMIT DROP")];
    let copy = Msgs::new()
        .query("COPY diff_copy8 FROM STDIN")
        .copy_data(format!("1\t{}\n", "s".repeat(100_000)).as_bytes())
        .copy_data(b"2\ttwo\n")
        .copy_done();
    copy_steps.extend(split(copy, 50_000, 1));
    copy_steps.extend([q("SELECT count(*), sum(length(b)) FROM diff_copy8"), q("COMMIT")]);
    vec![
        case("protocol/split-messages", split_steps),
        case("protocol/split-copy-data", copy_steps),
        case(
            "protocol/nul-inside-query",
            vec![step(Msgs::new().msg(b'Q', b"SELECT 1\0SELECT 2\0"), 1), q("SELECT 'still here'")],
        ),
        case(
            "extended/empty-and-invalid-statements",
            vec![
                x("", &[]),
                step(
                    Msgs::new().parse("e1", "", &[]).bind_text("", "e1", &[]).describe(b'P', "").execute("", 0).sync(),
                    1,
                ),
                x("SELECT 1; SELECT 2", &[]),
                step(
                    Msgs::new()
                        .parse("", "SELECT 1 AS one", &[])
                        .bind("", "", &[], &[], &[1, 1, 1])
                        .execute("", 0)
                        .sync(),
                    1,
                ),
            ],
        ),
        case(
            "function-call/bad-calls",
            vec![
                step(Msgs::new().function_call(oids.upper, &[], &[Some(b"a"), Some(b"b")], 0), 1),
                step(Msgs::new().function_call(oids.upper, &[1], &[Some(b"\xff\xfe")], 0), 1),
                step(Msgs::new().function_call(oids.int4div, &[1], &[Some(&be32(1)), Some(&[0, 0])], 0), 1),
            ],
        ),
        case(
            "settings/pg-settings-source",
            // transaction_isolation is left out: after a `BEGIN ISOLATION LEVEL …` its source
            // stays `session` for the backend's life (RESET ALL skips it), so a reused server
            // connection reports the history of the backend, not anything the proxy relays.
            vec![q("SELECT name, setting, source FROM pg_settings \
                    WHERE source NOT IN ('default', 'override', 'configuration file') \
                    AND name <> 'transaction_isolation' ORDER BY name")],
        ),
        case(
            "misc/all-settings-and-identity",
            // Not SHOW ALL: a pooled server connection that once ran a DO block has loaded
            // plpgsql, whose plpgsql.* settings a fresh direct session does not list. That is
            // the backend's library state, not something the proxy relays differently.
            vec![
                q("SELECT name, setting FROM pg_settings WHERE name NOT LIKE 'plpgsql.%' ORDER BY name"),
                q("SELECT current_user, session_user, current_database()"),
            ],
        ),
        case(
            "protocol/odd-message-variants",
            vec![
                step(Msgs::new().msg(b'D', b"X\0").sync(), 1),
                step(Msgs::new().msg(b'C', b"X\0").sync(), 1),
                step(
                    Msgs::new()
                        .parse("", "SELECT g FROM generate_series(1, 3) g", &[])
                        .bind_text("", "", &[])
                        .execute("", -1)
                        .sync(),
                    1,
                ),
            ],
        ),
    ]
}

fn statements() -> Vec<Case> {
    let parse4 = Msgs::new()
        .parse("n1", "SELECT 1 AS n1", &[])
        .parse("n2", "SELECT $1::int4 AS n2", &[23])
        .parse("n3", "SELECT $1::text AS n3", &[25])
        .parse("n4", "SELECT 4 AS n4", &[])
        .sync();
    let all4 = Msgs::new()
        .bind_text("", "n1", &[])
        .execute("", 0)
        .bind_text("", "n2", &["2"])
        .execute("", 0)
        .bind_text("", "n3", &["three"])
        .execute("", 0)
        .bind_text("", "n4", &[])
        .execute("", 0)
        .sync();
    let mut reversed = bx("n4", &[]);
    for (stmt, values) in [("n1", &[][..]), ("n3", &["3"][..]), ("n2", &["22"][..])] {
        reversed.0.extend(bx(stmt, values).0);
    }
    vec![
        case(
            "pipeline/cached-parse-skipped-after-error",
            vec![
                step(Msgs::new().parse("y", "SELECT 'cached' AS c", &[]).sync(), 1),
                step(
                    Msgs::new()
                        .parse("", "SELECT 1/0", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .parse("x", "SELECT 'cached' AS c", &[])
                        .sync(),
                    1,
                ),
                step(bx("x", &[]), 1),
            ],
        ),
        case(
            "pipeline/close-skipped-after-error",
            vec![
                step(Msgs::new().parse("k", "SELECT 'kept' AS k", &[]).sync(), 1),
                step(
                    Msgs::new()
                        .parse("", "SELECT 1/0", &[])
                        .bind_text("", "", &[])
                        .execute("", 0)
                        .close(b'S', "k")
                        .sync(),
                    1,
                ),
                step(bx("k", &[]), 1),
            ],
        ),
        case(
            "statements/unnamed-failed-parse-then-bind",
            vec![
                step(Msgs::new().parse("", "SELECT 1 AS ok", &[]).sync(), 1),
                step(Msgs::new().parse("", "SELEC broken", &[]).sync(), 1),
                step(bx("", &[]), 1),
            ],
        ),
        case(
            "statements/parsed-under-set-local-search-path",
            vec![
                q("BEGIN"),
                q("SET LOCAL search_path = information_schema"),
                step(Msgs::new().parse("in_schema", "SELECT count(*) > 0 AS found FROM tables", &[]).sync(), 1),
                q("COMMIT"),
                step(bx("in_schema", &[]), 1),
                step(bx("in_schema", &[]), 1),
            ],
        ),
        case(
            "statements/deallocate-all-then-prepare-again",
            vec![
                step(Msgs::new().parse("again", "SELECT 'first' AS v", &[]).sync(), 1),
                q("DEALLOCATE ALL"),
                step(bx("again", &[]), 1),
                step(Msgs::new().parse("again", "SELECT 'second' AS v", &[]).sync(), 1),
                step(bx("again", &[]), 1),
            ],
        ),
        case(
            "tx/session-characteristics",
            vec![
                q("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
                q("BEGIN"),
                q("SHOW transaction_isolation"),
                q("COMMIT"),
                q("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            ],
        ),
        case(
            "statements/many-named-with-eviction",
            vec![
                step(parse4, 1),
                step(all4, 1),
                step(reversed, 4),
                step(Msgs::new().describe(b'S', "n1").describe(b'S', "n3").sync(), 1),
                step(Msgs::new().close(b'S', "n2").sync().bind_text("", "n2", &["2"]).sync(), 2),
                step(bx("n1", &[]), 1),
            ],
        ),
        case(
            "session-state/temp-table-via-pg-temp",
            vec![
                q("CREATE TABLE pg_temp.diff_qualified (a int4)"),
                q("INSERT INTO pg_temp.diff_qualified VALUES (1)"),
                q("SELECT a + 0 AS a FROM pg_temp.diff_qualified"),
            ],
        ),
        case(
            "session-state/set-config-with-a-space",
            vec![q("SELECT set_config ('search_path', 'information_schema, public', false)"), q("SHOW search_path")],
        ),
        // A new client of the same identity, right after the two cases above: in transaction
        // mode it may get the server connection they used, which must not show their session
        // state (the direct client is a new session and sees none). Last in the corpus, so
        // that a leak shows here and nowhere else.
        case(
            "session-state/next-client-sees-none",
            vec![q("SELECT to_regclass('pg_temp.diff_qualified') IS NULL AS no_temp_table"), q("SHOW search_path")],
        ),
    ]
}
