//! Tenants that are UUIDs, end to end through the proxy: `[jwt] tenant_format = "uuid"`, a
//! uuid tenant column under default policies and under strict ones, with the guard off in
//! strict mode (what a client sets itself changes nothing).

use rlsproxy::config::PoolMode;

use crate::common::postgres;
use crate::common::proxy::{self, db_error};
use crate::common::queries::try_rows;

const A: &str = "3f0c2a9e-1b7d-4e5f-8a6b-9c0d1e2f3a4b";
const B: &str = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
const KID: &str = "tn_k";
const KEY_HEX: &str = "74656e616e74732074656e616e74732074656e616e74732074656e616e747321";

/// `tn_default` (a policy on `app.current_tenant`) and `tn_strict` (strict policies), each
/// with a row of A and one of B.
async fn tables() {
    postgres()
        .superuser_client("app")
        .await
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS tn_default, tn_strict;
             CREATE TABLE tn_default (org uuid NOT NULL, note text NOT NULL);
             ALTER TABLE tn_default ENABLE ROW LEVEL SECURITY;
             ALTER TABLE tn_default FORCE ROW LEVEL SECURITY;
             CREATE POLICY tn ON tn_default USING (org = current_setting('app.current_tenant')::uuid);
             CREATE TABLE tn_strict (org uuid NOT NULL, note text NOT NULL);
             SELECT rlsproxy.enable_strict_policies('tn_strict', 'org');
             GRANT SELECT ON tn_default, tn_strict TO app_proxy;
             INSERT INTO tn_default VALUES ('{A}', 'a'), ('{B}', 'b');
             INSERT INTO tn_strict VALUES ('{A}', 'a'), ('{B}', 'b');"
        ))
        .await
        .expect("tables");
}

#[tokio::test]
async fn uuid_tenants_see_their_rows_in_default_and_strict_mode() {
    tables().await;
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        for strict in [false, true] {
            let mut cfg = if strict {
                proxy::strict_without_guard(postgres(), KID, KEY_HEX).await
            } else {
                proxy::base_config(postgres())
            };
            cfg.jwt.tenant_format = "uuid".into();
            cfg.pool.mode = mode;
            let table = if strict { "tn_strict" } else { "tn_default" };
            let proxy = proxy::start(cfg).await;
            let client = proxy.connect(&proxy.token(A)).await;
            let notes = try_rows(&client, &format!("SELECT note FROM {table}")).await;
            assert_eq!(notes, Ok(vec![vec![Some("a".to_string())]]), "{mode:?} strict {strict}");
            if strict {
                // The guard is off: the client may set the unsigned setting; it counts for nothing.
                let forged = try_rows(
                    &client,
                    &format!("SELECT set_config('app.current_tenant', '{B}', false); SELECT note FROM {table}"),
                )
                .await;
                assert_eq!(forged, Ok(vec![vec![Some(B.to_string())], vec![Some("a".to_string())]]), "{mode:?}");
            }
            // Another spelling of the same tenant is refused at login.
            let err = proxy.try_connect(&proxy.token(&A.to_uppercase())).await.expect_err("upper-case uuid");
            assert_eq!(db_error(&err).0, "28000", "{mode:?} strict {strict}");
            proxy.handle.shutdown();
        }
    }
}
