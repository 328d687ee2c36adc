//! Strict mode's SQL side against a real server: `migrations/0003_strict_mode.sql`
//! verifies values signed by `rlsproxy::policy::strict`, and strict policies give
//! app_proxy exactly the signed tenant's rows, whatever else the session says.
//!
//! The proxy is not involved: app_proxy connects directly and plays both the proxy
//! (setting the signed value with bind parameters) and an attacker who got arbitrary
//! SQL through (setting `app.current_tenant`, forging values, reading the keys).
//! Tables and keys are prefixed `strict_sql_`; this binary has its own cluster.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use common::Postgres;
use rlsproxy::policy::strict;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

const K1: &str = "strict_sql_k1";
const K2: &str = "strict_sql_k2";
const KEY1: [u8; 32] = [0x11; 32];
const KEY2: [u8; 32] = [0x22; 32];
/// Docs table with an integer tenant column.
const DOCS: &str = "strict_sql_docs";
/// Rows of [`DOCS`]: (tenant, title).
const TENANT1: [(i32, &str); 2] = [(1, "one-a"), (1, "one-b")];
const TENANT2: [(i32, &str); 1] = [(2, "two-a")];

/// Held by the tests that change or lock the keys (which moves the epoch or makes admissions
/// fall back to the slow way) and by those that check what an admission recorded, so that one
/// never runs in the middle of another. (Which rows a session sees is the same either way.)
static KEYS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Runs `args` (e.g. `-f file` or `-c sql`) with psql as the superuser on `app`;
/// panics unless it succeeds; returns its output.
fn superuser_psql(args: &[&str]) -> Output {
    let out = common::postgres().superuser_psql(Postgres::APP_DB).args(args).output().expect("run psql");
    assert!(
        out.status.success(),
        "psql {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Once per binary: 0003 applied twice more (the harness applied it already), two
/// keys, the docs table under strict policies (enabled twice), rows for tenants 1 and 2.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let migration = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0003_strict_mode.sql");
        for _ in 0..2 {
            let out = superuser_psql(&["-f", migration]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.trim().is_empty(), "a re-run of 0003 printed:\n{stderr}");
        }
        let mut rows: Vec<String> = Vec::new();
        for (tenant, title) in TENANT1.iter().chain(&TENANT2) {
            rows.push(format!("({tenant}, '{title}')"));
        }
        let sql = format!(
            "INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('{K1}', '\\x{k1}'), ('{K2}', '\\x{k2}')
                 ON CONFLICT (kid) DO UPDATE SET secret = excluded.secret;
             CREATE TABLE {DOCS} (id serial PRIMARY KEY, tenant_id integer NOT NULL, title text NOT NULL);
             GRANT SELECT, INSERT, UPDATE, DELETE ON {DOCS} TO app_proxy;
             GRANT USAGE ON SEQUENCE {DOCS}_id_seq TO app_proxy;
             SELECT rlsproxy.enable_strict_policies('{DOCS}');
             SELECT rlsproxy.enable_strict_policies('{DOCS}', 'tenant_id');
             INSERT INTO {DOCS} (tenant_id, title) VALUES {rows};",
            k1 = hex(&KEY1),
            k2 = hex(&KEY2),
            rows = rows.join(", "),
        );
        superuser_psql(&["-c", &sql]);
    });
}

async fn proxy_client() -> Client {
    setup();
    common::connect(&common::postgres().proxy_config(Postgres::APP_DB)).await
}

/// Sets the settings with bind parameters, as a session that does not admit the value.
async fn set_context(client: &Client, signed: &str, current_tenant: &str) {
    set_context_as(client, signed, current_tenant, false).await;
}

/// Sets the settings with bind parameters and, with `admit`, admits the value as the proxy
/// does when a connection takes a context afresh (forced; its policies then take the admitted
/// way).
async fn set_context_as(client: &Client, signed: &str, current_tenant: &str, admit: bool) {
    client
        .query(
            "SELECT set_config('rlsproxy.signed_context', $1, false), set_config('app.current_tenant', $2, false),
                    CASE WHEN $3 THEN rlsproxy.admit($1, true) END",
            &[&signed, &current_tenant, &admit],
        )
        .await
        .expect("set the context");
}

