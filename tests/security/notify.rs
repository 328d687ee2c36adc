//! LISTEN/NOTIFY channels are per tenant: two tenants listening on the same channel
//! name each get only their own notifications, under the name they used; no tenant
//! (nor a direct connection on the raw name) can send one another tenant receives;
//! `rlsproxy.notify()` in a trigger notifies the current tenant. Every case runs in
//! session and transaction pooling.

use std::time::Duration;

use rlsproxy::config::PoolMode;

use crate::Msgs;
use crate::common::http;
use crate::common::proxy::{self, TestProxy};
use crate::common::queries::{Session, fails, value};
use crate::common::{Postgres, postgres};

const MODES: [PoolMode; 2] = [PoolMode::Session, PoolMode::Transaction];

async fn start(mode: PoolMode) -> TestProxy {
    let mut cfg = proxy::base_config(postgres());
    cfg.pool.mode = mode;
    proxy::start(cfg).await
}

async fn superuser() -> tokio_postgres::Client {
    postgres().superuser_client(Postgres::APP_DB).await
}

/// A session of `tenant` listening on `channels` (simple protocol, one Query).
async fn listener(proxy: &TestProxy, tenant: &str, channels: &[&str]) -> Session {
    let session = Session::open(proxy, &proxy.token(tenant)).await;
    let listens: Vec<String> = channels.iter().map(|c| format!("LISTEN {c}")).collect();
    session.client.batch_execute(&listens.join("; ")).await.unwrap();
    session
}

/// Waits long enough for a notification that was going to arrive to have arrived.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn two_tenants_on_one_channel_name_see_only_their_own_notifications() {
    for mode in MODES {
        let proxy = start(mode).await;
        let mut l1 = listener(&proxy, "1", &["notify_same"]).await;
        // Tenant 2 listens through the extended protocol (a Parse).
        let mut l2 = Session::open(&proxy, &proxy.token("2")).await;
        l2.client.execute("LISTEN notify_same", &[]).await.unwrap();
        let n1 = proxy.connect(&proxy.token("1")).await;
        let n2 = proxy.connect(&proxy.token("2")).await;

        n1.batch_execute("NOTIFY notify_same, 'x'").await.unwrap();
        assert_eq!(l1.next_notification().await, "notify_same: x", "{mode:?}");
        // Delivered in commit order: tenant 2's first notification is its own.
        n2.execute("NOTIFY notify_same, 'from 2'", &[]).await.unwrap();
        assert_eq!(l2.next_notification().await, "notify_same: from 2", "{mode:?}: tenant 2 got tenant 1's");
        n1.execute("SELECT pg_notify('notify_same', $1)", &[&"y"]).await.unwrap();
        assert_eq!(l1.next_notification().await, "notify_same: y", "{mode:?}: tenant 1 got tenant 2's");
        settle().await;
        assert_eq!(l2.notifications(), Vec::<String>::new(), "{mode:?}");

        // The server knows a scoped name; UNLISTEN * still ends every listen of the session.
        let listening = value(&l1.client, "SELECT string_agg(c, ',') FROM pg_listening_channels() c").await;
        assert_eq!(listening, "6b86b273ff34fce1.notify_same", "{mode:?}");
        l1.client.batch_execute("UNLISTEN *").await.unwrap();
        assert_eq!(value(&l1.client, "SELECT count(*) FROM pg_listening_channels()").await, "0", "{mode:?}");
        n1.batch_execute("NOTIFY notify_same, 'after unlisten'").await.unwrap();
        settle().await;
        assert_eq!(l1.notifications(), Vec::<String>::new(), "{mode:?}");
    }
}

