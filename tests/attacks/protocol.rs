//! Protocol-level attempts and attempts through other sessions, once per configuration:
//! the proxy's reserved statement by Close/Parse/Bind, a fast-path call of set_config,
//! startup parameters, a forged token, and what other sessions leave in pg_stat_activity,
//! in LISTEN registrations and in session state, and notifications of tenant 2's channels.

use std::time::Duration;

use rlsproxy::auth::{MintRequest, mint};

use crate::Expect::{self, Guard, Reserved};
use crate::common::raw;
use crate::common::wire::Msgs;
use crate::harness::{Env, leaked};
use crate::session::{self, Protocol, Session, Transcript};

/// OID of `set_config(text, text, boolean)` in pg_proc.
const SET_CONFIG_OID: u32 = 2078;

/// Every attempt of this file.
pub async fn run_all(env: &mut Env) {
    reserved_statement(env).await;
    function_call_of_set_config(env).await;
    for (name, value) in [("options", "-c app.current_tenant=2"), ("app.current_tenant", "2"), ("role", "admin_role")] {
        startup_parameter(env, name, value).await;
    }
    token_under_a_wrong_key(env).await;
    encoding_at_startup(env).await;
    injected_values_in_pg_stat_activity(env).await;
    query_text_in_pg_stat_activity(env).await;
    cancel_through_pg_cancel_backend(env).await;
    listen_left_behind(env).await;
    listen_across_tenants(env).await;
    state_left_behind(env).await;
}

/// `BEGIN`, the messages (ending with a read of the table and Sync), then `COMMIT`; judged.
async fn in_block(env: &mut Env, name: &str, messages: Msgs, expect: Expect) {
    let label = env.label(name, "parse");
    let mut s = env.session(Protocol::Parse).await;
    let mut reply = Transcript::default();
    s.run(Protocol::Simple, "BEGIN", &mut reply).await;
    let read = env.render("SELECT title FROM {docs}");
    s.exchange(&messages.run(&read, &[]), &mut reply).await;
    s.run(Protocol::Simple, &read, &mut reply).await;
    s.run(Protocol::Simple, "COMMIT", &mut reply).await;
    env.check_block_failed(&label, expect, &reply);
    env.judge(&label, Some(expect), &reply, Some(&mut s)).await;
    s.close().await;
}

/// The injection statement: bound with tenant 2's values, parsed anew, closed, described.
async fn reserved_statement(env: &mut Env) {
    let params = env.ctx_params();
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    let bind = Msgs::new().bind_text("", "rlsproxy_ctx", &params).execute("", 0);
    in_block(env, "Bind of rlsproxy_ctx with tenant 2's values", bind, Reserved).await;

    let parse = Msgs::new()
        .parse("rlsproxy_ctx", "SELECT set_config($1, $2, false)", &[])
        .bind_text("", "rlsproxy_ctx", &["app.current_tenant", "2"])
        .execute("", 0);
    in_block(env, "Parse named rlsproxy_ctx, then Bind with tenant 2", parse, Reserved).await;

    let close = Msgs::new().close(b'S', "rlsproxy_ctx");
    in_block(env, "Close of rlsproxy_ctx", close, Reserved).await;

    let describe = Msgs::new().describe(b'S', "rlsproxy_ctx");
    in_block(env, "Describe of rlsproxy_ctx", describe, Reserved).await;
}

/// FunctionCall of set_config by OID inside a block, then a read in the same block.
async fn function_call_of_set_config(env: &mut Env) {
    let label = env.label("fast-path FunctionCall of set_config (OID 2078)", "function call");
    let mut s = env.session(Protocol::Parse).await;
    let mut reply = Transcript::default();
    s.run(Protocol::Simple, "BEGIN", &mut reply).await;
    let forged = env.forged();
    for args in [["app.current_tenant", "2", "false"], ["rlsproxy.signed_context", &forged, "false"]] {
        s.exchange(&Msgs::new().function_call_text(SET_CONFIG_OID, &args), &mut reply).await;
    }
    s.run(Protocol::Simple, &env.render("SELECT title FROM {docs}"), &mut reply).await;
    s.run(Protocol::Simple, "COMMIT", &mut reply).await;
    env.check_block_failed(&label, Guard(&["function_call"]), &reply);
    env.judge(&label, Some(Guard(&["function_call"])), &reply, Some(&mut s)).await;
    s.close().await;
}

