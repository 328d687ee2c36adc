//! Routes past the context through the server's own machinery, which the guard closes:
//! writes to `pg_settings` (its update rule calls set_config, so the lexer settings change
//! under the guard), contrib functions that run SQL text (tablefunc, xml2) or paste trigger
//! arguments into SQL (refint), relations read by a computed OID (`table_to_xml`), triggers
//! and rules, EXPLAIN's row estimates, large objects, server-side COPY and GRANT.
//! The extensions are installed in `app` by `harness::setup`.

use crate::Expect::{self, Guard};
use crate::common::proxy;
use crate::common::wire::Msgs;
use crate::common::{Postgres, postgres};
use crate::harness::Env;
use crate::session::{Protocol, Transcript};
use crate::{Attempt, run_sql};

const SET_CONFIG: Expect = Guard(&["set_config"]);
const RUNS_SQL: Expect = Guard(&["sql_function"]);
const TRIGGER: Expect = Guard(&["create_trigger"]);
const SERVER_FILE: Expect = Guard(&["server_file"]);
const GRANT: Expect = Guard(&["grant"]);
const LARGE_OBJECT: Expect = Guard(&["large_object"]);

/// What the server, with `standard_conforming_strings` off, reads as three statements.
const HIDDEN_SET_CONFIG: &str =
    "SELECT 'x\\' AS a, ' AS b; SELECT set_config($$app.current_tenant$$, $$2$$, false); SELECT title FROM {docs}; --'";

/// The SQL attempts of this file (every configuration).
pub const ATTEMPTS: &[Attempt] = &[
    Attempt::block(
        "UPDATE pg_settings: standard_conforming_strings off, then set_config inside a string",
        &["UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", HIDDEN_SET_CONFIG],
        SET_CONFIG,
    ),
    Attempt::block(
        "UPDATE pg_settings: client_encoding SJIS, then set_config inside a string",
        &[
            "UPDATE pg_catalog.pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
            "SELECT E'Á\\', set_config($$app.current_tenant$$, $$2$$, false), title FROM {docs} --'",
        ],
        SET_CONFIG,
    ),
    Attempt::block(
        "writable CTE updating pg_settings",
        &[
            "WITH s AS (UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings' \
             RETURNING name) SELECT name FROM s",
            HIDDEN_SET_CONFIG,
        ],
        SET_CONFIG,
    ),
    Attempt::block(
        "temp view over pg_settings, then UPDATE of the view",
        &[
            "CREATE TEMP VIEW attack_settings AS SELECT name, setting FROM pg_settings",
            "UPDATE attack_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
            HIDDEN_SET_CONFIG,
        ],
        SET_CONFIG,
    ),
    Attempt::block(
        "crosstab running set_config",
        &["SELECT * FROM crosstab($q$SELECT set_config('app.current_tenant', '2', false), 'c'::text, 'v'::text$q$) \
           AS t(a text, b text)"],
        RUNS_SQL,
    ),
    Attempt::alone(
        "crosstab_hash reading the table",
        &["SELECT * FROM crosstab('select title, ''c''::text, body from {docs}', 'select ''c''::text') \
           AS t(a text, b text)"],
        RUNS_SQL,
    ),
    Attempt::block(
        "connectby with set_config in the relation name",
        &["SELECT * FROM connectby('{docs} WHERE set_config(''app.current_tenant'', ''2'', false) IS NOT NULL --', \
           'id', 'tenant_id', '1', 0) AS t(k int, p int, l int)"],
        RUNS_SQL,
    ),
    Attempt::block(
        "xpath_table running set_config as its key",
        &["SELECT * FROM xpath_table('set_config(''app.current_tenant'', ''2'', false)', '''<a/>''', '{docs}', \
           '/a', 'true') AS t(k text, v text)"],
        RUNS_SQL,
    ),
    Attempt::block(
        "refint trigger whose argument sets the role",
        &[
            "CREATE TEMP TABLE attack_pk (a int)",
            "CREATE TEMP TABLE attack_fk (a int)",
            "CREATE TRIGGER attack_refint BEFORE INSERT ON attack_fk FOR EACH ROW EXECUTE FUNCTION \
             check_primary_key('a', 'pg_temp.attack_pk; select set_config(''role'', ''admin_role'', false) \
             from (select 1 as a) s', 'a')",
            "INSERT INTO attack_fk VALUES (1)",
        ],
        TRIGGER,
    ),
    Attempt::block("refint check_primary_key called directly", &["SELECT check_primary_key()"], RUNS_SQL),
    Attempt::block(
        "CREATE RULE turning an INSERT into a read of the table",
        &[
            "CREATE TEMP TABLE attack_rr (v text)",
            "CREATE RULE attack_rr_rule AS ON INSERT TO attack_rr DO INSTEAD SELECT title FROM {docs}",
            "INSERT INTO attack_rr VALUES ('x')",
        ],
        TRIGGER,
    ),
    Attempt::alone(
        "CREATE EVENT TRIGGER",
        &["CREATE EVENT TRIGGER attack_evt ON ddl_command_start EXECUTE FUNCTION pg_catalog.now()"],
        TRIGGER,
    ),
    Attempt::alone(
        "table_to_xml of the table by a computed OID",
        &["SELECT table_to_xml((SELECT oid FROM pg_class WHERE relname = '{docs}')::regclass, true, false, '')"],
        RUNS_SQL,
    ),
    Attempt::alone(
        "EXPLAIN of a range over another tenant's values",
        &["EXPLAIN SELECT title FROM {docs} WHERE body >= 'M'"],
        Guard(&["explain"]),
    ),
    Attempt::alone("COPY TO PROGRAM", &["COPY {docs} TO PROGRAM 'cat > /dev/null'"], SERVER_FILE),
    Attempt::alone("COPY FROM a server file", &["COPY {docs} (title) FROM '/etc/hostname'"], SERVER_FILE),
    Attempt::alone(
        "COPY a query TO a server file",
        &["COPY (SELECT title FROM {docs}) TO '/tmp/attack_copy'"],
        SERVER_FILE,
    ),
    Attempt::alone("GRANT on the table", &["GRANT SELECT ON {docs} TO PUBLIC"], GRANT),
    Attempt::alone("REVOKE on the table", &["REVOKE SELECT ON {docs} FROM app_proxy"], GRANT),
    Attempt::alone("GRANT a role", &["GRANT admin_role TO app_proxy"], GRANT),
    Attempt::alone(
        "ALTER DEFAULT PRIVILEGES",
        &["ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT ON TABLES TO PUBLIC"],
        GRANT,
    ),
];

