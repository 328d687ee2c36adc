//! What the strict-mode red-team suites share: a table under strict policies named after the
//! suite (`public.<prefix>_docs`, rows `<prefix>-1-a`, `-1-b` of tenant 1, `-2-a`, `-2-b` of
//! tenant 2, `-3-a` of tenant 3), a database of their own with a given version of 0003,
//! a strict proxy with the guard off, and readers of what a session sees.

use std::future::Future;
use std::time::{Duration, Instant};

use rlsproxy::config::{Config, PoolMode};
use tokio_postgres::Client;

use crate::common::proxy::{self, TestProxy};
use crate::common::queries::try_rows;
use crate::common::{Postgres, postgres};

/// The rows' titles a session sees, or the error it got.
pub type Outcome = Result<Vec<String>, (String, String)>;

/// psql as the superuser on `db` with `args`; panics unless it succeeds; its output.
pub fn su_psql(db: &str, args: &[&str]) -> String {
    let out = postgres().superuser_psql(db).args(args).output().expect("run psql");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates (or empties and refills) the suite's table in `db`, granted to `grantees`, runs
/// `extra` (e.g. a role policy), then puts it under strict policies.
pub fn create_docs(db: &str, prefix: &str, grantees: &str, extra: &str) {
    let table = format!("public.{prefix}_docs");
    su_psql(
        db,
        &[
            "-c",
            &format!(
                "CREATE TABLE IF NOT EXISTS {table} (id serial PRIMARY KEY, tenant_id integer NOT NULL, title text);
                 TRUNCATE {table};
                 INSERT INTO {table} (tenant_id, title) VALUES
                     (1, '{prefix}-1-a'), (1, '{prefix}-1-b'), (2, '{prefix}-2-a'), (2, '{prefix}-2-b'), (3, '{prefix}-3-a');
                 GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {grantees};
                 GRANT USAGE ON SEQUENCE {table}_id_seq TO {grantees};
                 {extra}
                 SELECT rlsproxy.enable_strict_policies('{table}');"
            ),
        ],
    );
}

/// A database `db` of its own with `migration` (a version of 0003), the key `kid` and the
/// suite's table; the superuser's client of it.
pub async fn install(db: &str, migration: &str, kid: &str, key_hex: &str, prefix: &str) -> Client {
    // Released before the test goes on: a test that runs 0003 again takes it itself.
    let _migrations = proxy::MIGRATIONS.lock().await;
    su_psql("postgres", &["-c", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")]);
    su_psql("postgres", &["-c", &format!("CREATE DATABASE {db}")]);
    su_psql(db, &["-f", migration]);
    su_psql(db, &["-c", &format!("INSERT INTO rlsproxy_private.keys (kid, secret) VALUES ('{kid}', '\\x{key_hex}')")]);
    create_docs(db, prefix, "app_proxy", "");
    postgres().superuser_client(db).await
}

/// A strict proxy's configuration, guard off, signing under `kid`: pool `mode` and `size`,
/// a patient pool (a probe may hold connections).
pub async fn strict_config(kid: &str, key_hex: &str, mode: PoolMode, size: usize) -> Config {
    let mut cfg = proxy::strict_without_guard(postgres(), kid, key_hex).await;
    cfg.pool.mode = mode;
    cfg.pool.size = size;
    cfg.pool.acquire_timeout_ms = 20_000;
    cfg
}

/// The titles `sql` (one column) gives the session.
pub async fn titles(c: &Client, sql: &str) -> Outcome {
    try_rows(c, sql).await.map(|rows| rows.into_iter().map(|r| r[0].clone().unwrap_or_default()).collect())
}

/// Fails when `seen` holds a row outside `allowed`.
pub fn only(label: &str, seen: &Outcome, allowed: &[&str]) {
    eprintln!("[{label}] {seen:?}");
    if let Ok(rows) = seen {
        assert!(rows.iter().all(|t| allowed.contains(&t.as_str())), "{label}: tenant 1 saw other rows: {rows:?}");
    }
}

pub fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// The first column of the first row of `sql`.
pub async fn one(c: &Client, sql: &str) -> Result<Option<String>, (String, String)> {
    try_rows(c, sql).await.map(|rows| rows.first().and_then(|r| r[0].clone()))
}

/// Whether the count `sql` returns becomes positive within `secs`.
pub async fn wait_for(su: &Client, sql: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let n: i64 = su.query_one(sql, &[]).await.expect("count").get(0);
        if n > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What a lock probe saw: whether the attacker's statement still waited for a lock after
/// 500 ms, what tenant 2 (a fresh client) got within 3 s, and the attacker's eventual result.
#[derive(Debug)]
pub struct Probe {
    pub queued: bool,
    pub victim: Result<Outcome, &'static str>,
    pub attacker: Result<(), (String, String)>,
}

/// Tenant 1 holds a strict transaction open on one connection of `proxy` (having read its
/// rows, `own`, with `titles_sql`) and runs `cmd` on a second; queued means an ungranted lock
/// on a relation that `watch` (a condition on pg_class `c`) names. Tenant 2 then connects and
/// reads, and `meanwhile` runs, both while the transaction is still open; then it ends.
pub async fn lock_probe<F: Future>(
    proxy: &TestProxy,
    titles_sql: &str,
    own: &[&str],
    cmd: &str,
    watch: &str,
    meanwhile: F,
) -> (Probe, F::Output) {
    let su = postgres().superuser_client(Postgres::APP_DB).await;
    let holder = proxy.connect(&proxy.token("1")).await;
    holder.batch_execute("BEGIN").await.expect("begin");
    only("holder", &titles(&holder, titles_sql).await, own);
    let queuer = proxy.connect(&proxy.token("1")).await;
    let q = cmd.to_string();
    let attack = tokio::spawn(async move { queuer.batch_execute(&q).await.map_err(|e| proxy::db_error(&e)) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting: i64 = su
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE ({watch}) AND NOT l.granted"
            ),
            &[],
        )
        .await
        .expect("locks")
        .get(0);
    let queued = waiting > 0 && !attack.is_finished();
    let token2 = proxy.token("2");
    let victim = tokio::time::timeout(Duration::from_secs(3), async {
        match proxy.try_connect(&token2).await {
            Ok(victim) => titles(&victim, titles_sql).await,
            Err(e) => Err(proxy::db_error(&e)),
        }
    })
    .await
    .map_err(|_| "timed out after 3 s");
    let during = meanwhile.await;
    let _ = holder.batch_execute("ROLLBACK").await;
    let attacker = tokio::time::timeout(Duration::from_secs(15), attack)
        .await
        .expect("the attacker's statement ends")
        .expect("attack task");
    (Probe { queued, victim, attacker }, during)
}
