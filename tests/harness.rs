//! Proves the test harness and the example schema directly against PostgreSQL,
//! without the proxy: the RLS policies filter by `app.current_tenant`, fail
//! closed without it, yield to `SET ROLE admin_role`, and the cluster offers
//! the auth methods and TLS that the proxy's own tests rely on.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{Postgres, postgres, raw};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

const ACME_TITLES: [&str; 3] = ["acme roadmap", "acme payroll", "acme onboarding"];
const GLOBEX_TITLES: [&str; 2] = ["globex merger plan", "globex handbook"];

async fn proxy_client() -> Client {
    common::connect(&postgres().proxy_config(Postgres::APP_DB)).await
}

async fn titles(client: &Client) -> Vec<String> {
    let rows = client.query("SELECT title FROM documents ORDER BY id", &[]).await.expect("select");
    rows.iter().map(|r| r.get(0)).collect()
}

async fn set_tenant(client: &Client, tenant: &str) {
    client.execute("SELECT set_config('app.current_tenant', $1, false)", &[&tenant]).await.expect("set_config");
}

#[tokio::test]
async fn tenant_setting_filters_every_table() {
    let client = proxy_client().await;
    set_tenant(&client, "1").await;
    assert_eq!(titles(&client).await, ACME_TITLES);
    let users = client.query("SELECT name FROM users ORDER BY id", &[]).await.unwrap();
    assert_eq!(users.iter().map(|r| r.get(0)).collect::<Vec<String>>(), ["alice", "arthur"]);
    let tenants = client.query("SELECT id, name FROM tenants", &[]).await.unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!((tenants[0].get::<_, i32>(0), tenants[0].get::<_, String>(1)), (1, "acme".into()));

    // Same session, other tenant: the setting alone decides.
    set_tenant(&client, "2").await;
    assert_eq!(titles(&client).await, GLOBEX_TITLES);
    let users = client.query("SELECT name FROM users ORDER BY id", &[]).await.unwrap();
    assert_eq!(users.iter().map(|r| r.get(0)).collect::<Vec<String>>(), ["bob", "beatrice"]);
}

#[tokio::test]
async fn without_tenant_setting_queries_fail_closed() {
    let client = proxy_client().await;
    let err = client.query("SELECT title FROM documents", &[]).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::UNDEFINED_OBJECT);
    assert_eq!(db.message(), "unrecognized configuration parameter \"app.current_tenant\"");

    // After a RESET the setting exists but is '': the cast fails, still no rows.
    set_tenant(&client, "1").await;
    client.batch_execute("RESET app.current_tenant").await.unwrap();
    let err = client.query("SELECT title FROM documents", &[]).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INVALID_TEXT_REPRESENTATION);
    assert_eq!(db.message(), "invalid input syntax for type integer: \"\"");
}

#[tokio::test]
async fn set_role_admin_sees_all_rows() {
    let client = proxy_client().await;
    client.batch_execute("SET ROLE admin_role").await.unwrap();
    let all: Vec<&str> = ACME_TITLES.iter().chain(&GLOBEX_TITLES).copied().collect();
    assert_eq!(titles(&client).await, all);
    set_tenant(&client, "1").await;
    assert_eq!(titles(&client).await, all, "the admin policy ORs with the tenant policy");
    client.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(titles(&client).await, ACME_TITLES);
}