/// (tenant_id, title) of the rows of [`DOCS`] the session sees, by id.
async fn visible(client: &Client) -> Vec<(i32, String)> {
    let rows = client.query(&format!("SELECT tenant_id, title FROM {DOCS} ORDER BY id"), &[]).await.expect("select");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn rows_of(expected: &[(i32, &str)]) -> Vec<(i32, String)> {
    expected.iter().map(|(t, s)| (*t, s.to_string())).collect()
}

/// `rlsproxy.verified_context()` as the session sees it.
async fn verified(client: &Client) -> Option<serde_json::Value> {
    let row = client.query_one("SELECT rlsproxy.verified_context()::text", &[]).await.expect("verified_context");
    row.get::<_, Option<&str>>(0).map(|json| serde_json::from_str(json).expect("verified_context is JSON"))
}

fn insufficient_privilege(result: Result<impl std::fmt::Debug, tokio_postgres::Error>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{what}: {err:?}");
}

#[tokio::test]
async fn signed_tenant_sees_exactly_its_rows() {
    // Both ways: verified in every statement, and admitted first as the proxy does.
    for admit in [false, true] {
        let client = proxy_client().await;
        set_context_as(&client, &strict::sign(K1, &KEY1, "1", None, now() + 3600), "1", admit).await;
        assert_eq!(visible(&client).await, rows_of(&TENANT1));
        let ctx = verified(&client).await.expect("a valid context");
        assert_eq!(ctx["tenant"], "1");
        assert_eq!(ctx["kid"], K1);
        assert!(ctx["role"].is_null());

        set_context_as(&client, &strict::sign(K1, &KEY1, "2", Some("reader"), now() + 3600), "2", admit).await;
        assert_eq!(visible(&client).await, rows_of(&TENANT2));
        let row = client
            .query_one("SELECT rlsproxy.tenant_id(), rlsproxy.tenant(), rlsproxy.role()", &[])
            .await
            .expect("accessors");
        assert_eq!((row.get(0), row.get(1), row.get(2)), (Some(2), Some("2"), Some("reader")));
    }
}

#[tokio::test]
async fn app_current_tenant_cannot_override_the_signed_tenant() {
    let client = proxy_client().await;
    set_context(&client, &strict::sign(K1, &KEY1, "1", None, now() + 3600), "2").await;
    assert_eq!(visible(&client).await, rows_of(&TENANT1));
    // The attacker's own set_config, also inside the statement that reads.
    client.query("SELECT set_config('app.current_tenant', '2', false)", &[]).await.expect("set_config");
    assert_eq!(visible(&client).await, rows_of(&TENANT1));
    let rows = client
        .query(
            &format!("SELECT title FROM {DOCS} WHERE set_config('app.current_tenant', '2', true) = '2' ORDER BY id"),
            &[],
        )
        .await
        .expect("select");
    assert_eq!(rows.len(), TENANT1.len());
}

#[tokio::test]
async fn invalid_values_see_no_rows_and_raise_nothing() {
    // Both ways: verified in every statement, and admitted first as the proxy does.
    for admit in [false, true] {
        let client = proxy_client().await;
        // Never set in this session: missing.
        assert_eq!(verified(&client).await, None);
        assert_eq!(visible(&client).await, vec![]);

        let exp = now() + 3600;
        let valid1 = strict::sign(K1, &KEY1, "1", None, exp);
        let valid2 = strict::sign(K1, &KEY1, "2", None, exp);
        let fields = |v: &str| v.split('.').map(str::to_string).collect::<Vec<_>>();
        let (f1, f2) = (fields(&valid1), fields(&valid2));
        let mut flipped = f1.clone();
        flipped[3] = format!("{}{}", if f1[3].starts_with('A') { "B" } else { "A" }, &f1[3][1..]);
        let cases: Vec<(&str, String)> = vec![
            ("empty (the proxy's clear)", String::new()),
            ("garbage", "garbage".into()),
            ("forged signature", format!("{}.{}.{}.{}", f1[0], f1[1], f1[2], "A".repeat(43))),
            ("one MAC character changed", flipped.join(".")),
            ("signed with a key that is not K1's", strict::sign(K1, &[0x33; 32], "1", None, exp)),
            ("tampered payload: tenant 2 with tenant 1's MAC", format!("{}.{}.{}.{}", f1[0], f1[1], f2[2], f1[3])),
            ("another kid's MAC moved to K2", format!("{}.{K2}.{}.{}", f1[0], f1[2], f1[3])),
            ("expired", strict::sign(K1, &KEY1, "1", None, now() - 10)),
            ("expired at 0", strict::sign(K1, &KEY1, "1", None, 0)),
            ("unknown kid", strict::sign("strict_sql_unknown", &KEY1, "1", None, exp)),
            ("kid with a dot", strict::sign("strict_sql_k1.x", &KEY1, "1", None, exp)),
            ("version 2", format!("v2{}", &valid1[2..])),
            ("a fifth field", format!("{valid1}.x")),
            ("padding", format!("{valid1}=")),
            ("'+' for '-' and '_'", valid1.replace(['-', '_'], "+")),
            ("surrounding space", format!(" {valid1}")),
            ("oversized", format!("{}.{}.{}.{}", f1[0], f1[1], "A".repeat(10_000), f1[3])),
        ];
        for (what, value) in cases {
            assert_ne!(value, valid1, "{what}: the case must differ from the valid value");
            set_context_as(&client, &value, "1", admit).await;
            assert_eq!(verified(&client).await, None, "{what}: {value}");
            assert_eq!(visible(&client).await, vec![], "{what}: {value}");
        }
        // The same session with the valid value again: the cases above did not break it.
        set_context_as(&client, &valid1, "2", admit).await;
        assert_eq!(visible(&client).await, rows_of(&TENANT1));
    }
}

#[tokio::test]
async fn non_integer_tenants_have_no_tenant_id() {
    // Both ways: verified in every statement, and admitted first as the proxy does.
    for admit in [false, true] {
        let client = proxy_client().await;
        for tenant in ["acme", "1.0", " 1", "99999999999", "2147483648", ""] {
            set_context_as(&client, &strict::sign(K1, &KEY1, tenant, None, now() + 60), "1", admit).await;
            let row = client.query_one("SELECT rlsproxy.tenant_id(), rlsproxy.tenant()", &[]).await.expect("accessors");
            assert_eq!(
                (row.get::<_, Option<i32>>(0), row.get::<_, Option<&str>>(1)),
                (None, Some(tenant)),
                "{tenant:?}"
            );
            assert_eq!(visible(&client).await, vec![], "{tenant:?}");
        }
        set_context_as(&client, &strict::sign(K1, &KEY1, "-2147483648", None, now() + 60), "1", admit).await;
        let row = client.query_one("SELECT rlsproxy.tenant_id()", &[]).await.expect("tenant_id");
        assert_eq!(row.get::<_, Option<i32>>(0), Some(i32::MIN));
    }
}

#[tokio::test]
async fn two_keys_verify_at_once_and_a_deleted_key_revokes() {
    let _keys = KEYS.lock().await;
    // Both ways: verified in every statement, and admitted first as the proxy does.
    for admit in [false, true] {
        let client = proxy_client().await;
        for (kid, key) in [(K1, &KEY1), (K2, &KEY2)] {
            set_context_as(&client, &strict::sign(kid, key, "2", None, now() + 3600), "1", admit).await;
            assert_eq!(visible(&client).await, rows_of(&TENANT2), "{kid}");
            // Each key verifies only under its own kid.
            let other = if kid == K1 { K2 } else { K1 };
            set_context_as(&client, &strict::sign(other, key, "2", None, now() + 3600), "1", admit).await;
            assert_eq!(visible(&client).await, vec![], "{kid}'s key under {other}");
        }

        // A third key, added then retired (the end of a rotation, or a compromise).
        let k3 = "strict_sql_k3";
        let key3 = [0x44u8; 32];
        superuser_psql(&[
            "-c",
            &format!("INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('{k3}', '\\x{}')", hex(&key3)),
        ]);
        let value = strict::sign(k3, &key3, "1", None, now() + 3600);
        set_context_as(&client, &value, "1", admit).await;
        assert_eq!(visible(&client).await, rows_of(&TENANT1));
        superuser_psql(&["-c", &format!("DELETE FROM rlsproxy_private.keys WHERE kid = '{k3}'")]);
        assert_eq!(visible(&client).await, vec![], "a value signed with a deleted key");
    }
}

/// Every change of the keys moves the epoch, also where only row triggers fire (logical
/// replication's apply on a subscriber) and under `session_replication_role = replica`.
#[tokio::test]
async fn a_change_of_the_keys_moves_the_epoch_by_row_and_by_statement() {
    let su = common::postgres().superuser_client("app").await;
    let rows = su
        .query(
            "SELECT tgname::text, tgenabled::text, (tgtype & 1) = 1 FROM pg_trigger \
             WHERE tgrelid = 'rlsproxy_private.keys'::regclass AND NOT tgisinternal ORDER BY tgname",
            &[],
        )
        .await
        .expect("triggers");
    let triggers: Vec<(String, String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        triggers,
        [("keys_changed".into(), "A".into(), false), ("keys_changed_row".into(), "A".into(), true)],
        "a statement trigger and a row trigger, both enabled ALWAYS"
    );
}

#[tokio::test]
async fn writes_are_confined_to_the_signed_tenant() {
    let client = proxy_client().await;
    client.batch_execute("BEGIN").await.expect("begin");
    set_context(&client, &strict::sign(K1, &KEY1, "1", None, now() + 3600), "2").await;
    let insert = format!("INSERT INTO {DOCS} (tenant_id, title) VALUES ($1, 'written')");
    assert_eq!(client.execute(&insert, &[&1i32]).await.expect("own tenant's row"), 1);
    let updated = client.execute(&format!("UPDATE {DOCS} SET title = 'x' WHERE tenant_id = 2"), &[]).await;
    assert_eq!(updated.expect("update"), 0);
    let deleted = client.execute(&format!("DELETE FROM {DOCS} WHERE tenant_id = 2"), &[]).await;
    assert_eq!(deleted.expect("delete"), 0);
    client.batch_execute("SAVEPOINT s").await.expect("savepoint");
    insufficient_privilege(client.execute(&insert, &[&2i32]).await, "insert a row of tenant 2");
    client.batch_execute("ROLLBACK TO s").await.expect("rollback to savepoint");
    insufficient_privilege(
        client.execute(&format!("UPDATE {DOCS} SET tenant_id = 2 WHERE tenant_id = 1"), &[]).await,
        "move own rows to tenant 2",
    );
    client.batch_execute("ROLLBACK").await.expect("rollback");
}

#[tokio::test]
async fn the_app_role_cannot_read_keys_or_replace_the_verifier() {
    let _keys = KEYS.lock().await;
    let client = proxy_client().await;
    insufficient_privilege(client.query("SELECT * FROM rlsproxy_private.keys", &[]).await, "select the keys");
    insufficient_privilege(client.query("SELECT count(*) FROM rlsproxy_private.keys", &[]).await, "count the keys");
    insufficient_privilege(
        client
            .batch_execute(
                "CREATE OR REPLACE FUNCTION rlsproxy.verified_context() RETURNS jsonb
                 LANGUAGE sql AS $$ SELECT '{\"tenant\":\"2\",\"exp\":9999999999}'::jsonb $$",
            )
            .await,
        "replace verified_context",
    );
    insufficient_privilege(
        client
            .batch_execute("CREATE OR REPLACE FUNCTION rlsproxy.tenant_id() RETURNS integer LANGUAGE sql AS 'SELECT 2'")
            .await,
        "replace tenant_id",
    );
    insufficient_privilege(client.batch_execute("CREATE TABLE rlsproxy.mine (x int)").await, "create in the schema");
    insufficient_privilege(client.batch_execute("ALTER FUNCTION rlsproxy.tenant_id() RESET ALL").await, "alter");
    insufficient_privilege(client.batch_execute("DROP FUNCTION rlsproxy.tenant_id()").await, "drop");
    insufficient_privilege(client.batch_execute("SET ROLE rlsproxy_owner").await, "become the owner");
    insufficient_privilege(
        client.query("SELECT rlsproxy.hmac_pad('x', 54)", &[]).await,
        "call the internal HMAC helper",
    );
    insufficient_privilege(
        client
            .batch_execute(
                "CREATE OR REPLACE FUNCTION rlsproxy.context(
                     OUT tenant text, OUT tenant_id integer, OUT role text, OUT kid text, OUT payload json)
                 LANGUAGE sql AS $$ SELECT '2', 2, 'admin_role', 'k', NULL::json $$",
            )
            .await,
        "replace the verifier",
    );
    insufficient_privilege(
        client.query(&format!("SELECT rlsproxy.bind_role_policies('{DOCS}')"), &[]).await,
        "rewrite the role policies",
    );
    insufficient_privilege(
        client.query(&format!("SELECT rlsproxy.enable_strict_policies('{DOCS}')"), &[]).await,
        "rewrite the policies",
    );
    // Nor name them: what PostgreSQL locks before it checks privileges (a PREPARE of a
    // DELETE, a trigger), so that no lock request of a client can hold off a revocation.
    for sql in [
        "PREPARE rlsproxy_keys_probe AS DELETE FROM rlsproxy_private.keys",
        "CREATE TRIGGER t AFTER DELETE ON rlsproxy_private.keys EXECUTE FUNCTION rlsproxy.keys_changed()",
        "LOCK TABLE rlsproxy_private.keys IN ACCESS SHARE MODE",
    ] {
        let err = client.batch_execute(&format!("BEGIN; {sql}")).await.expect_err(sql);
        assert_eq!(
            err.as_db_error().map(|e| (e.code().code(), e.message())),
            Some(("42501", "permission denied for schema rlsproxy_private")),
            "{sql}"
        );
        client.batch_execute("ROLLBACK").await.expect("rollback");
    }
    // admin_role (reachable by SET ROLE from app_proxy) cannot read them either.
    client.batch_execute("SET ROLE admin_role").await.expect("set role admin_role");
    insufficient_privilege(
        client.query("SELECT * FROM rlsproxy_private.keys", &[]).await,
        "select the keys as admin_role",
    );
    client.batch_execute("RESET ROLE").await.expect("reset role");

    // The privileges as the catalog states them.
    let row = client
        .query_one(
            "SELECT has_schema_privilege('app_proxy', 'rlsproxy_private', 'USAGE'),
                    has_schema_privilege('admin_role', 'rlsproxy_private', 'USAGE'),
                    has_schema_privilege('app_proxy', 'rlsproxy', 'CREATE'),
                    pg_has_role('app_proxy', 'rlsproxy_owner', 'MEMBER'),
                    has_function_privilege('app_proxy', 'rlsproxy.tenant_id()', 'EXECUTE'),
                    (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'rlsproxy_owner')",
            &[],
        )
        .await
        .expect("privileges");
    let privileges: (bool, bool, bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
    assert_eq!(privileges, (false, false, false, false, true, false));
}

#[tokio::test]
async fn shadowing_objects_in_pg_temp_changes_nothing() {
    let client = proxy_client().await;
    // An attacker's own key table, first on its search_path: the verifier reads rlsproxy_private.keys only.
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE keys (kid text, secret bytea);
             INSERT INTO pg_temp.keys VALUES ('strict_sql_mine', '\\x{}');
             SET search_path = pg_temp, rlsproxy, public",
            hex(&[0x55; 32])
        ))
        .await
        .expect("temp key table");
    set_context(&client, &strict::sign("strict_sql_mine", &[0x55; 32], "2", None, now() + 3600), "2").await;
    assert_eq!(verified(&client).await, None);
    assert_eq!(visible(&client).await, vec![]);
    // And K1's genuine value still verifies with that search_path.
    set_context(&client, &strict::sign(K1, &KEY1, "1", None, now() + 3600), "2").await;
    assert_eq!(visible(&client).await, rows_of(&TENANT1));
}

