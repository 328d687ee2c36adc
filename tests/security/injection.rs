//! Context injection invariants (docs/security.md, "Injection"): interleaved tenants stay
//! apart, a reused server connection carries nothing of its last client, and a
//! failed injection runs none of the transaction's statements.

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::common::{postgres, proxy};
use crate::{ACME, GLOBEX, current_tenant, refused, server_error, titles};

/// Titles through the simple protocol (a Query message rather than Parse/Bind).
async fn simple_titles(client: &Client) -> Vec<String> {
    let msgs = client.simple_query("SELECT title FROM documents ORDER BY id").await.expect("simple select");
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default().to_string()),
            _ => None,
        })
        .collect()
}

async fn count(client: &Client, table: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.expect("count").get(0)
}

#[tokio::test]
async fn interleaved_tenants_never_see_each_other() {
    let proxy = proxy::start_default().await;
    let a = proxy.connect(&proxy.token("1")).await;
    let b = proxy.connect(&proxy.token("2")).await;
    for i in 0..30 {
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        first.batch_execute("BEGIN").await.unwrap();
        second.batch_execute("BEGIN").await.unwrap();
        assert_eq!(titles(&a).await, ACME, "iteration {i}");
        assert_eq!(simple_titles(&b).await, GLOBEX, "iteration {i}");
        first.batch_execute("COMMIT").await.unwrap();
        assert_eq!(simple_titles(&a).await, ACME, "iteration {i}");
        assert_eq!(titles(&b).await, GLOBEX, "iteration {i}");
        second.batch_execute("COMMIT").await.unwrap();
        // Outside explicit transactions, concurrently.
        let (ta, tb, ca, cb) = tokio::join!(titles(&a), titles(&b), current_tenant(&a), current_tenant(&b));
        assert_eq!((ta, ca), (ACME.map(String::from).to_vec(), "1".to_string()), "iteration {i}");
        assert_eq!((tb, cb), (GLOBEX.map(String::from).to_vec(), "2".to_string()), "iteration {i}");
    }
}

/// pool.size = 1: the second client gets the first one's server connection, reset.
#[tokio::test]
async fn reused_server_connection_carries_nothing_across_tenants() {
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.size = 1;
    let proxy = proxy::start(cfg).await;
    let a = proxy.connect(&proxy.token("1")).await;
    let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    a.batch_execute(
        "SET search_path = pg_catalog, public; \
         CREATE TEMP TABLE sec_reuse_probe (secret text); \
         INSERT INTO sec_reuse_probe VALUES ('acme secret')",
    )
    .await
    .unwrap();
    assert_eq!(titles(&a).await, ACME);
    drop(a);

    let b = proxy.connect(&proxy.token("2")).await;
    let pid_b: i32 = b.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_eq!(pid_b, pid, "pool.size = 1 must hand over the same server connection");
    assert_eq!(current_tenant(&b).await, "2");
    assert_eq!(titles(&b).await, GLOBEX);
    let search_path: String = b.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(search_path, "public", "upstream.search_path, pinned at connection start");
    let temp: Option<String> =
        b.query_one("SELECT to_regclass('pg_temp.sec_reuse_probe')::text", &[]).await.unwrap().get(0);
    assert_eq!(temp, None, "the first client's temp table survived");
    let any: i64 =
        b.query_one("SELECT count(*) FROM pg_class WHERE relname = 'sec_reuse_probe'", &[]).await.unwrap().get(0);
    assert_eq!(any, 0);
}

async fn ensure_role_without_membership() {
    let su = postgres().superuser_client("app").await;
    su.batch_execute(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'no_such_member') THEN \
             CREATE ROLE no_such_member NOLOGIN; \
           END IF; \
         END $$",
    )
    .await
    .expect("create role no_such_member");
}

