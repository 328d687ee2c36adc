//! Strict mode binds role policies to the signed role, and `migrations/0003_strict_mode.sql`
//! upgrades an install of its previous version in place. Against a real server, without the
//! proxy: app_proxy connects directly, sets signed values itself (as the proxy does) and then
//! switches role as an attacker with arbitrary SQL would.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use common::Postgres;
use rlsproxy::policy::strict;
use tokio_postgres::Client;

const KID: &str = "strict_roles_k1";
const KEY: [u8; 32] = [0x5a; 32];
const DOCS: &str = "strict_roles_docs";
/// The bound form of a role policy's expression, as pg_policies prints it.
const BOUND: &str = "(( SELECT rlsproxy.role() AS role) = (CURRENT_USER)::text)";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signed(tenant: &str, role: Option<&str>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    strict::sign(KID, &KEY, tenant, role, now + 3600)
}

fn psql(db: &str, args: &[&str]) -> Output {
    let out = common::postgres().superuser_psql(db).args(args).output().expect("run psql");
    assert!(out.status.success(), "psql {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The docs table (tenants 1 and 2) with role policies of every kind, converted twice.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let sql = format!(
            "INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('{KID}', '\\x{key}');
             CREATE TABLE {DOCS} (id int PRIMARY KEY, tenant_id int NOT NULL, title text NOT NULL);
             INSERT INTO {DOCS} VALUES (1, 1, 'one'), (2, 2, 'two');
             GRANT SELECT, INSERT, UPDATE, DELETE ON {DOCS} TO app_proxy, admin_role;
             CREATE POLICY admin_bypass ON {DOCS} FOR ALL TO admin_role USING (true) WITH CHECK (true);
             CREATE POLICY admin_reads ON {DOCS} FOR SELECT TO admin_role USING (tenant_id > 0);
             CREATE POLICY admin_inserts ON {DOCS} FOR INSERT TO admin_role WITH CHECK (true);
             CREATE POLICY admin_only_small ON {DOCS} AS RESTRICTIVE FOR ALL TO admin_role USING (id < 100);
             SELECT rlsproxy.enable_strict_policies('{DOCS}');
             SELECT rlsproxy.enable_strict_policies('{DOCS}');",
            key = hex(&KEY)
        );
        psql(Postgres::APP_DB, &["-c", &sql]);
    });
}

async fn app_proxy(db: &str) -> Client {
    common::connect(&common::postgres().proxy_config(db)).await
}

async fn titles(client: &Client, table: &str) -> Vec<String> {
    let rows = client.query(&format!("SELECT title FROM {table} ORDER BY id"), &[]).await.expect("select");
    rows.iter().map(|r| r.get(0)).collect()
}

