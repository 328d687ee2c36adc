//! Advisory lock keys are per tenant: one tenant's key never excludes another tenant, the
//! same tenant's sessions still exclude each other, whatever form the call takes (bind
//! parameters, the two-int4 form, transaction locks); uses the proxy cannot scope are
//! refused, with the guard off too; exempt operators keep the database-wide keys; and
//! `rlsproxy.advisory_key` computes the key the proxy does. Session and transaction pooling.

use std::time::Duration;

use rlsproxy::config::PoolMode;
use tokio_postgres::Client;

use crate::Msgs;
use crate::common::proxy::{self, TestProxy};
use crate::common::queries::{fails, value};
use crate::common::{Postgres, postgres};

const MODES: [PoolMode; 2] = [PoolMode::Session, PoolMode::Transaction];

const REFUSED: &str = "rlsproxy refused the statement: an advisory lock function used other than in a call with its keys \
     (rule advisory_lock)";

async fn start(mode: PoolMode, guard: bool) -> TestProxy {
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = mode;
    cfg.guard.enabled = guard;
    proxy::start(cfg).await
}

async fn superuser() -> Client {
    postgres().superuser_client(Postgres::APP_DB).await
}

/// Advisory locks held on the server's bigint `key` (`sql`: the key, computed by the superuser).
async fn held(su: &Client, sql: &str) -> i64 {
    let query = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
         AND (classid::bigint << 32 | objid::bigint) = ({sql})"
    );
    su.query_one(&query, &[]).await.unwrap().get(0)
}

async fn try_lock(client: &Client, sql: &str, keys: &[i32]) -> bool {
    let row = match keys {
        [key] => client.query_one(sql, &[&i64::from(*key)]).await,
        _ => client.query_one(sql, &[&keys[0], &keys[1]]).await,
    };
    row.unwrap().get(0)
}

#[tokio::test]
async fn bind_parameters_both_forms_and_transaction_locks_are_per_tenant() {
    let su = superuser().await;
    for mode in MODES {
        let proxy = start(mode, true).await;
        let (t2, t2b, t1) = (
            proxy.connect(&proxy.token("2")).await,
            proxy.connect(&proxy.token("2")).await,
            proxy.connect(&proxy.token("1")).await,
        );
        for (sql, keys) in [
            ("SELECT pg_try_advisory_lock($1)", &[777_101][..]),
            ("SELECT pg_try_advisory_lock($1, $2)", &[7771, 2][..]),
        ] {
            assert!(try_lock(&t2, sql, keys).await, "{mode:?}: {sql}");
            assert!(try_lock(&t1, sql, keys).await, "{mode:?}: {sql}: tenant 2's key excluded tenant 1");
            assert!(!try_lock(&t2b, sql, keys).await, "{mode:?}: {sql}: tenant 2 did not exclude itself");
        }
        // The keys are what rlsproxy.advisory_key computes, one lock each per tenant.
        assert_eq!(held(&su, "SELECT rlsproxy.advisory_key('2', 777101)").await, 1, "{mode:?}");
        assert_eq!(held(&su, "SELECT rlsproxy.advisory_key('1', 7771, 2)").await, 1, "{mode:?}");
        assert_eq!(held(&su, "SELECT 777101").await, 0, "{mode:?}: the raw key");
        assert_eq!(value(&t2, "SELECT pg_advisory_unlock(777101)::text").await, "true", "{mode:?}");
        assert_eq!(value(&t2, "SELECT pg_advisory_unlock(7771, 2)::text").await, "true", "{mode:?}");

        t2.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(777102)").await.unwrap();
        let xact = "SELECT pg_try_advisory_xact_lock($1)";
        assert!(try_lock(&t1, xact, &[777_102]).await, "{mode:?}: tenant 2's xact lock excluded tenant 1");
        assert!(!try_lock(&t2b, xact, &[777_102]).await, "{mode:?}");
        t2.batch_execute("COMMIT").await.unwrap();
        assert!(try_lock(&t2b, xact, &[777_102]).await, "{mode:?}: released at commit");
        for client in [&t1, &t2b] {
            client.batch_execute("SELECT pg_advisory_unlock_all()").await.unwrap();
        }
    }
}