#[tokio::test]
async fn another_tenant_cannot_send_a_notification_a_listener_receives() {
    for mode in MODES {
        let mut cfg = proxy::base_config(postgres());
        cfg.pool.mode = mode;
        cfg.admin.address = Some("127.0.0.1:0".parse().unwrap());
        let proxy = proxy::start(cfg).await;
        let mut l1 = listener(&proxy, "1", &["notify_fake", "\"quoted Chan\""]).await;
        let n2 = proxy.connect(&proxy.token("2")).await;
        n2.batch_execute(
            "NOTIFY notify_fake, 'fake 1'; SELECT pg_notify('notify_fake', 'fake 2'); \
             NOTIFY \"quoted Chan\", 'fake 3'; NOTIFY \"6b86b273ff34fce1.notify_fake\", 'fake 4'",
        )
        .await
        .unwrap();
        n2.execute("SELECT pg_catalog.pg_notify('quoted Chan', $1)", &[&"fake 5"]).await.unwrap();
        for sql in [
            "SELECT pg_notify(rlsproxy.channel('1', 'notify_fake'), 'fake 6')",
            "SELECT pg_notify('6b86b273ff34fce1.' || 'notify_fake', 'fake 7')",
        ] {
            assert_eq!(
                fails(&n2, sql).await,
                (
                    "42501".to_string(),
                    "rlsproxy refused the statement: pg_notify whose channel is not a string constant \
                     (rule notify_channel)"
                        .to_string()
                ),
                "{mode:?}: {sql}"
            );
        }
        let (_, metrics) = http::get(proxy.admin.unwrap(), "/metrics", None).await;
        let refusals = http::sample(&metrics, "rlsproxy_guard_rejections_total{rule=\"notify_channel\"}");
        assert_eq!(refusals, Some(2.0), "{mode:?}");
        let n1 = proxy.connect(&proxy.token("1")).await;
        n1.batch_execute("NOTIFY \"quoted Chan\", 'real'").await.unwrap();
        assert_eq!(l1.next_notification().await, "quoted Chan: real", "{mode:?}: tenant 2's reached tenant 1");
        settle().await;
        assert_eq!(l1.notifications(), Vec::<String>::new(), "{mode:?}");
    }
}

#[tokio::test]
async fn a_direct_notify_on_the_raw_channel_name_never_reaches_a_proxied_listener() {
    let su = superuser().await;
    for mode in MODES {
        let proxy = start(mode).await;
        let mut l1 = listener(&proxy, "1", &["notify_raw"]).await;
        su.batch_execute("NOTIFY notify_raw, 'raw'").await.unwrap();
        // The SQL side computes the proxy's name: a job notifies one tenant this way.
        su.execute("SELECT pg_notify(rlsproxy.channel('1', 'notify_raw'), 'scoped')", &[]).await.unwrap();
        assert_eq!(l1.next_notification().await, "notify_raw: scoped", "{mode:?}: the raw one was delivered");
    }
}

#[tokio::test]
async fn rlsproxy_notify_in_a_trigger_reaches_only_the_current_tenants_listeners() {
    let su = superuser().await;
    trigger_table().await;
    for mode in MODES {
        let proxy = start(mode).await;
        let mut l1 = listener(&proxy, "1", &["notify_docs"]).await;
        let mut l2 = listener(&proxy, "2", &["notify_docs"]).await;
        let w1 = proxy.connect(&proxy.token("1")).await;
        let w2 = proxy.connect(&proxy.token("2")).await;
        w2.batch_execute("INSERT INTO notify_trigger_events VALUES ('notify_docs', 'from 2')").await.unwrap();
        assert_eq!(l2.next_notification().await, "notify_docs: from 2", "{mode:?}");
        w1.execute("INSERT INTO notify_trigger_events VALUES ('notify_docs', $1)", &[&"from 1"]).await.unwrap();
        assert_eq!(l1.next_notification().await, "notify_docs: from 1", "{mode:?}: tenant 1 got tenant 2's");
        w2.batch_execute("INSERT INTO notify_trigger_events VALUES ('notify_docs', 'end 2')").await.unwrap();
        assert_eq!(l2.next_notification().await, "notify_docs: end 2", "{mode:?}: tenant 2 got tenant 1's");
        settle().await;
        assert_eq!((l1.notifications(), l2.notifications()), (vec![], vec![]), "{mode:?}");
    }
    assert_eq!(value(&su, "SELECT count(*) FROM notify_trigger_events").await, "0");
}

/// Creates (once per process) the table whose BEFORE INSERT trigger calls
/// `rlsproxy.notify(channel, note)` and keeps no row, so nothing is left behind.
async fn trigger_table() {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY
        .get_or_init(|| async {
            superuser()
                .await
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS notify_trigger_events (channel text, note text);
                     CREATE OR REPLACE FUNCTION notify_trigger_fire() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN PERFORM rlsproxy.notify(NEW.channel, NEW.note); RETURN NULL; END $$;
                     CREATE OR REPLACE TRIGGER notify_trigger_fire BEFORE INSERT ON notify_trigger_events
                         FOR EACH ROW EXECUTE FUNCTION notify_trigger_fire();
                     GRANT INSERT ON notify_trigger_events TO app_proxy;",
                )
                .await
                .unwrap();
        })
        .await;
}