/// Reads the answer to a startup packet: true (and judged) when it is a refusal, which must be
/// FATAL 42501; otherwise it must be the authentication request, and the caller goes on.
async fn refused_at_startup(env: &mut Env, label: &str, c: &mut raw::RawClient) -> bool {
    let (tag, body) = c.read_message().await;
    if tag != b'E' {
        assert_eq!(tag, b'R', "authentication request");
        return false;
    }
    let f = raw::error_fields(&body);
    if (f[&'S'].as_str(), f[&'C'].as_str()) != ("FATAL", "42501") {
        env.fail(label, format!("refused, but not with FATAL 42501: {f:?}"));
    }
    env.judge(label, None, &Transcript::default(), None).await;
    true
}

/// A startup packet carrying a setting: refused before authentication, or else harmless.
async fn startup_parameter(env: &mut Env, name: &str, value: &str) {
    let label = env.label(&format!("startup parameter {name}={value}"), "startup");
    let mut c = raw::connect(env.proxy.addr).await;
    c.send_startup(&[("user", "alice"), ("database", "app"), (name, value)]).await;
    if refused_at_startup(env, &label, &mut c).await {
        return;
    }
    env.fail(&label, "the startup parameter was accepted");
    c.send_password(&env.proxy.token("1")).await;
    let mut reply = Transcript::default();
    let mut s = Session::from_raw(c);
    s.exchange(&Msgs::new(), &mut reply).await;
    env.judge(&label, None, &reply, Some(&mut s)).await;
}

/// client_encoding (an allowed startup parameter) set to SJIS at startup, then the statement
/// of the lexer attempts: set_config where the guard reads the inside of a string.
async fn encoding_at_startup(env: &mut Env) {
    let label = env.label("SJIS client_encoding at startup: set_config hidden from the guard", "startup");
    let mut c = raw::connect(env.proxy.addr).await;
    c.send_startup(&[("user", "alice"), ("database", "app"), ("client_encoding", "SJIS")]).await;
    // Refused before authentication: the encoding the guard cannot model never gets a session.
    if refused_at_startup(env, &label, &mut c).await {
        return;
    }
    c.send_password(&env.proxy.token("1")).await;
    let mut reply = Transcript::default();
    let mut s = Session::from_raw(c);
    s.exchange(&Msgs::new(), &mut reply).await;
    let sql = "SELECT E'\u{c1}\\', set_config($$app.current_tenant$$, $$2$$, false), title FROM {docs} --'";
    s.run(Protocol::Simple, &env.render(sql), &mut reply).await;
    env.judge(&label, Some(Guard(crate::lexer::ANY_RULES)), &reply, Some(&mut s)).await;
    s.close().await;
}

/// A token for tenant 2 signed with another secret: no session at all.
async fn token_under_a_wrong_key(env: &mut Env) {
    let label = env.label("token for tenant 2 under a wrong key", "startup");
    let mut jwt = env.proxy.config.jwt.clone();
    jwt.secret = Some("not-the-proxy-secret-0123456789abcdef".into());
    let req = MintRequest {
        tenant: "2".into(),
        subject: None,
        role: None,
        ttl: Duration::from_secs(3600),
        extra: Vec::new(),
    };
    let token = mint(&jwt, &req).expect("mint");
    match env.proxy.try_connect(&token).await {
        Err(e) => {
            let code = e.as_db_error().map(|db| db.code().code().to_string());
            if code.as_deref() != Some("28P01") {
                env.fail(&label, format!("refused, but not with 28P01: {e}"));
            }
            env.judge(&label, None, &Transcript::default(), None).await;
        }
        Ok(client) => {
            let rows = client.simple_query(&env.render("SELECT title FROM {docs}")).await;
            env.fail(&label, format!("the token was accepted; the session reads {rows:?}"));
            env.judge(&label, None, &Transcript::default(), None).await;
        }
    }
}