/// A role the upstream role cannot SET: the first injection fails at session start, so the
/// client never gets a session, let alone a row.
#[tokio::test]
async fn failed_role_injection_refuses_the_session() {
    ensure_role_without_membership().await;
    let mut cfg = proxy::base_config(postgres());
    cfg.jwt.role_claim = "role".into();
    cfg.jwt.allowed_roles = vec!["admin_role".into(), "no_such_member".into()];
    let proxy = proxy::start(cfg).await;
    let hour = Duration::from_secs(3600);

    let token = proxy.token_with("1", Some("no_such_member"), hour, &[]);
    let (severity, code, message) = refused(&proxy, &token).await;
    assert_eq!(
        (severity.as_str(), code.as_str(), message.as_str()),
        ("FATAL", "42501", "rlsproxy: cannot start the session: permission denied to set role \"no_such_member\"")
    );

    // Controls: the role mechanism works, and the failure left the proxy usable.
    let admin = proxy.connect(&proxy.token_with("1", Some("admin_role"), hour, &[])).await;
    let all: Vec<&str> = ACME.iter().chain(&GLOBEX).copied().collect();
    assert_eq!(titles(&admin).await, all);
    let plain = proxy.connect(&proxy.token("2")).await;
    assert_eq!(titles(&plain).await, GLOBEX);
    let who: String = plain.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, "app_proxy");
}

const DROPPED: &str = "rlsproxy: could not set the tenant context, so no statement of this transaction ran: \
                       prepared statement \"rlsproxy_ctx\" does not exist";

fn assert_injection_failed(err: &tokio_postgres::Error) {
    assert_eq!(server_error(err), ("ERROR".into(), "26000".into(), DROPPED.into()));
}

/// `DEALLOCATE ALL` and `DISCARD ALL` drop the injection statement: the proxy sees them and
/// prepares it again, so the next transaction (simple and extended protocol) runs normally,
/// in this client's context.
#[tokio::test]
async fn dropped_injection_statement_is_prepared_again() {
    let proxy = proxy::start_default().await;
    let c = proxy.connect(&proxy.token("1")).await;
    c.batch_execute("CREATE TEMP TABLE sec_dealloc_probe (x int)").await.unwrap();

    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    c.batch_execute("INSERT INTO sec_dealloc_probe VALUES (1)").await.unwrap();
    assert_eq!(count(&c, "sec_dealloc_probe").await, 1);
    assert_eq!(titles(&c).await, ACME);

    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    c.execute("INSERT INTO sec_dealloc_probe VALUES (2)", &[]).await.unwrap();
    assert_eq!(count(&c, "sec_dealloc_probe").await, 2);
    assert_eq!(current_tenant(&c).await, "1");

    // DISCARD ALL as a whole Query runs (drivers reset with it); the context comes back.
    c.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(current_tenant(&c).await, "1");
    assert_eq!(titles(&c).await, ACME);
}

/// A proxy without the statement guard: what the injection guarantees must hold on its own.
async fn start_without_guard() -> proxy::TestProxy {
    let mut cfg = proxy::base_config(postgres());
    cfg.guard.enabled = false;
    proxy::start(cfg).await
}

/// A statement that drops every prepared statement, the injection's included, hidden from
/// any text inspection (dynamic SQL).
const HIDDEN_DROP: &str = "DO $$ BEGIN EXECUTE 'DEALLOC' || 'ATE ALL'; END $$";

