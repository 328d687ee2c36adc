//! Attempts that run SQL the guard cannot see in the statement text: DO blocks, functions,
//! procedures, aggregates and operators, SQL-level PREPARE, EXPLAIN ANALYZE and COPY of a
//! query, and the built-in functions that execute a query given as a string.

use crate::Attempt;
use crate::Expect::{self, Guard};

const DO: Expect = Guard(&["do"]);
const FUNCTION: Expect = Guard(&["create_function"]);
const SET_CONFIG: Expect = Guard(&["set_config"]);
const RUNS_SQL: Expect = Guard(&["sql_function"]);

/// The attempts of this file.
pub const ATTEMPTS: &[Attempt] = &[
    Attempt::block(
        "DO block with PERFORM set_config",
        &["DO $$ BEGIN PERFORM set_config('app.current_tenant', '2', false); END $$"],
        DO,
    ),
    Attempt::block(
        "DO block with dynamic EXECUTE",
        &["DO $$ BEGIN EXECUTE 'SET app.current' || '_tenant = 2'; END $$"],
        DO,
    ),
    Attempt::block(
        "DO block with LANGUAGE and a quoted body",
        &["DO LANGUAGE plpgsql 'BEGIN PERFORM set_config(''app.current_tenant'', ''2'', false); END'"],
        DO,
    ),
    Attempt::block(
        "CREATE FUNCTION calling set_config, then calling it",
        &[
            "CREATE FUNCTION pg_temp.attack_fn() RETURNS text LANGUAGE sql \
             AS $$ SELECT set_config('app.current_tenant', '2', false) $$",
            "SELECT pg_temp.attack_fn()",
        ],
        FUNCTION,
    ),
    Attempt::block(
        "CREATE FUNCTION with dynamic SQL, then calling it in WHERE",
        &[
            "CREATE OR REPLACE FUNCTION pg_temp.attack_dyn() RETURNS boolean LANGUAGE plpgsql \
             AS $$ BEGIN EXECUTE 'SET app.current' || '_tenant = 2'; RETURN true; END $$",
            "SELECT title FROM {docs} WHERE pg_temp.attack_dyn()",
        ],
        FUNCTION,
    ),
    Attempt::block(
        "CREATE PROCEDURE, then CALL",
        &[
            "CREATE PROCEDURE pg_temp.attack_proc() LANGUAGE plpgsql \
             AS $$ BEGIN EXECUTE 'SET app.current' || '_tenant = 2'; END $$",
            "CALL pg_temp.attack_proc()",
        ],
        FUNCTION,
    ),
    Attempt::block(
        "CREATE FUNCTION shadowing current_setting",
        &[
            "SET LOCAL search_path = pg_temp, pg_catalog, public",
            "CREATE FUNCTION pg_temp.current_setting(text) RETURNS text LANGUAGE sql AS $$ SELECT '2'::text $$",
        ],
        FUNCTION,
    ),
    Attempt::block(
        "leaky function RAISEing every row it sees",
        &[
            "CREATE FUNCTION pg_temp.attack_leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 \
             AS $$ BEGIN RAISE NOTICE 'seen: %', $1; RETURN true; END $$",
            "SELECT title FROM {docs} WHERE pg_temp.attack_leak(title || ' ' || coalesce(body, ''))",
        ],
        FUNCTION,
    ),
    Attempt::block(
        "CREATE AGGREGATE with sfunc = set_config",
        &[
            "CREATE AGGREGATE pg_temp.attack_agg(text, boolean) \
             (sfunc = set_config, stype = text, initcond = 'app.current_tenant')",
            "SELECT pg_temp.attack_agg('2', false)",
        ],
        SET_CONFIG,
    ),
    Attempt::block(
        "CREATE OPERATOR with function = set_config",
        &[
            "CREATE OPERATOR pg_temp.##> (leftarg = text, rightarg = text, function = set_config)",
            "SELECT 'app.current_tenant' OPERATOR(pg_temp.##>) '2'",
        ],
        SET_CONFIG,
    ),
    Attempt::block(
        "PREPARE and EXECUTE of set_config",
        &["PREPARE attack_p AS SELECT set_config('app.current_tenant', '2', false)", "EXECUTE attack_p"],
        SET_CONFIG,
    ),
    Attempt::block(
        "EXPLAIN ANALYZE of set_config",
        &["EXPLAIN ANALYZE SELECT set_config('app.current_tenant', '2', false)"],
        Guard(&["explain", "set_config"]),
    ),
    Attempt::block(
        "COPY (SELECT set_config) TO STDOUT",
        &["COPY (SELECT set_config('app.current_tenant', '2', false)) TO STDOUT"],
        SET_CONFIG,
    ),
    Attempt::block(
        "CREATE TEMP VIEW over set_config",
        &["CREATE TEMP VIEW attack_sv AS SELECT set_config('app.current_tenant', '2', false)", "TABLE attack_sv"],
        SET_CONFIG,
    ),
    Attempt::alone(
        "query_to_xml of the table",
        &["SELECT query_to_xml('select title, body from {docs}', true, false, '')"],
        RUNS_SQL,
    ),
    Attempt::block(
        "query_to_xml running set_config",
        &["SELECT query_to_xml('select set_config(''app.current_tenant'', ''2'', false)', true, false, '')"],
        RUNS_SQL,
    ),
    Attempt::alone(
        "query_to_xml_and_xmlschema of tenant 2's rows",
        &["SELECT query_to_xml_and_xmlschema('select title from {docs} where tenant_id = 2', true, false, '')"],
        RUNS_SQL,
    ),
    Attempt::alone(
        "query_to_xmlschema",
        &["SELECT query_to_xmlschema('select title from {docs}', true, false, '')"],
        RUNS_SQL,
    ),
    Attempt::block(
        "ts_stat running set_config",
        &["SELECT * FROM ts_stat('select to_tsvector(set_config(''app.current_tenant'', ''2'', false))')"],
        RUNS_SQL,
    ),
    Attempt::alone(
        "ts_stat of the table",
        &["SELECT * FROM ts_stat('select to_tsvector(title) from {docs}')"],
        RUNS_SQL,
    ),
    Attempt::alone(
        "ts_rewrite with a query",
        &["SELECT ts_rewrite('acme'::tsquery, 'select ''acme''::tsquery, plainto_tsquery(title) from {docs}')"],
        RUNS_SQL,
    ),
    Attempt::alone(
        "dblink to the same database",
        &["SELECT * FROM dblink('dbname=app', 'select title from documents') AS t(title text)"],
        RUNS_SQL,
    ),
    Attempt::alone("table_to_xml", &["SELECT table_to_xml('{docs}', true, false, '')"], RUNS_SQL),
    Attempt::alone("schema_to_xml of public", &["SELECT schema_to_xml('public', true, false, '')"], RUNS_SQL),
    Attempt::alone("database_to_xml", &["SELECT database_to_xml(true, false, '')"], RUNS_SQL),
    Attempt::block(
        "cursor_to_xml",
        &[
            "DECLARE attack_c CURSOR FOR SELECT title FROM {docs}",
            "SELECT cursor_to_xml('attack_c', 10, false, false, '')",
        ],
        RUNS_SQL,
    ),
    // pg_settings has an UPDATE rule calling set_config, and PUBLIC may update the view.
    // Placeholder settings (app.current_tenant, rlsproxy.*) and role are not listed in it, but
    // the lexer settings are (see routes.rs): every write to it is refused.
    Attempt::block(
        "UPDATE pg_settings for the tenant",
        &["UPDATE pg_settings SET setting = '2' WHERE name = 'app.current_tenant'"],
        SET_CONFIG,
    ),
    Attempt::block(
        "UPDATE pg_catalog.pg_settings for the role",
        &["UPDATE pg_catalog.pg_settings SET setting = 'admin_role' WHERE name = 'role'"],
        SET_CONFIG,
    ),
    Attempt::block(
        "temp rule forwarding to pg_settings",
        &[
            "CREATE TEMP TABLE attack_r (v text)",
            "CREATE RULE attack_rule AS ON INSERT TO attack_r DO INSTEAD \
             UPDATE pg_settings SET setting = new.v WHERE name = 'app.current_tenant'",
            "INSERT INTO attack_r VALUES ('2')",
        ],
        Guard(&["create_trigger", "set_config"]),
    ),
    Attempt::alone("unparsable statement", &["SELEC title FROM {docs}"], Guard(&["unparsable"])),
    Attempt::alone(
        "unparsable statement hiding set_config",
        &["SELECT 1; SELEC set_config('app.current_tenant', '2', false)"],
        Guard(&["unparsable"]),
    ),
];
