//! Each tenant reads, changes and copies exactly its own rows; a token with an
//! allowed role gets that role's view.

use std::time::Duration;

use futures_util::TryStreamExt;
use tokio_postgres::Client;

use super::{ACME_TITLES, GLOBEX_TITLES, titles};
use crate::common::postgres;
use crate::common::proxy::{self, base_config, db_error};

async fn user_names(client: &Client) -> Vec<String> {
    let rows = client.query("SELECT name FROM users ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn each_tenant_selects_exactly_its_rows() {
    let proxy = proxy::start_default().await;
    let acme = proxy.connect(&proxy.token("1")).await;
    let globex = proxy.connect(&proxy.token("2")).await;
    assert_eq!(titles(&acme).await, ACME_TITLES);
    assert_eq!(titles(&globex).await, GLOBEX_TITLES);
    assert_eq!(user_names(&acme).await, ["alice", "arthur"]);
    assert_eq!(user_names(&globex).await, ["bob", "beatrice"]);
    // Still so in later transactions of the same sessions.
    assert_eq!(titles(&globex).await, GLOBEX_TITLES);
    assert_eq!(titles(&acme).await, ACME_TITLES);
}

#[tokio::test]
async fn update_and_delete_of_all_rows_touch_only_own_rows() {
    let proxy = proxy::start_default().await;
    for (tenant, own) in [("1", &ACME_TITLES[..]), ("2", &GLOBEX_TITLES[..])] {
        let mut client = proxy.connect(&proxy.token(tenant)).await;

        let tx = client.transaction().await.unwrap();
        let updated = tx.execute("UPDATE documents SET title = title || ' (edited)'", &[]).await.unwrap();
        assert_eq!(updated, own.len() as u64, "tenant {tenant}: rows updated");
        let edited: Vec<String> = own.iter().map(|t| format!("{t} (edited)")).collect();
        let rows = tx.query("SELECT title FROM documents ORDER BY id", &[]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.get(0)).collect::<Vec<String>>(), edited);
        tx.rollback().await.unwrap();

        let tx = client.transaction().await.unwrap();
        let deleted = tx.execute("DELETE FROM documents", &[]).await.unwrap();
        assert_eq!(deleted, own.len() as u64, "tenant {tenant}: rows deleted");
        let left: i64 = tx.query_one("SELECT count(*) FROM documents", &[]).await.unwrap().get(0);
        assert_eq!(left, 0);
        tx.rollback().await.unwrap();

        assert_eq!(titles(&client).await, own, "tenant {tenant}: rolled back");
    }
}

#[tokio::test]
async fn copy_to_stdout_returns_only_own_rows() {
    let proxy = proxy::start_default().await;
    for (tenant, expected) in [
        ("1", "1\tacme roadmap\n2\tacme payroll\n3\tacme onboarding\n"),
        ("2", "4\tglobex merger plan\n5\tglobex handbook\n"),
    ] {
        let client = proxy.connect(&proxy.token(tenant)).await;
        let stream = client.copy_out("COPY documents (id, title) TO STDOUT").await.unwrap();
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
        let mut lines: Vec<String> =
            String::from_utf8(chunks.concat()).unwrap().lines().map(|l| format!("{l}\n")).collect();
        lines.sort();
        assert_eq!(lines.concat(), expected, "tenant {tenant}");
    }
}

#[tokio::test]
async fn insert_for_another_tenant_violates_the_policy() {
    let proxy = proxy::start_default().await;
    let mut client = proxy.connect(&proxy.token("1")).await;
    let err = client
        .execute("INSERT INTO documents (tenant_id, title) VALUES (2, 'planted by acme')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        db_error(&err),
        ("42501".into(), "new row violates row-level security policy for table \"documents\"".into())
    );
    // An insert for its own tenant passes the same policy (rolled back).
    let tx = client.transaction().await.unwrap();
    let inserted = tx.execute("INSERT INTO documents (tenant_id, title) VALUES (1, 'acme draft')", &[]).await.unwrap();
    assert_eq!(inserted, 1);
    tx.rollback().await.unwrap();
    assert_eq!(titles(&client).await, ACME_TITLES);
}

#[tokio::test]
async fn token_with_allowed_admin_role_sees_every_tenant() {
    let mut config = base_config(postgres());
    config.jwt.role_claim = "role".into();
    config.jwt.allowed_roles = vec!["admin_role".into()];
    let proxy = proxy::start(config).await;

    let admin_token = proxy.token_with("1", Some("admin_role"), Duration::from_secs(3600), &[]);
    let admin = proxy.connect(&admin_token).await;
    let all: Vec<&str> = ACME_TITLES.iter().chain(&GLOBEX_TITLES).copied().collect();
    assert_eq!(titles(&admin).await, all);
    let role: String = admin.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(role, "admin_role");

    // A token without a role on the same proxy stays within its tenant.
    let tenant = proxy.connect(&proxy.token("2")).await;
    assert_eq!(titles(&tenant).await, GLOBEX_TITLES);
    let role: String = tenant.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(role, "app_proxy");
}

/// psql (libpq, simple protocol) through the proxy.
#[tokio::test]
async fn psql_sees_the_tenant_split() {
    let proxy = proxy::start_default().await;
    for (tenant, expected) in [("1", &ACME_TITLES[..]), ("2", &GLOBEX_TITLES[..])] {
        let conninfo = proxy.conninfo(&proxy.token(tenant));
        let out = tokio::task::spawn_blocking(move || {
            postgres()
                .psql()
                .arg(conninfo)
                .args(["-At", "-c", "SELECT title FROM documents ORDER BY id"])
                .output()
                .expect("run psql")
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "psql failed: {stderr}");
        assert_eq!(stderr, "");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", expected.join("\n")), "tenant {tenant}");
    }
}