/// (name, USING, WITH CHECK) of `table`'s policies, by name.
async fn policies(client: &Client, table: &str) -> Vec<(String, String, String)> {
    let sql = "SELECT policyname::text, coalesce(qual, ''), coalesce(with_check, '')
               FROM pg_policies WHERE tablename = $1 ORDER BY policyname";
    let rows = client.query(sql, &[&table]).await.expect("pg_policies");
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

#[tokio::test]
async fn role_policies_are_bound_once_and_restrictive_ones_left_alone() {
    setup();
    let su = common::postgres().superuser_client(Postgres::APP_DB).await;
    let bound = |expr: &str| format!("({expr} AND {BOUND})");
    let all = policies(&su, DOCS).await;
    let role_policies: Vec<_> = all.into_iter().filter(|p| p.0.starts_with("admin")).collect();
    assert_eq!(
        role_policies,
        vec![
            ("admin_bypass".into(), BOUND.into(), BOUND.into()),
            ("admin_inserts".into(), String::new(), BOUND.into()),
            ("admin_only_small".into(), "(id < 100)".into(), String::new()),
            ("admin_reads".into(), bound("(tenant_id > 0)"), String::new()),
        ]
    );
    // Already bound: a third run changes nothing.
    let again = su.query_one(&format!("SELECT rlsproxy.bind_role_policies('{DOCS}')"), &[]).await.expect("bind");
    assert_eq!(again.get::<_, i32>(0), 0);
}

#[tokio::test]
async fn a_role_switch_without_its_signed_role_gains_nothing() {
    setup();
    let client = app_proxy(Postgres::APP_DB).await;
    let set = |value: String| format!("SELECT set_config('rlsproxy.signed_context', '{value}', false)");
    client.batch_execute(&set(signed("1", None))).await.expect("tenant 1, no role");
    for switch in [
        "SET ROLE admin_role",
        "SELECT set_config('role', 'admin_role', false)",
        "DO $$ BEGIN EXECUTE 'SET ROLE ' || 'admin_role'; END $$",
    ] {
        client.batch_execute(switch).await.expect(switch);
        assert_eq!(titles(&client, DOCS).await, ["one"], "{switch}");
        let insert = client.execute(&format!("INSERT INTO {DOCS} VALUES (3, 2, 'planted')"), &[]).await;
        let err = insert.expect_err("insert a tenant-2 row as admin_role");
        assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{switch}: {err:?}");
        client.batch_execute("RESET ROLE").await.expect("reset role");
    }
    // Signed for another role: admin_role's policies still do not apply.
    client.batch_execute(&set(signed("1", Some("reader")))).await.expect("tenant 1, role reader");
    client.batch_execute("SET ROLE admin_role").await.expect("set role");
    assert_eq!(titles(&client, DOCS).await, ["one"]);
    client.batch_execute("RESET ROLE").await.expect("reset role");

    // Signed for admin_role: the admin's view, once the session is admin_role (as the proxy sets it).
    client.batch_execute(&set(signed("1", Some("admin_role")))).await.expect("tenant 1, admin_role");
    assert_eq!(titles(&client, DOCS).await, ["one"], "signed for admin_role, still app_proxy");
    client.batch_execute("SET ROLE admin_role").await.expect("set role");
    assert_eq!(titles(&client, DOCS).await, ["one", "two"]);
    client.batch_execute("RESET ROLE").await.expect("reset role");
}

/// A database set up with the previous version of 0003 (pgcrypto, definer accessors, role
/// policies left unbound) keeps working through the upgrade: the same keys verify, the
/// pgcrypto helper is gone, the accessors are inlined, and enable_strict_policies binds.
#[tokio::test]
async fn an_earlier_install_upgrades_in_place() {
    setup();
    let db = "strict_roles_upgrade";
    psql("postgres", &["-c", &format!("CREATE DATABASE {db}")]);
    let old = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/strict_upgrade/0003_strict_mode_v1.sql");
    let new = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0003_strict_mode.sql");
    psql(db, &["-f", old]);
    // The earlier install keeps its keys in rlsproxy; the upgrade moves them.
    let sql = format!(
        "INSERT INTO rlsproxy.keys (kid, secret) VALUES ('{KID}', '\\x{key}');
         CREATE TABLE docs (id int PRIMARY KEY, tenant_id int NOT NULL, title text NOT NULL);
         INSERT INTO docs VALUES (1, 1, 'one'), (2, 2, 'two');
         GRANT SELECT ON docs TO app_proxy, admin_role;
         CREATE POLICY admin_bypass ON docs FOR ALL TO admin_role USING (true) WITH CHECK (true);
         SELECT rlsproxy.enable_strict_policies('docs');",
        key = hex(&KEY)
    );
    psql(db, &["-c", &sql]);
    let client = app_proxy(db).await;
    let value = signed("1", None);
    client.query("SELECT set_config('rlsproxy.signed_context', $1, false)", &[&value]).await.expect("set");
    assert_eq!(titles(&client, "docs").await, ["one"], "before the upgrade");
    client.batch_execute("SET ROLE admin_role").await.expect("set role");
    assert_eq!(titles(&client, "docs").await, ["one", "two"], "before: the role switch gained every row");
    client.batch_execute("RESET ROLE").await.expect("reset role");

    for _ in 0..2 {
        let out = psql(db, &["-f", new]);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "the upgrade printed something");
    }
    assert_eq!(titles(&client, "docs").await, ["one"], "the same value verifies after the upgrade");
    let row = client
        .query_one(
            "SELECT to_regprocedure('rlsproxy.hmac_sha256(bytea, bytea)') IS NULL,
                    (SELECT bool_or(prosecdef) FROM pg_proc WHERE proname IN ('tenant_id', 'tenant', 'role')
                         AND pronamespace = 'rlsproxy'::regnamespace),
                    (SELECT count(*) FROM pg_class WHERE relname = 'keys'
                         AND relnamespace = 'rlsproxy'::regnamespace) = 0,
                    (SELECT string_agg(relnamespace::regnamespace || '.' || relname, ',' ORDER BY relname)
                         FROM pg_class WHERE relkind = 'S' AND relname IN
                         ('keys_epoch', 'admitted_hi', 'admitted_lo', 'admitted_tenant_id'))",
            &[],
        )
        .await
        .expect("catalog");
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1), row.get::<_, bool>(2)), (true, false, true));
    // The admission sequences moved too (no role but their owner may name them).
    assert_eq!(
        row.get::<_, String>(3),
        "rlsproxy_private.admitted_hi,rlsproxy_private.admitted_lo,rlsproxy_private.admitted_tenant_id,\
         rlsproxy_private.keys_epoch"
    );

    let su = common::postgres().superuser_client(db).await;
    su.batch_execute("SELECT rlsproxy.enable_strict_policies('docs')").await.expect("convert again");
    let admin = policies(&su, "docs").await.into_iter().find(|p| p.0 == "admin_bypass").expect("admin policy");
    assert_eq!(admin.1, BOUND);
    client.batch_execute("SET ROLE admin_role").await.expect("set role");
    assert_eq!(titles(&client, "docs").await, ["one"], "after: the role switch gains nothing");
}