#[tokio::test]
async fn functions_and_policies_are_as_designed() {
    let client = proxy_client().await;
    // Two SECURITY DEFINER functions (the verifier, and the admission that records what it
    // verified); every PL/pgSQL function but tenant_id() pins its search_path (tenant_id()
    // qualifies every name instead), every SQL function has a standard-SQL body (names bound when
    // created), all owned by rlsproxy_owner; the pgcrypto helper of earlier versions is gone.
    let rows = client
        .query(
            "SELECT p.proname::text, p.prosecdef, p.provolatile::text, pg_get_userbyid(p.proowner)::text,
                    coalesce(array_to_string(p.proconfig, ','), ''), p.prosqlbody IS NOT NULL
             FROM pg_proc p WHERE p.pronamespace = 'rlsproxy'::regnamespace ORDER BY p.proname",
            &[],
        )
        .await
        .expect("pg_proc");
    let functions: Vec<(String, bool, String, String, String, bool)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect();
    let expect = |name: &str, definer: bool, volatility: &str, plpgsql: bool| {
        let config = if plpgsql && name != "tenant_id" { "search_path=pg_catalog, pg_temp" } else { "" };
        (name.to_string(), definer, volatility.to_string(), "rlsproxy_owner".to_string(), config.to_string(), !plpgsql)
    };
    assert_eq!(
        functions,
        vec![
            expect("admission_key", false, "s", false),
            expect("admission_marker", false, "v", false),
            expect("admit", false, "v", false),
            expect("admitted_hi", false, "v", false),
            expect("admitted_lo", false, "v", false),
            expect("admitted_tenant", false, "v", false),
            // migrations/0006_advisory_locks.sql: per-tenant advisory lock keys.
            expect("advisory_hash", false, "i", false),
            expect("advisory_key", false, "i", false),
            expect("advisory_key", false, "i", false),
            expect("bind_role_policies", false, "v", true),
            // migrations/0005_notify.sql: per-tenant channels (SECURITY INVOKER).
            expect("channel", false, "i", true),
            expect("context", false, "s", true),
            expect("enable_strict_policies", false, "v", true),
            expect("hmac_pad", false, "i", false),
            expect("int4_or_null", false, "i", false),
            expect("is_admitted", false, "v", false),
            expect("keys_changed", false, "v", true),
            expect("notify", false, "v", true),
            expect("payload_of", false, "s", false),
            expect("record_admission", true, "v", true),
            expect("role", false, "s", false),
            expect("tenant", false, "s", false),
            expect("tenant_id", false, "s", true),
            expect("tenant_uuid", false, "s", false),
            expect("verified_context", false, "s", false),
            expect("verify", true, "s", true),
        ]
    );
    // The text accessors are inlined: a policy's InitPlan calls context() once, nothing nested.
    for field in ["tenant", "role"] {
        let accessor = field;
        let rows = client.query(&format!("EXPLAIN VERBOSE SELECT rlsproxy.{accessor}()"), &[]).await.expect("plan");
        let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let inlined = format!("Output: (rlsproxy.context()).{field}");
        assert_eq!(plan.get(1).map(|l| l.trim()), Some(inlined.as_str()), "{plan:#?}");
    }

    // Four per-command policies (enable_strict_policies ran twice), RLS enabled and forced.
    let rows = client
        .query(
            "SELECT policyname::text, cmd, coalesce(qual, ''), coalesce(with_check, '')
             FROM pg_policies WHERE tablename = $1 ORDER BY policyname",
            &[&DOCS],
        )
        .await
        .expect("pg_policies");
    let policies: Vec<(String, String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let same = "(tenant_id = ( SELECT rlsproxy.tenant_id() AS tenant_id))".to_string();
    let policy = |name: &str, cmd: &str, using: bool, check: bool| {
        let pick = |on: bool| if on { same.clone() } else { String::new() };
        (name.to_string(), cmd.to_string(), pick(using), pick(check))
    };
    assert_eq!(
        policies,
        vec![
            policy("tenant_isolation", "SELECT", true, false),
            policy("tenant_isolation_delete", "DELETE", true, false),
            policy("tenant_isolation_insert", "INSERT", false, true),
            policy("tenant_isolation_update", "UPDATE", true, true),
        ]
    );
    let row = client
        .query_one("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::text::regclass", &[&DOCS])
        .await
        .expect("pg_class");
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (true, true));

    // The wrapped form: verified once per statement, as an InitPlan.
    set_context(&client, &strict::sign(K1, &KEY1, "1", None, now() + 3600), "1").await;
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN SELECT * FROM {DOCS}"), &[])
        .await
        .expect("explain")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("InitPlan")), "{plan:#?}");
}