#[tokio::test]
async fn uses_the_proxy_cannot_scope_are_refused_with_the_guard_off_too() {
    for (mode, guard) in [(PoolMode::Session, true), (PoolMode::Session, false), (PoolMode::Transaction, false)] {
        let proxy = start(mode, guard).await;
        let tenant = proxy.connect(&proxy.token("1")).await;
        for sql in [
            // An operator whose function takes a lock on the raw key: `SELECT ### 777001`.
            "CREATE OPERATOR pg_temp.### (function = pg_try_advisory_lock, rightarg = bigint)",
            "SELECT public.pg_advisory_lock(777103)",
            "SELECT E'pg_try_\\x61dvisory_lock'::regproc",
        ] {
            let refused = ("42501".to_string(), REFUSED.to_string());
            assert_eq!(fails(&tenant, sql).await, refused, "{mode:?}, guard {guard}: {sql}");
        }
        // A fast-path FunctionCall of pg_try_advisory_lock(bigint) (OID 2882).
        let (mut raw, _) = crate::raw_login(&proxy, &proxy.token("1"), &[]).await;
        let key = 777_103i64.to_be_bytes();
        raw.send_msgs(&Msgs::new().function_call(2882, &[1], &[Some(&key)], 0)).await;
        let reply = raw.read_until_ready().await;
        let error = crate::the_error(&reply);
        assert_eq!((error[&'C'].as_str(), error[&'M'].as_str()), ("42501", REFUSED), "{mode:?}, guard {guard}");
        assert_eq!(value(&tenant, "SELECT 'still serving'").await, "still serving");
    }
}

#[tokio::test]
async fn an_exempt_operator_keeps_the_database_wide_keys_and_a_tenant_does_not() {
    let mut cfg = proxy::base_config(postgres());
    cfg.jwt.role_claim = "role".into();
    cfg.jwt.allowed_roles = vec!["admin_role".into()];
    cfg.guard.operator_roles = vec!["admin_role".into()];
    cfg.guard.operator_allows = vec!["advisory_lock".into()];
    let proxy = proxy::start(cfg).await;
    let su = superuser().await;
    let operator = proxy.connect(&proxy.token_with("1", Some("admin_role"), Duration::from_secs(600), &[])).await;
    // A migration lock, as Rails takes it: one key for everyone.
    assert_eq!(value(&operator, "SELECT pg_try_advisory_lock(777104)::text").await, "true");
    assert_eq!(held(&su, "SELECT 777104").await, 1, "the operator's lock is on the raw key");
    let direct: bool = su.query_one("SELECT pg_try_advisory_lock(777104)", &[]).await.unwrap().get(0);
    assert!(!direct, "a direct connection is excluded by the operator's migration lock");
    let tenant = proxy.connect(&proxy.token("1")).await;
    assert_eq!(value(&tenant, "SELECT pg_try_advisory_lock(777104)::text").await, "true", "a tenant's key is its own");
    // The name other than in a call: refused for a tenant, the operator's text is left alone.
    let named = "SELECT count(*)::text FROM pg_proc WHERE proname = 'pg_advisory_lock'";
    assert_eq!(fails(&tenant, named).await.0, "42501");
    assert_eq!(value(&operator, named).await, "2");
}

/// A text long enough to be parsed on a blocking thread (64 KiB and more) is scoped, or
/// refused, as a short one is.
#[tokio::test]
async fn long_texts_are_scoped_as_short_ones() {
    let su = superuser().await;
    // Escape strings: the backslashes make the proxy parse the text.
    let padding = format!("E'{}'", "\\\\x".repeat(30_000));
    for (mode, guard) in [(PoolMode::Session, true), (PoolMode::Transaction, false)] {
        let proxy = start(mode, guard).await;
        let tenant = proxy.connect(&proxy.token("2")).await;
        let sql = format!("SELECT pg_try_advisory_lock(777104)::text || length({padding})");
        assert!(sql.len() > 64 << 10);
        assert_eq!(value(&tenant, &sql).await, "true60000", "{mode:?}, guard {guard}");
        assert_eq!(held(&su, "SELECT rlsproxy.advisory_key('2', 777104)").await, 1, "{mode:?}, guard {guard}");
        assert_eq!(held(&su, "SELECT 777104").await, 0, "{mode:?}, guard {guard}: the raw key");
        tenant.batch_execute("SELECT pg_advisory_unlock_all()").await.unwrap();
        let unscopable = format!("SELECT E'pg_try_\\x61dvisory_lock'::regproc, {padding}");
        let refused = ("42501".to_string(), REFUSED.to_string());
        assert_eq!(fails(&tenant, &unscopable).await, refused, "{mode:?}, guard {guard}");
    }
}
