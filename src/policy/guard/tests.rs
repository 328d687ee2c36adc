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
    for discard in ["DISCARD ALL", "discard plans", "SELECT 1; DISCARD SEQUENCES", "DISCARD TEMP;"] {
        assert!(g.check_sql(discard.as_bytes(), None, true).is_ok(), "{discard}");
        assert!(g.check_sql(discard.as_bytes(), None, false).is_err(), "{discard} inside a transaction");
    }
    assert!(g.check_sql(b"DISCARD ALL; SELECT 1", None, true).is_err(), "something runs after it");
    assert!(g.check_sql(b"DISCARD PLANS; RESET ALL", None, true).is_err(), "two resets");
    assert!(g.check_sql(b"BEGIN; DISCARD TEMP", None, true).is_err(), "opens a block");
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
        "SET standard_conforming_strings = 'off'",
        "SET standard_conforming_strings TO DEFAULT",
        "RESET standard_conforming_strings",
        "SET standard_conforming_strings = 0",
        "SET standard_conforming_strings = false",
        "SET SESSION standard_conforming_strings = of",
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
        // ActiveRecord's connect: the value the proxy keeps anyway.
        "SET standard_conforming_strings = on",
        "SET standard_conforming_strings TO 'on'",
        "SET LOCAL standard_conforming_strings = true",
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
fn fast_path_calls_only_of_large_object_functions_and_only_when_allowed() {
    let g = guard();
    let rule = |r: Result<(), Refusal>| r.err().map(|e| e.rule);
    assert_eq!(rule(g.check_function_call(952, None)), Some(Rule::LargeObject), "lo_open");
    assert_eq!(rule(g.check_function_call(2078, None)), Some(Rule::FunctionCall), "set_config");
    let mut cfg = Config::default();
    cfg.guard.allow_large_objects = true;
    let g = Guard::from_config(&cfg);
    assert!(g.check_function_call(952, None).is_ok(), "lo_open");
    assert!(g.check_sql(b"SELECT lo_get(42)", None, false).is_ok());
    assert_eq!(rule(g.check_function_call(2078, None)), Some(Rule::FunctionCall), "set_config");
}

#[test]
fn routes_past_the_context_are_refused_under_their_rule() {
    let g = guard();
    for (sql, rule) in [
        ("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", "set_config"),
        ("update PG_CATALOG.\"pg_settings\" s SET setting = 'SJIS' FROM (SELECT 1) x", "set_config"),
        ("WITH u AS (UPDATE pg_settings SET setting = 'x' RETURNING 1) SELECT * FROM u", "set_config"),
        ("SELECT 1; INSERT INTO pg_settings (name) VALUES ('x') ON CONFLICT DO NOTHING", "set_config"),
        ("CREATE TEMP VIEW s AS SELECT * FROM pg_settings", "set_config"),
        ("SELECT * FROM crosstab('select 1') AS t(a text)", "sql_function"),
        ("SELECT * FROM public.crosstab_hash('a', 'b') AS t(a text)", "sql_function"),
        ("SELECT * FROM connectby('t', 'a', 'b', '1', 0) AS t(a text)", "sql_function"),
        ("SELECT * FROM xpath_table('k', 'd', 't', '/a', 'true') AS t(k int)", "sql_function"),
        ("SELECT table_to_xml('pg_stat_' || 'activity', true, false, '')", "sql_function"),
        ("SELECT table_to_xmlschema(1259, true, false, '')", "sql_function"),
        ("SELECT schema_to_xml_and_xmlschema('public', true, false, '')", "sql_function"),
        ("SELECT database_to_xmlschema(true, false, '')", "sql_function"),
        ("SELECT cursor_to_xml('c', 1, true, false, '')", "sql_function"),
        ("SELECT 'pg_stat_activity'::regclass", "forbidden_object"),
        (
            "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION check_primary_key('a', 'b', 'a')",
            "create_trigger",
        ),
        ("CREATE CONSTRAINT TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()", "create_trigger"),
        ("CREATE RULE r AS ON INSERT TO x DO INSTEAD NOTHING", "create_trigger"),
        ("CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()", "create_trigger"),
        ("EXPLAIN SELECT * FROM documents WHERE content >= 'm'", "explain"),
        ("explain (format json) select 1", "explain"),
        ("SELECT lo_get(16400)", "large_object"),
        ("SELECT pg_catalog.loread(pg_catalog.lo_open(16400, 262144), 100)", "large_object"),
        ("SELECT oid FROM pg_largeobject_metadata", "large_object"),
        ("ALTER LARGE OBJECT 16400 OWNER TO app_proxy", "large_object"),
        ("COMMENT ON LARGE OBJECT 16400 IS 'x'", "large_object"),
        ("COPY documents TO PROGRAM 'cat > /tmp/x'", "server_file"),
        ("COPY documents FROM '/etc/passwd'", "server_file"),
        ("COPY (SELECT 1) TO '/tmp/out'", "server_file"),
        ("GRANT SELECT ON documents TO PUBLIC", "grant"),
        ("REVOKE ALL ON documents FROM app_proxy", "grant"),
        ("GRANT admin_role TO app_proxy", "grant"),
        ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", "grant"),
        ("ALTER ROLE CURRENT_USER PASSWORD 'x'", "alter_role"),
        ("alter user app_proxy with encrypted password 'x'", "alter_role"),
        ("ALTER ROLE app_proxy PASSWORD NULL", "alter_role"),
        ("ALTER GROUP admin_role ADD USER app_proxy", "alter_role"),
        ("CREATE ROLE r", "alter_role"),
        ("DROP USER IF EXISTS r", "alter_role"),
        ("LOCK TABLE documents", "lock"),
        ("LOCK documents IN SHARE MODE", "lock"),
        ("LOCK TABLE ONLY documents IN SHARE ROW EXCLUSIVE MODE NOWAIT", "lock"),
        ("lock table documents in exclusive mode", "lock"),
    ] {
        let refusal = g.check_sql(sql.as_bytes(), None, false).err();
        assert_eq!(refusal.as_ref().map(|r| r.rule.name()), Some(rule), "{sql}");
        assert_eq!(refusal.map(|r| r.error.code), Some("42501".into()), "{sql}");
    }
}