#[tokio::test]
async fn text_tenant_columns_and_conflicting_policies() {
    setup();
    let out = superuser_psql(&[
        "-c",
        "CREATE TABLE strict_sql_notes (id serial PRIMARY KEY, tenant varchar(20) NOT NULL, note text NOT NULL);
         CREATE POLICY legacy ON strict_sql_notes USING (tenant = current_setting('app.current_tenant'));
         SELECT rlsproxy.enable_strict_policies('strict_sql_notes', 'tenant');
         DROP POLICY legacy ON strict_sql_notes;
         GRANT SELECT ON strict_sql_notes TO app_proxy;
         INSERT INTO strict_sql_notes (tenant, note) VALUES ('acme', 'a'), ('globex', 'g');",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARNING:  other permissive policies for PUBLIC on public.strict_sql_notes: legacy"),
        "{stderr}"
    );

    let client = proxy_client().await;
    set_context(&client, &strict::sign(K2, &KEY2, "acme", None, now() + 3600), "globex").await;
    let rows = client.query("SELECT note FROM strict_sql_notes", &[]).await.expect("select notes");
    assert_eq!(rows.iter().map(|r| r.get(0)).collect::<Vec<String>>(), ["a"]);

    // Columns that are missing or of another type are refused.
    for (sql, code) in [
        ("SELECT rlsproxy.enable_strict_policies('strict_sql_notes', 'nope')", "42703"),
        ("SELECT rlsproxy.enable_strict_policies('strict_sql_notes', 'id')", ""),
        ("SELECT rlsproxy.enable_strict_policies('pg_class', 'relname')", "42804"),
    ] {
        let out = common::postgres()
            .superuser_psql(Postgres::APP_DB)
            .args(["-v", "VERBOSITY=verbose", "-c", &format!("BEGIN; {sql}; ROLLBACK;")])
            .output()
            .expect("run psql");
        if code.is_empty() {
            assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && stderr.contains(&format!("ERROR:  {code}:")), "{sql}: {stderr}");
        }
    }
}

