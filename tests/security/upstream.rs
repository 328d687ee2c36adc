//! The proxy's own upstream role: md5 and trust authentication work, and a role
//! that inherits admin_role is refused at the check and for every client.

use rlsproxy::Proxy;
use rlsproxy::config::Config;
use rlsproxy::upstream::UpstreamError;

use crate::common::proxy;
use crate::common::{Postgres, postgres};
use crate::{ACME, GLOBEX, current_tenant, titles};

fn config_as(user: &str, password: Option<&str>) -> Config {
    let mut cfg = proxy::base_config(postgres());
    cfg.upstream.user = user.into();
    cfg.upstream.password = password.map(str::to_owned);
    cfg
}

async fn works_as(cfg: Config, user: &str) {
    let proxy = proxy::start(cfg).await;
    let client = proxy.connect(&proxy.token("2")).await;
    let row = client.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), user);
    assert_eq!(titles(&client).await, GLOBEX);
    assert_eq!(current_tenant(&client).await, "2");
}

#[tokio::test]
async fn upstream_md5_authentication_works() {
    let cfg = config_as(Postgres::MD5_USER, Some(Postgres::MD5_PASSWORD));
    Proxy::bind(cfg.clone()).await.unwrap().check_upstream().await.expect("md5_user passes the check");
    works_as(cfg, Postgres::MD5_USER).await;
}

#[tokio::test]
async fn upstream_trust_authentication_works() {
    let cfg = config_as(Postgres::TRUST_USER, None);
    Proxy::bind(cfg.clone()).await.unwrap().check_upstream().await.expect("trust_user passes the check");
    works_as(cfg, Postgres::TRUST_USER).await;
}

/// An upstream role inheriting admin_role would get `admin_bypass` (`TO admin_role`) for every
/// tenant without any SET ROLE: the check refuses it, and so does every client session.
async fn inheriting_role_is_refused(cfg: Config) {
    let proxy = Proxy::bind(cfg.clone()).await.unwrap();
    match proxy.check_upstream().await {
        Err(UpstreamError::UnsafeRole(msg)) => assert!(msg.contains("admin_role"), "{msg}"),
        other => panic!("check_upstream accepted inherit_user: {other:?}"),
    }
    let proxy = proxy::start(cfg).await;
    match proxy.try_connect(&proxy.token("1")).await {
        Ok(client) => {
            let seen = client.query("SELECT title FROM documents ORDER BY id", &[]).await;
            let seen: Result<Vec<String>, _> = seen.map(|rows| rows.iter().map(|r| r.get(0)).collect());
            panic!("a client got a session through inherit_user; it sees {seen:?} (its tenant alone: {ACME:?})");
        }
        Err(e) => {
            let (severity, code, message) = crate::server_error(&e);
            assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "08006"), "{message}");
            assert_eq!(
                message,
                "rlsproxy: the upstream server is unavailable: unsafe upstream role: upstream.user inherits the \
                 privileges of admin_role, so their policies would apply to every tenant; make it NOINHERIT \
                 (ALTER ROLE ... NOINHERIT)"
            );
        }
    }
}

/// Without role claims configured: admin_role's policies still apply through inheritance.
#[tokio::test]
async fn upstream_inheriting_role_is_refused() {
    inheriting_role_is_refused(config_as(Postgres::INHERIT_USER, Some(Postgres::INHERIT_PASSWORD))).await;
}

/// With admin_role among the roles tokens may select.
#[tokio::test]
async fn upstream_inheriting_role_is_refused_with_role_claims() {
    let mut cfg = config_as(Postgres::INHERIT_USER, Some(Postgres::INHERIT_PASSWORD));
    cfg.jwt.role_claim = "role".into();
    cfg.jwt.allowed_roles = vec!["admin_role".into()];
    inheriting_role_is_refused(cfg).await;
}

/// An upstream role that owns a table with row-level security enabled but not forced bypasses
/// its policies (owners do): every tenant would see every row. The proxy refuses such a role,
/// unless the operator says otherwise.
#[tokio::test]
async fn owner_of_a_table_with_unforced_rls_is_refused() {
    let su = postgres().superuser_client(Postgres::APP_DB).await;
    // A role of its own: other tests log in as the harness's roles concurrently.
    su.batch_execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sec_owner') THEN \
         CREATE ROLE sec_owner LOGIN NOINHERIT PASSWORD 'sec-owner-pw'; END IF; END $$; \
         DROP TABLE IF EXISTS sec_unforced; CREATE TABLE sec_unforced (tenant_id int); \
         ALTER TABLE sec_unforced ENABLE ROW LEVEL SECURITY; ALTER TABLE sec_unforced OWNER TO sec_owner",
    )
    .await
    .unwrap();
    let cfg = config_as("sec_owner", Some("sec-owner-pw"));
    let proxy = Proxy::bind(cfg.clone()).await.unwrap();
    match proxy.check_upstream().await {
        Err(UpstreamError::UnsafeRole(why)) => {
            assert!(
                why.starts_with("upstream.user owns sec_unforced, whose row-level security is enabled but not forced"),
                "{why}"
            );
        }
        other => panic!("expected UnsafeRole, got {other:?}"),
    }
    let mut allowed = cfg;
    allowed.upstream.allow_unforced_owned_tables = true;
    assert!(Proxy::bind(allowed).await.unwrap().check_upstream().await.is_ok());
    su.batch_execute("DROP TABLE sec_unforced").await.unwrap();
}