/// The Alembic revision in `migrations/alembic/` (STRICT = True, its default) writes the same
/// policies as `enable_strict_policies`: run with a stand-in for `alembic.op` that prints
/// its SQL, in one database, and compared with the function's in another.
#[tokio::test]
async fn the_alembic_revision_writes_what_enable_strict_policies_does() {
    setup();
    let revision = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/alembic/versions/0001_rls_policies.py");
    let script = format!(
        "import importlib.util, sys, types\n\
         alembic = types.ModuleType('alembic')\n\
         alembic.op = types.SimpleNamespace(execute=lambda sql: print(sql + ';'))\n\
         sys.modules['alembic'] = alembic\n\
         spec = importlib.util.spec_from_file_location('revision', {revision:?})\n\
         module = importlib.util.module_from_spec(spec)\n\
         spec.loader.exec_module(module)\n\
         module.upgrade()\n"
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alembic_sql = String::from_utf8(out.stdout).expect("UTF-8 SQL");

    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0001_example_schema.sql");
    let strict_mode = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0003_strict_mode.sql");
    let mut seen = Vec::new();
    for (db, convert) in [
        ("strict_roles_alembic", alembic_sql.as_str()),
        (
            "strict_roles_function",
            "SELECT rlsproxy.enable_strict_policies('tenants', 'id');
             SELECT rlsproxy.enable_strict_policies('users');
             SELECT rlsproxy.enable_strict_policies('documents');",
        ),
    ] {
        psql("postgres", &["-c", &format!("CREATE DATABASE {db}")]);
        psql(db, &["-f", schema, "-f", strict_mode, "-c", convert]);
        let su = common::postgres().superuser_client(db).await;
        let rows = su
            .query(
                "SELECT concat_ws(' | ', tablename, policyname, permissive, cmd, roles::text, qual, with_check)
                 FROM pg_policies WHERE schemaname = 'public' ORDER BY tablename, policyname",
                &[],
            )
            .await
            .expect("pg_policies");
        seen.push(rows.iter().map(|r| r.get(0)).collect::<Vec<String>>());
    }
    assert_eq!(seen[0].len(), 15, "{:#?}", seen[0]);
    assert_eq!(seen[0], seen[1]);
}
