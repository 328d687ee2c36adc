//! Strict mode across sessions, guard off: what one session can take from or leave for
//! another. A token signed for admin_role still gets the admin's view; a signed value copied
//! into another session, or replayed after it expired, gives no other tenant's rows; other
//! sessions' query text stays hidden; and a trap left on a pooled connection in transaction
//! mode (temporary objects, session settings, objects in a schema every tenant shares)
//! catches nobody.

use std::time::Duration;

use crate::harness::{ACME, ADMIN_ROLE, Env, Mode, SCRATCH, STRICT_TABLE, leaked};
use crate::session::{Protocol, Session, Transcript};

/// Every title of the strict table, by id (tenant 1's, then tenant 2's).
const ALL_TITLES: [&str; 5] =
    ["acme roadmap", "acme payroll", "acme onboarding", "globex merger plan", "globex handbook"];

/// One simple Query in `session`; what it received.
async fn query(session: &mut Session, sql: &str) -> Transcript {
    let mut reply = Transcript::default();
    session.run(Protocol::Simple, sql, &mut reply).await;
    reply
}

/// A fresh session for `tenant` (with `role`, signed by the proxy), simple protocol.
async fn open(env: &Env, tenant: &str, role: Option<&str>, ttl: Duration) -> Session {
    let token = env.proxy.token_with(tenant, role, ttl, &[]);
    Session::open(&env.proxy, &token, Protocol::Simple).await
}

fn titles_sql() -> String {
    format!("SELECT title FROM {STRICT_TABLE} ORDER BY id")
}

/// Records a failure unless `reply` is exactly these rows (first column) without an error.
fn expect_rows(env: &mut Env, label: &str, reply: &Transcript, expected: &[&str]) {
    env.runs += 1;
    if reply.closed || !reply.errors.is_empty() || reply.first_column() != expected {
        let got = (reply.first_column(), &reply.errors, reply.closed);
        env.fail(label, format!("expected {expected:?}, got {got:?}"));
    }
}

/// The scenarios that run in the strict configurations.
pub async fn run_all(env: &mut Env) {
    assert!(env.mode.strict());
    admin_token_keeps_the_admin_view(env).await;
    copied_value_gives_its_own_tenant_only(env).await;
    expired_value_gives_nothing(env).await;
    other_sessions_activity_stays_hidden(env).await;
}

/// The binding of role policies takes nothing from the role the proxy sets and signs.
async fn admin_token_keeps_the_admin_view(env: &mut Env) {
    let mut admin = open(env, "1", Some(ADMIN_ROLE), Duration::from_secs(3600)).await;
    let reply = query(&mut admin, &titles_sql()).await;
    expect_rows(env, "admin token: every row", &reply, &ALL_TITLES);
    let who = query(&mut admin, "SELECT current_user::text || ' ' || rlsproxy.role()").await;
    expect_rows(env, "admin token: role set and signed", &who, &["admin_role admin_role"]);
    admin.close().await;
}

/// Its own signed value, read in one session and set in another (with the plain tenant set
/// to 2), gives that other session tenant 1's rows and nothing more.
async fn copied_value_gives_its_own_tenant_only(env: &mut Env) {
    let mut first = open(env, "1", None, Duration::from_secs(3600)).await;
    // pg_settings lists no placeholder setting: current_setting is the way to read it.
    let listed = query(&mut first, "SELECT setting FROM pg_settings WHERE name LIKE 'rlsproxy.%'").await;
    expect_rows(env, "pg_settings does not list the signed value", &listed, &[]);
    let values = query(&mut first, "SELECT current_setting('rlsproxy.signed_context')").await.first_column();
    first.close().await;
    if values.len() != 1 || !values[0].starts_with("v1.") {
        env.fail("copied signed value", format!("could not read its own value: {values:?}"));
        return;
    }
    let mut second = open(env, "1", None, Duration::from_secs(3600)).await;
    let mut reply = Transcript::default();
    for step in [
        "BEGIN".to_string(),
        format!("SELECT set_config('rlsproxy.signed_context', '{}', false)", values[0]),
        "SELECT set_config('app.current_tenant', '2', false)".into(),
        titles_sql(),
    ] {
        reply = query(&mut second, &step).await;
    }
    expect_rows(env, "copied signed value: own rows only", &reply, &ACME);
    query(&mut second, "COMMIT").await;
    second.close().await;
}

/// A value whose `exp` has passed verifies no more: the session it was signed for sees no
/// row once its token expired, and replaying it in a fresh session sees none either.
async fn expired_value_gives_nothing(env: &mut Env) {
    let mut short = open(env, "1", None, Duration::from_secs(2)).await;
    let value = query(&mut short, "SELECT current_setting('rlsproxy.signed_context')").await.first_column();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let after = query(&mut short, &titles_sql()).await;
    env.runs += 1;
    if !after.first_column().is_empty() {
        env.fail("expired token's session", format!("still read {:?}", after.first_column()));
    }
    short.close().await;

    let mut fresh = open(env, "1", None, Duration::from_secs(3600)).await;
    let mut reply = Transcript::default();
    for step in [
        "BEGIN".to_string(),
        format!(
            "SELECT set_config('rlsproxy.signed_context', '{}', false)",
            value.first().cloned().unwrap_or_default()
        ),
        titles_sql(),
    ] {
        reply = query(&mut fresh, &step).await;
    }
    expect_rows(env, "expired value replayed: no rows", &reply, &[]);
    query(&mut fresh, "COMMIT").await;
    fresh.close().await;
}

