//! State one tenant can leave on a server connection or in the proxy's shared role for the
//! next transaction, with the statement guard off (the guarantee must not rest on it): a
//! `set_config` of its own that an unqualified call would resolve to, and session state a
//! client with other claims would inherit without a reset.

use rlsproxy::config::{Config, PoolMode};
use rlsproxy::upstream::{ServerConn, UpstreamTarget};

use crate::common::queries::{rows, value};
use crate::common::{postgres, proxy};

/// A fresh database `db` with one RLS table `docs` (tenant 1: `acme`, tenant 2: `globex`)
/// where `role` may create objects in `public`, as a tenant with arbitrary SQL would use it.
pub async fn tenant_db(db: &str, role: &str) {
    let su = postgres().superuser_client("postgres").await;
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.unwrap();
    su.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let su = postgres().superuser_client(db).await;
    su.batch_execute(
        &"CREATE TABLE docs (id int PRIMARY KEY, tenant_id int NOT NULL, title text NOT NULL);
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant ON docs USING (tenant_id = current_setting('app.current_tenant')::int);
         INSERT INTO docs VALUES (1, 1, 'acme'), (2, 2, 'globex');
         GRANT SELECT ON docs TO {role};
         GRANT CREATE ON SCHEMA public TO {role};"
            .replace("{role}", role),
    )
    .await
    .unwrap();
}

/// Transaction pooling over one server connection to `db`, guard off.
fn one_connection_open_sql(db: &str) -> Config {
    let mut cfg = proxy::base_config(postgres());
    cfg.upstream.database = Some(db.into());
    cfg.pool.mode = PoolMode::Transaction;
    cfg.pool.size = 1;
    cfg.guard.enabled = false;
    cfg
}

/// A tenant defines `public.set_config(text, text, boolean)` (and a temporary one) that sets
/// tenant 2 whatever it is asked, and puts `public` before `pg_catalog` in its search_path: an
/// injection calling the unqualified name would run it. The injection calls
/// `pg_catalog.set_config`: its own next transactions and the next tenant's keep their context.
#[tokio::test]
async fn a_shadowing_set_config_never_runs_in_the_injection() {
    tenant_db("shadow_set_config", "app_proxy").await;
    let proxy = proxy::start(one_connection_open_sql("shadow_set_config")).await;
    let attacker = proxy.connect(&proxy.token("1")).await;
    let shadow = "(name text, value text, local boolean) RETURNS text LANGUAGE sql AS $$ \
                  SELECT pg_catalog.set_config(name, CASE WHEN name = 'app.current_tenant' THEN '2' ELSE value END, local) $$";
    attacker.batch_execute(&format!("CREATE FUNCTION public.set_config{shadow}")).await.unwrap();
    attacker.batch_execute(&format!("CREATE FUNCTION pg_temp.set_config{shadow}")).await.unwrap();
    attacker
        .batch_execute("SELECT pg_catalog.set_config('search_path', 'pg_temp, public, pg_catalog', false)")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(value(&attacker, "SELECT current_setting('app.current_tenant')").await, "1");
        assert_eq!(rows(&attacker, "SELECT title FROM docs ORDER BY id").await, [[Some("acme".to_string())]]);
    }
    drop(attacker);
    let other = proxy.connect(&proxy.token("2")).await;
    assert_eq!(value(&other, "SELECT current_setting('app.current_tenant')").await, "2");
    assert_eq!(rows(&other, "SELECT title FROM docs ORDER BY id").await, [[Some("globex".to_string())]]);
}

/// Two clients of the same tenant, subject and role whose tokens differ in one other claim
/// (here `team`) are not the same identity: the second does not get the first one's session
/// state (a setting it left on the connection) without a reset.
#[tokio::test]
async fn clients_whose_claims_differ_never_share_session_state() {
    let mut cfg = one_connection_open_sql("app");
    cfg.upstream.database = None;
    cfg.upstream.allowed_databases = vec!["app".into()];
    cfg.context.claims_setting = "request.jwt.claims".into();
    let proxy = proxy::start(cfg).await;
    let ttl = std::time::Duration::from_secs(3600);
    let first = proxy.connect(&proxy.token_with("1", None, ttl, &[("team", "red")])).await;
    // Through dynamic SQL, so that the proxy does not see session state and pin the session.
    let hidden = "DO $$ BEGIN EXECUTE 'SELECT pg_catalog.set_con' || 'fig(''x.left_behind'', ''red team state'', false)'; END $$";
    first.batch_execute(hidden).await.unwrap();
    assert_eq!(value(&first, "SELECT current_setting('x.left_behind', true)").await, "red team state");
    drop(first);
    let second = proxy.connect(&proxy.token_with("1", None, ttl, &[("team", "blue")])).await;
    let left = rows(&second, "SELECT current_setting('x.left_behind', true)").await;
    assert!(left == [[None]] || left == [[Some(String::new())]], "state of another identity: {left:?}");
    let claims = value(&second, "SELECT current_setting('request.jwt.claims')::json ->> 'team'").await;
    assert_eq!(claims, "blue");
}