/// OID of tenant 2's large object (created by `harness::setup`, owned by the proxy's role).
pub const LARGE_OBJECT_OID: u32 = 424_242;
/// OID of `lo_get(oid)` in pg_proc.
const LO_GET_OID: u32 = 3458;
/// "globex" in hex: a bytea result in text format.
const MARKER_HEX: &str = "676c6f626578";

/// Large objects have no row-level security: with the guard off they are shared by design
/// (`guard.allow_large_objects`), so these run in the guarded configurations only.
const LARGE_OBJECTS: &[Attempt] = &[
    Attempt::alone("lo_get of tenant 2's large object", &["SELECT convert_from(lo_get(424242), 'UTF8')"], LARGE_OBJECT),
    Attempt::block(
        "loread of tenant 2's large object",
        &["SELECT convert_from(loread(lo_open(424242, 262144), 100), 'UTF8')"],
        LARGE_OBJECT,
    ),
    Attempt::alone(
        "lo_put into tenant 2's large object",
        &["SELECT lo_put(424242, 64, decode('00', 'hex'))"],
        LARGE_OBJECT,
    ),
    Attempt::alone("pg_largeobject_metadata", &["SELECT oid::text FROM pg_largeobject_metadata"], LARGE_OBJECT),
];

/// Every attempt of this file that is not a plain SQL attempt.
pub async fn run_all(env: &mut Env) {
    pg_stat_activity_by_computed_oid(env).await;
    if env.mode.guarded() {
        for attempt in LARGE_OBJECTS {
            for protocol in Protocol::ALL {
                run_sql(env, attempt, protocol).await;
            }
        }
        large_object_fast_path(env).await;
    }
}

/// The route past `forbidden_objects` (names) as reported: the OID of pg_stat_activity,
/// computed, given to table_to_xml while tenant 2's last query text is there.
async fn pg_stat_activity_by_computed_oid(env: &mut Env) {
    let label = env.label("table_to_xml of pg_stat_activity by a computed OID", "simple");
    let other = env.proxy.connect(&env.proxy.token("2")).await;
    let sql = "SELECT count(*) FROM documents WHERE title = 'globex merger plan'";
    other.simple_query(sql).await.expect("tenant 2's query");
    let mut spy = env.session(Protocol::Simple).await;
    let mut reply = Transcript::default();
    let watch = "SELECT table_to_xml((SELECT oid FROM pg_class WHERE relname = 'pg_stat_' || 'activity')::regclass, \
                 true, false, '')";
    spy.run(Protocol::Simple, watch, &mut reply).await;
    env.judge(&label, Some(RUNS_SQL), &reply, Some(&mut spy)).await;
    spy.close().await;
    drop(other);
}

/// libpq's fast-path call of lo_get on tenant 2's large object.
async fn large_object_fast_path(env: &mut Env) {
    let label = env.label("fast-path lo_get of tenant 2's large object", "function call");
    let mut s = env.session(Protocol::Parse).await;
    let mut reply = Transcript::default();
    let call = Msgs::new().function_call_text(LO_GET_OID, &[&LARGE_OBJECT_OID.to_string()]);
    s.exchange(&call, &mut reply).await;
    if reply.texts.iter().any(|t| t.contains(MARKER_HEX)) {
        env.fail(&label, format!("the call returned tenant 2's large object: {:?}", reply.texts));
    }
    env.judge(&label, Some(LARGE_OBJECT), &reply, Some(&mut s)).await;
    s.close().await;
}