/// The notes of `strict_sql_orgs` the session sees, by id.
async fn notes(client: &Client) -> Vec<String> {
    let rows = client.query("SELECT note FROM strict_sql_orgs ORDER BY id", &[]).await.expect("select");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn uuid_tenant_columns() {
    const A: &str = "3f0c2a9e-1b7d-4e5f-8a6b-9c0d1e2f3a4b";
    const B: &str = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
    setup();
    superuser_psql(&[
        "-c",
        &format!(
            "CREATE TABLE strict_sql_orgs (id serial PRIMARY KEY, org uuid NOT NULL, note text NOT NULL);
             SELECT rlsproxy.enable_strict_policies('strict_sql_orgs', 'org');
             GRANT SELECT, INSERT ON strict_sql_orgs TO app_proxy;
             INSERT INTO strict_sql_orgs (org, note) VALUES ('{A}', 'a'), ('{B}', 'b');"
        ),
    ]);
    let client = proxy_client().await;
    for admit in [false, true] {
        // The signed tenant's rows, whatever app.current_tenant says.
        set_context_as(&client, &strict::sign(K1, &KEY1, A, None, now() + 3600), B, admit).await;
        assert_eq!(notes(&client).await, ["a"], "admit {admit}");
        // Another spelling of the same uuid, or a tenant that is no uuid: no rows, no error.
        set_context_as(&client, &strict::sign(K1, &KEY1, &A.to_uppercase(), None, now() + 3600), A, admit).await;
        assert!(notes(&client).await.is_empty(), "admit {admit}");
        set_context_as(&client, &strict::sign(K1, &KEY1, "7", None, now() + 3600), A, admit).await;
        assert!(notes(&client).await.is_empty(), "admit {admit}");
    }
    // Inserts are held to the signed tenant.
    set_context_as(&client, &strict::sign(K1, &KEY1, A, None, now() + 3600), B, true).await;
    let err = client
        .execute(&format!("INSERT INTO strict_sql_orgs (org, note) VALUES ('{B}', 'forged')"), &[])
        .await
        .expect_err("another tenant's row");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{err:?}");
}

/// The admitted way: what a session admitted counts only for that exact value, under the keys
/// it was verified with and until it expires; the records behind it are out of app_proxy's
/// reach; where nothing can be recorded, values are verified the slow way.
#[tokio::test]
async fn admissions_are_unforgeable_and_follow_the_value() {
    let _keys = KEYS.lock().await;
    let client = proxy_client().await;
    let exp = now() + 3600;
    let valid1 = strict::sign(K1, &KEY1, "1", None, exp);
    let valid2 = strict::sign(K1, &KEY1, "2", None, exp);
    set_context_as(&client, &valid1, "2", true).await;
    assert_eq!(visible(&client).await, rows_of(&TENANT1));
    let admitted = |v: &str| {
        let v = v.to_string();
        let client = &client;
        async move {
            client.query_one("SELECT rlsproxy.is_admitted($1)", &[&v]).await.expect("is_admitted").get::<_, bool>(0)
        }
    };
    assert!(admitted(&valid1).await);
    // What the proxy sends in every later transaction of that client: admitted already.
    let again = client.query_one("SELECT rlsproxy.admit($1)", &[&valid1]).await.expect("admit").get::<_, bool>(0);
    assert!(again && admitted(&valid1).await);

    // The records cannot be written by app_proxy, however it asks.
    for sql in [
        "SELECT setval('rlsproxy_private.admitted_tenant_id', 2)",
        "SELECT nextval('rlsproxy_private.admitted_hi')",
        "SELECT setval('rlsproxy_private.keys_epoch', 1)",
        "ALTER SEQUENCE rlsproxy_private.admitted_lo RESTART",
        // By OID, past the schema: the sequence's own privilege refuses.
        "SELECT setval(c.oid, 2) FROM pg_class c WHERE c.relname = 'admitted_tenant_id' AND c.relkind = 'S'",
        "SELECT nextval(c.oid) FROM pg_class c WHERE c.relname = 'keys_epoch' AND c.relkind = 'S'",
    ] {
        insufficient_privilege(client.batch_execute(sql).await, sql);
    }

    // Another value in the setting is not the admitted one: verified as it is.
    let fields: Vec<&str> = valid1.split('.').collect();
    let tampered = format!("{}.{}.{}.{}", fields[0], fields[1], valid2.split('.').nth(2).expect("payload"), fields[3]);
    for (value, rows) in [(&tampered, vec![]), (&valid2, rows_of(&TENANT2)), (&valid1, rows_of(&TENANT1))] {
        set_context_as(&client, value, "1", false).await;
        assert_eq!(visible(&client).await, rows, "{value}");
    }
    // A marker set by hand (the one an admission under the current keys sets) does not admit
    // anything either: an unforced admit then records nothing, and what is recorded is not the
    // tampered value's.
    client
        .batch_execute("SELECT set_config('rlsproxy.admitted', rlsproxy.admission_marker(), false)")
        .await
        .expect("marker");
    set_context_as(&client, &tampered, "1", true).await;
    assert_eq!(visible(&client).await, vec![]);
    assert!(!admitted(&tampered).await);
    let forced =
        client.query_one("SELECT rlsproxy.admit($1, true)", &[&tampered]).await.expect("admit").get::<_, bool>(0);
    assert!(!forced, "a tampered value is not admitted");
    assert!(!admitted(&tampered).await);
    assert_eq!(visible(&client).await, vec![]);

    // DISCARD SEQUENCES empties the records but not the marker: statements fail, no row is
    // shown, until the value is admitted again (the proxy forces that after a DISCARD).
    set_context_as(&client, &valid1, "1", true).await;
    client.batch_execute("DISCARD SEQUENCES").await.expect("discard");
    let err = client.query(&format!("SELECT * FROM {DOCS}"), &[]).await.expect_err("records are gone");
    assert_eq!(err.code(), Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE), "{err:?}");
    client.query("SELECT rlsproxy.admit($1, true)", &[&valid1]).await.expect("admit again");
    assert_eq!(visible(&client).await, rows_of(&TENANT1));

    // A read-only transaction records nothing (a standby could not): verified the slow way.
    client.batch_execute("BEGIN READ ONLY").await.expect("begin");
    set_context_as(&client, &valid2, "1", true).await;
    assert!(!admitted(&valid2).await);
    assert_eq!(visible(&client).await, rows_of(&TENANT2));
    client.batch_execute("COMMIT").await.expect("commit");

    // An admitted value expires when it says.
    let short = strict::sign(K1, &KEY1, "1", None, now() + 2);
    set_context_as(&client, &short, "1", true).await;
    assert!(admitted(&short).await);
    assert_eq!(visible(&client).await, rows_of(&TENANT1));
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(visible(&client).await, vec![], "expired");
    let row = client.query_one("SELECT rlsproxy.tenant_id(), rlsproxy.tenant()", &[]).await.expect("accessors");
    assert_eq!((row.get::<_, Option<i32>>(0), row.get::<_, Option<&str>>(1)), (None, None));
}