#[test]
fn reads_of_pg_settings_and_copy_over_the_connection_pass() {
    for sql in [
        "SELECT name, setting FROM pg_settings WHERE name = 'standard_conforming_strings'",
        "UPDATE documents SET title = (SELECT setting FROM pg_settings WHERE name = 'x') WHERE false; SELECT 1",
        "COPY documents TO STDOUT",
        "COPY documents (id, title) FROM STDIN",
        "SELECT lower('A'), longitude FROM places",
        "LOCK TABLE documents IN ACCESS SHARE MODE",
        "LOCK TABLE documents IN ROW EXCLUSIVE MODE",
        "LOCK TABLE documents IN SHARE UPDATE EXCLUSIVE MODE",
        "SELECT * FROM documents FOR UPDATE",
    ] {
        assert_eq!(refused(sql), None, "{sql}");
    }
}

#[test]
fn operators_may_be_exempt_from_explain_and_triggers_but_not_from_a_pg_settings_write() {
    let mut cfg = Config::default();
    cfg.guard.operator_roles = vec!["migrator".into()];
    cfg.guard.operator_allows = vec!["explain".into(), "create_trigger".into(), "grant".into()];
    let g = Guard::from_config(&cfg);
    for sql in ["EXPLAIN SELECT 1", "CREATE TRIGGER t AFTER INSERT ON x EXECUTE FUNCTION f()", "GRANT x TO y"] {
        assert!(g.check_sql(sql.as_bytes(), Some("migrator"), false).is_ok(), "{sql}");
        assert!(g.check_sql(sql.as_bytes(), None, false).is_err(), "{sql}");
    }
    let rule = "CREATE RULE r AS ON INSERT TO x DO INSTEAD UPDATE pg_settings SET setting = 'off'";
    let refusal = g.check_sql(rule.as_bytes(), Some("migrator"), false).err().map(|r| r.rule);
    assert_eq!(refusal, Some(Rule::SetConfig));
}

#[test]
fn a_text_over_the_limit_is_refused_unparsed_with_54000() {
    let mut cfg = Config::default();
    cfg.guard.max_statement_bytes = 100;
    let g = Guard::from_config(&cfg);
    let sql = format!("SELECT '{}'", "x".repeat(100));
    let err = g.check_sql(sql.as_bytes(), None, false).err().map(|r| (r.rule, r.error.code, r.error.message));
    assert_eq!(
        err,
        Some((
            Rule::TooLong,
            "54000".into(),
            "rlsproxy refused the statement: 109 bytes of SQL text, more than guard.max_statement_bytes (100) \
             (rule statement_too_long)"
                .into()
        ))
    );
    assert!(g.check_sql(b"SELECT 1", None, false).is_ok());
    assert_eq!(g.cache.bytes(), 96, "one verdict cached, the refused text none");
}

#[test]
fn the_cache_holds_a_bounded_entry_per_text_whatever_its_length() {
    let g = guard();
    // Thousands of matching string constants: one violation kept, its text cut short.
    let sql = format!("SELECT {}", vec![format!("'dblink{}'", "y".repeat(5000)); 200].join(", "));
    let err = g.check_sql(sql.as_bytes(), None, false).err().map(|r| r.error.message);
    assert!(err.is_some_and(|m| m.len() < 200 && m.ends_with("(rule sql_function)")));
    assert!(g.cache.bytes() < 400, "{}", g.cache.bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_texts_are_checked_off_the_relay_thread_with_the_same_verdict() {
    let g = Arc::new(guard());
    let long = format!("SELECT 1 FROM documents WHERE title IN ({})", vec!["'a'"; 30_000].join(", "));
    assert!(long.len() > BLOCKING_BYTES);
    assert!(g.clone().check_message_sql(Bytes::from(long.clone()), None, false).await.is_ok());
    let evil = format!("{long}; SELECT set_config('a.b', 'c', false)");
    let refusal = g.clone().check_message_sql(Bytes::from(evil), None, false).await.err().map(|r| r.rule);
    assert_eq!(refusal, Some(Rule::SetConfig));
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

#[test]
fn unparsable_text_gets_postgresqls_syntax_error_at_its_own_position() {
    let g = guard();
    // Same cache key (numbers collapsed), different positions: each its own.
    for (sql, position) in [("SELECT 1, FROM x", 11), ("SELECT 12345, FROM x", 15)] {
        let Err(Refusal { rule, error }) = g.check_sql(sql.as_bytes(), None, false) else { panic!("{sql} passed") };
        assert_eq!(rule, Rule::Unparsable, "the metrics label stays");
        assert_eq!(
            (error.severity, error.code.as_str(), error.message.as_str(), error.position),
            (crate::protocol::Severity::Error, "42601", "syntax error at or near \"FROM\"", Some(position))
        );
    }
}
