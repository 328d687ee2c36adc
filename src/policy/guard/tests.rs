use super::*;

fn guard() -> Guard {
    let mut cfg = Config::default();
    cfg.context.claims_setting = "request.jwt.claims".into();
    cfg.guard.operator_roles = vec!["migrator".into()];
    Guard::from_config(&cfg)
}

fn refused(sql: &str) -> Option<String> {
    guard().check_sql(sql.as_bytes(), None, false).err().map(|e| e.error.message)
}

#[test]
fn a_closing_reset_all_passes_only_at_a_transaction_start() {
    let g = guard();
    let asyncpg_reset = b"SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;";
    assert!(g.check_sql(asyncpg_reset, None, true).is_ok());
    assert!(g.check_sql(asyncpg_reset, None, false).is_err(), "inside a transaction");
    assert!(g.check_sql(b"RESET ALL; SELECT * FROM documents", None, true).is_err(), "something runs after it");
    assert!(g.check_sql(b"BEGIN; RESET ALL", None, true).is_err(), "opens a block");
    assert!(g.check_sql(b"RESET ALL; RESET ALL", None, true).is_err());
}

#[test]
fn refuses_every_listed_path() {
    for sql in [
        "SET app.current_tenant = 2",
        "set LOCAL app.current_tenant to '2'",
        "SET \"app\".\"current_tenant\" = 2",
        "SET \"APP.CURRENT_TENANT\" = 2",
        "RESET app.current_tenant",
        "RESET ALL",
        "DISCARD ALL",
        "SELECT set_config('app.current_tenant', '2', false)",
        "select PG_CATALOG.SET_CONFIG('app.current_tenant', '2', false)",
        "SELECT U&\"\\0073et_config\"('app.current_tenant', '2', false)",
        "SELECT 1; SELECT set_config('x.y', 'z', true)",
        "SELECT /* c */ 1 FROM documents WHERE 1 = (SELECT length(set_config('a.b','c',false)))",
        "SELECT 1 LIMIT (SELECT length(set_config('a.b','c',false)))",
        "VALUES ((SELECT set_config('a.b','c',false)))",
        "INSERT INTO t VALUES (1) RETURNING set_config('a.b','c',false)",
        "CREATE TABLE t (a text DEFAULT set_config('a.b','c',false))",
        "CREATE AGGREGATE evil(text, boolean) (sfunc = set_config, stype = text, initcond = 'app.current_tenant')",
        "SET ROLE admin_role",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION postgres",
        "SET request.jwt.claims = '{}'",
        "SET rlsproxy.anything = 1",
        "ALTER ROLE app_proxy SET app.current_tenant = 2",
        "ALTER USER app_proxy RESET ALL",
        "ALTER DATABASE app SET app.current_tenant = 2",
        "DO $$ BEGIN PERFORM 1; END $$",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
        "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS 'select 1'",
        "ALTER FUNCTION f() SECURITY DEFINER",
        "PREPARE p AS SELECT set_config('a.b','c',false)",
        "EXPLAIN ANALYZE SELECT set_config('a.b','c',false)",
        "COPY (SELECT set_config('a.b','c',false)) TO STDOUT",
        "SELECT query_to_xml('select * from documents', true, true, '')",
        "SELECT * FROM ts_stat('select 1')",
        "SELECT dblink_exec('x', 'y')",
        "SELEC broken",
        "EXECUTE U&\"rlsproxy\\005Fctx\"('app.current_tenant', '2')",
        "PREPARE rlsproxy_refused AS SELECT 1",
        "DEALLOCATE RLSPROXY_CTX",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'gbk'",
        "SET client_encoding TO big5",
        "SET standard_conforming_strings = off",
        "SET backslash_quote = on",
        "SELECT query FROM pg_stat_activity",
        "SELECT pg_catalog.pg_cancel_backend(123)",
        "SELECT * FROM pg_stat_get_activity(NULL)",
    ] {
        assert!(refused(sql).is_some(), "not refused: {sql}");
    }
}

#[test]
fn lets_ordinary_sql_through() {
    for sql in [
        "SELECT * FROM documents WHERE tenant_id = current_setting('app.current_tenant')::int",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET search_path = public",
        "SET LOCAL statement_timeout = 1000",
        "SET application_name = 'x'",
        "CREATE TEMP TABLE t (a int)",
        "CREATE INDEX ON documents (title)",
        "INSERT INTO documents (tenant_id, title) VALUES (1, 'x')",
        "VACUUM documents",
        "DEALLOCATE ALL",
        "SHOW app.current_tenant",
        "SET client_encoding = 'UTF8'",
        "SET NAMES 'LATIN1'",
    ] {
        assert_eq!(refused(sql), None, "{sql}");
    }
}

#[test]
fn messages_name_the_rule_and_the_setting() {
    assert_eq!(
        refused("SET app.current_tenant = 2").as_deref(),
        Some("rlsproxy refused the statement: changing \"app.current_tenant\" (rule set_protected)")
    );
    assert_eq!(refused("DO $$ $$").as_deref(), Some("rlsproxy refused the statement: a DO block (rule do)"));
}

#[test]
fn operators_are_exempt_only_from_the_configured_rules() {
    let g = guard();
    let do_block = b"DO $$ BEGIN PERFORM 1; END $$";
    assert!(g.check_sql(do_block, Some("migrator"), false).is_ok());
    assert!(g.check_sql(do_block, Some("admin_role"), false).is_err());
    assert!(g.check_sql(b"SET app.current_tenant = 2", Some("migrator"), false).is_err());
}

#[test]
fn fast_path_calls_only_of_large_object_functions() {
    let g = guard();
    assert!(g.check_function_call(952, None).is_ok(), "lo_open");
    assert!(g.check_function_call(2078, None).is_err(), "set_config");
}

#[test]
fn deeply_nested_input_is_refused_not_a_crash() {
    let g = guard();
    for depth in [1_000, 100_000] {
        let sql = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        // Either the parser's own depth limit refuses it, or it parses and is harmless.
        let _ = g.check_sql(sql.as_bytes(), None, false);
        let sql = format!("SELECT {}set_config('a.b','c',false){}", "(".repeat(depth), ")".repeat(depth));
        assert!(g.check_sql(sql.as_bytes(), None, false).is_err(), "depth {depth}");
    }
}

#[test]
fn reserved_names_are_refused_even_with_the_guard_off() {
    let mut cfg = Config::default();
    cfg.guard.enabled = false;
    let g = Guard::from_config(&cfg);
    assert!(g.check_sql(b"DO $$ BEGIN PERFORM 1; END $$", None, false).is_ok());
    assert!(g.check_sql(b"SELEC broken", None, false).is_ok());
    for sql in
        ["EXECUTE rlsproxy_ctx('a', 'b')", "DEALLOCATE U&\"rlsproxy\\005Fctx\"", "PREPARE RLSPROXY_X AS SELECT 1"]
    {
        let err = g.check_sql(sql.as_bytes(), None, false).err().map(|e| e.error.message);
        assert!(err.is_some_and(|m| m.ends_with("(rule reserved_name)")), "{sql}");
    }
}
