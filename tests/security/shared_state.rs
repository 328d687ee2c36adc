//! State one tenant can leave on a server connection or in the proxy's shared role for the
//! next transaction, with the statement guard off (the guarantee must not rest on it): a
//! `set_config` of its own that an unqualified call would resolve to, and session state a
//! client with other claims would inherit without a reset.

use rlsproxy::config::{Config, PoolMode};

use crate::common::queries::{rows, value};
use crate::common::{postgres, proxy};

/// A fresh database `db` with one RLS table `docs` (tenant 1: `acme`, tenant 2: `globex`)
/// where app_proxy may create objects in `public`, as a tenant with arbitrary SQL would use it.
pub async fn tenant_db(db: &str) {
    let su = postgres().superuser_client("postgres").await;
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.unwrap();
    su.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let su = postgres().superuser_client(db).await;
    su.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, tenant_id int NOT NULL, title text NOT NULL);
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant ON docs USING (tenant_id = current_setting('app.current_tenant')::int);
         INSERT INTO docs VALUES (1, 1, 'acme'), (2, 2, 'globex');
         GRANT SELECT ON docs TO app_proxy;
         GRANT CREATE ON SCHEMA public TO app_proxy;",
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
    tenant_db("shadow_set_config").await;
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