/// Route 6 of the review: the planner's row estimates come from statistics over every
/// tenant's rows, so EXPLAIN of a range answers "does another tenant have a value in it?".
/// Without the guard the estimates differ by what only tenant 2 holds; with it, EXPLAIN is
/// refused.
#[tokio::test]
async fn explain_estimates_show_other_tenants_values_and_explain_is_refused() {
    let _role = crate::harness::shared_role().await;
    crate::harness::setup();
    let su = postgres().superuser_client(Postgres::APP_DB).await;
    su.batch_execute(
        "CREATE TABLE IF NOT EXISTS attack_estimates (tenant_id integer NOT NULL, secret text NOT NULL);
         ALTER TABLE attack_estimates ENABLE ROW LEVEL SECURITY;
         ALTER TABLE attack_estimates FORCE ROW LEVEL SECURITY;
         DROP POLICY IF EXISTS tenant_isolation ON attack_estimates;
         CREATE POLICY tenant_isolation ON attack_estimates
             USING (tenant_id = current_setting('app.current_tenant', true)::integer);
         GRANT SELECT ON attack_estimates TO app_proxy;
         TRUNCATE attack_estimates;
         INSERT INTO attack_estimates SELECT 1, 'a-' || g FROM generate_series(1, 2000) g;
         INSERT INTO attack_estimates SELECT 2, 'salary-' || (70000 + g % 10) FROM generate_series(1, 2000) g;
         ANALYZE attack_estimates;",
    )
    .await
    .expect("the table");
    let estimate = |plan: &[tokio_postgres::SimpleQueryMessage]| -> u64 {
        let first = plan.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        let first = first.expect("a plan line");
        let rows = first.split("rows=").nth(1).and_then(|r| r.split(' ').next()).expect("rows=");
        rows.parse().expect("a row count")
    };
    let explain = |bound: &str| format!("EXPLAIN SELECT * FROM attack_estimates WHERE secret >= '{bound}'");

    let mut open = proxy::base_config(postgres());
    open.guard.enabled = false;
    let open = proxy::start(open).await;
    let tenant_one = open.connect(&open.token("1")).await;
    let below = estimate(&tenant_one.simple_query(&explain("salary-70000")).await.expect("explain"));
    let above = estimate(&tenant_one.simple_query(&explain("salary-70010")).await.expect("explain"));
    let own = tenant_one.simple_query("SELECT count(*) FROM attack_estimates WHERE secret >= 'b'").await.expect("read");
    let own_rows = own.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(own_rows.as_deref(), Some("0"), "tenant 1 has no row at or above 'b'");
    assert!(below > 10 * above.max(1), "tenant 1 sees no salary rows, yet the estimates are {below} and {above}");
    open.handle.shutdown();

    let guarded = proxy::start(proxy::base_config(postgres())).await;
    let tenant_one = guarded.connect(&guarded.token("1")).await;
    let err = tenant_one.simple_query(&explain("salary-70000")).await.expect_err("refused");
    assert_eq!(
        proxy::db_error(&err),
        (
            "42501".into(),
            "rlsproxy refused the statement: EXPLAIN (its row estimates show other tenants' data) (rule explain)"
                .into()
        )
    );
    guarded.handle.shutdown();
}

/// With `guard.allow_large_objects` (documented as not isolated), the large-object functions
/// and libpq's fast-path calls are relayed as before.
#[tokio::test]
async fn large_objects_are_relayed_when_allowed() {
    let _role = crate::harness::shared_role().await;
    crate::harness::setup();
    let mut cfg = proxy::base_config(postgres());
    cfg.guard.allow_large_objects = true;
    let p = proxy::start(cfg).await;
    let mut s = crate::session::Session::from_raw(crate::session::raw_login(&p, &p.token("1")).await);
    let mut reply = Transcript::default();
    s.run(Protocol::Simple, "SELECT lo_from_bytea(0, 'acme blob')::text", &mut reply).await;
    assert!(reply.errors.is_empty(), "{reply:?}");
    let oid = reply.first_column().pop().expect("an OID");
    let mut fast = Transcript::default();
    s.exchange(&Msgs::new().function_call_text(LO_GET_OID, &[&oid]), &mut fast).await;
    assert!(fast.errors.is_empty(), "{fast:?}");
    assert!(fast.texts.iter().any(|t| t.contains("\\x61636d6520626c6f62")), "{fast:?}");
    s.run(Protocol::Simple, &format!("SELECT lo_unlink({oid})"), &mut Transcript::default()).await;
    s.close().await;
    p.handle.shutdown();
}