/// Tenant 2's query text, while it runs, is in no view or function tenant 1 can reach, by
/// name or by OID (`migrations/0004_session_isolation.sql` revokes them).
async fn other_sessions_activity_stays_hidden(env: &mut Env) {
    let mut busy = open(env, "2", None, Duration::from_secs(3600)).await;
    let slow = tokio::spawn(async move {
        query(&mut busy, "SELECT 'globex secret query', pg_sleep(3)").await;
        busy.close().await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut spy = open(env, "1", None, Duration::from_secs(3600)).await;
    for sql in [
        "SELECT table_to_xml((SELECT oid FROM pg_class WHERE relname = 'pg_stat_' || 'activity')::regclass, \
         true, false, '')",
        "SELECT query FROM pg_stat_activity",
        "SELECT query FROM pg_stat_get_activity(NULL)",
        "SELECT pg_stat_get_backend_activity(b) FROM pg_stat_get_backend_idset() AS b",
        "SELECT query_to_xml('select * from pg_catalog.pg_stat_activity', true, false, '')",
    ] {
        let reply = query(&mut spy, sql).await;
        env.runs += 1;
        let code = reply.errors.first().map(|e| e.code.as_str());
        if let Some(leak) = leaked(&reply.texts) {
            env.fail(sql, format!("received tenant 2's query text: {leak:?}"));
        } else if code != Some("42501") {
            env.fail(sql, format!("expected 42501, got {:?}", reply.errors));
        }
    }
    spy.close().await;
    slow.await.expect("tenant 2's slow query");
}

/// Transaction mode, one server connection for everyone, guard off: tenant 1 leaves
/// temporary objects named like the strict table and the verifier, a session search_path
/// that puts them first, and a function in a schema it owns that copies whatever it sees;
/// tenant 2 then reads on the same connection. Tenant 2 gets exactly its own rows, and
/// nothing reaches tenant 1.
#[tokio::test]
async fn a_trap_on_a_pooled_connection_catches_nobody() {
    crate::harness::setup();
    let mut env = Env::start_with_pool(Mode::StrictTransaction, 1).await;
    env.su.batch_execute(&trap_tables()).await.expect("loot table");
    let mut attacker = open(&env, "1", None, Duration::from_secs(3600)).await;
    for step in [
        format!(
            "CREATE OR REPLACE FUNCTION {SCRATCH}.steal(t text) RETURNS boolean LANGUAGE sql \
             AS $$ INSERT INTO {SCRATCH}.loot VALUES (t || ' ' || current_setting('rlsproxy.signed_context', true)) \
             RETURNING true $$"
        ),
        format!(
            "CREATE TEMP VIEW {STRICT_TABLE} AS SELECT d.* FROM public.{STRICT_TABLE} AS d \
             WHERE {SCRATCH}.steal(d.title)"
        ),
        format!(
            "CREATE FUNCTION pg_temp.tenant_id() RETURNS integer LANGUAGE sql AS 'SELECT 1'; \
             DO $$ BEGIN EXECUTE 'SET search_path = pg_temp, {SCRATCH}, pg_catalog, public'; END $$"
        ),
    ] {
        let reply = query(&mut attacker, &step).await;
        assert!(reply.errors.is_empty(), "{step}: {:?}", reply.errors);
    }
    attacker.close().await;

    let mut victim = open(&env, "2", None, Duration::from_secs(3600)).await;
    let reply = query(&mut victim, &format!("SELECT title FROM {STRICT_TABLE} ORDER BY id")).await;
    expect_rows(&mut env, "the victim reads its own rows", &reply, &ALL_TITLES[3..]);
    victim.close().await;

    let mut attacker = open(&env, "1", None, Duration::from_secs(3600)).await;
    let loot = query(&mut attacker, &format!("SELECT v FROM {SCRATCH}.loot")).await;
    expect_rows(&mut env, "nothing reached the trap", &loot, &[]);
    attacker.close().await;
    assert!(env.failures.is_empty(), "{:#?}", env.failures);
}

/// The attacker's loot table, empty, in the schema it owns.
fn trap_tables() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {SCRATCH}.loot (v text); ALTER TABLE {SCRATCH}.loot OWNER TO app_proxy;
         TRUNCATE {SCRATCH}.loot; DROP VIEW IF EXISTS {SCRATCH}.{STRICT_TABLE};
         DROP FUNCTION IF EXISTS {SCRATCH}.set_config(text, text, boolean)"
    )
}