/// Tenant 2 runs transactions while tenant 1 watches pg_stat_activity: the proxy's injection
/// must show there only with parameter placeholders, never with tenant 2's values.
async fn injected_values_in_pg_stat_activity(env: &mut Env) {
    let label = env.label("pg_stat_activity during tenant 2's injections", "simple");
    let other = env.proxy.connect(&env.proxy.token("2")).await;
    let mut spy = env.session(Protocol::Simple).await;
    let watch = "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND usename = 'app_proxy'";
    let busy = async {
        for _ in 0..40 {
            other.query("SELECT 1", &[]).await.expect("tenant 2 works");
        }
    };
    let mut reply = Transcript::default();
    let watching = async {
        for _ in 0..40 {
            spy.run(Protocol::Simple, watch, &mut reply).await;
        }
    };
    tokio::join!(busy, watching);
    for query in reply.first_column() {
        let literal = query.contains("set_config") && !query.contains("$1");
        if literal || query.contains("v1.") {
            env.fail(&label, format!("another backend's query shows context values: {query:?}"));
        }
    }
    // The guard refuses pg_stat_activity (forbidden_object); migration 0004 revokes it too.
    env.judge(&label, Some(Expect::Guard(&["forbidden_object"])), &reply, Some(&mut spy)).await;
    spy.close().await;
}

/// Tenant 2's own SQL text (a literal of its data) must not reach tenant 1 either.
async fn query_text_in_pg_stat_activity(env: &mut Env) {
    let label = env.label("pg_stat_activity showing tenant 2's last query", "simple");
    let other = env.proxy.connect(&env.proxy.token("2")).await;
    let sql = "SELECT count(*) FROM documents WHERE title = 'globex merger plan'";
    other.simple_query(sql).await.expect("tenant 2's query");
    let mut spy = env.session(Protocol::Simple).await;
    let mut reply = Transcript::default();
    let watch = "SELECT state, query FROM pg_stat_activity WHERE pid <> pg_backend_pid()";
    spy.run(Protocol::Simple, watch, &mut reply).await;
    // The guard refuses pg_stat_activity (forbidden_object); migration 0004 revokes it too.
    env.judge(&label, Some(Expect::Guard(&["forbidden_object"])), &reply, Some(&mut spy)).await;
    spy.close().await;
    drop(other);
}

/// Every server connection has the proxy's role, so SQL signals reach any of them: tenant 1
/// must not be able to cancel tenant 2's running query (docs/security.md, "Other sessions").
async fn cancel_through_pg_cancel_backend(env: &mut Env) {
    let label = env.label("pg_cancel_backend of tenant 2's running query", "simple");
    let other = env.proxy.connect(&env.proxy.token("2")).await;
    let mut spy = env.session(Protocol::Simple).await;
    let mut reply = Transcript::default();
    let attack = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sql = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                   WHERE pid <> pg_backend_pid() AND query = 'SELECT pg_sleep(2)'";
        spy.run(Protocol::Simple, sql, &mut reply).await;
    };
    let (slept, ()) = tokio::join!(other.simple_query("SELECT pg_sleep(2)"), attack);
    if let Err(e) = slept {
        let db = e.as_db_error().map(|db| (db.code().code().to_string(), db.message().to_string()));
        env.fail(&label, format!("tenant 2's query failed: {db:?}"));
    }
    env.judge(&label, None, &reply, Some(&mut spy)).await;
    spy.close().await;
}

