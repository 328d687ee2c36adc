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

/// A LOGIN role of its own for a test (other tests log in as the harness's roles concurrently,
/// and role attributes and settings are cluster-wide; each test binary gets a fresh cluster),
/// created with `attributes`, then `sql` run as the superuser in database app.
async fn own_role(name: &str, attributes: &str, sql: &str) -> Config {
    let su = postgres().superuser_client(Postgres::APP_DB).await;
    su.batch_execute(&format!(
        "CREATE ROLE {name} LOGIN NOINHERIT {attributes} PASSWORD '{name}-pw'; \
         GRANT SELECT ON documents TO {name}; {sql}"
    ))
    .await
    .unwrap();
    config_as(name, Some(&format!("{name}-pw")))
}

/// The check's refusal of `cfg`'s role, as text.
async fn refusal(cfg: &Config) -> String {
    match Proxy::bind(cfg.clone()).await.unwrap().check_upstream().await {
        Err(UpstreamError::UnsafeRole(why)) => why,
        other => panic!("expected UnsafeRole, got {other:?}"),
    }
}

#[tokio::test]
async fn a_createrole_upstream_role_is_refused() {
    let cfg = own_role("sec_createrole", "CREATEROLE", "").await;
    assert_eq!(
        refusal(&cfg).await,
        "upstream.user sec_createrole has CREATEROLE: a session running SQL as it could create roles and grant \
         memberships (before PostgreSQL 16 of any role, pg_execute_server_program included); \
         ALTER ROLE sec_createrole NOCREATEROLE"
    );
}

/// Membership of the server-file roles, direct or through another role (NOINHERIT does not
/// help: `SET ROLE` reaches it).
#[tokio::test]
async fn members_of_the_server_file_roles_are_refused() {
    for role in ["pg_read_server_files", "pg_write_server_files", "pg_execute_server_program"] {
        let name = format!("sec_{role}");
        let cfg = own_role(&name, "", &format!("GRANT {role} TO {name}")).await;
        assert_eq!(
            refusal(&cfg).await,
            format!(
                "upstream.user {name} is a member of {role}: a session running SQL as it could read or write the \
                 server's files or run programs on it; REVOKE {role} FROM {name}"
            )
        );
    }
    let sql = "CREATE ROLE sec_file_group NOLOGIN; GRANT pg_read_server_files TO sec_file_group; \
               GRANT sec_file_group TO sec_files_indirect";
    let cfg = own_role("sec_files_indirect", "", sql).await;
    assert_eq!(
        refusal(&cfg).await,
        "upstream.user sec_files_indirect is a member of pg_read_server_files (through sec_file_group): a session \
         running SQL as it could read or write the server's files or run programs on it; \
         REVOKE sec_file_group FROM sec_files_indirect"
    );
}

/// Any setting of the role itself (in any database or in this one) is refused; settings of
/// the database for every role only when they change name resolution, the role, how SQL text
/// is read, or set a custom setting.
#[tokio::test]
async fn role_settings_and_risky_database_settings_are_refused() {
    let cfg = own_role("sec_settings", "", "ALTER ROLE sec_settings SET statement_timeout = '5s'").await;
    assert_eq!(
        refusal(&cfg).await,
        "upstream.user sec_settings starts every connection with settings (ALTER ROLE sec_settings SET \
         statement_timeout=5s): every tenant shares this role, so such settings are one tenant's way to reach the \
         others' sessions; remove them (ALTER ROLE sec_settings RESET statement_timeout)"
    );
    let cfg = own_role("sec_db_settings", "", "ALTER ROLE sec_db_settings IN DATABASE app SET work_mem = '8MB'").await;
    assert_eq!(
        refusal(&cfg).await,
        "upstream.user sec_db_settings starts every connection with settings (ALTER ROLE sec_db_settings IN \
         DATABASE app SET work_mem=8MB): every tenant shares this role, so such settings are one tenant's way to \
         reach the others' sessions; remove them (ALTER ROLE sec_db_settings IN DATABASE app RESET work_mem)"
    );
    // Database-wide settings, in a database of their own.
    let su = postgres().superuser_client("postgres").await;
    su.batch_execute("CREATE DATABASE sec_settings_db").await.unwrap();
    su.batch_execute(
        "ALTER DATABASE sec_settings_db SET timezone = 'UTC'; \
         ALTER DATABASE sec_settings_db SET search_path = scratch, public; \
         ALTER DATABASE sec_settings_db SET app.current_tenant = '2'",
    )
    .await
    .unwrap();
    let mut cfg = config_as(Postgres::PROXY_USER, Some(Postgres::PROXY_PASSWORD));
    cfg.upstream.database = Some("sec_settings_db".into());
    assert_eq!(
        refusal(&cfg).await,
        "upstream.user app_proxy starts every connection with settings (ALTER DATABASE sec_settings_db SET \
         app.current_tenant=2; ALTER DATABASE sec_settings_db SET search_path=scratch, public): every tenant shares \
         this role, so such settings are one tenant's way to reach the others' sessions; remove them (ALTER \
         DATABASE sec_settings_db RESET app.current_tenant; ALTER DATABASE sec_settings_db RESET search_path)"
    );
    su.batch_execute(
        "ALTER DATABASE sec_settings_db RESET search_path; ALTER DATABASE sec_settings_db RESET app.current_tenant",
    )
    .await
    .unwrap();
    assert!(Proxy::bind(cfg).await.unwrap().check_upstream().await.is_ok(), "a time zone is harmless");
}

/// A role tokens may select that bypasses row-level security or owns tables.
#[tokio::test]
async fn allowed_roles_that_bypass_rls_or_own_tables_are_refused() {
    let mut cfg = own_role(
        "sec_allowing",
        "",
        "CREATE ROLE sec_bypass NOLOGIN BYPASSRLS; CREATE ROLE sec_owner_role NOLOGIN; \
         GRANT sec_bypass, sec_owner_role TO sec_allowing; \
         CREATE TABLE sec_owned (tenant_id int); ALTER TABLE sec_owned OWNER TO sec_owner_role",
    )
    .await;
    cfg.jwt.role_claim = "role".into();
    cfg.jwt.allowed_roles = vec!["sec_bypass".into()];
    assert_eq!(
        refusal(&cfg).await,
        "jwt.allowed_roles has sec_bypass, which has BYPASSRLS: sessions that select it bypass row-level security; \
         ALTER ROLE sec_bypass NOSUPERUSER NOBYPASSRLS, or remove it from jwt.allowed_roles"
    );
    cfg.jwt.allowed_roles = vec!["sec_owner_role".into()];
    assert_eq!(
        refusal(&cfg).await,
        "jwt.allowed_roles has sec_owner_role, which owns sec_owned: a session that selects it, or any tenant \
         through SET ROLE, could switch their row-level security off (ALTER TABLE … NO FORCE, DROP POLICY); give \
         them to a role no token selects (ALTER TABLE … OWNER TO …), or remove sec_owner_role from \
         jwt.allowed_roles"
    );
    let su = postgres().superuser_client(Postgres::APP_DB).await;
    su.batch_execute("DROP TABLE sec_owned").await.unwrap();
    assert!(Proxy::bind(cfg).await.unwrap().check_upstream().await.is_ok());
}