#[tokio::test]
async fn in_strict_mode_rlsproxy_notify_uses_the_verified_tenant_not_the_setting() {
    trigger_table().await;
    for mode in MODES {
        let mut cfg = proxy::strict_without_guard(postgres(), "notify_k", &"6e6f74696679".repeat(6)).await;
        cfg.pool.mode = mode;
        let proxy = proxy::start(cfg).await;
        let mut l1 = listener(&proxy, "1", &["notify_strict"]).await;
        let mut l2 = listener(&proxy, "2", &["notify_strict"]).await;
        let w1 = proxy.connect(&proxy.token("1")).await;
        // With the guard off tenant 1 claims tenant 2 in the plain setting; its signed value
        // still says tenant 1.
        w1.batch_execute(
            "SELECT set_config('app.current_tenant', '2', false); \
             INSERT INTO notify_trigger_events VALUES ('notify_strict', 'claims 2')",
        )
        .await
        .unwrap();
        assert_eq!(l1.next_notification().await, "notify_strict: claims 2", "{mode:?}");
        let w2 = proxy.connect(&proxy.token("2")).await;
        w2.batch_execute("INSERT INTO notify_trigger_events VALUES ('notify_strict', 'from 2')").await.unwrap();
        assert_eq!(l2.next_notification().await, "notify_strict: from 2", "{mode:?}: the setting was trusted");
    }
}

#[tokio::test]
async fn rlsproxy_notify_trusts_only_the_verified_tenant_when_a_signed_value_is_present() {
    let proxy = start(PoolMode::Session).await;
    let mut l1 = listener(&proxy, "1", &["notify_signed"]).await;
    // A direct session claiming tenant 1 with a signed value that does not verify: nobody.
    let direct = common_direct().await;
    direct
        .batch_execute(
            "SELECT set_config('app.current_tenant', '1', false), \
                    set_config('rlsproxy.signed_context', 'v1.k1.eyJ0ZW5hbnQiOiIxIn0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', false); \
             SELECT rlsproxy.notify('notify_signed', 'forged'); \
             SELECT set_config('rlsproxy.signed_context', '', false); \
             SELECT rlsproxy.notify('notify_signed', 'unsigned')",
        )
        .await
        .unwrap();
    assert_eq!(l1.next_notification().await, "notify_signed: unsigned", "the unverified tenant was trusted");
}

/// A connection straight to PostgreSQL as the proxy's role.
async fn common_direct() -> tokio_postgres::Client {
    crate::common::connect(&postgres().proxy_config(Postgres::APP_DB)).await
}

#[tokio::test]
async fn a_channel_at_the_63_byte_limit_works_and_a_longer_one_is_refused() {
    let fits = format!("notify_{}", "n".repeat(39));
    let long = format!("{fits}x");
    assert_eq!(fits.len(), 46);
    for mode in MODES {
        let proxy = start(mode).await;
        let mut l1 = listener(&proxy, "1", &[&fits]).await;
        let n1 = proxy.connect(&proxy.token("1")).await;
        n1.batch_execute(&format!("NOTIFY {fits}, 'fits'")).await.unwrap();
        assert_eq!(l1.next_notification().await, format!("{fits}: fits"), "{mode:?}");
        let refused =
            ("42622".to_string(), format!("rlsproxy: the channel name \"{long}\" is too long: at most 46 bytes"));
        for sql in [format!("LISTEN {long}"), format!("NOTIFY {long}"), format!("SELECT pg_notify('{long}', 'x')")] {
            assert_eq!(fails(&n1, &sql).await, refused, "{mode:?}: {sql}");
        }
        assert_eq!(value(&n1, "SELECT 'still serving'").await, "still serving");
    }
}