/// Route of the persistent trap: every tenant is the same role, so a tenant with arbitrary SQL
/// runs `ALTER ROLE CURRENT_USER SET search_path = scratch, public` (or `ALTER DATABASE`, when
/// the role owns it) next to a view `scratch.docs`, and every later connection would resolve
/// `docs` to it. The upstream-role
/// check refuses such a role for every new connection (another tenant gets a clear error, not
/// the attacker's view), and the connections the proxy opens pin `search_path` anyway.
#[tokio::test]
async fn a_tenants_alter_role_set_never_reaches_new_connections() {
    let su = postgres().superuser_client("postgres").await;
    su.batch_execute("CREATE ROLE trap_proxy LOGIN NOINHERIT PASSWORD 'trap-pw'").await.unwrap();
    tenant_db("shared_trap", "trap_proxy").await;
    // Owner of the database: it may create schemas there and ALTER DATABASE … SET.
    su.batch_execute("ALTER DATABASE shared_trap OWNER TO trap_proxy").await.unwrap();
    let mut cfg = proxy::base_config(postgres());
    cfg.upstream.database = Some("shared_trap".into());
    cfg.upstream.user = "trap_proxy".into();
    cfg.upstream.password = Some("trap-pw".into());
    cfg.guard.enabled = false;
    let proxy = proxy::start(cfg.clone()).await;
    let attacker = proxy.connect(&proxy.token("1")).await;
    attacker
        .batch_execute(
            "CREATE SCHEMA scratch; \
             CREATE VIEW scratch.docs AS SELECT 0 AS id, 0 AS tenant_id, 'trapped'::text AS title; \
             ALTER ROLE CURRENT_USER SET search_path = scratch, public; \
             ALTER ROLE CURRENT_USER SET standard_conforming_strings = off; \
             ALTER DATABASE shared_trap SET search_path = scratch, public",
        )
        .await
        .unwrap();
    let (severity, code, message) = crate::refused(&proxy, &proxy.token("2")).await;
    assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "08006"));
    assert_eq!(
        message,
        "rlsproxy: the upstream server is unavailable: unsafe upstream role: upstream.user trap_proxy starts every \
         connection with settings (ALTER ROLE trap_proxy SET search_path=scratch, public; ALTER ROLE trap_proxy SET \
         standard_conforming_strings=off; ALTER DATABASE shared_trap SET search_path=scratch, public): every tenant \
         shares this role, so such settings are one tenant's way to reach the others' sessions; remove them (ALTER \
         ROLE trap_proxy RESET search_path; ALTER ROLE trap_proxy RESET standard_conforming_strings; ALTER DATABASE \
         shared_trap RESET search_path)"
    );
    // What a connection opened by the proxy starts with, whatever the role's settings say.
    su.batch_execute("CREATE ROLE trap_target NOLOGIN; GRANT trap_target TO trap_proxy").await.unwrap();
    su.batch_execute("ALTER ROLE trap_proxy SET role = trap_target; ALTER ROLE trap_proxy SET client_encoding = SJIS")
        .await
        .unwrap();
    let target = UpstreamTarget::from_config(&cfg.upstream, &cfg.tcp).unwrap();
    let mut conn = ServerConn::connect(&target, "shared_trap", &[]).await.unwrap();
    let sql = "SELECT current_setting('search_path'), \
               (SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = 'docs'::regclass), current_user::text, \
               current_setting('standard_conforming_strings'), current_setting('client_encoding')";
    let row = conn.query_rows(sql, &[]).await.unwrap().remove(0);
    let want = ["public", "public", "trap_proxy", "on", "UTF8"].map(|v| Some(v.to_string()));
    assert_eq!(row, want);
    let latin1 = [("client_encoding".to_string(), "LATIN1".to_string())];
    let mut conn = ServerConn::connect(&target, "shared_trap", &latin1).await.unwrap();
    let row = conn.query_rows("SELECT current_setting('client_encoding')", &[]).await.unwrap().remove(0);
    assert_eq!(row, [Some("LATIN1".to_string())], "the client's own encoding wins over the pinned default");
}