#[tokio::test]
async fn writes_across_tenants_are_refused() {
    let client = proxy_client().await;
    set_tenant(&client, "1").await;
    let err = client.execute("INSERT INTO documents (tenant_id, title) VALUES (2, 'planted')", &[]).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(db.message(), "new row violates row-level security policy for table \"documents\"");
    // Other tenants' rows are invisible to UPDATE and DELETE, hence untouched.
    let updated = client.execute("UPDATE documents SET body = 'x' WHERE tenant_id = 2", &[]).await;
    assert_eq!(updated.unwrap(), 0);
    let deleted = client.execute("DELETE FROM documents WHERE tenant_id = 2", &[]).await;
    assert_eq!(deleted.unwrap(), 0);
    // Moving an own row to another tenant fails the UPDATE's WITH CHECK.
    let err = client.execute("UPDATE documents SET tenant_id = 2 WHERE id = 1", &[]).await;
    assert_eq!(err.unwrap_err().code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    // A write for one's own tenant works (sequence grant), inside a rolled-back transaction.
    client.batch_execute("BEGIN").await.unwrap();
    let inserted = client.execute("INSERT INTO documents (tenant_id, title) VALUES (1, 'draft')", &[]).await.unwrap();
    assert_eq!(inserted, 1);
    client.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn roles_have_the_documented_attributes() {
    let su = postgres().superuser_client("app").await;
    let rows = su
        .query(
            "SELECT r.rolname, r.rolinherit, r.rolbypassrls, r.rolsuper, \
                    pg_has_role(r.rolname, 'admin_role', 'MEMBER'), \
                    coalesce(substring(a.rolpassword from '^(md5|SCRAM-SHA-256)'), '') \
             FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid \
             WHERE r.rolname IN ('app_proxy','md5_user','trust_user','inherit_user','admin_role') \
             ORDER BY r.rolname",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, bool, bool, bool, bool, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect();
    let row = |name: &str, inherit, pw: &str| (name.into(), inherit, false, false, true, pw.into());
    assert_eq!(
        got,
        [
            row("admin_role", true, ""),
            row("app_proxy", false, "SCRAM-SHA-256"),
            row("inherit_user", true, "SCRAM-SHA-256"),
            row("md5_user", false, "md5"),
            row("trust_user", false, ""),
        ]
    );
}

#[tokio::test]
async fn md5_trust_and_inherit_users_log_in() {
    let pg = postgres();
    for (user, password) in [
        (Postgres::MD5_USER, Postgres::MD5_PASSWORD),
        (Postgres::TRUST_USER, ""),
        (Postgres::INHERIT_USER, Postgres::INHERIT_PASSWORD),
    ] {
        let client = common::connect(&pg.tcp_config(user, password, "app")).await;
        let row = client.query_one("SELECT current_user::text", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), user);
    }
    // The inheriting role shows why the proxy must refuse it: admin's view, no SET ROLE.
    let client = common::connect(&pg.tcp_config(Postgres::INHERIT_USER, Postgres::INHERIT_PASSWORD, "app")).await;
    assert_eq!(titles(&client).await.len(), ACME_TITLES.len() + GLOBEX_TITLES.len());
    // A wrong password is refused.
    let bad = pg.tcp_config(Postgres::MD5_USER, "wrong", "app").connect(tokio_postgres::NoTls).await;
    assert_eq!(bad.err().and_then(|e| e.code().cloned()), Some(SqlState::INVALID_PASSWORD));
}

/// psql with verify-full against the test CA, by host name and by IP (SAN).
#[test]
fn tls_is_on_and_verifies_against_the_test_ca() {
    let pg = postgres();
    for host in ["localhost", "127.0.0.1"] {
        let conninfo = format!(
            "host={host} port={} user={} dbname=app sslmode=verify-full sslrootcert={}",
            pg.port(),
            Postgres::PROXY_USER,
            pg.ca_cert_path().display()
        );
        let out = pg
            .psql()
            .arg(&conninfo)
            // psql's own report of its connection (pg_stat_ssl is revoked by migration 0004).
            .args(["-At", "-c", "\\conninfo"])
            .env("PGPASSWORD", Postgres::PROXY_PASSWORD)
            .output()
            .expect("run psql");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "psql to {host} failed: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("SSL connection (protocol: TLSv1."), "{stdout}");
    }
}

/// Sync use from a plain #[test], the superuser psql, and the bench database.
#[test]
fn superuser_psql_and_pgbench_work() {
    let pg = postgres();
    let out = pg.superuser_psql("app").args(["-At", "-c", "SELECT count(*) FROM documents"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5\n", "superuser bypasses RLS");
    let status = pg
        .pgbench()
        .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", Postgres::PROXY_USER, Postgres::BENCH_DB])
        .env("PGPASSWORD", Postgres::PROXY_PASSWORD)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
}

#[tokio::test]
async fn raw_client_speaks_the_protocol() {
    let pg = postgres();
    let mut c = raw::connect(pg.addr()).await;
    assert_eq!(c.send_ssl_request().await, b'S');
    let mut c = raw::connect(pg.addr()).await;
    c.send_startup(&[("user", Postgres::TRUST_USER), ("database", "app")]).await;
    let startup = c.read_until_ready().await;
    assert_eq!(startup[0], (b'R', 0i32.to_be_bytes().to_vec()), "AuthenticationOk");
    assert_eq!(startup.last().unwrap(), &(b'Z', b"I".to_vec()));
    c.send_query("SELECT 1/0").await;
    let (tag, body) = c.read_message().await;
    assert_eq!(tag, b'E');
    let fields = raw::error_fields(&body);
    assert_eq!(
        (fields[&'S'].as_str(), fields[&'C'].as_str(), fields[&'M'].as_str()),
        ("ERROR", "22012", "division by zero")
    );
    assert_eq!(c.read_message().await, (b'Z', b"I".to_vec()));
    c.send_msgs(&common::wire::Msgs::new().terminate()).await;
    let eof = c.try_read_message(raw::DEFAULT_TIMEOUT).await.unwrap();
    assert_eq!(eof, None, "Terminate closes the connection");

    // SCRAM is offered to app_proxy; a FATAL error for an unknown database.
    let mut c = raw::connect(pg.addr()).await;
    c.send_startup(&[("user", Postgres::PROXY_USER), ("database", "app")]).await;
    let (tag, body) = c.read_message().await;
    assert_eq!((tag, &body[..4]), (b'R', &10i32.to_be_bytes()[..]), "AuthenticationSASL");
    let mut c = raw::connect(pg.addr()).await;
    c.send_startup(&[("user", Postgres::TRUST_USER), ("database", "nope")]).await;
    // trust: AuthenticationOk comes first, the database is looked up after.
    assert_eq!(c.read_message().await, (b'R', 0i32.to_be_bytes().to_vec()));
    let (tag, body) = c.read_message().await;
    let fields = raw::error_fields(&body);
    assert_eq!((tag, fields[&'S'].as_str(), fields[&'C'].as_str()), (b'E', "FATAL", "3D000"));
    assert_eq!(fields[&'M'], "database \"nope\" does not exist");
}

#[test]
fn postgres_is_started_once() {
    let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(|| postgres().port())).collect();
    let ports: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ports.iter().all(|&p| p == postgres().port()));
    assert!(postgres().data_dir().join("postmaster.pid").exists());
}

/// The `[upstream]` snippet uses the proxy's real configuration keys.
#[test]
fn upstream_toml_is_a_valid_proxy_config() {
    let pg = postgres();
    for sslmode in ["disable", "verify-full"] {
        let text = pg.upstream_toml(sslmode);
        let config = rlsproxy::config::Config::from_toml(&text).expect("valid config");
        assert_eq!(config.upstream.port, pg.port());
        assert_eq!(config.upstream.user, Postgres::PROXY_USER);
        assert_eq!(config.upstream.password.as_deref(), Some(Postgres::PROXY_PASSWORD));
        assert_eq!(config.upstream.database.as_deref(), Some("app"));
    }
}
