//! Routes found by the red team: what one tenant can do to the proxy's shared upstream role,
//! to the server session the next tenant gets, and to other tenants' sessions, with the
//! statement guard on. Each test asserts the secure outcome and fails on the code it was
//! written against.

use std::time::Duration;

use rlsproxy::config::{Config, PoolMode};

use crate::common::queries::{fails, rows, try_rows, value};
use crate::common::{Postgres, postgres, proxy};
use crate::desync::one_connection;
use crate::{ACME, GLOBEX, titles};

/// Session pooling over one server connection: a client's connection is reset
/// (`DISCARD ALL`) and then serves the next client.
fn one_session_connection() -> Config {
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = PoolMode::Session;
    cfg.pool.size = 1;
    cfg.pool.acquire_timeout_ms = 10_000;
    cfg
}

/// The SCRAM verifier of the proxy's role, as the superuser sees it.
async fn proxy_role_password() -> Option<String> {
    let su = postgres().superuser_client(Postgres::APP_DB).await;
    su.query_one("SELECT rolpassword FROM pg_authid WHERE rolname = $1", &[&Postgres::PROXY_USER]).await.unwrap().get(0)
}

/// Route: every tenant runs as the proxy's one upstream role, and PostgreSQL lets any role
/// change its own password. `ALTER ROLE CURRENT_USER PASSWORD '…'` is an `AlterRoleStmt`, not
/// the `AlterRoleSetStmt` the guard refuses (rule `alter_settings`), so a tenant's token gets
/// it through: committed, every new upstream connection of the proxy fails authentication
/// (all tenants locked out), and the tenant now knows the password of the proxy's role: with
/// network access to the database it logs in directly and sets `app.current_tenant` itself.
/// (Run inside a block that is rolled back: the cluster is shared with the other tests.)
#[tokio::test]
async fn a_tenant_cannot_change_the_proxy_roles_password() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let mut cfg = proxy::base_config(postgres());
        cfg.pool.mode = mode;
        let proxy = proxy::start(cfg).await;
        let before = proxy_role_password().await;
        let attacker = proxy.connect(&proxy.token("1")).await;
        attacker.batch_execute("BEGIN").await.unwrap();
        for sql in [
            "ALTER ROLE CURRENT_USER PASSWORD 'chosen-by-tenant-1'",
            "ALTER USER app_proxy WITH ENCRYPTED PASSWORD 'chosen-by-tenant-1'",
            "ALTER ROLE CURRENT_USER PASSWORD NULL",
        ] {
            let (code, message) = fails(&attacker, sql).await;
            assert_eq!(code, "42501", "{mode:?}: {sql}: {message}");
            assert!(message.starts_with("rlsproxy refused the statement: "), "{mode:?}: {sql}: {message}");
            attacker.batch_execute("ROLLBACK; BEGIN").await.unwrap();
        }
        attacker.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(proxy_role_password().await, before, "{mode:?}");
        assert_eq!(titles(&attacker).await, ACME);
    }
}

/// Route: the server's `random()` generator belongs to the backend process, and neither
/// `DISCARD ALL` nor the injection reseeds it. Tenant 1 runs `SELECT setseed(0.5)` (no guard
/// rule covers it, and it does not pin the session) and leaves; the next tenant on that server
/// connection then draws exactly the numbers tenant 1 computed in advance (tokens, sampled
/// ids, "random" passwords made with `random()`). Transaction pooling and session pooling (one
/// server connection each).
#[tokio::test]
async fn a_tenants_random_seed_never_reaches_the_next_tenant() {
    for (name, cfg) in [("transaction", one_connection()), ("session", one_session_connection())] {
        let proxy = proxy::start(cfg).await;
        let attacker = proxy.connect(&proxy.token("1")).await;
        assert_eq!(value(&attacker, "SELECT setseed(0.5)::text").await, "");
        let predicted: Vec<String> = rows(&attacker, "SELECT random()::text FROM generate_series(1, 3)")
            .await
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        assert_eq!(value(&attacker, "SELECT setseed(0.5)::text").await, "");
        drop(attacker);
        tokio::time::sleep(Duration::from_millis(200)).await;

        let victim = proxy.connect(&proxy.token("2")).await;
        assert_eq!(titles(&victim).await, GLOBEX, "{name}");
        let drawn: Vec<String> = rows(&victim, "SELECT random()::text FROM generate_series(1, 3)")
            .await
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        assert_ne!(drawn, predicted, "{name} pooling: tenant 2's random() is what tenant 1 seeded");
    }
}