/// The same drop hidden from any text inspection: the proxy still believes its context is
/// committed and pipelines the injection in front of the next transaction. The failed
/// injection must make the server skip the client's statements. (The guard, which refuses
/// DO blocks, is off: this is about the injection, not the guard.)
#[tokio::test]
async fn hidden_injection_drop_fails_closed_on_the_pipelined_path() {
    let proxy = start_without_guard().await;
    let c = proxy.connect(&proxy.token("1")).await;
    c.batch_execute("CREATE TEMP TABLE sec_hidden_probe (x int)").await.unwrap();
    let hide = HIDDEN_DROP;
    c.batch_execute(hide).await.unwrap();
    let err = c.batch_execute("INSERT INTO sec_hidden_probe VALUES (1)").await.expect_err("INSERT ran");
    assert_injection_failed(&err);
    assert_eq!(count(&c, "sec_hidden_probe").await, 0);

    c.batch_execute(hide).await.unwrap();
    let err = c.execute("INSERT INTO sec_hidden_probe VALUES (2)", &[]).await.expect_err("INSERT ran");
    assert_injection_failed(&err);
    assert_eq!(count(&c, "sec_hidden_probe").await, 0);

    // A transaction block: its injection runs in transactions of its own (a snapshot taken in
    // the block would forbid a later SET TRANSACTION), every setting emptied first; the hidden
    // drop makes the context's step fail, so the block runs with no context (its cast of the
    // empty tenant fails) and the session ends.
    c.batch_execute(hide).await.unwrap();
    let err = c
        .batch_execute("BEGIN; INSERT INTO sec_hidden_probe SELECT current_setting('app.current_tenant')::int; COMMIT")
        .await
        .expect_err("the block ran");
    assert_injection_failed(&err);
    let after = c.batch_execute("SELECT 1").await.expect_err("the session ended");
    assert!(after.is_closed() || c.is_closed(), "{after:?}");
    let c = proxy.connect(&proxy.token("1")).await;
    assert_eq!(titles(&c).await, ACME);
    assert_eq!(current_tenant(&c).await, "1");
}

/// A failing injection in front of a client's pipeline (two extended-protocol statements and
/// their Sync, sent without waiting, then a Query): the whole first transaction is skipped with
/// the injection's error, and the Query behind it runs in this client's context.
#[tokio::test]
async fn a_failing_pipelined_injection_runs_none_of_the_pipeline() {
    let proxy = start_without_guard().await;
    let (mut c, _) = crate::raw_login(&proxy, &proxy.token("1"), &[]).await;
    crate::raw_query(&mut c, "CREATE TEMP TABLE sec_pipeline_probe (x int)").await;
    crate::raw_query(&mut c, HIDDEN_DROP).await;
    let mut pipeline = crate::Msgs::new();
    for value in [1, 2] {
        pipeline = pipeline.unsynced(&format!("INSERT INTO sec_pipeline_probe VALUES ({value})"), &[]);
    }
    let count = "SELECT count(*)::text || '/' || current_setting('app.current_tenant') FROM sec_pipeline_probe";
    c.send_msgs(&pipeline.sync().query(count)).await;
    let failed = c.read_until_ready().await;
    assert_eq!(crate::tags(&failed), "EZ");
    assert_eq!(crate::sev_code_msg(&crate::the_error(&failed)), ("ERROR", "26000", DROPPED));
    let after = c.read_until_ready().await;
    assert_eq!(crate::first_column(&after), ["0/1"], "{}", crate::tags(&after));
    // The next transaction prepares the injection again and runs.
    let inserted = crate::raw_query(&mut c, "INSERT INTO sec_pipeline_probe VALUES (3)").await;
    assert_eq!(crate::tags(&inserted), "CZ");
}