/// Ways around an admission's checks found by trying: no value in the setting at all, a key
/// deleted with triggers off, a key change in progress (admitting must not wait for it).
#[tokio::test]
async fn admissions_hold_without_a_value_with_triggers_off_and_during_key_changes() {
    let _keys = KEYS.lock().await;
    let client = proxy_client().await;
    let valid1 = strict::sign(K1, &KEY1, "1", None, now() + 3600);
    // Recorded, but the session never set a value: nothing is admitted for "no value".
    client.query("SELECT rlsproxy.record_admission($1)", &[&valid1]).await.expect("record");
    let row = client.query_one("SELECT rlsproxy.tenant_id(), rlsproxy.tenant()", &[]).await.expect("accessors");
    assert_eq!((row.get::<_, Option<i32>>(0), row.get::<_, Option<&str>>(1)), (None, None));
    assert_eq!(visible(&client).await, vec![]);

    // A key deleted as logical replication's apply would (session_replication_role = replica).
    let k5 = "strict_sql_k5";
    let key5 = [0x66u8; 32];
    superuser_psql(&[
        "-c",
        &format!("INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('{k5}', '\\x{}')", hex(&key5)),
    ]);
    let value = strict::sign(k5, &key5, "2", None, now() + 3600);
    set_context_as(&client, &value, "1", true).await;
    assert_eq!(visible(&client).await, rows_of(&TENANT2));
    superuser_psql(&[
        "-c",
        &format!("SET session_replication_role = replica; DELETE FROM rlsproxy_private.keys WHERE kid = '{k5}'"),
    ]);
    assert_eq!(visible(&client).await, vec![], "a key deleted with triggers in replica mode");

    // A key change in progress: admitting does not wait for it, it verifies the slow way.
    let admin = common::postgres().superuser_client(Postgres::APP_DB).await;
    admin
        .batch_execute(
            "BEGIN; INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('strict_sql_k6', decode(repeat('77', 32), 'hex'))",
        )
        .await
        .expect("key change in progress");
    client.batch_execute("SET statement_timeout = '5s'").await.expect("timeout");
    let valid2 = strict::sign(K1, &KEY1, "2", None, now() + 3600);
    set_context_as(&client, &valid2, "1", true).await;
    let row =
        client.query_one("SELECT rlsproxy.admit($1, true), rlsproxy.is_admitted($1)", &[&valid2]).await.expect("admit");
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (true, false));
    assert_eq!(visible(&client).await, rows_of(&TENANT2));
    admin.batch_execute("ROLLBACK").await.expect("rollback");

    // Records emptied by DISCARD SEQUENCES while the keys are locked: the admission that cannot
    // be recorded clears the marker, so statements verify the slow way instead of failing.
    client.query("SELECT rlsproxy.admit($1, true)", &[&valid2]).await.expect("admit");
    client.batch_execute("DISCARD SEQUENCES").await.expect("discard");
    admin.batch_execute("BEGIN; LOCK TABLE rlsproxy_private.keys IN ROW EXCLUSIVE MODE").await.expect("lock");
    client.query("SELECT rlsproxy.admit($1, true)", &[&valid2]).await.expect("admit");
    assert_eq!(visible(&client).await, rows_of(&TENANT2));
    admin.batch_execute("ROLLBACK").await.expect("rollback");
    client.query("SELECT rlsproxy.admit($1, true)", &[&valid2]).await.expect("admit");
    assert!(
        client.query_one("SELECT rlsproxy.is_admitted($1)", &[&valid2]).await.expect("is_admitted").get::<_, bool>(0)
    );
}