/// Tenant 2 LISTENs and leaves; a notification on that channel must not reach tenant 1.
async fn listen_left_behind(env: &mut Env) {
    let label = env.label("LISTEN left behind by tenant 2", "simple");
    let mut other = Session::from_raw(session::raw_login(&env.proxy, &env.proxy.token("2")).await);
    other.run(Protocol::Simple, "LISTEN attack_chan", &mut Transcript::default()).await;
    other.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut spy = env.session(Protocol::Simple).await;
    let mut reply = Transcript::default();
    spy.run(Protocol::Simple, "SELECT 1", &mut reply).await;
    // On tenant 2's channel as the proxy names it, and on the raw name.
    env.su
        .batch_execute("SELECT pg_notify(rlsproxy.channel('2', 'attack_chan'), 'globex secret'); NOTIFY attack_chan, 'globex secret'")
        .await
        .expect("notify");
    tokio::time::sleep(Duration::from_millis(200)).await;
    spy.run(Protocol::Simple, "SELECT 1", &mut reply).await;
    env.judge(&label, Some(Expect::Allowed), &reply, Some(&mut spy)).await;
    spy.close().await;
}

/// Tenant 1 listens on tenant 2's channel: by its name, by the name the proxy gives it on
/// the server, and (refused with the guard on) in a DO block, where nothing is rewritten;
/// tenant 2 then notifies it. Nothing of it may reach tenant 1.
async fn listen_across_tenants(env: &mut Env) {
    let label = env.label("LISTEN on tenant 2's channel", "simple");
    let mut spy = env.session(Protocol::Simple).await;
    let mut reply = Transcript::default();
    for sql in [
        "LISTEN attack_across",
        "LISTEN \"d4735e3a265e16ee.attack_across\"",
        "DO $$ BEGIN EXECUTE 'LISTEN \"d4735e3a265e16ee.attack_across\"'; END $$",
    ] {
        spy.run(Protocol::Simple, sql, &mut reply).await;
    }
    let other = env.proxy.connect(&env.proxy.token("2")).await;
    other.batch_execute("NOTIFY attack_across, 'globex secret'").await.expect("tenant 2 notifies");
    tokio::time::sleep(Duration::from_millis(200)).await;
    spy.run(Protocol::Simple, "SELECT 1", &mut reply).await;
    env.judge(&label, None, &reply, Some(&mut spy)).await;
    spy.close().await;
}

/// Tenant 2 leaves a temp table, a prepared statement and a WITH HOLD cursor over its rows;
/// tenant 1, possibly on the same server connection next, must find none of them.
async fn state_left_behind(env: &mut Env) {
    let label = env.label("session state left behind by tenant 2", "simple");
    let mut other = Session::from_raw(session::raw_login(&env.proxy, &env.proxy.token("2")).await);
    let mut own = Transcript::default();
    for sql in [
        "CREATE TEMP TABLE attack_left AS SELECT title FROM documents",
        "PREPARE attack_left_p AS SELECT title FROM documents",
        "DECLARE attack_left_c CURSOR WITH HOLD FOR SELECT title FROM documents",
    ] {
        other.run(Protocol::Simple, sql, &mut own).await;
    }
    assert!(leaked(&own.texts).is_none() && own.errors.is_empty(), "tenant 2's setup: {own:?}");
    other.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut spy = env.session(Protocol::Simple).await;
    let mut reply = Transcript::default();
    for sql in [
        "SELECT * FROM pg_temp.attack_left",
        "EXECUTE attack_left_p",
        "FETCH ALL FROM attack_left_c",
        "SELECT name, statement FROM pg_prepared_statements UNION ALL SELECT name, statement FROM pg_cursors",
    ] {
        spy.run(Protocol::Simple, sql, &mut reply).await;
    }
    env.judge(&label, None, &reply, Some(&mut spy)).await;
    spy.close().await;
}