/// Before BEGIN the injection cannot share the block's transaction. If it fails there (here:
/// a role the upstream role may no longer SET, revoked during the session), the settings it
/// cleared first stay cleared: the block runs with no tenant and no role, so policies fail
/// closed, and the session ends.
#[tokio::test]
async fn a_failed_injection_before_begin_leaves_an_empty_context() {
    let su = postgres().superuser_client("app").await;
    su.batch_execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sec_revoked') THEN \
         CREATE ROLE sec_revoked NOLOGIN; END IF; END $$; \
         GRANT SELECT ON documents TO sec_revoked; GRANT sec_revoked TO app_proxy; \
         CREATE TABLE IF NOT EXISTS sec_ctx_log (tenant text, who text); \
         GRANT INSERT ON sec_ctx_log TO PUBLIC; TRUNCATE sec_ctx_log",
    )
    .await
    .unwrap();
    let mut cfg = proxy::base_config(postgres());
    cfg.jwt.role_claim = "role".into();
    cfg.jwt.allowed_roles = vec!["sec_revoked".into()];
    let proxy = proxy::start(cfg).await;
    let token = proxy.token_with("1", Some("sec_revoked"), Duration::from_secs(3600), &[]);
    let c = proxy.connect(&token).await;
    assert_eq!(titles(&c).await, ACME);

    // A raw client sees every message: the injection's error, the block's own replies, the end.
    let mut raw = crate::common::raw::connect(proxy.addr).await;
    raw.send_startup(&[("user", "alice"), ("database", "app")]).await;
    assert_eq!(raw.read_message().await.0, b'R');
    raw.send_password(&token).await;
    raw.read_until_ready().await;
    su.batch_execute("REVOKE sec_revoked FROM app_proxy").await.unwrap();
    raw.send_query(
        "BEGIN; INSERT INTO sec_ctx_log SELECT current_setting('app.current_tenant'), current_user::text; COMMIT",
    )
    .await;
    let mut errors = Vec::new();
    let mut rows = 0;
    while let Ok(Some((tag, body))) = raw.try_read_message(Duration::from_secs(10)).await {
        match tag {
            b'D' => rows += 1,
            b'E' => {
                let f = crate::common::raw::error_fields(&body);
                errors.push((f[&'S'].clone(), f[&'C'].clone()));
            }
            _ => {}
        }
    }
    assert_eq!(rows, 0, "a row was returned with a stale context");
    // The injection failed, and the session ends with it.
    assert_eq!(errors, [("ERROR".to_string(), "42501".to_string()), ("FATAL".to_string(), "42501".to_string())]);
    // The block had been sent already. If it ran before the proxy closed the connection (and
    // cancelled what was in flight), it ran in the emptied context: no tenant and the proxy's
    // own role, never the previous tenant and revoked role.
    let log = su.query("SELECT tenant, who FROM sec_ctx_log", &[]).await.unwrap();
    let log: Vec<(String, String)> = log.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(log.is_empty() || log == [(String::new(), "app_proxy".to_string())], "{log:?}");
    su.batch_execute("GRANT sec_revoked TO app_proxy").await.unwrap();
}

/// Strict mode with the guard off: a DISCARD SEQUENCES hidden in dynamic SQL empties what
/// recorded the connection's admission while its marker stays. The client's next statement
/// fails (55000, no row of anybody) and the connection takes the context afresh after it, so
/// the session does not stay broken (without that, every later statement failed).
#[tokio::test]
async fn a_hidden_discard_sequences_in_strict_mode_breaks_one_statement_only() {
    let mut cfg = proxy::strict_without_guard(postgres(), "sec_seq_k", &"736571756e636573".repeat(4)).await;
    cfg.pool.mode = rlsproxy::config::PoolMode::Transaction;
    cfg.pool.size = 1;
    let proxy = proxy::start(cfg).await;
    let c = proxy.connect(&proxy.token("1")).await;
    async fn tenant(c: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
        c.query_one("SELECT rlsproxy.tenant_id()", &[]).await.map(|r| r.get(0))
    }
    assert_eq!(tenant(&c).await.unwrap(), Some(1));
    c.batch_execute("DO $$ BEGIN EXECUTE 'DISC' || 'ARD SEQUENCES'; END $$").await.unwrap();
    // (A key changed meanwhile by another test moves the epoch: the value is then admitted
    // again at once and even the first statement succeeds.)
    match tenant(&c).await {
        Ok(first) => assert_eq!(first, Some(1)),
        Err(err) => assert_eq!(err.code().map(|c| c.code()), Some("55000"), "{err:?}"),
    }
    assert_eq!(tenant(&c).await.unwrap(), Some(1), "the connection took the context afresh");
}