#[tokio::test]
async fn with_the_guard_off_channels_are_still_scoped_and_computed_channels_refused() {
    for mode in MODES {
        let mut cfg = proxy::base_config(postgres());
        cfg.pool.mode = mode;
        cfg.guard.enabled = false;
        let proxy = proxy::start(cfg).await;
        let mut l1 = listener(&proxy, "1", &["notify_off"]).await;
        let n2 = proxy.connect(&proxy.token("2")).await;
        let refused = (
            "42501".to_string(),
            "rlsproxy refused the statement: pg_notify whose channel is not a string constant (rule notify_channel)"
                .to_string(),
        );
        let sql = "SELECT pg_notify('6b86b273ff34fce1.' || 'notify_off', 'fake 1')";
        assert_eq!(fails(&n2, sql).await, refused, "{mode:?}");
        // A fast-path FunctionCall of pg_notify (OID 3036) with text arguments.
        let (mut raw, _) = crate::raw_login(&proxy, &proxy.token("2"), &[]).await;
        let args = [Some(&b"6b86b273ff34fce1.notify_off"[..]), Some(b"fake 2")];
        raw.send_msgs(&Msgs::new().function_call(3036, &[], &args, 0)).await;
        let reply = raw.read_until_ready().await;
        let error = crate::the_error(&reply);
        assert_eq!((error[&'C'].as_str(), error[&'M'].as_str()), (refused.0.as_str(), refused.1.as_str()), "{mode:?}");
        let n1 = proxy.connect(&proxy.token("1")).await;
        n1.batch_execute("NOTIFY notify_off, 'real'").await.unwrap();
        assert_eq!(l1.next_notification().await, "notify_off: real", "{mode:?}: tenant 2's reached tenant 1");
    }
}

#[tokio::test]
async fn an_exempt_operator_may_notify_any_channel_and_a_tenant_may_not() {
    let mut cfg = proxy::base_config(postgres());
    cfg.jwt.role_claim = "role".into();
    cfg.jwt.allowed_roles = vec!["admin_role".into()];
    cfg.guard.operator_roles = vec!["admin_role".into()];
    cfg.guard.operator_allows = vec!["notify_channel".into()];
    let proxy = proxy::start(cfg).await;
    let mut l2 = listener(&proxy, "2", &["notify_op"]).await;
    let sql = "SELECT pg_notify(rlsproxy.channel('2', 'notify_op'), 'from the operator')";
    let tenant = proxy.connect(&proxy.token("1")).await;
    assert_eq!(fails(&tenant, sql).await.0, "42501");
    let operator = proxy.connect(&proxy.token_with("1", Some("admin_role"), Duration::from_secs(600), &[])).await;
    operator.batch_execute(sql).await.unwrap();
    assert_eq!(l2.next_notification().await, "notify_op: from the operator");
    // Its own LISTEN and NOTIFY are still scoped to its token's tenant.
    operator.batch_execute("NOTIFY notify_op, 'scoped to tenant 1'").await.unwrap();
    settle().await;
    assert_eq!(l2.notifications(), Vec::<String>::new());
}

#[tokio::test]
async fn listening_on_another_tenants_scoped_name_never_delivers_its_notifications() {
    for mode in MODES {
        let mut cfg = proxy::base_config(postgres());
        cfg.pool.mode = mode;
        cfg.guard.enabled = false;
        let proxy = proxy::start(cfg).await;
        // Tenant 1 listens on the raw name, on tenant 2's scoped name, and, where nothing is
        // rewritten, on tenant 2's scoped name inside a DO block.
        let mut spy = listener(&proxy, "1", &["notify_spy", "\"d4735e3a265e16ee.notify_spy\""]).await;
        spy.client.batch_execute("DO $$ BEGIN EXECUTE 'LISTEN \"d4735e3a265e16ee.notify_spy\"'; END $$").await.unwrap();
        let channels = value(&spy.client, "SELECT count(*) FROM pg_listening_channels()").await;
        assert_eq!(channels, "3", "{mode:?}: the server has the three listens");
        let mut victim = listener(&proxy, "2", &["notify_spy"]).await;
        let n2 = proxy.connect(&proxy.token("2")).await;
        n2.batch_execute("NOTIFY notify_spy, 'globex secret'").await.unwrap();
        assert_eq!(victim.next_notification().await, "notify_spy: globex secret", "{mode:?}");
        let n1 = proxy.connect(&proxy.token("1")).await;
        n1.batch_execute("NOTIFY notify_spy, 'acme marker'").await.unwrap();
        assert_eq!(spy.next_notification().await, "notify_spy: acme marker", "{mode:?}: tenant 2's was delivered");
    }
}