/// Route: `LOCK TABLE documents IN ACCESS EXCLUSIVE MODE` needs only UPDATE or DELETE on the
/// table, which every tenant has (RLS limits rows, not locks), and the guard lets it through;
/// with `pool.idle_transaction_timeout_s = 0` (the default) the block stays open as long as
/// the attacker likes. Every other tenant's `SELECT` on the table then waits: tenant 2 is
/// hung by tenant 1 (no row of tenant 2's is needed).
#[tokio::test]
async fn a_tenant_cannot_lock_a_shared_table_against_other_tenants() {
    let proxy = proxy::start_default().await;
    let attacker = proxy.connect(&proxy.token("1")).await;
    attacker.batch_execute("BEGIN").await.unwrap();
    let locked = attacker.batch_execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE").await;
    let victim = proxy.connect(&proxy.token("2")).await;
    let seen = tokio::time::timeout(Duration::from_secs(3), titles(&victim)).await;
    let _ = attacker.batch_execute("ROLLBACK").await;
    assert_eq!(seen.ok(), Some(GLOBEX.map(String::from).to_vec()), "tenant 2 waited on tenant 1's lock");
    let (code, message) = proxy::db_error(&locked.expect_err("LOCK TABLE … ACCESS EXCLUSIVE was accepted"));
    assert_eq!(code, "42501", "{message}");
}

/// Route: advisory locks live in one database-wide key space and `pg_locks` is readable by
/// every role, while every tenant is the same role: LISTEN channels are scoped per tenant, lock
/// keys are not. Tenant 1 sees which keys tenant 2 holds (an application keying locks on ids
/// tells what tenant 2 is working on) and takes tenant 2's keys first (tenant 2's
/// `pg_try_advisory_lock` leader election or job lock then never succeeds). Now pg_locks is
/// revoked (0004) and each tenant's keys are its own; a tenant still excludes itself.
#[tokio::test]
async fn a_tenant_neither_sees_nor_takes_another_tenants_advisory_locks() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let mut cfg = proxy::base_config(postgres());
        cfg.pool.mode = mode;
        let proxy = proxy::start(cfg).await;
        let victim = proxy.connect(&proxy.token("2")).await;
        assert_eq!(value(&victim, "SELECT pg_try_advisory_lock(777001)::text").await, "true");
        let attacker = proxy.connect(&proxy.token("1")).await;
        let seen = try_rows(&attacker, "SELECT objid::text FROM pg_locks WHERE locktype = 'advisory'").await;
        let taken = value(&attacker, "SELECT pg_try_advisory_lock(777001)::text").await;
        let denied = ("42501".to_string(), "permission denied for view pg_locks".to_string());
        assert_eq!(seen, Err(denied), "{mode:?}: tenant 1 sees tenant 2's advisory locks");
        assert_eq!(taken, "true", "{mode:?}: tenant 1 is blocked by (so learns of) tenant 2's advisory lock");
        let again = proxy.connect(&proxy.token("2")).await;
        let own = value(&again, "SELECT pg_try_advisory_lock(777001)::text").await;
        assert_eq!(own, "false", "{mode:?}: tenant 2's second session took the key its first holds");
        for client in [&victim, &attacker] {
            assert_eq!(value(client, "SELECT pg_advisory_unlock(777001)::text").await, "true", "{mode:?}");
        }
    }
}