/// Strict mode records a context's admission when a connection takes the context, not in
/// every transaction: after a change of keys its statements verify the slow way (same rows)
/// until the connection takes the context afresh, within `ADMISSION_REFRESH`.
#[tokio::test]
async fn strict_admissions_follow_a_change_of_keys_within_the_refresh() {
    let key = "72656672657368".repeat(5);
    let mut cfg = proxy::strict_without_guard(postgres(), "sec_refresh_k", &key).await;
    cfg.pool.mode = rlsproxy::config::PoolMode::Transaction;
    cfg.pool.size = 1;
    let _keys = proxy::KEYS.lock().await;
    let proxy = proxy::start(cfg).await;
    let before_adoption = std::time::Instant::now();
    let c = proxy.connect(&proxy.token("1")).await;
    async fn state(c: &Client) -> (Option<i32>, bool) {
        let row = c
            .query_one(
                "SELECT rlsproxy.tenant_id(), rlsproxy.is_admitted(current_setting('rlsproxy.signed_context'))",
                &[],
            )
            .await
            .expect("state");
        (row.get(0), row.get(1))
    }
    assert_eq!(state(&c).await, (Some(1), true));
    postgres()
        .superuser_client(crate::common::Postgres::APP_DB)
        .await
        .execute("UPDATE rlsproxy_private.keys SET secret = secret WHERE kid = 'sec_refresh_k'", &[])
        .await
        .expect("touch the keys");
    let still_fresh = before_adoption.elapsed() < rlsproxy::policy::context::ADMISSION_REFRESH;
    let (tenant, admitted) = state(&c).await;
    assert_eq!(tenant, Some(1), "verified the slow way");
    if still_fresh {
        assert!(!admitted, "an admission under the old keys");
    }
    tokio::time::sleep(rlsproxy::policy::context::ADMISSION_REFRESH + Duration::from_millis(300)).await;
    assert_eq!(state(&c).await, (Some(1), true), "admitted again under the new keys");
}

/// With `[context] hide_injection` the injection leaves nothing a client's statements can see:
/// no prepared statement in `pg_prepared_statements` (asyncpg's tests without a statement
/// cache expect none), in both pool modes, default and strict mode, by the simple and the
/// extended protocol, in the transaction that took the context afresh and in one with the
/// pipelined injection; a squatter on the reserved name (guard off) does not stop it.
#[tokio::test]
async fn a_hidden_injection_leaves_no_prepared_statement() {
    use rlsproxy::config::PoolMode;
    const HIDDEN_SQUAT: &str = "DO $$ BEGIN EXECUTE 'PREP' || 'ARE rlsproxy' || '_ctx AS SELECT 1'; END $$";
    let strict = proxy::strict_without_guard(postgres(), "sec_trace_k", &"7472616365".repeat(7)).await;
    for (label, base) in [("default", proxy::base_config(postgres())), ("strict", strict)] {
        for mode in [PoolMode::Transaction, PoolMode::Session] {
            let mut cfg = base.clone();
            cfg.pool.mode = mode;
            cfg.pool.size = 1;
            cfg.context.hide_injection = true;
            cfg.guard.enabled = false;
            let proxy = proxy::start(cfg).await;
            let c = proxy.connect(&proxy.token("1")).await;
            let listed = "SELECT coalesce(string_agg(name, ','), '') FROM pg_prepared_statements";
            for round in 0..2 {
                let simple = c.simple_query(listed).await.unwrap().iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                });
                let simple = simple.unwrap_or_default();
                if round == 0 {
                    assert_eq!(simple, "", "{label} {mode:?}: the first statement sees none");
                }
                // tokio-postgres prepares this one (named; in transaction mode the proxy keeps
                // client statements on the server under names of its own).
                let extended: String = c.query_one(listed, &[]).await.unwrap().get(0);
                for name in simple.split(',').chain(extended.split(',')) {
                    assert!(
                        !matches!(name, "rlsproxy_ctx" | "rlsproxy_admit"),
                        "{label} {mode:?} round {round}: {simple} / {extended}"
                    );
                }
            }
            c.batch_execute(HIDDEN_SQUAT).await.unwrap();
            assert_eq!(titles(&c).await, ACME, "{label} {mode:?}: after a squatter");
        }
    }
}
